"""The ``agentsession`` command: ``migrate``, ``prune [--dry-run]``, ``stats``.

The configuration comes from ``--config FILE`` (before or after the command, with
environment overrides) or from the environment alone. ``--version`` prints the
version; called bare, the command prints its help. Exit status: 0 done; 1 the
database is unavailable, not migrated, or busy with another instance's prune; 2 bad
configuration (the message names the key), a database that refuses the URL (no such
database, user or privilege), or a memory store, which has nothing to work on outside
the app. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

from agentsession import __version__
from agentsession.cli_userdata import COMMANDS as USER_COMMANDS
from agentsession.cli_userdata import add_commands as add_user_commands
from agentsession.common import now_ms
from agentsession.config import AgentSessionConfig, load_config
from agentsession.errors import ConfigError, StoreUnavailable
from agentsession.retention import BATCH_PAUSE, DAY_MS, LEASE_NAME, PruneReport, prune
from agentsession.service import SessionService
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.engine import mask_url
from agentsession.stores.sql.errors import translate
from agentsession.stores.sql.migrate import current_revision, head_revision, migrate
from agentsession.stores.sql.stats import database_stats

__all__ = ["main"]


class _Failed(Exception):
    """Stops a command with an exit status and a message for stderr."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``agentsession``: say what it can do
        parser.print_help()
        return 0
    try:
        config = load_config(args.config)
        kind = config.session_service.type
        if kind == "memory":
            raise _Failed(
                2,
                f"{args.command} works on a database, but session_service.type is "
                "'memory' (its data lives inside each app process): set "
                "SESSION_DATABASE_URL or session_service.database_url",
            )
        if kind == "redis" and args.command not in ("prune", *USER_COMMANDS):
            raise _Failed(
                2,
                f"{args.command} works on a SQL database; Redis keeps no schema to migrate "
                "and no tables to count (prune works on Redis too)",
            )
        if kind == "dynamodb" and args.command == "stats":
            raise _Failed(
                2,
                "stats works on a SQL database; for a DynamoDB table see its CloudWatch "
                "metrics (migrate, prune and the user commands work on DynamoDB too)",
            )
        commands = {"migrate": _migrate, "prune": _prune, "stats": _stats, **USER_COMMANDS}
        if kind == "dynamodb":
            commands["migrate"] = _migrate_dynamodb
        command = commands[args.command]
        return asyncio.run(_settled(command(config, args)))
    except ConfigError as error:
        return _exit(2, f"configuration error: {error}")
    except StoreUnavailable as error:
        return _exit(1, f"the database is unavailable: {error}")
    except _Failed as failed:
        return _exit(failed.status, str(failed))
    except KeyboardInterrupt:
        return _exit(130, "interrupted (batches already deleted stay deleted)")


async def _settled(command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``, then let aiosqlite's worker threads finish while the loop runs.

    aiosqlite (0.22) stops the thread of a connection that failed to open without
    waiting for it; if ``asyncio.run`` closed the loop first, that thread would print an
    "Event loop is closed" traceback under the one-line error message.
    """
    try:
        return await command
    finally:
        for thread in threading.enumerate():
            if thread.name.endswith("(_connection_worker_thread)"):
                await asyncio.to_thread(thread.join, 1.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentsession",
        description="Maintain an agentsession database: migrations, retention, statistics.",
    )
    parser.add_argument("--version", action="version", version=f"agentsession {__version__}")
    _add_config(parser, default=None)
    # Every subcommand takes --config too, so it may come before or after the command;
    # SUPPRESS keeps a value given before the command when none follows it.
    common = argparse.ArgumentParser(add_help=False)
    _add_config(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "migrate", parents=[common], help="bring the database schema to the newest revision"
    )
    pruning = commands.add_parser(
        "prune",
        parents=[common],
        help="delete the rows data_retention says are old, now, and report counts",
    )
    pruning.add_argument("--dry-run", action="store_true", help="count only; delete nothing")
    pruning.add_argument(
        "--pause",
        type=_ratio,
        default=BATCH_PAUSE,
        metavar="RATIO",
        help="after each batch, rest RATIO times as long as it took, so that the app keeps "
        f"the database (default {BATCH_PAUSE:g}; 0 runs flat out)",
    )
    pruning.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    commands.add_parser(
        "stats", parents=[common], help="row counts and the oldest row of each table"
    )
    add_user_commands(commands, common)
    return parser


def _add_config(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """``--config FILE`` on ``parser``."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="YAML configuration file (environment overrides apply); "
        "default: the environment alone (SESSION_DATABASE_URL, DATA_RETENTION_*)",
    )


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def _exit(status: int, message: str) -> int:
    print(f"agentsession: {message}", file=sys.stderr)
    return status


def _store(config: AgentSessionConfig) -> SqlStore:
    """The configured SQL store (its table prefix and schema too), not started; one connection."""
    service = config.session_service
    return SqlStore(
        _url(config),
        pool_size=1,
        table_prefix=service.table_prefix,
        schema=service.schema,
        search_language=service.search_language,
    )


def _url(config: AgentSessionConfig) -> str:
    url = config.session_service.database_url
    assert url is not None  # the configuration checked it for type sql
    return url


@asynccontextmanager
async def _database_errors(url: str) -> AsyncIterator[None]:
    """Classify errors of queries run on a bare engine, as the store and migrations do.

    So that a database failing there ends in the one-line message, not a traceback.
    """
    try:
        yield
    except Exception as error:
        translated = translate(error, url)
        if translated is None:
            raise
        raise translated from error


# migrate


async def _migrate(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    url = _url(config)
    store = _store(config)
    engine = store.engine
    try:
        before = await current_revision(engine, store.tables)
        await store.check_language()
        applied = await migrate(engine, store.tables, search_language=store.search_language)
    finally:
        await engine.dispose()
    head = await asyncio.to_thread(head_revision)
    if applied:
        print(f"{mask_url(url)}: migrated from {before or 'an empty database'} to {head}")
    else:
        print(f"{mask_url(url)}: already at {head}")
    return 0


async def _migrate_dynamodb(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    """Create the DynamoDB table (on-demand, TTL on) when it is missing; never change one."""
    from agentsession.stores.dynamodb import DynamoDBStore

    store = SessionService.from_config(config).store
    assert isinstance(store, DynamoDBStore)
    try:
        done = await store.migrate()
    finally:
        await store.close()
    print("\n".join(done) if done else f"{store!r}: the table is there, nothing to do")
    return 0


async def _check_migrated(store: SqlStore, url: str) -> None:
    """Refuse to work on a database the migrations have not reached (and change nothing);
    ``url`` is the configured one, as messages show it."""
    revision = await current_revision(store.engine, store.tables)
    head = await asyncio.to_thread(head_revision)
    if revision != head:
        raise _Failed(
            1,
            f"{mask_url(url)} is at revision {revision or '(none)'}, not {head}: "
            "run `agentsession migrate` first (or start the app once)",
        )


# prune


async def _prune(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    service = SessionService.from_config(config)
    if isinstance(service.store, SqlStore):
        try:
            await _check_migrated(service.store, _url(config))
        except BaseException:
            await service.close()
            raise
    retention = config.data_retention
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    async with service:
        bar: _ProgressBar | None = None
        if show and not args.dry_run:
            planned = await prune(service, retention=retention, dry_run=True)
            if planned.total:
                bar = _ProgressBar(planned.total, sys.stderr)
        try:
            report = await prune(
                service,
                retention=retention,
                dry_run=args.dry_run,
                on_batch=None if bar is None else bar.advance,
                pause=args.pause,
            )
        finally:
            if bar is not None:
                bar.close()
    if report.skipped is not None:
        raise _Failed(1, f"{report.skipped}; nothing was deleted, try again later")
    print(_prune_table(report))
    return 0


def _prune_table(report: PruneReport) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    rows = [
        ("chat_tasks", report.chat_tasks),
        ("feedback", report.feedback),
        ("sessions (expired)", report.expired_sessions),
        ("sessions (idle)", report.idle_sessions),
    ]
    lines = [f"{'table':<20} {verb:>14}"]
    lines += [f"{name:<20} {count:>14,}" for name, count in rows]
    summary = f"{verb} {report.total:,} rows in {report.duration:.2f} s"
    if report.batches:
        summary += f" ({report.batches:,} batches, longest {report.longest_batch * 1000:.0f} ms)"
    lines.append(summary)
    lines.append("(a conversation's tasks and feedback go with it and are not counted again)")
    return "\n".join(lines)


class _ProgressBar:
    """A one-line bar on a terminal: rows deleted of those counted before the run."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self.drawn = 0.0
        self._draw()

    def advance(self, rule: str, rows: int) -> None:
        self.done += rows
        if time.monotonic() - self.drawn >= 0.1:
            self._draw()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        self.drawn = time.monotonic()
        share = min(1.0, self.done / self.total)
        filled = int(share * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        elapsed = self.drawn - self.started
        self.stream.write(
            f"\rpruning [{bar}] {share:4.0%} {self.done:,}/{self.total:,} rows {elapsed:.1f} s"
        )
        self.stream.flush()


# stats


async def _stats(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    url = _url(config)
    store = _store(config)
    engine = store.engine
    now = now_ms()
    try:
        await _check_migrated(store, url)
        async with _database_errors(url):
            tables, expired, lease = await database_stats(engine, now, LEASE_NAME, store.tables)
    finally:
        await engine.dispose()
    print(f"database: {mask_url(url)}")
    print(f"{'table':<12} {'rows':>12}  {'oldest (UTC)':<20} {'age':>10}  by")
    for row in tables:
        when = "-" if row.oldest is None else _utc(row.oldest)
        age = "-" if row.oldest is None else f"{(now - row.oldest) / DAY_MS:.1f} d"
        print(f"{row.table:<12} {row.rows:>12,}  {when:<20} {age:>10}  {row.column}")
    print(f"expired conversations waiting for the next prune: {expired:,}")
    retention = config.data_retention

    def days(value: int) -> str:
        return "kept forever" if value == 0 else f"{value} d"

    print(
        f"retention: {'enabled' if retention.enabled else 'disabled'}; chat tasks "
        f"{days(retention.task_retention_days)}, feedback "
        f"{days(retention.feedback_retention_days)}, idle conversations "
        f"{days(retention.session_retention_days)}; every "
        f"{retention.cleanup_interval_hours:g} h in batches of {retention.batch_size:,}"
    )
    if lease is None:
        print("retention lease: never taken")
    else:
        until = f"{_utc(lease.expires_at)} UTC"
        if lease.expires_at > now:
            print(f"retention lease: held by {lease.owner} until {until} (pruning now)")
        else:
            print(f"retention lease: free (last held by {lease.owner}, until {until})")
    return 0


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


if __name__ == "__main__":
    sys.exit(main())
