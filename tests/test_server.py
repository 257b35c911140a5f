"""Over a real uvicorn on a loopback port: lifespan hooks, cookies, proxies, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from tests.apps import lazy_only, make_app, record_hooks
from tests.proxy import free_port

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serve(app: Starlette, **options: object) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn (lifespan on) for the duration of the block."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@lazy_only
async def test_real_server_runs_hooks_and_keeps_the_session() -> None:
    events: list[str] = []
    app = make_app()
    record_hooks(app, events)
    async with serve(app) as url:
        assert events == ["start"]
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/write", json={"user": "alice"})
            assert "secure" not in response.headers["set-cookie"]
            assert (await client.get("/read")).json() == {"session": {"user": "alice"}}
            untouched = await client.get("/untouched")
            assert "set-cookie" not in untouched.headers
            assert "vary" not in untouched.headers
    assert events == ["start", "stop"]


async def test_https_behind_a_proxy_sets_secure() -> None:
    app = make_app(https_only="auto")
    async with (
        serve(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        proxied = await client.post("/write", json={"a": 1}, headers={"X-Forwarded-Proto": "https"})
        assert proxied.headers["set-cookie"].endswith("; httponly; samesite=lax; secure")
        plain = await client.post("/write", json={"a": 2})
        assert plain.headers["set-cookie"].endswith("; httponly; samesite=lax")


async def test_token_client_over_the_wire() -> None:
    async with (
        serve(make_app()) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        first = await client.post("/write", json={"n": 1}, headers={"X-Session-Token": "new"})
        token = first.headers["x-session-token"]
        assert "set-cookie" not in first.headers
        read = await client.get("/read", headers={"X-Session-Token": token})
        assert read.json() == {"session": {"n": 1}}
