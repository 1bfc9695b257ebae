"""Everything that talks to a key management service: the Signer contract, the Cloud KMS
backend and the local emulator that speaks the same gRPC API."""
