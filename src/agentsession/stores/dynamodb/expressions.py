"""Expression helpers of the DynamoDB store: attribute-name placeholders, shared conditions.

Every attribute is named through a placeholder (``#ttl`` for ``ttl``) so that no short
name can clash with one of DynamoDB's reserved words (``TTL`` is one).
"""

from __future__ import annotations

import re

__all__ = ["LIVE", "names"]

#: The conversation item exists, is not being deleted, and has not expired at ``:now``.
LIVE = (
    "attribute_exists(#pk) AND attribute_not_exists(#dl) "
    "AND (attribute_not_exists(#ex) OR #ex > :now)"
)

_PLACEHOLDER = re.compile(r"#([A-Za-z0-9_]+)")


def names(*expressions: str) -> dict[str, str]:
    """``ExpressionAttributeNames`` for the ``#name`` placeholders in ``expressions``."""
    return {
        f"#{name}": name for expression in expressions for name in _PLACEHOLDER.findall(expression)
    }
