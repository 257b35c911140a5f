"""The middleware configured from a YAML file, and the README's FastAPI quickstart."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from agentsession import SessionMiddleware, get_client_id, load_config
from tests.apps import SECRET, client_for

pytestmark = pytest.mark.anyio

YAML = """
session:
  secret_key: "${SESSION_SECRET_KEY}"
  cookie_name: "chat"
  max_age: "1h"
  same_site: "strict"
  https_only: "auto"
  domain: null
session_service:
  type: "memory"
"""


def fastapi_app(config_path: Path | None) -> FastAPI:
    """The README quickstart, verbatim apart from the config path."""
    config = load_config(config_path)
    app = FastAPI()

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, object]:
        visits = request.session.get("visits", 0) + 1
        request.session["visits"] = visits
        return {"visits": visits, "client": get_client_id(request)}

    app.add_middleware(SessionMiddleware, config=config)
    return app


async def test_fastapi_quickstart_from_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSION_SECRET_KEY", SECRET)
    path = tmp_path / "agentsession.yaml"
    path.write_text(YAML)
    async with client_for(fastapi_app(path)) as client:
        first = await client.get("/hello")
        assert first.json()["visits"] == 1
        header = first.headers["set-cookie"]
        assert header.startswith("chat=")
        assert header.endswith("; path=/; Max-Age=3600; httponly; samesite=strict")
        second = await client.get("/hello")
        assert second.json() == {"visits": 2, "client": first.json()["client"]}
    async with client_for(fastapi_app(path), "https://testserver") as client:
        assert "; secure" in (await client.get("/hello")).headers["set-cookie"]


async def test_fastapi_quickstart_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_SECRET_KEY", SECRET)
    async with client_for(fastapi_app(None)) as client:
        response = await client.get("/hello")
    assert response.headers["set-cookie"].startswith("session=")
    assert "Max-Age=1209600" in response.headers["set-cookie"]


async def test_config_without_secret_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentsession import ConfigError

    with pytest.raises(ConfigError, match="SESSION_SECRET_KEY"):
        SessionMiddleware(FastAPI(), config=load_config())


async def test_config_fallbacks_rotate(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentsession.cookie.codec import CookieCodec

    old = "old-" + "o" * 40
    monkeypatch.setenv("SESSION_SECRET_KEY", SECRET)
    monkeypatch.setenv("SESSION_SECRET_KEY_FALLBACKS", old)
    value = CookieCodec(old).encode("c", None, '{"visits":4}')
    async with client_for(fastapi_app(None)) as client:
        response = await client.get("/hello", headers={"cookie": f"session={value}"})
    assert response.json() == {"visits": 5, "client": "c"}


def test_config_and_competing_arguments_refuse() -> None:
    from agentsession import AgentSessionConfig

    with pytest.raises(TypeError, match="max_age"):
        SessionMiddleware(FastAPI(), secret_key=SECRET, max_age=60, config=AgentSessionConfig())


async def test_secret_argument_overrides_config() -> None:
    from agentsession import AgentSessionConfig
    from agentsession.cookie.codec import CookieCodec

    middleware = SessionMiddleware(FastAPI(), secret_key=SECRET, config=AgentSessionConfig())
    assert CookieCodec(SECRET).decode(middleware.codec.encode("c", None, "{}")) is not None


@pytest.mark.parametrize(
    ("option", "value"), [("same_site", "sideways"), ("https_only", "sometimes")]
)
def test_bad_arguments_are_named(option: str, value: str) -> None:
    from agentsession import ConfigError

    with pytest.raises(ConfigError, match=option):
        SessionMiddleware(FastAPI(), secret_key=SECRET, **{option: value})  # type: ignore[arg-type]
