"""Pure decisions, each with a named reason: what a Certificate needs, and whether the
gates in front of a signature let it through. No I/O, no clock of their own."""
