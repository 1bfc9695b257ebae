"""Signet: workload identities signed by a CA key that never leaves KMS."""

__version__ = "0.1.0"
