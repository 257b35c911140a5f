"""What only the DynamoDB store has: its table, its conditional writes, TTL, requests, errors.

The contract itself is checked by the service, API, retention, race and property
suites, which run on DynamoDB too (``dynamodb`` in ``BACKENDS``). This file checks, on
the tests' DynamoDB Local (``tests/dynamodb_local.py``), a new table per test:

* optimistic state writes lose nothing: 50 concurrent writers of different keys;
* 50 concurrent saves of one task id give one task (created once, the last body);
* expired conversations are written with DynamoDB's TTL attribute and filtered on read;
* ``agentsession migrate`` creates the table (on-demand) and turns TTL on, then does
  nothing; a table of that name with another layout is refused, unchanged; ``stats``
  refuses, ``prune`` works;
* the requests each call makes, counted;
* search reads the user's own partition with ``Query`` (never a ``Scan``), page after
  page, and agrees with the memory store;
* the task rule keeps a pinned conversation's tasks, also one pinned after the batch
  read them (its transaction's guard); a pin leaves DynamoDB's TTL attribute as it is;
* retention batches (conditional transactions of up to 100 actions) and the dry-run
  counts agree with the memory store's; DynamoDB's own TTL deletion is survived;
* failures are classified: unreachable, bad credentials, no table.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from unittest.mock import ANY

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError

from agentsession import cli
from agentsession.common import now_ms
from agentsession.config import RetentionConfig, ServiceConfig, config_from_mapping
from agentsession.errors import ConfigError, InvalidInput, StoreMisconfigured, StoreUnavailable
from agentsession.retention import prune
from agentsession.search import parse_query
from agentsession.service import SessionService
from agentsession.stores.base import (
    RULES,
    Cutoffs,
    FeedbackRecord,
    SearchHit,
    SearchQuery,
    SessionRecord,
    TaskRecord,
    Touch,
)
from agentsession.stores.dynamodb import DynamoDBStore
from agentsession.stores.dynamodb import retention as retention_module
from agentsession.stores.dynamodb import search as search_module
from agentsession.stores.dynamodb.errors import translate
from agentsession.stores.dynamodb.layout import TTL_GRACE_SECONDS, sortable
from agentsession.stores.dynamodb.table import definition
from agentsession.stores.memory import MemoryStore
from tests.conftest import new_user
from tests.databases import dynamodb_dump, dynamodb_service, dynamodb_table, prune_all
from tests.dynamodb_local import shared_endpoint
from tests.test_redis_store import DAY, population
from tests.test_redis_store import everything as redis_everything

pytestmark = pytest.mark.anyio

WRITERS = 50


@pytest.fixture
async def table() -> AsyncIterator[tuple[str, str]]:
    """``(endpoint, table)``: a new table, deleted afterwards."""
    async with dynamodb_table() as made:
        yield made


@pytest.fixture
async def service(table: tuple[str, str]) -> AsyncIterator[SessionService]:
    async with dynamodb_service(*table) as started:
        yield started


def store_of(service: SessionService) -> DynamoDBStore:
    assert isinstance(service.store, DynamoDBStore)
    return service.store


async def raw_item(store: DynamoDBStore, pk: str, sk: str) -> dict[str, Any] | None:
    response = await store.connection.request(
        "get_item", Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    item: dict[str, Any] | None = response.get("Item")
    return item


# Conditional writes under concurrency


async def test_50_concurrent_writers_of_different_state_keys_lose_nothing(
    service: SessionService,
) -> None:
    user = new_user()
    conversation = await service.create_session(user)

    async def write(n: int) -> None:
        state = await service.state(user, conversation.id)
        await state.set(f"key-{n}", n)

    await asyncio.gather(*(write(n) for n in range(WRITERS)))
    state = await service.state(user, conversation.id)
    assert {f"key-{n}": n for n in range(WRITERS)} == {
        key: await state.get(key) for key in [f"key-{n}" for n in range(WRITERS)]
    }
    loaded = await store_of(service).load_state(user, conversation.id, now_ms())
    assert loaded is not None
    assert len(json.loads(loaded[0])["default"]) == WRITERS
    assert loaded[1] >= WRITERS  # one version per write that got in


async def test_50_concurrent_saves_of_one_task_id_give_one_task(service: SessionService) -> None:
    user = new_user()
    conversation = await service.create_session(user)
    saved = await asyncio.gather(
        *(
            service.save_task(user, conversation.id, "the-task", message_bubbles=[{"n": n}])
            for n in range(WRITERS)
        )
    )
    page = await service.list_tasks(user, conversation.id)
    assert [task.id for task in page.items] == ["the-task"]
    (task,) = page.items
    assert len({item.created_time for item in saved}) == 1  # created once, kept by updates
    assert task.created_time == saved[0].created_time
    assert task.message_bubbles in [item.message_bubbles for item in saved]


async def test_a_task_id_is_the_users_own_and_one_conversations(service: SessionService) -> None:
    alice, bob = new_user(), new_user()
    first, second = await service.create_session(alice), await service.create_session(alice)
    bobs = await service.create_session(bob)
    await service.save_task(alice, first.id, "t")
    await service.save_task(bob, bobs.id, "t")  # another user's: no conflict
    with pytest.raises(Exception, match="task_id 't' is already in use"):
        await service.save_task(alice, second.id, "t")
    # Its conversation deleted, the id is free again.
    await service.delete_session(alice, first.id)
    assert (await service.save_task(alice, second.id, "t")).session_id == second.id


async def test_what_dynamodbs_own_ttl_deletion_leaves_is_taken_over(
    service: SessionService,
) -> None:
    """DynamoDB's TTL may delete a conversation item before the retention job: its id's
    registry item and its tasks are left. The id and the task ids are free again."""
    store = store_of(service)
    user = new_user()
    gone = await service.create_session(user)
    await service.save_task(user, gone.id, "t")
    await service.add_feedback(user, gone.id, "t", "up")
    await store.connection.request(
        "delete_item", Key={"pk": {"S": f"U#{user}"}, "sk": {"S": f"C#{gone.id}"}}
    )
    other = await service.create_session(user)
    assert (await service.save_task(user, other.id, "t")).session_id == other.id
    assert await raw_item(store, f"U#{user}", "F#t") is None  # its old feedback went too
    again = await service.create_session(new_user(), session_id=gone.id)
    assert again.id == gone.id


# TTL


async def test_expired_conversations_carry_the_ttl_attribute_and_are_filtered_on_read(
    service: SessionService,
) -> None:
    store = store_of(service)
    user, now = new_user(), now_ms()
    expired = SessionRecord(
        "exp-" + secrets.token_hex(4), user, None, "old", None, 1, 1, None, now - 1
    )
    live = SessionRecord(
        "live-" + secrets.token_hex(4), user, None, "new", None, 1, 1, None, now + 60_000
    )
    for record in (expired, live):
        await store.insert_session(record)
    item = await raw_item(store, f"U#{user}", f"C#{expired.id}")
    assert item is not None  # DynamoDB has not deleted it (it does so lazily, days later)
    assert int(item["ttl"]["N"]) == -(-(now - 1) // 1000) + TTL_GRACE_SECONDS
    assert int(item["ex"]["N"]) == now - 1

    assert await store.get_session(user, expired.id, now) is None
    assert [r.id for r in await store.list_sessions(user, now, 10, None)] == [live.id]
    assert await store.load_state(user, expired.id, now) is None
    assert await store.write_state(user, expired.id, now, None, "{}", 0) is None
    assert await store.update_session(user, expired.id, now, None, viewed=True) is None
    assert await store.list_tasks(user, expired.id, now, 10, None) is None
    task = TaskRecord("t", expired.id, user, None, [], None, now, now)
    assert await store.save_task(task, Touch(now + 60_000)) is None
    assert not await store.delete_session(user, expired.id, now)
    # ... and a TTL without expiry is removed when the expiry is.
    await store.update_session(user, live.id, now, None)
    item = await raw_item(store, f"U#{user}", f"C#{live.id}")
    assert item is not None
    assert "ttl" not in item
    assert "ex" not in item


async def test_a_service_ttl_slides_the_ttl_attribute(table: tuple[str, str]) -> None:
    async with dynamodb_service(*table, ttl=3600) as service:
        user = new_user()
        record = await service.create_session(user)
        item = await raw_item(store_of(service), f"U#{user}", f"C#{record.id}")
        assert item is not None
        first = int(item["ttl"]["N"])
        await asyncio.sleep(1.1)
        await service.save_task(user, record.id, "t")
        item = await raw_item(store_of(service), f"U#{user}", f"C#{record.id}")
        assert item is not None
        assert int(item["ttl"]["N"]) > first


# Requests per call


async def test_requests_per_call(service: SessionService) -> None:
    store = store_of(service)
    connection = store.connection
    user = new_user()

    async def count(call: Any) -> int:
        before = connection.requests_made
        await call
        return connection.requests_made - before

    record = SessionRecord("r-" + secrets.token_hex(4), user, None, None, None, 1, 1, None, None)
    now = now_ms()
    task = TaskRecord("t1", record.id, user, "hi", [], None, now, now)
    counts = {
        "insert_session": await count(store.insert_session(record)),
        "get_session": await count(store.get_session(user, record.id, now)),
        "list_sessions": await count(store.list_sessions(user, now, 20, None)),
        "update_session": await count(
            store.update_session(user, record.id, now, None, viewed=True)
        ),
        "load_state": await count(store.load_state(user, record.id, now)),
        "write_state": await count(store.write_state(user, record.id, now, None, "{}", 0)),
        "save_task (new)": await count(store.save_task(task, Touch(None))),
        "save_task (again)": await count(store.save_task(task, Touch(None))),
        "list_tasks (last page)": await count(store.list_tasks(user, record.id, now, 20, None)),
        "update_session (pin)": await count(
            store.update_session(user, record.id, now, None, pinned=True)
        ),
        "list_sessions (pinned)": await count(
            store.list_sessions(user, now, 20, None, pinned=True)
        ),
        "search (a small user)": await count(
            store.search(user, SearchQuery("hi", ("hi",)), now, 20, None)
        ),
    }
    for n in range(2, 5):
        await store.save_task(TaskRecord(f"t{n}", record.id, user, None, [], None, now, now))
    counts["list_tasks (more after it)"] = await count(
        store.list_tasks(user, record.id, now, 2, None)
    )
    print(counts)  # shown with -rP, or -s
    assert counts == {
        "insert_session": 1,
        "get_session": 1,
        "list_sessions": 1,
        "update_session": 1,
        "load_state": 1,
        "write_state": 1,
        "save_task (new)": 1,
        "save_task (again)": 2,
        "list_tasks (last page)": 1,
        "list_tasks (more after it)": 2,
        "update_session (pin)": 1,
        "list_sessions (pinned)": 1,
        "search (a small user)": 2,  # the live conversations, then the tasks
    }
    assert await count(store.ping()) == 1


# Search and pins


class Requests:
    """Records every request of a store's connection: ``(operation, params)``."""

    def __init__(self, store: DynamoDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []
        request = store.connection.request

        async def recording(operation: str, **params: Any) -> dict[str, Any]:
            self.made.append((operation, params))
            return await request(operation, **params)

        monkeypatch.setattr(store.connection, "request", recording)


async def test_search_queries_only_the_users_partition_and_agrees_with_the_memory_store(
    service: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, memory = store_of(service), MemoryStore()
    user, other, now = new_user(), new_user(), now_ms()
    monkeypatch.setattr(search_module, "TASK_PAGE", 5)  # the Query takes pages
    big = "deployment " + "x" * 6_000
    for owner in (user, other):
        for c in range(3):
            record = SessionRecord(
                f"{owner}-{c}",
                owner,
                None,
                "deploy plan" if c else None,
                None,
                now - c,
                now - c,
                None,
                now + 5_000 if c == 2 else None,  # expired at the search's now
                c == 1,
            )
            for target in (store, memory):
                await target.insert_session(record)
            for t in range(12):
                text = big if t % 2 else "deployment notes"
                task = TaskRecord(
                    f"t{c}-{t}",
                    record.id,
                    owner,
                    "deploy " + "app " * t,
                    [{"type": "text", "text": text}],
                    None,
                    now - t,
                    now - t,
                )
                for target in (store, memory):
                    assert await target.save_task(task) is not None
    requests = Requests(store, monkeypatch)
    later = now + 10_000
    for text in ("deploy", "deploy app", "notes", "plan", "xx", "nothing"):
        query = SearchQuery(text, parse_query(text))
        for limit in (5, 100):
            found: dict[str, list[SearchHit]] = {}
            for name, target in (("dynamodb", store), ("memory", memory)):
                hits: list[SearchHit] = []
                after = None
                while True:
                    page = await target.search(user, query, later, limit, after)
                    hits += page
                    if len(page) < limit:
                        break
                    after = page[-1].sort_key
                found[name] = hits
            assert found["dynamodb"] == found["memory"], (text, limit)
            assert {hit.session_id for hit in found["dynamodb"]} <= {f"{user}-0", f"{user}-1"}
    assert requests.made
    for operation, params in requests.made:
        assert operation == "query", operation  # never a Scan of the table
        assert params["ExpressionAttributeValues"][":pk"] == {"S": f"U#{user}"}
    requests.made.clear()
    await store.search(user, SearchQuery("deploy", ("deploy",)), later, 10, None)
    listing, *task_pages = [params for _, params in requests.made]
    assert listing["IndexName"] == "listing"
    assert len(task_pages) == 36 // 5 + 1  # every task of the user, 5 a page
    assert all("IndexName" not in params for params in task_pages)  # the partition itself


async def test_the_pinned_listing_reads_past_many_unpinned_in_few_requests(
    service: SessionService,
) -> None:
    store, user = store_of(service), new_user()
    records = [
        SessionRecord(f"c{n:03d}", user, None, None, None, n, n, None, None, n in (3, 250))
        for n in range(300)
    ]
    for record in records:
        await store.insert_session(record)
    before = store.connection.requests_made
    pinned = await store.list_sessions(user, 1000, 20, None, pinned=True)
    assert [record.id for record in pinned] == ["c250", "c003"]  # newest first
    assert store.connection.requests_made - before == 2  # 200 listing items a request
    after = pinned[0].sort_key
    assert [r.id for r in await store.list_sessions(user, 1000, 1, after, pinned=True)] == ["c003"]
    unpinned = await store.list_sessions(user, 1000, 3, None, pinned=False)
    assert [record.id for record in unpinned] == ["c299", "c298", "c297"]


async def test_the_task_rule_keeps_pinned_conversations_tasks_even_pinned_meanwhile(
    service: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, user, now = store_of(service), new_user(), now_ms()
    old = now - 40 * DAY
    ids = []
    for n in range(2):
        record = SessionRecord(
            f"p{n}-{secrets.token_hex(3)}", user, None, None, None, old, old, None, now + DAY
        )
        ids.append(record.id)
        await store.insert_session(record)
        for t in range(3):
            await store.save_task(
                TaskRecord(f"{record.id}-t{t}", record.id, user, "hi", [], None, old, old)
            )
        feedback = FeedbackRecord(
            f"{record.id}-f", record.id, f"{record.id}-t0", user, "up", None, old
        )
        assert await store.save_feedback(feedback, old) is not None
    pinned, unpinned = ids
    before = await raw_item(store, f"U#{user}", f"C#{pinned}")
    assert before is not None
    updated = await store.update_session(user, pinned, now, now + DAY, pinned=True)
    assert updated is not None
    assert updated.pinned
    after = await raw_item(store, f"U#{user}", f"C#{pinned}")
    assert after is not None
    assert after["pn"] == {"N": "1"}
    assert after["ttl"] == before["ttl"]  # DynamoDB's TTL (conversations only) as it was
    task_item = await raw_item(store, f"U#{user}", f"T#{pinned}-t0")
    assert task_item is not None
    assert "ttl" not in task_item
    cut = Cutoffs(now, now - 10 * DAY, None, None)
    assert await store.count_prunable("chat_tasks", cut) == 3

    # The batch read both conversations' tasks before the pin (its lookup saw none
    # pinned): the transaction's guard keeps the pinned one's, the others go.
    async def none_pinned(connection: Any, homes: Any) -> set[tuple[str, str]]:
        return set()

    monkeypatch.setattr(retention_module, "_pinned", none_pinned)
    assert await store.prune_batch("chat_tasks", cut, None, 100) == (3, None)
    monkeypatch.undo()
    kept = await store.list_tasks(user, pinned, now, 10, None)
    assert [task.id for task in kept or []] == [f"{pinned}-t{t}" for t in range(3)]
    assert await store.list_tasks(user, unpinned, now, 10, None) == []
    assert await raw_item(store, f"U#{user}", f"F#{pinned}-t0") is not None
    assert await store.count_prunable("chat_tasks", cut) == 0
    assert await store.prune_batch("chat_tasks", cut, None, 1) == (0, ANY)

    await store.update_session(user, pinned, now, now + DAY, pinned=False)
    after = await raw_item(store, f"U#{user}", f"C#{pinned}")
    assert after is not None
    assert "pn" not in after
    assert await store.count_prunable("chat_tasks", cut) == 3
    assert (await prune_all(store, "chat_tasks", cut, 2))[0] == 3


# Both orders agree with the memory store


@pytest.mark.parametrize("newest_first", [False, True])
async def test_task_pages_in_both_orders_agree_with_the_memory_store(
    service: SessionService, newest_first: bool
) -> None:
    user, now = new_user(), now_ms()
    record = SessionRecord("o-" + secrets.token_hex(4), user, None, None, None, 1, 1, None, None)
    memory = MemoryStore()
    stores = (store_of(service), memory)
    times = [5, 5, 5, 7, 7, 9, 1, 1]  # ties broken by id
    for store in stores:
        await store.insert_session(record)
        for n, created in enumerate(times):
            task = TaskRecord(f"t{n % 3}-{n}", record.id, user, None, [n], None, created, created)
            await store.save_task(task)
    for limit in (1, 2, 3, 20):
        pages: list[list[str]] = []
        for store in stores:
            seen: list[str] = []
            after: tuple[int, str] | None = None
            while True:
                page = await store.list_tasks(
                    user, record.id, now, limit, after, newest_first=newest_first
                )
                assert page is not None
                seen += [task.id for task in page]
                if len(page) < limit:
                    break
                after = page[-1].sort_key
            pages.append(seen)
        assert pages[0] == pages[1], limit
        assert len(pages[0]) == len(times)


# Long ids


async def test_ids_of_255_four_byte_characters_page_in_order(service: SessionService) -> None:
    user = new_user()
    conversation = await service.create_session(user)
    ids = ["\U0001f600" * 255, "\U0001f600" * 254 + "\U0001f601", "a" * 255, "\u4e2d" * 255]
    for task_id in ids:
        await service.save_task(user, conversation.id, task_id)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await service.list_tasks(user, conversation.id, limit=1, cursor=cursor)
        seen += [task.id for task in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(sortable(ids[0]).encode()) <= 900


# migrate, stats, prune through the command line


def cli_env(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    monkeypatch.setenv("SESSION_DYNAMODB_TABLE", table)
    monkeypatch.setenv("SESSION_DYNAMODB_ENDPOINT_URL", shared_endpoint())


async def test_migrate_creates_the_table_with_ttl_then_does_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"agentsession-m-{secrets.token_hex(4)}"
    cli_env(monkeypatch, name)
    store = DynamoDBStore(name, endpoint_url=shared_endpoint())
    try:
        assert await asyncio.to_thread(cli.main, ["migrate"]) == 0
        out = capsys.readouterr().out
        assert "created" in out
        assert "TTL" in out
        table = (await store.connection.request("describe_table"))["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = (await store.connection.request("describe_time_to_live"))["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
        assert await asyncio.to_thread(cli.main, ["migrate"]) == 0
        assert "nothing to do" in capsys.readouterr().out
        # The app starts on it; stats refuses, prune works.
        await store.start()
        assert await asyncio.to_thread(cli.main, ["stats"]) == 2
        assert "CloudWatch" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, ["prune", "--dry-run"]) == 0
    finally:
        await store.connection.request("delete_table")
        await store.close()


async def test_migrate_refuses_a_table_of_another_layout_and_leaves_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"agentsession-x-{secrets.token_hex(4)}"
    store = DynamoDBStore(name, endpoint_url=shared_endpoint())
    other = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
    }
    await store.connection.request("create_table", **other)
    try:
        cli_env(monkeypatch, name)
        assert await asyncio.to_thread(cli.main, ["migrate"]) == 2
        err = capsys.readouterr().err
        assert "another layout" in err
        assert "key schema" in err
        assert "does not change" in err
        table = (await store.connection.request("describe_table"))["Table"]
        assert table["KeySchema"] == other["KeySchema"]
        assert "LocalSecondaryIndexes" not in table
        with pytest.raises(StoreMisconfigured, match="another layout"):
            await store.start()
    finally:
        await store.connection.request("delete_table")
        await store.close()


def test_the_table_definition_is_on_demand_with_two_local_indexes() -> None:
    made = definition("t-table")
    assert made["BillingMode"] == "PAY_PER_REQUEST"
    assert [index["IndexName"] for index in made["LocalSecondaryIndexes"]] == ["listing", "tasks"]


# Errors


async def test_a_missing_table_is_misconfigured_at_start() -> None:
    store = DynamoDBStore(
        "agentsession-none-" + secrets.token_hex(4), endpoint_url=shared_endpoint()
    )
    try:
        with pytest.raises(StoreMisconfigured, match="agentsession migrate"):
            await store.start()
        with pytest.raises(StoreMisconfigured, match="ResourceNotFoundException"):
            await store.ping()
    finally:
        await store.close()


async def test_bad_credentials_are_misconfigured(
    table: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-valid-key!")  # DynamoDB Local refuses it
    store = DynamoDBStore(table[1], endpoint_url=table[0])
    try:
        with pytest.raises(StoreMisconfigured, match="credentials"):
            await store.ping()
    finally:
        await store.close()


async def test_an_unreachable_endpoint_is_unavailable_quickly() -> None:
    from tests.faults import spare_port

    store = DynamoDBStore("agentsession", endpoint_url=f"http://127.0.0.1:{spare_port()}")
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.ping()
        assert not isinstance(raised.value, StoreMisconfigured)
    finally:
        await store.close()
    assert asyncio.get_running_loop().time() - started < 5


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "x"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutItem")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ProvisionedThroughputExceededException"), StoreUnavailable),
        (client_error("ThrottlingException"), StoreUnavailable),
        (client_error("RequestLimitExceeded"), StoreUnavailable),
        (client_error("InternalServerError", 500), StoreUnavailable),
        (client_error("ServiceUnavailable", 503), StoreUnavailable),
        (EndpointConnectionError(endpoint_url="http://x"), StoreUnavailable),
        (TimeoutError(), StoreUnavailable),
        (client_error("UnrecognizedClientException"), StoreMisconfigured),
        (client_error("AccessDeniedException"), StoreMisconfigured),
        (client_error("ResourceNotFoundException"), StoreMisconfigured),
        (NoRegionError(), StoreMisconfigured),
        (client_error("ValidationException"), None),
    ],
)
def test_errors_are_classified(error: BaseException, kind: type[Exception] | None) -> None:
    found = translate(error, "DynamoDB table 't'")
    if kind is None:
        assert found is None
    else:
        assert type(found) is kind
        assert found is not None
        assert "DynamoDB table 't'" in str(found)


# Configuration


def test_config_and_environment() -> None:
    config = config_from_mapping(
        {"session_service": {"type": "dynamodb", "table_name": "chats", "region": "eu-west-1"}},
        env={"SESSION_DYNAMODB_ENDPOINT_URL": "http://localhost:8000"},
    ).session_service
    assert (config.type, config.table_name, config.region) == ("dynamodb", "chats", "eu-west-1")
    assert config.endpoint_url == "http://localhost:8000"
    from_env = config_from_mapping({}, env={"SESSION_DYNAMODB_TABLE": "chats"}).session_service
    assert (from_env.type, from_env.table_name) == ("dynamodb", "chats")
    store = SessionService.from_config(ServiceConfig(type="dynamodb")).store
    assert isinstance(store, DynamoDBStore)
    assert store.table_name == "agentsession"
    assert store.requires_asyncio
    assert not store.prunes_lazily


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        ({"type": "dynamodb", "table_name": "x"}, {}, "not a DynamoDB table name"),
        ({"type": "dynamodb", "endpoint_url": "localhost:8000"}, {}, "http:// or https://"),
        ({"type": "dynamodb", "region": "Europe"}, {}, "AWS region"),
        ({"type": "dynamodb", "database_url": "sqlite:///x.db"}, {}, "database_url is set"),
        ({"type": "sql", "database_url": "sqlite:///x.db", "table_name": "chats"}, {}, "DynamoDB"),
        ({}, {"SESSION_DYNAMODB_TABLE": "x"}, "SESSION_DYNAMODB_TABLE"),
    ],
)
def test_bad_settings_are_config_errors(
    section: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"session_service": section}, env=env)


# Retention, against the memory store's answers


async def fill(store: Any, now: int) -> list[bool]:
    """``tests.test_redis_store.population`` written to ``store``, its expired
    conversations expiring at ``now - 1`` instead of days before: DynamoDB (Local too)
    deletes an item a grace day after its TTL, which days-old expiries are past."""
    sessions, tasks, ratings = population(7, now)
    taken: list[bool] = []
    for record in sessions:
        expired = record.expires_at is not None and record.expires_at < now
        await store.insert_session(replace(record, expires_at=now - 1) if expired else record)
    for item in tasks:
        taken.append(await store.save_task(item) is not None)
    for rated in ratings:
        taken.append(await store.save_feedback(rated, rated.created_time) is not None)
    return taken


async def everything(store: Any, now: int) -> dict[str, set[str]]:
    """Every conversation, task and feedback id in the store (expired ones included)."""
    if isinstance(store, DynamoDBStore):
        dump = await dynamodb_dump(SessionService(store))
        assert dump["problems"] == []
        return {
            "sessions": set(dump["sessions"]),
            "chat_tasks": {task_id for _, task_id in dump["chat_tasks"]},
            "feedback": {feedback_id for _, feedback_id in dump["feedback"]},
        }
    return await redis_everything(store, [], now)


@pytest.mark.parametrize("batch", [3, 1000])
async def test_retention_batches_agree_with_the_memory_store(
    service: SessionService, batch: int
) -> None:
    store, memory, now = store_of(service), MemoryStore(), now_ms()
    taken = await fill(store, now)
    assert taken == await fill(memory, now)
    assert await everything(store, now) == await everything(memory, now)
    cut = Cutoffs(now, now - 10 * DAY, now - 5 * DAY, now - 30 * DAY)
    for rule in RULES:
        expected = await memory.count_prunable(rule, cut)
        assert await store.count_prunable(rule, cut) == expected, rule
        deleted, batches = await prune_all(store, rule, cut, batch)
        assert deleted == (await memory.prune_batch(rule, cut, None, batch))[0], rule
        assert batches >= deleted / batch
        assert await everything(store, now) == await everything(memory, now), rule
    for rule in RULES:
        assert await store.count_prunable(rule, cut) == 0, rule


async def test_prune_runs_with_its_lease(service: SessionService) -> None:
    store, memory, now = store_of(service), MemoryStore(), now_ms()
    assert await fill(store, now) == await fill(memory, now)
    retention = RetentionConfig(
        task_retention_days=10, feedback_retention_days=5, session_retention_days=30, batch_size=2
    )
    async with SessionService(memory) as reference:
        expected = await prune(reference, retention=retention, now=now, pause=0)
    report = await prune(service, retention=retention, now=now, pause=0)
    assert report.counts == expected.counts
    assert report.complete
    holder = await store.lease_holder("retention")
    assert holder is not None
    assert holder.expires_at <= now_ms()
    assert (await prune(service, retention=retention, now=now, pause=0)).total == 0


def cancelled(*codes: str) -> ClientError:
    response: Any = {
        "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
        "CancellationReasons": [{"Code": code} for code in codes],
    }
    return ClientError(response, "TransactWriteItems")


async def test_transaction_conflicts_are_retried_then_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DynamoDBStore("agentsession", endpoint_url="http://127.0.0.1:1")
    connection = store.connection
    outcomes: list[BaseException | None] = [
        cancelled("TransactionConflict", "None"),
        cancelled("None", "ThrottlingError"),
        None,
    ]

    async def request(operation: str, **params: Any) -> dict[str, Any]:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return {}

    monkeypatch.setattr(connection, "request", request)
    assert await connection.transact([{"Put": {"Item": {}}}]) is None
    outcomes[:] = [cancelled("ConditionalCheckFailed", "None")]
    reasons = await connection.transact([{"Put": {"Item": {}}}])
    assert reasons is not None
    assert [reason["Code"] for reason in reasons] == ["ConditionalCheckFailed", "None"]
    outcomes[:] = [cancelled("TransactionConflict")] * 8
    with pytest.raises(StoreUnavailable, match="kept conflicting"):
        await connection.transact([{"Put": {"Item": {}}}])


async def test_an_item_over_dynamodbs_size_limit_is_a_422_naming_the_field(
    service: SessionService,
) -> None:
    """DynamoDB holds at most 400 KB in one item: a bigger task, state or comment is the
    caller's input at fault (422 naming it), never a 500; nothing is written."""
    from fastapi import FastAPI

    from agentsession import SessionMiddleware, sessions_router
    from tests.apps import SECRET, client_for

    app = FastAPI()
    app.include_router(sessions_router(max_body_size=2_000_000), prefix="/api")
    app.add_middleware(SessionMiddleware, secret_key=SECRET, service=service)
    big = "x" * 450_000
    async with client_for(app) as http:
        session_id = (await http.post("/api/sessions", json={})).json()["id"]
        url = f"/api/sessions/{session_id}/chat-tasks"
        task = await http.post(url, json={"taskId": "t", "messageBubbles": [big]})
        assert task.status_code == 422, task.text
        assert task.json()["error"] == {
            "code": "invalid_input",
            "message": "messageBubbles: the chat task is over DynamoDB's 400 KB limit for one item",
            "field": "messageBubbles",
        }
        assert (await http.get(url)).json()["data"] == []
        saved = await http.post(url, json={"taskId": "t", "messageBubbles": ["small"]})
        assert saved.status_code == 200
        rating = {"taskId": "t", "sessionId": session_id, "feedbackType": "up"}
        comment = await http.post("/api/feedback", json={**rating, "feedbackText": big})
        assert comment.status_code == 422, comment.text
        assert comment.json()["error"]["field"] == "feedbackText"
        user = (await http.get("/api/session/current")).json()["clientId"]
    state = await service.state(user, session_id)
    with pytest.raises(InvalidInput, match="state: the conversation with its state is over"):
        await state.set("notes", big)
    assert await (await service.state(user, session_id)).keys() == []
