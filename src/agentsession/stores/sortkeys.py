"""Sort times as fixed-width text whose byte order is the listing order.

Key-value backends page listings by comparing strings, not numbers: the Redis store's
sorted-set members and the DynamoDB store's sort keys start with a time written as
16 hexadecimal digits, followed by an id, so that byte order is the contract's order
(ties broken by id) and "strictly after the cursor" is a string comparison.
``ascending`` gives oldest-first order, ``descending`` newest-first.
"""

from __future__ import annotations

__all__ = ["TIME_WIDTH", "ascending", "descending", "time_of"]

#: Hexadecimal digits of an encoded sort time.
TIME_WIDTH = 16
_BIAS = 1 << 63
_MIN, _MAX = -(1 << 63), (1 << 63) - 1


def _clamp(time: int) -> int:
    return min(max(time, _MIN), _MAX)


def ascending(time: int) -> str:
    """``time`` (any int64) as 16 hex digits whose byte order is numeric order."""
    return format(_clamp(time) + _BIAS, "016x")


def descending(time: int) -> str:
    """``time`` as 16 hex digits whose byte order is reverse numeric order."""
    return format(_BIAS - 1 - _clamp(time), "016x")


def time_of(encoded: str, *, newest_first: bool) -> int:
    """The time an ``ascending`` (or ``descending``) prefix encodes."""
    value = int(encoded[:TIME_WIDTH], 16)
    return _BIAS - 1 - value if newest_first else value - _BIAS
