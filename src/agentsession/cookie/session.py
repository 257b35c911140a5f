"""Session: the ``request.session`` mapping, plus the ids the middleware keeps beside it.

``Session`` is Starlette's ``Session`` (a dict with ``accessed``/``modified`` flags and
the same semantics) that decodes its cookie only when first used, so a request that
never touches the session pays nothing. The client id and the current conversation id
live on the object, never in the mapping: ``request.session`` is the app's alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentsession.common import ID_LENGTH, new_id

if TYPE_CHECKING:
    from agentsession.cookie.codec import CookieState

__all__ = [
    "Session",
    "get_client_id",
    "get_session_id",
    "get_user_id",
    "regenerate_client_id",
    "regenerate_session_id",
    "set_session_id",
    "set_user_id",
]


#: JSON values that cannot change in place (``bool`` and ``None`` included).
_JSON_SCALARS = frozenset((str, int, float, bool, type(None)))


def holds_containers(data: Mapping[str, Any]) -> bool:
    """Whether a value of ``data`` is a list or dict, which can change in place."""
    return not all(type(value) in _JSON_SCALARS for value in data.values())


class SessionSource(Protocol):
    """Where a lazy Session gets its stored state from (the middleware)."""

    def read_state(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[CookieState | None, bool]:
        """Return the verified state (or None) and whether the token transport is in use."""
        ...


class Session(dict[str, Any]):
    """``request.session``: a dict that knows whether it was read or changed."""

    __slots__ = (
        "_accessed",
        "_client_id",
        "_headers",
        "_ids_changed",
        "_modified",
        "_origin",
        "_session_id",
        "_source",
        "_token",
        "_user_id",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accessed = False
        self._modified = False
        self._source: SessionSource | None = None
        #: The request's headers until the session is read from them; None once loaded.
        self._headers: Sequence[tuple[bytes, bytes]] | None = None
        self._origin: CookieState | None = None
        self._token = False
        self._client_id: str | None = None
        self._session_id: str | None = None
        self._user_id: str | None = None
        self._ids_changed = False

    @classmethod
    def lazy(cls, source: SessionSource, headers: Sequence[tuple[bytes, bytes]]) -> Session:
        """An empty session that fills itself from ``source`` the first time it is used.

        Built without ``__init__``: this runs on every request, and the private slots
        are set by ``_load`` before anything reads them. It keeps the request's header
        list, not its scope: the scope holds the session, and a cycle would leave every
        request's objects to the garbage collector.
        """
        session: Session = dict.__new__(cls)
        session._source, session._headers = source, headers
        return session

    # Starlette's two flags. Both are False until the session loads (every use loads it),
    # so a lazy session needs no per-request stores for them.

    @property
    def accessed(self) -> bool:
        """The session was read or written during this request (the response varies)."""
        return self._headers is None and self._accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._accessed = value

    @property
    def modified(self) -> bool:
        """The session was written through the mapping API during this request."""
        return self._headers is None and self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value

    def _load(self) -> None:
        headers, source = self._headers, self._source
        assert headers is not None
        assert source is not None
        self._headers = None
        state, self._token = source.read_state(headers)
        self._accessed = True
        self._modified = False
        self._origin = state
        self._ids_changed = False
        if state is None:
            self._client_id = self._session_id = self._user_id = None
        else:
            self._client_id = state.client_id
            self._session_id = state.session_id
            self._user_id = state.user_id
            data = state.data  # shared with the codec's cache: copied, never changed
            if holds_containers(data):  # lists and dicts of its own, changed by no other
                dict.update(self, json.loads(state.data_json))
            else:
                dict.update(self, data)

    # Starlette's flags. ``request.session`` calls mark_accessed(): that is where we load.

    def mark_accessed(self) -> None:
        if self._headers is not None:
            self._load()
        self._accessed = True

    def mark_modified(self) -> None:
        if self._headers is not None:
            self._load()
        self._accessed = self._modified = True

    # Reads load first, for code that takes scope["session"] without request.session.

    def __getitem__(self, key: str) -> Any:
        if self._headers is not None:
            self._load()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None, /) -> Any:
        if self._headers is not None:
            self._load()
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        if self._headers is not None:
            self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        if self._headers is not None:
            self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        if self._headers is not None:
            self._load()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        if self._headers is not None:
            self._load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        if self._headers is not None:
            self._load()
        return dict.__ne__(self, other)

    __hash__ = None

    def __or__(self, other: Any, /) -> dict[str, Any]:  # type: ignore[override]
        if self._headers is not None:
            self._load()
        return dict.__or__(self, other)

    def __ror__(self, other: Any, /) -> dict[str, Any]:  # type: ignore[override]
        if self._headers is not None:
            self._load()
        return dict.__ror__(self, other)

    def __reversed__(self) -> Iterator[str]:
        if self._headers is not None:
            self._load()
        return dict.__reversed__(self)

    def __reduce__(self) -> tuple[type[Session], tuple[dict[str, Any]]]:
        """Copies and pickles hold the data only, never the request it came from."""
        return (Session, (self.copy(),))

    def __repr__(self) -> str:
        if self._headers is not None:
            self._load()
        return dict.__repr__(self)

    def keys(self) -> Any:
        if self._headers is not None:
            self._load()
        return dict.keys(self)

    def values(self) -> Any:
        if self._headers is not None:
            self._load()
        return dict.values(self)

    def items(self) -> Any:
        if self._headers is not None:
            self._load()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        if self._headers is not None:
            self._load()
        return dict.copy(self)

    # Writes: Starlette's semantics (mark_modified loads first).

    def __setitem__(self, key: str, value: Any) -> None:
        self.mark_modified()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self.mark_modified()
        dict.__delitem__(self, key)

    def clear(self) -> None:
        """Log out: drop the data and the ids; the cookie is deleted on the response."""
        self.mark_modified()
        dict.clear(self)
        self._client_id = self._session_id = self._user_id = None
        self._ids_changed = True

    def pop(self, key: str, *args: Any) -> Any:
        if key in self:
            self.mark_modified()
        return dict.pop(self, key, *args)

    def popitem(self) -> tuple[str, Any]:
        if self._headers is not None:
            self._load()
        item = dict.popitem(self)
        self.mark_modified()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.mark_modified()
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.mark_modified()
        dict.update(self, *args, **kwargs)

    def __ior__(self, other: Any, /) -> Session:  # type: ignore[override]
        self.mark_modified()
        dict.update(self, other)
        return self


class HasScope(Protocol):
    """A Starlette ``Request`` or ``WebSocket`` (anything with an ASGI scope)."""

    @property
    def scope(self) -> MutableMapping[str, Any]: ...


def _session_of(conn: HasScope | Mapping[str, Any]) -> Session:
    scope = conn if isinstance(conn, Mapping) else conn.scope
    session = scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError(
            "agentsession.SessionMiddleware is not installed: add it with "
            "app.add_middleware(SessionMiddleware, ...)"
        )
    session.mark_accessed()
    return session


def get_client_id(conn: HasScope | Mapping[str, Any]) -> str:
    """The browser's (or token client's) stable random id, created on first use."""
    session = _session_of(conn)
    if session._client_id is None:
        session._client_id = new_id()
        session._ids_changed = True
    return session._client_id


def get_session_id(conn: HasScope | Mapping[str, Any]) -> str | None:
    """The id of the caller's current conversation, or None if none was set."""
    return _session_of(conn)._session_id


def set_session_id(conn: HasScope | Mapping[str, Any], session_id: str | None) -> None:
    """Make ``session_id`` the caller's current conversation (None: no current one)."""
    if session_id is not None and (
        not isinstance(session_id, str) or not 0 < len(session_id) <= ID_LENGTH
    ):
        raise ValueError(
            f"session_id must be a non-empty string of at most {ID_LENGTH} "
            f"characters, not {session_id!r}"
        )
    session = _session_of(conn)
    if session._session_id != session_id:
        session._session_id = session_id
        session._ids_changed = True


def get_user_id(conn: HasScope | Mapping[str, Any]) -> str | None:
    """The user id this session is bound to (``set_user_id``), or None."""
    return _session_of(conn)._user_id


def set_user_id(conn: HasScope | Mapping[str, Any], user_id: str | None) -> None:
    """Bind the session to ``user_id`` (call at login; None unbinds it).

    The cookie or token then carries the user id, so revoking the user
    (``logout_everywhere``, ``SessionService.revoke_user``) voids it on every client.
    An unbound session counts as its client id's own user (the anonymous user of
    ``identity.current_user``). ``sessions_router()`` binds the user it resolves.
    """
    if user_id is not None and (not isinstance(user_id, str) or not 0 < len(user_id) <= ID_LENGTH):
        raise ValueError(
            f"user_id must be a non-empty string of at most {ID_LENGTH} characters, "
            f"not {user_id!r:.80}"
        )
    session = _session_of(conn)
    if session._user_id != user_id:
        session._user_id = user_id
        session._ids_changed = True


def regenerate_client_id(conn: HasScope | Mapping[str, Any]) -> str:
    """Call at login: a new client id, and no current conversation; the data is kept.

    The old signed value stops naming this client, so a cookie planted before login
    (session fixation) gains an attacker nothing. Returns the new client id.
    """
    session = _session_of(conn)
    session._client_id = new_id()
    session._session_id = None
    session._ids_changed = True
    return session._client_id


def regenerate_session_id(conn: HasScope | Mapping[str, Any]) -> str:
    """Deprecated alias of ``regenerate_client_id`` (it never kept the conversation)."""
    warnings.warn(
        "regenerate_session_id() is deprecated: call regenerate_client_id(), which it "
        "always was (a new client id, no current conversation)",
        DeprecationWarning,
        stacklevel=2,
    )
    return regenerate_client_id(conn)
