"""The package's exceptions: one root, one class per kind of failure."""

from __future__ import annotations


class AgentSessionError(Exception):
    """Base class of every error agentsession raises on purpose."""


class ConfigError(AgentSessionError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class SessionTooLarge(AgentSessionError):
    """The signed session would exceed what a browser keeps in one cookie."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the signed session is {size} bytes, over the {limit}-byte cookie limit; "
            "keep large data server-side (SessionService state) and only ids in the session"
        )


class SessionNotFound(AgentSessionError, LookupError):
    """No such conversation for this user (missing, expired, or another user's)."""


class StoreUnavailable(AgentSessionError):
    """The session store cannot be reached or timed out."""


class StoreMisconfigured(StoreUnavailable, ConfigError):
    """The database refuses the configured URL: no such database, user or privilege.

    A ``ConfigError``, so startup and the command line report it as configuration to
    fix, and a ``StoreUnavailable``, so a request that meets it (a grant revoked, the
    database dropped) is answered 503 like an outage instead of failing with a 500.
    The message names the URL (password masked), the cause and what to change.
    """


class InvalidInput(AgentSessionError, ValueError):
    """A value passed to the service is unusable; ``field`` names which one.

    Raised before anything is written, so bad input never changes stored data.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class IdConflict(AgentSessionError):
    """An id the caller chose is already taken by a row the caller may not change.

    A new conversation whose ``session_id`` exists, or a ``task_id`` that belongs to
    another user or another conversation. Nothing is written.
    """

    def __init__(self, field: str, value: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} {value!r} is already in use")
