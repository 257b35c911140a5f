"""What every layer shares: limits, ids, the clock, the one JSON spelling, URL masking.

Imports only the standard library, so the cookie layer, the service and every store
can use it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "API_DEFAULT_PAGE_SIZE",
    "API_MAX_PAGE_SIZE",
    "DAY_MS",
    "ID_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_PAGE_SIZE",
    "NAME_LENGTH",
    "dump_json",
    "mask_url",
    "new_id",
    "now_ms",
]

#: Longest id (conversation, task, user, client, agent, state key) anywhere.
ID_LENGTH: Final = 255
#: Longest conversation name.
NAME_LENGTH: Final = 255
#: Largest page a ``SessionService`` listing returns (Python callers, batch jobs).
MAX_PAGE_SIZE: Final = 1000
#: Largest page the HTTP API returns: a tenth of the service's, so one request from
#: the network can never ask the database for more than 100 rows.
API_MAX_PAGE_SIZE: Final = 100
#: Page size of the HTTP API when the client gives no ``limit``.
API_DEFAULT_PAGE_SIZE: Final = 20
#: How deeply JSON values (bubbles, metadata, state) may nest: far beyond any real
#: message, far below where encoding them would exhaust Python's recursion limit.
MAX_JSON_DEPTH: Final = 100
#: Milliseconds in a day: retention days to epoch-ms cutoffs.
DAY_MS: Final = 86_400_000

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def now_ms() -> int:
    """The current time in epoch milliseconds, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A random 256-bit id, URL- and cookie-safe (client ids, conversations, feedback)."""
    return secrets.token_urlsafe(32)


def dump_json(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII kept: the one spelling stores keep."""
    return _encoder.encode(value)


#: Query parameters whose values ``mask_url`` hides (a name containing one of these).
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token")


def mask_url(url: str) -> str:
    """``url`` with its password (and password-like query values) replaced by ``***``,
    for messages and logs. Query parameters keep their order and are escaped only where
    needed, so that file paths stay readable; an unparseable URL loses what stands
    between ``//`` and ``@``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        _ = parts.port  # raises on a bad port: handled below like any unparseable URL
        if not parts.scheme or (not netloc and "@" in url):
            raise ValueError("no scheme, or a user part outside the netloc")
    except ValueError:
        head, sep, rest = url.partition("//")
        if sep and "@" in rest:
            return f"{head}//***@{rest.rpartition('@')[2]}"
        return url
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            secret = any(word in name.lower() for word in _SECRET_WORDS)
            shown = "***" if secret else quote(value, safe="/:,@~")
            pairs.append(f"{quote(name)}={shown}")
        query = "&".join(pairs)
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        rebuilt += f"?{query}"
    if parts.fragment:
        rebuilt += f"#{parts.fragment}"
    return rebuilt
