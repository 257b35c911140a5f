"""The app the fault suite (``tests/test_faults.py``) runs under a real uvicorn process.

A FastAPI app with the HTTP API at ``/api/v1``, configured the way a user configures
it: ``SESSION_SECRET_KEY`` and ``SESSION_DATABASE_URL`` from the environment through
``load_config()``. The per-call timeout of the service is not a configuration key, so
``FAULT_SERVICE_TIMEOUT`` (seconds) sets it on the service the app hands the
middleware. The caller is whoever the ``X-User`` header names (no header: 401).

Run: ``uvicorn tests.fault_app:app`` from the repository root.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from agentsession import SessionMiddleware, SessionService, load_config, sessions_router
from agentsession.stores.sql import SqlStore

#: Seconds any one service call may take before it fails with ``StoreUnavailable``.
TIMEOUT = float(os.environ.get("FAULT_SERVICE_TIMEOUT", "3"))


def header_user(request: HTTPConnection) -> str | None:
    """The user id in ``X-User``."""
    return request.headers.get("x-user")


def build() -> FastAPI:
    config = load_config()
    settings = config.session_service
    if settings.type != "sql" or not settings.database_url:
        raise RuntimeError("set SESSION_DATABASE_URL")
    store = SqlStore(settings.database_url, pool_size=settings.pool_size)
    service = SessionService(store, ttl=settings.ttl, timeout=TIMEOUT)
    application = FastAPI()
    application.include_router(sessions_router(user_resolver=header_user), prefix="/api/v1")
    application.add_middleware(SessionMiddleware, config=config, service=service)
    return application


app = build()
