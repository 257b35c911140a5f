"""DynamoDB going away under load: the HTTP API answers 503 only, and recovers by itself.

The test runs a DynamoDB Local of its own (``tests.dynamodb_local.DynamoDBLocal``: a
spare port, its tables in a directory of its own), an app on it in process, and
writers through the HTTP API (conversations, chat tasks, state, feedback, listings).
Under that load the server is stopped: every answer is then 2xx or 503 with
``Retry-After`` (never a 500, never a hang past the service timeout). A new server
on the same port and directory comes up: the same app, not restarted, serves again,
and every conversation it acknowledged is listed.

Without Java or DynamoDB Local this skips locally and fails in CI.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from agentsession import SessionService
from agentsession.config import ServiceConfig
from agentsession.stores.dynamodb import DynamoDBStore
from tests.apps import client_for
from tests.dynamodb_local import DynamoDBLocal
from tests.faults import require
from tests.test_redis_restart import api_app

pytestmark = pytest.mark.anyio

API = "/api/v1"
#: The service's per-call timeout (seconds) in this test.
TIMEOUT = 3.0
WRITERS = 8


@pytest.fixture
def server() -> Iterator[DynamoDBLocal]:
    """A DynamoDB Local of the test's own, running; killed and its directory removed."""
    available, reason = DynamoDBLocal.available()
    require(available, reason)
    DynamoDBLocal.drop_stale()
    made = DynamoDBLocal.make()
    try:
        made.start()
        yield made
    finally:
        made.remove()


@pytest.fixture
async def service(server: DynamoDBLocal) -> AsyncIterator[SessionService]:
    table = f"outage-{secrets.token_hex(4)}"
    store = DynamoDBStore(table, endpoint_url=server.url)
    await store.migrate()
    await store.close()
    made = SessionService.from_config(
        ServiceConfig(type="dynamodb", table_name=table, endpoint_url=server.url)
    )
    made.timeout = TIMEOUT
    await made.start()
    try:
        yield made
    finally:
        await made.close()


@dataclass
class Load:
    """What the writers saw: each answer's status by the phase its request began in
    (``before``, ``stopping``, ``down``: the server has exited, ``restarting``,
    ``after``), and the conversations acknowledged."""

    phase: str = "before"
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # user -> conversation ids
    slowest: float = 0.0


async def writer(client: httpx.AsyncClient, user: str, load: Load, stop: asyncio.Event) -> None:
    """Write and read through the API until ``stop``, recording every answer."""
    headers = {"X-User": user}
    ids = load.acknowledged.setdefault(user, set())
    n = 0

    async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        started, phase = time.monotonic(), load.phase  # counted in the phase it began in
        response = await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        load.slowest = max(load.slowest, time.monotonic() - started)
        load.statuses[(phase, response.status_code)] += 1
        if phase == load.phase == "down" and response.status_code != 503:
            load.bad.append(f"{method} {path}: {response.status_code} while DynamoDB was down")
        if response.status_code == 503:
            if "retry-after" not in response.headers:
                load.bad.append(f"{method} {path}: 503 without Retry-After")
        elif response.status_code >= 300:
            load.bad.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response

    while not stop.is_set():
        n += 1
        created = await call("POST", "/sessions", json={"name": f"{user} {n}"})
        if created.status_code != 201:
            await asyncio.sleep(0.05)
            continue
        conversation = created.json()["id"]
        ids.add(conversation)
        task = {"taskId": f"t{n}", "messageBubbles": [{"text": "hello"}]}
        await call("POST", f"/sessions/{conversation}/chat-tasks", json=task)
        rating = {"taskId": f"t{n}", "sessionId": conversation, "feedbackType": "up"}
        await call("POST", "/feedback", json=rating)
        await call("GET", f"/sessions/{conversation}/chat-tasks")
        await call("GET", "/sessions", params={"limit": "5"})


async def test_an_outage_under_load_is_503s_only_and_recovers_without_a_restart(
    server: DynamoDBLocal, service: SessionService
) -> None:
    load = Load()
    stop = asyncio.Event()
    users = [f"outage-{secrets.token_hex(3)}-{n}" for n in range(WRITERS)]
    async with client_for(api_app(service), base_url=f"http://testserver{API}") as client:
        tasks = [asyncio.create_task(writer(client, user, load, stop)) for user in users]
        try:
            await asyncio.sleep(1.5)
            load.phase = "stopping"
            await asyncio.to_thread(server.stop, "TERM")  # returns once it has exited
            load.phase = "down"
            await asyncio.sleep(TIMEOUT + 1)
            load.phase = "restarting"
            await asyncio.to_thread(server.start)  # same port, same directory
            load.phase = "after"
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT * 4)

        print(dict(load.statuses))  # shown with -rP, or -s
        assert not load.bad, "\n".join(load.bad[:30])
        assert load.statuses[("before", 201)] > 0, load.statuses
        assert load.statuses[("down", 503)] > 0, load.statuses
        # (A request begun while it was down may end after the restart, as a 2xx; one
        # begun and ended while it was down is a 503: checked in ``writer``.)
        assert (
            sum(
                n
                for (phase, status), n in load.statuses.items()
                if phase == "after" and status < 300
            )
            > 0
        )
        assert load.slowest < TIMEOUT + 2

        # The same app, not restarted, serves again, and lists what it acknowledged.
        for user in users:
            listed: set[str] = set()
            cursor: str | None = None
            while True:
                params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                page = await client.get("/sessions", params=params, headers={"X-User": user})
                assert page.status_code == 200, page.text
                listed |= {item["id"] for item in page.json()["data"]}
                cursor = page.json()["meta"]["nextCursor"]
                if cursor is None:
                    break
            assert load.acknowledged[user] <= listed, user
