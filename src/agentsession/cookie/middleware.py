"""SessionMiddleware: signed-cookie sessions as a pure ASGI middleware.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware`` (same keyword
arguments, same ``Set-Cookie`` spelling) that decodes nothing until the session is
used, writes the cookie only when it changed or is due for a refresh, rotates keys,
refuses oversized cookies, serves clients without cookies through ``X-Session-Token``,
and runs the package's startup/shutdown hooks from the ASGI ``lifespan`` scope (a
failed startup is answered with ``lifespan.startup.failed``). It imports the
persistence layer only when an app asks for conversations (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from starlette.datastructures import Secret
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentsession.common import new_id, now_ms
from agentsession.config import (
    AgentSessionConfig,
    CookieConfig,
    cookie_config,
    cookie_environment,
)
from agentsession.cookie.codec import (
    COOKIE_SIZE_LIMIT,
    TOKEN_PREFIX,
    CookieCodec,
    CookieState,
    dump_json,
)
from agentsession.cookie.lifecycle import Hook, Lifecycle
from agentsession.cookie.session import Session, holds_containers
from agentsession.errors import ConfigError
from agentsession.metrics import get_metrics

if TYPE_CHECKING:
    from agentsession.persistence import Persistence
    from agentsession.retention import RetentionScheduler
    from agentsession.revocation import RevocationCache
    from agentsession.service import SessionService

__all__ = [
    "TOKEN_HEADER",
    "SessionMiddleware",
    "get_middleware",
    "get_persistence",
    "get_session_service",
]

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
    """Gives every request a signed ``request.session`` and the ids beside it.

    With cookie settings alone it is the cookie layer and nothing else: no store, no
    task, any anyio backend. ``config=``, ``service=`` or ``SESSION_DATABASE_URL``
    also give it a ``Persistence`` (store, service, retention scheduler) that it
    starts and stops with the app; without them the first ``get_session_service``
    call makes a memory one.
    """

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
        revocation_staleness: float | None = None,
        config: AgentSessionConfig | None = None,
        service: SessionService | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.lifecycle = Lifecycle()
        self._persistence: Persistence | None = None
        #: The revocations of signed sessions, made with the store (None until then).
        self.revocations: RevocationCache | None = None
        if "prometheus_client" in sys.modules:  # the app serves metrics: make ours now
            get_metrics()
        arguments: dict[str, object] = {
            "secret_key": str(secret_key) if isinstance(secret_key, Secret) else secret_key,
            "session_cookie": session_cookie,
            "max_age": max_age,
            "path": path,
            "same_site": same_site,
            "https_only": https_only,
            "domain": domain,
            "partitioned": partitioned,
            "secret_key_fallbacks": secret_key_fallbacks,
            "refresh_after": refresh_after,
        }
        if revocation_staleness is not None:
            arguments["revocation_staleness"] = revocation_staleness
        try:
            self._configure(cookie_config(arguments), config, service)
        except Exception as error:
            if not _built_by_starlette():
                raise
            # Starlette and FastAPI build their middleware on the app's first ASGI
            # event, the lifespan startup: raising there reads to uvicorn as "lifespan
            # unsupported", and the app would serve 500s. Fail the startup instead.
            logger.error("agentsession cannot start: %s", error)
            self.lifecycle.on_startup(_raise(error))

    def _configure(
        self,
        arguments: CookieConfig,
        config: AgentSessionConfig | None,
        service: SessionService | None,
    ) -> None:
        cookie = arguments if config is None else _merge(config.session, arguments)
        # What neither the arguments nor config= set, the environment may.
        environment = cookie_environment()
        secret = cookie.secret_key or environment.get("secret_key")
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
        fallbacks = cookie.secret_key_fallbacks or environment.get("secret_key_fallbacks", ())
        if config is None and "revocation_staleness" in environment:
            default = CookieConfig().revocation_staleness
            if cookie.revocation_staleness == default:  # no argument: the environment's
                staleness = environment["revocation_staleness"]
                cookie = dataclasses.replace(cookie, revocation_staleness=staleness)
        self.cookie = cookie
        self.refresh_after = cookie.effective_refresh_after
        self.codec = CookieCodec(
            secret,
            fallbacks,
            max_age=cookie.max_age,
            max_size=COOKIE_SIZE_LIMIT - len(cookie.cookie_name) - 1,
        )
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

        # Without config=, the environment's settings: checked now, so that a bad one
        # stops the startup rather than the first request that needs a store.
        settings = config or AgentSessionConfig.from_mapping({})
        self._settings = settings
        # Persistence only when asked for: a cookie-only app never imports a store.
        if service is not None or config is not None or settings.session_service.type != "memory":
            from agentsession.persistence import Persistence

            if service is not None:
                self._persistence = Persistence(service, settings.data_retention)
            else:
                self._persistence = Persistence.from_config(settings)
            self._watch_revocations(self._persistence)
            self.lifecycle.on_startup(self._persistence.start)
            self.lifecycle.on_shutdown(self._persistence.close)

    @property
    def persistence(self) -> Persistence:
        """The store, service and scheduler of this app; a memory one if none was asked for.

        The memory one is made on first use and needs no startup: the memory store
        runs on any anyio backend and starts no task.
        """
        if self._persistence is None:
            from agentsession.persistence import Persistence

            self._persistence = Persistence.from_config(self._settings)
            self._watch_revocations(self._persistence)
        return self._persistence

    def _watch_revocations(self, persistence: Persistence) -> None:
        """Check every session used against the revocations of this store from now on."""
        from agentsession.revocation import RevocationCache

        self.revocations = RevocationCache(
            persistence.service,
            staleness=self.cookie.revocation_staleness,
            max_age=self.cookie.max_age,
        )

    @property
    def service(self) -> SessionService:
        """Conversations, tasks, feedback and state: ``persistence.service``."""
        return self.persistence.service

    @property
    def retention(self) -> RetentionScheduler | None:
        """The retention scheduler, if this app's store needs one and it is enabled."""
        return self.persistence.retention

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
        revocations = self.revocations
        if revocations is not None and revocations.stale() and _carries_session(scope):
            await revocations.refresh()
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
            revocations = self.revocations
            if revocations is not None and revocations.stale() and _carries_session(scope):
                await revocations.refresh()
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
            return self._unrevoked(self.codec.decode(token)), True
        if not cookies:
            return None, False
        prefix = self._cookie_name
        for header in cookies:
            for chunk in header.split(b";"):
                key, eq, raw = chunk.partition(b"=")
                if eq and key.strip() == prefix:
                    state = self.codec.decode(raw.strip().strip(b'"'))
                    if state is not None:
                        return self._unrevoked(state), False
        return None, False

    def _unrevoked(self, state: CookieState | None) -> CookieState | None:
        """``state``, or None when a revocation voids it (a fresh anonymous session)."""
        revocations = self.revocations
        if state is None or revocations is None or not revocations.revoked(state):
            return state
        return None

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
        origin = session._origin
        # The client id's issue time stays across refreshes: a revocation covers them.
        same_client = origin is not None and origin.client_id == session._client_id
        if same_client and origin is not None:
            issued = origin.client_issued_at
        else:  # a new client id: issued after every revocation this process knows of
            issued = now_ms()
            revocations = self.revocations
            if revocations is not None:
                issued = max(issued, revocations.cutoff(session._client_id, session._user_id) + 1)
        value = self.codec.encode(
            session._client_id,
            session._session_id,
            data_json,
            issued=issued,
            user_id=session._user_id,
        )
        headers.append(self._header(session, scope, value))

    def _due(self, session: Session) -> tuple[bool, str | None]:
        """Whether the session must be sent, and its serialised data if that was needed."""
        if session.modified or session._ids_changed:
            return True, None
        origin = session._origin
        if origin is None:
            return False, None
        if origin.stale_key:  # signed with a fallback key: re-sign with the current one
            return True, None
        data_json: str | None = None
        # Only a value inside a list or dict can change without ``modified`` being set;
        # with none of those (the usual ids and flags), the data is as it was loaded.
        if holds_containers(session):
            data_json = dump_json(session)
            if data_json != origin.data_json:  # a nested change
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
        # Not resolved at construction: a cookie-only app that never writes a cookie, or
        # runs where prometheus_client is installed but unused, never imports it.
        metrics = get_metrics()
        if metrics is not None:
            metrics.cookie_write(deleted=value is None, token=session._token)
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

    # Lifespan: ours runs before the app's startup and after its shutdown.

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the startup hooks, then the app's lifespan; the shutdown hooks last.

        A failing startup hook is answered with ``lifespan.startup.failed`` (and the
        error raised, as Starlette's router does), so that every server, uvicorn's
        default ``--lifespan auto`` included, logs the cause and exits. An app that
        does not speak the lifespan protocol gets it spoken for it.
        """
        lifecycle = self.lifecycle
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await lifecycle.startup()
            except Exception as error:
                await send({"type": "lifespan.startup.failed", "message": _failure(error)})
                raise
        pending: Message | None = first
        answered = False  # the app sent lifespan.startup.complete or .failed

        async def receive_wrapper() -> Message:
            nonlocal pending
            if pending is not None:
                message, pending = pending, None
                return message
            return await receive()

        async def send_wrapper(message: Message) -> None:
            nonlocal answered
            kind = message["type"]
            if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
                answered = True
            if kind in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await lifecycle.shutdown()
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if answered or first["type"] != "lifespan.startup":
                raise
            # The app does not speak lifespan (it raised before answering): ours ran,
            # so answer for it and wait for the server's shutdown.
            logger.debug("the app does not handle lifespan; agentsession answers for it")
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                message = await receive()
            await lifecycle.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
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


def get_middleware(conn: HTTPConnection | Scope) -> SessionMiddleware:
    """The ``SessionMiddleware`` that handles this request (or scope).

    Raises ``RuntimeError`` when the app has none.
    """
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    session = scope.get("session")
    source = session._source if isinstance(session, Session) else None
    if not isinstance(source, SessionMiddleware):
        raise RuntimeError(
            "no agentsession.SessionMiddleware handles this request: add it to the app"
        )
    return source


def get_persistence(conn: HTTPConnection | Scope) -> Persistence:
    """The app's ``Persistence`` (store, service, retention scheduler)."""
    return get_middleware(conn).persistence


def get_session_service(request: HTTPConnection) -> SessionService:
    """The ``SessionService`` of the app's ``SessionMiddleware``; a FastAPI dependency too.

    ``service: SessionService = Depends(get_session_service)``.
    """
    return get_middleware(request).service


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


def _carries_session(scope: Scope) -> bool:
    """Whether the request may carry a signed session (a cookie, token or Bearer header)."""
    return any(name in _SESSION_HEADERS for name, _ in scope["headers"])


_SESSION_HEADERS = frozenset((b"cookie", _TOKEN_HEADER, b"authorization"))


def _add_vary(headers: list[Any], value: bytes) -> None:
    """Add ``value`` to the Vary header, merging with one the app already set."""
    for i, (name, existing) in enumerate(headers):
        if name.lower() == b"vary":
            if value.lower() not in existing.lower():
                headers[i] = (name, existing + b", " + value)
            return
    headers.append((b"vary", value))


def _built_by_starlette() -> bool:
    """Whether Starlette's (or FastAPI's) ``build_middleware_stack`` is constructing us.

    They build the stack on the app's first ASGI event, which is the lifespan startup.
    """
    frame = sys._getframe(2)  # _built_by_starlette <- __init__ <- the caller
    return frame.f_code.co_name == "build_middleware_stack"


def _raise(error: BaseException) -> Hook:
    """A startup hook that fails with ``error``."""

    async def fail() -> None:
        raise error

    return fail


_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def _failure(error: BaseException) -> str:
    """The startup failure as the server logs it: the cause, passwords in URLs masked."""
    text = f"agentsession could not start: {type(error).__name__}: {error}"
    return _PASSWORD.sub(r"\g<head>***@", text)
