"""Fault injection for ``tests/test_faults.py``: database servers of its own, the app, a load.

* ``PostgresCluster``: a PostgreSQL cluster of the suite's own (``pg_createcluster``, as
  root; owned by ``postgres``, trust auth, on a spare port), started and stopped with
  ``pg_ctlcluster`` (``-m fast`` or ``-m immediate``) and dropped at the end.
* ``MariaDBServer``: ``mariadbd`` on a datadir and port of its own, stopped with SIGTERM
  (a clean shutdown) or SIGKILL (a crash) and started again on the same datadir.
* ``RedisServer``: ``redis-server`` on a directory and port of its own, append-only file
  on (``appendfsync always`` by default), stopped with SIGTERM or SIGKILL and started
  again on the same directory. An app's data lives under a key prefix of its own
  (``SESSION_TABLE_PREFIX``), as a SQL app's lives in a database of its own.
* ``AppServer``: ``uvicorn tests.fault_app:app`` in a process of its own, its output in
  a file.
* ``Load``: a bounded number of clients writing conversations, chat tasks (each saved
  twice, as a chat UI saves a streamed answer and then the final one) and feedback,
  and deleting every third conversation; every request and every acknowledged write
  goes into a ``Ledger``.
* ``bad_calls``, ``verify_api`` and ``verify_rows``: what the suite asserts, each
  returning the problems found as lines of text (empty: all is well).

Every server keeps acknowledged writes across a crash of the server process (not of the
machine): PostgreSQL runs with ``fsync=off`` but ``synchronous_commit=on`` (every
commit is written to the kernel before it is acknowledged), MariaDB with
``innodb_flush_log_at_trx_commit=2`` (the same), Redis with ``appendfsync always``
(each write is in the append-only file, fsynced, before its reply goes out). That keeps
the suite light on a shared machine without weakening what it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiomysql
import asyncpg
import httpx
import pymysql
import pytest

from tests.proxy import free_port

if TYPE_CHECKING:
    import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/api/v1"
#: Names of the suite's PostgreSQL clusters: ``agentsession_fault_<pid>_<random>``.
CLUSTER_PREFIX = "agentsession_fault_"
MARIADBD = "/usr/sbin/mariadbd"
#: Directories of the suite's MariaDB servers: ``<tmp>/agentsession-fault-mariadb-<pid>-*``.
MARIADB_PREFIX = "agentsession-fault-mariadb-"
#: Directories of the suite's Redis servers: ``<tmp>/agentsession-fault-redis-<pid>-*``.
REDIS_PREFIX = "agentsession-fault-redis-"
#: Seconds a database server gets to start or stop.
SERVER_TIMEOUT = 60.0


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, except in CI, where that is a failure."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason}; CI must run the fault suite", pytrace=False)
    pytest.skip(reason)


def spare_port() -> int:
    """A free TCP port below the kernel's ephemeral range.

    A database that is down for a while must get its port back: a port of the ephemeral
    range could meanwhile be taken by some process's outgoing connection.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(500):
        port = random.randint(min(15000, low - 2000), low - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no spare port below the ephemeral range")


def run(command: list[str], *, timeout: float = SERVER_TIMEOUT) -> str:
    """Run ``command``; its output, or an AssertionError with it."""
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(command)} took over {timeout} s: {error.output}") from None
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}")
    return done.stdout


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# Database servers


class Database(Protocol):
    """A database server of the suite's own that it can stop and start at will.

    Each scenario keeps its data in a namespace ``name`` of its own: a database on a SQL
    server, a key prefix on Redis.
    """

    kind: str
    modes: tuple[str, ...]

    def app_env(self, name: str) -> dict[str, str]:
        """The environment that points the app at namespace ``name``."""

    async def create_database(self, name: str) -> None:
        """Make the namespace ``name`` (a new database; nothing on Redis)."""

    async def drop_database(self, name: str) -> None:
        """Remove the namespace ``name`` and everything in it."""

    def start(self) -> None:
        """Start the server; return when it accepts connections."""

    def stop(self, mode: str) -> None:
        """Stop the server the way ``mode`` says; return when it is down."""

    @property
    def running(self) -> bool: ...

    async def accepts(self, name: str) -> bool:
        """Whether a new connection (to the database ``name``) can run a query now."""

    async def hold_writes(self, name: str) -> Callable[[], object]:
        """Make the app's writes wait inside the server until the returned function is
        called (or the server goes away): SQL locks every conversation row, Redis
        pauses every client's writes."""

    async def stored_problems(self, name: str, ledger: Ledger) -> tuple[list[str], str]:
        """The namespace's data checked against ``ledger`` from the inside (the tables,
        the keys): the problems found, and what was checked (for the report)."""

    def log(self) -> str: ...


class SqlServer:
    """What the SQL servers share: a database per scenario, read back from its tables."""

    def url(self, database: str) -> str:
        raise NotImplementedError

    async def execute(self, sql: str) -> None:
        """Run ``sql`` as the superuser, outside any application database."""
        raise NotImplementedError

    async def rows(self, database: str, sql: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def lock_conversations(self, database: str) -> Callable[[], object]:
        """Lock every conversation row (``SELECT ... FOR UPDATE`` in an open transaction)
        so that writes to them wait; the lock holds until the returned function closes
        the connection (or the server goes away)."""
        raise NotImplementedError

    def app_env(self, name: str) -> dict[str, str]:
        return {"SESSION_DATABASE_URL": self.url(name)}

    async def create_database(self, name: str) -> None:
        await self.execute(f"CREATE DATABASE {name}")

    async def drop_database(self, name: str) -> None:
        await self.execute(f"DROP DATABASE IF EXISTS {name}")

    async def hold_writes(self, name: str) -> Callable[[], object]:
        return await self.lock_conversations(name)

    async def stored_problems(self, name: str, ledger: Ledger) -> tuple[list[str], str]:
        sessions, tasks, feedback = [
            await self.rows(name, f"SELECT {columns} FROM {table}")
            for table, columns in (
                ("sessions", "id, user_id, name"),
                (
                    "chat_tasks",
                    "id, session_id, user_id, user_message, message_bubbles, task_metadata",
                ),
                ("feedback", "id, session_id, task_id, user_id, rating, comment"),
            )
        ]
        return verify_rows(ledger, sessions, tasks, feedback), f"{len(tasks)} chat task rows"


class PostgresCluster(SqlServer):
    """A PostgreSQL cluster of its own; ``create()`` it, ``drop()`` it (also on failure)."""

    kind = "postgresql"
    modes = ("fast", "immediate")

    def __init__(self) -> None:
        self.version = sorted(os.listdir("/etc/postgresql"), key=float)[-1]
        self.name = f"{CLUSTER_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
        self.port = spare_port()
        self.created = False
        self._running = False

    @staticmethod
    def available() -> tuple[bool, str]:
        tools = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters")
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing or not os.path.isdir("/etc/postgresql"):
            return False, f"PostgreSQL's cluster tools are missing ({', '.join(missing)})"
        if os.geteuid() != 0:
            return False, "pg_createcluster needs root"
        return True, ""

    @staticmethod
    def drop_stale() -> None:
        """Drop clusters a killed run of this suite left behind (their pid is gone)."""
        for line in run(["pg_lsclusters", "-h"]).splitlines():
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith(CLUSTER_PREFIX):
                continue
            pid = fields[1][len(CLUSTER_PREFIX) :].split("_", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                run(["pg_dropcluster", "--stop", fields[0], fields[1]])

    def create(self) -> None:
        run(
            [
                "pg_createcluster",
                self.version,
                self.name,
                "--port",
                str(self.port),
                "--start-conf=manual",
                "-o",
                "fsync=off",
                "-o",
                "shared_buffers=32MB",
                "--",
                "--auth-local=trust",
                "--auth-host=trust",
                "--no-sync",
            ]
        )
        self.created = True

    def drop(self) -> None:
        if self.created:
            run(["pg_dropcluster", "--stop", self.version, self.name])
            self.created = False
            self._running = False

    def _ctl(self, *arguments: str) -> None:
        run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *arguments])

    def start(self) -> None:
        self._ctl("start")  # pg_ctl waits until the server accepts connections
        self._running = True

    def stop(self, mode: str) -> None:
        assert mode in self.modes, mode
        self._ctl("stop", "-m", mode)
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _connect(self, database: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database=database, timeout=2
        )

    async def accepts(self, database: str) -> bool:
        try:
            connection = await self._connect(database)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        try:
            await connection.fetchval("SELECT 1")
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        finally:
            connection.terminate()

    async def execute(self, sql: str) -> None:
        connection = await self._connect("postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def rows(self, database: str, sql: str) -> list[dict[str, Any]]:
        connection = await self._connect(database)
        try:
            return [dict(record) for record in await connection.fetch(sql)]
        finally:
            await connection.close()

    async def lock_conversations(self, database: str) -> Callable[[], object]:
        connection = await self._connect(database)
        try:
            await connection.execute("BEGIN")
            await connection.execute("SELECT id FROM sessions FOR UPDATE")
        except BaseException:
            connection.terminate()
            raise

        def release() -> None:
            connection.terminate()

        return release

    def log(self) -> str:
        path = Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        try:
            return path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"


class _ServerProcess:
    """A database server of the suite's own, run as a child process with its log in
    ``log_path``: started until ``_ready``, stopped by signal, killed at teardown."""

    program = ""  # the executable's name, in messages
    modes = ("TERM", "KILL")
    #: Whether a SIGTERM must end in exit status 0.
    clean_exit = False

    directory: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None

    def _ready(self) -> bool:
        """A blocking check that the server takes requests."""
        raise NotImplementedError

    def _launch(self, argv: list[str], *, poll: float, cwd: Path | None = None) -> None:
        """Start ``argv`` (in ``cwd``) and wait until the server is ready (or fail with
        its log)."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest reaches the fixtures only
            )
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise AssertionError(f"{self.program} exited with {code}:\n{tail(self.log(), 40)}")
            if self._ready():
                return
            time.sleep(poll)
        self.kill()
        raise AssertionError(
            f"{self.program} did not start in {SERVER_TIMEOUT} s:\n{tail(self.log(), 40)}"
        )

    def stop(self, mode: str) -> None:
        assert mode in self.modes, mode
        process, self.process = self.process, None
        assert process is not None, "not running"
        process.send_signal(signal.SIGTERM if mode == "TERM" else signal.SIGKILL)
        try:
            code = process.wait(SERVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"{self.program} ignored SIGTERM:\n{tail(self.log(), 40)}"
            ) from None
        if self.clean_exit and mode == "TERM" and code != 0:
            raise AssertionError(f"{self.program} exited with {code}:\n{tail(self.log(), 40)}")

    def kill(self) -> None:
        """Make sure the server is gone (fixture teardown)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def remove(self) -> None:
        """Kill the server if it runs and delete its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"


def _stale_directories(prefix: str) -> list[Path]:
    """The directories ``<prefix><pid>-...`` of runs of this suite that are gone."""
    stale = []
    for directory in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = directory.name[len(prefix) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            stale.append(directory)
    return stale


class MariaDBServer(_ServerProcess, SqlServer):
    """``mariadbd`` on a datadir and a port of its own under ``directory``."""

    kind = "mariadb"
    program = "mariadbd"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.datadir = directory / "data"
        self.socket = directory / "mariadbd.sock"
        self.log_path = directory / "mariadbd.log"
        self.port = spare_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("mariadb-install-db") is None or not os.access(MARIADBD, os.X_OK):
            return False, f"MariaDB's server is not installed (mariadb-install-db, {MARIADBD})"
        if os.geteuid() != 0:
            return False, "the MariaDB fault tests run mariadbd as root"
        return True, ""

    @classmethod
    def make(cls) -> MariaDBServer:
        """A server in a new directory named after this process (see ``drop_stale``).

        Not under pytest's basetemp, which keeps old runs: the datadir is 100+ MB.
        """
        return cls(Path(tempfile.mkdtemp(prefix=f"{MARIADB_PREFIX}{os.getpid()}-")))

    @staticmethod
    def drop_stale() -> None:
        """Stop the servers and remove the datadirs a killed run of this suite left behind."""
        for directory in _stale_directories(MARIADB_PREFIX):
            with contextlib.suppress(OSError, ValueError):
                pid = int((directory / "mariadbd.pid").read_text().split()[0])
                # Only the server of that very datadir, by its pid.
                if str(directory) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(directory, ignore_errors=True)

    def install(self) -> None:
        run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )

    def start(self) -> None:
        self._launch(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                f"--socket={self.socket}",
                f"--pid-file={self.directory / 'mariadbd.pid'}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-dump-at-shutdown=0",
                "--innodb-buffer-pool-load-at-startup=0",
                "--max-connections=200",
            ],
            poll=0.05,
        )

    def _ready(self) -> bool:
        """A blocking check that the server takes connections (no event loop needed)."""
        try:
            connection = pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=1
            )
        except pymysql.MySQLError:
            return False
        connection.close()
        return True

    def url(self, database: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    async def _connect(self, database: str | None) -> aiomysql.Connection:
        return await aiomysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            password="",
            db=database,
            connect_timeout=2,
            autocommit=True,
        )

    async def accepts(self, database: str) -> bool:
        try:
            connection = await self._connect(database)
        except (OSError, aiomysql.Error, TimeoutError):
            return False
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
            return True
        except (OSError, aiomysql.Error):
            return False
        finally:
            connection.close()

    async def execute(self, sql: str) -> None:
        connection = await self._connect(None)
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(sql)
        finally:
            connection.close()

    async def rows(self, database: str, sql: str) -> list[dict[str, Any]]:
        connection = await self._connect(database)
        try:
            async with connection.cursor(aiomysql.DictCursor) as cursor:
                await cursor.execute(sql)
                return [dict(row) for row in await cursor.fetchall()]
        finally:
            connection.close()

    async def lock_conversations(self, database: str) -> Callable[[], object]:
        connection = await self._connect(database)
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("BEGIN")
                await cursor.execute("SELECT id FROM sessions FOR UPDATE")
                await cursor.fetchall()
        except BaseException:
            connection.close()
            raise

        def release() -> None:
            connection.close()

        return release


class RedisServer(_ServerProcess):
    """``redis-server`` on a directory and a port of its own, its append-only file on.

    ``appendfsync always``: a write is in the append-only file, fsynced, before Redis
    replies, so nothing acknowledged is lost even to SIGKILL. No RDB snapshots
    (``--save ''``): what comes back after a restart is what the AOF replays.
    """

    kind = "redis"
    program = "redis-server"
    clean_exit = True

    def __init__(self, directory: Path, *, appendfsync: str = "always") -> None:
        self.directory = directory
        self.log_path = directory / "redis.log"
        self.appendfsync = appendfsync
        self.port = spare_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("redis-server") is None:
            return False, "redis-server is not installed"
        return True, ""

    @classmethod
    def make(cls, *, appendfsync: str = "always") -> RedisServer:
        """A server in a new directory named after this process (see ``drop_stale``)."""
        directory = Path(tempfile.mkdtemp(prefix=f"{REDIS_PREFIX}{os.getpid()}-"))
        return cls(directory, appendfsync=appendfsync)

    @staticmethod
    def drop_stale() -> None:
        """Stop the servers and remove the directories a killed run left behind."""
        for directory in _stale_directories(REDIS_PREFIX):
            with contextlib.suppress(OSError, ValueError):
                pid = int((directory / "redis.pid").read_text().split()[0])
                # Only the server of that very directory (redis-server runs in its --dir).
                if Path(f"/proc/{pid}/cwd").resolve() == directory.resolve():
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def key_prefix(name: str) -> str:
        """The keys of the app given ``app_env(name)``: ``<name>_agentsession:...``."""
        return f"{name}_agentsession:"

    def app_env(self, name: str) -> dict[str, str]:
        return {"SESSION_DATABASE_URL": self.url, "SESSION_TABLE_PREFIX": f"{name}_"}

    def start(self) -> None:
        self._launch(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--pidfile",
                str(self.directory / "redis.pid"),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            poll=0.02,
        )

    def _ready(self) -> bool:
        return self.command("PING") == b"+PONG"  # not -LOADING: the AOF is replayed

    def command(self, *words: str, timeout: float = 1.0) -> bytes | None:
        """Send one command on a new blocking connection; the reply's first line, or None."""
        request = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(request.encode())
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return None
                    reply += chunk
        except OSError:
            return None
        return reply.split(b"\r\n", 1)[0]

    def client(self) -> redis.asyncio.Redis:
        import redis.asyncio  # here: tests/dynamodb_local.py imports this module, and the
        # Starlette-0.40 run of .ci/run (no redis installed) imports that from conftest

        return redis.asyncio.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=10, socket_connect_timeout=2
        )

    async def accepts(self, name: str) -> bool:
        import redis.asyncio

        client = redis.asyncio.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry_on_error=[],
        )
        try:
            return bool(await client.ping())
        except (OSError, redis.RedisError):
            return False
        finally:
            await client.aclose()

    async def create_database(self, name: str) -> None:
        """Nothing to make: the app writes its keys under ``key_prefix(name)``."""

    async def drop_database(self, name: str) -> None:
        client = self.client()
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.key_prefix(name)}*")]
            for start in range(0, len(keys), 500):
                await client.unlink(*keys[start : start + 500])
        finally:
            await client.aclose()

    async def hold_writes(self, name: str) -> Callable[[], object]:
        client = self.client()
        try:
            # WRITE: reads go on, every write (and script) waits inside the server.
            await client.client_pause(int(SERVER_TIMEOUT * 1000), all=False)
        finally:
            await client.aclose()

        def release() -> None:
            # Gone with the server if it was stopped; else (the stop failed) unpause it.
            if self.running:
                self.command("CLIENT", "UNPAUSE")

        return release

    async def keys(self) -> dict[bytes, bytes]:
        """Every key on the server with its value as text (hash fields, set and sorted
        set members with their scores, list items, each on a line of its own)."""
        client = self.client()
        try:
            names = sorted([key async for key in client.scan_iter(count=1000)])
            async with client.pipeline(transaction=False) as pipe:
                for key in names:
                    pipe.type(key)
                kinds = await pipe.execute()
            async with client.pipeline(transaction=False) as pipe:
                for key, kind in zip(names, kinds, strict=True):
                    if kind == b"string":
                        pipe.get(key)
                    elif kind == b"hash":
                        pipe.hgetall(key)
                    elif kind == b"set":
                        pipe.smembers(key)
                    elif kind == b"zset":
                        pipe.zrange(key, 0, -1, withscores=True)
                    elif kind == b"list":
                        pipe.lrange(key, 0, -1)
                    else:  # a stream, or gone meanwhile: its type is all that is shown
                        pipe.type(key)
                values = await pipe.execute()
        finally:
            await client.aclose()
        return {key: _flatten(value) for key, value in zip(names, values, strict=True)}

    async def stored_problems(self, name: str, ledger: Ledger) -> tuple[list[str], str]:
        from agentsession.stores.redis.keys import registry_key

        stored = await self.keys()
        prefix = self.key_prefix(name)
        # A delete frees the conversation's id in a second round trip, best effort: a
        # claim it left is taken over by the next insert of that id (the store's
        # ``_take_over``), so it is no orphan of the conversation's data.
        claims = {
            registry_key(prefix, conversation.id).encode()
            for conversation in ledger.conversations.values()
            if conversation.gone
        }
        kept = {key: value for key, value in stored.items() if key not in claims}
        left = len(stored) - len(kept)
        return (
            verify_keys(ledger, kept, prefix.encode()),
            f"{len(stored)} keys ({left} id claims left by deletes)",
        )


def _flatten(value: Any) -> bytes:
    """A Redis reply as lines of bytes (what ``RedisServer.keys`` returns per key)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return b"\n".join(_flatten(k) + b"=" + _flatten(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return b"\n".join(_flatten(item) for item in value)
    return str(value).encode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The app


class AppServer:
    """``uvicorn tests.fault_app:app`` on a loopback port, its output in ``log``."""

    def __init__(self, directory: Path, settings: Mapping[str, str], timeout: float) -> None:
        """``settings``: the app's ``SESSION_*`` variables (``Database.app_env``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "uvicorn.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "SESSION_SECRET_KEY": secrets.token_urlsafe(48),
            "FAULT_SERVICE_TIMEOUT": str(timeout),
        }
        for name in (
            "SESSION_SECRET_KEY_FALLBACKS",
            "WEB_UI_GATEWAY_DATABASE_URL",
            "SESSION_TABLE_PREFIX",
            "SESSION_DATABASE_SCHEMA",
        ):
            env.pop(name, None)
        env.update(settings)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start uvicorn and wait until the API answers a query of the store."""
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.fault_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise AssertionError(f"uvicorn exited with {code}:\n{tail(self.output(), 60)}")
            try:
                response = httpx.get(
                    f"{self.url}{PREFIX}/sessions", headers={"X-User": "fault-ready"}, timeout=5
                )
                if response.status_code == 200:
                    return
                if response.status_code == 500:  # broken, not starting: no use waiting
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the app did not answer with 200:\n{tail(self.output(), 60)}")

    def stop(self, timeout: float = 15) -> int | None:
        """Ctrl-C; its exit status (None: it had to be killed)."""
        process, self.process = self.process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


# What the clients send: a pure function of the ids, so any stored row can be checked.


def task_body(task_id: str, version: int) -> dict[str, Any]:
    """Version 1 is the streamed answer so far, version 2 the final one (more bubbles)."""
    bubbles = [
        {"type": "text", "text": f"{task_id} v{version} bubble {i}", "pad": "x" * 400}
        for i in range(2 * version)
    ]
    return {
        "taskId": task_id,
        "userMessage": f"question of {task_id}",
        "messageBubbles": bubbles,
        "taskMetadata": {"taskId": task_id, "version": version, "final": version == 2},
    }


def feedback_body(session_id: str, task_id: str) -> dict[str, Any]:
    return {
        "taskId": task_id,
        "sessionId": session_id,
        "feedbackType": "up" if task_id[-1] in "02468" else "down",
        "feedbackText": f"feedback on {task_id}",
    }


# The ledger


@dataclass(slots=True)
class Call:
    """One request and what came back (``error``: a transport error, no response)."""

    worker: str
    method: str
    route: str
    start: float
    end: float
    status: int | None = None
    body: str = ""
    retry_after: str | None = None
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Task:
    id: str
    session_id: str
    user: str
    sent: int = 0  # highest version sent
    acked: int = 0  # highest version acknowledged (2xx)


@dataclass(slots=True)
class Conversation:
    id: str
    user: str
    name: str
    #: "no"; "yes" (the DELETE was acknowledged); "maybe" (it got no 204).
    deleted: Literal["no", "yes", "maybe"] = "no"
    tasks: dict[str, Task] = field(default_factory=dict)
    #: The status of ``GET /sessions/{id}`` when ``verify_api`` read it back.
    read_back: int | None = None

    @property
    def gone(self) -> bool:
        """Deleted: the DELETE was acknowledged, or it got no answer and the conversation
        read back as missing (``verify_api`` ran)."""
        return self.deleted == "yes" or (self.deleted == "maybe" and self.read_back == 404)


@dataclass(slots=True)
class Feedback:
    id: str
    user: str
    session_id: str
    task_id: str


@dataclass
class Ledger:
    """Every request made and every write acknowledged."""

    calls: list[Call] = field(default_factory=list)
    conversations: dict[str, Conversation] = field(default_factory=dict)  # acknowledged
    names: set[str] = field(default_factory=set)  # every conversation name sent
    tasks: dict[str, Task] = field(default_factory=dict)  # every task sent
    feedback: list[Feedback] = field(default_factory=list)  # acknowledged
    problems: list[str] = field(default_factory=list)  # 2xx with an unusable body


# The load


class Load:
    """``workers`` clients writing through the API until ``stop`` is set.

    Each client is a user of its own (``X-User``) and loops: create a conversation, save
    ``TASKS`` chat tasks in it (each twice), rate each saved one, delete every third
    conversation. After anything but the expected 2xx it waits ``BACKOFF`` seconds and
    goes on with new ids (the 503's ``Retry-After`` is far longer than the outage).
    """

    TASKS = 3
    BACKOFF = 0.05

    def __init__(
        self, base_url: str, ledger: Ledger, *, workers: int = 8, pace: float = 0.01
    ) -> None:
        self.base_url = base_url
        self.ledger = ledger
        self.workers = workers
        self.pace = pace
        self.run_id = secrets.token_hex(3)
        self.client_timeout = 30.0

    def client(self, user: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url + PREFIX,
            headers={"X-User": user},
            timeout=self.client_timeout,
            limits=httpx.Limits(max_connections=1),
        )

    async def request(
        self,
        client: httpx.AsyncClient,
        worker: str,
        method: str,
        route: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response | None:
        """Send one request and record it; None when no response came back."""
        start = time.monotonic()
        try:
            response = await client.request(method, path, json=body)
        except httpx.HTTPError as error:
            call = Call(worker, method, route, start, time.monotonic())
            call.error = f"{type(error).__name__}: {error}"
            self.ledger.calls.append(call)
            return None
        call = Call(worker, method, route, start, time.monotonic(), response.status_code)
        call.body = response.text[:500]
        call.retry_after = response.headers.get("retry-after")
        self.ledger.calls.append(call)
        return response

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any] | None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            self.ledger.problems.append(f"{what}: {response.status_code} {response.text[:300]!r}")
            return None
        return body

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(n, stop) for n in range(self.workers)))

    async def _worker(self, n: int, stop: asyncio.Event) -> None:
        worker = f"w{n}"
        user = f"fault-{self.run_id}-{worker}"
        ledger = self.ledger
        async with self.client(user) as client:
            k = 0
            while not stop.is_set():
                k += 1
                name = f"{user}-c{k}"
                ledger.names.add(name)
                response = await self.request(
                    client, worker, "POST", "/sessions", "/sessions", {"name": name}
                )
                created = (
                    self._json(response, f"POST /sessions {name}")
                    if response is not None and response.status_code == 201
                    else None
                )
                if created is None:
                    await asyncio.sleep(self.BACKOFF)
                    continue
                conversation = Conversation(created["id"], user, name)
                ledger.conversations[conversation.id] = conversation
                await asyncio.sleep(self.pace)
                for i in range(self.TASKS):
                    if stop.is_set():
                        break
                    await self._task(client, worker, conversation, f"{name}-t{i}")
                if k % 3 == 0:
                    response = await self.request(
                        client,
                        worker,
                        "DELETE",
                        "/sessions/{sessionId}",
                        f"/sessions/{conversation.id}",
                    )
                    gone = response is not None and response.status_code == 204
                    conversation.deleted = "yes" if gone else "maybe"
                    await asyncio.sleep(self.pace if gone else self.BACKOFF)

    async def _task(
        self, client: httpx.AsyncClient, worker: str, conversation: Conversation, task_id: str
    ) -> None:
        task = Task(task_id, conversation.id, conversation.user)
        conversation.tasks[task_id] = task
        self.ledger.tasks[task_id] = task
        path = f"/sessions/{conversation.id}/chat-tasks"
        for version in (1, 2):
            task.sent = version
            response = await self.request(
                client,
                worker,
                "POST",
                "/sessions/{sessionId}/chat-tasks",
                path,
                task_body(task_id, version),
            )
            if response is None or response.status_code != 200:
                await asyncio.sleep(self.BACKOFF)
                break
            task.acked = version
            await asyncio.sleep(self.pace)
        if not task.acked:
            return
        response = await self.request(
            client,
            worker,
            "POST",
            "/feedback",
            "/feedback",
            feedback_body(conversation.id, task_id),
        )
        saved = (
            self._json(response, f"POST /feedback {task_id}")
            if response is not None and response.status_code == 201
            else None
        )
        if saved is None:
            await asyncio.sleep(self.BACKOFF)
            return
        self.ledger.feedback.append(
            Feedback(saved["id"], conversation.user, conversation.id, task_id)
        )
        await asyncio.sleep(self.pace)

    async def probe(self, deadline: float, interval: float = 0.05) -> float | None:
        """Create conversations until one is acknowledged; when (monotonic), or None."""
        user = f"fault-{self.run_id}-probe"
        async with self.client(user) as client:
            k = 0
            while time.monotonic() < deadline:
                k += 1
                name = f"{user}-c{k}"
                self.ledger.names.add(name)
                response = await self.request(
                    client, "probe", "POST", "/sessions", "/sessions", {"name": name}
                )
                if response is not None and response.status_code == 201:
                    created = self._json(response, f"POST /sessions {name}")
                    if created is not None:
                        conversation = Conversation(created["id"], user, name)
                        self.ledger.conversations[conversation.id] = conversation
                    return time.monotonic()
                await asyncio.sleep(interval)
        return None


async def first_true(
    check: Callable[[], Awaitable[bool]], deadline: float, interval: float = 0.02
) -> float | None:
    """When (monotonic) ``check()`` first answers True; None if not by ``deadline``."""
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(interval)
    return None


# Checks


def bad_calls(calls: Iterable[Call], origin: float, limit: float) -> list[str]:
    """Every call that was not 2xx or 503 with ``Retry-After``, or took over ``limit`` s.

    Times are relative to ``origin`` (the moment the database was told to stop).
    """
    found = []
    for call in sorted(calls, key=lambda c: c.start):
        reasons = []
        if call.error is not None:
            reasons.append(f"no response: {call.error}")
        elif call.status == 503:
            if not call.retry_after:
                reasons.append("503 without Retry-After")
        elif call.status is None or not 200 <= call.status < 300:
            reasons.append(f"status {call.status}")
        if call.duration > limit:
            reasons.append(f"took {call.duration:.2f} s (limit {limit:.1f} s)")
        if reasons:
            found.append(
                f"t={call.start - origin:+7.2f}s {call.worker:>5} {call.method} {call.route}"
                f" -> {call.status} in {call.duration:.2f}s: {'; '.join(reasons)}"
                + (f"; body {call.body[:300]!r}" if call.error is None else "")
            )
    return found


def status_counts(calls: Iterable[Call]) -> str:
    counts = Counter(str(call.status) if call.error is None else "no response" for call in calls)
    return ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))


def _task_problem(task_id: str, stored: Mapping[str, Any], task: Task | None) -> str | None:
    """Why ``stored`` (API field names) is not a whole version the client sent, or None."""
    if task is None:
        return f"task {task_id!r} was never sent"
    metadata = stored.get("taskMetadata")
    version = metadata.get("version") if isinstance(metadata, dict) else None
    if version not in (1, 2) or version > task.sent:
        return f"task {task_id!r}: stored metadata {metadata!r} is no version sent (<= {task.sent})"
    expected = task_body(task_id, version)
    for key in ("userMessage", "messageBubbles", "taskMetadata"):
        if stored.get(key) != expected[key]:
            return f"task {task_id!r} v{version}: {key} is not what was sent (partial write?)"
    if version < task.acked:
        return f"task {task_id!r}: version {task.acked} was acknowledged, {version} is stored"
    return None


async def _pages(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[Any] | str:
    """Every item of a listing, or a problem."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": "100"}
        if cursor:
            query["cursor"] = cursor
        response = await client.get(path, params=query)
        if response.status_code != 200:
            return f"GET {path} -> {response.status_code} {response.text[:300]!r}"
        body = response.json()
        items.extend(body["data"])
        cursor = body["meta"]["nextCursor"]
        if not cursor:
            return items


async def verify_api(load: Load, concurrency: int = 8) -> list[str]:
    """Read back through the API every acknowledged write: present, whole, as acknowledged."""
    ledger = load.ledger
    problems: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    clients: dict[str, httpx.AsyncClient] = {}

    async def check(conversation: Conversation) -> None:
        client = clients[conversation.user]
        sid = conversation.id
        async with limit:
            response = await client.get(f"/sessions/{sid}")
            conversation.read_back = response.status_code
            if conversation.deleted == "yes":
                if response.status_code != 404:
                    problems.append(f"deleted conversation {sid}: GET -> {response.status_code}")
                return
            if conversation.deleted == "maybe" and response.status_code == 404:
                return  # the unanswered DELETE went through: all of it is checked as gone
            if response.status_code != 200:
                problems.append(f"conversation {conversation.name}: GET -> {response.status_code}")
                return
            if response.json().get("name") != conversation.name:
                problems.append(f"conversation {conversation.name}: name {response.text[:200]!r}")
            tasks = await _pages(client, f"/sessions/{sid}/chat-tasks", {})
            feedback = await _pages(client, "/feedback", {"sessionId": sid})
        if isinstance(tasks, str):
            problems.append(tasks)
        else:
            stored = {item["taskId"]: item for item in tasks}
            for task_id, item in stored.items():
                problem = _task_problem(task_id, item, conversation.tasks.get(task_id))
                if problem:
                    problems.append(f"API: {problem}")
            for task in conversation.tasks.values():
                if task.acked and task.id not in stored:
                    problems.append(
                        f"API: acknowledged task {task.id!r} (v{task.acked}) is missing"
                    )
        if isinstance(feedback, str):
            problems.append(feedback)
        else:
            ids = {item["id"]: item for item in feedback}
            for item in feedback:
                if item != {**item, **feedback_body(sid, item["taskId"])}:
                    problems.append(f"API: feedback {item!r} is not what was sent")
            for acked in ledger.feedback:
                if acked.session_id == sid and acked.id not in ids:
                    problems.append(f"API: acknowledged feedback on {acked.task_id!r} is missing")

    users = {conversation.user for conversation in ledger.conversations.values()}
    for user in users:
        clients[user] = load.client(user)
    try:
        await asyncio.gather(*(check(c) for c in list(ledger.conversations.values())))
    finally:
        for client in clients.values():
            await client.aclose()
    return problems


def verify_keys(ledger: Ledger, stored: Mapping[bytes, bytes], prefix: bytes) -> list[str]:
    """Check Redis's keys themselves: every key under the app's ``prefix``, and nothing
    left of a deleted conversation (its id, its tasks' or its feedback's ids) in any key
    name or value: no orphan, and a DELETE that got no answer deleted all or nothing.

    ``stored``: every key on the server and its value as text (``RedisServer.keys``).
    What live conversations hold is checked through the API (``verify_api``).
    """
    problems = [
        f"Redis: key {key[:120]!r} is outside the app's prefix {prefix!r}"
        for key in stored
        if not key.startswith(prefix)
    ]
    gone = [conversation for conversation in ledger.conversations.values() if conversation.gone]
    owner: dict[bytes, str] = {}
    for conversation in gone:
        owner[conversation.id.encode()] = conversation.name
        for task in conversation.tasks.values():
            owner[task.id.encode()] = conversation.name
    for rating in ledger.feedback:
        if rating.session_id.encode() in owner:
            owner[rating.id.encode()] = owner[rating.session_id.encode()]
    if not owner:
        return problems
    # Ids end where no id character follows (task "...-c1-t1" is not in "...-c1-t12").
    ids = re.compile(
        b"(?:"
        + b"|".join(re.escape(i) for i in sorted(owner, key=len, reverse=True))
        + b")(?![A-Za-z0-9_-])"
    )
    found: dict[str, list[str]] = {}
    for key, value in stored.items():
        for where, text in (("name", key), ("value", value)):
            for match in ids.finditer(text):
                found.setdefault(owner[match[0]], []).append(
                    f"{match[0].decode()!r} in the {where} of {key[:100]!r}"
                )
    for name, places in found.items():
        shown = "; ".join(sorted(set(places))[:3])
        problems.append(f"Redis: deleted conversation {name} left {len(places)} trace(s): {shown}")
    return problems


def _json_column(value: Any) -> Any:
    return None if value is None else json.loads(value)


def verify_rows(
    ledger: Ledger,
    sessions: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
) -> list[str]:
    """Check the tables themselves: acknowledged rows present, every row whole, no orphans."""
    problems: list[str] = []
    session_rows = {row["id"]: row for row in sessions}
    task_rows = {row["id"]: row for row in tasks}
    for conversation in ledger.conversations.values():
        row = session_rows.get(conversation.id)
        if conversation.deleted == "yes":
            if row is not None:
                problems.append(f"SQL: deleted conversation {conversation.name} is still there")
        elif conversation.deleted == "no" and row is None:
            problems.append(f"SQL: acknowledged conversation {conversation.name} is missing")
    for row in sessions:
        if row["name"] not in ledger.names or not row["name"].startswith(row["user_id"] + "-"):
            problems.append(f"SQL: conversation row {row!r} is not one that was created")
    for row in tasks:
        task = ledger.tasks.get(row["id"])
        stored = {
            "userMessage": row["user_message"],
            "messageBubbles": _json_column(row["message_bubbles"]),
            "taskMetadata": _json_column(row["task_metadata"]),
        }
        problem = _task_problem(row["id"], stored, task)
        if problem:
            problems.append(f"SQL: {problem}")
        if task is not None and (row["session_id"], row["user_id"]) != (task.session_id, task.user):
            problems.append(
                f"SQL: task {row['id']!r} is in {row['session_id']!r} of {row['user_id']!r}"
            )
        if row["session_id"] not in session_rows:
            problems.append(
                f"SQL: orphan task {row['id']!r}: conversation {row['session_id']!r} is gone"
            )
    for conversation in ledger.conversations.values():
        if conversation.deleted != "no":
            continue
        for task in conversation.tasks.values():
            if task.acked and task.id not in task_rows:
                problems.append(f"SQL: acknowledged task {task.id!r} (v{task.acked}) is missing")
    feedback_ids = set()
    for row in feedback:
        feedback_ids.add(row["id"])
        if row["task_id"] not in task_rows:
            problems.append(f"SQL: orphan feedback {row['id']!r}: task {row['task_id']!r} is gone")
        if row["session_id"] not in session_rows:
            problems.append(
                f"SQL: orphan feedback {row['id']!r}: conversation {row['session_id']!r} is gone"
            )
        expected = feedback_body(row["session_id"], row["task_id"])
        task = ledger.tasks.get(row["task_id"])
        if (
            task is None
            or (row["session_id"], row["user_id"]) != (task.session_id, task.user)
            or (row["rating"], row["comment"])
            != (expected["feedbackType"], expected["feedbackText"])
        ):
            problems.append(f"SQL: feedback row {row!r} is not what was sent")
    for acked in ledger.feedback:
        rated = ledger.conversations.get(acked.session_id)
        if rated is not None and rated.deleted == "no" and acked.id not in feedback_ids:
            problems.append(f"SQL: acknowledged feedback on {acked.task_id!r} is missing")
    return problems


# The server log


_LEVEL = re.compile(r"^(INFO|WARNING|ERROR|DEBUG|CRITICAL):")
_FINAL = re.compile(r"^([A-Za-z_][\w.]*)(: .*)?$")


def _tracebacks(log: str) -> list[list[str]]:
    """The blocks of uvicorn's "Exception in ASGI application" (and any other traceback)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in log.splitlines():
        if "Exception in ASGI application" in line or (
            line.startswith("Traceback (most recent call last)") and current is None
        ):
            current = [line]
            blocks.append(current)
        elif current is not None:
            if _LEVEL.match(line) or _UNAVAILABLE.match(line):
                current = None
            else:
                current.append(line)
    return blocks


def _final_exception(block: list[str]) -> str:
    """The exceptions of a traceback block, the one that escaped first, then its causes."""
    chain: list[str] = []
    last = ""
    for line in block:
        if line.startswith(("The above exception was", "During handling of the above")):
            if last:
                chain.append(last)
            last = ""
            continue
        match = _FINAL.match(line)
        if match and ("." in match[1] or match[1].endswith(("Error", "Exception"))):
            last = line[:300]
    if last:
        chain.append(last)
    return " <- caused by: ".join(reversed(chain)) or (block[-1][:300] if block else "")


#: The service's log line for a store call that failed with ``StoreUnavailable``.
_UNAVAILABLE = re.compile(r"^the session store is unavailable \(\w+\): ")
_URL = re.compile(r"^\S+://\S+?: ")


def log_summary(log: str, *, tail_lines: int = 20, full: int = 2) -> str:
    """The distinct exceptions in ``log`` with counts, ``full`` whole tracebacks, why the
    API answered 503 (counted), and the tail of the rest."""
    blocks = _tracebacks(log)
    counts = Counter(_final_exception(block) for block in blocks)
    parts = [f"{len(blocks)} traceback(s) in the server log"]
    parts += [f"  {n} x {final}" for final, n in counts.most_common()]
    shown: set[str] = set()
    for block in blocks:
        final = _final_exception(block)
        if final in shown or len(shown) >= full:
            continue
        shown.add(final)
        parts.append(f"--- first traceback ending in {final[:150]}:")
        if len(block) > 70:  # where it was raised (the route) and where it escaped
            block = [*block[:30], f"    ... {len(block) - 70} lines ...", *block[-40:]]
        parts.extend(block)
    lines = log.splitlines()
    reasons = Counter(
        _URL.sub("", _UNAVAILABLE.sub("", line)) for line in lines if _UNAVAILABLE.match(line)
    )
    parts.append(f"--- 503 store_unavailable, as logged ({sum(reasons.values())}):")
    parts += [f"  {n} x {reason[:200]}" for reason, n in reasons.most_common()]
    rest = [line for line in lines if not _UNAVAILABLE.match(line)]
    parts.append(f"--- last {tail_lines} other lines of the server log:")
    parts.extend(rest[-tail_lines:])
    return "\n".join(parts)
