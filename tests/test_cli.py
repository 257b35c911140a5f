"""The ``agentsession`` command, run as a real process on real databases."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agentsession.service import SessionService, now_ms
from agentsession.stores.base import FeedbackRecord, SessionRecord, TaskRecord
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.schema import chat_tasks, feedback, sessions
from tests.databases import redis_namespace, sql_service

pytestmark = pytest.mark.anyio

DAY = 86_400_000
USER = "user-cli"


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any agentsession setting, plus ``variables``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SESSION_", "DATA_RETENTION_", "WEB_UI_GATEWAY_"))
    }
    env.update(variables)
    return env


async def agentsession(*args: str, **variables: str) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentsession.cli",
        *args,
        env=environment(**variables),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def agentsession_sync(*args: str, **variables: str) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "agentsession.cli", *args],
        env=environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


async def seed(service: SessionService) -> None:
    """Old and young rows, far from the cutoffs (the command reads the clock itself).

    With 1-day retention: 3 old tasks (one with young feedback), 2 old feedback on
    young tasks, 1 expired conversation; young rows beside them.
    """
    store = service.store
    now = now_ms()
    old, young = now - 3 * DAY, now - DAY // 4

    async def conversation(session_id: str, expires_at: int | None = None) -> None:
        await store.insert_session(
            SessionRecord(session_id, USER, None, None, None, young, young, None, expires_at)
        )

    async def task(task_id: str, session_id: str, at: int) -> None:
        record = TaskRecord(task_id, session_id, USER, "hi", ["b"], None, at, at)
        assert await store.save_task(record) is not None

    async def rate(feedback_id: str, session_id: str, task_id: str, at: int) -> None:
        record = FeedbackRecord(feedback_id, session_id, task_id, USER, "up", None, at)
        assert await store.save_feedback(record, at) is not None

    await conversation("s-live")
    await conversation("s-expired", expires_at=now - DAY // 8)
    for name in ("t-old-1", "t-old-2", "t-old-3"):
        await task(name, "s-live", old)
    for name in ("t-young-1", "t-young-2"):
        await task(name, "s-live", young)
    await task("t-expired", "s-expired", young - 1000)
    await rate("f-old-1", "s-live", "t-young-1", old)
    await rate("f-old-2", "s-live", "t-young-2", old)
    await rate("f-with-old-task", "s-live", "t-old-1", young)


async def counts(store: SqlStore) -> tuple[int, int, int]:
    async with store.engine.connect() as connection:
        found = [
            int(await connection.scalar(select(func.count()).select_from(table)) or 0)
            for table in (sessions, chat_tasks, feedback)
        ]
    return found[0], found[1], found[2]


def numbers(output: str) -> dict[str, int]:
    """The per-table counts of a ``prune`` report."""
    found = {}
    for line in output.splitlines():
        name, _, value = line.rpartition(" ")
        if name.strip() in ("chat_tasks", "feedback", "sessions (expired)", "sessions (idle)"):
            found[name.strip()] = int(value.replace(",", ""))
    return found


async def test_migrate_prune_and_stats(fresh_url: str) -> None:
    db = {"SESSION_DATABASE_URL": fresh_url, "DATA_RETENTION_TASK_DAYS": "1"}
    db["DATA_RETENTION_FEEDBACK_DAYS"] = "1"

    before = await agentsession("stats", **db)
    assert before.status == 1
    assert "agentsession migrate" in before.err

    migrated = await agentsession("migrate", **db)
    assert migrated.status == 0, migrated.err
    assert "migrated from an empty database to" in migrated.out
    again = await agentsession("migrate", **db)
    assert again.status == 0
    assert "already at" in again.out

    async with sql_service(fresh_url) as service:
        store = service.store
        assert isinstance(store, SqlStore)
        await seed(service)
        assert await counts(store) == (2, 6, 3)

        dry = await agentsession("prune", "--dry-run", **db)
        assert dry.status == 0, dry.err
        expected = {
            "chat_tasks": 3,
            "feedback": 2,
            "sessions (expired)": 1,
            "sessions (idle)": 0,
        }
        assert numbers(dry.out) == expected
        assert "would delete 6 rows" in dry.out
        assert await counts(store) == (2, 6, 3)  # nothing deleted

        pruned = await agentsession("prune", **db)
        assert pruned.status == 0, pruned.err
        assert numbers(pruned.out) == expected
        assert "deleted 6 rows" in pruned.out
        assert pruned.err == ""  # no progress bar without a terminal
        # Left: s-live with its two young tasks; f-with-old-task went with its task.
        assert await counts(store) == (1, 2, 0)

    stats = await agentsession("stats", **db)
    assert stats.status == 0, stats.err
    lines = {line.split()[0]: line.split() for line in stats.out.splitlines() if line}
    assert lines["sessions"][1] == "1"
    assert lines["chat_tasks"][1] == "2"
    assert lines["chat_tasks"][-1] == "updated_time"
    assert lines["feedback"][1:3] == ["0", "-"]
    assert "retention: enabled; chat tasks 1 d, feedback 1 d" in stats.out
    assert "retention lease: free" in stats.out


async def test_a_long_prune_can_show_a_progress_bar(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'progress.db'}"
    async with sql_service(url) as service:
        await seed(service)
    result = await agentsession(
        "prune", "--progress", SESSION_DATABASE_URL=url, DATA_RETENTION_TASK_DAYS="1"
    )
    assert result.status == 0, result.err
    assert "pruning [" in result.err
    assert "100%" in result.err
    assert "4/4 rows" in result.err  # 3 tasks, 1 expired conversation (feedback: 90 days)


async def test_prune_while_another_instance_prunes_exits_1(tmp_path: Path) -> None:
    from agentsession.stores.sql.lease import acquire_statement

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    async with sql_service(url) as service:
        store = service.store
        assert isinstance(store, SqlStore)
        await seed(service)
        now = now_ms()
        await store._run(acquire_statement("sqlite", "retention", "web-1:42", now + 60_000, now))
    result = await agentsession("prune", SESSION_DATABASE_URL=url, DATA_RETENTION_TASK_DAYS="1")
    assert result.status == 1
    assert "held by web-1:42" in result.err
    assert "nothing was deleted" in result.err


@pytest.mark.parametrize(
    ("yaml", "variables", "named"),
    [
        ("data_retention:\n  batch_size: 0\n", {}, "data_retention.batch_size"),
        ("data_retention:\n  task_retention_days: -1\n", {}, "data_retention.task_retention_days"),
        ("data_retention:\n  keep_days: 3\n", {}, "data_retention.keep_days"),
        ("", {"DATA_RETENTION_SESSION_DAYS": "-5"}, "DATA_RETENTION_SESSION_DAYS"),
        ("", {"DATA_RETENTION_CLEANUP_HOURS": "soon"}, "DATA_RETENTION_CLEANUP_HOURS"),
    ],
)
def test_bad_configuration_exits_2_naming_the_key(
    tmp_path: Path, yaml: str, variables: dict[str, str], named: str
) -> None:
    config = tmp_path / "agentsession.yaml"
    config.write_text(
        f"session_service:\n  type: sql\n  database_url: sqlite:///{tmp_path / 'x.db'}\n{yaml}",
        encoding="utf-8",
    )
    result = agentsession_sync("--config", str(config), "prune", **variables)
    assert result.status == 2
    assert named in result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = agentsession_sync("--config", str(tmp_path / "nope.yaml"), "stats")
    assert result.status == 2
    assert "nope.yaml" in result.err


def test_the_memory_store_has_nothing_to_migrate() -> None:
    result = agentsession_sync("migrate")
    assert result.status == 2
    assert "session_service.type is 'memory'" in result.err
    assert "SESSION_DATABASE_URL" in result.err


def test_an_unreachable_database_exits_1_without_a_traceback() -> None:
    result = agentsession_sync(
        "stats", SESSION_DATABASE_URL="postgresql://app:secretpw@127.0.0.1:1/app"
    )
    assert result.status == 1
    assert "unavailable" in result.err
    assert "secretpw" not in result.err
    assert "Traceback" not in result.err


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "agentsession"
    if not script.exists():
        pytest.skip("the package is not installed with its scripts")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    for command in ("migrate", "prune", "stats", "--config"):
        assert command in done.stdout


# A database that refuses the URL, or is not there: one line, never a traceback

NO_DATABASE = "agentsession_does_not_exist"
NO_USER = "agentsession_nobody"


def refusing(case: str, tmp_path: Path) -> tuple[str, int, str]:
    """The URL of ``case``, the exit status it must give and its stderr (a regex)."""
    from tests.databases import server_url
    from tests.test_sql_errors import (
        DATABASE_HINT,
        FILE_HINT,
        LOGIN_HINT,
        MYSQL,
        PG,
        as_user,
        masked,
        on_database,
    )

    config = "agentsession: configuration error: "
    down = "agentsession: the database is unavailable: "
    if case == "postgresql-no-database":
        url = on_database(server_url(PG), NO_DATABASE)
        message = f'database "{NO_DATABASE}" does not exist; {DATABASE_HINT}'
        return url, 2, re.escape(f"{config}{masked(url)}: {message}")
    if case == "postgresql-no-role":
        url = as_user(server_url(PG), NO_USER)
        message = f'role "{NO_USER}" does not exist; {LOGIN_HINT}'
        return url, 2, re.escape(f"{config}{masked(url)}: {message}")
    if case == "mysql-no-database":
        url = on_database(server_url(MYSQL), NO_DATABASE)
        message = f"Unknown database '{NO_DATABASE}'; {DATABASE_HINT}"
        return url, 2, re.escape(f"{config}{masked(url)}: {message}")
    if case == "mysql-no-user":
        url = as_user(server_url(MYSQL), NO_USER, "secretpw")
        # MariaDB (1698) names no password; MySQL (1045) adds "(using password: YES)".
        head = re.escape(f"{config}{masked(url)}: Access denied for user '{NO_USER}'@")
        return url, 2, f"{head}'[^']+'( \\(using password: YES\\))?{re.escape('; ' + LOGIN_HINT)}"
    if case == "sqlite-no-directory":
        url = f"sqlite:///{tmp_path / 'missing-dir' / 'sessions.db'}"
        message = f"unable to open database file; {FILE_HINT}"
        return url, 2, re.escape(f"{config}{masked(url)}: {message}")
    if case == "postgresql-closed-port":
        url = "postgresql://postgres:secretpw@127.0.0.1:1/test"
        message = "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
        return url, 1, re.escape(f"{down}{masked(url)}: {message}")
    assert case == "mysql-closed-port"
    url = "mysql://root:secretpw@127.0.0.1:1/test"
    message = "Can't connect to MySQL server on '127.0.0.1' (2003)"
    return url, 1, re.escape(f"{down}{masked(url)}: {message}")


@pytest.mark.parametrize("command", ["migrate", "stats", "prune"])
@pytest.mark.parametrize(
    "case",
    [
        "postgresql-no-database",
        "postgresql-no-role",
        "mysql-no-database",
        "mysql-no-user",
        "sqlite-no-directory",
        "postgresql-closed-port",
        "mysql-closed-port",
    ],
)
def test_a_refusing_database_is_one_line(tmp_path: Path, case: str, command: str) -> None:
    """Misconfiguration exits 2 naming what to fix; an outage exits 1; passwords masked."""
    url, status, expected = refusing(case, tmp_path)
    result = agentsession_sync(command, SESSION_DATABASE_URL=url)
    assert result.status == status, result.err
    assert re.fullmatch(f"{expected}\n", result.err), result.err
    assert result.out == ""
    assert "secretpw" not in result.err


async def test_redis_prunes_and_has_nothing_to_migrate() -> None:
    """On Redis ``prune`` works (under the app's key prefix); ``migrate`` and ``stats``
    say why they do not apply."""
    async with redis_namespace() as (url, prefix):
        table_prefix = prefix.replace("-", "_").rstrip(":")[:12] + "_"
        variables = {"SESSION_DATABASE_URL": url, "SESSION_TABLE_PREFIX": table_prefix}
        pruned = await agentsession("prune", "--dry-run", "--no-progress", **variables)
        assert pruned.status == 0, pruned
        assert "would delete" in pruned.out
        for command in ("migrate", "stats"):
            refused = await agentsession(command, **variables)
            assert refused.status == 2, refused
            assert refused.err.strip() == (
                f"agentsession: {command} works on a SQL database; Redis "
                "keeps no schema to migrate and no tables to count (prune works on Redis too)"
            )


def test_called_bare_it_prints_its_help() -> None:
    result = agentsession_sync()
    assert result.status == 0, result.err
    assert result.out.startswith("usage: agentsession [-h] [--version] [--config FILE] COMMAND")
    for command in ("migrate", "prune", "stats"):
        assert f"    {command} " in result.out
    assert result.err == ""


def test_version() -> None:
    from agentsession import __version__

    result = agentsession_sync("--version")
    assert (result.status, result.out, result.err) == (0, f"agentsession {__version__}\n", "")


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    """``--config`` is read wherever it stands; given twice, the one after the command wins."""
    database = tmp_path / "cli.db"
    config = tmp_path / "agentsession.yaml"
    config.write_text(
        f'session_service:\n  type: sql\n  database_url: "sqlite+aiosqlite:///{database}"\n'
    )
    args = (
        ("--config", str(config), "migrate")
        if where == "before"
        else ("migrate", "--config", str(config))
    )
    result = agentsession_sync(*args)
    assert result.status == 0, result.err
    assert database.exists()
    both = agentsession_sync(
        "--config", str(tmp_path / "absent.yaml"), "stats", "--config", str(config)
    )
    assert both.status == 0, both.err
    assert "sessions" in both.out


def test_a_misspelled_section_is_named_word_for_word(tmp_path: Path) -> None:
    config = tmp_path / "agentsession.yaml"
    config.write_text("data_retension:\n  chat_tasks_days: 30\n")
    result = agentsession_sync("stats", "--config", str(config))
    assert result.status == 2
    assert result.err == (
        "agentsession: configuration error: data_retension: unknown top-level section; "
        "did you mean data_retention? (the sections are session, session_service, "
        "data_retention)\n"
    )


def test_bad_yaml_names_the_line_at_fault(tmp_path: Path) -> None:
    config = tmp_path / "agentsession.yaml"
    config.write_text('session:\n  cookie_name: "chat\n  max_age: 60\n\ndata_retention: {}\n')
    result = agentsession_sync("stats", "--config", str(config))
    assert result.status == 2
    assert result.err == (
        f"agentsession: configuration error: config file '{config}' is not valid YAML: "
        "while scanning a quoted scalar (line 2, column 16); "
        "found unexpected end of stream (line 6, column 1)\n"
    )
