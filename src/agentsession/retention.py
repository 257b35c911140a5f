"""Retention: ``prune()`` deletes old rows; ``RetentionScheduler`` runs it.

A run deletes, in this order: chat tasks not updated for ``task_retention_days``,
feedback older than ``feedback_retention_days``, conversations past their
``expires_at``, and conversations idle for ``session_retention_days`` (0 days: that
rule is off). It knows no backend: it calls the store's retention methods (the Store
contract in ``stores.base``), one batch of at most ``batch_size`` rows at a time,
resting between batches so that the app's own statements keep most of the database,
and holds the store's ``retention`` lease so that one instance at a time prunes,
renewing it as it goes and letting it go at the end. How a batch is deleted is the
store's business (the SQL one: ``stores.sql.prune``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import sniffio

from agentsession.common import DAY_MS, now_ms
from agentsession.config import AgentSessionConfig, RetentionConfig
from agentsession.errors import AgentSessionError, ConfigError
from agentsession.metrics import RULE_TABLES
from agentsession.service import SessionService
from agentsession.stores.base import RULES, Cutoffs, Holder

__all__ = ["DAY_MS", "LEASE_NAME", "PruneReport", "RetentionScheduler", "prune"]

logger = logging.getLogger("agentsession.retention")
T = TypeVar("T")

#: The ``agentsession_leases`` row that one pruning instance at a time holds.
LEASE_NAME = "retention"
#: Seconds a lease lasts unless renewed: how long a crashed holder blocks the others.
LEASE_TTL = 300.0
#: Seconds one batch statement may take before the run fails with ``StoreUnavailable``.
BATCH_TIMEOUT = 60.0
#: The lease is renewed before the batch that comes once 1/RENEW_SHARE of it has passed.
RENEW_SHARE = 4
#: After each batch a run rests this many times as long as the batch took, so that it
#: takes at most a quarter of the database's time from the app.
BATCH_PAUSE = 3.0
#: Seconds a batch should take: the next batch is sized to take that long at the pace
#: of the last one (``next_batch_size``), so that the app's statements never wait long
#: behind one.
BATCH_TIME = 0.02
MIN_BATCH = 100


def next_batch_size(size: int, elapsed: float, smallest: int, largest: int) -> int:
    """The size of the batch after one of ``size`` rows that took ``elapsed`` seconds.

    Sized to take ``BATCH_TIME`` at that pace, at most twice as big as the last, within
    ``[smallest, largest]``. Proportional, not halving and doubling: one batch slowed by
    a passing stall (a checkpoint, the app's burst) shrinks the next in proportion, and
    the size comes back as soon as the batches are fast again.
    """
    aimed = size * 2 if elapsed <= 0 else int(size * BATCH_TIME / elapsed)
    return max(smallest, min(largest, size * 2, aimed))


#: ``on_batch(rule, rows)``: called after each batch (``rule`` is a ``RULES`` name).
BatchCallback = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one run deleted (or, with ``dry_run``, would delete), rule by rule.

    A conversation's tasks and feedback go with it and are not counted again.
    ``complete`` is False when the run stopped early (shutdown, or the lease was
    lost); ``skipped`` says why nothing ran (another instance holds the lease).
    """

    chat_tasks: int = 0
    feedback: int = 0
    expired_sessions: int = 0
    idle_sessions: int = 0
    duration: float = 0.0
    batches: int = 0
    longest_batch: float = 0.0
    dry_run: bool = False
    complete: bool = True
    skipped: str | None = None

    @property
    def sessions(self) -> int:
        """Conversations deleted: expired plus idle."""
        return self.expired_sessions + self.idle_sessions

    @property
    def counts(self) -> dict[str, int]:
        """Rows per table: ``{"chat_tasks": ..., "feedback": ..., "sessions": ...}``."""
        return {"chat_tasks": self.chat_tasks, "feedback": self.feedback, "sessions": self.sessions}

    @property
    def total(self) -> int:
        """Rows deleted by all rules together."""
        return self.chat_tasks + self.feedback + self.sessions

    def summary(self) -> str:
        """One line for the log: counts, duration, batches."""
        if self.skipped is not None:
            return f"retention run skipped: {self.skipped}"
        verb = "would delete" if self.dry_run else "deleted"
        line = (
            f"retention{' dry run' if self.dry_run else ''}: {verb} {self.chat_tasks} chat "
            f"tasks, {self.feedback} feedback, {self.expired_sessions} expired and "
            f"{self.idle_sessions} idle conversations in {self.duration:.2f} s"
        )
        if self.batches:
            line += f" ({self.batches} batches, longest {self.longest_batch * 1000:.0f} ms)"
        return line if self.complete else line + "; stopped before the end"

    def fields(self) -> dict[str, Any]:
        """The report as flat log fields (``extra=``): what a JSON log formatter shows.

        ``rows_<rule>`` per retention rule (``RULES``) and ``rows_total``; times in
        seconds; ``skipped`` is the reason or None.
        """
        rows = {f"rows_{rule}": getattr(self, rule) for rule in RULES}  # RULES: field names
        return {
            "agentsession_event": "prune_run",
            "dry_run": self.dry_run,
            "complete": self.complete,
            "skipped": self.skipped,
            **rows,
            "rows_total": self.total,
            "duration_s": round(self.duration, 3),
            "batches": self.batches,
            "longest_batch_s": round(self.longest_batch, 3),
        }


async def prune(
    target: AgentSessionConfig | SessionService,
    *,
    dry_run: bool = False,
    retention: RetentionConfig | None = None,
    now: int | None = None,
    on_batch: BatchCallback | None = None,
    pause: float = BATCH_PAUSE,
    lease_ttl: float = LEASE_TTL,
) -> PruneReport:
    """Run the retention rules once and report what was deleted.

    ``target``: a configuration (its store is opened, migrated and closed here; its
    ``data_retention`` applies) or a ``SessionService`` (``retention`` applies, else
    ``data_retention`` from the environment and the defaults). ``now`` (epoch ms) is
    the instant the cutoffs count back from. ``dry_run`` counts without deleting.
    ``pause``: after each batch, rest this many times as long as it took (0: none).
    Raises ``StoreUnavailable`` when the database fails.
    """
    if isinstance(target, AgentSessionConfig):
        async with SessionService.from_config(target) as service:
            return await prune(
                service,
                dry_run=dry_run,
                retention=retention or target.data_retention,
                now=now,
                on_batch=on_batch,
                pause=pause,
                lease_ttl=lease_ttl,
            )
    if retention is None:
        retention = AgentSessionConfig.from_mapping({}).data_retention
    await target.start()  # a no-op when started; else migrates, as the service's calls do
    run = _Run(
        target,
        retention,
        dry_run=dry_run,
        now=now,
        on_batch=on_batch,
        pause=pause,
        lease_ttl=lease_ttl,
    )
    return await run.execute()


@dataclass(eq=False)
class _Run:
    """One run of ``prune`` over any ``Store``; its counters are readable while it runs."""

    service: SessionService
    retention: RetentionConfig
    dry_run: bool = False
    now: int | None = None
    on_batch: BatchCallback | None = None
    pause: float = BATCH_PAUSE
    lease_ttl: float = LEASE_TTL
    owner: str = field(default_factory=lambda: new_owner())
    stop: anyio.Event | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    batches: int = 0
    longest: float = 0.0
    complete: bool = True
    started: float = field(default_factory=time.monotonic)
    renew_at: int = 0

    def report(self, *, skipped: str | None = None) -> PruneReport:
        return PruneReport(
            **self.counts,
            duration=time.monotonic() - self.started,
            batches=self.batches,
            longest_batch=self.longest,
            dry_run=self.dry_run,
            complete=self.complete,
            skipped=skipped,
        )

    async def execute(self) -> PruneReport:
        self.started = time.monotonic()
        cut = Cutoffs.from_retention(self.retention, now_ms() if self.now is None else self.now)
        try:
            report = await self._count(cut) if self.dry_run else await self._delete(cut)
        except BaseException as error:
            self._count_run("failed" if isinstance(error, Exception) else "stopped")
            raise
        logger.info("%s", report.summary(), extra=report.fields())
        if report.skipped is not None:
            self._count_run("skipped")
        else:
            self._count_run("ok" if report.complete else "stopped")
        return report

    def _count_run(self, outcome: str) -> None:
        """``agentsession_prune_runs_total`` and ``_seconds`` (dry runs are not counted)."""
        metrics = self.service.metrics
        if metrics is None or self.dry_run:
            return
        metrics.prune_runs.labels(outcome).inc()
        if outcome != "skipped":
            metrics.prune_seconds.observe(time.monotonic() - self.started)

    def _lease_changed(self, change: str) -> None:
        """``agentsession_lease_holder_changes_total``: acquired, released or lost."""
        metrics = self.service.metrics
        if metrics is not None:
            metrics.lease_holder_changes.labels(LEASE_NAME, change).inc()

    async def _count(self, cut: Cutoffs) -> PruneReport:
        store = self.service.store
        for rule in RULES:
            if cut.enabled(rule):
                self.counts[rule] = await self._call(store.count_prunable(rule, cut))
        return self.report()

    async def _delete(self, cut: Cutoffs) -> PruneReport:
        if not await self._take_lease():
            return self.report(skipped=_busy(await self._holder()))
        try:
            logger.debug("retention run started by %s", self.owner)
            for rule in RULES:
                if cut.enabled(rule) and not await self._rule(rule, cut):
                    self.complete = False
                    break
            return self.report()
        finally:
            with contextlib.suppress(Exception):
                store = self.service.store
                await self._call(store.release_lease(LEASE_NAME, self.owner, now_ms()))
                if self.renew_at:
                    self._lease_changed("released")

    async def _rule(self, rule: str, cut: Cutoffs) -> bool:
        """Delete the rule's rows batch by batch; False if stopped or the lease was lost."""
        store = self.service.store
        largest = self.retention.batch_size
        smallest = min(largest, MIN_BATCH)
        size = largest
        position: object | None = None
        while True:
            if self.stop is not None and self.stop.is_set():
                return False
            if not await self._keep_lease():
                holder = await self._holder()
                logger.warning(
                    "retention run stopped: the lease was lost (%s)",
                    _busy(holder),
                    extra={
                        "agentsession_event": "prune_lease_lost",
                        "lease": LEASE_NAME,
                        "owner": self.owner,
                        "lease_holder": None if holder is None else holder.owner,
                    },
                )
                return False
            started = time.monotonic()
            deleted, position = await self._call(store.prune_batch(rule, cut, position, size))
            elapsed = time.monotonic() - started
            self.batches += 1
            self.longest = max(self.longest, elapsed)
            self.counts[rule] += deleted
            metrics = self.service.metrics
            if metrics is not None and deleted:
                metrics.prune_rows.labels(RULE_TABLES[rule]).inc(deleted)
            if self.on_batch is not None:
                self.on_batch(rule, deleted)
            if position is None:
                return True
            size = next_batch_size(size, elapsed, smallest, largest)
            rest = self.pause * elapsed
            if rest > 0 and await _wait(self.stop, rest):
                return False

    async def _take_lease(self) -> bool:
        """Take or renew the lease; False if another instance holds it."""
        now = now_ms()
        until = now + int(self.lease_ttl * 1000)
        store = self.service.store
        held = self.renew_at != 0
        taken = await self._call(store.take_lease(LEASE_NAME, self.owner, until, now))
        self.renew_at = now + int(self.lease_ttl * 1000 / RENEW_SHARE) if taken else 0
        if taken != held:
            self._lease_changed("acquired" if taken else "lost")
        return taken

    async def _keep_lease(self) -> bool:
        """Before a batch: renew the lease once a share of it has passed (wall clock, so a
        suspended process notices that it may have lost it)."""
        return now_ms() < self.renew_at or await self._take_lease()

    async def _holder(self) -> Holder | None:
        return await self._call(self.service.store.lease_holder(LEASE_NAME))

    async def _call(self, operation: Awaitable[T]) -> T:
        """One store call through the service (counted, outages logged), with a longer
        timeout: a batch may take longer than the app's calls."""
        return await self.service._call(operation, timeout=max(self.service.timeout, BATCH_TIMEOUT))


def new_owner() -> str:
    """A lease owner name unique to this run: host, process id, random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _busy(holder: Holder | None) -> str:
    if holder is None:
        return "another instance holds the retention lease"
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder.expires_at / 1000))
    return f"the retention lease is held by {holder.owner} until {until} UTC"


async def _wait(event: anyio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``event`` is set; whether it was set."""
    if event is None:
        await anyio.sleep(seconds)
        return False
    with anyio.move_on_after(seconds):
        await event.wait()
    return event.is_set()


class RetentionScheduler:
    """Runs ``prune`` soon after ``start()`` (random jitter), then every interval.

    ``start()`` and ``stop()`` are the middleware's lifespan hooks. A failed run is
    logged at WARNING and the next one comes an interval later; ``stop()`` returns
    within a second even in the middle of a run (batches already done stay deleted).
    """

    def __init__(
        self,
        service: SessionService,
        retention: RetentionConfig | AgentSessionConfig,
        *,
        startup_jitter: float = 10.0,
        lease_ttl: float = LEASE_TTL,
        pause: float = BATCH_PAUSE,
    ) -> None:
        """``startup_jitter``: the first run comes after a random 0 to this many seconds;
        ``lease_ttl`` and ``pause`` as for ``prune``."""
        #: Seconds ``stop()`` may take, the current batch included.
        self.stop_timeout = 0.8
        if isinstance(retention, AgentSessionConfig):
            retention = retention.data_retention
        self.service = service
        self.retention = retention
        self.interval = retention.cleanup_interval_hours * 3600
        self.startup_jitter = startup_jitter
        self.lease_ttl = lease_ttl
        self.pause = pause
        #: Completed runs (skipped and failed ones included) and the last report.
        self.runs = 0
        self.last_report: PruneReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None

    @property
    def running(self) -> bool:
        """Whether the scheduler's task is alive."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the service if need be, then the background task (no-op if running)."""
        if self.running:
            return
        await self.service.start()
        library = sniffio.current_async_library()
        if library != "asyncio":
            raise ConfigError(
                f"the retention scheduler runs as an asyncio task, but this app runs on "
                f"{library}: run it on asyncio, or set data_retention.enabled to false and "
                "run `agentsession prune` from cron"
            )
        self._stop = anyio.Event()
        self._task = asyncio.create_task(self._loop(), name="agentsession-retention")

    async def stop(self) -> None:
        """Stop the task: between batches if it can, else cancel it; within ``stop_timeout``."""
        timeout = self.stop_timeout
        task, self._task = self._task, None
        if task is None or task.done():
            return
        assert self._stop is not None
        self._stop.set()
        deadline = asyncio.get_running_loop().time() + timeout
        done, _ = await asyncio.wait({task}, timeout=timeout * 0.6)
        if not done:
            task.cancel()
            remaining = max(0.01, deadline - asyncio.get_running_loop().time())
            await asyncio.wait({task}, timeout=remaining)
        if not task.done():
            logger.warning("the retention task did not stop within %.1f s", timeout)

    async def run_once(self) -> PruneReport | None:
        """Run ``prune`` now; a failure is logged at WARNING and gives None."""
        run = _Run(
            self.service,
            self.retention,
            pause=self.pause,
            lease_ttl=self.lease_ttl,
            stop=self._stop,
        )
        self.last_report = None
        try:
            report = await run.execute()
        except Exception as error:
            logger.warning(
                "retention run failed, next try in %s: %s",
                _hours(self.interval),
                _cause(error),
                exc_info=not isinstance(error, AgentSessionError),
                extra={
                    "agentsession_event": "prune_failed",
                    "error_type": type(error).__name__,
                    "next_run_s": self.interval,
                },
            )
            return None
        finally:
            self.runs += 1
        self.last_report = report
        return report

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = random.uniform(0, self.startup_jitter)
        while not await _wait(self._stop, delay):
            if not self.service.started:
                # Closed without stop() (an app that never got a lifespan shutdown).
                logger.debug("retention scheduler stops: its service was closed")
                return
            started = loop.time()
            await self.run_once()
            delay = max(0.0, started + self.interval - loop.time())


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def _cause(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
