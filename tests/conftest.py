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
        # setenv first so that teardown restores the original state even when the
        # code under test sets the variable itself (the example app does).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
