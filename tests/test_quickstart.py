"""The README's Quickstart, run as written, top to bottom, in a fresh virtual environment.

The section's code blocks are taken from README.md in order:

* a ``python`` or ``yaml`` block whose first line is ``# <file name>`` is saved as that
  file in an empty directory;
* ``bash`` blocks are run there by bash, one after the other, in one shell (so the
  virtual environment stays active and exported variables stay set). A line that
  starts the server (``uvicorn ...``) is started in the background instead, and the
  test waits for it; a ``curl`` line is run and its output compared with the
  ``# {...}`` comment after it (``…`` matches any text).

Only two things are adapted: ``path/to/agentsession`` is this checkout, and port 8000
is a free port (through ``UVICORN_PORT``, which uvicorn reads, and in the curl lines).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Quickstart (FastAPI)"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def quickstart_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of each fenced block of the Quickstart, in order."""
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(SECTION + "\n") + 1
    fenced = False
    end = len(lines)
    for number in range(start, len(lines)):  # up to the next heading, of any level
        fenced ^= lines[number].startswith("```")
        if not fenced and lines[number].startswith("#"):
            end = number
            break
    return [(match[1], match[2]) for match in BLOCK.finditer("".join(lines[start:end]))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_quickstart_is_what_this_test_reads() -> None:
    """The section has the blocks this test knows how to run (so it cannot pass empty)."""
    kinds = [language for language, _ in quickstart_blocks()]
    assert kinds == ["bash", "python", "yaml", "bash", "bash"], kinds


def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    checkout = shlex.quote(str(ROOT))
    script: list[str] = ["set -euo pipefail"]
    expected: list[str] = []
    server_started = False
    for language, text in quickstart_blocks():
        first = text.partition("\n")[0]
        if language in ("python", "yaml"):
            name = first.removeprefix("# ").strip()
            assert re.fullmatch(r"[\w.]+", name), f"a {language} block names no file: {first}"
            (tmp_path / name).write_text(text, encoding="utf-8")
            continue
        assert language == "bash", language
        for line in text.splitlines():
            command, _, comment = line.partition("   # ")
            command = command.replace("path/to/agentsession", checkout)
            if command.startswith("uvicorn "):
                # The server: in the background, its log kept; wait until it answers.
                script.append(f"{command} > uvicorn.log 2>&1 &")
                script.append("echo $! > uvicorn.pid")
                script.append(
                    f"for _ in $(seq 1 100); do curl -s -o /dev/null 127.0.0.1:{port} && break;"
                    " sleep 0.1; done"
                )
                server_started = True
            elif command.startswith("curl "):
                script.append(command.replace(":8000", f":{port}") + "; echo")
                expected.append(comment.strip())
            else:
                script.append(command)
    assert server_started, "the Quickstart starts no server"
    script.append('kill "$(cat uvicorn.pid)"')
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SESSION_", "VIRTUAL_ENV", "PYTHON"))
    }
    environment["UVICORN_PORT"] = str(port)
    environment["PATH"] = os.defpath + os.pathsep + environment.get("PATH", "")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = (tmp_path / "uvicorn.log").read_text() if (tmp_path / "uvicorn.log").exists() else ""
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:], log)
    answers = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == len(expected) == 2, (result.stdout[-3000:], log)
    clients = set()
    for answer, comment in zip(answers, expected, strict=True):
        pattern = re.escape(comment).replace("…", ".+")
        assert re.fullmatch(pattern, answer), (answer, comment)
        clients.add(json.loads(answer)["client"])
    assert len(clients) == 1  # the cookie jar kept the one client id
    assert "Application startup complete" in log
    assert time.monotonic() - started < 600


def test_without_the_secret_the_quickstart_app_refuses_to_start(tmp_path: Path) -> None:
    """The paragraph after the Quickstart: no secret, no start, the cause named."""
    for language, text in quickstart_blocks():
        if language in ("python", "yaml"):
            name = text.partition("\n")[0].removeprefix("# ").strip()
            (tmp_path / name).write_text(text, encoding="utf-8")
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    process = subprocess.run(
        [_python(), "-m", "uvicorn", "myapp:app", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode != 0
    assert "ConfigError" in process.stderr
    assert "SESSION_SECRET_KEY" in process.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/hello")


def _python() -> str:
    import sys

    return sys.executable
