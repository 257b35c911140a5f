"""Search of a user's history (``SessionService.search``), the same on every backend.

Each case runs on the memory store, SQLite, PostgreSQL, MariaDB, Redis and DynamoDB
(the ``service`` fixture), with a fresh user per test: SQL stores answer from their
full-text index, the others scan the user's own rows, and both must give the same
matches. Texts are written through the service and read back through it: what a test
asserts is what a caller sees.
"""

from __future__ import annotations

import asyncio

import pytest

from agentsession import InvalidInput
from agentsession.service import SearchResult, SessionService
from agentsession.stores.base import SessionRecord
from tests.conftest import new_user

pytestmark = pytest.mark.anyio


async def conversation(
    service: SessionService, user: str, name: str | None = None, **tasks: str | list[object]
) -> str:
    """A new conversation of ``user`` with one task per keyword: a user message (str)
    or, for a list, message bubbles (the task's user message is then None)."""
    record = await service.create_session(user, name=name)
    for task_id, content in tasks.items():
        if isinstance(content, str):
            await service.save_task(user, record.id, task_id, user_message=content)
        else:
            await service.save_task(user, record.id, task_id, message_bubbles=content)
    return record.id


async def everything(service: SessionService, user: str, query: str) -> list[SearchResult]:
    """Every result of ``query``, page by page (limit 1000: one page)."""
    return (await service.search(user, query, limit=1000)).items


def found(results: list[SearchResult]) -> list[str | None]:
    """The task ids of the results (None for a name match), in order."""
    return [result.task_id for result in results]


def marked(result: SearchResult) -> list[str]:
    """The words the snippet marks."""
    return [text for text, match in result.snippet if match]


async def test_a_word_is_found_in_a_user_message_with_the_word_marked(
    service: SessionService, user: str
) -> None:
    session_id = await conversation(
        service,
        user,
        t1="How do I rotate the signing keys of our gateway?",
        t2="Something else entirely",
    )

    results = await everything(service, user, "signing")

    assert found(results) == ["t1"]
    hit = results[0]
    assert (hit.session_id, hit.session_name) == (session_id, None)
    assert marked(hit) == ["signing"]
    assert hit.snippet_text == "How do I rotate the signing keys of our gateway?"


async def test_a_word_is_found_in_the_text_of_message_bubbles(
    service: SessionService, user: str
) -> None:
    bubbles: list[object] = [
        {"type": "text", "text": "The answer mentions kubernetes twice."},
        {"type": "tool", "id": "call-7", "output": {"lines": ["pod restarted by kubelet"]}},
    ]
    await conversation(service, user, t1=bubbles, t2=[{"type": "text", "text": "nothing"}])

    assert found(await everything(service, user, "kubernetes")) == ["t1"]
    assert found(await everything(service, user, "kubelet")) == ["t1"]
    # Keys and the values of naming keys (type, id) are not text a user wrote or read.
    assert found(await everything(service, user, "tool")) == []
    assert found(await everything(service, user, "call")) == []


async def test_a_word_is_found_in_a_conversation_name(service: SessionService, user: str) -> None:
    session_id = await conversation(service, user, "Quarterly budget review", t1="hello")

    results = await everything(service, user, "budget")

    assert len(results) == 1
    hit = results[0]
    assert (hit.session_id, hit.task_id, hit.session_name) == (
        session_id,
        None,
        "Quarterly budget review",
    )
    assert marked(hit) == ["budget"]


async def test_every_word_of_the_query_must_be_found_each_as_a_word_prefix(
    service: SessionService, user: str
) -> None:
    await conversation(
        service,
        user,
        t1="deployment of the billing service failed",
        t2="billing is fine",
        t3="we deploy on fridays",
    )

    assert sorted(found(await everything(service, user, "deploy"))) == ["t1", "t3"]
    assert found(await everything(service, user, "deploy billing")) == ["t1"]
    assert found(await everything(service, user, "BILLING Deploy")) == ["t1"]
    # A word is matched from its start only.
    assert found(await everything(service, user, "ploy")) == []
    assert found(await everything(service, user, "deploy nothing")) == []


async def test_a_name_match_comes_before_every_task_match(
    service: SessionService, user: str
) -> None:
    await conversation(service, user, t1="invoice invoice invoice invoice", t2="invoice number one")
    named = await conversation(service, user, "Invoice questions", t3="unrelated")

    results = await everything(service, user, "invoice")

    assert found(results)[0] is None
    assert results[0].session_id == named
    assert sorted(found(results)[1:], key=str) == ["t1", "t2"]


async def test_a_repeated_word_ranks_a_task_higher(service: SessionService, user: str) -> None:
    # Written first, so that among equals it would come last (newest first).
    await conversation(
        service,
        user,
        many="latency latency latency: the latency of the latency is all latency",
    )
    await asyncio.sleep(0.002)
    await conversation(service, user, once="latency was high once, then it was fine again")

    results = await everything(service, user, "latency")

    assert found(results) == ["many", "once"]
    assert results[0].rank > results[1].rank


async def test_pages_follow_each_other_with_no_repeats_and_nothing_missed(
    service: SessionService, user: str
) -> None:
    tasks = {f"t{i:02}": f"note {i}: the weekly report " + "report " * (i % 4) for i in range(23)}
    await conversation(service, user, "Report archive", **tasks)  # type: ignore[arg-type]

    whole = await everything(service, user, "report")
    seen: list[tuple[str, str | None]] = []
    cursor = None
    pages = 0
    while True:
        page = await service.search(user, "report", limit=5, cursor=cursor)
        pages += 1
        assert len(page.items) <= 5
        seen.extend((item.session_id, item.task_id) for item in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 5  # 24 results: the name and 23 tasks
    assert len(seen) == len(set(seen)) == 24
    assert seen == [(item.session_id, item.task_id) for item in whole]
    ranks = [item.rank for item in whole[1:]]
    assert ranks == sorted(ranks, reverse=True)


async def test_another_users_identical_text_is_never_returned(
    service: SessionService, user: str
) -> None:
    other = new_user()
    await conversation(service, other, "Secret zebra project", t1="the zebra password is 1234")
    mine = await conversation(service, user, "Zebra notes", t1="the zebra password is 1234")

    results = await everything(service, user, "zebra password")

    assert [(result.session_id, result.task_id) for result in results] == [(mine, "t1")]
    assert [result.session_id for result in await everything(service, user, "zebra")] == [
        mine,
        mine,
    ]
    assert await everything(service, new_user(), "zebra") == []


async def test_a_deleted_conversation_and_a_rewritten_task_are_no_longer_found(
    service: SessionService, user: str
) -> None:
    gone = await conversation(service, user, "Walrus chat", t1="walrus facts")
    kept = await conversation(service, user, t2="walrus and narwhal")

    await service.delete_session(user, gone)
    assert [(r.session_id, r.task_id) for r in await everything(service, user, "walrus")] == [
        (kept, "t2")
    ]

    await service.save_task(user, kept, "t2", user_message="only the narwhal now")
    assert await everything(service, user, "walrus") == []
    assert found(await everything(service, user, "narwhal")) == ["t2"]


async def test_a_pruned_task_is_no_longer_found(service: SessionService, user: str) -> None:
    from agentsession import prune
    from agentsession.config import RetentionConfig
    from agentsession.service import now_ms
    from agentsession.stores.base import TaskRecord

    now = now_ms()
    old = now - 40 * 86_400_000
    session_id = await conversation(service, user, t_new="the okapi is alive")
    saved = await service.store.save_task(
        TaskRecord("t_old", session_id, user, "an old okapi", [], None, old, old)
    )
    assert saved is not None
    assert sorted(found(await everything(service, user, "okapi"))) == ["t_new", "t_old"]

    retention = RetentionConfig(task_retention_days=30, feedback_retention_days=0)
    await prune(service, retention=retention, now=now)

    assert found(await everything(service, user, "okapi")) == ["t_new"]


async def test_an_expired_conversation_is_not_searched(make_service: object, user: str) -> None:
    service = await make_service(ttl=None)  # type: ignore[operator]
    assert isinstance(service, SessionService)
    from agentsession.service import now_ms
    from agentsession.stores.base import TaskRecord

    now = now_ms()
    record = SessionRecord("s-" + user, user, None, "Capybara", None, now, now, None, now + 400)
    await service.store.insert_session(record)
    # Through the store: the service's save would slide the expiry (here: clear it).
    task = TaskRecord("t1", record.id, user, "capybara facts", [], None, now, now)
    assert await service.store.save_task(task) is not None
    assert len(await everything(service, user, "capybara")) == 2

    await asyncio.sleep(0.5)

    assert await everything(service, user, "capybara") == []


HOSTILE = [
    '"quoted words"',
    "'single' quotes''",
    "walrus OR 1=1",
    "' OR '1'='1' --",
    "x'); DROP TABLE chat_tasks; --",
    "a & b | !c <-> d:*",
    "+must -not ~tilde <less >more (group) @distance",
    'NEAR(alpha beta) "phrase*" col:value ^caret',
    "100% _under_score% \\backslash\\ \\'",
    "*",
    "a" * 250,
    "Привет МИР",
    "東京 タワー",
    "مرحبا بالعالم",
    "emoji 🦭 seal",
    "null\u200bzero-width",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_queries_with_syntax_of_any_search_engine_neither_fail_nor_match_wrongly(
    service: SessionService, user: str, query: str
) -> None:
    await conversation(service, user, "Plain name", t1="plain text with nothing special")

    if query == "*":  # no word at all
        with pytest.raises(InvalidInput) as caught:
            await everything(service, user, query)
        assert caught.value.field == "query"
    else:
        assert await everything(service, user, query) == []


async def test_non_latin_words_are_found_and_only_where_they_are(
    service: SessionService, user: str
) -> None:
    await conversation(
        service,
        user,
        t_ru="Привет, мир! Как дела?",
        t_el="Καλημέρα κόσμε",
        t_ja="東京タワー に 行きました",
        t_ar="مرحبا بالعالم",
    )

    assert found(await everything(service, user, "МИР")) == ["t_ru"]
    assert found(await everything(service, user, "мирный")) == []
    assert found(await everything(service, user, "κόσμε")) == ["t_el"]
    assert found(await everything(service, user, "東京")) == ["t_ja"]
    assert found(await everything(service, user, "مرحبا")) == ["t_ar"]


async def test_bad_queries_limits_and_cursors_name_the_field(
    service: SessionService, user: str
) -> None:
    for query in ("", "   ", "?!*", "x" * 257, None, 7):
        with pytest.raises(InvalidInput) as caught:
            await service.search(user, query)  # type: ignore[arg-type]
        assert caught.value.field == "query"
    for limit in (0, 1001, "5", True):
        with pytest.raises(InvalidInput) as caught:
            await service.search(user, "word", limit=limit)  # type: ignore[arg-type]
        assert caught.value.field == "limit"
    for cursor in ("nope", "W10", "WzEsMiwzXQ", "WzIsMS4wLDEsIngiXQ", 5):
        with pytest.raises(InvalidInput) as caught:
            await service.search(user, "word", cursor=cursor)  # type: ignore[arg-type]
        assert caught.value.field == "cursor"
