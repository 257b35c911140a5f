"""The example page's account buttons in Chromium: download my data, log out everywhere
(a copied cookie loses its identity too), delete my data."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.example_server import ExampleServer
from tests.test_example_browser import VIEWPORT, browser, open_page, send, server

__all__ = ["browser", "server"]  # the fixtures, shared with the page's main test


def test_download_logout_everywhere_and_delete(browser: Browser, server: ExampleServer) -> None:
    page, problems = open_page(browser, server.url)
    send(page, "Keep this for me")
    client_id = page.locator("#client-id").inner_text()

    # Download my data: the export document, with the message in it.
    with page.expect_download() as info:
        page.get_by_role("link", name="Download my data").click()
    document = json.loads(Path(info.value.path()).read_text())
    assert document["format"] == "agentsession-user-export"
    assert document["userId"] == client_id
    assert document["conversations"][0]["chatTasks"][0]["userMessage"] == "Keep this for me"

    # A copy of the cookie in another browser is the same user...
    copy = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    copy.add_cookies(page.context.cookies())
    stolen = copy.new_page()
    stolen.goto(server.url)
    expect(stolen.locator("#client-id")).to_have_text(client_id)

    # ...until the user logs out everywhere: both get a fresh anonymous identity.
    page.get_by_role("button", name="Log out everywhere").click()
    expect(page.locator("#client-id")).not_to_have_text(client_id)
    expect(page.locator("#conversations .conversation")).to_have_count(0)
    stolen.reload()
    expect(stolen.locator("#client-id")).not_to_have_text("…")
    expect(stolen.locator("#client-id")).not_to_have_text(client_id)
    copy.close()

    # Delete my data: confirmed, every conversation goes, and the page starts afresh.
    send(page, "Forget this")
    expect(page.locator("#conversations .conversation")).to_have_count(1)
    before = page.locator("#client-id").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete my data").click()
    expect(page.locator("#client-id")).not_to_have_text(before)
    expect(page.locator("#conversations .conversation")).to_have_count(0)
    exported = page.request.get(f"{server.url}/api/v1/me/export").json()
    assert exported["conversations"] == []
    assert problems == []
