"""Who the caller is: the user id the HTTP API acts for.

By default that is ``request.state.user["id"]`` where an auth layer put a user there,
else the signed ``client_id`` of the browser or token client (an anonymous user per
client). A gateway with its own notion of users passes a ``user_resolver``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import HTTPConnection

from agentsession.common import ID_LENGTH
from agentsession.cookie.session import get_client_id

__all__ = ["UserResolver", "current_user", "resolve_user"]

#: ``resolver(request) -> user id | None`` (or an awaitable of it); None means nobody.
UserResolver = Callable[[HTTPConnection], "str | Awaitable[str | None] | None"]


def current_user(request: HTTPConnection) -> str | None:
    """``request.state.user["id"]`` when an auth layer set a user, else the client id.

    A user object works too (its ``id`` attribute). A user set without a usable id
    resolves to None (the API answers 401) rather than to an anonymous client, so a
    broken auth layer never lets requests fall through to another identity.
    """
    user = getattr(request.state, "user", None)
    if user is None:
        return get_client_id(request)
    found = user.get("id") if isinstance(user, Mapping) else getattr(user, "id", None)
    return _usable(found)


async def resolve_user(request: HTTPConnection, resolver: UserResolver | None = None) -> str | None:
    """Run ``resolver`` (default ``current_user``), awaiting it if needed; None if unusable.

    Integer ids (a database key) are turned into strings; anything else that is not a
    non-empty string of at most 255 characters counts as no user.
    """
    found = (resolver or current_user)(request)
    if inspect.isawaitable(found):
        found = await found
    return _usable(found)


def _usable(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= ID_LENGTH:
        return None
    if "\x00" in value or not _encodable(value):
        return None
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
