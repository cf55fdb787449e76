"""The one error type raised at the poisoning-detection boundary."""

from __future__ import annotations

__all__ = ["PoisoningInputError"]


class PoisoningInputError(ValueError):
    """The dataset handed to a scan is malformed (shape, NaN, lengths, class sizes).

    The message names the offending field and what was expected; nothing is scanned.
    """
