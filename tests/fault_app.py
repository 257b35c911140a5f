"""The app the fault suite (``tests/test_faults.py``) runs under a real uvicorn process.

A FastAPI app with the HTTP API at ``/api/v1``, configured the way a user configures
it: ``SESSION_SECRET_KEY``, ``SESSION_DATABASE_URL`` (a SQL database, or a Redis server:
``redis://``, ``rediss://``, ``unix://``) and ``SESSION_TABLE_PREFIX`` from the
environment, over a ``session_service.timeout`` of ``FAULT_SERVICE_TIMEOUT`` seconds
(default 3); on Redis the keys are ``<SESSION_TABLE_PREFIX>agentsession:...``. The
caller is whoever the ``X-User`` header names (no header: 401).

Run: ``uvicorn tests.fault_app:app`` from the repository root.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from agentsession import AgentSessionConfig, SessionMiddleware, sessions_router

#: Seconds any one service call may take before it fails with ``StoreUnavailable``.
TIMEOUT = float(os.environ.get("FAULT_SERVICE_TIMEOUT", "3"))


def header_user(request: HTTPConnection) -> str | None:
    """The user id in ``X-User``."""
    return request.headers.get("x-user")


def build() -> FastAPI:
    config = AgentSessionConfig.from_mapping({"session_service": {"timeout": TIMEOUT}})
    if not config.session_service.database_url:
        raise RuntimeError("set SESSION_DATABASE_URL")
    application = FastAPI()
    application.include_router(sessions_router(user_resolver=header_user), prefix="/api/v1")
    application.add_middleware(SessionMiddleware, config=config)
    return application


app = build()
