"""Persistence: the one owner of the store, the service and the retention scheduler.

The cookie layer needs none of this. ``SessionMiddleware`` makes a ``Persistence``
only when asked for one (``config=``, ``service=``, ``SESSION_DATABASE_URL``, or the
first ``get_session_service`` call, which gets the memory store), and runs its
``start`` and ``close`` from the ASGI lifespan. Everything that reaches
conversations goes through it: ``get_session_service(request)``,
``sessions_router()`` and ``get_persistence(request)`` for the rest.
"""

from __future__ import annotations

import logging

from agentsession.config import AgentSessionConfig, RetentionConfig
from agentsession.retention import RetentionScheduler
from agentsession.service import SessionService

__all__ = ["Persistence"]

logger = logging.getLogger("agentsession")


class Persistence:
    """A ``SessionService`` and, where its store needs one, its ``RetentionScheduler``.

    Stores that prune themselves as they are used (the memory store) get no scheduler,
    so nothing here starts a task on them and they run on any anyio backend.
    """

    def __init__(self, service: SessionService, retention: RetentionConfig | None = None) -> None:
        """``retention``: what the scheduler prunes (None or ``enabled: false``: nothing)."""
        self.service = service
        #: Prunes old rows per ``data_retention``; None when disabled or not needed.
        self.retention: RetentionScheduler | None = None
        if (
            retention is not None
            and retention.enabled
            and not getattr(service.store, "prunes_lazily", False)
        ):
            self.retention = RetentionScheduler(service, retention)

    @classmethod
    def from_config(cls, config: AgentSessionConfig) -> Persistence:
        """The store ``config.session_service`` names, its service and its scheduler."""
        return cls(SessionService.from_config(config), config.data_retention)

    async def start(self) -> None:
        """Start the service (SQL: migrate), then the scheduler."""
        await self.service.start()
        if self.retention is not None:
            await self.retention.start()

    async def close(self) -> None:
        """Stop the scheduler, then release the store's connections."""
        try:
            if self.retention is not None:
                await self.retention.stop()
        finally:
            await self.service.close()

    def __repr__(self) -> str:
        return f"Persistence({self.service.store!r}, retention={self.retention is not None})"
