"""The service inside an app: FastAPI dependency, lifespan migrations, memory -> sql."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import Route

from agentsession import (
    SessionMiddleware,
    SessionService,
    get_client_id,
    get_session_id,
    get_session_service,
    set_session_id,
)
from agentsession.config import AgentSessionConfig
from agentsession.stores.memory import MemoryStore
from agentsession.stores.sql import SqlStore
from tests.apps import lifespan, middleware_of

pytestmark = pytest.mark.anyio
SECRET = "k" * 48


def chat_app(config: AgentSessionConfig) -> FastAPI:
    """A minimal gateway: one route starts a conversation, one reads the current one."""
    app = FastAPI()

    @app.post("/conversations")
    async def create(
        request: Request, service: SessionService = Depends(get_session_service)
    ) -> dict[str, str]:
        record = await service.create_session(get_client_id(request), name="chat")
        set_session_id(request, record.id)
        await service.save_task(
            get_client_id(request), record.id, "t1", user_message="hi", message_bubbles=["hello"]
        )
        return {"id": record.id}

    @app.get("/current")
    async def current(
        request: Request, service: SessionService = Depends(get_session_service)
    ) -> dict[str, object]:
        session_id = get_session_id(request)
        if session_id is None:
            return {"clientId": get_client_id(request), "sessionId": None}
        tasks = await service.list_tasks(get_client_id(request), session_id)
        return {
            "clientId": get_client_id(request),
            "sessionId": session_id,
            "bubbles": [task.message_bubbles for task in tasks.items],
        }

    app.add_middleware(SessionMiddleware, config=config)
    return app


def config_for(url: str | None) -> AgentSessionConfig:
    data: dict[str, object] = {"session": {"secret_key": SECRET, "https_only": False}}
    if url is not None:
        data["session_service"] = {"type": "sql", "database_url": url}
    return AgentSessionConfig.from_mapping(data, env={})


async def test_the_middleware_owns_a_memory_service_by_default() -> None:
    app = Starlette(routes=[Route("/", lambda request: None)])
    middleware = SessionMiddleware(app, secret_key=SECRET)
    assert isinstance(middleware.service.store, MemoryStore)


async def test_without_config_the_environment_picks_the_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SESSION_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    middleware = SessionMiddleware(Starlette(), secret_key=SECRET)
    store = middleware.service.store
    assert isinstance(store, SqlStore)
    assert store.url.database == str(tmp_path / "env.db")
    await middleware.service.close()


async def test_get_session_service_without_the_middleware_says_so() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(service: SessionService = Depends(get_session_service)) -> None:
        raise AssertionError("unreachable")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="SessionMiddleware"):
            await client.get("/")


async def test_lifespan_migrates_and_moving_from_memory_to_sql_keeps_web_sessions(
    fresh_url: str,
) -> None:
    # 1. Memory mode: the browser gets its client id and a current conversation.
    browser = Browser()
    memory_app = chat_app(config_for(None))
    async with lifespan(memory_app):
        assert (await browser.request(memory_app, "POST", "/conversations")).status_code == 200
        before = (await browser.request(memory_app, "GET", "/current")).json()
        assert before["bubbles"] == [["hello"]]

    # 2. Restart in sql mode: the lifespan runs the migrations; the same cookie still
    #    names the same client (its memory-only conversation is gone with the process).
    sql_app = chat_app(config_for(fresh_url))
    async with lifespan(sql_app):
        store = middleware_of(sql_app).service.store
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as connection:
            version = await connection.scalar(
                text("SELECT version_num FROM agentsession_alembic_version")
            )
        assert version is not None
        assert (await browser.request(sql_app, "POST", "/conversations")).status_code == 200
        after = (await browser.request(sql_app, "GET", "/current")).json()
        assert after["clientId"] == before["clientId"]
        assert after["sessionId"] != before["sessionId"]
        assert after["bubbles"] == [["hello"]]

    # 3. Another instance (a restart) on the same database sees that conversation.
    restarted = chat_app(config_for(fresh_url))
    async with lifespan(restarted):
        assert (await browser.request(restarted, "GET", "/current")).json() == after


class Browser:
    """Keeps the session cookie across apps, as a browser does across server restarts."""

    def __init__(self) -> None:
        self.cookie: str | None = None

    async def request(self, app: FastAPI, method: str, path: str) -> httpx.Response:
        headers = {} if self.cookie is None else {"cookie": self.cookie}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.request(method, path, headers=headers)
        for value in response.headers.get_list("set-cookie"):
            self.cookie = value.split(";", 1)[0]
        return response
