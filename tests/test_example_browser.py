"""The example app in a real browser: Debian's Chromium, headless, driven by Playwright.

The server is ``python -m example_app`` on a free loopback port, as a newcomer runs it
(SQLite in ``.agentsession/``, a development secret). The test chats, starts a second
conversation, switches back, renames, rates a reply, restarts the server and reloads,
and finds everything where it was. Another searches the history (marked words, the
conversation opened at the message found) and pins a conversation to the top. With
``AGENTSESSION_SCREENSHOT=docs/screenshot.png`` it also writes the README's screenshot
there.

Chromium is Debian's ``chromium`` package (Playwright's own browser download cannot
work offline). Without it the test skips locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.example_server import ROOT, ExampleServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: As root there is no sandbox; the rest keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1100, "height": 700}

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must run the browser test")
        pytest.skip("chromium is not installed (apt install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    running = ExampleServer(tmp_path)
    running.start()
    yield running
    running.stop()


def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A page in a new context (a new user), with the page's script errors collected."""
    page = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.goto(url)
    expect(page.locator("#client-id")).not_to_have_text("…")
    # A first visit settles on one client id: the one shown is the one the cookie holds
    # (calls sent together before any cookie would each have been given another).
    cookie_holder = page.request.get(f"{url}/api/v1/session/current").json()["clientId"]
    assert page.locator("#client-id").inner_text() == cookie_holder
    return page, problems


def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter; see it sent, the agent typing, then the reply."""
    replies = page.locator(".reply-text")
    before = replies.count()
    page.locator("#message").fill(text)
    page.locator("#message").press("Enter")
    expect(page.locator("#message")).to_have_value("")
    expect(page.locator(".bubble.user").last).to_have_text(text)
    expect(page.locator(".bubble.agent.pending")).to_have_text("The agent is typing…")
    expect(replies).to_have_count(before + 1)
    expect(replies.last).to_have_text(f"You said: {text}")
    expect(page.locator(".bubble.agent.pending")).to_have_count(0)


def expect_current(page: Page, session_id: str) -> None:
    """Wait until the sidebar marks ``session_id`` as the current conversation."""
    expect(page.locator('.conversation[aria-current="true"]')).to_have_attribute(
        "data-id", session_id
    )


def current_id(page: Page) -> str:
    current = page.locator('.conversation[aria-current="true"]')
    expect(current).to_have_count(1)
    value = current.get_attribute("data-id")
    assert value
    return value


def rename(page: Page, session_id: str, name: str, key: str = "Enter") -> None:
    """Rename a conversation from the sidebar: type ``name``, then press ``key``."""
    page.locator(f'.conversation[data-id="{session_id}"] .rename').click()
    page.locator(".rename-input").fill(name)
    page.locator(".rename-input").press(key)


def rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as connection:
        return list(connection.execute(sql))


def test_chat_rename_rate_restart_reload(
    browser: Browser, server: ExampleServer, tmp_path: Path
) -> None:
    page, problems = open_page(browser, server.url)
    conversations = page.locator("#conversations .conversation")
    expect(conversations).to_have_count(0)
    expect(page.locator("#empty")).to_have_text("Type a message below to start a conversation.")

    # The first message starts a conversation, named after it, and gets a reply.
    send(page, "Hello agent")
    expect(conversations).to_have_count(1)
    expect(conversations.locator(".open")).to_have_text(["Hello agent"])
    expect(page.locator("#conversation-title")).to_have_text("Hello agent")
    first = current_id(page)

    # Shift+Enter is a new line; the message is text, never markup.
    page.locator("#message").fill("Line one <b>bold?</b>")
    page.locator("#message").press("Shift+Enter")
    page.locator("#message").press_sequentially("line two")
    expect(page.locator("#message")).to_have_value("Line one <b>bold?</b>\nline two")
    page.locator("#message").press("Enter")
    expect(page.locator(".reply-text")).to_have_count(2)
    expect(page.locator(".reply-text").last).to_have_text(
        "You said: Line one <b>bold?</b>\nline two"
    )
    expect(page.locator("#messages b")).to_have_count(0)

    # A second conversation, then back to the first.
    page.get_by_role("button", name="+ New conversation").click()
    expect(conversations).to_have_count(2)
    expect(page.locator("#messages .turn")).to_have_count(0)
    expect(page.locator("#conversation-title")).to_have_text("New conversation")
    send(page, "Second thread")
    second = current_id(page)
    assert second != first
    expect(conversations.locator(".open")).to_have_text(["Second thread", "Hello agent"])

    page.locator(f'.conversation[data-id="{first}"] .open').click()
    expect_current(page, first)
    expect(page.locator(".bubble.user")).to_have_text(
        ["Hello agent", "Line one <b>bold?</b>\nline two"]
    )

    # Rename from the sidebar: Enter saves.
    rename(page, first, "Trip to Lyon")
    expect(page.locator(f'.conversation[data-id="{first}"] .open')).to_have_text("Trip to Lyon")
    expect(page.locator("#conversation-title")).to_have_text("Trip to Lyon")
    # Escape cancels.
    rename(page, first, "Not this", key="Escape")
    expect(page.locator(f'.conversation[data-id="{first}"] .open')).to_have_text("Trip to Lyon")

    # Thumbs up on the first reply, down on the second.
    turns = page.locator("#messages .turn")
    turns.nth(0).get_by_role("button", name="Good reply").click()
    expect(turns.nth(0).get_by_role("button", name="Good reply")).to_have_attribute(
        "aria-pressed", "true"
    )
    turns.nth(1).get_by_role("button", name="Bad reply").click()
    expect(turns.nth(1).get_by_role("button", name="Bad reply")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(turns.nth(1).get_by_role("button", name="Good reply")).to_have_attribute(
        "aria-pressed", "false"
    )

    # Delete from the sidebar: a dismissed confirmation keeps it, an accepted one doesn't.
    page.get_by_role("button", name="+ New conversation").click()
    expect(conversations).to_have_count(3)
    expect(page.locator("#messages .turn")).to_have_count(0)
    send(page, "Throwaway")
    third = current_id(page)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator(f'.conversation[data-id="{third}"] .delete').click()
    expect(conversations).to_have_count(3)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'.conversation[data-id="{third}"] .delete').click()
    expect(conversations).to_have_count(2)
    expect(page.locator("#messages .turn")).to_have_count(0)
    page.locator(f'.conversation[data-id="{first}"] .open').click()
    expect_current(page, first)

    # An API error is shown, not swallowed: a conversation deleted behind the page's
    # back (same cookies) is opened from the sidebar; the page drops it from the list.
    page.get_by_role("button", name="+ New conversation").click()
    expect(conversations).to_have_count(3)
    expect(page.locator("#messages .turn")).to_have_count(0)
    send(page, "Gone soon")
    doomed = current_id(page)
    page.locator(f'.conversation[data-id="{first}"] .open').click()
    expect_current(page, first)
    assert page.request.delete(f"{server.url}/api/v1/sessions/{doomed}").status == 204
    page.locator(f'.conversation[data-id="{doomed}"] .open').click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#error-text")).to_have_text("Error 404: no such conversation")
    expect(conversations).to_have_count(2)
    expect_current(page, first)
    page.get_by_role("button", name="Dismiss the error").click()
    expect(page.get_by_role("alert")).to_be_hidden()

    # The server stops: sending fails visibly, and the message stays in the box.
    server.stop()
    page.locator("#message").fill("Are you there?")
    page.locator("#message").press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("The server could not be reached")
    expect(page.locator("#message")).to_have_value("Are you there?")
    expect(page.locator(".reply-text")).to_have_count(2)

    # Restarted and reloaded: the same current conversation, its whole history, the
    # name and the ratings, all read back from the server.
    server.start()
    api_calls: list[str] = []
    page.on("request", lambda request: api_calls.append(f"{request.method} {request.url}"))
    page.reload()
    expect(page.locator("#conversation-title")).to_have_text("Trip to Lyon")
    expect_current(page, first)
    expect(page.locator(".bubble.user")).to_have_text(
        ["Hello agent", "Line one <b>bold?</b>\nline two"]
    )
    expect(page.locator(".reply-text")).to_have_text(
        ["You said: Hello agent", "You said: Line one <b>bold?</b>\nline two"]
    )
    expect(conversations.locator(".open")).to_have_text(["Trip to Lyon", "Second thread"])
    turns = page.locator("#messages .turn")
    expect(turns.nth(0).get_by_role("button", name="Good reply")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(turns.nth(1).get_by_role("button", name="Bad reply")).to_have_attribute(
        "aria-pressed", "true"
    )
    # Loading costs five API calls (four database reads; /session/current reads none):
    # the sidebar lists the pinned conversations, then the others.
    base = f"{server.url}/api/v1"
    assert sorted(call for call in api_calls if "/api/" in call) == [
        f"GET {base}/feedback?sessionId={first}&limit=100",
        f"GET {base}/session/current",
        f"GET {base}/sessions/{first}/chat-tasks?limit=100",
        f"GET {base}/sessions?pinned=false&limit=100",
        f"GET {base}/sessions?pinned=true&limit=100",
    ]
    send(page, "Still here after the restart")
    expect(page.get_by_role("alert")).to_be_hidden()
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=shot)
    if target := os.environ.get("AGENTSESSION_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / target)
    # The browser logs the 404 and the refused connection above; nothing else went wrong.
    assert [problem for problem in problems if "Failed to load resource" not in problem] == []

    # What the page showed is what the database holds.
    database = tmp_path / ".agentsession" / "example.db"
    assert sorted(rows(database, "SELECT id, name FROM sessions")) == sorted(
        [(first, "Trip to Lyon"), (second, "Second thread")]
    )
    assert rows(database, "SELECT user_message FROM chat_tasks ORDER BY created_time, id") == [
        ("Hello agent",),
        ("Line one <b>bold?</b>\nline two",),
        ("Second thread",),
        ("Still here after the restart",),
    ]
    assert sorted(rows(database, "SELECT rating FROM feedback")) == [("down",), ("up",)]
    secret = tmp_path / ".agentsession" / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    log = server.output()
    assert f"created a development secret in {Path('.agentsession/secret')}" in log
    assert f"using the development secret in {Path('.agentsession/secret')}" in log


def test_another_user_sees_none_of_it(browser: Browser, server: ExampleServer) -> None:
    alice, _ = open_page(browser, server.url)
    send(alice, "Alice's plans")
    alices = current_id(alice)

    bob, problems = open_page(browser, server.url)
    assert bob.locator("#client-id").text_content() != alice.locator("#client-id").text_content()
    expect(bob.locator("#conversations .conversation")).to_have_count(0)
    expect(bob.locator("#messages .turn")).to_have_count(0)
    expect(bob.locator("#no-conversations")).to_be_visible()
    # Not by asking for it either: Alice's conversation is a 404 to Bob, as a missing one.
    for path in (f"/api/v1/sessions/{alices}", f"/api/v1/sessions/{alices}/chat-tasks"):
        assert bob.request.get(f"{server.url}{path}").status == 404
    refused = bob.request.post(
        f"{server.url}/agent/sessions/{alices}/messages", data={"message": "hijack"}
    )
    assert refused.status == 404
    send(bob, "Bob's own")
    expect(bob.locator("#conversations .conversation")).to_have_count(1)
    bob.reload()
    expect(bob.locator(".bubble.user")).to_have_text(["Bob's own"])

    alice.reload()
    expect(alice.locator("#conversations .conversation .open")).to_have_text(["Alice's plans"])
    expect(alice.locator(".bubble.user")).to_have_text(["Alice's plans"])
    assert problems == []


def test_a_conversation_deleted_on_another_device_is_let_go(
    browser: Browser, server: ExampleServer
) -> None:
    laptop, problems = open_page(browser, server.url)
    send(laptop, "Started on the laptop")
    shared = current_id(laptop)
    # The same user on a second device: the same signed cookie, so the same client id.
    phone = browser.new_context(viewport=VIEWPORT).new_page()  # type: ignore[arg-type]
    phone.context.add_cookies(laptop.context.cookies())
    phone.goto(server.url)
    expect(phone.locator("#client-id")).to_have_text(laptop.locator("#client-id").inner_text())
    expect(phone.locator(".bubble.user")).to_have_text(["Started on the laptop"])
    phone.once("dialog", lambda dialog: dialog.accept())
    phone.locator(f'.conversation[data-id="{shared}"] .delete').click()
    expect(phone.locator("#conversations .conversation")).to_have_count(0)

    # The laptop's cookie still names the deleted conversation as the current one: a
    # reload lets it go, with no error, and the next message starts a new one.
    with laptop.expect_response(
        lambda response: response.request.method == "PUT" and "/session/current" in response.url
    ) as let_go:
        laptop.reload()
    assert let_go.value.status == 200
    assert let_go.value.json()["sessionId"] is None
    expect(laptop.locator("#conversations .conversation")).to_have_count(0)
    expect(laptop.locator("#empty")).to_have_text("Type a message below to start a conversation.")
    expect(laptop.get_by_role("alert")).to_be_hidden()
    assert laptop.request.get(f"{server.url}/api/v1/session/current").json()["sessionId"] is None
    send(laptop, "A fresh start")
    assert current_id(laptop) != shared
    assert [problem for problem in problems if "Failed to load resource" not in problem] == []


def test_reload_shows_the_name_whichever_answer_comes_first(
    browser: Browser, server: ExampleServer
) -> None:
    """The list of conversations and the current one's history load side by side; the
    title needs both, so it must be right when the list is the last to answer."""
    page, problems = open_page(browser, server.url)
    send(page, "Plan a trip")
    rename(page, current_id(page), "Trip to Lyon")
    expect(page.locator("#conversation-title")).to_have_text("Trip to Lyon")

    held: list[Route] = []  # the list's requests, held until the history is shown

    def hold(route: Route) -> None:
        held.append(route)

    page.route(re.compile(r"/api/v1/sessions\?"), hold)
    with (
        page.expect_response(lambda response: "/chat-tasks?" in response.url),
        page.expect_response(lambda response: "/api/v1/feedback?" in response.url),
    ):
        page.reload()
    expect(page.locator(".bubble.user")).to_have_text(["Plan a trip"])
    assert len(held) == 2  # pinned, then the others
    for route in held:
        route.continue_()
    expect(page.locator(".conversation .open")).to_have_text(["Trip to Lyon"])
    expect(page.locator("#conversation-title")).to_have_text("Trip to Lyon")
    assert problems == []


def save_turn(page: Page, url: str, session_id: str, message: str, reply: str) -> str:
    """A chat task saved through the API with the page's cookies; its id."""
    task_id = f"t-{secrets.token_hex(6)}"
    body = {"taskId": task_id, "userMessage": message, "messageBubbles": [{"text": reply}]}
    saved = page.request.post(f"{url}/api/v1/sessions/{session_id}/chat-tasks", data=body)
    assert saved.status == 200, saved.text()
    return task_id


def search(page: Page, text: str) -> None:
    """Type ``text`` in the search box (the page searches once typing pauses)."""
    page.locator("#search").fill(text)


def test_search_opens_the_message_and_pins_stay_on_top(
    browser: Browser, server: ExampleServer
) -> None:
    page, problems = open_page(browser, server.url)
    conversations = page.locator("#conversations .conversation")
    send(page, "Plan a trip to Lyon")
    trip = current_id(page)
    # A long history: the turn to find comes first, far above the latest ones.
    found_id = save_turn(
        page, server.url, trip, "Where to eat? <b>bouchon</b> or brasserie", "A bouchon, surely."
    )
    for n in range(12):
        save_turn(page, server.url, trip, f"Question {n}", "Filler. " * 60)
    page.get_by_role("button", name="+ New conversation").click()
    expect(page.locator("#messages .turn")).to_have_count(0)
    send(page, "Groceries for the weekend")
    groceries = current_id(page)
    expect(conversations.locator(".open")).to_have_text(
        ["Groceries for the weekend", "Plan a trip to Lyon"]
    )

    # Matches are shown as the user types: the words marked, every other character text.
    search(page, "bouch")
    results = page.locator("#results .open-result")
    expect(results).to_have_count(1)
    expect(page.locator("#conversation-list")).to_be_hidden()
    expect(page.locator("#search-status")).to_have_text("1 result")
    result = results.first
    expect(result).to_have_attribute("data-task-id", found_id)
    expect(result.locator(".result-title")).to_have_text("Plan a trip to Lyon")
    expect(result.locator("mark")).to_have_text(["bouchon", "bouchon"])
    expect(result.locator(".snippet")).to_contain_text("<b>bouchon</b> or brasserie")
    expect(page.locator("#results b")).to_have_count(0)

    # Opening it: that conversation, scrolled to the message, which is flagged.
    result.click()
    expect_current(page, trip)
    found = page.locator(".turn.found")
    expect(found).to_have_count(1)
    expect(found).to_have_attribute("data-task-id", found_id)
    expect(found).to_be_in_viewport()
    expect(found).to_be_focused()
    expect(found.locator("mark")).to_have_text(["bouchon", "bouchon"])
    expect(page.locator("#messages .turn").last).not_to_be_in_viewport()

    # A conversation's name matches too (listed before messages); opening it opens it.
    search(page, "weekend")
    expect(results).to_have_count(2)
    expect(results.first.locator(".result-kind")).to_have_text("Conversation")
    expect(results.first.locator(".result-title mark")).to_have_text(["weekend"])
    results.first.click()
    expect_current(page, groceries)
    expect(page.locator(".turn.found")).to_have_count(0)

    # The keyboard alone: the box, Down to the results, Enter to open one; Escape
    # empties the box and shows the conversations again.
    search(page, "brasserie")
    expect(results).to_have_count(1)
    page.locator("#search").press("ArrowDown")
    expect(results.first).to_be_focused()
    page.keyboard.press("Enter")
    expect_current(page, trip)
    expect(page.locator(".turn.found")).to_be_in_viewport()
    page.locator("#search").press("Escape")
    expect(page.locator("#search")).to_have_value("")
    expect(page.locator("#search-results")).to_be_hidden()
    expect(page.locator("#conversation-list")).to_be_visible()

    # Words found nowhere, and a query with no word in it, say so (no error).
    search(page, "zeppelin")
    expect(page.locator("#search-status")).to_have_text("Nothing found for “zeppelin”.")
    search(page, "?!")
    expect(page.locator("#search-status")).to_have_text(
        "Type a word (letters or digits) to search for."
    )
    page.locator("#search").press("Escape")

    # Pinning the older conversation puts it on top, and it stays there after a reload.
    pin = page.locator(f'.conversation[data-id="{trip}"] .pin')
    expect(pin).to_have_attribute("aria-pressed", "false")
    page.locator(f'.conversation[data-id="{groceries}"] .open').click()
    expect_current(page, groceries)
    page.locator(f'.conversation[data-id="{trip}"]').hover()  # its buttons show on hover
    pin.click()
    expect(conversations.locator(".open")).to_have_text(
        ["Plan a trip to Lyon", "Groceries for the weekend"]
    )
    expect(pin).to_have_attribute("aria-pressed", "true")
    expect(pin).to_be_focused()
    page.reload()
    expect(conversations.locator(".open")).to_have_text(
        ["Plan a trip to Lyon", "Groceries for the weekend"]
    )
    expect(page.locator(f'.conversation[data-id="{trip}"]')).to_have_class(re.compile("pinned"))
    expect_current(page, groceries)
    listed = page.request.get(f"{server.url}/api/v1/sessions?pinned=true").json()["data"]
    assert [item["id"] for item in listed] == [trip]
    # A newer conversation goes below the pinned one; unpinning puts it back in its place.
    page.get_by_role("button", name="+ New conversation").click()
    expect(page.locator("#messages .turn")).to_have_count(0)
    send(page, "Newest thread")
    expect(conversations.locator(".open")).to_have_text(
        ["Plan a trip to Lyon", "Newest thread", "Groceries for the weekend"]
    )
    page.locator(f'.conversation[data-id="{trip}"] .pin').click()
    expect(conversations.locator(".open")).to_have_text(
        ["Newest thread", "Groceries for the weekend", "Plan a trip to Lyon"]
    )
    page.reload()
    expect(conversations.locator(".open")).to_have_text(
        ["Newest thread", "Groceries for the weekend", "Plan a trip to Lyon"]
    )
    assert problems == []
