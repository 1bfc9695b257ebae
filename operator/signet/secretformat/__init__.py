"""Secrets Signet writes: their layout, how to tell they are intact, and the writes."""
