"""A small Starlette app that exercises every part of the session, shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from agentsession import (
    SessionMiddleware,
    get_client_id,
    get_session_id,
    regenerate_client_id,
    set_session_id,
)
from agentsession.cookie.middleware import _STARLETTE_MARKS_ACCESS

SECRET = "test-secret-key-0123456789-abcdefghijklmnop"


async def read(request: Request) -> JSONResponse:
    return JSONResponse({"session": dict(request.session)})


async def write(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse({"session": dict(request.session)})


async def append(request: Request) -> JSONResponse:
    request.session["cart"].append(await request.json())
    return JSONResponse({"session": dict(request.session)})


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"session": dict(request.session)})


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ids(request: Request) -> JSONResponse:
    return JSONResponse({"clientId": get_client_id(request), "sessionId": get_session_id(request)})


async def current(request: Request) -> JSONResponse:
    set_session_id(request, (await request.json())["sessionId"])
    return JSONResponse({"sessionId": get_session_id(request)})


async def regenerate(request: Request) -> JSONResponse:
    return JSONResponse({"clientId": regenerate_client_id(request)})


async def fail(request: Request) -> Response:
    request.session["written"] = True
    return PlainTextResponse("broken", status_code=500)


async def vary(request: Request) -> PlainTextResponse:
    request.session.get("x")
    return PlainTextResponse("ok", headers={"Vary": "Accept-Encoding"})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {"session": dict(websocket.session), "clientId": get_session_id(websocket)}
    )
    await websocket.close()


ROUTES = [
    Route("/read", read),
    Route("/write", write, methods=["POST"]),
    Route("/append", append, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/untouched", untouched),
    Route("/ids", ids),
    Route("/current", current, methods=["POST"]),
    Route("/regenerate", regenerate, methods=["POST"]),
    Route("/fail", fail),
    Route("/vary", vary),
    WebSocketRoute("/ws", ws),
]


def make_app(**options: Any) -> Starlette:
    """The test app behind agentsession's middleware; ``options`` go to the middleware."""
    options.setdefault("secret_key", SECRET)
    return Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, **options)])


def client_for(app: Any, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """An httpx client talking to ``app`` in process through the ASGI transport."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def middleware_of(app: Starlette) -> SessionMiddleware:
    """The SessionMiddleware instance inside a Starlette app's built stack."""
    node: Any = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = node
    while not isinstance(node, SessionMiddleware):
        node = node.app
    return node


def record_hooks(app: Starlette, events: list[str]) -> None:
    """Register startup/shutdown hooks on ``app``'s middleware that log to ``events``."""
    middleware = middleware_of(app)

    async def start() -> None:
        events.append("start")

    async def stop() -> None:
        events.append("stop")

    middleware.on_startup(start)
    middleware.on_shutdown(stop)


#: Starlette 1.0+ tells the session when it is used; before that it is decoded eagerly.
lazy_only = pytest.mark.skipif(
    not _STARLETTE_MARKS_ACCESS,
    reason="Starlette < 1.0 does not call mark_accessed(): sessions are decoded eagerly",
)


class lifespan:
    """Run an app's ASGI lifespan around a block, as a server would."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __aenter__(self) -> None:
        self.queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.task = asyncio.create_task(
            self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}}, self.queue.get, self.sent.put
            )  # type: ignore[arg-type]
        )
        await self.queue.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self.sent.get(), 30)
        assert message["type"] == "lifespan.startup.complete", message

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(self.sent.get(), 30)
        assert message["type"] == "lifespan.shutdown.complete", message
        await self.task


def run_in_thread(main: Callable[[], Awaitable[None]], backend: str = "asyncio") -> None:
    """``anyio.run(main)`` on ``backend`` in a thread of its own, for sync tests.

    The suite's session-wide event loop may count as running in the main thread
    between async tests, and anyio.run refuses to start inside a running loop.
    """
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, main, backend=backend).result()


class Chunks:
    """A request body streamed in ``count`` chunks of ``size`` bytes; ``sent`` counts those read."""

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.sent += 1
            yield b" " * self.size
