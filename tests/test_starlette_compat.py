"""Starlette's own session-middleware tests, run against agentsession.

The test file is taken at test time from the source distribution of the installed
Starlette version, with its import pointed at ``agentsession``: the drop-in claim is
checked against exactly the Starlette a user has, on asyncio and on trio (CI runs it
at the newest Starlette and at the oldest we declare, 0.40).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ORIGINAL_IMPORT = "from starlette.middleware.sessions import "
OUR_IMPORT = "from agentsession import "
FILES = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/types.py",
    "tests/middleware/__init__.py",
    "tests/middleware/test_session.py",
)


def _starlette_sdist(cache: Path, version: str) -> Path:
    found = sorted(cache.glob(f"starlette-{version}.tar.gz"))
    if found:
        return found[0]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"),
            *("--disable-pip-version-check", "-q", "-d", str(cache), f"starlette=={version}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = sorted(cache.glob(f"starlette-{version}.tar.gz"))
    if result.returncode != 0 or not found:
        message = f"could not download the starlette {version} sdist: {result.stderr[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


def test_starlettes_session_tests_pass(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    version = importlib.metadata.version("starlette")
    sdist = _starlette_sdist(request.config.cache.mkdir("starlette-sdist"), version)
    root = f"starlette-{version}/"
    with tarfile.open(sdist) as archive:
        for name in FILES:
            member = archive.extractfile(root + name)
            assert member is not None, f"{name} missing from {sdist.name}"
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(member.read())
    test_file = tmp_path / "tests/middleware/test_session.py"
    source = test_file.read_text()
    assert ORIGINAL_IMPORT in source, "Starlette's test no longer imports what we replace"
    test_file.write_text(source.replace(ORIGINAL_IMPORT, OUR_IMPORT))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    expected = len(re.findall(r"^def test_", source, flags=re.M))

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "tests/middleware/test_session.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SESSION_SECRET_KEY": ""},
    )
    summary = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None, summary
    assert int(passed[1]) >= expected, summary
    assert "failed" not in result.stdout.splitlines()[-1], summary
    # Every test on both anyio backends Starlette supports: asyncio and trio.
    ran = {
        backend: re.findall(
            rf"^tests/middleware/test_session.py::\w+\[{backend}[\]-].* PASSED",
            result.stdout,
            re.M,
        )
        for backend in ("asyncio", "trio")
    }
    assert len(ran["asyncio"]) >= expected, summary
    assert len(ran["trio"]) == len(ran["asyncio"]), summary
    collected = re.search(r"collected (\d+) items", result.stdout)
    assert collected is not None, summary
    assert int(passed[1]) == int(collected[1]), summary
