"""The HTTP API against its OpenAPI description: schemathesis, and what it cannot reach.

* schemathesis generates requests (valid and invalid) for every operation, against a
  FastAPI app (described by FastAPI's own document) and a plain Starlette app
  (described by ``openapi_document()``), on memory and on SQLite: no 5xx, every status
  documented, bodies, content types and headers as described, invalid input refused.
  A seeded token client and its rows make part of the requests hit existing data.
* The written description and FastAPI's agree operation by operation, and the written
  one is a valid OpenAPI 3.1 document.
* Requests schemathesis never sends (non-object JSON, NaN, deep nesting, other media
  types, bodies over the limit with and without Content-Length, odd query values) get
  their exact error: ``{"error": {"code", "message", "field"}}``.

schemathesis drives ASGI apps synchronously, from an event loop thread of its own, so
those tests are plain functions; the targeted ones run on anyio like the other tests.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentsession import SessionMiddleware, SessionService, sessions_router
from agentsession.openapi import SCHEMAS, openapi_document
from agentsession.search import MAX_QUERY_LENGTH
from agentsession.stores.memory import MemoryStore
from tests.apps import SECRET, Chunks
from tests.databases import sql_service

PREFIX = "/api/v1"
TOKEN_HEADER = "X-Session-Token"
#: Fixed, so that CI sends the same requests on every run.
SEED = 20240604
#: Generated requests per operation in the fuzzing phase (the coverage phase adds its
#: own deterministic edge cases, valid and invalid, to these).
MAX_EXAMPLES = 30


def fastapi_app(service: SessionService, **router: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(sessions_router(**router), prefix=PREFIX)
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


def starlette_app(service: SessionService, **router: Any) -> Starlette:
    """A plain Starlette gateway; it serves the written description as its document."""

    async def description(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(PREFIX))

    app = Starlette(
        routes=[Route("/openapi.json", description), Mount(PREFIX, app=sessions_router(**router))]
    )
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    return app


def memory_service() -> SessionService:
    return SessionService(MemoryStore())


# schemathesis
#
# The schemas are loaded at import (schemathesis collects one test per operation from
# them) from the documents themselves; the apps they run against are built per test by
# fixtures and passed to each call. (``schemathesis.pytest.from_fixture`` would load
# them from a fixture, but fails under pytest 9.2: it sets ``node._nodeid``.)


class Seeds:
    """Rows that exist, so that generated requests sometimes name them.

    One token client (``X-Session-Token``, no cookies) owns a conversation, a chat task
    in it and its feedback on that task. Requests sent as that client, or naming those
    ids, take the routes' paths for existing rows (200, 201, 204, 409), not only
    401/404/422.
    """

    task_id = "seeded-task"

    def __init__(self, schema: Any, app: Any) -> None:
        self.schema = schema
        self.app = app
        extended = self._call("/session/extend", "POST", headers={TOKEN_HEADER: "new"})
        self.token = extended.headers[TOKEN_HEADER.lower()][0]
        self.session_id = ""
        self.replant()

    def _call(self, path: str, method: str, **parts: Any) -> Any:
        response = self.schema[PREFIX + path][method].Case(**parts).call(app=self.app)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response

    def replant(self) -> None:
        """Create the conversation, its task and the feedback (again, after a DELETE)."""
        owner = {TOKEN_HEADER: self.token}
        created = self._call("/sessions", "POST", headers=owner, body={"name": "seeded"})
        self.session_id = created.json()["id"]
        self._call(
            "/sessions/{sessionId}/chat-tasks",
            "POST",
            headers=owner,
            path_parameters={"sessionId": self.session_id},
            body={
                "taskId": self.task_id,
                "userMessage": "a seeded question",
                "messageBubbles": [{"text": "hi"}],
            },
        )
        self._call(
            "/feedback",
            "POST",
            headers=owner,
            body={"taskId": self.task_id, "sessionId": self.session_id, "feedbackType": "up"},
        )

    def apply(self, case: Any, owner: bool, existing: bool) -> Any:
        """Send ``case`` as the seeded client (``owner``), naming its rows (``existing``)."""
        if owner:
            if case.headers is None:
                case.headers = {}
            case.headers[TOKEN_HEADER] = self.token
        # Only where the generated data is valid: an invalid case must stay invalid
        # (schemathesis expects it refused).
        if existing and not case.meta.generation.mode.is_negative:
            # "seeded" finds the conversation's name and its task's message.
            ids = {"sessionId": self.session_id, "taskId": self.task_id, "q": "seeded"}
            if "sessionId" in case.path_parameters:
                case.path_parameters["sessionId"] = self.session_id
            for container in (case.query, case.body):
                if isinstance(container, dict):
                    for key, value in ids.items():
                        if isinstance(container.get(key), str):
                            container[key] = value
        return case


#: The seeded rows of the test that is running, for the ``flatmap_case`` hook.
ACTIVE: dict[str, Seeds] = {}


def load_schema(description: dict[str, Any], mode: str = "all") -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # No example database: a run replays nothing from earlier runs.
            "generation": {"mode": mode, "max-examples": MAX_EXAMPLES, "database": "none"},
        }
    )
    # A copy: schemathesis may annotate the document it is given.
    schema = schemathesis.openapi.from_dict(copy.deepcopy(description), config=config)

    @schema.hook
    def flatmap_case(context: Any, case: Any) -> Any:
        """Generated requests come from the seeded client or not, name its rows or not."""
        flags = st.tuples(st.booleans(), st.booleans())
        return flags.map(lambda drawn: ACTIVE["seeds"].apply(case, *drawn))

    return schema


#: What FastAPI's /openapi.json serves, and the written description (the Starlette one).
FASTAPI_DOCUMENT = fastapi_app(memory_service()).openapi()
FASTAPI_SCHEMA = load_schema(FASTAPI_DOCUMENT)
STARLETTE_SCHEMA = load_schema(openapi_document(PREFIX))

#: Every response: no 5xx, a documented status, a body, content type and headers as that
#: status describes, and invalid input (as the description defines it) refused.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
]

#: One app per test item (operation and backend), shared by the item's generated
#: requests on purpose: the rows they write are what later requests find.
SHARED_APP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=["memory", "sqlite"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> SessionService:
    """Not started here: the app's lifespan starts it, in the loop that serves the app."""
    if request.param == "memory":
        return memory_service()
    return sql_service(f"sqlite:///{tmp_path / 'api.db'}")


def serve(schema: Any, app: Any) -> Iterator[Any]:
    """Seed ``app`` through ``schema``'s operations, hand it to the test, then stop it."""
    try:
        ACTIVE["seeds"] = Seeds(schema, app)
        yield app
    finally:
        ACTIVE.clear()
        # schemathesis keeps each app's lifespan running until the process exits; end
        # it now, which closes the service (and the SQLite engine) in its own loop.
        schemathesis_asgi.shutdown_lifespans()


@pytest.fixture
def fastapi_api(service: SessionService) -> Iterator[Any]:
    yield from serve(FASTAPI_SCHEMA, fastapi_app(service))


@pytest.fixture
def starlette_api(service: SessionService) -> Iterator[Any]:
    yield from serve(STARLETTE_SCHEMA, starlette_app(service))


def call_and_validate(case: Any, app: Any) -> None:
    response = case.call_and_validate(app=app, checks=CHECKS)
    seeds = ACTIVE["seeds"]
    deleted = case.method == "DELETE" and response.status_code == 204
    if deleted and case.path.endswith("/me"):
        seeds.__init__(seeds.schema, seeds.app)  # a user erased (and logged out): start over
    elif deleted and case.path_parameters["sessionId"] == seeds.session_id:
        seeds.replant()  # the seeded conversation is gone: make it again


@FASTAPI_SCHEMA.parametrize()
@SHARED_APP
def test_fastapi_app_conforms(case: Any, fastapi_api: Any) -> None:
    call_and_validate(case, fastapi_api)


@STARLETTE_SCHEMA.parametrize()
@SHARED_APP
def test_starlette_app_conforms(case: Any, starlette_api: Any) -> None:
    values = (unquote(str(value)) for value in (case.path_parameters or {}).values())
    if any("\n" in value for value in values):
        # Starlette's Mount matches its prefix with ``.*``, which stops at a newline: such
        # a path never reaches the router, and the app's own plain-text 404 answers it.
        return
    call_and_validate(case, starlette_api)


#: Values the description cannot pin down: an opaque cursor, dates in any ISO 8601 form,
#: a search query with no letter or digit (JSON Schema's ``\W`` is ASCII-only in
#: ECMA-262, so no pattern says "a Unicode letter or digit" to every validator).
FREE_FORM = frozenset({"cursor", "since", "until", "q"})

#: Operations whose description allows values the route refuses (none left; an entry
#: here excludes an operation from ``test_valid_requests_are_accepted``).
DESCRIPTION_GAPS: tuple[str, ...] = ()


@schemathesis.check
def valid_input_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the description calls valid is not refused as invalid.

    Except for what the description cannot express (``FREE_FORM``, NUL characters,
    which no database stores as text).
    """
    if case.meta is None or case.meta.generation.mode.is_negative:
        return None
    if response.status_code not in (400, 415, 422):
        return None
    error = response.json()["error"]
    if error.get("field") in FREE_FORM or "NUL character" in error["message"]:
        return None
    raise AssertionError(f"valid by the description, refused with {response.status_code}: {error}")


VALID_ONLY_SCHEMA = load_schema(openapi_document(PREFIX), mode="positive")


@pytest.fixture
def described_api() -> Iterator[Any]:
    yield from serve(VALID_ONLY_SCHEMA, starlette_app(memory_service()))


@VALID_ONLY_SCHEMA.exclude(operation_id=list(DESCRIPTION_GAPS)).parametrize()
@SHARED_APP
def test_valid_requests_are_accepted(case: Any, described_api: Any) -> None:
    case.call_and_validate(app=described_api, checks=[valid_input_accepted])


# The description itself


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_fastapi_describes_the_routes_as_written() -> None:
    written = operations(openapi_document(PREFIX))
    served = operations(FASTAPI_DOCUMENT)
    assert FASTAPI_DOCUMENT["openapi"].startswith("3.1.")
    assert set(served) == set(written)
    for key, operation in written.items():
        fastapi = served[key]
        assert fastapi["operationId"] == operation["operationId"], key
        assert fastapi["summary"] == operation["summary"], key
        assert fastapi.get("parameters", []) == operation.get("parameters", []), key
        assert fastapi.get("requestBody") == operation.get("requestBody"), key
        assert set(fastapi["responses"]) == set(operation["responses"]), key
        for status, response in operation["responses"].items():
            assert fastapi["responses"][status].get("content") == response.get("content"), (
                key,
                status,
            )
            assert fastapi["responses"][status].get("headers") == response.get("headers"), (
                key,
                status,
            )
        assert fastapi["tags"] == ["agentsession"]


@pytest.mark.anyio
async def test_fastapi_serves_that_description() -> None:
    async with client(fastapi_app(memory_service())) as http:
        response = await http.get("/openapi.json")
    assert response.json() == json.loads(json.dumps(FASTAPI_DOCUMENT))


@pytest.mark.parametrize("prefix", ["", PREFIX, "/gateway/sessions-api"])
def test_written_description_is_valid_openapi_3_1(prefix: str) -> None:
    document = openapi_document(prefix)
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(copy.deepcopy(document))
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    # An operation schemathesis cannot use comes as an Err, which has no ok().
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert {(op.path, op.method.upper()) for op in loaded} == {
        (path, method.upper()) for path, method in operations(document)
    }
    assert all(path.startswith(prefix + "/") for path, _ in operations(document))


def test_invalid_description_would_be_caught() -> None:
    """``validate()`` does check the document (so the test above means something)."""
    document = copy.deepcopy(openapi_document(PREFIX))
    document["paths"][PREFIX + "/sessions"]["get"]["parameters"][0]["in"] = "body"
    with pytest.raises(Exception, match="body"):
        schemathesis.openapi.from_dict(document).validate()


def test_documents_are_independent() -> None:
    limit = openapi_document(PREFIX)["paths"][PREFIX + "/sessions"]["get"]["parameters"][0]
    original = limit["description"]
    limit["description"] = "edited"  # as an app adding its own words would
    try:
        again = openapi_document(PREFIX)["paths"][PREFIX + "/feedback"]["get"]["parameters"]
        assert [p["description"] for p in again if p["name"] == "limit"] == [original]
    finally:
        limit["description"] = original


def test_search_and_pins_are_described() -> None:
    """``GET /search`` and its named schemas, ``pinned`` on a conversation, in its PATCH
    body and as the list's filter; FastAPI's document names the same schemas."""
    document = openapi_document(PREFIX)
    search = document["paths"][PREFIX + "/search"]["get"]
    assert search["operationId"] == "search"
    assert [(p["name"], p["required"]) for p in search["parameters"]] == [
        ("q", True),
        ("limit", False),
        ("cursor", False),
    ]
    assert search["parameters"][0]["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_QUERY_LENGTH,
    }
    assert set(search["responses"]) == {"200", "401", "422", "503"}
    page = search["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/SearchResultPage"}
    schemas = document["components"]["schemas"]
    assert schemas["SearchResultPage"]["properties"]["data"]["items"] == {
        "$ref": "#/components/schemas/SearchResult"
    }
    result = schemas["SearchResult"]
    assert (
        set(result["required"])
        == set(result["properties"])
        == {
            "sessionId",
            "sessionName",
            "taskId",
            "snippet",
            "rank",
            "time",
        }
    )
    assert result["properties"]["snippet"]["items"] == {"$ref": "#/components/schemas/SnippetPart"}
    assert schemas["SnippetPart"]["properties"]["match"]["type"] == "boolean"

    conversation = schemas["Conversation"]
    assert conversation["properties"]["pinned"]["type"] == "boolean"
    assert "pinned" in conversation["required"]
    patch = document["paths"][PREFIX + "/sessions/{sessionId}"]["patch"]["requestBody"]
    assert patch["required"] is True
    body = patch["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"name", "pinned"}
    assert (body["minProperties"], body["additionalProperties"], "required" in body) == (
        1,
        False,
        False,
    )
    listing = document["paths"][PREFIX + "/sessions"]["get"]["parameters"]
    assert [p["schema"] for p in listing if p["name"] == "pinned"] == [{"type": "boolean"}]

    served = FASTAPI_DOCUMENT["components"]["schemas"]
    for name in ("SearchResult", "SnippetPart", "SearchResultPage", "Conversation"):
        assert served[name] == SCHEMAS[name], name


# What schemathesis does not send


def client(app: Any) -> httpx.AsyncClient:
    """An in-process client; an exception in the app comes back as a 500, as from a server."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@dataclass
class Browser:
    """A client that keeps its session cookie, and one of its conversations."""

    http: httpx.AsyncClient
    session_id: str = "no-such-conversation"

    def url(self, path: str) -> str:
        """``path`` under the API prefix, ``{id}`` being this client's conversation."""
        return PREFIX + path.replace("{id}", self.session_id)

    async def send(self, method: str, path: str, content: Any, **headers: str) -> httpx.Response:
        """``content`` as the body, sent as application/json unless ``headers`` say otherwise."""
        headers = {**JSON, **headers}
        return await self.http.request(method, self.url(path), content=content, headers=headers)


JSON = {"content-type": "application/json"}
MakeApp = Callable[..., Any]


@pytest.fixture(params=["fastapi", "starlette"])
def make_app(request: pytest.FixtureRequest) -> MakeApp:
    """``make_app(**router_options)``: a fresh app on a memory service."""
    make = fastapi_app if request.param == "fastapi" else starlette_app
    return lambda **router: make(memory_service(), **router)


@pytest.fixture
async def browser(make_app: MakeApp) -> AsyncIterator[Browser]:
    async with client(make_app()) as http:
        created = await http.post(f"{PREFIX}/sessions", json={"name": "mine"})
        assert created.status_code == 201, created.text
        yield Browser(http, created.json()["id"])


def assert_error(response: httpx.Response, status: int, code: str, field: str) -> dict[str, Any]:
    """``response`` is the JSON error ``{"error": {"code", "message", "field"}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "field"}
    assert (error["code"], error["field"]) == (code, field), error
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


#: Every route that reads a JSON body: method, path, a valid body.
BODY_ROUTES = [
    pytest.param("POST", "/sessions", {"name": "n"}, id="create"),
    pytest.param("PATCH", "/sessions/{id}", {"name": "n"}, id="rename"),
    pytest.param("PATCH", "/sessions/{id}", {"pinned": True}, id="pin"),
    pytest.param(
        "POST", "/sessions/{id}/chat-tasks", {"taskId": "t", "messageBubbles": []}, id="task"
    ),
    pytest.param(
        "POST", "/feedback", {"taskId": "t", "sessionId": "s", "feedbackType": "up"}, id="feedback"
    ),
    pytest.param("PUT", "/session/current", {"sessionId": None}, id="current"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
@pytest.mark.parametrize(
    "raw", [b"[]", b'[{"name": "n"}]', b'"name"', b"42", b"null", b"true"], ids=repr
)
async def test_body_that_is_not_an_object(
    browser: Browser, method: str, path: str, valid: dict[str, Any], raw: bytes
) -> None:
    response = await browser.send(method, path, raw)
    error = assert_error(response, 400, "invalid_json", "body")
    assert "must be a JSON object" in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_body_with_a_non_json_number(
    browser: Browser, method: str, path: str, valid: dict[str, Any], constant: str
) -> None:
    """Python's json module reads NaN and Infinity; JSON has no such numbers."""
    key = next(iter(valid))
    raw = json.dumps({**valid, key: "@"}).replace('"@"', constant)
    response = await browser.send(method, path, raw)
    error = assert_error(response, 400, "invalid_json", "body")
    assert constant in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        b'{"taskId": "t", "messageBubbles": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["open", "closed", "objects", "in-a-field"],
)
async def test_deeply_nested_body(
    browser: Browser, method: str, path: str, valid: dict[str, Any], raw: bytes
) -> None:
    response = await browser.send(method, path, raw)
    assert_error(response, 400, "invalid_json", "body")


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        (None, "no content type"),
    ],
    ids=["text", "text-charset", "form", "none"],
)
async def test_body_not_sent_as_json(
    browser: Browser,
    method: str,
    path: str,
    valid: dict[str, Any],
    content_type: str | None,
    named: str,
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    url = browser.url(path)
    response = await browser.http.request(method, url, content=json.dumps(valid), headers=headers)
    assert response.request.headers.get("content-type") == content_type
    error = assert_error(response, 415, "unsupported_media_type", "body")
    assert named in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_media_types_are_accepted(browser: Browser, content_type: str) -> None:
    headers = {"content-type": content_type}
    response = await browser.send("POST", "/sessions", b'{"name": "n"}', **headers)
    assert response.status_code == 201, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
async def test_body_over_the_limit_with_content_length(
    make_app: MakeApp, method: str, path: str, valid: dict[str, Any]
) -> None:
    async with client(make_app(max_body_size=100)) as http:
        browser = Browser(http)
        fits = json.dumps({**valid, "pad": None}).encode().ljust(100)
        assert_error(await browser.send(method, path, fits), 422, "invalid_input", "pad")
        response = await browser.send(method, path, fits + b" ")
        assert_error(response, 413, "body_too_large", "body")
        # Declared too large: refused before a byte of it is read.
        body = Chunks(count=10, size=50)
        response = await browser.send(method, path, body, **{"content-length": "500"})
        assert_error(response, 413, "body_too_large", "body")
        assert body.sent == 0


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
async def test_streamed_body_over_the_limit(
    make_app: MakeApp, method: str, path: str, valid: dict[str, Any]
) -> None:
    async with client(make_app(max_body_size=100)) as http:
        body = Chunks(count=1000, size=30)
        request = http.build_request(method, Browser(http).url(path), content=body, headers=JSON)
        assert "content-length" not in request.headers  # chunked
        response = await http.send(request)
        assert_error(response, 413, "body_too_large", "body")
        # Refused once past 100 bytes (the 4th chunk): the rest was never asked for.
        assert body.sent <= 5


@pytest.mark.anyio
async def test_default_limit_is_one_mebibyte(make_app: MakeApp) -> None:
    async with client(make_app()) as http:
        padded = b'{"name": null}'.ljust(1024 * 1024)
        response = await http.post(f"{PREFIX}/sessions", content=padded, headers=JSON)
        assert response.status_code == 201, response.text
        response = await http.post(f"{PREFIX}/sessions", content=padded + b" ", headers=JSON)
        assert_error(response, 413, "body_too_large", "body")


LIST_ROUTES = ["/sessions", "/sessions/{id}/chat-tasks", "/feedback", "/search?q=mine"]


def with_limit(url: str, limit: str) -> httpx.URL:
    """``url`` with ``limit`` added to its query (httpx's ``params`` would replace it)."""
    return httpx.URL(url).copy_merge_params({"limit": limit})


@pytest.mark.anyio
@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize("limit", ["0", "abc", "101", "-1", "1.5", "", " 5", "\uff15", "9" * 30])
async def test_limit_out_of_range(browser: Browser, path: str, limit: str) -> None:
    response = await browser.http.get(with_limit(browser.url(path), limit))
    assert_error(response, 422, "invalid_input", "limit")


@pytest.mark.anyio
@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize("limit", ["1", "100"])
async def test_limit_in_range(browser: Browser, path: str, limit: str) -> None:
    response = await browser.http.get(with_limit(browser.url(path), limit))
    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["since", "until"])
@pytest.mark.parametrize("value", ["notadate", "2024-13-01", "1e5", "-5", "9" * 16, "\x00"])
async def test_bad_dates(browser: Browser, field: str, value: str) -> None:
    response = await browser.http.get(browser.url("/feedback"), params={field: value})
    assert_error(response, 422, "invalid_input", field)


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["since", "until"])
@pytest.mark.parametrize(
    "value", ["0", "1717430400000", "2024-06-03", "2024-06-03T16:00:00+02:00", ""]
)
async def test_good_dates(browser: Browser, field: str, value: str) -> None:
    response = await browser.http.get(browser.url("/feedback"), params={field: value})
    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
@pytest.mark.parametrize("unknown", ["nmae", "session_id", "\u00e9t\u00e9"])
async def test_unknown_field_is_named(
    browser: Browser, method: str, path: str, valid: dict[str, Any], unknown: str
) -> None:
    response = await browser.send(method, path, json.dumps({**valid, unknown: 1}))
    error = assert_error(response, 422, "invalid_input", unknown)
    assert unknown in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), [("POST", "/sessions"), ("PATCH", "/sessions/{id}")])
async def test_name_of_256_characters(browser: Browser, method: str, path: str) -> None:
    response = await browser.send(method, path, json.dumps({"name": "n" * 256}))
    error = assert_error(response, 422, "invalid_input", "name")
    assert "255" in error["message"]
    response = await browser.send(method, path, json.dumps({"name": "n" * 255}))
    assert response.status_code in (200, 201), response.text
    assert response.json()["name"] == "n" * 255


# Bugs these found once: lone surrogates in field names, nesting near the parse limit.


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ROUTES)
async def test_unknown_field_with_a_lone_surrogate(
    browser: Browser, method: str, path: str, valid: dict[str, Any]
) -> None:
    response = await browser.send(method, path, '{"\\ud800": 1}')
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("invalid_json", "invalid_input")


async def save_nested(browser: Browser, session_id: str, depth: int) -> httpx.Response:
    """A chat task whose messageBubbles are ``depth`` arrays, one inside the other."""
    raw = f'{{"taskId": "deep-{session_id}", "messageBubbles": {"[" * depth}{"]" * depth}}}'
    return await browser.send("POST", f"/sessions/{session_id}/chat-tasks", raw)


@pytest.mark.anyio
async def test_nesting_just_under_the_parse_limit(browser: Browser) -> None:
    # The smallest depth the route refuses (400 or 422), by bisection; the depth Python
    # can parse or serialise depends on its version and the stack, hence the search.
    low, high = 1, 200_000
    while low < high:
        middle = (low + high) // 2
        refused = 400 <= (await save_nested(browser, browser.session_id, middle)).status_code < 500
        low, high = (low, middle) if refused else (middle + 1, high)
    assert low < 200_000
    for depth in range(max(1, low - 40), low):
        created = await browser.http.post(f"{PREFIX}/sessions", json={})
        conversation = created.json()["id"]
        saved = await save_nested(browser, conversation, depth)
        assert saved.status_code in (200, 422), (depth, saved.text[:200])
        history = await browser.http.get(f"{PREFIX}/sessions/{conversation}/chat-tasks")
        assert history.status_code == 200, (depth, history.text[:200])


def described_schema(method: str, path: str, where: str, name: str) -> dict[str, Any]:
    """The written description's schema of one parameter or body property."""
    operation = openapi_document()["paths"][path][method.lower()]
    if where == "body":
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        return dict(body["properties"][name])
    found = [p for p in operation.get("parameters", []) if (p["in"], p["name"]) == (where, name)]
    assert len(found) == 1, (method, path, where, name)
    return dict(found[0]["schema"])


def described_as_valid(schema: dict[str, Any], value: str) -> bool:
    """Whether the string ``value`` meets ``schema``'s type and length bounds."""
    types = schema.get("type", "string")
    return "string" in (types if isinstance(types, list) else [types]) and schema.get(
        "minLength", 0
    ) <= len(value) <= schema.get("maxLength", sys.maxsize)


LONG = "s" * 256


def gap(*values: Any, name: str) -> Any:
    return pytest.param(*values, id=name)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "where", "name", "value"),
    [
        gap("POST", "/sessions", "body", "agentId", "", name="create-agentId-empty"),
        gap("PUT", "/session/current", "body", "sessionId", "", name="current-empty"),
        gap("PUT", "/session/current", "body", "sessionId", LONG, name="current-256"),
        gap("GET", "/feedback", "query", "sessionId", "", name="feedback-sessionId-empty"),
        gap("GET", "/feedback", "query", "taskId", "", name="feedback-taskId-empty"),
        gap("GET", "/feedback", "query", "taskId", LONG, name="feedback-taskId-256"),
        gap("GET", "/sessions/{id}", "path", "sessionId", LONG, name="get-256"),
        gap("GET", "/search", "query", "q", "", name="search-empty"),
        gap("GET", "/search", "query", "q", "q" * 257, name="search-257"),
        gap("GET", "/sessions", "query", "pinned", "yes", name="list-pinned-yes"),
        # Refused and described as invalid, or accepted:
        pytest.param("POST", "/sessions", "body", "agentId", LONG, id="create-agentId-256"),
        pytest.param("POST", "/sessions", "body", "name", "", id="create-name-empty"),
        pytest.param("POST", "/feedback", "body", "taskId", "", id="rate-taskId-empty"),
        pytest.param("POST", "/feedback", "body", "sessionId", LONG, id="rate-sessionId-256"),
        pytest.param("POST", "/sessions/{id}/chat-tasks", "body", "taskId", LONG, id="task-256"),
        pytest.param("GET", "/search", "query", "q", LONG, id="search-256"),
    ],
)
async def test_refused_values_are_described(
    browser: Browser, method: str, path: str, where: str, name: str, value: str
) -> None:
    """Whatever a route refuses as invalid (422), the description rules out as well."""
    valid: dict[str, dict[str, Any]] = {
        "/sessions": {},
        "/session/current": {"sessionId": None},
        "/feedback": {"taskId": "t", "sessionId": browser.session_id, "feedbackType": "up"},
        "/sessions/{id}/chat-tasks": {"taskId": "t", "messageBubbles": []},
    }
    if where == "path":
        response = await browser.http.request(method, PREFIX + path.replace("{id}", value))
    elif where == "query":
        response = await browser.http.request(method, browser.url(path), params={name: value})
    else:
        response = await browser.http.request(
            method, browser.url(path), json={**valid[path], name: value}
        )
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        assert response.json()["error"]["field"] == name
        schema = described_schema(method, path.replace("{id}", "{sessionId}"), where, name)
        assert not described_as_valid(schema, value), (schema, response.json())
