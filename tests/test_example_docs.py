"""The example app's ``/docs`` page in Chromium: Swagger UI served by the app, no CDN.

Every request the page makes is recorded; any to another host is refused (this
machine has no internet either), and the test fails if the page asked for one. The
page must render the API with its named schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, expect

from tests.example_server import ExampleServer
from tests.test_example_browser import browser

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    running = ExampleServer(tmp_path)
    running.start()
    yield running
    running.stop()


def test_the_docs_page_needs_no_cdn(browser: Browser, server: ExampleServer) -> None:
    page = browser.new_context().new_page()
    elsewhere: list[str] = []
    problems: list[str] = []

    def only_this_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(server.url).netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("agentsession example")
    expect(page.locator("#operations-agentsession-list_chat_tasks")).to_be_visible()
    expect(page.locator("#operations-agentsession-health")).to_be_visible()
    expect(page.locator("#operations-agentsession-search")).to_be_visible()
    # The named component schemas are listed under "Schemas".
    for name in (
        "Conversation",
        "ChatTaskPage",
        "Error",
        "CurrentSession",
        "SearchResultPage",
        "SearchResult",
        "SnippetPart",
    ):
        schemas = page.locator("section.models")
        expect(schemas.get_by_role("button", name=name, exact=True)).to_be_visible()
    assert elsewhere == []
    assert problems == []
