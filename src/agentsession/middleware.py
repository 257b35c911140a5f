"""SessionMiddleware: signed-cookie sessions as a pure ASGI middleware.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware`` (same keyword
arguments, same ``Set-Cookie`` spelling) that decodes nothing until the session is
used, writes the cookie only when it changed or is due for a refresh, rotates keys,
refuses oversized cookies, serves clients without cookies through ``X-Session-Token``,
and runs the package's startup/shutdown hooks from the ASGI ``lifespan`` scope.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, cast

from starlette.datastructures import Secret
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentsession.config import AgentSessionConfig, CookieConfig
from agentsession.cookies import (
    COOKIE_SIZE_LIMIT,
    TOKEN_PREFIX,
    CookieCodec,
    CookieState,
    dump_json,
)
from agentsession.errors import ConfigError
from agentsession.lifecycle import Hook, Lifecycle
from agentsession.retention import RetentionScheduler
from agentsession.service import SessionService
from agentsession.session import Session, new_id

__all__ = ["TOKEN_HEADER", "SessionMiddleware", "get_session_service"]

logger = logging.getLogger("agentsession")

#: Request and response header of the token transport (clients that keep no cookies).
TOKEN_HEADER = "X-Session-Token"
_TOKEN_HEADER = TOKEN_HEADER.lower().encode()
_NEW_TOKEN = b"new"
_TOKEN_PREFIX = TOKEN_PREFIX.encode()
_VARY_TOKEN = b"Cookie, " + TOKEN_HEADER.encode()
_DEFAULT_MAX_AGE = 14 * 24 * 60 * 60
_MIN_SECRET_LENGTH = 32
_EXPIRED = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "


def _starlette_marks_access() -> bool:
    """Whether ``request.session`` calls ``mark_accessed()`` (Starlette 1.0 and later).

    Older versions hand out ``scope["session"]`` untouched, and ``json.dumps`` of a
    dict reads its storage directly, so there the session is decoded up front and, as
    any read may go unseen, every response varies on Cookie.
    """
    try:
        from starlette.middleware.sessions import Session as StarletteSession
    except ImportError:  # pragma: no cover - Starlette before 1.0
        return False
    return hasattr(StarletteSession, "mark_accessed")


_STARLETTE_MARKS_ACCESS = _starlette_marks_access()


class SessionMiddleware:
    """Gives every request a signed ``request.session`` and the ids beside it."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Secret | None = None,
        session_cookie: str = "session",
        max_age: int | None = _DEFAULT_MAX_AGE,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool | Literal["auto"] = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        secret_key_fallbacks: Sequence[str] = (),
        refresh_after: int | None = None,
        config: AgentSessionConfig | None = None,
        service: SessionService | None = None,
    ) -> None:
        self.app = app
        self.config = config
        arguments = CookieConfig(
            secret_key=None if secret_key is None else str(secret_key),
            secret_key_fallbacks=tuple(str(key) for key in secret_key_fallbacks),
            cookie_name=session_cookie,
            max_age=max_age,
            path=path,
            same_site=same_site,
            https_only=https_only,
            domain=domain,
            partitioned=partitioned,
            refresh_after=refresh_after,
        )
        cookie = arguments if config is None else _merge(config.session, arguments)
        secret = cookie.secret_key or os.environ.get("SESSION_SECRET_KEY") or None
        if secret is None:
            raise ConfigError(
                "SESSION_SECRET_KEY is not set: export SESSION_SECRET_KEY, set "
                "session.secret_key in the configuration, or pass secret_key="
            )
        if len(secret) < _MIN_SECRET_LENGTH:
            logger.warning(
                "the session secret key is %d characters; use at least %d random ones, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                len(secret),
                _MIN_SECRET_LENGTH,
            )
        fallbacks = cookie.secret_key_fallbacks or tuple(
            key.strip()
            for key in os.environ.get("SESSION_SECRET_KEY_FALLBACKS", "").split(",")
            if key.strip()
        )
        if cookie.same_site not in ("lax", "strict", "none"):
            raise ConfigError(
                f"same_site must be 'lax', 'strict' or 'none', not {cookie.same_site!r}"
            )
        if cookie.https_only not in (True, False, "auto"):
            raise ConfigError(
                f"https_only must be True, False or 'auto', not {cookie.https_only!r}"
            )

        self.cookie = cookie
        self.refresh_after = cookie.effective_refresh_after
        self.codec = CookieCodec(
            secret,
            fallbacks,
            max_age=cookie.max_age,
            max_size=COOKIE_SIZE_LIMIT - len(cookie.cookie_name) - 1,
        )
        self.lifecycle = Lifecycle()
        #: Conversations, tasks, feedback and state: ``config.session_service`` (memory
        #: by default), or the ``service=`` given. Started and closed with the app.
        # Without config=, the environment decides (SESSION_DATABASE_URL), as load_config().
        settings = config or AgentSessionConfig.from_mapping({})
        self.service = service if service is not None else SessionService.from_config(settings)
        self.lifecycle.on_startup(self.service.start)
        self.lifecycle.on_shutdown(self.service.close)
        #: Prunes old rows per ``data_retention`` (None when disabled); stopped first.
        self.retention: RetentionScheduler | None = None
        if settings.data_retention.enabled:
            self.retention = RetentionScheduler(self.service, settings.data_retention)
            self.lifecycle.on_startup(self.retention.start)
            self.lifecycle.on_shutdown(self.retention.stop)
        self._cookie_name = cookie.cookie_name.encode("latin-1")

        # Set-Cookie spelled exactly as Starlette spells it, one variant per Secure flag.
        flags = {False: "httponly; samesite=" + cookie.same_site}
        flags[True] = flags[False] + "; secure"
        tail = "" if cookie.domain is None else f"; domain={cookie.domain}"
        tail += "; partitioned" if cookie.partitioned else ""
        age = "" if cookie.max_age is None else f"Max-Age={cookie.max_age}; "
        self._head = f"{cookie.cookie_name}="
        self._set_suffix = {s: f"; path={cookie.path}; {age}{flags[s]}{tail}" for s in flags}
        self._delete = {
            s: f"{self._head}null; path={cookie.path}; {_EXPIRED}{flags[s]}{tail}".encode("latin-1")
            for s in flags
        }

    def on_startup(self, hook: Hook) -> None:
        """Run ``hook`` on lifespan startup (or before the first request)."""
        self.lifecycle.on_startup(hook)

    def on_shutdown(self, hook: Hook) -> None:
        """Run ``hook`` on lifespan shutdown."""
        self.lifecycle.on_shutdown(hook)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        if self.lifecycle.pending:
            await self.lifecycle.startup()
        # Session.lazy(), inlined: this runs on every request.
        session: _HttpSession = dict.__new__(_HttpSession)
        session._source, session._headers = self, scope["headers"]
        session._scope, session._send = scope, send
        if not _STARLETTE_MARKS_ACCESS:
            session._load()
        scope["session"] = session
        try:
            await self.app(scope, receive, session.send_wrapper)
        finally:
            # scope -> session -> scope (and send): break the cycle for refcounting.
            del session._scope, session._send

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Websockets read the session (nothing to write back); lifespan runs the hooks."""
        if scope["type"] == "websocket":
            if self.lifecycle.pending:
                await self.lifecycle.startup()
            scope["session"] = session = Session.lazy(self, scope["headers"])
            if not _STARLETTE_MARKS_ACCESS:
                session._load()
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    # Reading: called by Session the first time it is used.

    def read_state(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[CookieState | None, bool]:
        """Find this request's signed value (token header, Bearer, or cookie) and verify it."""
        token: bytes | None = None
        cookies: list[bytes] = []
        for name, value in headers:
            if name == b"cookie":
                cookies.append(value)
            elif name == _TOKEN_HEADER:
                token = value.strip()
            elif name == b"authorization" and token is None and value[:7].lower() == b"bearer ":
                bearer = value[7:].strip()
                if bearer.startswith(_TOKEN_PREFIX):  # ours; any other Bearer is the app's
                    token = bearer
        if token is not None:
            if not token or token.lower() == _NEW_TOKEN:
                return None, True
            return self.codec.decode(token), True
        if not cookies:
            return None, False
        prefix = self._cookie_name
        for header in cookies:
            for chunk in header.split(b";"):
                key, eq, raw = chunk.partition(b"=")
                if eq and key.strip() == prefix:
                    state = self.codec.decode(raw.strip().strip(b'"'))
                    if state is not None:
                        return state, False
        return None, False

    # Writing: decides, at response start, whether the response carries the session.

    def _commit(self, session: Session, scope: Scope, message: Message) -> None:
        headers = list(message.get("headers", ()))
        message["headers"] = headers
        if session.accessed:
            _add_vary(headers, _VARY_TOKEN if session._token else b"Cookie")
        if message["status"] >= 500:
            return
        due, data_json = self._due(session)
        if not due:
            return
        if not dict.__len__(session) and session._client_id is None and session._session_id is None:
            if session._origin is not None:  # a stored session was cleared: remove it
                headers.append(self._header(session, scope, None))
            return
        if session._client_id is None:  # the first write gives the client its id
            session._client_id = new_id()
        data_json = data_json if data_json is not None else dump_json(session)
        value = self.codec.encode(session._client_id, session._session_id, data_json)
        headers.append(self._header(session, scope, value))

    def _due(self, session: Session) -> tuple[bool, str | None]:
        """Whether the session must be sent, and its serialised data if that was needed."""
        if session.modified or session._ids_changed:
            return True, None
        origin = session._origin
        if origin is None:
            return False, None
        data_json = dump_json(session)
        if data_json != origin.data_json or origin.stale_key:  # nested change, or rotated key
            return True, data_json
        refresh = self.refresh_after
        return refresh is not None and int(time.time()) - origin.issued_at >= refresh, data_json

    def expires_at(self, session: Session) -> int | None:
        """When the client's cookie or token expires, counting this response (epoch seconds).

        None: it never does (``max_age=None``, a browser-session cookie).
        """
        if self.cookie.max_age is None:
            return None
        due, _ = self._due(session)
        origin = session._origin
        issued = int(time.time()) if due or origin is None else origin.issued_at
        return issued + self.cookie.max_age

    def renew(self, session: Session) -> None:
        """Re-issue the cookie or token on this response, with a fresh expiry."""
        session.mark_accessed()
        session._ids_changed = True

    def _header(self, session: Session, scope: Scope, value: str | None) -> tuple[bytes, bytes]:
        """The response header carrying ``value`` (None: the session was cleared)."""
        if session._token:
            value = value if value is not None else self.codec.encode(None, None, "{}")
            return _TOKEN_HEADER, value.encode("ascii")
        secure = self._secure(scope)
        if value is None:
            return b"set-cookie", self._delete[secure]
        return b"set-cookie", (self._head + value + self._set_suffix[secure]).encode("latin-1")

    def _secure(self, scope: Scope) -> bool:
        if self.cookie.https_only == "auto":
            return scope.get("scheme") in ("https", "wss")
        return bool(self.cookie.https_only)

    # Lifespan: the app's own handling stays as it is; ours wraps it.

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self.lifecycle

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await lifecycle.startup()
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await lifecycle.shutdown()
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            await lifecycle.shutdown()


class _HttpSession(Session):
    """The session of one HTTP request, which is also the request's send wrapper.

    One object per request instead of a session plus a closure: this is the hot path.
    """

    __slots__ = ("_scope", "_send")

    _scope: Scope
    _send: Send

    def send_wrapper(self, message: Message) -> Awaitable[None]:
        """Add the session's headers to the response start; return ``send``'s awaitable."""
        if message["type"] == "http.response.start" and self._headers is None:
            middleware = cast(SessionMiddleware, self._source)
            middleware._commit(self, self._scope, message)
        return self._send(message)


def get_session_service(request: HTTPConnection) -> SessionService:
    """The ``SessionService`` of the app's ``SessionMiddleware``; a FastAPI dependency too.

    ``service: SessionService = Depends(get_session_service)``.
    """
    source = getattr(request.scope.get("session"), "_source", None)
    if not isinstance(source, SessionMiddleware):
        raise RuntimeError(
            "get_session_service() found no agentsession.SessionMiddleware: add it to the app"
        )
    return source.service


def _merge(configured: CookieConfig, arguments: CookieConfig) -> CookieConfig:
    """``config.session``, with ``secret_key=`` on top; other arguments may not compete."""
    defaults = CookieConfig(https_only=False)
    clashing = [
        name
        for name in CookieConfig.__dataclass_fields__
        if name != "secret_key" and getattr(arguments, name) != getattr(defaults, name)
    ]
    if clashing:
        raise TypeError(
            "SessionMiddleware takes cookie settings from config= or from arguments, "
            f"not both: move {', '.join(clashing)} into the configuration"
        )
    if arguments.secret_key is None:
        return configured
    return dataclasses.replace(configured, secret_key=arguments.secret_key)


def _add_vary(headers: list[Any], value: bytes) -> None:
    """Add ``value`` to the Vary header, merging with one the app already set."""
    for i, (name, existing) in enumerate(headers):
        if name.lower() == b"vary":
            if value.lower() not in existing.lower():
                headers[i] = (name, existing + b", " + value)
            return
    headers.append((b"vary", value))
