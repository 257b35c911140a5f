"""The middleware runs the package's hooks from the lifespan scope, or lazily."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.apps import client_for, make_app, middleware_of, record_hooks

pytestmark = pytest.mark.anyio


async def test_hooks_run_on_lifespan_and_app_lifespan_still_runs() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app start")
        yield
        events.append("app stop")

    app = make_app()
    app.router.lifespan_context = lifespan
    record_hooks(app, events)
    with TestClient(app) as client:
        assert events == ["start", "app start"]
        client.post("/write", json={"a": 1})
    assert events == ["start", "app start", "app stop", "stop"]


async def test_lazy_start_without_lifespan() -> None:
    events: list[str] = []
    app = make_app()
    record_hooks(app, events)
    async with client_for(app) as client:  # httpx sends no lifespan events
        assert events == []
        assert (await client.get("/untouched")).status_code == 200
        assert events == ["start"]
        await client.get("/untouched")
        assert events == ["start"]


async def test_failing_startup_hook_fails_startup() -> None:
    app = make_app()

    async def broken() -> None:
        raise RuntimeError("database unreachable")

    middleware_of(app).on_startup(broken)
    with pytest.raises(RuntimeError, match="database unreachable"), TestClient(app):
        pass
