"""agentsession: sessions done right for AI-agent chat gateways on Starlette and FastAPI."""

from agentsession.api import sessions_router
from agentsession.config import AgentSessionConfig, load_config
from agentsession.cookies import CookieCodec
from agentsession.errors import (
    AgentSessionError,
    ConfigError,
    IdConflict,
    InvalidInput,
    SessionNotFound,
    SessionTooLarge,
    StoreUnavailable,
)
from agentsession.middleware import SessionMiddleware, get_session_service
from agentsession.retention import PruneReport, RetentionScheduler, prune
from agentsession.service import SessionService, SessionState
from agentsession.session import (
    Session,
    get_client_id,
    get_session_id,
    regenerate_session_id,
    set_session_id,
)

__version__ = "0.1.0"

__all__ = [
    "AgentSessionConfig",
    "AgentSessionError",
    "ConfigError",
    "CookieCodec",
    "IdConflict",
    "InvalidInput",
    "PruneReport",
    "RetentionScheduler",
    "Session",
    "SessionMiddleware",
    "SessionNotFound",
    "SessionService",
    "SessionState",
    "SessionTooLarge",
    "StoreUnavailable",
    "__version__",
    "get_client_id",
    "get_session_id",
    "get_session_service",
    "load_config",
    "prune",
    "regenerate_session_id",
    "sessions_router",
    "set_session_id",
]
