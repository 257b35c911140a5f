"""The app the fault suite (``tests/test_faults.py``) runs under a real uvicorn process.

A FastAPI app with the HTTP API at ``/api/v1``, configured the way a user configures
it: ``SESSION_SECRET_KEY``, ``SESSION_DATABASE_URL`` (a SQL database, or a Redis server:
``redis://``, ``rediss://``, ``unix://``) and ``SESSION_TABLE_PREFIX`` from the
environment through ``load_config()``; on Redis the keys are
``<SESSION_TABLE_PREFIX>agentsession:...``, as ``SessionService.from_config`` makes
them. The per-call timeout of the service is not a configuration key, so
``FAULT_SERVICE_TIMEOUT`` (seconds) sets it on the service the app hands the
middleware. The caller is whoever the ``X-User`` header names (no header: 401).

Run: ``uvicorn tests.fault_app:app`` from the repository root.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from agentsession import SessionMiddleware, SessionService, load_config, sessions_router
from agentsession.stores.base import Store

#: Seconds any one service call may take before it fails with ``StoreUnavailable``.
TIMEOUT = float(os.environ.get("FAULT_SERVICE_TIMEOUT", "3"))


def header_user(request: HTTPConnection) -> str | None:
    """The user id in ``X-User``."""
    return request.headers.get("x-user")


def build() -> FastAPI:
    config = load_config()
    settings = config.session_service
    if not settings.database_url:
        raise RuntimeError("set SESSION_DATABASE_URL")
    store: Store
    if settings.type == "redis":
        from agentsession.stores.redis import RedisStore

        store = RedisStore(
            settings.database_url,
            pool_size=settings.pool_size,
            key_prefix=f"{settings.table_prefix}agentsession:",
        )
    else:
        from agentsession.stores.sql import SqlStore

        store = SqlStore(
            settings.database_url,
            pool_size=settings.pool_size,
            table_prefix=settings.table_prefix,
        )
    service = SessionService(store, ttl=settings.ttl, timeout=TIMEOUT)
    application = FastAPI()
    application.include_router(sessions_router(user_resolver=header_user), prefix="/api/v1")
    application.add_middleware(SessionMiddleware, config=config, service=service)
    return application


app = build()
