"""The example app in process: its defaults, its page's assets and the stand-in agent.

The browser test (test_example_browser.py) and the PostgreSQL run over HTTP
(test_example_server.py) drive the same app as a real server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from example_app.agent import MAX_MESSAGE_LENGTH
from example_app.app import STATIC_DIR, create_app

from agentsession.api import DEFAULT_MAX_BODY_SIZE
from agentsession.common import MAX_JSON_DEPTH
from agentsession.service import SessionService
from tests.apps import Chunks, client_for, lifespan, middleware_of
from tests.databases import statements
from tests.example_server import ROOT

pytestmark = pytest.mark.anyio

API = "/api/v1"
JSON = {"Content-Type": "application/json"}
MB = 1024 * 1024


async def new_conversation(client: httpx.AsyncClient, name: str | None = None) -> str:
    response = await client.post(f"{API}/sessions", json={"name": name} if name else {})
    assert response.status_code == 201, response.text
    session_id: str = response.json()["id"]
    return session_id


async def history(client: httpx.AsyncClient, session_id: str) -> list[dict[str, object]]:
    response = await client.get(f"{API}/sessions/{session_id}/chat-tasks")
    assert response.status_code == 200, response.text
    tasks: list[dict[str, object]] = response.json()["data"]
    return tasks


async def test_dev_secret_is_created_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, "example_app")
    app = create_app()
    secret = tmp_path / ".agentsession" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    key = secret.read_text().strip()
    assert len(key) >= 64
    assert "created a development secret in .agentsession/secret" in caplog.text
    assert f"keeping conversations in {tmp_path / '.agentsession' / 'example.db'}" in caplog.text
    async with lifespan(app), client_for(app) as client:
        await new_conversation(client, "kept")
        cookies = client.cookies

    caplog.clear()
    again = create_app()
    assert "using the development secret in .agentsession/secret" in caplog.text
    assert secret.read_text().strip() == key
    # The same key signs the cookie, the same file holds the rows: nothing was lost.
    async with lifespan(again), client_for(again) as client:
        client.cookies = cookies
        listed = (await client.get(f"{API}/sessions")).json()["data"]
        assert [item["name"] for item in listed] == ["kept"]


async def test_environment_settings_win(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere.db"
    env = {"SESSION_SECRET_KEY": "k" * 48, "SESSION_DATABASE_URL": f"sqlite:///{database}"}
    app = create_app(tmp_path / "state", env=env)
    async with lifespan(app), client_for(app) as client:
        await new_conversation(client)
    assert database.exists()
    assert not (tmp_path / "state").exists()  # no secret made, no example.db


async def test_an_empty_secret_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(SystemExit, match="secret is empty: delete it"):
        create_app(tmp_path, env={})


async def test_the_page_and_its_assets_load_from_the_app_only(tmp_path: Path) -> None:
    app = create_app(tmp_path, env={})
    async with lifespan(app), client_for(app) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"].startswith("default-src 'self';")
        assert page.headers["x-content-type-options"] == "nosniff"
        assets = re.findall(r'(?:href|src)="([^"#]+)"', page.text)
        assert sorted(assets) == [
            "/api/v1/me/export",  # the "Download my data" link
            "/static/app.js",
            "/static/favicon.svg",
            "/static/style.css",
        ]
        for asset, kind in (
            ("/static/app.js", "text/javascript"),
            ("/static/style.css", "text/css"),
            ("/static/favicon.svg", "image/svg+xml"),
        ):
            response = await client.get(asset)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(kind)
    # No CDN, no build step: nothing in the page's files points off the server.
    for path in STATIC_DIR.iterdir():
        outside = re.findall(r"https?://[^\s\"')]+", path.read_text())
        assert set(outside) <= {"http://www.w3.org/2000/svg"}, path


async def test_the_agent_stores_the_message_then_the_reply(tmp_path: Path) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0.5)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        sending = asyncio.create_task(
            client.post(f"/agent/sessions/{session_id}/messages", json={"message": "Hi there"})
        )
        # While the agent thinks, the message is already stored, waiting for its reply.
        for _ in range(100):
            tasks = await history(client, session_id)
            if tasks:
                break
            await asyncio.sleep(0.01)
        assert [(t["userMessage"], t["messageBubbles"], t["taskMetadata"]) for t in tasks] == [
            ("Hi there", [], {"status": "pending"})
        ]
        assert not sending.done()
        reply = await sending
        assert reply.status_code == 200, reply.text
        task = reply.json()
        assert task["taskId"] == tasks[0]["taskId"]
        assert task["createdTime"] == tasks[0]["createdTime"]
        assert task["messageBubbles"] == [{"text": "You said: Hi there"}]
        assert task["taskMetadata"] == {"status": "done", "agent": "echo"}
        assert await history(client, session_id) == [task]
        listed = (await client.get(f"{API}/sessions")).json()["data"]
        assert listed[0]["lastViewedAt"] is not None


async def test_the_agents_turns_are_searchable_and_conversations_pinnable(
    tmp_path: Path,
) -> None:
    """What the page's search box and pin buttons call: the agent's stored turns are
    found (message and reply), and a pinned conversation is listed apart."""
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        lyon = await new_conversation(client, "Trip to Lyon")
        other = await new_conversation(client, "Other")
        sent = await client.post(
            f"/agent/sessions/{lyon}/messages", json={"message": "Where to eat a bouchon?"}
        )
        assert sent.status_code == 200, sent.text
        task_id = sent.json()["taskId"]
        found = await client.get(f"{API}/search", params={"q": "bouchon"})
        assert found.status_code == 200, found.text
        (result,) = found.json()["data"]
        assert (result["sessionId"], result["taskId"]) == (lyon, task_id)
        assert [part["text"] for part in result["snippet"] if part["match"]] == [
            "bouchon",
            "bouchon",
        ], "the message and the agent's reply"
        pinned = await client.patch(f"{API}/sessions/{lyon}", json={"pinned": True})
        assert pinned.json()["pinned"] is True
        for flag, expected in (("true", [lyon]), ("false", [other])):
            listed = await client.get(f"{API}/sessions", params={"pinned": flag})
            assert [item["id"] for item in listed.json()["data"]] == expected


def test_the_page_builds_its_markup_from_text_only() -> None:
    """Messages, names and snippets are user text: the script never parses HTML, and
    the search box and results are labelled for assistive technology."""
    script = (STATIC_DIR / "app.js").read_text()
    sinks = r"\.(innerHTML|outerHTML|insertAdjacentHTML|write|writeln)\b|\beval\(|new Function"
    assert re.findall(sinks, script) == []
    page = (STATIC_DIR / "index.html").read_text()
    assert '<label for="search"' in page
    assert 'role="search"' in page
    assert 'aria-label="Search results"' in page


async def test_a_turn_costs_two_transactions(tmp_path: Path) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        service: SessionService = middleware_of(app).service
        # The revocation list is read once per staleness window: not in this turn.
        await client.get(f"{API}/session/current")
        with statements(service) as seen:
            response = await client.post(
                f"/agent/sessions/{session_id}/messages", json={"message": "count me"}
            )
        assert response.status_code == 200
        # The message and the reply: two saves of one task, each (on SQLite) one
        # transaction that touches the conversation and upserts the task.
        assert [statement.split()[0] for statement in seen] == [
            "BEGIN",
            "UPDATE",
            "INSERT",
            "COMMIT",
        ] * 2, seen


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code", "field"),
    [
        (b'{"message": "hi"', "application/json", 400, "invalid_json", "body"),
        (b"", "application/json", 400, "invalid_json", "body"),
        (b'{"message": NaN}', "application/json", 400, "invalid_json", "body"),
        (b"message=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "body"),
        (b'{"message": "hi"}', "text/plain", 415, "unsupported_media_type", "body"),
        (b'{"message": "hi"}', "", 415, "unsupported_media_type", "body"),
        (b'{"message": ""}', "application/json", 422, "invalid_input", "message"),
        (b'{"message": "  \\n "}', "application/json", 422, "invalid_input", "message"),
        (b'{"message": 5}', "application/json", 422, "invalid_input", "message"),
        (b'["hi"]', "application/json", 422, "invalid_input", "message"),
        (b'{"message": "hi", "as": "admin"}', "application/json", 422, "invalid_input", "message"),
        (
            b'{"message": "' + b"x" * (MAX_MESSAGE_LENGTH + 1) + b'"}',
            "application/json",
            422,
            "invalid_input",
            "message",
        ),
    ],
)
async def test_bad_messages_are_refused_and_store_nothing(
    tmp_path: Path, content: bytes, content_type: str, status: int, code: str, field: str
) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        response = await client.post(
            f"/agent/sessions/{session_id}/messages",
            content=content,
            headers={"Content-Type": content_type},
        )
        assert response.status_code == status
        error = response.json()["error"]
        assert (error["code"], error["field"]) == (code, field)
        assert error["message"]
        assert await history(client, session_id) == []


async def test_bodies_over_the_apis_limit_are_refused_unread(tmp_path: Path) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        url = f"/agent/sessions/{session_id}/messages"
        # The API's answer to a body over its limit, which the agent gives word for word.
        too_large = await client.post(f"{API}/sessions", json={"name": "x" * DEFAULT_MAX_BODY_SIZE})
        assert too_large.status_code == 413
        assert too_large.json() == {
            "error": {
                "code": "body_too_large",
                "message": f"the body is over the {DEFAULT_MAX_BODY_SIZE}-byte limit",
                "field": "body",
            }
        }

        # 50 MB declared in Content-Length: refused before a byte of it is read.
        declared = Chunks(count=50, size=MB)
        headers = {**JSON, "Content-Length": str(50 * MB)}
        response = await client.post(url, content=declared, headers=headers)
        assert (response.status_code, response.json()) == (413, too_large.json())
        assert declared.sent == 0

        # Streamed (chunked, no length): refused as soon as it grows past the limit.
        streamed = Chunks(count=800, size=64 * 1024)
        request = client.build_request("POST", url, content=streamed, headers=JSON)
        assert "content-length" not in request.headers
        response = await client.send(request)
        assert (response.status_code, response.json()) == (413, too_large.json())
        assert streamed.sent <= DEFAULT_MAX_BODY_SIZE // streamed.size + 1

        # Up to the limit, the body is read: padded to exactly the limit, it is a message.
        fits = b'{"message": "padded"}'.ljust(DEFAULT_MAX_BODY_SIZE)
        response = await client.post(url, content=fits + b" ", headers=JSON)
        assert (response.status_code, response.json()) == (413, too_large.json())
        response = await client.post(url, content=fits, headers=JSON)
        assert response.status_code == 200, response.text
        assert [task["userMessage"] for task in await history(client, session_id)] == ["padded"]


#: Bodies nested 100,000 deep: far past what Python's JSON parser takes.
DEEP_BODIES = {
    "array": b"[" * 100_000 + b"]" * 100_000,
    "object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "unclosed": b"[" * 100_000,
    "in-the-message": b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("raw", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
async def test_a_body_nested_100000_deep_is_invalid_json_as_in_the_api(
    tmp_path: Path, raw: bytes
) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        started = time.perf_counter()
        response = await client.post(
            f"/agent/sessions/{session_id}/messages", content=raw, headers=JSON
        )
        assert time.perf_counter() - started < 2
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_json", "body")
        assert error["message"].startswith("the body is not valid JSON: maximum recursion depth")
        # Word for word what the API's save-task route answers to the same body.
        api = await client.post(
            f"{API}/sessions/{session_id}/chat-tasks", content=raw, headers=JSON
        )
        assert (api.status_code, api.json()) == (400, response.json())
        assert await history(client, session_id) == []


def nested(depth: int) -> object:
    """An array ``depth`` arrays deep (``[[]]`` is 2)."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
async def test_a_body_at_or_past_the_nesting_limit_is_read_and_its_field_refused(
    tmp_path: Path, depth: int
) -> None:
    # Nested this deep the body still parses, so it is judged by its field: a message
    # must be a string, and the refusal names it (as the API names messageBubbles when
    # they nest deeper than MAX_JSON_DEPTH).
    body = json.dumps({"message": nested(depth - 1)})  # the body itself is `depth` deep
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as client:
        session_id = await new_conversation(client)
        url = f"/agent/sessions/{session_id}/messages"
        response = await client.post(url, content=body, headers=JSON)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == {
            "code": "invalid_input",
            "message": "the message must be a non-empty string",
            "field": "message",
        }
        assert await history(client, session_id) == []
        # The route still answers the next message as ever.
        response = await client.post(url, json={"message": "still here"})
        assert response.status_code == 200, response.text


async def test_the_agent_answers_only_in_your_own_conversations(tmp_path: Path) -> None:
    app = create_app(tmp_path, env={}, reply_delay=0)
    async with lifespan(app), client_for(app) as alice, client_for(app) as bob:
        alices = await new_conversation(alice)
        for session_id in (alices, "no-such-conversation"):
            response = await bob.post(
                f"/agent/sessions/{session_id}/messages", json={"message": "hijack"}
            )
            assert response.status_code == 404
            assert response.json()["error"] == {
                "code": "not_found",
                "message": "no such conversation",
                "field": "sessionId",
            }
        too_long = "x" * 256
        response = await bob.post(f"/agent/sessions/{too_long}/messages", json={"message": "hi"})
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "sessionId"
        assert await history(alice, alices) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "70000"], "argument --port: '70000' is not a port number (0-65535)"),
        (["--port", "eighty"], "argument --port: 'eighty' is not a port number (0-65535)"),
        (["--verbose"], "unrecognized arguments: --verbose"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "example_app", *arguments],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / ".agentsession").exists()  # nothing made before the check
