"""When certificates are due, and the one scheduler that wakes them."""
