"""Operability: ``GET /health`` and ``ping()``, one error shape across an app, named
OpenAPI schemas.

The outage half of the health check (503 while PostgreSQL is down) is in the fault
suite, on its own cluster: ``tests/test_faults.py::test_health_answers_503_...``.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentsession import (
    IdConflict,
    InvalidInput,
    SessionMiddleware,
    SessionNotFound,
    SessionService,
    StoreUnavailable,
    get_session_service,
    install_error_handlers,
    sessions_router,
)
from agentsession.openapi import OPERATIONS, SCHEMAS, openapi_document
from agentsession.stores.memory import MemoryStore
from agentsession.stores.sql import SqlStore
from tests.apps import SECRET, client_for
from tests.databases import statements

pytestmark = pytest.mark.anyio

PREFIX = "/api/v1"
UNAVAILABLE = {
    "error": {
        "code": "store_unavailable",
        "message": "the session store is unavailable; retry later",
    }
}


def fastapi_app(service: SessionService, *, handlers: bool = True) -> FastAPI:
    app = FastAPI()
    app.include_router(sessions_router(), prefix=PREFIX)

    @app.post(PREFIX + "/chat")
    async def chat(request: Request) -> JSONResponse:
        """The README's own route: it creates a conversation with a fixed id."""
        service = get_session_service(request)
        record = await service.create_session("alice", session_id="fixed-id")
        return JSONResponse({"id": record.id})

    @app.get(PREFIX + "/raise/{kind}")
    async def raise_(kind: str) -> None:
        raise {
            "unavailable": StoreUnavailable("down"),
            "missing": SessionNotFound("x"),
            "invalid": InvalidInput("session_id", "must not be empty"),
        }[kind]

    @app.get("/elsewhere/{number}")
    async def elsewhere(number: int) -> dict[str, int]:
        return {"number": number}

    if handlers:
        install_error_handlers(app, prefix=PREFIX)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


def starlette_app(service: SessionService) -> Starlette:
    async def conflict(request: Request) -> JSONResponse:
        raise IdConflict("session_id", "fixed-id")

    app = Starlette(
        routes=[
            Route("/mine", conflict, methods=["POST"]),
            Mount(PREFIX, app=sessions_router()),
        ]
    )
    install_error_handlers(app, prefix=PREFIX)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


# Health


async def test_health_is_ok_on_every_backend(service: SessionService) -> None:
    async with client_for(fastapi_app(service)) as http:
        response = await http.get(f"{PREFIX}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers  # a probe gets no session


async def test_ping_is_one_statement(fresh_url: str) -> None:
    async with SessionService(SqlStore(fresh_url)) as service:
        with statements(service) as seen:
            await service.ping()
    assert len(seen) == 1, seen
    assert seen[0].strip().upper().startswith("SELECT"), seen


class SlowStore(MemoryStore):
    async def ping(self) -> None:
        import anyio

        await anyio.sleep(5)


async def test_health_gives_up_after_a_second() -> None:
    """A store slower than a second is as good as down to a load balancer."""
    import time

    service = SessionService(SlowStore())
    async with client_for(fastapi_app(service)) as http:
        started = time.monotonic()
        response = await http.get(f"{PREFIX}/health")
        took = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == UNAVAILABLE
    assert response.headers["retry-after"] == "5"
    assert 0.9 < took < 2.5, took


async def test_health_on_a_plain_starlette_app() -> None:
    async with client_for(starlette_app(SessionService(MemoryStore()))) as http:
        response = await http.get(f"{PREFIX}/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# One error shape


async def test_the_apps_own_route_answers_the_apis_errors() -> None:
    """The README's ``POST /chat`` sent twice: 409 in the API's shape, not a 500."""
    async with client_for(fastapi_app(SessionService(MemoryStore()))) as http:
        first = await http.post(f"{PREFIX}/chat")
        again = await http.post(f"{PREFIX}/chat")
        unavailable = await http.get(f"{PREFIX}/raise/unavailable")
        missing = await http.get(f"{PREFIX}/raise/missing")
        invalid = await http.get(f"{PREFIX}/raise/invalid")
    assert first.status_code == 200
    assert again.status_code == 409
    assert again.json() == {
        "error": {
            "code": "conflict",
            "message": "sessionId is already in use by another of your conversations",
            "field": "sessionId",
        }
    }
    assert (unavailable.status_code, unavailable.json()) == (503, UNAVAILABLE)
    assert unavailable.headers["retry-after"] == "5"
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": {"code": "not_found", "message": "no such conversation"}},
    )
    assert invalid.status_code == 422
    assert invalid.json() == {
        "error": {
            "code": "invalid_input",
            "message": "sessionId: must not be empty",
            "field": "sessionId",
        }
    }


async def test_without_the_handlers_the_same_route_is_a_500() -> None:
    """The control: what ``install_error_handlers`` changes."""
    app = fastapi_app(SessionService(MemoryStore()), handlers=False)
    async with client_for(app) as http:
        await http.post(f"{PREFIX}/chat")
        with pytest.raises(IdConflict):
            await http.post(f"{PREFIX}/chat")


async def test_404_and_405_under_the_prefix_have_the_apis_shape() -> None:
    async with client_for(fastapi_app(SessionService(MemoryStore()))) as http:
        unknown = await http.get(f"{PREFIX}/no-such-route")
        method = await http.put(f"{PREFIX}/sessions")
        validation = await http.get("/elsewhere/not-a-number")
        outside = await http.get("/no-such-route")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not_found", "message": "no such route"}}
    assert method.status_code == 405
    assert method.headers["allow"] == "GET, POST"
    assert method.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": "this route does not take this method; it takes GET, POST",
        }
    }
    # Outside the prefix the app's own (FastAPI's) answers stay as they were.
    assert (outside.status_code, outside.json()) == (404, {"detail": "Not Found"})
    assert validation.status_code == 422
    assert "detail" in validation.json()


async def test_fastapi_validation_under_the_prefix_has_the_apis_shape() -> None:
    app = fastapi_app(SessionService(MemoryStore()))

    @app.get(PREFIX + "/numbers/{number}")
    async def number(number: int) -> dict[str, int]:
        return {"number": number}

    async with client_for(app) as http:
        response = await http.get(f"{PREFIX}/numbers/seven")
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "invalid_input"
    assert body["error"]["field"] == "path.number"
    assert body["error"]["message"].startswith("path.number: ")


async def test_a_plain_starlette_app_gets_the_same_shape() -> None:
    async with client_for(starlette_app(SessionService(MemoryStore()))) as http:
        conflict = await http.post("/mine")
        unknown = await http.get(f"{PREFIX}/nothing-here")
        outside = await http.get("/nothing-here")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflict"
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not_found", "message": "no such route"}}
    assert (outside.status_code, outside.text) == (404, "Not Found")  # Starlette's own


# Named schemas


def refs(node: Any) -> set[str]:
    """Every ``$ref`` under ``node``."""
    if isinstance(node, dict):
        found = {node["$ref"]} if "$ref" in node else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


@pytest.mark.parametrize("source", ["fastapi", "written"])
def test_every_response_refers_to_a_named_schema(source: str) -> None:
    if source == "fastapi":
        document = fastapi_app(SessionService(MemoryStore())).openapi()
    else:
        document = openapi_document(PREFIX)
    schemas = document["components"]["schemas"]
    for name in (
        "Conversation",
        "ChatTask",
        "Feedback",
        "ConversationPage",
        "ChatTaskPage",
        "FeedbackPage",
        "CurrentSession",
        "Error",
        "Health",
        "UserExport",
    ):
        assert schemas[name] == SCHEMAS[name], name
    ours = {
        (path, method): document["paths"][PREFIX + path][method.lower()]
        for path, method in OPERATIONS
    }
    for key, operation in ours.items():
        for status, response in operation["responses"].items():
            if "content" not in response:
                assert status == "204", key
                continue
            schema = response["content"]["application/json"]["schema"]
            assert set(schema) == {"$ref"}, (key, status)
            assert schema["$ref"].removeprefix("#/components/schemas/") in schemas
    # Every reference resolves, pages' items included.
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert refs(schemas["ChatTaskPage"]) == {"#/components/schemas/ChatTask"}


async def test_405_on_a_mounted_router_names_every_method() -> None:
    async with client_for(starlette_app(SessionService(MemoryStore()))) as http:
        response = await http.delete(f"{PREFIX}/session/current")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT"
    assert response.json()["error"]["code"] == "method_not_allowed"
