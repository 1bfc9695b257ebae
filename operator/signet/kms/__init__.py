"""Everything that talks to a key management service: the Signer contract, the Cloud KMS
backend and the local emulator that speaks the same gRPC API."""

EMULATOR_ENV = "SIGNET_KMS_EMULATOR"
"""``host:port`` of a KMS emulator (``signet run --kms-emulator`` defaults to it). Here, not
in `signet.kms.cloudkms`, so that building the command line does not import gRPC."""
