"""Prometheus metrics, when ``prometheus_client`` is installed (``agentsession[metrics]``).

Nothing here imports ``prometheus_client`` at import time: it costs tens of
milliseconds, and the cookie layer imports this module. The first ``get_metrics()``
call imports it and returns the process's one ``Metrics``, or None when it is not
installed. ``SessionService`` asks when it is built and keeps the answer (its store calls
then cost one ``is None`` check without the extra); ``SessionMiddleware`` asks when it
writes a cookie (or when it is built, if the app already imported ``prometheus_client``),
so that building a cookie-only app costs what it did without the extra.

The metrics live in ``prometheus_client``'s default ``REGISTRY``, the one
``prometheus_client.make_asgi_app()`` serves. They are made once per process, so any
number of services and middlewares share them without a duplicate-registration error;
``Metrics(registry)`` makes a separate set (tests, a custom registry). All of them are
counters and histograms, which ``prometheus_client``'s multiprocess mode also supports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from agentsession.errors import AgentSessionError, StoreMisconfigured, StoreUnavailable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["OUTCOMES", "Metrics", "StoreCallMetrics", "get_metrics", "operation_name", "outcome_of"]

logger = logging.getLogger("agentsession")

#: The ``outcome`` label of ``agentsession_store_calls_total``: ``ok``; ``timeout`` (the
#: service's timeout ran out); ``unavailable`` (``StoreUnavailable``: down, refused);
#: ``misconfigured`` (``StoreMisconfigured``: no such database, user or grant);
#: ``rejected`` (the store answered with another of our errors, e.g. ``IdConflict``);
#: ``cancelled`` (the caller went away); ``error`` (anything else: a bug).
OUTCOMES: Final = (
    "ok",
    "timeout",
    "unavailable",
    "misconfigured",
    "rejected",
    "cancelled",
    "error",
)
#: Store calls take microseconds (memory) to seconds (a database under load).
STORE_CALL_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: A prune run takes milliseconds (nothing to delete) to an hour (a backlog, paced).
PRUNE_BUCKETS: Final = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
#: The ``table`` label of ``agentsession_prune_rows_total``, per retention rule.
RULE_TABLES: Final = {
    "chat_tasks": "chat_tasks",
    "feedback": "feedback",
    "expired_sessions": "sessions",
    "idle_sessions": "sessions",
}


class Metrics:
    """The package's metrics in one registry (``prometheus_client.REGISTRY`` by default).

    The labelled children the hot paths use (a store operation's, a cookie write's)
    are looked up once and kept, since ``labels()`` takes a lock and builds a key.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Make and register the metrics; raises ImportError without prometheus_client."""
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        self.store_calls = Counter(
            "agentsession_store_calls",
            "Session store calls made by the service, by operation and outcome.",
            ("operation", "outcome"),
            registry=registry,
        )
        self.store_call_seconds = Histogram(
            "agentsession_store_call_seconds",
            "Seconds a session store call took, by operation (failed calls included).",
            ("operation",),
            buckets=STORE_CALL_BUCKETS,
            registry=registry,
        )
        self.cookie_writes = Counter(
            "agentsession_cookie_writes",
            "Responses that carried the session: kind set or delete, transport cookie "
            "(Set-Cookie) or token (X-Session-Token).",
            ("kind", "transport"),
            registry=registry,
        )
        self.prune_runs = Counter(
            "agentsession_prune_runs",
            "Retention runs (dry runs not counted) by outcome: ok, stopped (shutdown or "
            "lease lost), skipped (another instance holds the lease), failed.",
            ("outcome",),
            registry=registry,
        )
        self.prune_rows = Counter(
            "agentsession_prune_rows",
            "Rows deleted by retention, by table (counted batch by batch).",
            ("table",),
            registry=registry,
        )
        self.prune_seconds = Histogram(
            "agentsession_prune_seconds",
            "Seconds a retention run took (skipped runs and dry runs not observed).",
            buckets=PRUNE_BUCKETS,
            registry=registry,
        )
        self.lease_holder_changes = Counter(
            "agentsession_lease_holder_changes",
            "Changes of this process's hold on a lease: acquired, released or lost.",
            ("lease", "change"),
            registry=registry,
        )
        self._calls: dict[str, StoreCallMetrics] = {}
        self._writes = {
            (deleted, token): self.cookie_writes.labels(
                "delete" if deleted else "set", "token" if token else "cookie"
            )
            for deleted in (False, True)
            for token in (False, True)
        }

    def store_call(self, operation: str) -> StoreCallMetrics:
        """The counters and histogram of one store operation (made on first use)."""
        found = self._calls.get(operation)
        if found is None:
            found = self._calls[operation] = StoreCallMetrics(self, operation)
        return found

    def cookie_write(self, *, deleted: bool, token: bool) -> None:
        """Count one response that carried the session (Set-Cookie or the token header)."""
        self._writes[deleted, token].inc()


class StoreCallMetrics:
    """One store operation's latency histogram and per-outcome counters, pre-bound."""

    __slots__ = ("_metrics", "_operation", "_outcomes", "seconds")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self.seconds = metrics.store_call_seconds.labels(operation)
        self._outcomes = {"ok": metrics.store_calls.labels(operation, "ok")}

    def observe(self, outcome: str, seconds: float) -> None:
        """Record one call that ended with ``outcome`` after ``seconds``."""
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._metrics.store_calls.labels(self._operation, outcome)
            self._outcomes[outcome] = counter
        counter.inc()
        self.seconds.observe(seconds)


def operation_name(operation: Awaitable[Any]) -> str:
    """The store method an awaitable came from (a coroutine's ``__name__``)."""
    name = getattr(operation, "__name__", None)
    return name if isinstance(name, str) else "unknown"


def outcome_of(error: BaseException) -> str:
    """The ``outcome`` label of a store call that raised ``error`` (see ``OUTCOMES``)."""
    if isinstance(error, StoreMisconfigured):
        return "misconfigured"
    if isinstance(error, StoreUnavailable):
        return "unavailable"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, AgentSessionError):
        return "rejected"
    if not isinstance(error, Exception):
        return "cancelled"
    return "error"


_lock = threading.Lock()
_default: Metrics | None = None
_resolved = False


def get_metrics() -> Metrics | None:
    """The process's metrics in the default registry; None without prometheus_client.

    The first call imports ``prometheus_client`` (when installed) and registers the
    metrics; later calls return the same object. A registration that fails (names
    already taken in ``REGISTRY`` by someone else) is logged once and leaves metrics
    off, rather than failing the app.
    """
    global _default, _resolved
    if _resolved:
        return _default
    with _lock:
        if not _resolved:
            try:
                _default = Metrics()
            except ImportError:
                _default = None
            except ValueError as error:  # a duplicate name in REGISTRY
                logger.warning("agentsession metrics are off: %s", error)
                _default = None
            _resolved = True
    return _default
