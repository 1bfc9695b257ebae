"""Signet's benchmark harness: ``python -m bench [--quick] [--only NAME]`` (see README.md)."""
