"""Clients without a cookie jar carry the session in X-Session-Token (or a Bearer header)."""

from __future__ import annotations

import pytest

from agentsession.cookie.codec import CookieCodec
from tests.apps import SECRET, client_for, make_app

pytestmark = pytest.mark.anyio


async def test_token_client_round_trips_its_session() -> None:
    async with client_for(make_app()) as client:
        first = await client.post(
            "/write", json={"user": "bot"}, headers={"X-Session-Token": "new"}
        )
        assert first.status_code == 200
        assert "set-cookie" not in first.headers
        token = first.headers["x-session-token"]
        assert not list(client.cookies.jar)

        ids = await client.get("/ids", headers={"X-Session-Token": token})
        assert "x-session-token" not in ids.headers, "unchanged: no new token"
        client_id = ids.json()["clientId"]

        changed = await client.post(
            "/current", json={"sessionId": "conv-1"}, headers={"X-Session-Token": token}
        )
        token = changed.headers["x-session-token"]
        read = await client.get("/read", headers={"X-Session-Token": token})
        assert read.json() == {"session": {"user": "bot"}}
        assert "Cookie, X-Session-Token" in read.headers["vary"]
        again = await client.get("/ids", headers={"Authorization": f"Bearer {token}"})
        assert again.json() == {"clientId": client_id, "sessionId": "conv-1"}
        assert "set-cookie" not in again.headers


async def test_token_is_the_signed_cookie_value() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/ids", headers={"X-Session-Token": "new"})
    state = CookieCodec(SECRET).decode(response.headers["x-session-token"])
    assert state is not None
    assert state.client_id == response.json()["clientId"]


async def test_untouched_token_request_gets_no_token() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/untouched", headers={"X-Session-Token": "new"})
    assert "x-session-token" not in response.headers


async def test_token_request_ignores_cookies() -> None:
    async with client_for(make_app()) as client:
        await client.post("/write", json={"user": "browser"})
        response = await client.get("/read", headers={"X-Session-Token": "new"})
        assert response.json() == {"session": {}}


async def test_foreign_bearer_is_left_to_the_app() -> None:
    """A Bearer value that is not ours (a JWT, an API key) does not switch transports."""
    async with client_for(make_app()) as client:
        await client.post("/write", json={"user": "browser"})
        response = await client.get(
            "/read", headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"}
        )
        assert response.json() == {"session": {"user": "browser"}}


async def test_browser_never_sees_a_token() -> None:
    async with client_for(make_app()) as client:
        response = await client.post("/write", json={"user": "browser"})
    assert "x-session-token" not in response.headers
    assert "set-cookie" in response.headers


async def test_token_clear_issues_empty_token() -> None:
    async with client_for(make_app()) as client:
        written = await client.post("/write", json={"a": 1}, headers={"X-Session-Token": "new"})
        token = written.headers["x-session-token"]
        cleared = await client.post("/clear", headers={"X-Session-Token": token})
        empty = cleared.headers["x-session-token"]
        state = CookieCodec(SECRET).decode(empty)
        assert state is not None
        assert (state.client_id, state.session_id, state.data) == (None, None, {})
        read = await client.get("/read", headers={"X-Session-Token": empty})
        assert read.json() == {"session": {}}
