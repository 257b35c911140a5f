"""Prometheus metrics: every count moves by exactly one per event, and nothing of it is
loaded without the ``metrics`` extra.

The counting tests give the service a ``Metrics`` in a registry of their own, so that
nothing else in the process moves what they read; the cookie test and one store test
read the default ``REGISTRY``, the one ``make_asgi_app()`` serves, by difference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.requests import Request
from starlette.testclient import TestClient

from agentsession import IdConflict, SessionNotFound, StoreMisconfigured, StoreUnavailable
from agentsession.common import now_ms
from agentsession.config import RetentionConfig
from agentsession.metrics import Metrics, get_metrics
from agentsession.retention import LEASE_NAME, prune
from agentsession.service import SessionService
from agentsession.stores.base import Cutoffs
from agentsession.stores.memory import MemoryStore
from tests.apps import SECRET, make_app
from tests.test_retention import CASES, NOW, seed

pytestmark = pytest.mark.anyio

#: The store-call samples one call must move: its counter and its histogram's count.
CALL_SAMPLES = ("agentsession_store_calls_total", "agentsession_store_call_seconds_count")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry, names: tuple[str, ...]) -> Samples:
    """The registry's samples called ``names``, keyed by name and labels."""
    found: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in names:
                found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def moved(before: Samples, after: Samples) -> Samples:
    """The samples that changed, by how much."""
    keys = before.keys() | after.keys()
    change = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys}
    return {key: value for key, value in change.items() if value}


def one_call(operation: str, outcome: str = "ok") -> Samples:
    """What one store call moves: its outcome's counter and its latency histogram."""
    return {
        ("agentsession_store_calls_total", (("operation", operation), ("outcome", outcome))): 1,
        ("agentsession_store_call_seconds_count", (("operation", operation),)): 1,
    }


def isolated(service: SessionService) -> CollectorRegistry:
    """Give ``service`` metrics in a registry of their own; that registry."""
    registry = CollectorRegistry()
    service.metrics = Metrics(registry)
    return registry


# Store calls


async def test_every_service_call_is_counted_once(service: SessionService, user: str) -> None:
    """On every backend: each method moves its operation's ok counter and histogram by one."""
    registry = isolated(service)
    state: list[Any] = []

    async def open_state() -> None:
        state.append(await service.state(user, "s1"))

    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("insert_session", lambda: service.create_session(user, session_id="s1")),
        ("get_session", lambda: service.get_session(user, "s1")),
        ("list_sessions", lambda: service.list_sessions(user)),
        ("update_session", lambda: service.rename_session(user, "s1", "name")),
        ("update_session", lambda: service.mark_viewed(user, "s1")),
        ("save_task", lambda: service.save_task(user, "s1", "t1", user_message="hi")),
        ("list_tasks", lambda: service.list_tasks(user, "s1")),
        ("save_feedback", lambda: service.add_feedback(user, "s1", "t1", "up")),
        ("list_feedback", lambda: service.list_feedback(user)),
        ("load_state", open_state),
        ("write_state", lambda: state[0].set("k", 1)),
        ("delete_session", lambda: service.delete_session(user, "s1")),
    ]
    for operation, call in calls:
        before = samples(registry, CALL_SAMPLES)
        await call()
        assert moved(before, samples(registry, CALL_SAMPLES)) == one_call(operation), operation


class FailingStore(MemoryStore):
    """A memory store whose ``get_session`` fails as it is told to (or is slow)."""

    failure: BaseException | None = None
    delay = 0.0

    async def get_session(self, user_id: str, session_id: str, now: int) -> Any:
        if self.delay:
            await anyio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return await super().get_session(user_id, session_id, now)


@pytest.mark.parametrize(
    ("failure", "raised", "outcome"),
    [
        (None, SessionNotFound, "ok"),  # the store answered: no such conversation
        (StoreUnavailable("down"), StoreUnavailable, "unavailable"),
        (StoreMisconfigured("no grant"), StoreMisconfigured, "misconfigured"),
        (RuntimeError("bug"), RuntimeError, "error"),
    ],
    ids=["not-found", "unavailable", "misconfigured", "error"],
)
async def test_a_call_is_counted_once_under_its_outcome(
    failure: BaseException | None, raised: type[BaseException], outcome: str
) -> None:
    store = FailingStore()
    store.failure = failure
    async with SessionService(store) as service:
        registry = isolated(service)
        before = samples(registry, CALL_SAMPLES)
        with pytest.raises(raised):
            await service.get_session("u", "s")
        assert moved(before, samples(registry, CALL_SAMPLES)) == one_call("get_session", outcome)


async def test_a_rejected_and_a_timed_out_and_a_cancelled_call() -> None:
    store = FailingStore()
    async with SessionService(store, timeout=0.05) as service:
        registry = isolated(service)
        await service.create_session("u", session_id="s")
        before = samples(registry, CALL_SAMPLES)
        with pytest.raises(IdConflict):
            await service.create_session("u", session_id="s")
        assert moved(before, samples(registry, CALL_SAMPLES)) == one_call(
            "insert_session", "rejected"
        )

        store.delay = 1.0
        before = samples(registry, CALL_SAMPLES)
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.05 seconds"):
            await service.get_session("u", "s")
        assert moved(before, samples(registry, CALL_SAMPLES)) == one_call("get_session", "timeout")

        service.timeout = 10.0
        before = samples(registry, CALL_SAMPLES)
        with anyio.move_on_after(0.05):
            await service.get_session("u", "s")
        assert moved(before, samples(registry, CALL_SAMPLES)) == one_call(
            "get_session", "cancelled"
        )


async def test_the_default_registry_is_shared_by_every_service() -> None:
    """``make_asgi_app()`` serves REGISTRY: services count there, several without clashing."""
    first, second = SessionService(MemoryStore()), SessionService(MemoryStore())
    assert first.metrics is second.metrics is get_metrics()
    async with first, second:
        for service in (first, second):
            before = samples(REGISTRY, CALL_SAMPLES)
            await service.list_sessions("u")
            assert moved(before, samples(REGISTRY, CALL_SAMPLES)) == one_call("list_sessions")


# Cookie writes

COOKIE_WRITES = ("agentsession_cookie_writes_total",)


def cookie_write(kind: str, transport: str) -> Samples:
    labels = (("kind", kind), ("transport", transport))
    return {("agentsession_cookie_writes_total", labels): 1}


def test_each_response_that_carries_the_session_is_counted_once() -> None:
    with TestClient(make_app()) as client:
        steps: list[tuple[Callable[[], Any], Samples]] = [
            (lambda: client.post("/write", json={"a": 1}), cookie_write("set", "cookie")),
            (lambda: client.get("/read"), {}),  # unchanged: nothing written
            (lambda: client.get("/untouched"), {}),
            (lambda: client.get("/fail"), {}),  # a 5xx carries no session
            (lambda: client.post("/clear"), cookie_write("delete", "cookie")),
            (
                lambda: client.post("/write", json={"b": 2}, headers={"X-Session-Token": "new"}),
                cookie_write("set", "token"),
            ),
        ]
        for step, expected in steps:
            before = samples(REGISTRY, COOKIE_WRITES)
            step()
            assert moved(before, samples(REGISTRY, COOKIE_WRITES)) == expected


# Retention

PRUNE_SAMPLES = (
    "agentsession_prune_runs_total",
    "agentsession_prune_rows_total",
    "agentsession_prune_seconds_count",
    "agentsession_lease_holder_changes_total",
)
RETENTION = CASES["all rules"].retention


def prune_moves(outcome: str | None, rows: dict[str, int], changes: tuple[str, ...]) -> Samples:
    """What one run moves: its outcome, rows per table, its duration, lease changes."""
    expected: Samples = {}
    if outcome is not None:
        expected["agentsession_prune_runs_total", (("outcome", outcome),)] = 1
        if outcome != "skipped":
            expected["agentsession_prune_seconds_count", ()] = 1
    for table, count in rows.items():
        if count:
            expected["agentsession_prune_rows_total", (("table", table),)] = count
    for change in changes:
        labels = (("change", change), ("lease", LEASE_NAME))
        expected["agentsession_lease_holder_changes_total", labels] = 1
    return expected


async def test_a_prune_run_counts_rows_per_table_its_run_and_the_lease() -> None:
    async with SessionService(MemoryStore()) as service:
        registry = isolated(service)
        await seed(service)
        before = samples(registry, PRUNE_SAMPLES)
        dry = await prune(service, retention=RETENTION, now=NOW, pause=0, dry_run=True)
        assert dry.total > 0
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == {}  # dry runs: not counted

        report = await prune(service, retention=RETENTION, now=NOW, pause=0)
        rows = {"chat_tasks": 6, "feedback": 2, "sessions": 4}
        assert report.counts == rows
        expected = prune_moves("ok", rows, ("acquired", "released"))
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == expected

        before = samples(registry, PRUNE_SAMPLES)
        await prune(service, retention=RETENTION, now=NOW, pause=0)  # nothing left
        expected = prune_moves("ok", {}, ("acquired", "released"))
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == expected


async def test_a_skipped_run_is_counted_and_holds_no_lease() -> None:
    async with SessionService(MemoryStore()) as service:
        registry = isolated(service)
        now = now_ms()  # not NOW: that is as old as the test session
        await service.store.take_lease(LEASE_NAME, "another-host:1:abcd", now + 60_000, now)
        before = samples(registry, PRUNE_SAMPLES)
        report = await prune(service, retention=RETENTION, pause=0)
        assert report.skipped is not None
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == prune_moves("skipped", {}, ())


class LeaseLosingStore(MemoryStore):
    """Grants the lease once; every renewal finds another holder."""

    takes = 0

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        self.takes += 1
        return self.takes == 1


class BrokenPruneStore(MemoryStore):
    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        raise StoreUnavailable("the database went away")


async def test_a_lost_lease_and_a_failed_run_are_counted() -> None:
    # lease_ttl 1 ms: the lease is renewed before the first batch, and that fails.
    async with SessionService(LeaseLosingStore()) as service:
        registry = isolated(service)
        before = samples(registry, PRUNE_SAMPLES)
        report = await prune(service, retention=RETENTION, pause=0, lease_ttl=0.001)
        assert not report.complete
        expected = prune_moves("stopped", {}, ("acquired", "lost"))
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == expected

    async with SessionService(BrokenPruneStore()) as service:
        registry = isolated(service)
        before = samples(registry, PRUNE_SAMPLES)
        with pytest.raises(StoreUnavailable):
            await prune(service, retention=RetentionConfig(), pause=0)
        expected = prune_moves("failed", {}, ("acquired", "released"))
        assert moved(before, samples(registry, PRUNE_SAMPLES)) == expected
        failed = ("agentsession_store_calls_total", (("operation", "prune_batch"),))
        calls = samples(registry, ("agentsession_store_calls_total",))
        assert calls[failed[0], (*failed[1], ("outcome", "unavailable"))] == 1


# Without the extra, and lazily with it

#: Hides prometheus_client as an uninstalled package is hidden (see test_startup_failure).
HIDE_PROMETHEUS = """\
import sys


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
"""

#: A FastAPI-style app on SQLite (migrations, conversations, cookies), then a prune run.
WITHOUT_EXTRA = f"""
import asyncio, json, sys
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from agentsession import AgentSessionConfig, SessionMiddleware, get_session_service, prune
from agentsession.metrics import get_metrics

try:
    import prometheus_client  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("prometheus_client is not hidden")

config = AgentSessionConfig.from_mapping(
    {{"session": {{"secret_key": {SECRET!r}}},
      "session_service": {{"type": "sql", "database_url": sys.argv[1]}},
      "data_retention": {{"enabled": False}}}},
    env={{}},
)

async def chat(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    record = await get_session_service(request).create_session("u")
    return JSONResponse({{"id": record.id, "n": request.session["n"]}})

app = Starlette(
    routes=[Route("/chat", chat, methods=["POST"])],
    middleware=[Middleware(SessionMiddleware, config=config)],
)
with TestClient(app) as client:
    assert client.post("/chat").json()["n"] == 1
    assert client.post("/chat").json()["n"] == 2
report = asyncio.run(prune(config))
print(json.dumps({{
    "metrics": get_metrics() is not None,
    "prometheus": "prometheus_client" in sys.modules,
    "complete": report.complete,
}}))
"""


def test_without_the_extra_nothing_is_imported_and_all_works(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_PROMETHEUS)
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"metrics": False, "prometheus": False, "complete": True}


#: Importing the package loads no prometheus_client; using it does, at the point named.
LAZY_SCRIPTS = {
    "service": """
        from agentsession import SessionService
        from agentsession.stores.memory import MemoryStore
        assert "prometheus_client" not in sys.modules, "imported at import time"
        service = SessionService(MemoryStore())
        assert "prometheus_client" in sys.modules
        assert service.metrics is SessionService(MemoryStore()).metrics is not None
    """,
    "middleware": """
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.testclient import TestClient
        from agentsession import SessionMiddleware
        from tests.apps import ROUTES, SECRET
        app = Starlette(
            routes=ROUTES, middleware=[Middleware(SessionMiddleware, secret_key=SECRET)]
        )
        with TestClient(app) as client:
            client.get("/read")  # nothing to write
            assert "prometheus_client" not in sys.modules, "imported before a cookie write"
            client.post("/write", json={"a": 1})
            assert "prometheus_client" in sys.modules
    """,
}


@pytest.mark.parametrize("case", LAZY_SCRIPTS)
def test_with_the_extra_prometheus_client_loads_only_when_used(case: str) -> None:
    script = "import sys\nimport agentsession\n" + textwrap.dedent(LAZY_SCRIPTS[case])
    result = subprocess.run(
        [sys.executable, "-c", script + "print('ok')\n"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_readme_metrics_endpoint_serves_them() -> None:
    """FastAPI with ``app.mount("/metrics", make_asgi_app())``, as the README shows."""
    from fastapi import FastAPI
    from prometheus_client import make_asgi_app

    from agentsession import SessionMiddleware

    app = FastAPI()
    app.mount("/metrics", make_asgi_app())

    @app.post("/hello")
    async def hello(request: Request) -> dict[str, int]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    app.add_middleware(SessionMiddleware, secret_key=SECRET)
    with TestClient(app) as client:
        assert client.post("/hello").json() == {"n": 1}
        text = client.get("/metrics/").text
        written = client.get("/metrics/")  # a scrape writes no cookie
    assert 'agentsession_cookie_writes_total{kind="set",transport="cookie"}' in text
    assert "# TYPE agentsession_store_call_seconds histogram" in text
    assert "set-cookie" not in written.headers


def test_names_taken_in_the_registry_turn_metrics_off_not_the_app(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import agentsession.metrics as module

    def taken(registry: CollectorRegistry | None = None) -> Metrics:
        raise ValueError("Duplicated timeseries in CollectorRegistry")

    monkeypatch.setattr(module, "_resolved", False)
    monkeypatch.setattr(module, "_default", None)
    monkeypatch.setattr(module, "Metrics", taken)
    assert get_metrics() is None
    assert SessionService(MemoryStore()).metrics is None
    assert [r.getMessage() for r in caplog.records if r.name == "agentsession"] == [
        "agentsession metrics are off: Duplicated timeseries in CollectorRegistry"
    ]
