"""Whatever arrives in the cookie or token, the answer is 200 and an empty session."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner

from agentsession.cookie.codec import SALT, CookieCodec
from tests.apps import SECRET, client_for, make_app, run_in_thread

pytestmark = pytest.mark.anyio

APP = make_app()


def signed(payload: bytes, key: str = SECRET) -> str:
    """A value signed exactly as ours are, around an arbitrary payload."""
    signer = TimestampSigner(key, salt=SALT, digest_method=hashlib.sha256)
    return signer.sign(base64.urlsafe_b64encode(payload).rstrip(b"=")).decode()


async def read_with(cookie: bytes | str, *, header: str = "cookie") -> httpx.Response:
    raw = cookie.encode("latin-1") if isinstance(cookie, str) else cookie
    value = b"session=" + raw if header == "cookie" else raw
    async with client_for(APP) as client:
        return await client.get("/read", headers=[(header.encode(), value)])


def good() -> str:
    return CookieCodec(SECRET).encode("client", None, '{"user":"alice"}')


BAD = {
    "wrong signature": good()[:-4] + ("AAAA" if not good().endswith("AAAA") else "BBBB"),
    "other key": CookieCodec("another-secret-" + "x" * 30).encode("c", None, '{"a":1}'),
    "truncated": good()[: len(good()) // 2],
    "no dots": "justsomegarbage",
    "several kilobytes": "A" * 8000,
    "non-JSON payload": signed(b"this is not json"),
    "JSON array": signed(b'["c", "s", {}]'),
    "JSON string": signed(b'"hello"'),
    "JSON object without ids": signed(b'{"user": "alice"}'),
    "data not an object": signed(b'{"c":"x","s":null,"d":[1,2]}'),
    "id not a string": signed(b'{"c":5,"s":null,"d":{}}'),
    "non-UTF-8 payload": signed(b'{"c":"\xff\xfe","s":null,"d":{}}'),
    "deeply nested": signed(b'{"c":null,"s":null,"d":' + b"[" * 100000 + b"]" * 100000 + b"}"),
    "bad base64": signed(b"x")[:0] + "!!!." + signed(b"x").split(".", 1)[1],
    "empty": "",
    "quoted": '"' + good()[:10] + '"',
}


@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
async def test_bad_cookie_gives_empty_session(value: str) -> None:
    response = await read_with(value)
    assert response.status_code == 200
    assert response.json() == {"session": {}}


@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
async def test_bad_token_gives_empty_session(value: str) -> None:
    response = await read_with(value, header="x-session-token")
    assert response.status_code == 200
    assert response.json() == {"session": {}}


async def test_non_utf8_cookie_bytes() -> None:
    response = await read_with(b"\xff\xfe\x80abc.def.ghi")
    assert response.status_code == 200
    assert response.json() == {"session": {}}


async def test_good_cookie_is_accepted() -> None:
    """The control case: the same harness accepts a valid value."""
    response = await read_with(good())
    assert response.json() == {"session": {"user": "alice"}}


async def test_signed_by_us_but_old_format_gives_empty_session() -> None:
    response = await read_with(signed(json.dumps({"c": None, "s": None}).encode()))
    assert response.json() == {"session": {}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_break_decoding(raw: bytes) -> None:
    assert CookieCodec(SECRET).decode(raw) is None


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_random_cookie_bytes_give_200(raw: bytes) -> None:
    async def run() -> None:
        response = await read_with(raw)
        assert response.status_code == 200
        assert response.json() == {"session": {}}

    run_in_thread(run)
