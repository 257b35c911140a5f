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
