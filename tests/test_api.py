"""The HTTP API (sessions_router) on every backend, through httpx's ASGI transport.

Every route, pagination, search and pins, the web session (current / switch / extend),
isolation between users (cookie jars and an auth layer's ``request.state.user``), a
token client without cookies, concurrent upserts of one task, and the error mapping.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.applications import Starlette
from starlette.routing import Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from agentsession import SessionMiddleware, SessionService, sessions_router
from agentsession.cookie.codec import CookieCodec
from agentsession.service import encode_cursor
from tests.apps import SECRET, client_for, middleware_of
from tests.databases import behind_proxy, sql_service, statements

pytestmark = pytest.mark.anyio

PREFIX = "/api/v1"
MAX_AGE = 3600


class StateUser:
    """An auth layer stand-in: ``X-User: <id>`` becomes ``request.state.user``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-user":
                    scope.setdefault("state", {})["user"] = {"id": value.decode()}
        await self.app(scope, receive, send)


def unique(name: str) -> str:
    """A task id no other test uses (task ids are global in the shared databases)."""
    return f"{name}-{secrets.token_hex(4)}"


def fastapi_app(service: SessionService, **router: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(sessions_router(**router), prefix=PREFIX)
    app.add_middleware(StateUser)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, max_age=MAX_AGE, service=service)
    return app


def starlette_app(service: SessionService, **router: Any) -> Starlette:
    app = Starlette(routes=[Mount(PREFIX, app=sessions_router(**router))])
    app.add_middleware(StateUser)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, max_age=MAX_AGE, service=service)
    return app


MakeApp = Callable[..., Any]


@pytest.fixture(params=["fastapi", "starlette"])
def make_app(request: pytest.FixtureRequest) -> MakeApp:
    """Builds the API app; every test runs in a FastAPI and in a plain Starlette app."""
    return fastapi_app if request.param == "fastapi" else starlette_app


@pytest.fixture
async def app(make_app: MakeApp, service: SessionService) -> Any:
    return make_app(service)


@pytest.fixture
async def alice(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        yield client


@pytest.fixture
async def bob(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        yield client


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    """The JSON of a response that must have ``status``."""
    got = await response
    assert got.status_code == status, got.text
    return got.json() if got.content else None


def error_of(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error.get("field") == field


# One conversation's whole life, on every backend and in both frameworks


async def test_a_conversation_from_start_to_end(alice: httpx.AsyncClient) -> None:
    empty = await ok(alice.get("/sessions"))
    assert empty == {"data": [], "meta": {"nextCursor": None}}

    created = await ok(alice.post("/sessions", json={"name": "Trip", "agentId": "planner"}), 201)
    assert created["name"] == "Trip"
    assert created["agentId"] == "planner"
    assert created["createdTime"] == created["updatedTime"] > 0
    assert created["lastViewedAt"] is None
    assert created["pinned"] is False
    session_id = created["id"]
    current = await ok(alice.get("/session/current"))
    assert current["sessionId"] == session_id, "POST /sessions makes it current"

    assert await ok(alice.get(f"/sessions/{session_id}")) == created
    renamed = await ok(alice.patch(f"/sessions/{session_id}", json={"name": "Paris"}))
    assert renamed["name"] == "Paris"
    assert renamed["updatedTime"] >= created["updatedTime"]

    task_id = unique("task")
    task = {
        "taskId": task_id,
        "userMessage": "Where to eat?",
        "messageBubbles": [{"type": "text", "text": "Try the bistro."}, {"n": 1.5}],
        "taskMetadata": {"model": "echo", "tokens": [1, 2]},
    }
    saved = await ok(alice.post(f"/sessions/{session_id}/chat-tasks", json=task))
    assert {k: saved[k] for k in task} == task, "JSON values come back as JSON, not strings"
    assert saved["sessionId"] == session_id
    replaced = await ok(
        alice.post(
            f"/sessions/{session_id}/chat-tasks",
            json={"taskId": task_id, "messageBubbles": ["edited"]},
        )
    )
    assert replaced["messageBubbles"] == ["edited"]
    assert replaced["userMessage"] is None
    assert replaced["createdTime"] == saved["createdTime"], "an upsert keeps the creation time"
    history = await ok(alice.get(f"/sessions/{session_id}/chat-tasks"))
    assert [t["taskId"] for t in history["data"]] == [task_id]
    assert history["data"][0]["messageBubbles"] == ["edited"]
    viewed = await ok(alice.get(f"/sessions/{session_id}"))
    assert viewed["lastViewedAt"] is not None, "saving a task marks the conversation viewed"

    feedback = await ok(
        alice.post(
            "/feedback",
            json={
                "taskId": task_id,
                "sessionId": session_id,
                "feedbackType": "up",
                "feedbackText": "nice",
            },
        ),
        201,
    )
    assert feedback["feedbackType"] == "up"
    assert feedback["feedbackText"] == "nice"
    again = await ok(
        alice.post(
            "/feedback",
            json={"taskId": task_id, "sessionId": session_id, "feedbackType": "down"},
        ),
        201,
    )
    listed = await ok(alice.get("/feedback"))
    assert [f["id"] for f in listed["data"]] == [again["id"]], "one per user and task"
    assert listed["data"][0]["feedbackType"] == "down"
    assert listed["data"][0]["feedbackText"] is None

    deleted = await alice.delete(f"/sessions/{session_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await ok(alice.get("/session/current")))["sessionId"] is None
    error_of(await alice.get(f"/sessions/{session_id}"), 404, "not_found")
    error_of(await alice.get(f"/sessions/{session_id}/chat-tasks"), 404, "not_found")
    assert (await ok(alice.get("/feedback")))["data"] == [], "feedback went with it"
    assert (await ok(alice.get("/sessions")))["data"] == []


async def test_create_takes_an_empty_body(alice: httpx.AsyncClient) -> None:
    created = await ok(alice.post("/sessions"), 201)
    assert created["name"] is None
    assert created["agentId"] is None


async def test_pages_of_conversations_tasks_and_feedback(alice: httpx.AsyncClient) -> None:
    ids = [(await ok(alice.post("/sessions", json={"name": f"c{i}"}), 201))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await ok(alice.get("/sessions", params=params))
        sizes.append(len(page["data"]))
        seen += [item["id"] for item in page["data"]]
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert sorted(seen) == sorted(ids), "every conversation once"

    conversation = ids[0]
    names = [unique(f"t{i}") for i in range(5)]
    for i in range(5):
        task = {"taskId": names[i], "messageBubbles": [i]}
        await ok(alice.post(f"/sessions/{conversation}/chat-tasks", json=task))
        rating = {"taskId": names[i], "sessionId": conversation, "feedbackType": "up"}
        await ok(alice.post("/feedback", json=rating), 201)
    tasks: list[str] = []
    feedback: list[str] = []
    cursors = {"tasks": None, "feedback": None}
    for _ in range(3):
        params = {"limit": "2"}
        if cursors["tasks"]:
            params["cursor"] = cursors["tasks"]
        page = await ok(alice.get(f"/sessions/{conversation}/chat-tasks", params=params))
        tasks += [t["taskId"] for t in page["data"]]
        cursors["tasks"] = page["meta"]["nextCursor"]
        params = {"limit": "2"}
        if cursors["feedback"]:
            params["cursor"] = cursors["feedback"]
        page = await ok(alice.get("/feedback", params=params))
        feedback += [f["taskId"] for f in page["data"]]
        cursors["feedback"] = page["meta"]["nextCursor"]
    assert tasks == names, "history oldest first"
    assert sorted(feedback) == sorted(names)
    assert cursors == {"tasks": None, "feedback": None}


async def test_default_and_largest_page(alice: httpx.AsyncClient) -> None:
    for i in range(21):
        await ok(alice.post("/sessions", json={"name": str(i)}), 201)
    page = await ok(alice.get("/sessions"))
    assert len(page["data"]) == 20
    assert page["meta"]["nextCursor"] is not None
    assert len((await ok(alice.get("/sessions", params={"limit": "100"})))["data"]) == 21
    error_of(await alice.get("/sessions", params={"limit": "101"}), 422, "invalid_input", "limit")
    error_of(await alice.get("/sessions", params={"limit": "0"}), 422, "invalid_input", "limit")
    error_of(await alice.get("/sessions", params={"limit": "x"}), 422, "invalid_input", "limit")
    error_of(
        await alice.get("/sessions", params={"cursor": "garbage!"}),
        422,
        "invalid_input",
        "cursor",
    )


async def test_feedback_filters(alice: httpx.AsyncClient) -> None:
    first = (await ok(alice.post("/sessions"), 201))["id"]
    second = (await ok(alice.post("/sessions"), 201))["id"]
    a, b, c = unique("a"), unique("b"), unique("c")
    for conversation, task, rating in ((first, a, "up"), (first, b, "down"), (second, c, "up")):
        body = {"taskId": task, "messageBubbles": []}
        await ok(alice.post(f"/sessions/{conversation}/chat-tasks", json=body))
        rating_body = {"taskId": task, "sessionId": conversation, "feedbackType": rating}
        await ok(alice.post("/feedback", json=rating_body), 201)

    async def tasks(**params: str) -> list[str]:
        page = await ok(alice.get("/feedback", params=params))
        return sorted(item["taskId"] for item in page["data"])

    assert await tasks() == sorted([a, b, c])
    assert await tasks(sessionId=first) == sorted([a, b])
    assert await tasks(taskId=c) == [c]
    assert await tasks(feedbackType="up") == sorted([a, c])
    assert await tasks(sessionId=first, feedbackType="up") == [a]
    everything = await ok(alice.get("/feedback"))
    times = sorted(item["createdTime"] for item in everything["data"])
    assert await tasks(since=str(times[0]), until=str(times[-1] + 1)) == sorted([a, b, c])
    assert await tasks(since=str(times[-1] + 1)) == []
    assert await tasks(until="2000-01-01") == []
    assert await tasks(since="2000-01-01T00:00:00Z") == sorted([a, b, c])
    error_of(
        await alice.get("/feedback", params={"since": "yesterday"}), 422, "invalid_input", "since"
    )
    error_of(
        await alice.get("/feedback", params={"feedbackType": "meh"}),
        422,
        "invalid_input",
        "feedbackType",
    )


# The caller's web session


async def test_current_session_reports_expiry(alice: httpx.AsyncClient) -> None:
    before = int(time.time())
    current = await ok(alice.get("/session/current"))
    assert current["clientId"]
    assert current["sessionId"] is None
    assert before + MAX_AGE <= current["expiresAt"] // 1000 <= int(time.time()) + MAX_AGE
    assert MAX_AGE - 2 <= current["timeRemainingSeconds"] <= MAX_AGE
    again = await ok(alice.get("/session/current"))
    assert again["clientId"] == current["clientId"], "the cookie keeps the client"


async def test_switch_only_to_your_own_conversation(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    first = (await ok(alice.post("/sessions", json={"name": "one"}), 201))["id"]
    second = (await ok(alice.post("/sessions", json={"name": "two"}), 201))["id"]
    assert (await ok(alice.get("/session/current")))["sessionId"] == second
    switched = await ok(alice.put("/session/current", json={"sessionId": first}))
    assert switched["sessionId"] == first
    assert (await ok(alice.get("/session/current")))["sessionId"] == first

    bobs = (await ok(bob.post("/sessions"), 201))["id"]
    error_of(await bob.put("/session/current", json={"sessionId": first}), 404, "not_found")
    assert (await ok(bob.get("/session/current")))["sessionId"] == bobs, "unchanged"
    error_of(await alice.put("/session/current", json={"sessionId": "nope"}), 404, "not_found")
    assert (await ok(alice.get("/session/current")))["sessionId"] == first
    cleared = await ok(alice.put("/session/current", json={"sessionId": None}))
    assert cleared["sessionId"] is None
    error_of(await alice.put("/session/current", json={}), 422, "invalid_input", "sessionId")


async def test_extend_reissues_the_cookie_with_a_fresh_expiry(app: Any) -> None:
    signer = middleware_of(app).codec._current
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        # A cookie signed 100 s ago (younger than the sliding refresh, a tenth of max_age).
        signer.get_timestamp = lambda: int(time.time()) - 100  # type: ignore[method-assign]
        try:
            client_id = (await ok(client.get("/session/current")))["clientId"]
        finally:
            del signer.get_timestamp
        old = await client.get("/session/current")
        assert "set-cookie" not in old.headers, "reading does not re-issue"
        assert old.json()["clientId"] == client_id
        assert old.json()["timeRemainingSeconds"] <= MAX_AGE - 99

        extended = await client.post("/session/extend")
        assert extended.status_code == 200
        assert f"Max-Age={MAX_AGE}" in extended.headers["set-cookie"]
        body = extended.json()
        assert body["clientId"] == client_id
        assert body["expiresAt"] >= old.json()["expiresAt"] + 99_000
        assert body["timeRemainingSeconds"] >= MAX_AGE - 2
        after = await ok(client.get("/session/current"))
        assert after["expiresAt"] == body["expiresAt"], "the new cookie is the one kept"


# Isolation


async def snapshot(client: httpx.AsyncClient, conversation: str) -> Any:
    """Everything a user can read about one conversation."""
    return (
        await ok(client.get(f"/sessions/{conversation}")),
        await ok(client.get(f"/sessions/{conversation}/chat-tasks")),
        await ok(client.get("/feedback")),
        await ok(client.get("/sessions")),
    )


async def assert_isolated(
    owner: httpx.AsyncClient,
    other: httpx.AsyncClient,
    owner_headers: dict[str, str],
    other_headers: dict[str, str],
) -> None:
    """``other`` gets 404 on everything naming ``owner``'s rows, and changes none of them."""
    owner.headers.update(owner_headers)
    other.headers.update(other_headers)
    conversation = (await ok(owner.post("/sessions", json={"name": "private"}), 201))["id"]
    secret = unique("secret-task")
    task = {"taskId": secret, "userMessage": "mine", "messageBubbles": ["x"]}
    await ok(owner.post(f"/sessions/{conversation}/chat-tasks", json=task))
    rating = {"taskId": secret, "sessionId": conversation, "feedbackType": "up"}
    await ok(owner.post("/feedback", json=rating), 201)
    before = await snapshot(owner, conversation)

    base = f"/sessions/{conversation}"
    attempts = [
        other.get(base),
        other.patch(base, json={"name": "stolen"}),
        other.patch(base, json={"pinned": True}),
        other.delete(base),
        other.get(f"{base}/chat-tasks"),
        other.post(f"{base}/chat-tasks", json={"taskId": secret, "messageBubbles": []}),
        other.post(f"{base}/chat-tasks", json={"taskId": unique("new-task"), "messageBubbles": []}),
        other.post("/feedback", json={**rating, "feedbackType": "down"}),
        other.put("/session/current", json={"sessionId": conversation}),
    ]
    for attempt in attempts:
        error_of(await attempt, 404, "not_found")
    assert (await ok(other.get("/feedback", params={"sessionId": conversation})))["data"] == []
    assert (await ok(other.get("/feedback", params={"taskId": secret})))["data"] == []
    assert (await ok(other.get("/sessions")))["data"] == []
    assert (await ok(other.get("/sessions", params={"pinned": "false"})))["data"] == []
    for words in ("mine", "private", "x"):
        assert (await ok(other.get("/search", params={"q": words})))["data"] == []
    assert (await ok(other.get("/session/current")))["sessionId"] is None

    # Task ids are per user: the same id in other's own conversation is other's own task
    # (no 409 that would tell the id exists), and the owner's stays as it was.
    own = (await ok(other.post("/sessions"), 201))["id"]
    same_id = {"taskId": secret, "userMessage": "overwritten", "messageBubbles": ["y"]}
    saved = await ok(other.post(f"/sessions/{own}/chat-tasks", json=same_id))
    assert (saved["sessionId"], saved["userMessage"]) == (own, "overwritten")
    error_of(
        await other.post("/feedback", json={**rating, "sessionId": conversation}), 404, "not_found"
    )
    await ok(other.post("/feedback", json={**rating, "sessionId": own}), 201)
    assert (await ok(other.get("/feedback", params={"taskId": secret})))["data"][0][
        "sessionId"
    ] == own
    assert await snapshot(owner, conversation) == before, "nothing of the owner's changed"


async def test_cookie_users_are_isolated(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    await assert_isolated(alice, bob, {}, {})


async def test_auth_layer_users_are_isolated(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    await assert_isolated(alice, bob, {"X-User": unique("alice")}, {"X-User": unique("bob")})


async def test_one_browser_two_logins_are_isolated(app: Any) -> None:
    """The same cookie jar, another ``request.state.user``: another user."""
    u1, u2 = unique("u1"), unique("u2")
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        conversation = (await ok(client.post("/sessions", headers={"X-User": u1}), 201))["id"]
        response = await client.get(f"/sessions/{conversation}", headers={"X-User": u2})
        error_of(response, 404, "not_found")
        anonymous = await ok(client.get("/sessions"))
        assert anonymous["data"] == [], "the anonymous client is a user of its own"
        mine = await ok(client.get("/sessions", headers={"X-User": u1}))
        assert [c["id"] for c in mine["data"]] == [conversation]


async def test_the_state_user_owns_the_rows(app: Any, service: SessionService) -> None:
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        client.headers["X-User"] = user = unique("user")
        conversation = (await ok(client.post("/sessions"), 201))["id"]
    record = await service.get_session(user, conversation)
    assert record.id == conversation
    assert record.client_id is not None, "the browser's client id is kept beside it"


async def test_a_resolver_that_finds_nobody_gets_401(
    service: SessionService, make_app: MakeApp
) -> None:
    async def nobody(request: Any) -> str | None:
        return request.headers.get("x-api-user")

    app = make_app(service, user_resolver=nobody)
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        for response in (
            await client.get("/sessions"),
            await client.post("/sessions", json={}),
            await client.get("/sessions/x"),
            await client.get("/feedback"),
            await client.put("/session/current", json={"sessionId": "x"}),
        ):
            error_of(response, 401, "unauthorized")
        assert (await ok(client.get("/session/current")))["clientId"]
        api_user = unique("api")
        created = await ok(client.post("/sessions", headers={"X-API-User": api_user}), 201)
        assert (await service.get_session(api_user, created["id"])).id == created["id"]


async def test_an_auth_user_without_an_id_gets_401(alice: httpx.AsyncClient) -> None:
    error_of(await alice.get("/sessions", headers={"X-User": ""}), 401, "unauthorized")


# A client without cookies


async def test_a_token_client_does_the_whole_flow(app: Any) -> None:
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        token = "new"

        async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            nonlocal token
            response = await client.request(
                method, url, headers={"X-Session-Token": token}, **kwargs
            )
            assert "set-cookie" not in response.headers
            token = response.headers.get("x-session-token", token)
            return response

        current = (await call("GET", "/session/current")).json()
        assert token != "new"
        created = (await call("POST", "/sessions", json={"name": "bot"})).json()
        conversation = created["id"]
        assert (await call("GET", "/session/current")).json()["sessionId"] == conversation
        bot_task = unique("bot")
        task = {"taskId": bot_task, "messageBubbles": ["hi"]}
        assert (await call("POST", f"/sessions/{conversation}/chat-tasks", json=task)).is_success
        rating = {"taskId": bot_task, "sessionId": conversation, "feedbackType": "up"}
        assert (await call("POST", "/feedback", json=rating)).status_code == 201
        history = (await call("GET", f"/sessions/{conversation}/chat-tasks")).json()
        assert [t["taskId"] for t in history["data"]] == [bot_task]
        second = (await call("POST", "/sessions", json={"name": "two"})).json()["id"]
        switched = (await call("PUT", "/session/current", json={"sessionId": conversation})).json()
        assert switched["sessionId"] == conversation
        before = token
        extended = await call("POST", "/session/extend")
        assert extended.headers["x-session-token"], "extend re-issues the token"
        assert extended.json()["clientId"] == current["clientId"]
        assert CookieCodec(SECRET).decode(token) is not None
        assert before
        listing = (await call("GET", "/sessions")).json()
        assert {c["id"] for c in listing["data"]} == {conversation, second}
        assert not list(client.cookies.jar), "no cookie was ever set"


# Concurrency


async def test_concurrent_saves_of_one_task_leave_one_row(
    alice: httpx.AsyncClient, service: SessionService
) -> None:
    conversation = (await ok(alice.post("/sessions"), 201))["id"]
    user = (await ok(alice.get("/session/current")))["clientId"]
    statuses: list[int] = []
    same = unique("same")

    async def save(i: int) -> None:
        body = {"taskId": same, "userMessage": f"m{i}", "messageBubbles": [i]}
        response = await alice.post(f"/sessions/{conversation}/chat-tasks", json=body)
        statuses.append(response.status_code)

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(save, i)
    assert statuses == [200] * 20
    page = await service.list_tasks(user, conversation)
    assert [task.id for task in page.items] == [same]
    (row,) = page.items
    assert row.message_bubbles == [int(row.user_message[1:])], "one whole write won"


# Search


def found(page: Any) -> list[tuple[str, str | None]]:
    """A page of search results as (conversation, task) pairs, in order."""
    return [(result["sessionId"], result["taskId"]) for result in page["data"]]


def marked(result: dict[str, Any]) -> list[str]:
    """The words a result's snippet marks as matched."""
    return [part["text"] for part in result["snippet"] if part["match"]]


async def save(client: httpx.AsyncClient, conversation: str, message: str, *bubbles: Any) -> str:
    """Save a chat task with ``message`` and ``bubbles`` in ``conversation``; its id."""
    task = {"taskId": unique("t"), "userMessage": message, "messageBubbles": list(bubbles)}
    return str((await ok(client.post(f"/sessions/{conversation}/chat-tasks", json=task)))["taskId"])


async def test_search_finds_messages_bubbles_and_names(alice: httpx.AsyncClient) -> None:
    trip = (await ok(alice.post("/sessions", json={"name": "Trip to Lyon"}), 201))["id"]
    groceries = (await ok(alice.post("/sessions", json={"name": "Groceries"}), 201))["id"]
    asked = await save(alice, trip, "Where to eat in Lyon?", {"type": "text", "text": "A bouchon."})
    bread = await save(alice, groceries, "Buy bread", "and <b>butter</b> from the bouchonnerie")

    page = await ok(alice.get("/search", params={"q": "lyon"}))
    assert found(page) == [(trip, None), (trip, asked)], "the name match first"
    name_match, task_match = page["data"]
    assert set(name_match) == {"sessionId", "sessionName", "taskId", "snippet", "rank", "time"}
    assert name_match["sessionName"] == task_match["sessionName"] == "Trip to Lyon"
    assert name_match["snippet"] == [
        {"text": "Trip to ", "match": False},
        {"text": "Lyon", "match": True},
    ]
    assert (
        "".join(part["text"] for part in task_match["snippet"])
        == "Where to eat in Lyon? A bouchon."
    )
    assert marked(task_match) == ["Lyon"]
    assert isinstance(task_match["rank"], int | float)
    conversation = await ok(alice.get(f"/sessions/{trip}"))
    assert name_match["time"] == conversation["updatedTime"]
    history = await ok(alice.get(f"/sessions/{trip}/chat-tasks"))
    assert task_match["time"] == history["data"][0]["createdTime"]

    # A bubble's text, by the start of a word; the bubble's "type" is not text.
    bouchon = await ok(alice.get("/search", params={"q": "BOUCHON"}))
    assert sorted(found(bouchon)) == sorted([(trip, asked), (groceries, bread)])
    assert sorted(w for r in bouchon["data"] for w in marked(r)) == ["bouchon", "bouchonnerie"]
    butter = await ok(alice.get("/search", params={"q": "butter"}))
    assert found(butter) == [(groceries, bread)]
    assert "<b>" in "".join(p["text"] for p in butter["data"][0]["snippet"]), "text, as it is"
    assert (await ok(alice.get("/search", params={"q": "text"})))["data"] == []
    # Every word is required; quotes, operators and SQL are text.
    assert found(await ok(alice.get("/search", params={"q": "lyon eat"}))) == [(trip, asked)]
    assert (await ok(alice.get("/search", params={"q": "lyon bread"})))["data"] == []
    for hostile in ('"lyon" OR 1=1; --', "lyon*", "-lyon", "lyon' AND '1'='1", "lyon)"):
        page = await ok(alice.get("/search", params={"q": hostile}))
        assert set(found(page)) <= {(trip, None), (trip, asked)}, hostile
    assert (await ok(alice.get("/search", params={"q": "リヨン"})))["data"] == []


async def test_search_pages_have_no_repeats(alice: httpx.AsyncClient) -> None:
    conversation = (await ok(alice.post("/sessions", json={"name": "alpha notes"}), 201))["id"]
    tasks = [
        await save(alice, conversation, f"alpha number {i}", "alpha " * (i % 3)) for i in range(7)
    ]
    whole = await ok(alice.get("/search", params={"q": "alpha", "limit": "100"}))
    assert whole["meta"]["nextCursor"] is None
    assert found(whole)[0] == (conversation, None)
    assert sorted(task for _, task in found(whole)[1:]) == sorted(tasks)
    ranks = [result["rank"] for result in whole["data"][1:]]
    assert ranks == sorted(ranks, reverse=True), "more repeats first"
    paged: list[tuple[str, str | None]] = []
    cursor: str | None = None
    while True:
        params = {"q": "alpha", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await ok(alice.get("/search", params=params))
        assert len(page["data"]) <= 3
        paged += found(page)
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert paged == found(whole), "the same results, in the same order, none twice"


async def test_search_is_of_your_own_rows_only(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    text = f"zanzibar {unique('w')}"
    mine = (await ok(alice.post("/sessions", json={"name": text}), 201))["id"]
    theirs = (await ok(bob.post("/sessions", json={"name": text}), 201))["id"]
    await save(alice, mine, text, text)
    await save(bob, theirs, text, text)
    for client, own in ((alice, mine), (bob, theirs)):
        page = await ok(client.get("/search", params={"q": "zanzibar"}))
        assert len(page["data"]) == 2
        assert {result["sessionId"] for result in page["data"]} == {own}


async def test_search_refuses_bad_input_naming_the_field(alice: httpx.AsyncClient) -> None:
    cases = [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": '!?*"-'}, "q"),
        ({"q": "_"}, "q"),
        ({"q": "a\u0000b"}, "q"),
        ({"q": "x" * 257}, "q"),
        ({"q": "ok", "limit": "0"}, "limit"),
        ({"q": "ok", "limit": "101"}, "limit"),
        ({"q": "ok", "cursor": "not-a-cursor"}, "cursor"),
        ({"q": "ok", "cursor": encode_cursor((1, "a"))}, "cursor"),  # a list's, not a search's
    ]
    for params, field in cases:
        error_of(await alice.get("/search", params=params), 422, "invalid_input", field)
    assert (await ok(alice.get("/search", params={"q": "x" * 256})))["data"] == []
    unknown = await ok(alice.get("/search", params={"q": "ok", "other": "1"}))
    assert unknown["data"] == [], "unknown query parameters are ignored, as on every route"


# Pins


async def test_pin_unpin_and_list_by_pin(alice: httpx.AsyncClient) -> None:
    def listed(page: Any) -> list[str]:
        return [item["id"] for item in page["data"]]

    ids = [(await ok(alice.post("/sessions", json={"name": f"c{i}"}), 201))["id"] for i in range(3)]
    order = listed(await ok(alice.get("/sessions")))  # newest first (ids break ties)
    before = await ok(alice.get(f"/sessions/{ids[0]}"))
    pinned = await ok(alice.patch(f"/sessions/{ids[0]}", json={"pinned": True}))
    assert pinned["pinned"] is True
    assert pinned["name"] == "c0", "the name stays"
    assert pinned["updatedTime"] == before["updatedTime"], "pinning is not an update"
    assert (await ok(alice.get(f"/sessions/{ids[0]}")))["pinned"] is True

    unpinned = [item for item in order if item != ids[0]]
    assert listed(await ok(alice.get("/sessions", params={"pinned": "true"}))) == [ids[0]]
    assert listed(await ok(alice.get("/sessions", params={"pinned": "false"}))) == unpinned
    everything = await ok(alice.get("/sessions"))
    assert listed(everything) == order, "unfiltered: the usual order"
    assert [item["pinned"] for item in everything["data"]] == [i == ids[0] for i in order]
    # Paged through the filter: a cursor of the filtered list goes on in it.
    first = await ok(alice.get("/sessions", params={"pinned": "false", "limit": "1"}))
    params = {"pinned": "false", "cursor": first["meta"]["nextCursor"]}
    assert listed(first) + listed(await ok(alice.get("/sessions", params=params))) == unpinned

    # Name and pin in one body: both applied.
    both = await ok(alice.patch(f"/sessions/{ids[1]}", json={"name": "renamed", "pinned": True}))
    assert (both["name"], both["pinned"]) == ("renamed", True)
    both = await ok(alice.patch(f"/sessions/{ids[0]}", json={"name": None, "pinned": False}))
    assert (both["name"], both["pinned"]) == (None, False)
    assert listed(await ok(alice.get("/sessions", params={"pinned": "true"}))) == [ids[1]]
    renamed = await ok(alice.patch(f"/sessions/{ids[1]}", json={"name": "again"}))
    assert renamed["pinned"] is True, "a rename keeps the pin"


async def test_pin_refuses_bad_input_naming_the_field(alice: httpx.AsyncClient) -> None:
    conversation = (await ok(alice.post("/sessions", json={"name": "keep"}), 201))["id"]
    base = f"/sessions/{conversation}"
    for body, field in [
        ({"pinned": "true"}, "pinned"),
        ({"pinned": 1}, "pinned"),
        ({"pinned": None}, "pinned"),
        ({"name": "new", "pinned": "yes"}, "pinned"),
        ({"name": 5, "pinned": True}, "name"),
        ({"name": "n" * 256, "pinned": True}, "name"),
        ({}, "name"),
        ({"pined": True}, "pined"),
    ]:
        error_of(await alice.patch(base, json=body), 422, "invalid_input", field)
    for value in ("yes", "1", "", "TRUE", "true "):
        response = await alice.get("/sessions", params={"pinned": value})
        error_of(response, 422, "invalid_input", "pinned")
    after = await ok(alice.get(base))
    assert (after["name"], after["pinned"]) == ("keep", False), "nothing was written"


# Errors


async def test_bad_input_names_the_field(alice: httpx.AsyncClient) -> None:
    conversation = (await ok(alice.post("/sessions"), 201))["id"]
    tasks = f"/sessions/{conversation}/chat-tasks"
    cases: list[tuple[httpx.Response, int, str, str | None]] = [
        (await alice.post("/sessions", json={"name": "x" * 256}), 422, "invalid_input", "name"),
        (await alice.post("/sessions", json={"name": 5}), 422, "invalid_input", "name"),
        (await alice.post("/sessions", json={"agentId": ["a"]}), 422, "invalid_input", "agentId"),
        (await alice.post("/sessions", json={"nmae": "typo"}), 422, "invalid_input", "nmae"),
        (await alice.post("/sessions", json=[1]), 400, "invalid_json", "body"),
        (
            await alice.post(
                "/sessions", content=b"{", headers={"content-type": "application/json"}
            ),
            400,
            "invalid_json",
            "body",
        ),
        (
            await alice.post("/sessions", content=b"{}", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
            "body",
        ),
        (await alice.patch(f"/sessions/{conversation}", json={}), 422, "invalid_input", "name"),
        (
            await alice.patch(f"/sessions/{conversation}", json={"name": "n" * 256}),
            422,
            "invalid_input",
            "name",
        ),
        (await alice.post(tasks, json={"messageBubbles": []}), 422, "invalid_input", "taskId"),
        (await alice.post(tasks, json={"taskId": "t"}), 422, "invalid_input", "messageBubbles"),
        (
            await alice.post(tasks, json={"taskId": "t", "messageBubbles": "[]"}),
            422,
            "invalid_input",
            "messageBubbles",
        ),
        (
            await alice.post(tasks, json={"taskId": "t", "messageBubbles": [], "taskMetadata": 3}),
            422,
            "invalid_input",
            "taskMetadata",
        ),
        (
            await alice.post(tasks, json={"taskId": 7, "messageBubbles": []}),
            422,
            "invalid_input",
            "taskId",
        ),
        (
            await alice.post(tasks, json={"taskId": "t" * 256, "messageBubbles": []}),
            422,
            "invalid_input",
            "taskId",
        ),
        (
            await alice.post(
                tasks, json={"taskId": "t", "messageBubbles": [], "userMessage": "\u0000"}
            ),
            422,
            "invalid_input",
            "userMessage",
        ),
        (
            await alice.post(
                "/feedback",
                json={"taskId": "t", "sessionId": conversation, "feedbackType": "meh"},
            ),
            422,
            "invalid_input",
            "feedbackType",
        ),
        (
            await alice.post(
                "/feedback",
                json={
                    "taskId": "t",
                    "sessionId": conversation,
                    "feedbackType": "up",
                    "feedbackText": 1,
                },
            ),
            422,
            "invalid_input",
            "feedbackText",
        ),
        (await alice.post("/feedback", json={}), 422, "invalid_input", "taskId"),
        (await alice.get(f"/sessions/{'s' * 256}"), 422, "invalid_input", "sessionId"),
    ]
    for response, status, code, field in cases:
        error_of(response, status, code, field)
    page = await ok(alice.get("/sessions"))
    assert [c["id"] for c in page["data"]] == [conversation], "no bad request wrote anything"
    assert (await ok(alice.get(tasks)))["data"] == []


async def test_bodies_over_the_limit_are_refused_unread(
    service: SessionService, make_app: MakeApp
) -> None:
    app = make_app(service, max_body_size=1000)
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"name": "'
        for _ in range(1000):
            sent += 1
            yield b"x" * 100
        yield b'"}'

    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        declared = await client.post("/sessions", json={"name": "x" * 2000})
        error_of(declared, 413, "body_too_large", "body")
        streamed = await client.post(
            "/sessions", content=stream(), headers={"content-type": "application/json"}
        )
        error_of(streamed, 413, "body_too_large", "body")
        assert sent < 100, "the body was not read whole"
        assert (await ok(client.post("/sessions", json={"name": "fits"}), 201))["name"] == "fits"


async def test_a_database_outage_is_503_with_retry_after(make_app: MakeApp, tmp_path: Path) -> None:
    async with behind_proxy("postgresql", tmp_path) as (proxy, service):
        app = make_app(service)
        async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
            assert (await client.get("/sessions")).status_code == 200
            await proxy.stop()
            response = await client.get("/sessions")
            error_of(response, 503, "store_unavailable")
            assert int(response.headers["retry-after"]) > 0
            await proxy.start()
            assert (await client.get("/sessions")).status_code == 200, "and it recovers"


# Round trips


async def test_routes_cost_one_statement_each(fresh_url: str) -> None:
    """A read is one query, a write one statement; saving a task also marks it viewed,
    atomically: one statement on PostgreSQL, one request holding the transaction on
    MySQL, one transaction (BEGIN, UPDATE, INSERT, COMMIT) on SQLite."""
    async with sql_service(fresh_url) as service:
        app = fastapi_app(service)
        async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
            conversation = (await ok(client.post("/sessions"), 201))["id"]
            task = {"taskId": "t", "messageBubbles": []}
            await ok(client.post(f"/sessions/{conversation}/chat-tasks", json=task))
            rating = {"taskId": "t", "sessionId": conversation, "feedbackType": "up"}
            update_then_read = 2 if "mysql" in fresh_url else 1  # MySQL: no UPDATE RETURNING
            calls = [
                (client.get("/session/current"), 0),
                (client.post("/session/extend"), 0),
                (client.get("/sessions"), 1),
                (client.post("/sessions", json={"name": "n"}), 1),
                (client.get(f"/sessions/{conversation}"), 1),
                (client.patch(f"/sessions/{conversation}", json={"name": "m"}), update_then_read),
                (
                    client.patch(f"/sessions/{conversation}", json={"pinned": True}),
                    update_then_read,
                ),
                (  # a rename and a pin: one write
                    client.patch(f"/sessions/{conversation}", json={"name": "p", "pinned": False}),
                    update_then_read,
                ),
                (client.get("/sessions", params={"pinned": "true"}), 1),
                (client.get("/search", params={"q": "m"}), 1),
                (client.get(f"/sessions/{conversation}/chat-tasks"), 1),
                (
                    client.post(f"/sessions/{conversation}/chat-tasks", json=task),
                    4 if "sqlite" in fresh_url else 1,
                ),
                (client.post("/feedback", json=rating), 1),
                (client.get("/feedback"), 1),
                (client.put("/session/current", json={"sessionId": conversation}), 1),
                (client.get("/sessions", params={"limit": "0"}), 0),
                (client.delete(f"/sessions/{conversation}"), 1),
            ]
            for call, expected in calls:
                with statements(service) as seen:
                    response = await call
                assert response.status_code < 500
                assert len(seen) == expected, (response.request.url, seen)


async def test_include_router_dependencies_still_guard_the_routes(service: SessionService) -> None:
    """An auth dependency given to ``include_router`` runs, and may set the user."""

    async def auth(request: Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            raise HTTPException(status_code=401, detail="no key")
        request.state.user = {"id": f"key-{key}"}

    app = FastAPI()
    app.include_router(sessions_router(), prefix=PREFIX, dependencies=[Depends(auth)])
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        refused = await client.post("/sessions", json={"name": "x"})
        assert refused.status_code == 401
        assert refused.json() == {"detail": "no key"}
        key = unique("k")
        created = await ok(client.post("/sessions", headers={"X-API-Key": key}), 201)
    assert (await service.get_session(f"key-{key}", created["id"])).id == created["id"]
    assert (await service.list_sessions(created["id"])).items == []


async def test_without_fastapi_it_is_a_starlette_router(
    service: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what `import fastapi` sees uninstalled
    router = sessions_router()
    assert type(router) is Router
    app = Starlette(routes=[Mount(PREFIX, app=router)])
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    async with client_for(app, base_url=f"http://testserver{PREFIX}") as client:
        created = await ok(client.post("/sessions", json={"name": "plain"}), 201)
        assert (await ok(client.get("/session/current")))["sessionId"] == created["id"]
        error_of(await client.get("/sessions/missing"), 404, "not_found")
