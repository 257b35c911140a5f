"""Lifecycle: the startup and shutdown hooks that later layers hang on the middleware.

Hooks run once, in order, on the ASGI ``lifespan`` startup (or, where the server sends
no lifespan events, before the first request); shutdown hooks run in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["Hook", "Lifecycle"]

Hook = Callable[[], Awaitable[None]]
logger = logging.getLogger("agentsession")


class Lifecycle:
    """Runs startup hooks once and shutdown hooks once, whoever asks first."""

    def __init__(self) -> None:
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._lock: anyio.Lock | None = None
        self.started = False
        #: True while hooks exist that have not run: the only check on the request path.
        self.pending = False

    def on_startup(self, hook: Hook) -> None:
        """Run ``hook`` at startup (migrations, schedulers)."""
        self._startup.append(hook)
        self.pending = not self.started

    def on_shutdown(self, hook: Hook) -> None:
        """Run ``hook`` at shutdown (stop schedulers, dispose engines)."""
        self._shutdown.append(hook)

    async def startup(self) -> None:
        """Run the startup hooks unless they already ran; concurrent callers wait."""
        if self.started:
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.started:
                return
            for hook in self._startup:
                await hook()
            self.started = True
            self.pending = False

    async def shutdown(self) -> None:
        """Run the shutdown hooks (newest first) if startup ran; a failing hook is logged."""
        if not self.started:
            return
        self.started = False
        for hook in reversed(self._shutdown):
            try:
                await hook()
            except Exception:
                logger.exception("agentsession shutdown hook %r failed", hook)
