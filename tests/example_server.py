"""The example app as a newcomer runs it: ``python -m example_app`` in its own process.

``ExampleServer`` starts it in a working directory of the test's (where it keeps
``.agentsession/``), waits until it answers, and stops it with Ctrl-C (SIGINT), so that
a test can restart it on the same port and see what survived.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.proxy import free_port

ROOT = Path(__file__).resolve().parent.parent


class ExampleServer:
    """``python -m example_app --port N`` run in ``directory``, started and stopped at will."""

    def __init__(self, directory: Path, env: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "example_app.log"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until its API answers."""
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "example_app", "--port", str(self.port)],
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the example app exited:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/api/v1/session/current", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the example app did not answer in {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 15) -> None:
        """Ctrl-C, as a user stops it; it must exit cleanly."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"the example app ignored Ctrl-C:\n{self.output()}") from None
        assert code == 0, f"the example app exited with {code}:\n{self.output()}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")
