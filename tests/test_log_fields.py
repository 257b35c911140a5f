"""Log records carry their facts as fields (``extra=``), so a JSON formatter shows keys.

A handler with a JSON formatter of the usual kind (every record attribute that is not
one of ``logging.LogRecord``'s own becomes a key, as python-json-logger does) captures
the package's records: a prune run, its failure and a lost lease, a store outage, and
a migration, applied or failed. The human message stays as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentsession import StoreMisconfigured, StoreUnavailable
from agentsession.common import now_ms
from agentsession.retention import RetentionScheduler, prune
from agentsession.service import SessionService
from agentsession.stores.memory import MemoryStore
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql import migrate as migrate_module
from agentsession.stores.sql.migrate import head_revision, migrate
from tests.test_metrics import RETENTION, BrokenPruneStore, FailingStore, LeaseLosingStore
from tests.test_retention import NOW, seed

pytestmark = pytest.mark.anyio

#: The attributes every LogRecord has; anything else came from ``extra=``.
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """The message plus every extra attribute, as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in STANDARD}
        return json.dumps({"message": record.getMessage(), **fields}, default=str)


class Captured(logging.Handler):
    """Keeps every record of the ``agentsession`` loggers, formatted as JSON."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("agentsession_event") == event]


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("agentsession")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_prune_run_logs_its_counts_as_fields(captured: Captured) -> None:
    async with SessionService(MemoryStore()) as service:
        await seed(service)
        report = await prune(service, retention=RETENTION, now=NOW, pause=0)
    [line] = captured.events("prune_run")
    assert line["message"] == report.summary()
    assert line == {
        "message": report.summary(),
        "agentsession_event": "prune_run",
        "dry_run": False,
        "complete": True,
        "skipped": None,
        "rows_chat_tasks": 6,
        "rows_feedback": 2,
        "rows_expired_sessions": 2,
        "rows_idle_sessions": 2,
        "rows_total": 12,
        "duration_s": round(report.duration, 3),
        "batches": report.batches,
        "longest_batch_s": round(report.longest_batch, 3),
    }


async def test_a_dry_run_and_a_skipped_run_say_so(captured: Captured) -> None:
    async with SessionService(MemoryStore()) as service:
        await seed(service)
        await prune(service, retention=RETENTION, now=NOW, pause=0, dry_run=True)
        now = now_ms()  # not NOW: that is as old as the test session
        await service.store.take_lease("retention", "other:1:ab", now + 60_000, now)
        await prune(service, retention=RETENTION, pause=0)
    dry, skipped = captured.events("prune_run")
    assert (dry["dry_run"], dry["rows_total"], dry["skipped"]) == (True, 12, None)
    assert skipped["dry_run"] is False
    assert skipped["skipped"].startswith("the retention lease is held by other:1:ab")


async def test_a_failed_run_and_a_lost_lease_are_fields_too(captured: Captured) -> None:
    async with SessionService(BrokenPruneStore()) as service:
        scheduler = RetentionScheduler(service, RETENTION)
        assert await scheduler.run_once() is None
    [failed] = captured.events("prune_failed")
    assert failed["error_type"] == "StoreUnavailable"
    assert failed["next_run_s"] == scheduler.interval
    assert failed["message"].startswith("retention run failed, next try in")

    async with SessionService(LeaseLosingStore()) as service:
        await prune(service, retention=RETENTION, pause=0, lease_ttl=0.001)
    [lost] = captured.events("prune_lease_lost")
    assert lost["lease"] == "retention"
    assert lost["owner"].count(":") == 2
    assert lost["lease_holder"] is None  # the fake store names no holder


@pytest.mark.parametrize(
    ("failure", "event", "level", "outcome"),
    [
        (StoreUnavailable("connection refused"), "store_unavailable", "WARNING", "unavailable"),
        (StoreMisconfigured("no such database"), "store_misconfigured", "ERROR", "misconfigured"),
        (None, "store_unavailable", "WARNING", "timeout"),  # slow: the service's timeout
    ],
    ids=["unavailable", "misconfigured", "timeout"],
)
async def test_a_store_outage_logs_the_operation_and_the_store(
    captured: Captured,
    caplog: pytest.LogCaptureFixture,
    failure: BaseException | None,
    event: str,
    level: str,
    outcome: str,
) -> None:
    store = FailingStore()
    store.failure = failure
    store.delay = 0.0 if failure is not None else 1.0
    async with SessionService(store, timeout=0.05) as service:
        with pytest.raises(StoreUnavailable):
            await service.get_session("u", "s")
    [line] = captured.events(event)
    error = "StoreUnavailable" if failure is None else type(failure).__name__
    assert {k: v for k, v in line.items() if k != "message"} == {
        "agentsession_event": event,
        "operation": "get_session",
        "outcome": outcome,
        "store": "FailingStore",
        "error_type": error,
        "timeout_s": 0.05,
    }
    assert line["message"].startswith("the session store is ")
    assert [r.levelname for r in caplog.records if r.name == "agentsession.service"] == [level]


async def test_a_migration_logs_its_revisions_and_database(
    captured: Captured, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    store = SqlStore(url)
    try:
        assert await migrate(store.engine) is True
        assert await migrate(store.engine) is False  # at head: no record
    finally:
        await store.close()
    [line] = captured.events("migration")
    assert line["outcome"] == "ok"
    assert (line["from_revision"], line["to_revision"]) == (None, head_revision())
    database = "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")  # the engine's URL
    assert line["database"] == database
    assert (line["schema"], line["version_table"]) == (None, "agentsession_alembic_version")
    assert isinstance(line["duration_s"], float)
    where = f"{database} (agentsession_alembic_version)"
    assert line["message"].startswith(f"migrated {where} from an empty schema to ")


async def test_a_failed_migration_logs_the_error_type(
    captured: Captured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> bool:
        raise RuntimeError("a revision failed")

    monkeypatch.setattr(migrate_module, "_migrate_sqlite", broken)
    store = SqlStore(f"sqlite:///{tmp_path / 'sessions.db'}")
    try:
        with pytest.raises(RuntimeError, match="a revision failed"):
            await migrate(store.engine)
    finally:
        await store.close()
    [line] = captured.events("migration")
    assert (line["outcome"], line["error_type"]) == ("failed", "RuntimeError")
    assert line["from_revision"] is None
    assert line["message"].endswith(f"failed after {line['duration_s']:.2f} s: a revision failed")
