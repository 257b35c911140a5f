"""The example app starts with no secret configured and keeps a session."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.apps import client_for

pytestmark = pytest.mark.anyio


async def test_example_app_creates_and_reuses_dev_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from example_app.app import create_app

    app = create_app()
    secret = tmp_path / ".agentsession" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    key = secret.read_text().strip()
    assert os.environ["SESSION_SECRET_KEY"] == key
    async with client_for(app) as client:
        assert "<b>1</b>" in (await client.get("/")).text
        assert "<b>2</b>" in (await client.get("/")).text
    monkeypatch.delenv("SESSION_SECRET_KEY")
    create_app()
    assert os.environ["SESSION_SECRET_KEY"] == key
