"""CookieCodec: itsdangerous' format, key rotation, the size guard."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from itsdangerous import BadSignature, TimestampSigner

from agentsession import SessionTooLarge
from agentsession.cookie.codec import SALT, TOKEN_PREFIX, CookieCodec, dump_json

KEY = "k" * 40
OLD = "o" * 40


def reference(key: str = KEY) -> TimestampSigner:
    """Plain itsdangerous, configured as cookie/codec.py says."""
    return TimestampSigner(key, salt=SALT, digest_method=hashlib.sha256)


def test_value_verifies_with_plain_itsdangerous() -> None:
    value = CookieCodec(KEY).encode("client", "conv", '{"a":[1,2]}')
    payload = reference().unsign(value, max_age=60)
    from itsdangerous.encoding import base64_decode

    assert json.loads(base64_decode(payload)) == {"c": "client", "s": "conv", "d": {"a": [1, 2]}}
    with pytest.raises(BadSignature):
        reference(OLD).unsign(value)


def test_the_salt_never_changes() -> None:
    """Changing it would log out every user: cookies already issued must keep verifying."""
    assert SALT == b"agentsession.session"


def test_decodes_what_plain_itsdangerous_signs() -> None:
    from itsdangerous.encoding import base64_encode

    signed = reference().sign(base64_encode(b'{"c":"x","s":null,"d":{"k":"v"}}')).decode()
    state = CookieCodec(KEY).decode(signed)
    assert state is not None
    assert (state.client_id, state.session_id, state.data) == ("x", None, {"k": "v"})
    assert state.data_json == '{"k":"v"}'
    assert abs(state.issued_at - time.time()) < 5
    assert state.stale_key is False


def test_rotation_marks_fallback_values_stale() -> None:
    old_value = CookieCodec(OLD).encode("c", None, "{}")
    rotated = CookieCodec(KEY, [OLD])
    state = rotated.decode(old_value)
    assert state is not None
    assert state.stale_key is True
    fresh = rotated.encode("c", None, "{}")
    assert reference().unsign(fresh)
    assert CookieCodec(KEY).decode(fresh) is not None
    assert CookieCodec(KEY).decode(old_value) is None


def test_max_age_is_enforced() -> None:
    codec = CookieCodec(KEY, max_age=100)
    value = codec.encode("c", None, "{}")
    now = int(time.time())
    assert codec.decode(value, now=now + 100) is not None
    assert codec.decode(value, now=now + 102) is None
    assert CookieCodec(KEY).decode(value, now=now + 10**9) is not None


def test_size_guard_names_the_size() -> None:
    codec = CookieCodec(KEY, max_size=200)
    with pytest.raises(SessionTooLarge) as info:
        codec.encode("c", None, dump_json({"blob": "x" * 300}))
    assert info.value.limit == 200
    assert info.value.size > 300
    assert f"{info.value.size} bytes" in str(info.value)


def test_tokens_start_with_the_prefix() -> None:
    assert CookieCodec(KEY).encode(None, None, "{}").startswith(TOKEN_PREFIX)


def test_unserialisable_value_names_the_problem() -> None:
    with pytest.raises(TypeError, match="JSON cannot encode"):
        dump_json({"when": object()})


def test_a_repeated_value_is_verified_once_and_still_expires() -> None:
    """``decode`` remembers verified values: a repeat skips the HMAC check and the parse
    (the same state comes back), but is still refused once past ``max_age``."""
    codec = CookieCodec(KEY, max_age=100)
    value = codec.encode("c", None, '{"a":1}')
    first = codec.decode(value)
    assert first is not None
    assert codec.decode(value) is first
    assert codec.decode(value.encode()) is first
    now = int(time.time())
    assert codec.decode(value, now=now + 102) is None  # expiry is checked on every use


def test_only_verified_values_are_remembered() -> None:
    codec = CookieCodec(KEY)
    value = codec.encode("c", None, '{"a":1}')
    body, _, signature = value.rpartition(".")
    forged = f"{body}.{signature[:-2]}AA"
    for _ in range(3):
        assert codec.decode(forged) is None
    assert forged.encode() not in codec._verified
    assert codec.decode("é") is None  # not ASCII: no valid value


def test_the_verified_values_are_bounded() -> None:
    from agentsession.cookie.codec import VERIFIED_CACHE_SIZE

    codec = CookieCodec(KEY)
    values = [codec.encode(f"client-{n}", None, "{}") for n in range(VERIFIED_CACHE_SIZE + 50)]
    for value in values:
        assert codec.decode(value) is not None
    assert len(codec._verified) == VERIFIED_CACHE_SIZE
    assert values[0].encode() not in codec._verified  # the oldest went first
    assert codec.decode(values[0]) is not None  # and is verified again when it comes back
