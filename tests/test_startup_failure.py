"""A misconfigured app refuses to start under a real uvicorn process.

The app is the README Quickstart, started the way the README starts it: ``uvicorn
myapp:app`` with uvicorn's defaults (``--lifespan auto``), in its own process. Without
a secret, without the database driver, with an unreachable database or with one that
does not exist, uvicorn must exit by itself with a non-zero status and log the cause
(passwords masked), instead of reporting the lifespan protocol as unsupported and
serving errors. A correctly configured app starts, answers and stops on Ctrl-C with 0.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.proxy import free_port

#: The README Quickstart, FastAPI flavour, configured from the environment only.
FASTAPI_APP = """\
from fastapi import FastAPI, Request
from agentsession import SessionMiddleware, get_client_id, load_config

config = load_config()  # environment only
app = FastAPI()

@app.get("/hello")
async def hello(request: Request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return {"visits": request.session["visits"], "client": get_client_id(request)}

app.add_middleware(SessionMiddleware, config=config)
"""

#: Plain Starlette: cookie settings only, the secret taken from the environment.
STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from agentsession import SessionMiddleware

async def hello(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return JSONResponse({"visits": request.session["visits"]})

app = Starlette(routes=[Route("/hello", hello)], middleware=[Middleware(SessionMiddleware)])
"""

#: Hides asyncpg from the child process exactly as an uninstalled package is hidden:
#: every finder on ``sys.meta_path`` finds nothing for it, so ``import asyncpg`` raises
#: ModuleNotFoundError("No module named 'asyncpg'") and ``importlib.util.find_spec``
#: answers None. (A finder that raised from ``find_spec`` instead would make
#: ``find_spec`` raise too, which a missing package never does.)
HIDE_ASYNCPG = """\
import sys


def _hidden(name):
    return name == "asyncpg" or name.startswith("asyncpg.")


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
"""

SECRET = secrets.token_urlsafe(48)  # 64 characters
PASSWORD = "hunter2"
#: Seconds a refusing server gets to exit by itself.
PROCESS_TIMEOUT = 60
STARTED = "Application startup complete"
UNSUPPORTED = "ASGI 'lifespan' protocol appears unsupported"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _env(**values: str | None) -> dict[str, str]:
    """os.environ with the session variables set to ``values`` (None: removed)."""
    env = dict(os.environ)
    settings: dict[str, str | None] = {
        "SESSION_SECRET_KEY": None,
        "SESSION_SECRET_KEY_FALLBACKS": None,
        "SESSION_DATABASE_URL": None,
        "WEB_UI_GATEWAY_DATABASE_URL": None,
        **values,
    }
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _command(port: int) -> list[str]:
    """The README's ``uvicorn myapp:app``, uvicorn's defaults, on a port of the test's."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "myapp:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _run(tmp_path: Path, source: str, env: dict[str, str]) -> tuple[int, str]:
    """Start uvicorn on ``source`` as ``myapp.py``; its exit status and combined output."""
    (tmp_path / "myapp.py").write_text(source)
    try:
        done = subprocess.run(
            _command(free_port()),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"uvicorn did not exit within {PROCESS_TIMEOUT} s:\n{_text(error.output)}",
        )
    return done.returncode, done.stdout


def _assert_refused(code: int, log: str) -> None:
    """uvicorn failed the startup itself: non-zero exit, never served, never shrugged."""
    assert code != 0, f"uvicorn exited with 0:\n{log}"
    assert STARTED not in log, log
    assert UNSUPPORTED not in log, log


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres_url() -> str:
    """A URL of the PostgreSQL server (AGENTSESSION_TEST_POSTGRES_URL or the local one).

    Skips locally when nothing listens there; in CI that is a failure.
    """
    url = os.environ.get("AGENTSESSION_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not _listening(host, port):
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server at {host}:{port}; CI must test against one")
        pytest.skip(f"no PostgreSQL server at {host}:{port}")
    return url


@pytest.mark.parametrize("source", [FASTAPI_APP, STARLETTE_APP], ids=["fastapi", "starlette"])
def test_no_secret_refuses_to_start(tmp_path: Path, source: str) -> None:
    code, log = _run(tmp_path, source, _env())
    _assert_refused(code, log)
    assert "SESSION_SECRET_KEY" in log, log


def test_missing_driver_refuses_to_start(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE_ASYNCPG)
    python_path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = _env(
        SESSION_SECRET_KEY=SECRET,
        SESSION_DATABASE_URL=f"postgresql://user:{PASSWORD}@127.0.0.1:5432/test",
    )
    env["PYTHONPATH"] = python_path
    code, log = _run(tmp_path, FASTAPI_APP, env)
    _assert_refused(code, log)
    assert "asyncpg" in log or "agentsession[postgres]" in log, log
    assert PASSWORD not in log, log


def test_unreachable_database_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    env = _env(
        SESSION_SECRET_KEY=SECRET,
        SESSION_DATABASE_URL=f"postgresql://user:{PASSWORD}@127.0.0.1:{port}/test",
    )
    code, log = _run(tmp_path, FASTAPI_APP, env)
    _assert_refused(code, log)
    assert "could not start" in log, log
    assert f"127.0.0.1:{port}" in log, log
    assert PASSWORD not in log, log


def test_missing_database_refuses_to_start(tmp_path: Path, postgres_url: str) -> None:
    name = f"agentsession_no_such_db_{secrets.token_hex(6)}"
    url = urlsplit(postgres_url)._replace(path=f"/{name}")
    env = _env(SESSION_SECRET_KEY=SECRET, SESSION_DATABASE_URL=url.geturl())
    code, log = _run(tmp_path, FASTAPI_APP, env)
    _assert_refused(code, log)
    assert "does not exist" in log, log
    assert name in log, log
    # Reported as configuration to fix, in one line naming the database and the key.
    assert f"StoreMisconfigured: postgresql+asyncpg://{url.username}" in log, log
    assert f'database "{name}" does not exist; create it or fix session_service.database_url' in log
    if url.password:
        assert url.password not in log, log


def test_configured_app_starts_and_stops_cleanly(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(FASTAPI_APP)
    port = free_port()
    log_file = tmp_path / "uvicorn.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            _command(port),
            cwd=tmp_path,
            env=_env(SESSION_SECRET_KEY=SECRET),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        response = None
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while response is None and time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited with {process.returncode}:\n{log_file.read_text()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, f"no answer in {PROCESS_TIMEOUT} s:\n{log_file.read_text()}"
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["visits"] == 1, body
        assert "client" in body, body

        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
        output = log_file.read_text()
        assert code == 0, f"uvicorn exited with {code}:\n{output}"
        assert STARTED in output, output
        assert UNSUPPORTED not in output, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
