"""The one error the API layer raises."""

from __future__ import annotations

from signet.reasons import Reason


class SpecError(ValueError):
    """A spec that cannot be honoured. ``reason`` is one CamelCase word for conditions and
    Events; the message says exactly which field and value are wrong."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
