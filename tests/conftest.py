"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import pytest

ENV_VARS = (
    "SESSION_SECRET_KEY",
    "SESSION_SECRET_KEY_FALLBACKS",
    "SESSION_DATABASE_URL",
    "WEB_UI_GATEWAY_DATABASE_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's session settings."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
