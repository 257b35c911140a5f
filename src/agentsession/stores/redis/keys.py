"""Key names and sort-key encodings of the Redis store (no redis-py needed).

Every key of one user carries the hash tag ``{u:<user>}`` so that a Lua script can
touch all of them on one Redis Cluster node; ids are percent-encoded inside key names
(``%``, ``{``, ``}`` and ``:``) so that no id can end the hash tag early, open another
one, or make two different ids name one key. The layout itself is described in
``store.py``'s docstring.

Listings are keyset pages over sorted sets whose members all score 0 and sort by
their bytes (``ZRANGEBYLEX``): a member starts with a sort time as 16 hexadecimal
digits (``ascending``/``descending``), followed by the raw id, so byte order is the
contract's order, ties broken by id, and a page starts strictly after the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentsession.stores.sortkeys import TIME_WIDTH, ascending, descending, time_of

__all__ = [
    "TIME_WIDTH",
    "UserKeys",
    "ascending",
    "descending",
    "escape",
    "glob_escape",
    "time_of",
    "unescape",
]

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", ":": "%3A"})


def escape(value: str) -> str:
    """``value`` with ``%``, ``{``, ``}`` and ``:`` percent-encoded (injective)."""
    return value.translate(_ESCAPES)


def unescape(value: str) -> str:
    """The inverse of ``escape``."""
    return value.replace("%7B", "{").replace("%7D", "}").replace("%3A", ":").replace("%25", "%")


def glob_escape(value: str) -> str:
    """``value`` as a literal inside a ``SCAN ... MATCH`` pattern."""
    for special in "\\*?[]":
        value = value.replace(special, "\\" + special)
    return value


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys of one user (one hash slot), in the order every user script takes them.

    ``KEYS[1..10]`` of each script: ``c`` (conversation records), ``S`` (listing),
    ``E`` (expiries), ``th`` (task homes), ``X`` (tasks by conversation), ``U`` (tasks
    by update time), ``f`` (feedback records), ``F`` (feedback listing), ``fk``
    (feedback by task), ``P`` (the pinned conversations' listing); then three keys
    per conversation named (``conversation``).
    """

    tag: str

    @classmethod
    def of(cls, prefix: str, user_id: str) -> UserKeys:
        return cls(f"{prefix}{{u:{escape(user_id)}}}")

    @property
    def fixed(self) -> list[str]:
        tag = self.tag
        return [f"{tag}:{name}" for name in ("c", "S", "E", "th", "X", "U", "f", "F", "fk", "P")]

    def conversation(self, session_id: str) -> list[str]:
        """``s`` (its state), ``t`` (its tasks), ``T`` (its task listing)."""
        sid = escape(session_id)
        return [f"{self.tag}:s:{sid}", f"{self.tag}:t:{sid}", f"{self.tag}:T:{sid}"]

    def with_conversations(self, session_ids: list[str]) -> list[str]:
        """The ``KEYS`` of a script on these conversations of this user."""
        keys = self.fixed
        for session_id in session_ids:
            keys += self.conversation(session_id)
        return keys


def user_pattern(prefix: str) -> str:
    """The ``SCAN MATCH`` pattern of every user's ``c`` key under ``prefix``."""
    return f"{glob_escape(prefix)}{{u:*}}:c"


def user_of(prefix: str, key: str) -> str | None:
    """The user id whose ``c`` key ``key`` is, or None for another key."""
    head, tail = f"{prefix}{{u:", "}:c"
    if not (key.startswith(head) and key.endswith(tail)) or len(key) < len(head) + len(tail):
        return None
    inner = key[len(head) : len(key) - len(tail)]
    if "{" in inner or "}" in inner or ":" in inner:
        return None
    return unescape(inner)


def registry_key(prefix: str, session_id: str) -> str:
    """The key holding the owner of conversation id ``session_id`` (its own slot)."""
    return f"{prefix}{{i:{escape(session_id)}}}"


def lease_key(prefix: str, name: str) -> str:
    """The key of lease ``name``."""
    return f"{prefix}lease:{escape(name)}"
