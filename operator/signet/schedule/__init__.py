"""The one scheduler: every renewal, retry, issuer re-check and trust-bundle write is a key
in one delaying work queue."""
