"""Revocation of signed cookies and tokens: logout (this device, everywhere), the cache's
staleness bound and its cost, legacy cookies, a store that is down, two real instances."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from agentsession import (
    SessionMiddleware,
    get_client_id,
    get_user_id,
    regenerate_client_id,
    sessions_router,
    set_user_id,
)
from agentsession.errors import StoreUnavailable
from agentsession.service import SessionService
from agentsession.stores.memory import MemoryStore
from tests.databases import fresh_database, sql_service, statements
from tests.test_server import serve

pytestmark = pytest.mark.anyio

SECRET = "test-secret-key-0123456789-abcdefghijklmnop"
STALENESS = 0.3


def build(service: SessionService | None = None, staleness: float = STALENESS) -> FastAPI:
    """An app whose users log in by name (``POST /login``) and read who they are."""
    app = FastAPI()

    def resolver(request: Any) -> str:
        return get_user_id(request) or get_client_id(request)

    app.include_router(sessions_router(user_resolver=resolver), prefix="/api")

    @app.post("/login")
    async def login(request: Request) -> dict[str, str]:
        regenerate_client_id(request)
        set_user_id(request, (await request.json())["user"])
        return {"client": get_client_id(request)}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {"user": get_user_id(request), "client": get_client_id(request)}

    app.add_middleware(
        SessionMiddleware,
        secret_key=SECRET,
        revocation_staleness=staleness,
        service=service or SessionService(MemoryStore()),
    )
    return app


def client(app: Any, base_url: str = "http://t", cookie: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app) if not base_url.startswith("http://127") else None
    cookies = {} if cookie is None else {"session": cookie}
    return httpx.AsyncClient(transport=transport, base_url=base_url, cookies=cookies)


async def who(http: httpx.AsyncClient) -> Any:
    return (await http.get("/whoami")).json()["user"]


async def test_logout_this_device_voids_its_copies_only() -> None:
    app = build()
    async with client(app) as laptop, client(app) as phone:
        await laptop.post("/login", json={"user": "alice"})
        await phone.post("/login", json={"user": "alice"})
        async with client(app, cookie=laptop.cookies["session"]) as copy:
            assert await who(copy) == "alice"
            response = await laptop.post("/api/session/logout", json={"everywhere": False})
            assert response.status_code == 204
            assert "session=null" in response.headers["set-cookie"]
            assert await who(copy) is None  # this process knows at once
            assert await who(laptop) is None
            assert await who(phone) == "alice"  # the user's other client still works


async def test_logout_everywhere_then_a_new_login_works() -> None:
    app = build()
    async with client(app) as laptop, client(app) as phone:
        await laptop.post("/login", json={"user": "bob"})
        await phone.post("/login", json={"user": "bob"})
        first = (await phone.get("/whoami")).json()["client"]
        response = await laptop.post("/api/session/logout", json={"everywhere": True})
        assert response.status_code == 204
        answer = (await phone.get("/whoami")).json()
        assert answer["user"] is None
        assert answer["client"] != first  # a fresh anonymous session, no error
        await phone.post("/login", json={"user": "bob"})
        assert await who(phone) == "bob"


async def test_logout_of_a_token_client_drops_the_token() -> None:
    app = build()
    async with client(app) as api:
        response = await api.post(
            "/login", json={"user": "carol"}, headers={"X-Session-Token": "new"}
        )
        token = response.headers["x-session-token"]
        headers = {"X-Session-Token": token}
        assert (await api.get("/whoami", headers=headers)).json()["user"] == "carol"
        response = await api.post("/api/session/logout", json={"everywhere": True}, headers=headers)
        assert response.status_code == 204
        assert response.headers["x-session-token"] != token
        assert (await api.get("/whoami", headers=headers)).json()["user"] is None


async def test_logout_body_is_checked() -> None:
    app = build()
    async with client(app) as http:
        response = await http.post("/api/session/logout", json={"everywhere": "yes"})
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "everywhere"
        assert (await http.post("/api/session/logout")).status_code == 204


async def test_a_used_session_costs_no_statement_while_the_cache_is_fresh(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url:
        service = sql_service(url)
        app = build(service, staleness=0.5)
        async with client(app) as http:
            await http.post("/login", json={"user": "dave"})
            await who(http)  # the first use polls
            with statements(service) as seen:
                for _ in range(50):
                    assert await who(http) == "dave"
            assert seen == []  # 50 requests that use the session: no store call
            await asyncio.sleep(0.6)
            with statements(service) as seen:
                for _ in range(50):
                    assert await who(http) == "dave"
            assert len(seen) == 1  # stale: one poll, shared by what follows
        await service.close()


def get_middleware_of(app: FastAPI) -> Any:
    """The app's revocation cache (the middleware is built on the first request)."""
    stack: Any = app.middleware_stack
    while stack is not None and not isinstance(stack, SessionMiddleware):
        stack = getattr(stack, "app", None)
    return None if stack is None else stack.revocations


async def test_a_cookie_without_issue_time_is_covered_by_any_revocation() -> None:
    app = build()
    async with client(app) as http:
        await http.post("/login", json={"user": "erin"})
        await who(http)
        middleware = get_middleware_of(app)
        assert middleware is not None
        codec = next(m for m in _middlewares(app) if isinstance(m, SessionMiddleware)).codec
        legacy = codec.encode("legacy-client", None, "{}", user_id="erin")  # no "t"
        async with client(app, cookie=legacy) as old:
            assert await who(old) == "erin"
            await http.post("/api/session/logout", json={"everywhere": True})
            assert await who(old) is None


def _middlewares(app: FastAPI) -> list[Any]:
    out, stack = [], app.middleware_stack
    while stack is not None:
        out.append(stack)
        stack = getattr(stack, "app", None)
    return out


class FlakyStore(MemoryStore):
    """A memory store whose revocation list can be made to fail."""

    down = False

    async def list_revocations(self, *args: Any) -> Any:
        if self.down:
            raise StoreUnavailable("down for the test")
        return await super().list_revocations(*args)


async def test_store_down_keeps_known_revocations_and_serves(caplog: Any) -> None:
    store = FlakyStore()
    app = build(SessionService(store), staleness=0.1)
    async with client(app) as laptop, client(app) as phone:
        await laptop.post("/login", json={"user": "fred"})
        await phone.post("/login", json={"user": "fred"})
        async with client(app, cookie=laptop.cookies["session"]) as copy:
            await laptop.post("/api/session/logout", json={"everywhere": False})
            store.down = True
            await asyncio.sleep(0.15)
            assert await who(copy) is None  # known revocations stay in force
            assert await who(phone) == "fred"  # and the others are served (fail open)
            assert "revocations could not be read" in caplog.text
            store.down = False


async def test_export_and_erase_routes() -> None:
    app = build()
    async with client(app) as http:
        await http.post("/login", json={"user": "gina"})
        created = (await http.post("/api/sessions", json={"name": "mine"})).json()
        task = {"taskId": "t1", "messageBubbles": [{"text": "hi"}]}
        await http.post(f"/api/sessions/{created['id']}/chat-tasks", json=task)
        response = await http.get("/api/me/export")
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        document = json.loads(response.content)
        assert document["userId"] == "gina"
        assert document["conversations"][0]["chatTasks"][0]["id"] == "t1"
        async with client(app, cookie=http.cookies["session"]) as copy:
            assert (await http.delete("/api/me")).status_code == 204
            assert await who(copy) is None
            assert await who(http) is None
        await http.post("/login", json={"user": "gina"})
        assert (await http.get("/api/sessions")).json()["data"] == []


async def test_two_real_instances_on_one_postgresql(tmp_path: Path) -> None:
    """A copied cookie loses its identity on both instances within the staleness bound."""
    async with fresh_database("postgresql", tmp_path) as url:
        one, two = sql_service(url), sql_service(url)
        async with (
            serve(build(one, staleness=0.5)) as first,
            serve(build(two, 0.5)) as second,
            httpx.AsyncClient(base_url=first) as victim,
        ):
            await victim.post("/login", json={"user": "hank"})
            cookie = victim.cookies["session"]
            async with (
                httpx.AsyncClient(base_url=first, cookies={"session": cookie}) as copy_one,
                httpx.AsyncClient(base_url=second, cookies={"session": cookie}) as copy_two,
            ):
                assert await who(copy_one) == "hank"
                assert await who(copy_two) == "hank"
                logout = await victim.post("/api/session/logout", json={"everywhere": True})
                assert logout.status_code == 204
                await asyncio.sleep(0.6)  # the staleness bound (and a margin)
                assert await who(copy_one) is None
                assert await who(copy_two) is None
            async with httpx.AsyncClient(base_url=second) as again:
                await again.post("/login", json={"user": "hank"})
                assert await who(again) == "hank"


async def test_a_login_in_the_same_millisecond_as_a_logout_everywhere_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new client id is issued after every revocation the instance knows of, so a login
    right after "log out everywhere" (the same millisecond here, frozen; or on an
    instance whose clock runs behind) is not voided by it. Copies of the old cookie are."""
    import agentsession.cookie.middleware as middleware_module
    import agentsession.service as service_module

    frozen = 1_800_000_000_000
    monkeypatch.setattr(middleware_module, "now_ms", lambda: frozen)
    monkeypatch.setattr(service_module, "now_ms", lambda: frozen)
    app = build()
    async with client(app) as laptop, client(app) as phone:
        await laptop.post("/login", json={"user": "carol"})
        await phone.post("/login", json={"user": "carol"})
        copied = phone.cookies["session"]
        response = await laptop.post("/api/session/logout", json={"everywhere": True})
        assert response.status_code == 204
        await phone.post("/login", json={"user": "carol"})
        assert await who(phone) == "carol"
        async with client(app, cookie=copied) as thief:
            assert await who(thief) is None
