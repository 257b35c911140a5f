"""The fault suite: the database goes down and comes back under a write load.

The app (``tests/fault_app.py``: the HTTP API, a service timeout of ``TIMEOUT`` s) runs
under a real uvicorn process over a database server of the suite's own: a PostgreSQL
cluster made with ``pg_createcluster``, a ``mariadbd`` with its own datadir and a
``redis-server`` with its own directory and append-only file (see ``tests/faults.py``).
Eight clients write conversations, chat tasks and feedback through it for ``BEFORE`` s.
Then a connection of the test's holds the writes for ``LOCK_WAIT`` s (SQL: it locks
every conversation row; Redis: ``CLIENT PAUSE ... WRITE``), so that writes are waiting
inside the database, mid-transaction, and the server is stopped under them (PostgreSQL
``-m fast`` / ``-m immediate``, MariaDB and Redis SIGTERM / SIGKILL), stays down
``OUTAGE`` s, is started again, and the load goes on ``AFTER`` s more. Then:

* every response was 2xx, or 503 with ``Retry-After``; none was missing (no reset,
  no refused or dropped connection: the app's server stayed up throughout);
* no request took longer than ``TIMEOUT + SLACK`` s;
* a write was acknowledged within ``RECOVERY`` s of the database accepting
  connections again (Redis: answering ``PING``);
* every acknowledged write is there, read back through the API and in the tables
  (Redis: in the keys); every stored chat task is one whole version that was sent, no
  feedback or task outlives its conversation or task, and a DELETE that got no answer
  deleted all of the conversation or none of it.

The SQL servers need root (as CI runs); elsewhere without it, or without
``redis-server``, the suite skips, in CI (``CI`` set) it fails. Run alone:
``CI=true pytest tests/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults import (
    SERVER_TIMEOUT,
    AppServer,
    Call,
    Conversation,
    Database,
    Feedback,
    Ledger,
    Load,
    MariaDBServer,
    PostgresCluster,
    RedisServer,
    Task,
    bad_calls,
    feedback_body,
    first_true,
    log_summary,
    require,
    status_counts,
    tail,
    task_body,
    verify_api,
    verify_keys,
    verify_rows,
)

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

#: The service's per-call timeout (seconds), set in the app.
TIMEOUT = 3.0
#: How much longer than ``TIMEOUT`` any request may take.
SLACK = 2.0
#: Seconds from the database accepting connections to the first acknowledged write.
RECOVERY = 2.0
#: Seconds of load before the stop, of the outage, and after the restart.
BEFORE, OUTAGE, AFTER = 2.5, 2.5, 2.5
#: Seconds the conversations are locked before the stop, so that writes are waiting
#: inside the database (mid-transaction) when it goes away, not only by chance.
LOCK_WAIT = 0.5
#: At most this many lines of each kind of finding in a failure message.
SHOWN = 60


@pytest.fixture(scope="module")
def postgresql_server() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the module's own, running; dropped at the end."""
    available, reason = PostgresCluster.available()
    require(available, reason)
    PostgresCluster.drop_stale()
    cluster = PostgresCluster()
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.drop()


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A mariadbd of the module's own, running; killed and its datadir removed at the end."""
    available, reason = MariaDBServer.available()
    require(available, reason)
    MariaDBServer.drop_stale()
    server = MariaDBServer.make()
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own, running; killed and its directory removed."""
    available, reason = RedisServer.available()
    require(available, reason)
    RedisServer.drop_stale()
    server = RedisServer.make()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def database(request: pytest.FixtureRequest) -> Database:
    """The server of the scenario's kind (``postgresql``, ``mariadb`` or ``redis``)."""
    server: Database = request.getfixturevalue(f"{request.param}_server")
    return server


SCENARIOS = [
    pytest.param("postgresql", "fast", id="postgresql-stop-fast"),
    pytest.param("postgresql", "immediate", id="postgresql-stop-immediate"),
    pytest.param("mariadb", "TERM", id="mariadb-sigterm"),
    pytest.param("mariadb", "KILL", id="mariadb-sigkill"),
    pytest.param("redis", "TERM", id="redis-sigterm"),
    pytest.param("redis", "KILL", id="redis-sigkill"),
]


@dataclass
class Outage:
    """Monotonic times: the stop command issued and returned, the start command issued,
    the database accepting connections, the first write acknowledged after that."""

    down: float
    stopped: float
    restarted: float
    ready: float | None
    back: float | None

    def describe(self) -> str:
        def at(moment: float | None) -> str:
            return "never" if moment is None else f"t={moment - self.down:+.2f}s"

        return (
            f"stop issued t=0, returned {at(self.stopped)}; start issued {at(self.restarted)}; "
            f"accepting connections {at(self.ready)}; first write acknowledged {at(self.back)}"
        )


async def outage_under_load(database: Database, mode: str, load: Load, name: str) -> Outage:
    """Run ``load`` while ``database`` is stopped with ``mode`` and started again."""
    stop = asyncio.Event()
    workers = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(BEFORE)
        release = await database.hold_writes(name)
        try:
            await asyncio.sleep(LOCK_WAIT)
            down = time.monotonic()
            await asyncio.to_thread(database.stop, mode)
            stopped = time.monotonic()
        finally:
            release()
        await asyncio.sleep(OUTAGE)
        restarted = time.monotonic()
        deadline = restarted + SERVER_TIMEOUT
        ready_task = asyncio.create_task(first_true(lambda: database.accepts(name), deadline))
        back_task = asyncio.create_task(load.probe(deadline))
        try:
            await asyncio.to_thread(database.start)
            ready = await ready_task
            back = None
            with contextlib.suppress(TimeoutError):
                back = await asyncio.wait_for(back_task, RECOVERY + 10)
        finally:
            for task in (ready_task, back_task):
                task.cancel()
            await asyncio.gather(ready_task, back_task, return_exceptions=True)
        await asyncio.sleep(AFTER)
    finally:
        stop.set()
        await asyncio.wait_for(workers, load.client_timeout + 10)
    return Outage(down, stopped, restarted, ready, back)


def _section(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = lines[:SHOWN]
    more = [f"  ... and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []
    return [f"{title} ({len(lines)}):", *(f"  {line}" for line in shown), *more]


def _coverage(calls: list[Call], outage: Outage) -> list[str]:
    """The load must have written before, during and after the outage, or nothing was shown."""
    problems = []
    before = [c for c in calls if c.end < outage.down and c.status is not None and c.status < 300]
    during = [c for c in calls if outage.down <= c.start <= (outage.ready or outage.restarted)]
    after = [
        c
        for c in calls
        if outage.back is not None and c.start > outage.back and c.status and c.status < 300
    ]
    if not before:
        problems.append("no write was acknowledged before the outage")
    if not any(c.start < outage.down < c.end for c in calls):
        problems.append("no request was in flight when the database was stopped")
    if not during:
        problems.append("no request was made while the database was down")
    if not after:
        problems.append("no write was acknowledged after the recovery")
    return problems


@pytest.mark.parametrize(("database", "mode"), SCENARIOS, indirect=["database"])
async def test_database_outage_under_load(database: Database, mode: str, tmp_path: Path) -> None:
    name = f"fault_{secrets.token_hex(4)}"
    await database.create_database(name)
    app = AppServer(tmp_path, database.app_env(name), TIMEOUT)
    exit_code: int | None = 0
    try:
        await asyncio.to_thread(app.start)
        ledger = Ledger()
        load = Load(app.url, ledger)
        outage = await outage_under_load(database, mode, load, name)
        api_problems = await verify_api(load)
        stored_problems, checked = await database.stored_problems(name, ledger)
    finally:
        exit_code = await asyncio.to_thread(app.stop)
        if not database.running:
            await asyncio.to_thread(database.start)
        with contextlib.suppress(Exception):
            await database.drop_database(name)

    failures: list[str] = []
    limit = TIMEOUT + SLACK
    failures += _section(
        "bad responses (t relative to the stop command)",
        bad_calls(ledger.calls, outage.down, limit),
    )
    if outage.ready is None:
        failures.append(f"the database did not accept connections within {SERVER_TIMEOUT} s")
    elif outage.back is None:
        failures.append(f"no write was acknowledged within {RECOVERY + 10} s of the restart")
    elif outage.back - outage.ready > RECOVERY:
        failures.append(
            f"the service was back {outage.back - outage.ready:.2f} s after the database "
            f"accepted connections (limit {RECOVERY} s)"
        )
    failures += _coverage(ledger.calls, outage)
    failures += _section("unusable 2xx bodies", ledger.problems)
    failures += _section("read back through the API", api_problems)
    failures += _section(
        "read back from the keys" if database.kind == "redis" else "read back from the tables",
        stored_problems,
    )
    if exit_code != 0:
        failures.append(f"uvicorn did not exit cleanly on Ctrl-C (status {exit_code})")
    acked_tasks = sum(1 for task in ledger.tasks.values() if task.acked)
    header = [
        f"{database.kind} stopped with {mode}: {outage.describe()}",
        f"{len(ledger.calls)} requests ({status_counts(ledger.calls)}); acknowledged: "
        f"{len(ledger.conversations)} conversations, {acked_tasks} chat tasks, "
        f"{len(ledger.feedback)} feedback; {checked} checked",
    ]
    print("\n".join(header))  # shown with -rP, or -s
    if failures:
        pytest.fail(
            "\n".join(
                [
                    *header,
                    *failures,
                    "=== uvicorn",
                    log_summary(app.output()),
                    f"=== {database.kind} log (tail)",
                    tail(database.log(), 15),
                ]
            ),
            pytrace=False,
        )


# The suite's own checks, on made-up evidence (no servers needed)


def test_bad_calls_flags_every_kind_of_bad_response() -> None:
    calls = [
        Call("w0", "POST", "/sessions", 100.0, 100.1, 201),
        Call("w0", "POST", "/sessions", 100.2, 100.3, 503, retry_after="5"),
        Call("w1", "POST", "/feedback", 100.4, 100.5, 500, body="Internal Server Error"),
        Call("w2", "POST", "/sessions", 100.6, 100.7, 503),
        Call("w3", "DELETE", "/sessions/{sessionId}", 99.0, 99.1, error="ReadError: reset"),
        Call("w4", "POST", "/sessions", 101.0, 107.5, 201),
    ]
    found = bad_calls(calls, origin=100.0, limit=5.0)
    assert len(found) == 4, found
    assert "t=  +0.40s    w1 POST /feedback -> 500" in found[1], found
    assert "'Internal Server Error'" in found[1], found
    assert "503 without Retry-After" in found[2], found
    assert found[0].startswith("t=  -1.00s    w3 DELETE"), found
    assert "no response: ReadError: reset" in found[0], found
    assert "took 6.50 s (limit 5.0 s)" in found[3], found


def test_verify_rows_finds_lost_partial_and_orphan_rows() -> None:
    user = "fault-x-w0"
    ledger = Ledger()
    live = Conversation("s1", user, f"{user}-c1")
    lost = Conversation("s2", user, f"{user}-c2")
    deleted = Conversation("s3", user, f"{user}-c3", deleted="yes")
    for conversation in (live, lost, deleted):
        ledger.conversations[conversation.id] = conversation
        ledger.names.add(conversation.name)
    whole = Task(f"{live.name}-t0", live.id, user, sent=2, acked=2)
    stale = Task(f"{live.name}-t1", live.id, user, sent=2, acked=2)
    partial = Task(f"{live.name}-t2", live.id, user, sent=1)
    missing = Task(f"{live.name}-t3", live.id, user, sent=1, acked=1)
    orphan = Task(f"{deleted.name}-t0", deleted.id, user, sent=1, acked=1)
    for task in (whole, stale, partial, missing):
        live.tasks[task.id] = ledger.tasks[task.id] = task
    deleted.tasks[orphan.id] = ledger.tasks[orphan.id] = orphan

    def row(task: Task, version: int, *, cut: bool = False) -> dict[str, Any]:
        body = task_body(task.id, version)
        bubbles = body["messageBubbles"][:-1] if cut else body["messageBubbles"]
        return {
            "id": task.id,
            "session_id": task.session_id,
            "user_id": user,
            "user_message": body["userMessage"],
            "message_bubbles": json.dumps(bubbles),
            "task_metadata": json.dumps(body["taskMetadata"]),
        }

    rated = feedback_body(live.id, f"{live.name}-t9")
    problems = verify_rows(
        ledger,
        sessions=[{"id": live.id, "user_id": user, "name": live.name}],
        tasks=[row(whole, 2), row(stale, 1), row(partial, 1, cut=True), row(orphan, 1)],
        feedback=[
            {
                "id": "f1",
                "session_id": live.id,
                "task_id": rated["taskId"],
                "user_id": user,
                "rating": rated["feedbackType"],
                "comment": rated["feedbackText"],
            }
        ],
    )
    expected = [
        f"acknowledged conversation {lost.name} is missing",
        f"task {stale.id!r}: version 2 was acknowledged, 1 is stored",
        f"task {partial.id!r} v1: messageBubbles is not what was sent",
        f"acknowledged task {missing.id!r} (v1) is missing",
        f"orphan task {orphan.id!r}",
        "orphan feedback 'f1'",
    ]
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)
    assert not any(repr(whole.id) in problem for problem in problems), problems


def test_verify_keys_finds_strays_and_what_deleted_conversations_left() -> None:
    user = "fault-x-w0"
    prefix = b"fault_ab_agentsession:"
    ledger = Ledger()
    live = Conversation("sLive", user, f"{user}-c1")
    gone = Conversation("sGone", user, f"{user}-c2", deleted="yes")
    unanswered = Conversation("sMaybe", user, f"{user}-c3", deleted="maybe", read_back=404)
    kept = Conversation("sKept", user, f"{user}-c4", deleted="maybe", read_back=200)
    for conversation in (live, gone, unanswered, kept):
        ledger.conversations[conversation.id] = conversation
        task = Task(f"{conversation.name}-t1", conversation.id, user, sent=1, acked=1)
        conversation.tasks[task.id] = ledger.tasks[task.id] = task
    ledger.feedback.append(Feedback("fbGone", user, gone.id, f"{gone.name}-t1"))
    tag = prefix + b"{u:" + user.encode() + b"}"
    stored = {
        tag + b":S": b"0001sLive\n0002sKept",
        tag + b":t:sLive": f"{live.name}-t1={{...}}\n{live.name}-t12=...".encode(),
        tag + b":t:sKept": f"{kept.name}-t1={{...}}".encode(),
        tag + b":th": f"{gone.name}-t1=sGone".encode(),  # a task home left behind
        tag + b":F": b"0003fbGone",  # feedback left behind
        prefix + b"{i:sMaybe}": user.encode(),  # half of an unanswered DELETE
        b"other:key": b"x",
    }
    problems = verify_keys(ledger, stored, prefix)
    assert len(problems) == 3, problems
    assert "key b'other:key' is outside the app's prefix" in problems[0], problems
    assert f"deleted conversation {gone.name} left 3 trace(s)" in problems[1], problems
    assert f"'{gone.name}-t1' in the value of" in problems[1], problems
    assert f"deleted conversation {unanswered.name} left 1 trace(s)" in problems[2], problems
    assert "'sMaybe' in the name of b'fault_ab_agentsession:{i:sMaybe}'" in problems[2], problems


def test_log_summary_names_each_escaped_exception_and_its_cause() -> None:
    log = "\n".join(
        [
            "the session store is unavailable (save_task): postgresql+asyncpg://u@h/db: "
            "ConnectionRefusedError: [Errno 111] refused",
            "ERROR:    Exception in ASGI application",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            "asyncpg.exceptions.CannotConnectNowError: the database system is shutting down",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            '  File "y.py", line 2, in g',
            "sqlalchemy.exc.DBAPIError: (sqlalchemy.dialects.postgresql.asyncpg.Error) "
            "the database system is shutting down",
            "(Background on this error at: https://sqlalche.me/e/21/dbapi)",
            "WARNING:  something else",
        ]
    )
    summary = log_summary(log)
    assert (
        "1 x sqlalchemy.exc.DBAPIError: (sqlalchemy.dialects.postgresql.asyncpg.Error) the "
        "database system is shutting down <- caused by: asyncpg.exceptions."
        "CannotConnectNowError: the database system is shutting down"
    ) in summary, summary
    assert "1 x ConnectionRefusedError: [Errno 111] refused" in summary, summary
    assert "WARNING:  something else" in summary, summary


async def test_health_answers_503_while_postgresql_is_down(
    postgresql_server: PostgresCluster,
) -> None:
    """``GET /health``: 200 while the database answers, 503 in the API's error shape
    (with ``Retry-After``) within about a second of it stopping, 200 once it is back."""
    import httpx
    from fastapi import FastAPI

    from agentsession import SessionMiddleware, SessionService, sessions_router
    from agentsession.stores.sql import SqlStore

    await postgresql_server.execute("CREATE DATABASE health")
    service = SessionService(SqlStore(postgresql_server.url("health")))
    app = FastAPI()
    app.include_router(sessions_router(), prefix="/api")
    app.add_middleware(SessionMiddleware, secret_key="s" * 32, service=service)
    transport = httpx.ASGITransport(app=app)
    try:
        async with service, httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            up = await http.get("/api/health")
            assert (up.status_code, up.json()) == (200, {"status": "ok"})
            assert "set-cookie" not in up.headers
            postgresql_server.stop("immediate")
            started = time.monotonic()
            down = await http.get("/api/health")
            took = time.monotonic() - started
            assert down.status_code == 503, down.text
            assert down.json() == {
                "error": {
                    "code": "store_unavailable",
                    "message": "the session store is unavailable; retry later",
                }
            }
            assert down.headers["retry-after"] == "5"
            assert took < 1.5, took
            postgresql_server.start()
            back = await first_true(lambda: _healthy(http), time.monotonic() + 15)
            assert back is not None
    finally:
        if not postgresql_server.running:
            postgresql_server.start()
        await postgresql_server.execute("DROP DATABASE IF EXISTS health WITH (FORCE)")


async def _healthy(http: Any) -> bool:
    response = await http.get("/api/health")
    return bool(response.status_code == 200)
