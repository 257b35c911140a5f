"""Search of a user's history over a million chat tasks: latency, flatness, save_task's cost.

What is measured
----------------
For each backend (PostgreSQL, MariaDB, SQLite; ``--backends``) the benchmark makes two
brand-new databases (``agentsession_bench_search_<random>_<size>`` on the servers,
created with asyncpg / aiomysql and dropped at the end, also on an error or Ctrl-C; a
temporary file for SQLite), enters ``SessionService.from_config(...)`` on each (which
runs the migrations, the search index's included) and loads them through the package's
own write path: ``SqlStore.import_rows(UserRows(...))``, one conversation of one user
(with its tasks) per atomic import, so the search index is kept exactly as in
production, in the order the conversations start (all users' rows interleaved in the
tables, as they arrive in production; see "Data set"). The load rate is reported. Then:

1. *Search latency*: ``--queries`` one-word and as many two-word queries per size, each
   for a random user of that database, through ``SessionService.search(user, q,
   limit=20)`` (the service's path: one statement, snippets made), the two sizes'
   calls interleaved (the order alternates) so that machine noise hits both alike.
   Reported: p50 / p95 per kind, against the issue's targets (p50 ≤ 25 ms, p95 ≤ 100
   ms at the large size) and the large ÷ small ratio (≤ 1.5x, p50 and p95 of each kind).
2. *LIKE scans* on the large database, the first ``--like-queries`` queries of each kind:
   the statement a naive gateway runs, ``WHERE user_id = :u AND (user_message LIKE
   '%w%' OR message_bubbles LIKE '%w%') ... ORDER BY created_time DESC LIMIT 20`` as
   written (planned as each database likes: the plan is shown), and the same
   restricted to the user's conversations (``session_id IN (SELECT id FROM sessions
   WHERE user_id = :u)``: the ``session_id`` index, the user's own rows scanned); the
   ratio to search's latency on the same queries.
3. *Plans*: the search statement of a common word as the store sent it (captured by a
   ``before_cursor_execute`` listener), explained on the large database: PostgreSQL
   ``EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)``, MariaDB ``ANALYZE``, SQLite
   ``EXPLAIN QUERY PLAN``; abridged.
4. *save_task throughput with the index kept vs without*: the package at HEAD (the
   work tree's ``src``) against the package at ``--control-rev`` (default ``d3fe8e3``,
   the commit before search existed: its ``src`` extracted with ``git archive`` into a
   temporary directory, the work tree and the repository untouched), each in a child
   process of this script (``PYTHONPATH`` set to that ``src``; the child reports which
   package it imported, and the run stops if it is not the expected one) on a fresh
   database of its own. Each child saves ``--saves`` new tasks one after the other,
   then ``--saves`` from 8 concurrent coroutines; ``--save-rounds`` rounds per variant,
   after a round of each not counted (warming up), interleaved B A A B ... to cancel
   drift; the median round is compared (≥ 0.8x).

Data set
--------
``--tasks`` chat tasks over ``--users`` users (``--tasks / --users`` each, 1,000 by
default), in conversations of 10-60 tasks, 80% of them named (2-4 words). A task is a
user message of 8-30 words and 1-3 text bubbles of 20-80 words each. Words are drawn
from a 50,000-word vocabulary with a Zipf-Mandelbrot distribution (p ∝ 1 / (rank +
2.7)): English function words first, then ~280 common content words of chat-assistant
work (``report``, ``deploy``, ``invoice``...), then made-up terms for the long tail, so
that common words are in many users' tasks and tail words in a few. Times: each
conversation starts at a random moment of the last 180 days, its tasks minutes apart.
Each user's rows come from a random generator seeded by the user's number: the small
database (``--small-tasks``, 10,000 by default) holds users 0-9 of the large one with
exactly the same rows: the *same amount of data per user*, so the large ÷ small ratio
shows what other users' rows cost a search (none is the goal), not a user with 100
times the history.

Conversations are imported in the order they start, so the users' rows are
interleaved in the tables as in production, not each user's side by side (which would
flatter a search that reads the user's rows: PostgreSQL's heap and SQLite's rowid
order are insertion order). One import still writes a conversation's tasks side by
side, where production writes them one at a time among everyone else's; so after the
load ``chat_tasks`` is put in the order tasks arrive (``created_time``; not timed,
``--as-loaded`` skips it): PostgreSQL ``CLUSTER`` on the ``created_time`` index,
SQLite re-inserts the rows in that order in one transaction (its triggers delete and
re-add each task's FTS5 row), MariaDB needs nothing (InnoDB keeps rows in primary-key
order, random task ids). On PostgreSQL at a million tasks this moves a search from
~250 heap pages to ~1,000 and its p50 from ~6 to ~9 ms. Then PostgreSQL gets
``VACUUM (ANALYZE)`` (what autovacuum does soon after) and MariaDB ``ANALYZE TABLE``;
SQLite gets nothing, as the package runs no ``ANALYZE``.

Queries are chosen as a user would: a random user, one of 10 of their tasks kept as
samples, words of that task. *Common*: a content word among the 1,000 most frequent,
drawn by occurrence (so the most frequent come up most); *rare*: a word of the task
ranked beyond 5,000. One-word queries: 50% common, 45% rare, 5% a made-up word that
matches nothing; two-word queries: 50% two common words, 45% a common and a rare word,
5% a common word and one that matches nothing. A query's results are checked: one
from a task must find something, one with a word that matches nothing must find
nothing (counted as *wrong* otherwise; the run goes on).

Run it from the repository root::

    .venv/bin/python bench/search.py --quick                       # a smoke test
    .venv/bin/python bench/search.py --markdown docs/benchmarks.md

``--quick``: 20,000 tasks over 20 users and 2,000 over 2, 60 queries per kind, fewer
saves. ``--markdown PATH`` writes (or replaces) the "## Search (bench/search.py)"
section of PATH. Server URLs: ``--postgres-url`` / ``--mysql-url``, else
``AGENTSESSION_TEST_POSTGRES_URL`` / ``AGENTSESSION_TEST_MYSQL_URL``, else a local
server. MariaDB's buffer pool is resized for the run (online) and put back after:
``--mysql-buffer-pool-mb``, 6144 MB by default, so that the million-task database
(~4 GB) fits in it as it fits in the OS page cache PostgreSQL and SQLite read through
(InnoDB reads with ``O_DIRECT`` here); ``0`` keeps the server's own (128 MB on a
default install: then most of a search's rows are read from disk). Targets are printed
as PASS / MISS, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import importlib.util
import itertools
import json
import os
import platform
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from agentsession.config import ServiceConfig
from agentsession.service import SessionService
from agentsession.stores.base import SessionRecord, StoredSession, TaskRecord, UserRows
from agentsession.stores.sql import SqlStore
from common import (
    BACKENDS,
    LABELS,
    Unavailable,
    backend_list,
    buffer_pool,
    command_line,
    fresh_database,
    positive_int,
    publish,
    server_version,
    version_of,
)

# The save_task control runs this file as a child process against the package of an
# earlier commit: keep the imports above to what every version has (no
# ``agentsession.search``).

HERE = Path(__file__).resolve()
SECTION_TITLE = "## Search (bench/search.py)"
BEGIN_MARKER = "<!-- bench/search.py: begin (generated, rewritten by --markdown) -->"
END_MARKER = "<!-- bench/search.py: end -->"

#: The issue's targets: latency at the large size, flatness, and save_task's throughput.
P50_TARGET = 0.025
P95_TARGET = 0.100
FLAT_TARGET = 1.5
SAVE_TARGET = 0.8

LIMIT = 20
CONCURRENCY = 8
SPAN_MS = 180 * 86_400_000
CONVERSATION_TASKS = (10, 60)
NAMED_SHARE = 0.8
SAMPLES_PER_USER = 10
VOCABULARY_SIZE = 50_000
ZIPF_SHIFT = 2.7
DRAW_TABLE = 4_000_000
#: A common query word is a content word of rank below this; a rare one, at least RARE_RANK.
COMMON_RANKS = 1_000
RARE_RANK = 5_000
ONE_WORD_MIX = (("common", 0.50), ("rare", 0.45), ("none", 0.05))
TWO_WORD_MIX = (("common + common", 0.50), ("common + rare", 0.45), ("common + none", 0.05))
KINDS = ("1 word", "2 words")
CONTROL_REV = "d3fe8e3"
#: MariaDB's buffer pool for the run: the million-task database (~4 GB) fits, as it fits
#: in the OS page cache that PostgreSQL and SQLite read through (InnoDB reads with
#: O_DIRECT here, so its pool is all the cache it has).
BUFFER_POOL_MB = 6144
PLAN_LINES = 40

_FUNCTION_TEXT = """the to and a of in is it you that for i on with this be are can my we as at have
    not or from an by your will what how do if but all so about would there which me our
    they one more just also should could when some like please here then need make use
    get"""
_COMMON_TEXT = """report data email meeting code python function error table customer project deploy
    server schedule budget summary draft invoice travel flight hotel recipe list plan team
    review test query database user account password file document image chart sales
    revenue quarter week month year time date price cost order product service support
    issue bug fix feature release version update change config setting api request
    response token key model prompt answer question idea example step guide note task
    goal result value number text word letter message chat call phone address city
    country trip weather dinner lunch book movie music game health exercise diet sleep
    doctor school class course exam student teacher homework essay paper article blog
    post news story title name page site web app mobile login signup payment card bank
    loan tax salary job interview resume career manager company market stock growth
    strategy risk policy contract legal law rule process system network security cloud
    storage backup memory cpu disk linux windows docker kubernetes cluster pod container
    build pipeline branch merge commit repo script shell command terminal output input
    log metric alert dashboard graph sql schema index migration cache queue worker thread
    async event stream kafka redis postgres mysql json yaml csv excel spreadsheet formula
    cell column row sheet slide presentation deck pitch launch campaign brand logo design
    color font layout mockup prototype feedback survey insight analysis forecast estimate
    timeline milestone deadline sprint backlog ticket roadmap"""
FUNCTION_WORDS = tuple(_FUNCTION_TEXT.split())
COMMON_WORDS = tuple(_COMMON_TEXT.split())
_ONSET_TEXT = "b c d f g h j k l m n p r s t v w br ch cl dr fl gr pl pr sh st th tr"
ONSETS = tuple(_ONSET_TEXT.split())
VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "t")
#: No vocabulary word starts with this: a query word that matches nothing.
NOTHING_PREFIX = "qx"


class BenchError(RuntimeError):
    """A wrong answer or a failed child process: the run stops."""


# --------------------------------------------------------------------------- data set


def made_up_word(rng: random.Random) -> str:
    """A pronounceable term of 2-3 syllables (the vocabulary's long tail)."""
    syllables = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3))]
    return "".join(syllables) + rng.choice(CODAS)


class Corpus:
    """The vocabulary by rank (function words, common words, made-up terms) and its
    Zipf-Mandelbrot weights, p(rank) ∝ 1 / (rank + ZIPF_SHIFT)."""

    def __init__(self, size: int = VOCABULARY_SIZE) -> None:
        words = list(dict.fromkeys((*FUNCTION_WORDS, *COMMON_WORDS)))
        seen = set(words)
        rng = random.Random("agentsession-bench-search-vocabulary")
        while len(words) < size:
            word = made_up_word(rng)
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = tuple(words)
        self.rank = {word: rank for rank, word in enumerate(words)}
        weights = [1 / (rank + ZIPF_SHIFT) for rank in range(size)]
        # Each word in proportion to its weight (the rarest once): drawing uniformly
        # from this is drawing by weight, without a bisection per word.
        per_slot = sum(weights) / DRAW_TABLE
        self.table = [
            word
            for word, weight in zip(words, weights, strict=True)
            for _ in range(max(1, round(weight / per_slot)))
        ]
        function = set(FUNCTION_WORDS)
        content = [
            (w, weight) for w, weight in zip(words, weights, strict=True) if w not in function
        ]
        self.content = tuple(word for word, _ in content)
        self.content_cumulative = list(itertools.accumulate(weight for _, weight in content))

    def sentence(self, rng: random.Random, low: int, high: int) -> str:
        """``low``-``high`` words, capitalised, with a full stop."""
        drawn = " ".join(rng.choices(self.table, k=rng.randint(low, high)))
        return drawn[0].upper() + drawn[1:] + "."

    def name(self, rng: random.Random) -> str:
        """A conversation's name: 2-4 content words, title case."""
        drawn = rng.choices(self.content, cum_weights=self.content_cumulative, k=rng.randint(2, 4))
        return " ".join(drawn).title()

    def task(self, rng: random.Random) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        """A task's user message, message bubbles and metadata."""
        message = self.sentence(rng, 8, 30)
        bubbles = [
            {"type": "text", "text": self.sentence(rng, 20, 80)} for _ in range(rng.randint(1, 3))
        ]
        return message, bubbles, {"model": "stand-in", "tokens": rng.randint(50, 900)}


def token(rng: random.Random) -> str:
    """A conversation id as the service makes them (32 random bytes, URL-safe)."""
    return base64.urlsafe_b64encode(rng.randbytes(32)).rstrip(b"=").decode("ascii")


def task_id(rng: random.Random) -> str:
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))


def words_of(*texts: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z]+", " ".join(texts).lower()))


@dataclass(frozen=True, slots=True)
class Sample:
    """The words of one of a user's tasks: what a query is drawn from."""

    user_id: str
    words: tuple[str, ...]


def user_name(index: int) -> str:
    return f"bench-user-{index:05d}"


@dataclass(frozen=True, slots=True)
class Plan:
    """A conversation to make: whose (``user``, the user's ``number``-th), when it
    starts, how many tasks and how far apart; its text comes from a seed of its own."""

    start: int
    user: int
    number: int
    size: int
    step: int


def conversation_plans(user: int, tasks: int, now: int, seed: int) -> list[Plan]:
    """User ``user``'s conversations, ``tasks`` tasks in all (the same at every size)."""
    rng = random.Random(f"{seed}:user:{user}")
    plans: list[Plan] = []
    made = 0
    while made < tasks:
        size = min(tasks - made, rng.randint(*CONVERSATION_TASKS))
        step = rng.randint(60_000, 900_000)
        plans.append(Plan(now - size * step - rng.randrange(SPAN_MS), user, len(plans), size, step))
        made += size
    return plans


def conversation_rows(corpus: Corpus, plan: Plan, seed: int) -> tuple[UserRows, Sample | None]:
    """The conversation and its tasks, and (for a user's first ``SAMPLES_PER_USER``
    conversations) the words of its middle task."""
    rng = random.Random(f"{seed}:user:{plan.user}:conversation:{plan.number}")
    user = user_name(plan.user)
    session_id = token(rng)
    records: list[TaskRecord] = []
    sample = None
    created = plan.start
    for k in range(plan.size):
        created = plan.start + k * plan.step + rng.randrange(plan.step // 2)
        message, bubbles, metadata = corpus.task(rng)
        if k == plan.size // 2 and plan.number < SAMPLES_PER_USER:
            sample = Sample(user, words_of(message, *(bubble["text"] for bubble in bubbles)))
        records.append(
            TaskRecord(task_id(rng), session_id, user, message, bubbles, metadata, created, created)
        )
    name = corpus.name(rng) if rng.random() < NAMED_SHARE else None
    record = SessionRecord(session_id, user, None, name, None, plan.start, created, None, None)
    return UserRows(user, [StoredSession(record, "{}", 0)], records, []), sample


@dataclass
class Loaded:
    """What a size's load wrote, how long it took, and the samples to draw queries from."""

    users: int
    tasks: int = 0
    conversations: int = 0
    seconds: float = 0.0
    ordering: float = 0.0
    size: int = 0
    samples: list[Sample] = field(default_factory=list)


async def load(
    store: SqlStore, corpus: Corpus, users: int, per_user: int, now: int, args: Args
) -> Loaded:
    """Every user's conversations through ``store.import_rows``, one conversation (of
    one user) per atomic import, in the order the conversations start: the users'
    rows interleaved in the tables as in production. ``--load-concurrency`` imports
    in flight (1 on SQLite) while the next conversation is made."""
    concurrency = 1 if store.dialect == "sqlite" else args.load_concurrency
    loaded = Loaded(users)
    plans = sorted(
        (
            plan
            for user in range(users)
            for plan in conversation_plans(user, per_user, now, args.seed)
        ),
        key=lambda plan: (plan.start, plan.user, plan.number),
    )
    pending: set[asyncio.Future[None]] = set()
    started = time.perf_counter()
    try:
        for index, plan in enumerate(plans):
            rows, sample = conversation_rows(corpus, plan, args.seed)
            if sample is not None:
                loaded.samples.append(sample)
            loaded.tasks += len(rows.tasks)
            while len(pending) >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
            pending.add(asyncio.ensure_future(store.import_rows(rows)))
            if (index + 1) % max(1, len(plans) // 10) == 0:
                rate = loaded.tasks / (time.perf_counter() - started)
                print(f"    {loaded.tasks:,} tasks, {rate:,.0f}/s", file=sys.stderr)
        for finished in asyncio.as_completed(pending):
            await finished
        pending = set()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    loaded.seconds = time.perf_counter() - started
    loaded.conversations = len(plans)
    if args.time_order:
        started = time.perf_counter()
        await time_order(store)
        loaded.ordering = time.perf_counter() - started
    await settle(store)
    loaded.size = await database_size(store)
    return loaded


async def time_order(store: SqlStore) -> None:
    """Lay ``chat_tasks`` out as production has it: rows in the order tasks arrive.

    One import writes a conversation's tasks side by side; in production they arrive
    one at a time among everyone else's, so a user's tasks lie on as many pages as
    they are tasks. PostgreSQL: ``CLUSTER`` on the ``created_time`` index. SQLite: the
    rows re-inserted in ``created_time`` order in one transaction (the package's
    triggers delete and re-add each task's FTS5 row, ``search_key`` kept). MariaDB:
    nothing; InnoDB keeps rows in primary-key order (random task ids), whatever the
    order of arrival.
    """
    if store.dialect == "postgresql":
        async with store.engine.connect() as connection:
            await connection.exec_driver_sql("CLUSTER chat_tasks USING ix_chat_tasks_created_time")
    elif store.dialect == "sqlite":
        async with store.engine.begin() as connection:
            await connection.exec_driver_sql(
                "CREATE TEMP TABLE arrived AS SELECT * FROM chat_tasks"
            )
            await connection.exec_driver_sql("DELETE FROM chat_tasks")
            await connection.exec_driver_sql(
                "INSERT INTO chat_tasks SELECT * FROM arrived ORDER BY created_time, id"
            )
            await connection.exec_driver_sql("DROP TABLE arrived")


async def database_size(store: SqlStore) -> int:
    """Bytes the database takes (tables, indexes, SQLite's FTS5 table: the whole file)."""
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            sql = "SELECT pg_database_size(current_database())"
        elif store.dialect == "mysql":
            sql = (
                "SELECT SUM(data_length + index_length) FROM information_schema.tables "
                "WHERE table_schema = DATABASE()"
            )
        else:
            sql = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        return int(await connection.scalar(text(sql)) or 0)


async def settle(store: SqlStore) -> None:
    """Statistics as the database would soon have them on its own (see the docstring)."""
    async with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            await connection.exec_driver_sql("VACUUM (ANALYZE) sessions, chat_tasks")
        elif store.dialect == "mysql":
            result = await connection.exec_driver_sql("ANALYZE TABLE sessions, chat_tasks")
            result.fetchall()


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class Query:
    """One query of one user; ``mix`` says what its words are (``common``, ``rare``,
    ``none``: a word that matches nothing)."""

    kind: str
    mix: str
    user_id: str
    text: str

    @property
    def expects_match(self) -> bool:
        return "none" not in self.mix


def query_word(corpus: Corpus, rng: random.Random, sample: Sample, kind: str) -> str | None:
    if kind == "none":
        return NOTHING_PREFIX + made_up_word(rng)
    if kind == "common":
        found = [
            word
            for word in sample.words
            if corpus.rank[word] < COMMON_RANKS and word not in FUNCTION_WORDS
        ]
    else:
        found = sorted({word for word in sample.words if corpus.rank[word] >= RARE_RANK})
    return rng.choice(found) if found else None


def draw_query(
    corpus: Corpus, rng: random.Random, samples: Sequence[Sample], kind: str, mix: str
) -> Query:
    """A query of a random user, from one of their sampled tasks."""
    while True:
        sample = rng.choice(samples)
        words = [query_word(corpus, rng, sample, part) for part in mix.split(" + ")]
        if all(words) and len(set(words)) == len(words):
            rng.shuffle(words)
            return Query(kind, mix, sample.user_id, " ".join(w for w in words if w))


def make_queries(corpus: Corpus, samples: Sequence[Sample], count: int, seed: str) -> list[Query]:
    """``count`` one-word and ``count`` two-word queries (``ONE_WORD_MIX``,
    ``TWO_WORD_MIX``), shuffled, the two kinds alternating."""
    rng = random.Random(seed)
    by_kind: list[list[Query]] = []
    for kind, mixes in zip(KINDS, (ONE_WORD_MIX, TWO_WORD_MIX), strict=True):
        queries: list[Query] = []
        for position, (mix, share) in enumerate(mixes):
            n = count - len(queries) if position == len(mixes) - 1 else round(count * share)
            queries += [draw_query(corpus, rng, samples, kind, mix) for _ in range(n)]
        rng.shuffle(queries)
        by_kind.append(queries)
    return [query for pair in zip(*by_kind, strict=True) for query in pair]


# --------------------------------------------------------------------------- timing


@dataclass
class Sized:
    """One database of one backend: its service, its queries and what they measured."""

    label: str
    service: SessionService
    store: SqlStore
    loaded: Loaded
    queries: list[Query] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    found: list[int] = field(default_factory=list)
    wrong: int = 0
    statements: int = 0


class Statements:
    """Counts the statements an engine sends, and keeps the last one with its parameters."""

    def __init__(self, store: SqlStore) -> None:
        self.count = 0
        self.last: tuple[str, Any] | None = None
        self.engine = store.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._before)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)

    def _before(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        self.count += 1
        self.last = (statement, parameters)


async def search_once(sized: Sized, query: Query) -> tuple[float, int]:
    started = time.perf_counter()
    page = await sized.service.search(query.user_id, query.text, limit=LIMIT)
    return time.perf_counter() - started, len(page.items)


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


async def time_searches(sizes: Sequence[Sized], warmups: Sequence[Sequence[Query]]) -> None:
    """Every size's queries, the sizes interleaved call by call (the order alternates);
    results checked: a query from a task finds something, one that cannot finds nothing."""
    for sized, warm in zip(sizes, warmups, strict=True):
        for query in warm:
            await search_once(sized, query)
    counters = [Statements(sized.store) for sized in sizes]
    gc.collect()
    gc.disable()
    try:
        for index in range(len(sizes[0].queries)):
            for sized in rotated(sizes, index):
                query = sized.queries[index]
                elapsed, found = await search_once(sized, query)
                sized.latencies.append(elapsed)
                sized.found.append(found)
                if bool(found) != query.expects_match:
                    sized.wrong += 1
    finally:
        gc.enable()
    for sized, counter in zip(sizes, counters, strict=True):
        sized.statements = counter.count
        counter.close()


LIKE_VARIANTS = ("as written", "over the user's conversations")


def like_statement(words: Sequence[str], variant: str) -> tuple[str, dict[str, str]]:
    """A naive gateway's scan: every word a substring of the message or the bubbles."""
    conditions = " AND ".join(
        f"(user_message LIKE :w{k} OR message_bubbles LIKE :w{k})" for k in range(len(words))
    )
    owner = "user_id = :u"
    if variant != LIKE_VARIANTS[0]:
        owner = "session_id IN (SELECT id FROM sessions WHERE user_id = :u) AND user_id = :u"
    sql = (
        "SELECT id, session_id, user_message, message_bubbles, created_time FROM chat_tasks "
        f"WHERE {owner} AND {conditions} ORDER BY created_time DESC LIMIT {LIMIT}"
    )
    return sql, {f"w{k}": f"%{word}%" for k, word in enumerate(words)}


@dataclass
class LikeResult:
    queries: list[Query] = field(default_factory=list)
    search: list[float] = field(default_factory=list)
    scans: dict[str, list[float]] = field(default_factory=dict)


async def time_likes(sized: Sized, per_kind: int) -> LikeResult:
    """Both LIKE scans on the first ``per_kind`` queries of each kind, interleaved."""
    result = LikeResult(scans={variant: [] for variant in LIKE_VARIANTS})
    for kind in KINDS:
        picked = [k for k, query in enumerate(sized.queries) if query.kind == kind][:per_kind]
        result.queries += [sized.queries[k] for k in picked]
        result.search += [sized.latencies[k] for k in picked]
    async with sized.store.engine.connect() as connection:
        for index, query in enumerate(result.queries):
            for variant in rotated(LIKE_VARIANTS, index):
                sql, params = like_statement(query.text.split(), variant)
                started = time.perf_counter()
                rows = await connection.execute(text(sql), {**params, "u": query.user_id})
                rows.fetchall()
                result.scans[variant].append(time.perf_counter() - started)
            await connection.commit()
    return result


# --------------------------------------------------------------------------- plans


def most_common(sized: Sized, corpus: Corpus) -> Query:
    """The one-word query of the most frequent common word."""
    return min((q for q in sized.queries if q.mix == "common"), key=lambda q: corpus.rank[q.text])


async def search_plan(sized: Sized, query: Query) -> str:
    """The search statement of ``query``, explained."""
    counter = Statements(sized.store)
    await sized.service.search(query.user_id, query.text, limit=LIMIT)
    counter.close()
    if counter.last is None:
        raise BenchError("search sent no statement")
    statement, parameters = counter.last
    plan = await explain(sized.store, statement, parameters)
    return f"query {query.text!r}, {counter.count} statement(s):\n{plan}"


async def like_plan(sized: Sized, query: Query) -> str:
    sql, params = like_statement(query.text.split(), LIKE_VARIANTS[0])
    async with sized.store.engine.connect() as connection:
        compiled = (
            text(sql)
            .bindparams(**params, u=query.user_id)
            .compile(
                dialect=sized.store.engine.sync_engine.dialect,
                compile_kwargs={"literal_binds": True},
            )
        )
        return await explain_sql(connection, sized.store, str(compiled), ())


async def explain(store: SqlStore, statement: str, parameters: Any) -> str:
    params = tuple(parameters) if isinstance(parameters, list | tuple) else parameters
    async with store.engine.connect() as connection:
        return await explain_sql(connection, store, statement, params)


async def explain_sql(connection: Any, store: SqlStore, statement: str, params: Any) -> str:
    """The plan of ``statement`` in the form used for its database, abridged."""
    if store.dialect == "sqlite":
        rows = (
            await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        ).fetchall()
        depth: dict[int, int] = {0: -1}
        lines = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + str(detail))
        return abridged(lines)
    if store.dialect == "postgresql":
        prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
        rows = (await connection.exec_driver_sql(prefix + statement, params)).fetchall()
        return abridged([str(row[0]) for row in rows])
    result = await connection.exec_driver_sql("ANALYZE " + statement, params)
    keys = list(result.keys())
    wanted = [
        key
        for key in ("id", "select_type", "table", "type", "key", "rows", "r_rows", "Extra")
        if key in keys
    ]
    table = [wanted] + [
        ["NULL" if row[keys.index(key)] is None else str(row[keys.index(key)]) for key in wanted]
        for row in result.fetchall()
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(wanted))]
    return abridged(
        [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in table
        ]
    )


def abridged(lines: Sequence[str]) -> str:
    """At most ``PLAN_LINES`` lines of at most 160 characters."""
    cut = [line if len(line) <= 160 else line[:157] + "..." for line in lines]
    if len(cut) > PLAN_LINES:
        cut = [*cut[:PLAN_LINES], f"... ({len(cut) - PLAN_LINES} more lines)"]
    return "\n".join(cut)


# --------------------------------------------------------------------------- save_task


async def save_some(
    service: SessionService,
    writer: tuple[str, str],
    payloads: Sequence[tuple[str, list[dict[str, Any]], dict[str, Any]]],
    rng: random.Random,
    count: int,
) -> None:
    user, conversation = writer
    for _ in range(count):
        message, bubbles, metadata = rng.choice(payloads)
        await service.save_task(
            user,
            conversation,
            task_id(rng),
            user_message=message,
            message_bubbles=bubbles,
            task_metadata=metadata,
        )


async def timed(call: Awaitable[Any], count: int) -> float:
    """``count / seconds`` of awaiting ``call``, the collector off."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        await call
        return count / (time.perf_counter() - started)
    finally:
        gc.enable()


async def save_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The child process of the save_task comparison: saves one after the other, then
    from ``CONCURRENCY`` coroutines, with whatever ``agentsession`` it imported."""
    import agentsession

    corpus = Corpus()
    rng = random.Random(f"{spec['seed']}:saves:{spec['round']}")
    payloads = [corpus.task(rng) for _ in range(256)]
    saves = int(spec["saves"])
    config = ServiceConfig(type="sql", database_url=spec["url"], pool_size=CONCURRENCY + 2)
    async with SessionService.from_config(config) as service:
        writers = []
        for k in range(CONCURRENCY + 1):
            user = f"bench-writer-{k}"
            created = await service.create_session(user, name=corpus.name(rng))
            writers.append((user, created.id))
        await save_some(service, writers[0], payloads, rng, 50)
        sequential = await timed(save_some(service, writers[0], payloads, rng, saves), saves)
        per = max(1, saves // CONCURRENCY)
        concurrent = await timed(
            asyncio.gather(*(save_some(service, w, payloads, rng, per) for w in writers[1:])),
            per * CONCURRENCY,
        )
    return {
        "module": agentsession.__file__,
        "search": importlib.util.find_spec("agentsession.search") is not None,
        "sequential": sequential,
        "concurrent": concurrent,
    }


SAVE_MODES = ("one after the other", f"{CONCURRENCY} concurrent")


@contextlib.contextmanager
def control_source(rev: str) -> Iterator[tuple[Path, str]]:
    """The package's ``src`` at git revision ``rev`` in a temporary directory, and the
    revision's full hash (``git archive``: the work tree and the repository untouched)."""
    root = HERE.parent.parent
    full = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="agentsession-before-") as directory:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", full, "src"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
        yield Path(directory) / "src", full


async def run_worker(src: Path, url: str, round_index: int, args: Args) -> dict[str, Any]:
    spec = {"url": url, "round": round_index, "saves": args.saves, "seed": args.seed}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE),
        "--save-worker",
        json.dumps(spec),
        env={**os.environ, "PYTHONPATH": str(src)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise BenchError(f"save_task worker failed:\n{err.decode(errors='replace')[-3000:]}")
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if not str(answer["module"]).startswith(str(src)):
        raise BenchError(f"the worker imported {answer['module']}, not the package in {src}")
    return answer


@dataclass
class SaveResult:
    control: str = ""
    rounds: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def median(self, variant: str, mode: str) -> float:
        return statistics.median(self.rounds[(variant, mode)])

    def spread(self, variant: str, mode: str) -> str:
        """The slowest and the fastest round."""
        rounds = self.rounds[(variant, mode)]
        return f"{min(rounds):,.0f}-{max(rounds):,.0f}"


async def compare_saves(backend: str, args: Args, tag: str) -> SaveResult:
    """HEAD against ``--control-rev``, a fresh database each, rounds B A A B ..."""
    head = HERE.parent.parent / "src"
    result = SaveResult()
    with control_source(args.control_rev) as (before, full):
        result.control = full
        server = args.postgres_url if backend == "postgresql" else args.mysql_url
        async with (
            fresh_database(backend, server, f"agentsession_bench_search_{tag}_head") as head_url,
            fresh_database(backend, server, f"agentsession_bench_search_{tag}_before") as old_url,
        ):
            variants = [("HEAD", head, head_url, True), ("before", before, old_url, False)]
            # Round 0 (A B) warms up each database, its files and the disk: not counted.
            for round_index in range(args.save_rounds + 1):
                order = variants if round_index % 2 == 0 else variants[::-1]
                for name, src, url, has_search in order:
                    answer = await run_worker(src, url, round_index, args)
                    if answer["search"] != has_search:
                        raise BenchError(f"{name}: agentsession.search present: {answer['search']}")
                    if round_index == 0:
                        continue
                    for mode, key in zip(SAVE_MODES, ("sequential", "concurrent"), strict=True):
                        result.rounds.setdefault((name, mode), []).append(float(answer[key]))
                    print(
                        f"    saves, {name}: {answer['sequential']:,.0f}/s one after the other, "
                        f"{answer['concurrent']:,.0f}/s concurrent",
                        file=sys.stderr,
                    )
    return result


# --------------------------------------------------------------------------- one backend


@dataclass
class BackendResult:
    backend: str
    version: str = ""
    small: Sized | None = None
    large: Sized | None = None
    like: LikeResult | None = None
    plans: dict[str, str] = field(default_factory=dict)
    saves: SaveResult | None = None


async def run_backend(backend: str, args: Args) -> BackendResult:
    result = BackendResult(backend)
    print(f"{LABELS[backend]}:", file=sys.stderr)
    server = args.postgres_url if backend == "postgresql" else args.mysql_url
    tag = secrets.token_hex(4)
    corpus = Corpus()
    per_user = args.tasks // args.users
    plan = [("small", args.small_tasks // per_user), ("large", args.users)]
    now = int(time.time() * 1000)  # one for both sizes: users 0-9 have the same rows
    async with contextlib.AsyncExitStack() as stack:
        sizes: list[Sized] = []
        for label, users in plan:
            url = await stack.enter_async_context(
                fresh_database(backend, server, f"agentsession_bench_search_{tag}_{label}")
            )
            config = ServiceConfig(type="sql", database_url=url, pool_size=10)
            service = await stack.enter_async_context(SessionService.from_config(config))
            store = service.store
            assert isinstance(store, SqlStore)
            if not sizes:
                result.version = await server_version(store)
                await stack.enter_async_context(buffer_pool(store, args.mysql_buffer_pool_mb))
            print(f"  loading {users * per_user:,} tasks of {users:,} users", file=sys.stderr)
            loaded = await load(store, corpus, users, per_user, now, args)
            print(
                f"  loaded in {loaded.seconds:.0f} s: {loaded.tasks / loaded.seconds:,.0f} tasks/s",
                file=sys.stderr,
            )
            sized = Sized(label, service, store, loaded)
            sized.queries = make_queries(corpus, loaded.samples, args.queries, f"{args.seed}:q")
            sizes.append(sized)
        warm = max(20, args.queries // 10)
        warmups = [make_queries(corpus, s.loaded.samples, warm, f"{args.seed}:warm") for s in sizes]
        print(f"  {2 * args.queries} searches per size, interleaved", file=sys.stderr)
        await time_searches(sizes, warmups)
        result.small, result.large = sizes
        common = most_common(result.large, corpus)
        result.plans["search, a common word"] = await search_plan(result.large, common)
        result.plans["LIKE as written, the same word"] = await like_plan(result.large, common)
        print(f"  LIKE scans: {2 * args.like_queries} queries x 2", file=sys.stderr)
        result.like = await time_likes(result.large, args.like_queries)
    if args.save_control:
        print(
            f"  save_task: HEAD vs {args.control_rev}, {args.save_rounds} rounds each",
            file=sys.stderr,
        )
        result.saves = await compare_saves(backend, args, tag)
    return result


# --------------------------------------------------------------------------- report


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def p50_p95(values: Sequence[float]) -> str:
    return f"{ms(statistics.median(values))} / {ms(p95(values))}" if values else "-"


def of_kind(sized: Sized, kind: str, mix: str | None = None) -> list[float]:
    return [
        latency
        for query, latency in zip(sized.queries, sized.latencies, strict=True)
        if query.kind == kind and (mix is None or query.mix == mix)
    ]


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows)]


def size_cell(sized: Sized) -> str:
    return f"{sized.loaded.tasks:,} ({sized.loaded.users:,} users)"


def latency_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for sized in (result.small, result.large):
            assert sized is not None
            verdicts = []
            for kind in KINDS:
                values = of_kind(sized, kind)
                good = statistics.median(values) <= P50_TARGET and p95(values) <= P95_TARGET
                verdicts.append("PASS" if good else "MISS")
            expected = sum(q.expects_match for q in sized.queries)
            rows.append(
                [
                    LABELS[result.backend],
                    size_cell(sized),
                    *(p50_p95(of_kind(sized, kind)) for kind in KINDS),
                    f"{sized.statements / len(sized.queries):.0f}",
                    f"{sized.wrong} of {len(sized.queries)} ({expected} should find)",
                    " / ".join(verdicts) if sized.label == "large" else "(reference)",
                ]
            )
    return rows


def flat_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        small, large = result.small, result.large
        assert small is not None
        assert large is not None
        cells, good = [], True
        for kind in KINDS:
            a, b = of_kind(small, kind), of_kind(large, kind)
            median_ratio = statistics.median(b) / statistics.median(a)
            tail_ratio = p95(b) / p95(a)
            good = good and median_ratio <= FLAT_TARGET and tail_ratio <= FLAT_TARGET
            cells.append(f"{median_ratio:.2f}x / {tail_ratio:.2f}x")
        rows.append([LABELS[result.backend], *cells, "PASS" if good else "MISS"])
    return rows


def mix_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        large = result.large
        assert large is not None
        for kind, mixes in zip(KINDS, (ONE_WORD_MIX, TWO_WORD_MIX), strict=True):
            for mix, _ in mixes:
                picked = [
                    (latency, found)
                    for query, latency, found in zip(
                        large.queries, large.latencies, large.found, strict=True
                    )
                    if query.kind == kind and query.mix == mix
                ]
                latencies = [latency for latency, _ in picked]
                full = sum(found == LIMIT for _, found in picked)
                rows.append(
                    [
                        LABELS[result.backend],
                        f"{kind}: {mix}",
                        f"{len(picked)}",
                        p50_p95(latencies),
                        f"{statistics.mean(found for _, found in picked):.1f}",
                        f"{full / len(picked):.0%}",
                    ]
                )
    return rows


def like_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        like = result.like
        assert like is not None
        for kind in KINDS:
            picked = [k for k, query in enumerate(like.queries) if query.kind == kind]
            search = [like.search[k] for k in picked]
            cells = [LABELS[result.backend], kind, f"{len(picked)}", p50_p95(search)]
            for variant in LIKE_VARIANTS:
                scans = [like.scans[variant][k] for k in picked]
                ratio = statistics.median(scans) / statistics.median(search)
                cells += [p50_p95(scans), f"{ratio:,.1f}x"]
            rows.append(cells)
    return rows


def save_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        saves = result.saves
        if saves is None:
            continue
        for mode in SAVE_MODES:
            head, before = saves.median("HEAD", mode), saves.median("before", mode)
            ratio = head / before
            rows.append(
                [
                    LABELS[result.backend],
                    mode,
                    f"{before:,.0f} ({saves.spread('before', mode)})",
                    f"{head:,.0f} ({saves.spread('HEAD', mode)})",
                    f"{ratio:.3f}x",
                    "PASS" if ratio >= SAVE_TARGET else "MISS",
                ]
            )
    return rows


def load_rows(results: Sequence[BackendResult]) -> list[list[str]]:
    rows = []
    for result in results:
        for sized in (result.small, result.large):
            assert sized is not None
            loaded = sized.loaded
            rows.append(
                [
                    LABELS[result.backend],
                    f"{loaded.tasks:,}",
                    f"{loaded.conversations:,}",
                    f"{loaded.users:,}",
                    f"{loaded.seconds:,.1f} s",
                    f"{loaded.tasks / loaded.seconds:,.0f}",
                    f"{loaded.ordering:,.1f} s" if loaded.ordering else "-",
                    f"{loaded.size / 1e6:,.0f} MB",
                ]
            )
    return rows


def render_section(results: Sequence[BackendResult], skipped: dict[str, str], args: Args) -> str:
    per_user = args.tasks // args.users
    servers = ", ".join(result.version for result in results)
    drivers = ", ".join(
        f"{dist} {version_of(dist)}"
        for dist in ("agentsession", "SQLAlchemy", "aiosqlite", "asyncpg", "aiomysql")
    )
    control = next((r.saves.control[:7] for r in results if r.saves), args.control_rev)
    pool = (
        f"{args.mysql_buffer_pool_mb} MB for the run (`--mysql-buffer-pool-mb`; the "
        "database fits in it, as it fits in the OS page cache PostgreSQL and SQLite read "
        "through: InnoDB reads with O_DIRECT here)"
        if args.mysql_buffer_pool_mb > 0
        else "the server's own"
    )
    body = [
        "Command:",
        "",
        "```",
        command_line(),
        "```",
        "",
        f"Two fresh databases per backend: {args.tasks:,} chat tasks over {args.users:,} users "
        f"and {args.small_tasks:,} over {args.small_tasks // per_user:,} (the same "
        f"{per_user:,} tasks per user, users 0-{args.small_tasks // per_user - 1} identical in "
        "both: the ratio shows what other users' rows cost a search), loaded through "
        "`SqlStore.import_rows` (the search index kept by the write path, as in "
        "production), one conversation per import in the order conversations start, then "
        + (
            "put in the order tasks arrive (see Load), so that each user's tasks lie spread "
            "over the table as in production. "
            if args.time_order
            else "left as imported (`--as-loaded`: a conversation's tasks side by side). "
        )
        + "A task: a user "
        "message of 8-30 words and 1-3 "
        "bubbles of 20-80 words from a 50,000-word Zipf-distributed vocabulary; "
        "conversations of 10-60 tasks, 80% named. Latency of `SessionService.search(user, "
        f"q, limit={LIMIT})` (one statement, snippets made), p50 / p95 in ms over "
        f"{args.queries} one-word and {args.queries} two-word queries per size, the two "
        "sizes' calls interleaved; each query for a random user, its words drawn from one of "
        "that user's tasks: one word common (a content word among the 1,000 most frequent) "
        "50%, rare (rank > 5,000) 45%, matching nothing 5%; two words common + common 50%, "
        "common + rare 45%, common + a word matching nothing 5%. *Wrong*: a query from a "
        "task that found nothing, or one that cannot match that found something. Targets "
        f"(issue 20): at {args.tasks:,} tasks p50 ≤ {P50_TARGET * 1000:g} ms and p95 ≤ "
        f"{P95_TARGET * 1000:g} ms for each kind; large ÷ small ≤ {FLAT_TARGET}x.",
        "",
        *table(
            [
                "backend",
                "tasks (users)",
                "1 word p50 / p95",
                "2 words p50 / p95",
                "statements per search",
                "wrong",
                f"p50 ≤ {P50_TARGET * 1000:g} ms, p95 ≤ {P95_TARGET * 1000:g} ms (1 word / 2)",
            ],
            latency_rows(results),
        ),
        "",
        f"Large ÷ small (p50 / p95), target ≤ {FLAT_TARGET}x for both:",
        "",
        *table(["backend", "1 word", "2 words", f"≤ {FLAT_TARGET}x"], flat_rows(results)),
        "",
        f"By query mix at {args.tasks:,} tasks (results: mean per query, of at most "
        f"{LIMIT}; *full page*: the share of queries with {LIMIT}):",
        "",
        *table(
            ["backend", "query", "queries", "p50 / p95 ms", "results", "full page"],
            mix_rows(results),
        ),
        "",
        f"### LIKE scans at {args.tasks:,} tasks",
        "",
        f"The first {args.like_queries} queries of each kind, each word `LIKE '%w%'` on "
        "`user_message` or `message_bubbles`, newest first, limit "
        f"{LIMIT}, run on the engine (no service: no snippets). *As written*: `WHERE user_id "
        "= :u AND (...)`, as each database plans it (see the plans). *Over the user's "
        "conversations*: "
        "`session_id IN (SELECT id FROM sessions WHERE user_id = :u) AND user_id = :u AND "
        "(...)`, the user's own rows through the `session_id` index. The ratio: LIKE p50 ÷ "
        "search p50 on the same queries. (LIKE is case-sensitive on PostgreSQL and MariaDB "
        "here, and matches inside words: it is not the same answer, only the usual "
        "stand-in.)",
        "",
        *table(
            [
                "backend",
                "kind",
                "queries",
                "search p50 / p95 ms",
                "LIKE as written",
                "÷ search",
                "LIKE over the user's conversations",
                "÷ search",
            ],
            like_rows(results),
        ),
        "",
    ]
    saves = save_rows(results)
    if saves:
        body += [
            "### save_task with the index kept vs without",
            "",
            f"The package at HEAD (the work tree's `src`) against the package at {control} "
            "(before search: no index, no search columns), each imported by a child process "
            "of the bench (`PYTHONPATH` = that `src`, checked) on a fresh database of its "
            f"own: new tasks of the data set's text, {args.saves:,} one after the other, then "
            f"{args.saves:,} from {CONCURRENCY} coroutines; {args.save_rounds} rounds per "
            "variant after one not counted (warming up), interleaved (B A A B ...), the "
            "median round; tasks/s. HEAD also carries the rest of issue 20 (pinned "
            "conversations), which save_task does not touch."
            f" Target: HEAD ≥ {SAVE_TARGET}x the package without search.",
            "",
            *table(
                [
                    "backend",
                    "save_task",
                    f"{control} tasks/s (slowest-fastest round)",
                    "HEAD tasks/s (slowest-fastest round)",
                    "HEAD ÷ before",
                    f"≥ {SAVE_TARGET}x",
                ],
                saves,
            ),
            "",
        ]
    body += [
        "### Load",
        "",
        "Through `SqlStore.import_rows(UserRows(...))`, one conversation with its tasks per "
        "import, in the order conversations start "
        f"({args.load_concurrency} imports in flight on the servers, 1 on SQLite, while the "
        "next one is made in the same process); then (not timed) "
        + (
            "`chat_tasks` put in the order tasks arrive, as production writes it: PostgreSQL "
            "`CLUSTER chat_tasks USING ix_chat_tasks_created_time`, SQLite the rows re-inserted "
            "in `created_time` order in one transaction (the package's triggers delete and "
            "re-add each task's FTS5 row), MariaDB nothing (rows in primary-key order, random "
            "task ids, whatever the order of arrival); "
            if args.time_order
            else ""
        )
        + "PostgreSQL `VACUUM (ANALYZE)`, "
        f"MariaDB `ANALYZE TABLE`. MariaDB's buffer pool: {pool}.",
        "",
        *table(
            [
                "backend",
                "tasks",
                "conversations",
                "users",
                "load time",
                "tasks/s",
                "then put in time order",
                "database size",
            ],
            load_rows(results),
        ),
        "",
    ]
    body += [f"- {LABELS[name]}: not measured, {reason}" for name, reason in skipped.items()]
    if skipped:
        body.append("")
    body += [
        "### Plans",
        "",
        "The search statement the store sent for the one-word query of the most frequent "
        "common word at "
        f"{args.tasks:,} tasks (captured by a `before_cursor_execute` listener) with its "
        "parameters, explained: PostgreSQL `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, "
        "SUMMARY OFF)`, MariaDB `ANALYZE` (`r_rows`: rows actually read), SQLite `EXPLAIN "
        "QUERY PLAN`; then the LIKE scan as written for the same word. Abridged to "
        f"{PLAN_LINES} lines.",
        "",
    ]
    for result in results:
        body += [f"{LABELS[result.backend]}:", ""]
        for name, plan in result.plans.items():
            body += [f"`{name}`:", "", "```", plan, "```", ""]
    body += [
        f"Environment: Python {platform.python_version()}, {drivers}; {servers}; servers on "
        f"the same machine (127.0.0.1); {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs.",
        "",
    ]
    return "\n".join([SECTION_TITLE, BEGIN_MARKER, "", *body, END_MARKER, ""])


# --------------------------------------------------------------------------- CLI


class Args(argparse.Namespace):
    backends: list[str]
    tasks: int
    users: int
    small_tasks: int
    queries: int
    like_queries: int
    saves: int
    save_rounds: int
    save_control: bool
    time_order: bool
    control_rev: str
    load_concurrency: int
    seed: int
    quick: bool
    mysql_buffer_pool_mb: int
    postgres_url: str | None
    mysql_url: str | None
    markdown: Path | None
    save_worker: str | None


QUICK = {
    "tasks": 20_000,
    "users": 20,
    "small_tasks": 2_000,
    "queries": 60,
    "like_queries": 10,
    "saves": 200,
    "save_rounds": 2,
}


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends",
        type=backend_list,
        default=list(BACKENDS),
        help="comma-separated, from sqlite,postgresql,mysql (default: all three)",
    )
    parser.add_argument("--tasks", type=positive_int, default=1_000_000, help="default 1000000")
    parser.add_argument("--users", type=positive_int, default=1_000, help="default 1000")
    parser.add_argument(
        "--small-tasks",
        type=positive_int,
        default=10_000,
        help="tasks of the small database, the same per user (default 10000)",
    )
    parser.add_argument(
        "--queries", type=positive_int, default=300, help="queries per kind and size (default 300)"
    )
    parser.add_argument(
        "--like-queries",
        type=positive_int,
        default=30,
        help="of those, LIKE-scanned at the large size, per kind (default 30)",
    )
    parser.add_argument(
        "--saves", type=positive_int, default=1_000, help="save_task calls per mode and round"
    )
    parser.add_argument(
        "--save-rounds", type=positive_int, default=6, help="per variant (default 6)"
    )
    parser.add_argument(
        "--no-save-control",
        dest="save_control",
        action="store_false",
        help="skip the save_task comparison with --control-rev",
    )
    parser.add_argument(
        "--control-rev",
        default=CONTROL_REV,
        help=f"the package without search, a git revision (default {CONTROL_REV})",
    )
    parser.add_argument(
        "--as-loaded",
        dest="time_order",
        action="store_false",
        help="leave chat_tasks in the order the imports wrote it (a conversation's tasks "
        "side by side) instead of the order tasks arrive in production",
    )
    parser.add_argument(
        "--load-concurrency",
        type=positive_int,
        default=2,
        help="imports in flight on PostgreSQL and MariaDB (default 2; SQLite 1)",
    )
    parser.add_argument("--seed", type=int, default=20, help="of the data set (default 20)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    parser.add_argument(
        "--mysql-buffer-pool-mb",
        type=int,
        default=BUFFER_POOL_MB,
        metavar="MB",
        help="MariaDB: set innodb_buffer_pool_size to MB for the run (online, SET GLOBAL) "
        f"and put the old size back after (default {BUFFER_POOL_MB}: the million-task "
        "database fits; 0 keeps the server's own setting)",
    )
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--mysql-url", default=None)
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the results as the '{SECTION_TITLE[3:]}' section of PATH",
    )
    parser.add_argument("--save-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv, namespace=Args())
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for name, value in QUICK.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(args, name, value)
    if args.tasks < args.users:
        parser.error("--tasks must be at least --users")
    if args.small_tasks < args.tasks // args.users or args.small_tasks > args.tasks:
        parser.error("--small-tasks must hold at least one user and at most --tasks")
    return args


def reason_of(exc: Exception) -> str:
    """A failure in one line: the database's own message, not the statement's values."""
    if isinstance(exc, DBAPIError):
        return f"{type(exc.orig).__name__}: {exc.orig}"[:300]
    return str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else repr(exc)


async def run(args: Args) -> tuple[list[BackendResult], dict[str, str], bool]:
    """Every backend in turn; one that cannot be reached or fails is reported as such
    (its databases dropped) and the others are still measured."""
    results: list[BackendResult] = []
    skipped: dict[str, str] = {}
    failed = False
    for backend in args.backends:
        try:
            results.append(await run_backend(backend, args))
        except Unavailable as exc:
            skipped[backend] = f"skipped: {exc}"
            print(f"note: skipping {backend}: {exc}", file=sys.stderr)
        except (BenchError, DBAPIError) as exc:
            failed = True
            skipped[backend] = f"failed: {reason_of(exc)}"
            print(
                f"error: {backend}: {exc if isinstance(exc, BenchError) else reason_of(exc)}",
                file=sys.stderr,
            )
    return results, skipped, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.save_worker is not None:
        print(json.dumps(asyncio.run(save_worker(json.loads(args.save_worker)))))
        return 0
    try:
        results, skipped, failed = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted (the run's databases were dropped)", file=sys.stderr)
        return 130
    if not results:
        print("error: no backend could be measured", file=sys.stderr)
        return 1
    publish(render_section(results, skipped, args), args.markdown, SECTION_TITLE)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
