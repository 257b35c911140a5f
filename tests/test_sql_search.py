"""Search and pins on the SQL store: statements, the index's upkeep, migration 0005,
the search language, retention with pinned conversations, hostile terms.

Each test has a fresh database of each SQL backend (``fresh_url``: SQLite, PostgreSQL,
MariaDB) and counts or reads rows directly where the service cannot show them: the
cross-backend behaviour is ``tests/test_search.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from agentsession import ConfigError, SessionService, prune
from agentsession.config import RetentionConfig, ServiceConfig
from agentsession.errors import StoreMisconfigured
from agentsession.search import MAX_TERM_LENGTH, words
from agentsession.service import now_ms
from agentsession.stores.base import (
    FeedbackRecord,
    SearchQuery,
    SessionRecord,
    StoredSession,
    TaskRecord,
    UserRows,
)
from agentsession.stores.sql import SqlStore
from agentsession.stores.sql.migrate import alembic_config, current_revision, head_revision
from agentsession.stores.sql.schema import search_objects
from agentsession.stores.sql.search import indexed_words, match_query, tsquery_text
from tests.databases import sql_service, statements, store_of

pytestmark = pytest.mark.anyio

DAY = 86_400_000


@pytest.fixture
async def service(fresh_url: str) -> AsyncIterator[SessionService]:
    """A started service on an empty database of its own."""
    async with sql_service(fresh_url) as started:
        yield started


async def words_of(service: SessionService, user: str, query: str) -> list[str | None]:
    """The task ids (None: a name) that ``query`` finds for ``user``, in order."""
    return [hit.task_id for hit in (await service.search(user, query, limit=1000)).items]


async def index_counts(service: SessionService) -> tuple[int, int]:
    """``(index entries, tasks)``: SQLite's FTS5 rows (its ``_docsize`` table has one per
    row) against ``chat_tasks``; elsewhere the tasks whose ``search`` is written."""
    store = store_of(service)
    tasks = store.chat_tasks.name
    if store.dialect == "sqlite":
        entries = f"SELECT count(*) FROM {search_objects()['fts']}_docsize"
    else:
        entries = f"SELECT count(*) FROM {tasks} WHERE search IS NOT NULL"
    async with store.engine.connect() as connection:
        found = (await connection.execute(text(entries))).scalar_one()
        total = (await connection.execute(text(f"SELECT count(*) FROM {tasks}"))).scalar_one()
    return int(found), int(total)


# Statements


async def test_a_search_is_one_statement_and_a_save_still_one(service: SessionService) -> None:
    user = "alice"
    record = await service.create_session(user, name="Deploy notes")
    for number in range(5):
        await service.save_task(user, record.id, f"t{number}", user_message=f"deploy {number}")
    first = await service.search(user, "deploy", limit=2)
    assert first.next_cursor is not None
    dialect = store_of(service).dialect

    for cursor in (None, first.next_cursor):
        with statements(service) as seen:
            page = await service.search(user, "deploy", limit=2, cursor=cursor)
        assert len(seen) == 1, seen
        assert len(page.items) == 2

    with statements(service) as seen:
        await service.save_task(user, record.id, "t9", user_message="deploy again")
    if dialect == "sqlite":
        # One transaction as before (BEGIN, touch, upsert, COMMIT): the triggers write
        # FTS5, no statement of the store does.
        assert [sql.split()[0] for sql in seen] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"], seen
        assert not any(search_objects()["fts"] in sql for sql in seen)
    else:
        assert len(seen) == 1, seen
    assert await words_of(service, user, "again") == ["t9"]


# The index follows every write and delete


async def test_the_index_follows_every_write_and_every_delete(service: SessionService) -> None:
    store = store_of(service)
    user, other = "alice", "bob"
    now = now_ms()
    old = now - 40 * DAY
    kept = await service.create_session(user, name="Walrus diary")
    gone = await service.create_session(user)
    await service.save_task(user, kept.id, "k1", user_message="the walrus sleeps")
    await service.save_task(user, gone.id, "g1", message_bubbles=[{"text": "walrus in the bubble"}])
    old_task = TaskRecord("o1", kept.id, user, "an old walrus story", [], None, old, old)
    assert await store.save_task(old_task) is not None
    theirs = await service.create_session(other)
    await service.save_task(other, theirs.id, "k1", user_message="the walrus sleeps")
    assert sorted(map(str, await words_of(service, user, "walrus"))) == ["None", "g1", "k1", "o1"]
    assert await index_counts(service) == (4, 4)

    # Rewritten: the old words go, the new ones come.
    await service.save_task(user, kept.id, "k1", user_message="the narwhal sleeps")
    assert await words_of(service, user, "narwhal") == ["k1"]
    assert sorted(map(str, await words_of(service, user, "walrus"))) == ["None", "g1", "o1"]
    # A deleted conversation's tasks (a cascade) are gone from the index too.
    await service.delete_session(user, gone.id)
    assert sorted(map(str, await words_of(service, user, "walrus"))) == ["None", "o1"]
    assert await index_counts(service) == (3, 3)
    # Retention deletes by ctid (PostgreSQL), rowid (SQLite) or key range (MariaDB).
    retention = RetentionConfig(task_retention_days=30, feedback_retention_days=0)
    report = await prune(service, retention=retention, now=now, pause=0)
    assert report.chat_tasks == 1
    assert await words_of(service, user, "walrus") == [None]
    assert await index_counts(service) == (2, 2)
    # An import is indexed as a save is.
    imported = SessionRecord("s-imported", user, None, "Imported", None, old, old, None, None)
    task = TaskRecord("i1", imported.id, user, None, [{"text": "imported walrus"}], None, now, now)
    await store.import_rows(UserRows(user, [StoredSession(imported, "{}", 0)], [task], []))
    assert sorted(map(str, await words_of(service, user, "walrus"))) == ["None", "i1"]
    assert await index_counts(service) == (3, 3)
    # Erasing the user leaves nothing of theirs findable, and the other user's rows.
    await service.erase_user(user)
    assert await words_of(service, user, "walrus") == []
    assert await words_of(service, other, "walrus") == ["k1"]
    assert await index_counts(service) == (1, 1)


async def test_terms_never_reach_the_database_as_syntax(service: SessionService) -> None:
    """Terms straight to the store, past ``parse_query``: quotes, backslashes and the
    operators of every engine are text; none fails, none matches what is not there."""
    store = store_of(service)
    record = await service.create_session("alice", name="Plain name")
    await service.save_task("alice", record.id, "t1", user_message="plain text: nothing special")
    hostile = [
        "it's",
        'say "what"',
        "back\\slash",
        "\\",
        "'",
        '"',
        "*",
        ":*",
        "a:*",
        "&",
        "|",
        "!",
        "!plain",
        "<->",
        "plain:*|text",
        "plain' | 'x",
        'plain" OR "x',
        "NEAR(plain text)",
        "{words}:",
        "^plain",
        "%",
        "_",
        "東京",
        "ü" * 300,
        "x" * 3000,
    ]
    for term in hostile:
        hits = await store.search("alice", SearchQuery(term, (term,)), now_ms(), 10, None)
        assert hits == [], term
        mixed = await store.search("alice", SearchQuery(term, ("plain", term)), now_ms(), 10, None)
        assert mixed == [], term
    # Words of every kind reach the database: none fails or finds what is not there.
    odd = ["東京", "ß", "ǆ", "½", "²", "٣", "𝔘", "ㄱ", "ü" * 300, "x" * 3000, "0", "null"]
    for term in odd:
        for terms in ((term,), ("plain", term)):
            assert await store.search("alice", SearchQuery(term, terms), now_ms(), 10, None) == []
    found = await store.search("alice", SearchQuery("plain", ("plain",)), now_ms(), 10, None)
    assert [hit.task_id for hit in found] == [None, "t1"]


async def test_the_engines_query_syntax_is_quoted(service: SessionService) -> None:
    """What the store hands the full-text engine (PostgreSQL's tsquery, SQLite's FTS5
    query) quotes anything, should a term ever hold more than a word."""
    store = store_of(service)
    strange = ["it's", 'say "what"', "back\\slash", "a:*", "x & y | !z <-> w", "NEAR(a b)"]
    async with store.engine.connect() as connection:
        for term in strange:
            if store.dialect == "postgresql":
                query = text("SELECT to_tsquery('simple', :q)::text")
                parsed = (await connection.execute(query, {"q": tsquery_text([term])})).scalar()
                assert "!" not in str(parsed), parsed  # a phrase at most (<->), never NOT
                assert "|" not in str(parsed), parsed
            elif store.dialect == "sqlite":
                query = text(f"SELECT count(*) FROM {search_objects()['fts']} WHERE words MATCH :q")
                assert (
                    await connection.execute(query, {"q": match_query("u", [term])})
                ).scalar() == 0


async def test_pages_of_equal_and_unequal_ranks_follow_each_other_exactly(
    service: SessionService,
) -> None:
    """One hit per page: each cursor's rank (a float4 on PostgreSQL) compares exactly."""
    record = await service.create_session("alice", name="Otter otter")
    for number in range(12):
        message = "otter " * (1 + number % 5) + f"number {number}"
        await service.save_task("alice", record.id, f"t{number:02}", user_message=message)
    whole = (await service.search("alice", "otter", limit=100)).items
    paged = []
    cursor = None
    while True:
        page = await service.search("alice", "otter", limit=1, cursor=cursor)
        paged.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [(hit.task_id, hit.rank) for hit in paged] == [(hit.task_id, hit.rank) for hit in whole]
    assert len(whole) == 13
    ranks = [hit.rank for hit in whole[1:]]
    assert ranks == sorted(ranks, reverse=True)
    assert len(set(ranks)) == 5


# Migration 0005


_NAMES = {
    "s1": ("alice", "Walrus planning"),
    "s2": ("bob", "Walrus secrets"),
    "s3": ("alice", None),
}


async def _old_rows(engine: Any, tasks: int) -> None:
    """Rows written at revision 0004: three conversations, ``tasks`` tasks of alice's
    (two batches of the backfill), one of bob's with alice's first task's id and text."""
    async with engine.begin() as conn:
        for sid, (user, name) in _NAMES.items():
            await conn.execute(
                text(
                    "INSERT INTO sessions (id, user_id, name, state, version, created_time, "
                    "updated_time) VALUES (:id, :user, :name, '{}', 0, 1, 1)"
                ),
                {"id": sid, "user": user, "name": name},
            )
        rows = [
            {
                "id": f"t{number:04}",
                "sid": "s1" if number % 2 else "s3",
                "user": "alice",
                "message": f"entry {number} of the walrus log",
                "bubbles": json.dumps([{"type": "text", "text": f"narwhal {number}"}]),
            }
            for number in range(tasks)
        ]
        rows.append(
            {
                "id": "t0000",
                "sid": "s2",
                "user": "bob",
                "message": "entry 0 of the walrus log",
                "bubbles": "[]",
            }
        )
        await conn.execute(
            text(
                "INSERT INTO chat_tasks (id, session_id, user_id, user_message, message_bubbles, "
                "created_time, updated_time) VALUES (:id, :sid, :user, :message, :bubbles, 2, 2)"
            ),
            rows,
        )


async def _base_rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return {
            "sessions": sorted(
                tuple(row)
                for row in await conn.execute(text("SELECT id, user_id, name FROM sessions"))
            ),
            "chat_tasks": sorted(
                tuple(row)
                for row in await conn.execute(
                    text("SELECT id, user_id, session_id, user_message FROM chat_tasks")
                )
            ),
        }


async def test_0005_indexes_existing_rows_and_its_downgrade_removes_it_all(
    fresh_url: str, sql_backend: str
) -> None:
    store = SqlStore(fresh_url)
    engine = store.engine
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_to_0004)
            await conn.commit()
        await _old_rows(engine, 1_203)
        before = await _base_rows(engine)

        await store.start()  # migrates to head, indexing every row

        assert await current_revision(engine) == head_revision()
        await _finds_the_old_rows(store)
        async with engine.connect() as conn:
            await conn.run_sync(_downgrade_to_0004)
            await conn.commit()
        assert await current_revision(engine) == "0004"
        assert await _base_rows(engine) == before
        async with engine.connect() as conn:
            columns = await conn.run_sync(_columns)
            assert not {"pinned", "search_name"} & columns["sessions"]
            assert not {"search", "search_key"} & columns["chat_tasks"]
            if sql_backend == "sqlite":
                left = await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE name LIKE '%search%'")
                )
                assert left.all() == []
        # And up again: indexed again.
        await store.start()
        await _finds_the_old_rows(store)
        assert await _base_rows(engine) == before
    finally:
        await store.close()


def _upgrade_to_0004(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0004")


def _downgrade_to_0004(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0004")


def _columns(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {column["name"] for column in inspector.get_columns(table)}
        for table in ("sessions", "chat_tasks")
    }


async def _finds_the_old_rows(store: SqlStore) -> None:
    now = now_ms()
    walrus = await store.search("alice", SearchQuery("walrus", ("walrus",)), now, 5_000, None)
    assert [hit.task_id for hit in walrus[:1]] == [None]
    assert walrus[0].session_id == "s1"
    assert len(walrus) == 1 + 1_203
    assert {hit.session_id for hit in walrus[1:]} == {"s1", "s3"}
    narwhal = await store.search(
        "alice", SearchQuery("narwhal 1202", ("narwhal", "1202")), now, 10, None
    )
    assert [(hit.task_id, hit.text) for hit in narwhal] == [
        ("t1202", "entry 1202 of the walrus log\nnarwhal 1202")
    ]
    bobs = await store.search("bob", SearchQuery("walrus", ("walrus",)), now, 10, None)
    assert [(hit.session_id, hit.task_id) for hit in bobs] == [("s2", None), ("s2", "t0000")]
    listed = await store.list_sessions("alice", now, 10, None, pinned=False)
    assert sorted(record.id for record in listed) == ["s1", "s3"]
    assert await store.list_sessions("alice", now, 10, None, pinned=True) == []


# The search language (PostgreSQL)


async def test_a_language_stems_and_an_unknown_one_is_refused(
    fresh_url: str, sql_backend: str
) -> None:
    if sql_backend != "postgresql":
        # Only PostgreSQL has text search configurations; elsewhere the setting is unused.
        store = SqlStore(fresh_url, search_language="english")
        await store.start()
        await store.close()
        return
    config = ServiceConfig(type="sql", database_url=fresh_url, search_language="english")
    async with SessionService.from_config(config) as english:
        assert store_of(english).search_language == "english"
        record = await english.create_session("alice", name="Running notes")
        await english.save_task("alice", record.id, "t1", user_message="the servers were running")
        await english.save_task("alice", record.id, "t2", user_message="deployments of the week")
        assert await words_of(english, "alice", "runs") == [None, "t1"]
        assert await words_of(english, "alice", "deploy server") == []
        assert await words_of(english, "alice", "deployment") == ["t2"]
        # Only stop words: nothing to look for, no error.
        assert await words_of(english, "alice", "the") == []
    async with sql_service(fresh_url) as simple:  # same rows, searched as written
        assert await words_of(simple, "alice", "runs") == []

    store = SqlStore(fresh_url, search_language="klingon")
    try:
        with pytest.raises(StoreMisconfigured) as raised:
            await store.start()
    finally:
        await store.close()
    message = str(raised.value)
    assert message.startswith("session_service.search_language: "), message
    assert "'klingon'" in message
    with pytest.raises(ConfigError) as bad:
        SqlStore(fresh_url, search_language="english'; DROP TABLE sessions; --")
    assert str(bad.value).startswith("session_service.search_language: ")


# Retention and pins


async def test_retention_keeps_pinned_conversations_and_their_tasks(
    service: SessionService,
) -> None:
    """Exactly the unpinned old rows go, by both rules; a dry run counts the same."""
    store = store_of(service)
    now = now_ms()
    old = now - 40 * DAY
    made: dict[str, SessionRecord] = {}
    for name, pinned in (
        ("idle_pinned", True),
        ("idle", False),
        ("busy_pinned", True),
        ("busy", False),
    ):
        record = SessionRecord(name, "alice", None, name, None, old, old, None, None, pinned)
        await store.insert_session(record)
        made[name] = record
    for sid in ("busy_pinned", "busy"):
        for task_id, time_ in ((f"{sid}-old", old), (f"{sid}-new", now - DAY)):
            task = TaskRecord(task_id, sid, "alice", "kept or not", [], None, time_, time_)
            assert await store.save_task(task) is not None
        rating = FeedbackRecord(f"f-{sid}", sid, f"{sid}-old", "alice", "up", None, now - DAY)
        assert await store.save_feedback(rating, now) is not None
    retention = RetentionConfig(
        task_retention_days=30, feedback_retention_days=0, session_retention_days=30
    )

    counted = await prune(service, retention=retention, now=now, dry_run=True, pause=0)
    report = await prune(service, retention=retention, now=now, pause=0)

    assert (counted.chat_tasks, counted.idle_sessions) == (1, 1)
    assert (report.chat_tasks, report.idle_sessions) == (1, 1)
    left = sorted(record.id for record in await store.list_sessions("alice", now, 10, None))
    assert left == ["busy", "busy_pinned", "idle_pinned"]
    tasks = {
        sid: [task.id for task in await store.list_tasks("alice", sid, now, 10, None) or []]
        for sid in ("busy_pinned", "busy")
    }
    assert tasks == {
        "busy_pinned": ["busy_pinned-old", "busy_pinned-new"],
        "busy": ["busy-new"],
    }
    ratings = await service.list_feedback("alice")
    assert [item.id for item in ratings.items] == ["f-busy_pinned"]
    pinned = await store.list_sessions("alice", now, 10, None, pinned=True)
    assert [record.id for record in pinned] == ["busy_pinned", "idle_pinned"]
    unpinned = await store.list_sessions("alice", now, 10, None, pinned=False)
    assert [record.id for record in unpinned] == ["busy"]


async def test_a_pin_is_kept_by_export_and_import(service: SessionService) -> None:
    record = await service.create_session("alice", name="Pinned one")
    await service.pin_session("alice", record.id)
    exported = b"".join([chunk async for chunk in service.export_user("alice")])
    await service.erase_user("alice")
    await service.import_user(exported, user_id="carol")
    listed = await service.list_sessions("carol", pinned=True)
    assert [(item.id, item.pinned) for item in listed.items] == [(record.id, True)]
    assert await words_of(service, "carol", "pinned") == [None]


def test_indexed_words_are_the_words_a_query_is_read_into() -> None:
    """The store's fast path gives exactly ``words()``, each cut to a term's length:
    what ``parse_query`` makes of a query, so both sides see the same words."""
    samples = [
        "",
        "Hello, World!",
        "İstanbul ß ǅ ﬁ Σίσυφος ΣΑΣ",
        "snake_case-and.dots 3.14 ½² ٣ 𝔘 ㄱ",
        "東京タワー に 行きました",
        "zero\u200bwidth com\u0301bining",
        "x" * 70 + " " + "ß" * 40 + " " + "İ" * 64,
        "emoji 🦭 seal\ttab\nline",
    ]
    for sample in samples:
        expected = " ".join(word[:MAX_TERM_LENGTH] for word in words(sample))
        assert indexed_words(sample) == expected, sample
