"""argparse types shared by the management commands."""

from __future__ import annotations

__all__ = ["positive"]


def positive(value: str) -> int:
    """A whole number of at least 1; argparse reports anything else as an invalid value."""
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number
