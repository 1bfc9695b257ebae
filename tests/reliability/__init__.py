"""Reliability suite: KMS, control-plane and operator faults, hostile input, secrets hygiene."""
