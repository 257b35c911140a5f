"""SessionMiddleware on the wire: cookies, flags, dirty tracking, ids, rotation, limits."""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from agentsession import ConfigError, SessionMiddleware, SessionTooLarge
from agentsession.cookie.codec import CookieCodec
from tests.apps import SECRET, client_for, lazy_only, make_app, middleware_of, run_in_thread

pytestmark = pytest.mark.anyio


def set_cookie(response: httpx.Response) -> str | None:
    """The one Set-Cookie header of a response, or None; more than one is a bug."""
    values = response.headers.get_list("set-cookie")
    assert len(values) <= 1, values
    return values[0] if values else None


def attributes(header: str) -> list[str]:
    return header.split("; ")[1:]


def cookie_value(header: str) -> str:
    morsel = SimpleCookie()
    morsel.load(header)
    return morsel["session"].value


async def test_write_then_read_round_trips() -> None:
    async with client_for(make_app()) as client:
        response = await client.post("/write", json={"user": "alice", "n": 1})
        assert response.status_code == 200
        assert set_cookie(response) is not None
        response = await client.get("/read")
        assert response.json() == {"session": {"user": "alice", "n": 1}}


async def test_set_cookie_spelled_like_starlette() -> None:
    async with client_for(make_app()) as client:
        header = set_cookie(await client.post("/write", json={"a": 1}))
    assert header is not None
    assert re.fullmatch(
        r"session=[A-Za-z0-9_\-.]+; path=/; Max-Age=1209600; httponly; samesite=lax", header
    ), header


async def test_read_of_unchanged_session_sends_no_cookie() -> None:
    async with client_for(make_app()) as client:
        await client.post("/write", json={"a": 1})
        response = await client.get("/read")
        assert response.json() == {"session": {"a": 1}}
        assert set_cookie(response) is None
        assert response.headers["vary"] == "Cookie"


@lazy_only
async def test_untouched_session_costs_no_decode_and_sends_nothing() -> None:
    app = make_app()
    async with client_for(app) as client:
        await client.post("/write", json={"a": 1})
        middleware = middleware_of(app)
        calls: list[object] = []
        real_decode = middleware.codec.decode
        middleware.codec.decode = lambda *a, **k: calls.append(a) or real_decode(*a, **k)  # type: ignore[method-assign]
        response = await client.get("/untouched")
        assert response.text == "ok"
        assert calls == []
        assert set_cookie(response) is None
        assert "vary" not in response.headers
        await client.get("/read")
        assert len(calls) == 1


async def test_nested_mutation_is_saved() -> None:
    async with client_for(make_app()) as client:
        await client.post("/write", json={"cart": []})
        response = await client.post("/append", json="apple")
        assert set_cookie(response) is not None
        response = await client.post("/append", json="pear")
        assert set_cookie(response) is not None
        assert (await client.get("/read")).json() == {"session": {"cart": ["apple", "pear"]}}


async def test_same_value_write_still_sends_cookie_like_starlette() -> None:
    async with client_for(make_app()) as client:
        await client.post("/write", json={"a": 1})
        assert set_cookie(await client.post("/write", json={"a": 1})) is not None


async def test_refresh_after_resends_old_cookie() -> None:
    app = make_app(max_age=1000, refresh_after=100)
    async with client_for(app) as client:
        codec = middleware_of(app).codec
        old = int(time.time()) - 150
        codec._current.get_timestamp = lambda: old  # type: ignore[method-assign]
        value = codec.encode("client-1", None, '{"a":1}')
        del codec._current.get_timestamp
        client.cookies.set("session", value)
        response = await client.get("/read")
        assert response.json() == {"session": {"a": 1}}
        header = set_cookie(response)
        assert header is not None
        state = codec.decode(cookie_value(header))
        assert state is not None
        assert state.client_id == "client-1"
        assert state.issued_at >= int(time.time()) - 2
        # A fresh cookie is not re-sent.
        client.cookies.clear()
        fresh = await client.get("/read", headers={"cookie": f"session={cookie_value(header)}"})
        assert fresh.json() == {"session": {"a": 1}}
        assert set_cookie(fresh) is None


async def test_expired_cookie_gives_empty_session() -> None:
    app = make_app(max_age=100)
    async with client_for(app) as client:
        codec = middleware_of(app).codec
        codec._current.get_timestamp = lambda: int(time.time()) - 101  # type: ignore[method-assign]
        client.cookies.set("session", codec.encode("c", None, '{"a":1}'))
        response = await client.get("/read")
        assert response.status_code == 200
        assert response.json() == {"session": {}}


@pytest.mark.parametrize(
    ("options", "base_url", "expected"),
    [
        ({}, "http://testserver", ["httponly", "samesite=lax"]),
        ({"same_site": "strict"}, "http://testserver", ["httponly", "samesite=strict"]),
        (
            {"same_site": "none", "https_only": True},
            "https://testserver",
            ["httponly", "samesite=none", "secure"],
        ),
        ({"https_only": True}, "http://testserver", ["httponly", "samesite=lax", "secure"]),
        ({"https_only": False}, "https://testserver", ["httponly", "samesite=lax"]),
        ({"https_only": "auto"}, "http://testserver", ["httponly", "samesite=lax"]),
        ({"https_only": "auto"}, "https://testserver", ["httponly", "samesite=lax", "secure"]),
        (
            {"domain": "example.com", "partitioned": True, "https_only": True},
            "https://testserver",
            ["httponly", "samesite=lax", "secure", "domain=example.com", "partitioned"],
        ),
    ],
)
async def test_cookie_flags(options: dict[str, object], base_url: str, expected: list[str]) -> None:
    async with client_for(make_app(**options), base_url) as client:
        header = set_cookie(await client.post("/write", json={"a": 1}))
    assert header is not None
    assert attributes(header) == ["path=/", "Max-Age=1209600", *expected]


@pytest.mark.parametrize(
    ("max_age", "expected"), [(None, None), (0, "Max-Age=0"), (3600, "Max-Age=3600")]
)
async def test_max_age(max_age: int | None, expected: str | None) -> None:
    async with client_for(make_app(max_age=max_age)) as client:
        header = set_cookie(await client.post("/write", json={"a": 1}))
    assert header is not None
    ages = [a for a in attributes(header) if a.lower().startswith("max-age")]
    assert ages == ([expected] if expected else [])


async def test_path_attribute() -> None:
    async with client_for(make_app(path="/app")) as client:
        header = set_cookie(await client.post("/write", json={"a": 1}))
    assert header is not None
    assert attributes(header)[0] == "path=/app"


async def test_clear_deletes_cookie_and_ids() -> None:
    async with client_for(make_app()) as client:
        first = (await client.get("/ids")).json()["clientId"]
        await client.post("/write", json={"user": "alice"})
        response = await client.post("/clear")
        header = set_cookie(response)
        assert header is not None
        assert header.startswith("session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT;")
        assert (await client.get("/read")).json() == {"session": {}}
        assert (await client.get("/ids")).json()["clientId"] != first


async def test_server_error_saves_nothing() -> None:
    app = make_app()
    async with client_for(app) as client:
        response = await client.get("/fail")
        assert response.status_code == 500
        assert set_cookie(response) is None
        assert (await client.get("/read")).json() == {"session": {}}


async def test_too_large_session_raises() -> None:
    app = make_app()
    async with client_for(app) as client:
        with pytest.raises(SessionTooLarge) as info:
            await client.post("/write", json={"blob": "x" * 5000})
    assert info.value.size > 4096
    assert info.value.limit == 4096 - len("session=")
    assert str(info.value.size) in str(info.value)


async def test_vary_merges_with_app_header() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/vary")
    assert response.headers.get_list("vary") == ["Accept-Encoding, Cookie"]


async def test_client_id_is_stable_and_not_in_session() -> None:
    async with client_for(make_app()) as client:
        response = await client.get("/ids")
        client_id = response.json()["clientId"]
        assert len(client_id) >= 43  # 256 bits, base64url
        assert set_cookie(response) is not None
        again = await client.get("/ids")
        assert again.json()["clientId"] == client_id
        assert set_cookie(again) is None
        assert (await client.get("/read")).json() == {"session": {}}


async def test_first_write_creates_client_id() -> None:
    app = make_app()
    async with client_for(app) as client:
        header = set_cookie(await client.post("/write", json={"a": 1}))
        assert header is not None
        state = middleware_of(app).codec.decode(cookie_value(header))
        assert state is not None
        assert state.client_id is not None
        assert (await client.get("/ids")).json()["clientId"] == state.client_id


async def test_session_id_and_regenerate() -> None:
    async with client_for(make_app()) as client:
        await client.post("/write", json={"user": "alice"})
        client_id = (await client.get("/ids")).json()["clientId"]
        response = await client.post("/current", json={"sessionId": "conv-1"})
        assert response.json() == {"sessionId": "conv-1"}
        assert (await client.get("/ids")).json() == {"clientId": client_id, "sessionId": "conv-1"}
        new = (await client.post("/regenerate")).json()["clientId"]
        assert new != client_id
        assert (await client.get("/ids")).json() == {"clientId": new, "sessionId": None}
        assert (await client.get("/read")).json() == {"session": {"user": "alice"}}


async def test_websocket_reads_session() -> None:
    app = make_app()
    with TestClient(app) as client:
        client.post("/write", json={"user": "alice"})
        client.post("/current", json={"sessionId": "conv-9"})
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json() == {"session": {"user": "alice"}, "clientId": "conv-9"}


async def test_missing_secret_refuses_to_start() -> None:
    app = Starlette(middleware=[Middleware(SessionMiddleware)])
    with pytest.raises(ConfigError, match="SESSION_SECRET_KEY"), TestClient(app):
        pass
    with pytest.raises(ConfigError, match="SESSION_SECRET_KEY"):
        SessionMiddleware(make_app())


async def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_SECRET_KEY", SECRET)
    app = Starlette(routes=make_app().routes, middleware=[Middleware(SessionMiddleware)])
    async with client_for(app) as client:
        await client.post("/write", json={"a": 1})
        assert (await client.get("/read")).json() == {"session": {"a": 1}}


async def test_short_secret_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    SessionMiddleware(make_app(), secret_key="short")
    assert "at least 32" in caplog.text


async def test_key_rotation() -> None:
    old_key, new_key = "old-key-" + "o" * 32, "new-key-" + "n" * 32
    old_app = make_app(secret_key=old_key)
    async with client_for(old_app) as client:
        header = set_cookie(await client.post("/write", json={"user": "alice"}))
    assert header is not None
    old_cookie = cookie_value(header)

    rotated = make_app(secret_key=new_key, secret_key_fallbacks=[old_key])
    async with client_for(rotated) as client:
        client.cookies.set("session", old_cookie)
        response = await client.get("/read")
        assert response.json() == {"session": {"user": "alice"}}
        header = set_cookie(response)
        assert header is not None, "a cookie signed with a fallback key is re-signed"
        new_cookie = cookie_value(header)
    assert CookieCodec(new_key).decode(new_cookie) is not None
    assert CookieCodec(old_key).decode(new_cookie) is None

    dropped = make_app(secret_key=new_key)
    async with client_for(dropped) as client:
        client.cookies.set("session", old_cookie)
        assert (await client.get("/read")).json() == {"session": {}}
        client.cookies.set("session", new_cookie)
        assert (await client.get("/read")).json() == {"session": {"user": "alice"}}


async def test_fallbacks_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    old_key = "old-key-" + "o" * 32
    monkeypatch.setenv("SESSION_SECRET_KEY_FALLBACKS", f" {old_key} , other")
    value = CookieCodec(old_key).encode("c", None, '{"a":1}')
    async with client_for(make_app()) as client:
        client.cookies.set("session", value)
        assert (await client.get("/read")).json() == {"session": {"a": 1}}


async def test_several_cookies_of_the_same_name_take_the_valid_one() -> None:
    app = make_app()
    good = CookieCodec(SECRET).encode("c", None, '{"a":1}')
    async with client_for(app) as client:
        response = await client.get("/read", headers={"cookie": f"session=bad; session={good}"})
    assert response.json() == {"session": {"a": 1}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=5))
def test_any_json_session_round_trips(data: dict[str, object]) -> None:
    async def run() -> None:
        async with client_for(make_app()) as client:
            written = await client.post("/write", json=data)
            assert set_cookie(written) is not None
            read = await client.get("/read")
            assert read.json() == {"session": data}
            assert set_cookie(read) is None, "an unchanged session is not re-sent"

    run_in_thread(run)


@lazy_only
async def test_direct_scope_access_loads_the_session() -> None:
    """Code that reads scope["session"] without request.session still sees the data."""
    import copy

    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from agentsession import Session

    async def direct(request: Request) -> JSONResponse:
        session = request.scope["session"]
        assert isinstance(session, Session)
        return JSONResponse(
            {
                "contains": "user" in session,
                "notEmpty": session != {},
                "merged": session | {"extra": 1},
                "copied": copy.deepcopy(session),
                "reversed": list(reversed(session)),
            }
        )

    app = make_app()
    app.router.routes.append(Route("/direct", direct))
    async with client_for(app) as client:
        await client.post("/write", json={"user": "alice"})
        response = await client.get("/direct")
    assert response.json() == {
        "contains": True,
        "notEmpty": True,
        "merged": {"user": "alice", "extra": 1},
        "copied": {"user": "alice"},
        "reversed": ["user"],
    }
    assert response.headers["vary"] == "Cookie"


async def test_a_nested_change_never_leaks_into_another_request_with_the_same_cookie() -> None:
    """The codec shares a remembered cookie's parsed state between requests; a list the
    app changes in place belongs to its own request (the next one with the old cookie
    gets the old list)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from agentsession import SessionMiddleware

    async def seed(request: Request) -> JSONResponse:
        request.session["cart"] = ["apple"]
        request.session["profile"] = {"name": "a"}
        return JSONResponse({})

    async def add(request: Request) -> JSONResponse:
        request.session["cart"].append("pear")  # in place: no __setitem__
        request.session["profile"]["name"] += "!"
        return JSONResponse(request.session["cart"])

    app = Starlette(routes=[Route("/seed", seed), Route("/add", add)])
    app.add_middleware(SessionMiddleware, secret_key="k" * 40)
    async with client_for(app) as client:
        seeded = await client.get("/seed")
        old = cookie_value(set_cookie(seeded) or "")
        for _ in range(3):
            response = await client.get("/add", headers={"cookie": f"session={old}"})
            assert response.json() == ["apple", "pear"]
            header = set_cookie(response)
            assert header is not None  # the nested change is sent
