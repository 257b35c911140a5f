"""Revocation of signed cookies and tokens, without server-side sessions.

A cookie (or token) records when its client id was first issued (``t``, epoch ms)
and the user it is bound to (``u``). The store keeps a revocation time per client id
and per user id (``Store.revoke``). A session issued at or before its client's, or
its user's, revocation time is void: the middleware hands the app a fresh anonymous
session instead (a new client id, no error), as for a bad signature. An unbound
session counts as its client id's own user, the anonymous user of
``identity.current_user``.

``RevocationCache`` keeps every revocation that can still void a cookie in this
process and asks the store only for what changed, at most once per
``session.revocation_staleness`` seconds and only when a request that carries a
session arrives after that: a revocation recorded anywhere reaches every instance
within the bound, and a request costs no store round trip while the cache is fresh.

Store down: a refresh that fails keeps the revocations already known (they stay in
force), logs a warning, and is tried again after ``staleness`` (fail open). Every
revocation a logout reported as done (204) was written to the store first; one the
store could not take answers 503 and revoked nothing. What an outage can hide is
only a revocation another instance wrote in the ``staleness`` before it began.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

import anyio

from agentsession.common import now_ms
from agentsession.cookie.middleware import get_middleware
from agentsession.cookie.session import get_client_id, get_user_id
from agentsession.errors import StoreUnavailable

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from agentsession.cookie.codec import CookieState
    from agentsession.identity import UserResolver
    from agentsession.service import SessionService

__all__ = ["RevocationCache", "logout", "logout_everywhere"]

logger = logging.getLogger("agentsession")

#: Each poll reads back this far before the previous one (ms): a revocation committed
#: late (a slow writer, or another instance's clock a little behind) is still seen.
POLL_OVERLAP_MS: Final = 60_000
#: Revocations per store call while polling.
POLL_PAGE: Final = 1000
#: Seconds a poll may wait for the store before it counts as failed.
POLL_TIMEOUT: Final = 2.0


class RevocationCache:
    """This process's copy of the revocations that can still void a cookie.

    ``revoked(state)`` answers from memory; ``refresh()`` brings it up to date when
    it is older than ``staleness`` seconds (one request waits for it; others arriving
    meanwhile wait for the same poll).
    """

    def __init__(self, service: SessionService, *, staleness: float, max_age: int | None) -> None:
        """``max_age``: the cookie lifetime in seconds (None: cookies never expire, so
        no revocation is ever forgotten)."""
        self.service = service
        self.staleness = staleness
        self.max_age = max_age
        self._revoked: dict[tuple[str, str], int] = {}
        self._fresh_until = float("-inf")  # monotonic seconds
        self._polled_at: int | None = None  # epoch ms of the last good poll's start
        self._lock: anyio.Lock | None = None
        self._failing = False
        #: Store calls made by polls (tests and statement counts read it).
        self.polls = 0

    def stale(self) -> bool:
        """Whether the next session used must wait for ``refresh()`` first."""
        return time.monotonic() >= self._fresh_until

    def revoked(self, state: CookieState) -> bool:
        """Whether this verified cookie or token is void (issued at or before a revocation
        of its client or its user)."""
        client = state.client_id
        if client is None:
            return False
        issued = state.client_issued_at
        cutoff = self._revoked.get(("client", client))
        if cutoff is not None and issued <= cutoff:
            return True
        cutoff = self._revoked.get(("user", state.user_id or client))
        return cutoff is not None and issued <= cutoff

    def cutoff(self, client_id: str, user_id: str | None) -> int:
        """The latest revocation known of this client or its user (0: none).

        A session issued now must be issued after it (``SessionMiddleware`` issues new
        client ids at ``max(now, cutoff + 1)``): a login in the same millisecond as a
        logout everywhere, or on an instance whose clock runs behind the one that
        revoked, is not void.
        """
        known = self._revoked
        return max(
            known.get(("client", client_id), 0), known.get(("user", user_id or client_id), 0)
        )

    def note(self, kind: str, subject: str, revoked_at: int) -> None:
        """Apply a revocation this process just wrote, without waiting for a poll."""
        key = (kind, subject)
        self._revoked[key] = max(revoked_at, self._revoked.get(key, revoked_at))

    async def refresh(self) -> None:
        """Poll the store if the cache is stale; on failure keep what is known (fail open)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if not self.stale():
                return  # another request polled while this one waited
            started, wall = time.monotonic(), now_ms()
            try:
                await self._poll(wall)
            except StoreUnavailable as error:
                if not self._failing:
                    logger.warning(
                        "revocations could not be read (%s); the %d known stay in force, "
                        "retrying every %s s",
                        error,
                        len(self._revoked),
                        self.staleness,
                    )
                self._failing = True
            else:
                if self._failing:
                    logger.warning("revocations are read again")
                self._failing = False
                self._polled_at = wall
            self._fresh_until = started + self.staleness

    async def _poll(self, wall: int) -> None:
        oldest = 0 if self.max_age is None else wall - self.max_age * 1000
        since = (
            oldest if self._polled_at is None else max(oldest, self._polled_at - POLL_OVERLAP_MS)
        )
        after: tuple[int, str, str] | None = None
        found: dict[tuple[str, str], int] = {}
        while True:
            self.polls += 1
            page = await self.service._call(
                self.service.store.list_revocations(since, wall, POLL_PAGE, after),
                timeout=min(self.service.timeout, POLL_TIMEOUT),
            )
            for item in page:
                found[(item.kind, item.subject)] = item.revoked_at
            if len(page) < POLL_PAGE:
                break
            after = page[-1].sort_key
        for (kind, subject), at in found.items():
            self.note(kind, subject, at)
        if self.max_age is not None:  # older ones void only cookies that have expired
            self._revoked = {key: at for key, at in self._revoked.items() if at >= oldest}

    async def revoke(self, kind: str, subject: str) -> int:
        """Record a revocation in the store (``StoreUnavailable`` if it cannot), then here."""
        service = self.service
        if kind == "client":
            at = await service.revoke_client(subject, keep_for=self.max_age)
        else:
            at = await service.revoke_user(subject, keep_for=self.max_age)
        self.note(kind, subject, at)
        return at


def revocations_of(request: HTTPConnection) -> RevocationCache:
    """The revocation cache of the request's ``SessionMiddleware`` (made with its store)."""
    middleware = get_middleware(request)
    middleware.persistence  # noqa: B018 (makes the store, and the cache, if not yet made)
    cache = middleware.revocations
    assert cache is not None
    return cache


async def logout(request: HTTPConnection) -> None:
    """Log this browser (or token client) out: every copy of its cookie or token is void.

    Records the revocation of the client id in the store (within the staleness bound
    on every instance, at once on this one) and clears the session, so the response
    deletes the cookie (or sends an empty token). Raises ``StoreUnavailable`` when the
    store cannot record it; the session is then left as it was.
    """
    from agentsession.cookie.session import _session_of

    session = _session_of(request)
    client = session._client_id
    if client is not None:
        await revocations_of(request).revoke("client", client)
    session.clear()


async def logout_everywhere(
    request: HTTPConnection,
    user_id: str | None = None,
    *,
    user_resolver: UserResolver | None = None,
) -> str:
    """Log out every session of the caller's user, on every client, and this one.

    ``user_id`` defaults to the caller's (``identity.resolve_user`` with
    ``user_resolver``; else the session's bound user, else its client id). Revokes the
    user and this client, then clears the session. Returns the user id revoked.
    """
    from agentsession.cookie.session import _session_of
    from agentsession.identity import resolve_user

    session = _session_of(request)
    user = user_id or await resolve_user(request, user_resolver) or get_user_id(request)
    if user is None:
        user = get_client_id(request)
    cache = revocations_of(request)
    await cache.revoke("user", user)
    client = session._client_id
    if client is not None and client != user:
        await cache.revoke("client", client)
    session.clear()
    return user
