"""The cookie layer stands alone: no persistence imported, any anyio backend, one config path.

``SessionMiddleware`` with cookie settings only is Starlette's middleware and nothing
more: it imports no SQLAlchemy, starts no task, runs on asyncio and trio, and every
keyword argument goes through the parser its YAML setting goes through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import agentsession
from agentsession import (
    AgentSessionConfig,
    ConfigError,
    SessionMiddleware,
    get_persistence,
    get_session_service,
    regenerate_client_id,
    regenerate_session_id,
    sessions_router,
)
from agentsession.stores.memory import MemoryStore
from tests.apps import SECRET, make_app, middleware_of, run_in_thread

COOKIE_LAYER = {
    "agentsession.common",
    "agentsession.config",
    "agentsession.cookie",
    "agentsession.cookie.codec",
    "agentsession.cookie.lifecycle",
    "agentsession.cookie.middleware",
    "agentsession.cookie.session",
    "agentsession.errors",
    "agentsession.metrics",
}
PERSISTENCE_MODULES = ("sqlalchemy", "alembic", "asyncpg", "aiomysql", "aiosqlite", "yaml")


def test_cookie_only_imports_no_persistence_module() -> None:
    """Import, construct, serve a request that writes the session: no SQL module loaded."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import agentsession
        from agentsession import SessionMiddleware, get_client_id
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        async def hello(request):
            request.session["n"] = request.session.get("n", 0) + 1
            return JSONResponse({{"n": request.session["n"], "client": get_client_id(request)}})

        app = Starlette(
            routes=[Route("/", hello)],
            middleware=[Middleware(
                SessionMiddleware, secret_key={SECRET!r}, session_cookie="sid", max_age=60,
                https_only=True, same_site="strict", domain="example.com", partitioned=True,
            )],
        )
        with TestClient(app, base_url="https://example.com") as client:
            assert client.get("/").json()["n"] == 1
            assert client.get("/").json()["n"] == 2
        loaded = sorted({{name.split(".")[0] for name in sys.modules}})
        ours = sorted(name for name in sys.modules if name.startswith("agentsession."))
        print(json.dumps(ours))
        print(json.dumps(loaded))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "SESSION_DATABASE_URL": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert "starlette" in loaded
    assert "agentsession" in loaded
    assert loaded.isdisjoint(PERSISTENCE_MODULES), sorted(loaded & set(PERSISTENCE_MODULES))
    # The cookie layer and what it stands on, and nothing of the persistence layer.
    ours = set(json.loads(result.stdout.splitlines()[-2]))
    assert ours <= COOKIE_LAYER, sorted(ours - COOKIE_LAYER)


def test_persistence_names_load_on_first_use() -> None:
    script = (
        "import sys, agentsession\n"
        "assert 'agentsession.service' not in sys.modules\n"
        "agentsession.SessionService\n"
        "assert 'agentsession.service' in sys.modules\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "print(sorted(set(dir(agentsession)) - set(agentsession.__all__)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        agentsession.nothing_here  # noqa: B018


def test_the_public_names() -> None:
    for name in ("Page", "SessionRecord", "TaskRecord", "FeedbackRecord", "ApiError"):
        assert name in agentsession.__all__
        assert getattr(agentsession, name).__name__ == name
    assert agentsession.resolve_user.__name__ == "resolve_user"
    assert "CookieCodec" not in agentsession.__all__
    assert not hasattr(agentsession, "CookieCodec")


# Any anyio backend


async def _conversations(client: httpx.AsyncClient) -> None:
    """Create two conversations through the router, list them, write the session."""
    for name in ("first", "second"):
        created = await client.post("/api/sessions", json={"name": name})
        assert created.status_code == 201, created.text
        await anyio.sleep(0.005)  # "second" is newer by the clock, not by a tie on id
    listed = await client.get("/api/sessions")
    assert [item["name"] for item in listed.json()["data"]] == ["second", "first"]
    written = await client.post("/count")
    assert written.json() == {"count": 1}
    assert (await client.post("/count")).json() == {"count": 2}
    current = await client.get("/api/session/current")
    assert current.json()["sessionId"] == listed.json()["data"][0]["id"]


async def count(request: Request) -> JSONResponse:
    request.session["count"] = request.session.get("count", 0) + 1
    return JSONResponse({"count": request.session["count"]})


def _chat_app(**options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/count", count, methods=["POST"]), Mount("/api", sessions_router())],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, **options)],
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_memory_store_through_the_middleware_on(backend: str) -> None:
    app = _chat_app()

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await _conversations(client)

    with TestClient(app, backend=backend):  # the lifespan runs on the backend too
        pass
    # A fresh thread: the suite's own asyncio loop may count as running in this one.
    run_in_thread(main, backend)
    store = middleware_of(app).service.store
    assert isinstance(store, MemoryStore)
    assert middleware_of(app).retention is None  # the memory store sweeps itself


def test_a_redis_store_under_trio_refuses_to_start() -> None:
    pytest.importorskip("redis")  # the oldest-Starlette run installs no redis-py
    config = AgentSessionConfig.from_mapping(
        {
            "session": {"secret_key": SECRET},
            "session_service": {"type": "redis", "database_url": "redis://127.0.0.1:1/0"},
        },
        env={},
    )
    app = Starlette(middleware=[Middleware(SessionMiddleware, config=config)])
    with (
        pytest.raises(ConfigError, match=r"RedisStore needs asyncio.*runs on trio"),
        TestClient(app, backend="trio"),
    ):
        pass


def test_a_sql_store_under_trio_refuses_to_start(tmp_path: Any) -> None:
    config = AgentSessionConfig.from_mapping(
        {
            "session": {"secret_key": SECRET},
            "session_service": {"type": "sql", "database_url": f"sqlite:///{tmp_path}/t.db"},
        },
        env={},
    )
    app = Starlette(middleware=[Middleware(SessionMiddleware, config=config)])
    with (
        pytest.raises(ConfigError, match=r"needs asyncio.*runs on trio"),
        TestClient(app, backend="trio"),
    ):
        pass
    assert not (tmp_path / "t.db").exists() or (tmp_path / "t.db").stat().st_size == 0


def test_cookie_only_starts_nothing() -> None:
    app = make_app()
    with TestClient(app) as client:
        client.post("/write", json={"a": 1})
        middleware = middleware_of(app)
        assert middleware._persistence is None
        assert not middleware.lifecycle.pending
        assert middleware.lifecycle._startup == []


@pytest.mark.anyio
async def test_persistence_is_made_when_first_asked_for() -> None:
    async def service_route(request: Request) -> JSONResponse:
        service = get_session_service(request)
        assert get_persistence(request).service is service
        record = await service.create_session("u1", name="n")
        return JSONResponse({"id": record.id})

    app = Starlette(
        routes=[Route("/new", service_route, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert middleware_of(app)._persistence is None
        assert (await client.post("/new")).status_code == 200
    persistence = middleware_of(app)._persistence
    assert persistence is not None
    assert isinstance(persistence.service.store, MemoryStore)


# One configuration path

BAD_ARGUMENTS = [
    ("secret_key", 12345),
    ("session_cookie", "bad name;"),
    ("session_cookie", "a\r\nSet-Cookie: x=1"),
    ("session_cookie", ""),
    ("session_cookie", None),
    ("max_age", "soon"),
    ("max_age", 1.5),
    ("max_age", True),
    ("path", "no-slash"),
    ("path", "/a\r\nb"),
    ("path", "/a;b"),
    ("path", None),
    ("same_site", "sideways"),
    ("same_site", None),
    ("https_only", "sometimes"),
    ("https_only", 1),
    ("domain", "a;b"),
    ("domain", "a b"),
    ("domain", "a\r\nb"),
    ("domain", 5),
    ("partitioned", "yes"),
    ("secret_key_fallbacks", [1]),
    ("refresh_after", "-5m"),
    ("refresh_after", "later"),
]


@pytest.mark.parametrize(("argument", "value"), BAD_ARGUMENTS)
def test_every_bad_argument_raises_config_error_naming_it(argument: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{argument}(\[\d+\])?: ") as info:
        SessionMiddleware(make_app(), **{"secret_key": SECRET, argument: value})
    if argument in ("secret_key", "secret_key_fallbacks"):
        assert repr(value) not in str(info.value)  # secrets are never echoed


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("max_age", -1, "Max-Age=-1; "),
        ("max_age", 0, "Max-Age=0; "),
        ("max_age", None, ""),
        ("max_age", 60, "Max-Age=60; "),
        ("same_site", "strict", "samesite=strict"),
        ("same_site", "none", "samesite=none"),
        ("https_only", True, "; secure"),
        ("domain", "example.com", "; domain=example.com"),
        ("partitioned", True, "; partitioned"),
    ],
)
def test_starlettes_accepted_values_stay_accepted(
    argument: str, value: object, expected: str
) -> None:
    middleware = SessionMiddleware(make_app(), **{"secret_key": SECRET, argument: value})
    assert expected in middleware._set_suffix[True]


def test_a_starlette_secret_is_accepted() -> None:
    middleware = SessionMiddleware(make_app(), secret_key=Secret(SECRET))
    assert middleware.codec.decode(middleware.codec.encode("c", None, "{}")) is not None


def test_a_bad_argument_built_by_starlette_fails_the_startup() -> None:
    """Starlette builds its middleware on the lifespan startup: the error fails it."""
    app = Starlette(middleware=[Middleware(SessionMiddleware, secret_key=SECRET, path="x")])
    with pytest.raises(ConfigError, match=r"^path: "), TestClient(app):
        pass


# Names that explain themselves


def test_regenerate_session_id_is_a_deprecated_alias() -> None:
    scope: dict[str, Any] = {"type": "http", "headers": []}
    middleware = SessionMiddleware(make_app(), secret_key=SECRET)
    from agentsession.cookie.session import Session

    scope["session"] = Session.lazy(middleware, [])
    first = regenerate_client_id(scope)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = regenerate_session_id(scope)
    assert first != second
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "regenerate_client_id" in str(caught[0].message)


def test_the_retention_scheduler_under_trio_says_it_needs_asyncio() -> None:
    from agentsession import RetentionScheduler, SessionService
    from agentsession.config import RetentionConfig

    async def main() -> None:
        scheduler = RetentionScheduler(SessionService(MemoryStore()), RetentionConfig())
        with pytest.raises(ConfigError, match=r"asyncio task.*runs on trio"):
            await scheduler.start()
        assert not scheduler.running

    run_in_thread(main, "trio")


def test_a_bad_environment_setting_stops_construction_not_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATA_RETENTION_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="DATA_RETENTION_BATCH_SIZE"):
        SessionMiddleware(make_app(), secret_key=SECRET)
