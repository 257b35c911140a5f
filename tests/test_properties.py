"""Hostile input on every route of ``sessions_router()``, on every backend.

* Tampered page cursors (int64 overflow, NUL, lone surrogates, floats, wrong shapes,
  bad base64, ...) on the three list routes and on search: each is a 422
  ``invalid_input`` naming ``cursor``, on every backend, in FastAPI and in Starlette.
* Properties (Hypothesis): any string sent as a cursor is a valid cursor (200) or that
  422; and any request to any route of ``OPERATIONS`` (arbitrary query values, path
  ids, JSON and non-JSON bodies, content types, with and without a user) is never a
  5xx, every 4xx is ``{"error": {"code", "message", "field"?}}``, and a 4xx leaves
  every stored row exactly as it was.

Memory and SQLite run ``LOCAL`` (more examples), PostgreSQL, MariaDB, Redis and DynamoDB ``SERVER``
(fewer). Under ``CI`` Hypothesis loads its "ci" profile (derandomized, no example
database); locally failing examples are kept in ``.hypothesis/`` (git-ignored).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote_from_bytes

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount

from agentsession import SessionMiddleware, SessionService, sessions_router
from agentsession.common import MAX_PAGE_SIZE
from agentsession.errors import IdConflict, SessionNotFound
from agentsession.openapi import OPERATIONS
from agentsession.service import encode_cursor
from agentsession.stores.base import Page
from agentsession.stores.memory import MemoryStore
from agentsession.stores.redis import RedisStore
from agentsession.stores.sql.schema import chat_tasks, feedback, sessions
from tests.apps import SECRET, client_for
from tests.databases import (
    dynamodb_dump,
    dynamodb_items,
    dynamodb_service,
    dynamodb_table,
    fresh_database,
    redis_namespace,
    redis_service,
    sql_service,
    store_of,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")

PREFIX = "/api/v1"
#: The users requests are sent as (``X-API-User``); None sends no user (401).
OWNER, OTHER = "owner", "other"
#: Conversations (id: user) that exist before every example, so that requests can name
#: them: two of the owner's (a task id moving between them is a conflict), one of the
#: other user's. The first holds the task ``SEEDED_TASK`` and the owner's feedback on it.
SEEDED_SESSION, SECOND_SESSION, OTHERS_SESSION = "seeded", "second", "others"
SEEDED = {SEEDED_SESSION: OWNER, SECOND_SESSION: OWNER, OTHERS_SESSION: OTHER}
SEEDED_TASK = "seeded-task"
#: Conversations expire after a day: every write also sets or slides ``expires_at``.
TTL = 86_400
#: The plain Starlette app refuses bodies over this many bytes (FastAPI: the 1 MiB default).
SMALL_BODY_LIMIT = 4096

#: Multiplies every example count below, for a longer hunt than the default run
#: (this file takes ~25 s on a busy 2-CPU machine with the default counts): e.g. ``10``.
SCALE = float(os.environ.get("AGENTSESSION_TEST_EXAMPLES_SCALE") or 1)


def profile(examples: int) -> settings:
    """Hypothesis settings for ``examples`` examples (times ``SCALE``), without deadline.

    The fixtures (service, database, clients) last a whole test, not one example:
    every example seeds and snapshots what it needs itself.
    """
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


#: In-process backends (memory, SQLite) and database servers, where each example costs
#: several round trips: any request, then any cursor.
LOCAL, SERVER = profile(600), profile(200)
LOCAL_CURSORS, SERVER_CURSORS = profile(300), profile(100)


# The apps: FastAPI and plain Starlette over one service, users from X-API-User


def api_user(request: HTTPConnection) -> str | None:
    """The user resolver: ``X-API-User`` (no header: nobody, 401)."""
    return request.headers.get("x-api-user")


def fastapi_app(service: SessionService) -> FastAPI:
    app = FastAPI()
    app.include_router(sessions_router(user_resolver=api_user), prefix=PREFIX)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


def starlette_app(service: SessionService) -> Starlette:
    router = sessions_router(user_resolver=api_user, max_body_size=SMALL_BODY_LIMIT)
    app = Starlette(routes=[Mount(PREFIX, app=router)])
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


async def every_page(fetch: Callable[..., Awaitable[Page[Any]]]) -> list[Any]:
    """Every item of a listing, page after page (``fetch(cursor=...)``)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor=cursor)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


@dataclass
class Api:
    """A started service on a database of its own, and a client for each app."""

    backend: str
    service: SessionService
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def seed(self) -> None:
        """(Re)create the seeded conversations (with task and feedback) that are gone."""
        service = self.service
        for session_id, user in SEEDED.items():
            try:
                await service.get_session(user, session_id)
                continue
            except SessionNotFound:
                pass
            await service.create_session(user, session_id=session_id, name="seeded")
            if session_id != SEEDED_SESSION:
                continue
            try:  # an example may have put the task id in the owner's other conversation
                await service.save_task(user, session_id, SEEDED_TASK, message_bubbles=["hi"])
                await service.add_feedback(user, session_id, SEEDED_TASK, "up")
            except (IdConflict, SessionNotFound):
                pass

    async def snapshot(self) -> object:
        """Every stored conversation, chat task and feedback row, comparable with ==."""
        if self.backend == "memory":
            return await self._listed()
        if self.backend == "dynamodb":
            dump = await dynamodb_dump(self.service)
            assert dump["problems"] == []
            return await dynamodb_items(self.service)
        if self.backend == "redis":
            store = self.service.store
            assert isinstance(store, RedisStore)
            dump = await store._dump()
            assert dump["problems"] == []
            return dump
        engine = store_of(self.service).engine
        async with engine.connect() as connection:
            return [
                (await connection.execute(select(table).order_by(table.c.id))).all()
                for table in (sessions, chat_tasks, feedback)
            ]

    async def _listed(self) -> object:
        """The memory store's rows, through the service's own list calls."""
        service = self.service
        rows: dict[str, object] = {}
        for user in (OWNER, OTHER):
            conversations = await every_page(
                partial(service.list_sessions, user, limit=MAX_PAGE_SIZE)
            )
            tasks = {
                conversation.id: await every_page(
                    partial(service.list_tasks, user, conversation.id, limit=MAX_PAGE_SIZE)
                )
                for conversation in conversations
            }
            ratings = await every_page(partial(service.list_feedback, user, limit=MAX_PAGE_SIZE))
            rows[user] = ({c.id: c for c in conversations}, tasks, ratings)
        return rows


@pytest.fixture
async def api(backend: str, tmp_path: Path) -> AsyncIterator[Api]:
    """Both apps on a fresh store of ``backend`` (SQL: a new database), seeded."""
    async with AsyncExitStack() as stack:
        if backend == "memory":
            service = SessionService(MemoryStore(), ttl=TTL)
        elif backend == "redis":
            url, prefix = await stack.enter_async_context(redis_namespace())
            service = redis_service(url, prefix, ttl=TTL)
        elif backend == "dynamodb":
            table = await stack.enter_async_context(dynamodb_table())
            service = dynamodb_service(*table, ttl=TTL)
        else:
            url = await stack.enter_async_context(fresh_database(backend, tmp_path))
            service = sql_service(url, ttl=TTL)
        await stack.enter_async_context(service)
        api = Api(backend, service)
        for name, make in (("fastapi", fastapi_app), ("starlette", starlette_app)):
            client = client_for(make(service), base_url=f"http://testserver{PREFIX}")
            api.clients[name] = await stack.enter_async_context(client)
        await api.seed()
        yield api


def assert_error(response: httpx.Response) -> dict[str, str]:
    """The ``error`` object of a 4xx, checked for the API's one error shape."""
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert isinstance(body, dict), body
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"code", "message"} <= set(error) <= {"code", "message", "field"}, body
    assert all(isinstance(value, str) for value in error.values()), body
    # The field may be "": an unknown body key that is the empty string is named as it is.
    assert error["code"], body
    assert error["message"], body
    return error


# Tampered cursors: the hardening issue's cases and their neighbours


def forged(payload: bytes, *, padded: bool = False) -> str:
    """A cursor around ``payload``, made the way ``encode_cursor`` makes real ones."""
    text = base64.urlsafe_b64encode(payload).decode("ascii")
    return text if padded else text.rstrip("=")


def cursor_of(value: object, *, padded: bool = False) -> str:
    """A cursor holding any JSON value (non-ASCII as ``\\u`` escapes, as json.dumps does)."""
    return forged(json.dumps(value, separators=(",", ":")).encode(), padded=padded)


TAMPERED = {
    "int64 overflow": cursor_of([10**30, "a"]),
    "2**63": cursor_of([2**63, "a"]),
    "below int64": cursor_of([-(2**63) - 1, "a"]),
    "NUL in the id": cursor_of([1, "a\u0000"]),
    "lone surrogate": cursor_of([1, "\ud800"]),
    "float time": cursor_of([1.5, "a"]),
    "-1e400": forged(b'[-1e400,"a"]'),
    "NaN": forged(b'[NaN,"a"]'),
    "boolean time": cursor_of([True, "a"]),
    "null time": cursor_of([None, "a"]),
    "id not a string": cursor_of([1, 2]),
    "object": cursor_of({"a": 1}),
    "two-key object": cursor_of({"a": 1, "b": 2}),
    "two-letter string": cursor_of("ab"),
    "one item": cursor_of([1]),
    "three items": cursor_of([1, "a", 2]),
    "empty id": cursor_of([1, ""]),
    "300-character id": cursor_of([1, "i" * 300]),
    "not JSON": forged(b"[1,'a']"),
    "not UTF-8": forged(b'[1,"\xff"]'),
    "invalid base64 (one character)": "a",
    "invalid base64 (symbols)": "!!!!",
    "invalid base64 (padding only)": "====",
    "non-ASCII text": "Wzx€",
    "a lone surrogate, percent-encoded": "\udcff",
    "padded, tampered": cursor_of([10**30, "a"], padded=True),
    "nested past the recursion limit": forged(b"[" * 3000),
    "over-long": "A" * 5000,
}

#: The three list routes (the chat tasks of the seeded conversation).
LIST_ROUTES = ("/sessions", f"/sessions/{SEEDED_SESSION}/chat-tasks", "/feedback")
#: Search, for a word of the seeded conversations' names (its cursors are of their own).
SEARCH_ROUTE = "/search?q=seeded"
#: Search cursors hold ``[group, rank, time, id]``: these are wrong in one way each.
SEARCH_TAMPERED = {
    "group 2": cursor_of([2, 1.0, 1, "a"]),
    "group -1": cursor_of([-1, 1.0, 1, "a"]),
    "boolean group": cursor_of([True, 1.0, 1, "a"]),
    "float group": cursor_of([1.0, 1.0, 1, "a"]),
    "NaN rank": forged(b'[1,NaN,1,"a"]'),
    "infinite rank": forged(b'[1,1e400,1,"a"]'),
    "-Infinity rank": forged(b'[1,-Infinity,1,"a"]'),
    "integer rank past float": forged(b"[1," + b"9" * 400 + b',1,"a"]'),
    "string rank": cursor_of([1, "1", 1, "a"]),
    "null rank": cursor_of([1, None, 1, "a"]),
    "int64 overflow": cursor_of([1, 1.0, 2**63, "a"]),
    "float time": cursor_of([1, 1.0, 1.5, "a"]),
    "empty id": cursor_of([1, 1.0, 1, ""]),
    "300-character id": cursor_of([1, 1.0, 1, "i" * 300]),
    "NUL in the id": cursor_of([1, 1.0, 1, "a\u0000"]),
    "lone surrogate": cursor_of([1, 1.0, 1, "\ud800"]),
    "five items": cursor_of([1, 1.0, 1, "a", 1]),
    "a list's cursor": encode_cursor((1, "a")),
}
#: The widest keys a search cursor may hold: each is a page (maybe empty).
SEARCH_EDGES = [
    [0, 0.0, 2**63 - 1, "a"],
    [1, 1.7976931348623157e308, -(2**63), "\U0010ffff" * 255],
    [1, -1.7976931348623157e308, 0, "\u00e9 \t"],
    [0, 5e-324, 1, "z"],
    [1, 7, 1, "seeded"],
]


async def get_with_cursor(client: httpx.AsyncClient, route: str, cursor: str) -> httpx.Response:
    """GET ``route`` with ``cursor=...``; the cursor goes out as percent-encoded UTF-8.

    Lone surrogates (which no URL can carry) are sent as the UTF-8 of the surrogate
    code point, the bytes a careless client would produce.
    """
    separator = "&" if "?" in route else "?"
    url = f"{route}{separator}cursor={percent(utf8(cursor))}"
    return await client.get(url, headers={"X-API-User": OWNER})


def percent(raw: bytes) -> str:
    """Every byte percent-encoded (``.`` and ``..`` stay path segments of their own)."""
    return "".join(f"%{byte:02X}" for byte in raw)


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", "postgresql", "mysql", "redis", "dynamodb"]
)
async def test_tampered_cursors_are_422_naming_cursor(api: Api) -> None:
    before = await api.snapshot()
    for app, client in api.clients.items():
        for route, tampered in (
            *((route, TAMPERED) for route in LIST_ROUTES),
            (SEARCH_ROUTE, {**TAMPERED, **SEARCH_TAMPERED}),
        ):
            for name, cursor in tampered.items():
                response = await get_with_cursor(client, route, cursor)
                assert response.status_code == 422, (app, route, name, response.text)
                error = assert_error(response)
                assert (error["code"], error.get("field")) == ("invalid_input", "cursor"), name
    assert await api.snapshot() == before


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", "postgresql", "mysql", "redis", "dynamodb"]
)
async def test_search_cursors_at_the_edges_of_the_range_are_valid(api: Api) -> None:
    """Search cursors holding the widest ranks, times and ids are pages; the real
    one of the seeded rows goes on with the next result."""
    for client in api.clients.values():
        for key in SEARCH_EDGES:
            for padded in (False, True):
                cursor = cursor_of(key, padded=padded)
                response = await get_with_cursor(client, SEARCH_ROUTE, cursor)
                assert response.status_code == 200, (key, response.text)
                assert set(response.json()) == {"data", "meta"}
        first = await client.get(SEARCH_ROUTE + "&limit=1", headers={"X-API-User": OWNER})
        assert first.status_code == 200, first.text
        cursor = first.json()["meta"]["nextCursor"]
        assert cursor is not None, "two of the owner's conversations are named seeded"
        rest = await get_with_cursor(client, SEARCH_ROUTE, cursor)
        assert rest.status_code == 200, rest.text
        names = [r["sessionId"] for r in first.json()["data"] + rest.json()["data"]]
        assert sorted(names) == sorted([SEEDED_SESSION, SECOND_SESSION]), "none of OTHER's"


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", "postgresql", "mysql", "redis", "dynamodb"]
)
async def test_cursors_at_the_edges_of_the_range_are_valid(api: Api) -> None:
    """The widest keys a cursor may hold, padded or not, are pages (maybe empty)."""
    keys = [(2**63 - 1, "a"), (-(2**63), "z"), (0, "\U0010ffff" * 255), (1, "\u00e9 \t")]
    cursors = [encode_cursor(key) for key in keys]
    cursors += [cursor_of(list(key), padded=True) for key in keys]
    for client in api.clients.values():
        for route in LIST_ROUTES:
            for cursor in cursors:
                response = await get_with_cursor(client, route, cursor)
                assert response.status_code == 200, (route, cursor, response.text)
                assert set(response.json()) == {"data", "meta"}


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", "postgresql", "mysql", "redis", "dynamodb"]
)
async def test_pages_past_ids_that_make_long_cursors(api: Api) -> None:
    """A task id of 255 characters that JSON escapes (each up to 12 bytes) is a page
    boundary like any other: the cursor made for it is taken back."""
    task_ids = ["\u4e2d" * 255, '"' * 255, "\U0001f600" * 255, "\x01" * 255]
    client = api.clients["fastapi"]
    user = {"X-API-User": OWNER}
    for task_id in task_ids:
        task = {"taskId": task_id, "messageBubbles": []}
        saved = await client.post(f"/sessions/{SEEDED_SESSION}/chat-tasks", json=task, headers=user)
        assert saved.status_code == 200, saved.text
        rating = {"taskId": task_id, "sessionId": SEEDED_SESSION, "feedbackType": "up"}
        rated = await client.post("/feedback", json=rating, headers=user)
        assert rated.status_code == 201, rated.text
    for route, key in (LIST_ROUTES[1], "taskId"), (LIST_ROUTES[2], "taskId"):
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
            page = await client.get(route, params=params, headers=user)
            assert page.status_code == 200, page.text
            seen += [item[key] for item in page.json()["data"]]
            cursor = page.json()["meta"]["nextCursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted([SEEDED_TASK, *task_ids]), route


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_numbers_longer_than_int_takes_are_4xx(api: Api) -> None:
    """``int()`` refuses more than 4300 digits: a limit or Content-Length that long."""
    digits = "9" * 5000
    user = {"X-API-User": OWNER}
    before = await api.snapshot()
    for client in api.clients.values():
        response = await client.get("/sessions", params={"limit": digits}, headers=user)
        assert response.status_code == 422, response.text
        assert assert_error(response).get("field") == "limit"
        response = await client.post(
            "/sessions",
            content=b"{}",
            headers={**user, "content-type": "application/json", "content-length": digits},
        )
        assert response.status_code == 413, response.text
        assert (assert_error(response)["code"], response.json()["error"]["field"]) == (
            "body_too_large",
            "body",
        )
    assert await api.snapshot() == before
    page = await api.clients["fastapi"].get(
        "/sessions", params={"limit": "0" * 5000 + "1"}, headers=user
    )
    assert page.status_code == 200, page.text
    assert len(page.json()["data"]) == 1, "leading zeros are still the number"


# Strategies: anything a client can send


#: Any code point, surrogates and NUL included.
anything = st.characters()
texts = st.text(anything, max_size=40)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates as the (invalid) bytes of their code points."""
    return text.encode("utf-8", "surrogatepass")


huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30]),
)
numbers = st.one_of(huge_ints, st.floats()).map(str)
#: Up to just past the 4300 digits ``int()`` takes (URLs stay under httpx's 64 KiB).
long_digits = st.integers(1, 4400).map(lambda n: "9" * n)
long_texts = st.integers(200, 400).map(lambda n: "x" * n)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    huge_ints,
    st.floats(),
    texts,
    st.sampled_from([*SEEDED, SEEDED_TASK, OWNER, "up", "down", ""]),
    long_texts,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(anything, max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def cursor_text() -> st.SearchStrategy[str]:
    """Cursors: real ones, tampered ones, and any text at all (of lists and of search)."""
    return st.one_of(
        st.sampled_from(list(TAMPERED.values())),
        st.sampled_from(list(SEARCH_TAMPERED.values())),
        st.tuples(st.integers(-1, 2), st.floats() | huge_ints, huge_ints, texts).map(
            lambda key: cursor_of(list(key))
        ),
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(st.characters(codec="utf-8"))).map(
            lambda key: encode_cursor(key)
        ),
        st.tuples(huge_ints, texts).map(lambda key: cursor_of(list(key))),
        st.tuples(json_values, st.booleans()).map(lambda v: cursor_of(v[0], padded=v[1])),
        st.binary(max_size=64).map(forged),
        texts,
        st.text(
            st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
        ),
    )


timezones = st.sampled_from(
    [None, dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(-dt.timedelta(hours=23))]
)
instants = st.one_of(
    st.datetimes(timezones=timezones).map(dt.datetime.isoformat),
    st.dates().map(dt.date.isoformat),
    st.integers(0, 10**16).map(str),
)

#: Values for every query parameter the routes read (and others), as raw bytes.
query_values: st.SearchStrategy[bytes] = st.one_of(
    texts.map(utf8),
    st.binary(max_size=40),
    numbers.map(str.encode),
    long_digits.map(str.encode),
    st.integers(-3, 105).map(lambda n: str(n).encode()),
    instants.map(str.encode),
    cursor_text().map(utf8),
    st.sampled_from([*SEEDED, SEEDED_TASK, "up", "down", "UP", "", " 1", "1 "]).map(str.encode),
    # Search words of the seeded rows, query syntax, and the pin filter's values.
    st.sampled_from(["hi", "seed", "seeded hi", '"hi" OR 1=1', "h*", "true", "false"]).map(
        str.encode
    ),
    long_texts.map(str.encode),
)
QUERY_NAMES = (
    "limit",
    "cursor",
    "since",
    "until",
    "feedbackType",
    "sessionId",
    "taskId",
    "q",
    "pinned",
)
query_names = st.one_of(st.sampled_from(QUERY_NAMES), st.text(anything, max_size=8))

#: Session ids in paths: never empty, never a "/" (that would be another route).
path_ids: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from(["missing", ".", "..", "%", "%00", "s" * 256]).map(str.encode),
    st.text(st.characters(exclude_characters="/"), min_size=1, max_size=40).map(utf8),
    st.binary(min_size=1, max_size=40).filter(lambda raw: b"/" not in raw),
    st.integers(250, 300).map(lambda n: b"s" * n),
)

FIELDS = (
    "name",
    "agentId",
    "taskId",
    "userMessage",
    "messageBubbles",
    "taskMetadata",
    "sessionId",
    "feedbackType",
    "feedbackText",
    "pinned",
)
#: Ids in bodies: mostly usable ones (the seeded rows, any valid text), then anything.
valid_texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
valid_json = st.recursive(
    st.one_of(st.none(), st.booleans(), huge_ints, st.floats(allow_nan=False, allow_infinity=False))
    | valid_texts,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(valid_texts, children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(usual: st.SearchStrategy[T], rarely: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``usual`` three times in four, else ``rarely``: valid values, now and then not."""
    return st.sampled_from([usual, usual, usual, rarely]).flatmap(lambda chosen: chosen)


ids = mostly(
    st.one_of(
        st.sampled_from([*SEEDED, SEEDED_TASK, "t", "\u00e9t\u00e9 \U0001f600", " "]),
        valid_texts.filter(bool),
        st.text(
            st.characters(codec="utf-8", exclude_characters="\x00"), min_size=255, max_size=255
        ),
    ),
    st.one_of(st.text(anything, min_size=1, max_size=20), json_leaves, st.just("t" * 256)),
)
optional_texts = mostly(st.none() | valid_texts, st.text(anything, max_size=20) | json_leaves)
bubbles = mostly(st.lists(valid_json, max_size=4), json_values)
metadata = mostly(st.none() | st.dictionaries(valid_texts, valid_json, max_size=3), json_values)
ratings = mostly(st.sampled_from(["up", "down"]), json_leaves)

#: Bodies each route takes, more or less: these reach the store and write rows.
PLAUSIBLE: dict[tuple[str, str], st.SearchStrategy[dict[str, Any]]] = {
    ("/sessions", "POST"): st.fixed_dictionaries(
        {}, optional={"name": optional_texts, "agentId": optional_texts}
    ),
    ("/sessions/{sessionId}", "PATCH"): st.fixed_dictionaries(
        {}, optional={"name": optional_texts, "pinned": mostly(st.booleans(), json_leaves)}
    ),
    ("/sessions/{sessionId}/chat-tasks", "POST"): st.fixed_dictionaries(
        {"taskId": ids, "messageBubbles": bubbles},
        optional={"userMessage": optional_texts, "taskMetadata": metadata},
    ),
    ("/feedback", "POST"): st.fixed_dictionaries(
        {
            "taskId": st.one_of(st.just(SEEDED_TASK), ids),
            "sessionId": mostly(st.sampled_from(list(SEEDED)), ids),
            "feedbackType": ratings,
        },
        optional={"feedbackText": optional_texts},
    ),
    ("/session/current", "PUT"): st.fixed_dictionaries(
        {"sessionId": mostly(st.sampled_from(list(SEEDED)), st.none() | ids)}
    ),
}
#: Any object: known fields with values of any type, and unknown fields.
any_objects = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(anything, max_size=10)), json_values, max_size=6
)
#: JSON the parser or the checks must refuse, spelled out byte for byte.
CRAFTED = [
    b'{"taskId":"t","messageBubbles":[1e400]}',
    b'{"taskId":"t","messageBubbles":[],"taskMetadata":{"a":-1e400}}',
    b'{"name":1e400}',
    b'{"taskId":"t","messageBubbles":[' + b"9" * 5000 + b"]}",
    b'{"taskId":"t","messageBubbles":["\\u0000"]}',
    b'{"taskId":"t","messageBubbles":[{"\\ud800":1}]}',
    b'{"name":"\\ud800"}',
    b'{"name":"a\\u0000"}',
    b'{"name":"a","name":5}',
    b"\xef\xbb\xbf{}",
    b'{"name":"a"}\x00',
    b'{"name":NaN}',
    b'{"name":Infinity}',
    b" \n\t ",
    b"null",
    '{"name":"x"}'.encode("utf-16"),
    '{"name":"x"}'.encode("utf-32"),
]


def dumped(value: Any, ascii_only: bool) -> bytes:
    return utf8(json.dumps(value, ensure_ascii=ascii_only))


def nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


#: Any body at all (each route also gets plausible ones: ``body_for``).
bodies: st.SearchStrategy[bytes] = st.one_of(
    st.builds(dumped, st.one_of(*PLAUSIBLE.values()), st.booleans()),
    st.builds(dumped, any_objects, st.booleans()),
    st.builds(dumped, json_values, st.booleans()),
    st.sampled_from(CRAFTED),
    st.integers(1, 5000).map(
        lambda depth: b'{"taskId":"deep","messageBubbles":' + nested(depth) + b"}"
    ),
    st.integers(1, 200_000).map(nested),
    st.binary(max_size=64),
    # Around both apps' body limits (huge strings, declared and actual length agree).
    st.sampled_from([SMALL_BODY_LIMIT, 1024 * 1024]).flatmap(
        lambda limit: st.integers(limit - 40, limit + 40).map(
            lambda size: b'{"name":"' + b"n" * max(0, size - 11) + b'"}'
        )
    ),
)
content_types = mostly(
    st.just("application/json"),
    st.sampled_from(
        [
            None,
            "",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/problem+json",
            "application/json;",
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            ";;",
        ]
    ),
)
#: Content-Length headers that lie about the body (sent now and then).
content_lengths = st.one_of(
    st.integers(0, 2 * 1024 * 1024).map(str), long_digits, st.sampled_from(["-1", "", "1e3"])
)


def body_for(route: str, method: str) -> st.SearchStrategy[bytes]:
    """Half the time a body the route takes (or nearly), else any body."""
    plausible = PLAUSIBLE.get((route, method))
    if plausible is None:
        return bodies
    return mostly(st.builds(dumped, plausible, st.booleans()), bodies)


@dataclass(frozen=True)
class Call:
    """One request: to which app, as which user, the URL (percent-encoded), the body."""

    app: str
    user: str | None
    method: str
    route: str
    url: str
    headers: dict[str, str]
    content: bytes | None

    def __repr__(self) -> str:
        content = self.content
        if content is not None and len(content) > 200:
            content = content[:200] + b"...(%d bytes)" % len(content)
        url = self.url if len(self.url) < 400 else f"{self.url[:400]}...({len(self.url)})"
        return (
            f"Call(app={self.app!r}, user={self.user!r}, method={self.method!r}, "
            f"url={url!r}, headers={self.headers!r}, content={content!r})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis shows a falsifying call: this repr, not every field in full."""
        printer.text(repr(self))

    async def send(self, api: Api) -> httpx.Response:
        headers = dict(self.headers)
        if self.user is not None:
            headers["X-API-User"] = self.user
        client = api.clients[self.app]
        return await client.request(self.method, self.url, content=self.content, headers=headers)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """Any request to any route of ``sessions_router()``."""
    app = draw(st.sampled_from(["fastapi", "starlette"]))
    route, method = draw(st.sampled_from(sorted(OPERATIONS)))
    session_ids = path_ids
    if app == "starlette":  # Mount's pattern is ".*": a newline never reaches the router
        session_ids = path_ids.filter(lambda raw: b"\n" not in raw)
    session = draw(mostly(st.sampled_from([key.encode() for key in SEEDED]), session_ids))
    path = route.replace("{sessionId}", percent(session))
    pairs = draw(st.lists(st.tuples(query_names, query_values), max_size=4))
    query = "&".join(
        f"{quote_from_bytes(utf8(name), safe='')}={quote_from_bytes(value, safe='')}"
        for name, value in pairs
    )
    if draw(st.booleans()):
        query += draw(st.sampled_from(["", "&", "=", "&&==", "limit", "cursor=", "%", "%zz"]))
    url = f"{path}?{query}" if query else path
    content = None
    if method in ("POST", "PATCH", "PUT"):
        content = draw(mostly(body_for(route, method), st.none()))
    headers: dict[str, str] = {}
    if content is not None or draw(st.booleans()):
        content_type = draw(content_types)
        if content_type is not None:
            headers["content-type"] = content_type
    if content is not None and draw(st.integers(0, 9)) == 0:
        headers["content-length"] = draw(content_lengths)
    user = draw(mostly(st.just(OWNER), st.sampled_from([OTHER, None, "u" * 300])))
    return Call(app, user, method, route, url, headers, content)


async def check(api: Api, call: Call) -> httpx.Response:
    """Send ``call``: no 5xx, the error shape on every 4xx, and no row changed by one."""
    note(repr(call))
    await api.seed()
    before = await api.snapshot()
    response = await call.send(api)
    status = response.status_code
    event(f"{call.method} {call.route}: {status}")
    assert status < 500, response.text
    if status >= 400:
        error = assert_error(response)
        if status == 422:
            assert error["code"] == "invalid_input"
            assert "field" in error
        if status == 401:
            assert error["code"] == "unauthorized"
        assert await api.snapshot() == before, f"a {status} changed the stored rows"
    elif status != 204:
        assert isinstance(response.json(), dict), response.text
    if status == 201:  # the snapshot sees writes, so comparing it means something
        assert await api.snapshot() != before
    return response


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@LOCAL
@given(call=calls())
async def test_any_request_is_answered_cleanly(api: Api, call: Call) -> None:
    await check(api, call)


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "redis", "dynamodb"])
@SERVER
@given(call=calls())
async def test_any_request_is_answered_cleanly_on_servers(api: Api, call: Call) -> None:
    await check(api, call)


async def check_cursor(api: Api, route: str, cursor: str) -> None:
    """A cursor is a valid one (200) or a 422 naming ``cursor``; nothing else."""
    before = await api.snapshot()
    response = await get_with_cursor(api.clients["fastapi"], route, cursor)
    if response.status_code != 200:
        assert response.status_code == 422, response.text
        error = assert_error(response)
        assert (error["code"], error.get("field")) == ("invalid_input", "cursor")
    assert await api.snapshot() == before


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@LOCAL_CURSORS
@given(route=st.sampled_from([*LIST_ROUTES, SEARCH_ROUTE]), cursor=cursor_text())
async def test_any_cursor_is_a_page_or_422(api: Api, route: str, cursor: str) -> None:
    await check_cursor(api, route, cursor)


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "redis", "dynamodb"])
@SERVER_CURSORS
@given(route=st.sampled_from([*LIST_ROUTES, SEARCH_ROUTE]), cursor=cursor_text())
async def test_any_cursor_is_a_page_or_422_on_servers(api: Api, route: str, cursor: str) -> None:
    await check_cursor(api, route, cursor)
