"""agentsession: sessions done right for AI-agent chat gateways on Starlette and FastAPI.

The cookie layer (``SessionMiddleware``, ``Session`` and the id functions) is imported
at once; the persistence names (``SessionService``, ``sessions_router``, retention)
are imported on first use, so an app that only wants cookie sessions never loads
SQLAlchemy. See docs/architecture.md for the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentsession.config import AgentSessionConfig, load_config
from agentsession.cookie.middleware import (
    SessionMiddleware,
    get_middleware,
    get_persistence,
    get_session_service,
)
from agentsession.cookie.session import (
    Session,
    get_client_id,
    get_session_id,
    get_user_id,
    regenerate_client_id,
    regenerate_session_id,
    set_session_id,
    set_user_id,
)
from agentsession.errors import (
    AgentSessionError,
    ConfigError,
    IdConflict,
    InvalidInput,
    SessionNotFound,
    SessionTooLarge,
    StoreMisconfigured,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from agentsession.api import ApiError, sessions_router
    from agentsession.http_errors import install_error_handlers
    from agentsession.identity import resolve_user
    from agentsession.persistence import Persistence
    from agentsession.retention import PruneReport, RetentionScheduler, prune
    from agentsession.revocation import logout, logout_everywhere
    from agentsession.service import SearchResult, SessionService, SessionState
    from agentsession.stores.base import FeedbackRecord, Page, SessionRecord, TaskRecord

__version__ = "0.1.0"

#: Public names imported on first use: name -> module.
_LAZY = {
    "ApiError": "agentsession.api",
    "install_error_handlers": "agentsession.http_errors",
    "sessions_router": "agentsession.api",
    "resolve_user": "agentsession.identity",
    "Persistence": "agentsession.persistence",
    "PruneReport": "agentsession.retention",
    "RetentionScheduler": "agentsession.retention",
    "prune": "agentsession.retention",
    "logout": "agentsession.revocation",
    "logout_everywhere": "agentsession.revocation",
    "SearchResult": "agentsession.service",
    "SessionService": "agentsession.service",
    "SessionState": "agentsession.service",
    "FeedbackRecord": "agentsession.stores.base",
    "Page": "agentsession.stores.base",
    "SessionRecord": "agentsession.stores.base",
    "TaskRecord": "agentsession.stores.base",
}

__all__ = [
    "AgentSessionConfig",
    "AgentSessionError",
    "ApiError",
    "ConfigError",
    "FeedbackRecord",
    "IdConflict",
    "InvalidInput",
    "Page",
    "Persistence",
    "PruneReport",
    "RetentionScheduler",
    "SearchResult",
    "Session",
    "SessionMiddleware",
    "SessionNotFound",
    "SessionRecord",
    "SessionService",
    "SessionState",
    "SessionTooLarge",
    "StoreMisconfigured",
    "StoreUnavailable",
    "TaskRecord",
    "__version__",
    "get_client_id",
    "get_middleware",
    "get_persistence",
    "get_session_id",
    "get_session_service",
    "get_user_id",
    "install_error_handlers",
    "load_config",
    "logout",
    "logout_everywhere",
    "prune",
    "regenerate_client_id",
    "regenerate_session_id",
    "resolve_user",
    "sessions_router",
    "set_session_id",
    "set_user_id",
]


def __getattr__(name: str) -> Any:
    """Import a persistence name on first use (PEP 562) and keep it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentsession' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
