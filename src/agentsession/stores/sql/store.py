"""SqlStore: the Store contract over SQLite, PostgreSQL and MySQL/MariaDB (async Core).

Every operation is one statement in autocommit mode, so a read costs one query and
a write one statement, with no BEGIN/COMMIT round trips. Ownership and the session
TTL are checked inside that statement (``INSERT ... SELECT ... FROM sessions WHERE``
the caller owns a live conversation); upserts are ``INSERT ... ON CONFLICT`` on
PostgreSQL and SQLite and ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL. Only
error paths (a missing conversation, a lost optimistic race) spend a second query
to say which it was. A search is one query too (``stores.sql.search``), over the
user's own rows.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from agentsession.common import dump_json
from agentsession.config import check_search_language
from agentsession.errors import ConfigError, IdConflict, StoreMisconfigured
from agentsession.stores.base import (
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    Revocation,
    SearchHit,
    SearchKey,
    SearchQuery,
    SessionRecord,
    StoredSession,
    TaskRecord,
    Touch,
    UserRows,
)
from agentsession.stores.sql.engine import create_engine, dialect_of, mask_url, normalize_url
from agentsession.stores.sql.errors import is_deadlock, translate
from agentsession.stores.sql.lease import (
    acquire_statement,
    holder_query,
    lease_taken,
    release_statement,
)
from agentsession.stores.sql.prune import (
    boundary_query,
    count_query,
    delete_batch,
    delete_ids,
    delete_range,
    delete_tasks,
    idle_window,
    orphaned_feedback,
    select_batch,
)
from agentsession.stores.sql.schema import tables
from agentsession.stores.sql.search import (
    SearchStatements,
    hit_of,
    name_words,
    task_search_value,
    task_words,
    tsvector_of,
)
from agentsession.stores.sql.statements import Statements
from agentsession.stores.sql.userdata import (
    ERASE_ORDER,
    erase_keys,
    erase_statement,
    forget_revocations,
    revocations_query,
    revoke_statement,
    taken_query,
)

__all__ = ["SqlStore"]

T = TypeVar("T")

#: Ids per ``IN (...)`` list of an import's checks and rows per INSERT of its batches.
IMPORT_CHUNK = 500

#: Times a statement is retried after the database chose it as a deadlock victim.
DEADLOCK_RETRIES = 5


class SqlStore:
    """Conversations, tasks, feedback and state in a SQL database that many apps share."""

    #: SQLAlchemy's async engine runs on asyncio only.
    requires_asyncio = True
    #: Retention runs in batches from ``RetentionScheduler``.
    prunes_lazily = False

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        table_prefix: str = "",
        schema: str | None = None,
        search_language: str = "simple",
    ) -> None:
        """``url`` in any form ``engine.normalize_url`` accepts; nothing connects yet.

        ``table_prefix`` names the tables ``<prefix>sessions`` etc., and ``schema`` (on
        PostgreSQL) puts them in that schema, so they live beside an app's own tables.
        ``search_language`` (PostgreSQL only) is the text search configuration tasks
        are indexed and searched with; ``start`` checks the database has it.
        """
        self.search_language = check_search_language(search_language)
        self.url = normalize_url(url)
        self.dialect = dialect_of(self.url)
        if schema is not None and self.dialect != "postgresql":
            raise ConfigError(
                f"session_service.schema: {schema!r} is set, but only PostgreSQL has schemas; "
                f"{mask_url(self.url)} keeps agentsession's tables in its database (use "
                "session_service.table_prefix to keep them apart from the app's)"
            )
        #: The table set this store reads and writes (``schema.tables``).
        self.tables = tables(table_prefix, schema)
        self.sessions = self.tables.sessions
        self.chat_tasks = self.tables.chat_tasks
        self.feedback = self.tables.feedback
        self.engine: AsyncEngine = create_engine(self.url, pool_size=pool_size)
        #: The hot statements, built once (``statements.Statements``).
        self.statements = Statements.build(self.tables, self.dialect, self.search_language)
        #: The search statements, each built on first use (``search.SearchStatements``).
        self._search = SearchStatements(self.tables, self.dialect, self.search_language)
        #: MySQL: a task's whole save as one request (``_save_task_mysql``).
        self._mysql_saves = (
            _mysql_saves(self.statements, self.engine) if self.dialect == "mysql" else {}
        )
        #: ``INSERT ... ON CONFLICT`` of PostgreSQL or SQLite (MySQL has its own upsert).
        self._upsert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        c = self.sessions.c
        self._session_columns = (
            c.id,
            c.user_id,
            c.client_id,
            c.name,
            c.agent_id,
            c.created_time,
            c.updated_time,
            c.last_viewed_at,
            c.expires_at,
            c.pinned,
        )
        t = self.chat_tasks.c
        self._task_columns = (
            t.id,
            t.session_id,
            t.user_id,
            t.user_message,
            t.message_bubbles,
            t.task_metadata,
            t.created_time,
            t.updated_time,
        )
        self._task_names = [column.name for column in self._task_columns]
        f = self.feedback.c
        self._feedback_columns = (
            f.id,
            f.session_id,
            f.task_id,
            f.user_id,
            f.rating,
            f.comment,
            f.created_time,
        )

    def __repr__(self) -> str:
        return f"SqlStore({mask_url(self.url)!r})"

    async def start(self) -> None:
        """Check the search language (PostgreSQL), then bring the schema to head (under
        a cross-process lock; a no-op when current)."""
        from agentsession.stores.sql.migrate import migrate

        await self.check_language()
        await migrate(self.engine, self.tables, search_language=self.search_language)

    async def check_language(self) -> None:
        """PostgreSQL: ``StoreMisconfigured`` unless the database has the text search
        configuration ``search_language`` (one query, which never fails on a bad name).
        Elsewhere nothing: the setting is not used."""
        if self.dialect != "postgresql":
            return
        schema, _, name = self.search_language.rpartition(".")
        query = text(
            "SELECT count(*) FROM pg_catalog.pg_ts_config c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace "
            "WHERE c.cfgname = :name AND (n.nspname = :schema "
            "OR (:schema = '' AND pg_catalog.pg_ts_config_is_visible(c.oid)))"
        )
        rows = await self._rows(query, {"name": name, "schema": schema})
        if not rows[0][0]:
            raise StoreMisconfigured(
                f"session_service.search_language: {mask_url(self.url)} has no text search "
                f"configuration {self.search_language!r} (SESSION_SEARCH_LANGUAGE); use one "
                "that `SELECT cfgname FROM pg_ts_config` lists, e.g. 'simple' (the default: "
                "words as written) or 'english' (stemmed: 'running' finds 'run')"
            )

    def _alive(self, now: int) -> ColumnElement[bool]:
        expires_at = self.sessions.c.expires_at
        return or_(expires_at.is_(None), expires_at > now)

    def _owned(self, user_id: str, session_id: str, now: int) -> ColumnElement[bool]:
        """The conversation ``session_id`` of ``user_id``, if it has not expired."""
        c = self.sessions.c
        return and_(c.id == session_id, c.user_id == user_id, self._alive(now))

    async def close(self) -> None:
        """Close every pooled connection; the store reconnects if used again."""
        await self.engine.dispose()

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection."""
        await self._run(select(literal(1)), fetch=True)

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        values = {
            "id": record.id,
            "user_id": record.user_id,
            "client_id": record.client_id,
            "name": record.name,
            "agent_id": record.agent_id,
            "state": "{}",
            "version": 0,
            "created_time": record.created_time,
            "updated_time": record.updated_time,
            "last_viewed_at": record.last_viewed_at,
            "expires_at": record.expires_at,
            "pinned": record.pinned,
            "search_name": name_words(record.name),
        }
        try:
            await self._execute(self.sessions.insert().values(values))
        except sa_exc.IntegrityError:
            raise IdConflict("session_id", record.id) from None

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        owned = {"p_user_id": user_id, "p_session_id": session_id, "p_now": now}
        rows = await self._rows(self.statements.get_session, owned)
        return _session(rows[0]) if rows else None

    async def list_sessions(
        self,
        user_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        pinned: bool | None = None,
    ) -> list[SessionRecord]:
        values = _paging({"p_user_id": user_id, "p_now": now}, limit, after)
        statement = self.statements.list_sessions[after is not None, pinned]
        return [_session(row) for row in await self._rows(statement, values)]

    async def update_session(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        *,
        name: str | None = None,
        rename: bool = False,
        viewed: bool = False,
        pinned: bool | None = None,
    ) -> SessionRecord | None:
        values: dict[str, Any] = {"expires_at": expires_at}
        if rename:
            values.update(name=name, updated_time=now, search_name=name_words(name))
        if viewed:
            values["last_viewed_at"] = now
        if pinned is not None:
            values["pinned"] = pinned
        statement = (
            update(self.sessions).where(self._owned(user_id, session_id, now)).values(values)
        )
        if self.dialect != "mysql":
            rows = await self._rows(statement.returning(*self._session_columns))
            return _session(rows[0]) if rows else None
        # MySQL has no UPDATE ... RETURNING: read the row back.
        if not await self._rowcount(statement):
            return None
        return await self.get_session(user_id, session_id, now)

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        statement = delete(self.sessions).where(self._owned(user_id, session_id, now))
        return await self._rowcount(statement) > 0

    # State

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        owned = {"p_user_id": user_id, "p_session_id": session_id, "p_now": now}
        rows = await self._rows(self.statements.load_state, owned)
        return (rows[0][0], rows[0][1]) if rows else None

    async def write_state(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        state_json: str,
        version: int,
    ) -> bool | None:
        values = {
            "p_user_id": user_id,
            "p_session_id": session_id,
            "p_now": now,
            "p_version": version,
            "p_state": state_json,
            "p_expires_at": expires_at,
        }
        if await self._rowcount(self.statements.write_state, values):
            return True
        if await self.load_state(user_id, session_id, now) is None:
            return None
        return False

    # Chat tasks

    async def save_task(self, record: TaskRecord, touch: Touch | None = None) -> TaskRecord | None:
        """Upsert the task and touch its conversation: one statement on PostgreSQL (a
        writable CTE), one transaction elsewhere (BEGIN, UPDATE, upsert, COMMIT).

        The touch comes first and locks the conversation's row, so a delete racing
        the save waits for it or wins outright (then nothing is written: None), and a
        task id the user has in another conversation stops it (``IdConflict``).
        """
        now = record.updated_time
        kind = "lock" if touch is None else "view" if touch.viewed else "slide"
        values = {
            "p_user_id": record.user_id,
            "p_session_id": record.session_id,
            "p_now": now,
            "p_expires_at": None if touch is None else touch.expires_at,
            "p_task_id": record.id,
            "p_user_message": record.user_message,
            "p_message_bubbles": _dump(record.message_bubbles) or "null",
            "p_task_metadata": _dump(record.task_metadata),
            "p_created_time": record.created_time,
            "p_updated_time": record.updated_time,
            "p_search": self._search_value(record),
        }
        if kind == "lock":
            del values["p_expires_at"]  # the statement has no such parameter
        if self.dialect == "postgresql":
            rows = await self._rows(self.statements.save[kind], values)
            created = int(rows[0][0]) if rows else None
        elif self.dialect == "mysql":
            created = await self._save_task_mysql(kind, values)
        else:
            created = await self._transaction(
                lambda connection: self._save_task_in(connection, kind, values)
            )
        if created is None:
            if await self.get_session(record.user_id, record.session_id, now):
                raise IdConflict("task_id", record.id)
            return None
        return replace(record, created_time=created)

    def _search_value(self, record: TaskRecord) -> str:
        """What the task's ``chat_tasks.search`` is written from (``search.task_search_value``)."""
        words = task_words(record.user_message, record.message_bubbles)
        return task_search_value(self.dialect, record.user_id, words)

    async def _save_task_mysql(self, kind: str, values: dict[str, Any]) -> int | None:
        """MySQL: ``BEGIN; <touch>; <upsert>; COMMIT`` sent as one request: one round trip.

        The server runs the four in order and stops at an error, leaving the
        transaction open: then one ROLLBACK ends it (the connection is dropped if even
        that fails). A deadlock victim is sent again by ``_attempt``, as any statement.
        """
        from pymysql import err as mysql_errors  # type: ignore[import-untyped]

        sql, names, fixed = self._mysql_saves[kind]
        arguments = [values[name] if name in values else fixed[name] for name in names]

        async def run(connection: AsyncConnection) -> int | None:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            cursor = await driver.cursor()
            # SQLAlchemy's cursor events, as for its own statements: tracing and
            # statement counters (OpenTelemetry's SQLAlchemy instrumentation) see it too.
            events = self.engine.sync_engine.dispatch
            sync = connection.sync_connection
            events.before_cursor_execute(sync, cursor, sql, arguments, None, False)
            try:
                await cursor.execute(sql, arguments)  # BEGIN
                await cursor.nextset()
                touched = cursor.rowcount
                await cursor.nextset()
                inserted, last_id = cursor.rowcount, cursor.lastrowid
                await cursor.nextset()  # COMMIT
            except BaseException as error:
                await _abandon(connection, driver)
                if isinstance(error, mysql_errors.IntegrityError) and error.args[0] == 1452:
                    raise IdConflict("task_id", values["p_task_id"]) from None
                raise
            finally:
                await cursor.close()
            events.after_cursor_execute(sync, cursor, sql, arguments, None, False)
            if not touched or not inserted:
                return None
            return int(last_id) if last_id else int(values["p_created_time"])

        return await self._attempt(run)

    async def _save_task_in(
        self, connection: AsyncConnection, kind: str, values: dict[str, Any]
    ) -> int | None:
        """SQLite and MySQL, inside ``_transaction``: touch, then upsert; None if untouched."""
        touch_values = {k: v for k, v in values.items() if k in _TOUCH_PARAMETERS}
        if not (await connection.execute(self.statements.touch[kind], touch_values)).rowcount:
            return None
        upsert_values = {k: v for k, v in values.items() if k != "p_expires_at"}
        if self.dialect == "sqlite":
            result = await connection.execute(self.statements.save["upsert"], upsert_values)
            rows = result.fetchall()
            return int(rows[0][0]) if rows else None
        try:
            result = await connection.execute(self.statements.save["upsert"], upsert_values)
        except sa_exc.IntegrityError:
            raise IdConflict("task_id", values["p_task_id"]) from None
        if not result.rowcount:
            return None
        last_id = result.lastrowid
        return int(last_id) if last_id else int(values["p_created_time"])

    async def list_tasks(
        self,
        user_id: str,
        session_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        newest_first: bool = False,
    ) -> list[TaskRecord] | None:
        # One query: a marker row when the conversation is the user's and live, then
        # the page of tasks (each half on its own index); sorted here, at most limit+1.
        owned = {"p_user_id": user_id, "p_session_id": session_id, "p_now": now}
        values = _paging(owned, limit, after)
        statement = self.statements.list_tasks[newest_first, after is not None]
        rows = await self._rows(statement, values)
        if not any(row[0] is None for row in rows):
            return None
        tasks = [_task(row) for row in rows if row[0] is not None]
        tasks.sort(key=lambda task: task.sort_key, reverse=newest_first)
        return tasks

    # Search

    async def search(
        self, user_id: str, query: SearchQuery, now: int, limit: int, after: SearchKey | None
    ) -> list[SearchHit]:
        """One query (``search.SearchStatements``): the user's name hits, then task hits."""
        prepared = self._search.values(user_id, query.terms, now, limit, after)
        if prepared is None:
            return []
        return [hit_of(row) for row in await self._rows(*prepared)]

    # Feedback

    async def save_feedback(self, record: FeedbackRecord, now: int) -> FeedbackRecord | None:
        source = (
            select(
                literal(record.id, self.feedback.c.id.type),
                self.chat_tasks.c.session_id,
                self.chat_tasks.c.id,
                self.chat_tasks.c.user_id,
                literal(record.rating, self.feedback.c.rating.type),
                literal(record.comment, self.feedback.c.comment.type),
                literal(record.created_time, self.feedback.c.created_time.type),
            )
            .select_from(
                self.chat_tasks.join(
                    self.sessions, self.sessions.c.id == self.chat_tasks.c.session_id
                )
            )
            .where(
                self.chat_tasks.c.id == record.task_id,
                self.chat_tasks.c.user_id == record.user_id,
                self.chat_tasks.c.session_id == record.session_id,
                self._owned(record.user_id, record.session_id, now),
            )
        )
        # The task's row is locked while the rating is written (feedback has no foreign
        # key to it): a retention batch deleting the task either waits for this rating
        # and deletes it too, or goes first and this finds no task.
        if self.dialect == "postgresql":
            source = source.with_for_update(key_share=True, of=self.chat_tasks)
        elif self.dialect == "mysql":
            source = source.with_for_update(read=True)
        names = [column.name for column in self._feedback_columns]
        replace = ("id", "session_id", "rating", "comment", "created_time")
        statement: Executable
        if self.dialect == "mysql":
            insert = mysql_dialect.insert(self.feedback).from_select(names, source)
            statement = insert.on_duplicate_key_update(
                {name: insert.inserted[name] for name in replace}
            )
        else:
            upsert = self._upsert(self.feedback).from_select(names, source)
            statement = upsert.on_conflict_do_update(
                index_elements=[self.feedback.c.task_id, self.feedback.c.user_id],
                set_={name: upsert.excluded[name] for name in replace},
            )
        try:
            saved = await self._rowcount(statement)
        except sa_exc.IntegrityError:
            # The task or its conversation was deleted between the SELECT and the
            # foreign key check: as if it had gone first.
            return None
        return record if saved else None

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        query = select(*self._feedback_columns).where(self.feedback.c.user_id == user_id)
        if where.session_id is not None:
            query = query.where(self.feedback.c.session_id == where.session_id)
        if where.task_id is not None:
            query = query.where(self.feedback.c.task_id == where.task_id)
        if where.rating is not None:
            query = query.where(self.feedback.c.rating == where.rating)
        if where.since is not None:
            query = query.where(self.feedback.c.created_time >= where.since)
        if where.until is not None:
            query = query.where(self.feedback.c.created_time < where.until)
        query = _keyset(
            query, self.feedback.c.created_time, self.feedback.c.id, after, limit, newest=True
        )
        return [_feedback(row) for row in await self._rows(query)]

    # Retention: the statements of ``prune`` and ``lease``, one batch per call.

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """One batch of ``rule`` (see ``prune``); the next batch starts at the position."""
        if rule == "idle_sessions":
            window = cast("tuple[int, str] | None", position)
            candidates = await self._rows(idle_window(self.tables, cut, window, limit))
            deleted = 0
            if candidates:
                deleted = await self._rowcount(delete_ids(self.tables, rule, cut, candidates))
            if len(candidates) < limit:
                return deleted, None
            return deleted, (int(candidates[-1][1]), str(candidates[-1][0]))
        after = cast("int | None", position)
        if rule == "chat_tasks":
            return await self._transaction(
                lambda connection: self._prune_tasks_in(connection, cut, after, limit)
            )
        if self.dialect == "mysql":
            # MySQL cannot LIMIT a subquery: find the batch's last key, delete the range.
            found = await self._rows(boundary_query(self.tables, rule, cut, after, limit))
            if found:
                upto = int(found[0][0])
                return await self._rowcount(
                    delete_range(self.tables, rule, cut, after, upto, limit)
                ), upto
            rows = await self._rows(select_batch(self.tables, rule, cut, after, limit))
            if not rows:
                return 0, None
            return await self._rowcount(delete_ids(self.tables, rule, cut, rows)), None
        rows = await self._rows(delete_batch(self.tables, self.dialect, rule, cut, after, limit))
        if self.dialect == "postgresql":  # (count, max key)
            deleted, last = int(rows[0][0]), rows[0][1]
        else:  # the keys
            deleted, last = len(rows), max((row[0] for row in rows), default=None)
        if deleted < limit:
            return deleted, None
        return deleted, after if last is None else int(last)

    async def _prune_tasks_in(
        self, connection: AsyncConnection, cut: Cutoffs, after: int | None, limit: int
    ) -> tuple[int, int | None]:
        """One chat-task batch and its feedback, inside ``_transaction`` (see ``prune``)."""
        t, rule = self.tables, "chat_tasks"
        if self.dialect == "postgresql":
            # The batch's COMMIT does not wait for its WAL to reach the disk (the WAL
            # writer flushes it within moments): a crash may undo the last batches, each
            # still whole and in order, and the next run deletes those rows again. On
            # the benchmark machine this halved the longest batch and the app's p99.
            await connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        position: int | None = None
        if self.dialect == "postgresql":
            statement = delete_tasks(t, self.dialect, cut, after, limit)
            count, last, gone = (await connection.execute(statement)).one()
            deleted, ids = int(count), list(gone or ())
            if deleted == limit:
                position = int(last)
        elif self.dialect == "sqlite":
            statement = delete_tasks(t, self.dialect, cut, after, limit)
            rows = (await connection.execute(statement)).all()
            deleted, ids = len(rows), [str(row[0]) for row in rows]
            if deleted == limit:
                position = max(int(row[1]) for row in rows)
        elif connection.dialect.delete_returning and (
            found := (await connection.execute(boundary_query(t, rule, cut, after, limit))).all()
        ):
            # MariaDB: the batch's key range, deleted with RETURNING (as other rules).
            position = int(found[0][0])
            statement = delete_range(t, rule, cut, after, position, limit, returning=True)
            rows = (await connection.execute(statement)).all()
            deleted, ids = len(rows), [str(row[0]) for row in rows]
        else:
            # MySQL (no DELETE ... RETURNING), or the last, short batch: lock the
            # batch's rows, then delete them by id.
            query = select_batch(t, rule, cut, after, limit).with_for_update()
            rows = (await connection.execute(query)).all()
            if not rows:
                return 0, None
            deleted = (await connection.execute(delete_ids(t, rule, cut, rows))).rowcount
            ids = [str(row[0]) for row in rows]
            if len(rows) == limit:
                position = max(int(row[1]) for row in rows)
        if ids:
            await connection.execute(orphaned_feedback(t, self.dialect, ids))
        return deleted, position

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """How many rows ``rule`` would delete (one COUNT query)."""
        rows = await self._rows(count_query(self.tables, rule, cut, dialect=self.dialect))
        return int(rows[0][0])

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """One conditional upsert of the ``agentsession_leases`` row."""
        statement = acquire_statement(self.dialect, name, owner, expires_at, now, self.tables)
        rows, _, last_id = await self._run(statement, fetch=self.dialect != "mysql")
        return lease_taken(self.dialect, rows, last_id)

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        """Expire the lease row now if ``owner`` still holds it."""
        await self._execute(release_statement(name, owner, now, self.tables))

    async def lease_holder(self, name: str) -> Holder | None:
        """The lease row's owner and expiry, if the row exists."""
        rows = await self._rows(holder_query(name, self.tables))
        return Holder(rows[0][0], int(rows[0][1])) if rows else None

    # Revocation (``userdata``): one upsert, then old rows go; one keyset read.

    async def revoke(self, revocation: Revocation, now: int) -> None:
        await self._execute(revoke_statement(self.dialect, self.tables, revocation))
        await self._execute(forget_revocations(self.tables, now))

    async def list_revocations(
        self, since: int, now: int, limit: int, after: tuple[int, str, str] | None
    ) -> list[Revocation]:
        rows = await self._rows(revocations_query(self.tables, since, now, limit, after))
        return [Revocation(row[0], row[1], int(row[2]), _int(row[3])) for row in rows]

    # A user's data (``userdata``)

    async def export_sessions(
        self, user_id: str, limit: int, after: str | None
    ) -> list[StoredSession]:
        c = self.sessions.c
        query = select(*self._session_columns, c.state, c.version).where(c.user_id == user_id)
        if after is not None:
            query = query.where(c.id > after)
        rows = await self._rows(query.order_by(c.id).limit(limit))
        return [StoredSession(_session(row[:10]), row[10], int(row[11])) for row in rows]

    async def export_tasks(
        self, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord]:
        t = self.chat_tasks.c
        query = select(*self._task_columns).where(t.session_id == session_id, t.user_id == user_id)
        query = _keyset(query, t.created_time, t.id, after, limit, newest=False)
        return [_task(row) for row in await self._rows(query)]

    async def import_rows(self, rows: UserRows) -> None:
        """One transaction: check every id, then insert in chunks; any failure, nothing."""
        try:
            await self._transaction(lambda connection: self._import_in(connection, rows))
        except sa_exc.IntegrityError:
            # A row with one of the ids was written after the checks: name it.
            async with self.engine.connect() as connection:
                await self._check_ids(connection, rows)
            raise

    async def _import_in(self, connection: AsyncConnection, rows: UserRows) -> None:
        await self._check_ids(connection, rows)
        tasks = [_task_row(item) | {"p_search": self._search_value(item)} for item in rows.tasks]
        sessions = [_session_row(item) for item in rows.sessions]
        feedback = [_feedback_row(item) for item in rows.feedback]
        if self.dialect == "sqlite" and tasks:
            # Their FTS5 keys, after the largest taken (the transaction is the only writer).
            key = self.chat_tasks.c.search_key
            taken = (await connection.execute(select(func.max(key)))).scalar()
            for number, values in enumerate(tasks, start=int(taken or 0) + 1):
                values["search_key"] = number
        batches: list[tuple[Executable, list[dict[str, Any]]]] = [
            (self.sessions.insert(), sessions),
            (self._import_tasks, tasks),
            (self.feedback.insert(), feedback),
        ]
        for statement, batch in batches:
            for start in range(0, len(batch), IMPORT_CHUNK):
                await connection.execute(statement, batch[start : start + IMPORT_CHUNK])

    @functools.cached_property
    def _import_tasks(self) -> Executable:
        """The INSERT of imported tasks: ``search`` from ``:p_search`` as a save writes it
        (PostgreSQL: its tsvector)."""
        search: Any = bindparam("p_search")
        if self.dialect == "postgresql":
            search = tsvector_of(self.search_language, search)
        return self.chat_tasks.insert().values(search=search)

    async def _check_ids(self, connection: AsyncConnection, rows: UserRows) -> None:
        """Raise ``IdConflict`` naming the first taken id, if any."""
        wanted = (
            ("session_id", [item.record.id for item in rows.sessions]),
            ("task_id", [item.id for item in rows.tasks]),
            ("feedback_id", [item.id for item in rows.feedback]),
        )
        for field, ids in wanted:
            for start in range(0, len(ids), IMPORT_CHUNK):
                chunk = ids[start : start + IMPORT_CHUNK]
                query = taken_query(self.tables, field, rows.user_id, chunk)
                taken = (await connection.execute(query)).fetchall()
                if taken:
                    raise IdConflict(field, min(str(row[0]) for row in taken))

    async def erase_batch(self, user_id: str, limit: int) -> int:
        """Pick up to ``limit`` keys of the first table with rows left, delete them."""
        for name in ERASE_ORDER:
            keys = [
                row[0] for row in await self._rows(erase_keys(self.tables, name, user_id, limit))
            ]
            if keys:
                statement = erase_statement(self.tables, name, user_id, keys)
                if name == "chat_tasks":
                    # Their feedback goes in the same transaction (no foreign key does it).
                    deleted = await self._transaction(
                        functools.partial(self._erase_tasks_in, statement=statement, keys=keys)
                    )
                else:
                    deleted = await self._rowcount(statement)
                if deleted:
                    return deleted
        return 0

    async def _erase_tasks_in(
        self, connection: AsyncConnection, *, statement: Executable, keys: Sequence[str]
    ) -> int:
        deleted = (await connection.execute(statement)).rowcount
        await connection.execute(orphaned_feedback(self.tables, self.dialect, sorted(keys)))
        return int(deleted)

    # Execution: one statement per connection checkout, errors translated.

    async def _rows(
        self, statement: Executable, values: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        rows, _, _ = await self._run(statement, values, fetch=True)
        return rows

    async def _rowcount(
        self, statement: Executable, values: Mapping[str, Any] | None = None
    ) -> int:
        _, count, _ = await self._run(statement, values)
        return count

    async def _execute(self, statement: Executable) -> None:
        await self._run(statement)

    async def _run(
        self,
        statement: Executable,
        values: Mapping[str, Any] | None = None,
        *,
        fetch: bool = False,
    ) -> tuple[Sequence[Any], int, int | None]:
        """Execute one statement (with its bound ``values``) on a pooled autocommit
        connection. Returns the rows (when ``fetch``), the row count and the last
        insert id.
        """

        async def run(connection: AsyncConnection) -> tuple[Sequence[Any], int, int | None]:
            result: CursorResult[Any] = await connection.execute(statement, values)
            rows = result.fetchall() if fetch else ()
            return rows, result.rowcount, getattr(result, "lastrowid", None)

        return await self._attempt(run)

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction (SQLite: ``BEGIN IMMEDIATE``, MySQL: ``BEGIN``).

        Any failure rolls it back whole; a connection whose ROLLBACK fails (or is
        cancelled) is invalidated, so no half-open transaction goes back to the pool.
        """
        begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"

        async def run(connection: AsyncConnection) -> T:
            await connection.exec_driver_sql(begin)
            try:
                result = await work(connection)
            except BaseException:
                await _roll_back(connection)
                raise
            await connection.exec_driver_sql("COMMIT")
            return result

        return await self._attempt(run)

    async def _attempt(self, run: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``run`` on a pooled connection, with the errors translated (``errors.translate``).

        Work the database picked as a deadlock victim was rolled back whole, so it is
        run again (``DEADLOCK_RETRIES`` times). Outages become ``StoreUnavailable``.
        """
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                async with self.engine.connect() as connection:
                    return await run(connection)
            except Exception as error:
                # Anything, not only DBAPIError: SQLAlchemy 2.0 lets the driver's own
                # connect errors through unwrapped, and ``translate`` knows those too.
                deadlock = is_deadlock(error)
                if deadlock and attempt < DEADLOCK_RETRIES:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                translated = translate(error, self.url)
                if translated is None:
                    raise
                raise translated from error
        raise AssertionError("unreachable")


async def _roll_back(connection: AsyncConnection) -> None:
    """End a failed transaction so that its error, not a rollback's, goes up.

    A connection the failure already invalidated (the server went away) has nothing
    to roll back; one whose ROLLBACK fails, or is cancelled, is invalidated, so no
    open transaction goes back to the pool. Only a cancellation replaces the error.
    """
    if connection.invalidated:
        return
    try:
        await connection.exec_driver_sql("ROLLBACK")
    except BaseException as failure:
        try:
            await connection.invalidate()
        finally:
            if not isinstance(failure, Exception):
                raise


def _mysql_saves(
    statements: Statements, engine: AsyncEngine
) -> dict[str, tuple[str, list[str], dict[str, Any]]]:
    """Per touch kind: ``BEGIN; <touch>; <upsert>; COMMIT`` as SQL text for PyMySQL,
    the names of its ``%s`` parameters in order, and the values of its literals."""
    saves = {}
    for kind, touch in statements.touch.items():
        upsert = cast("ClauseElement", statements.save["upsert"])
        parts = [
            cast("SQLCompiler", clause.compile(dialect=engine.dialect))
            for clause in (touch, upsert)
        ]
        sql = "BEGIN; " + "; ".join(part.string for part in parts) + "; COMMIT"
        names = [name for part in parts for name in (part.positiontup or [])]
        fixed = {k: v for part in parts for k, v in part.params.items() if v is not None}
        saves[kind] = (sql, names, fixed)
    return saves


async def _abandon(connection: AsyncConnection, driver: Any) -> None:
    """After a failed multi-statement request: ROLLBACK, or drop the connection."""
    try:
        await driver.rollback()
    except BaseException:
        await connection.invalidate()
        raise


#: The parameters of a save's touch (``statements.Statements.touch``).
_TOUCH_PARAMETERS = frozenset({"p_user_id", "p_session_id", "p_now", "p_expires_at", "p_task_id"})


def _paging(values: dict[str, Any], limit: int, after: tuple[int, str] | None) -> dict[str, Any]:
    """``values`` with a page's bound parameters: ``limit`` and, past page one, ``after``."""
    values["p_limit"] = limit
    if after is not None:
        values["p_after_time"], values["p_after_id"] = after
    return values


def _keyset(
    query: Select[Any],
    time_column: ColumnElement[int],
    id_column: ColumnElement[str],
    after: tuple[int, str] | None,
    limit: int,
    *,
    newest: bool,
) -> Select[Any]:
    """Order by (time, id) and keep ``limit`` rows strictly after ``after``.

    Time runs newest or oldest first; ties always by ascending id. The redundant
    ``time <= t`` (or ``>=``) lets the database start its index range at ``t``.
    """
    if after is not None:
        time_, id_ = after
        if newest:
            query = query.where(time_column <= time_, or_(time_column < time_, id_column > id_))
        else:
            query = query.where(time_column >= time_, or_(time_column > time_, id_column > id_))
    order = time_column.desc() if newest else time_column
    return query.order_by(order, id_column).limit(limit)


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return dump_json(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _session(row: Any) -> SessionRecord:
    return SessionRecord(*row)


def _task(row: Any) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        session_id=row[1],
        user_id=row[2],
        user_message=row[3],
        message_bubbles=_load(row[4]),
        task_metadata=_load(row[5]),
        created_time=int(row[6]),
        updated_time=int(row[7]),
    )


def _feedback(row: Any) -> FeedbackRecord:
    return FeedbackRecord(*row)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _session_row(item: StoredSession) -> dict[str, Any]:
    record = item.record
    return {
        "id": record.id,
        "user_id": record.user_id,
        "client_id": record.client_id,
        "name": record.name,
        "agent_id": record.agent_id,
        "state": item.state_json,
        "version": item.version,
        "created_time": record.created_time,
        "updated_time": record.updated_time,
        "last_viewed_at": record.last_viewed_at,
        "expires_at": record.expires_at,
        "pinned": record.pinned,
        "search_name": name_words(record.name),
    }


def _task_row(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "session_id": record.session_id,
        "user_id": record.user_id,
        "user_message": record.user_message,
        "message_bubbles": _dump(record.message_bubbles) or "null",
        "task_metadata": _dump(record.task_metadata),
        "created_time": record.created_time,
        "updated_time": record.updated_time,
    }


def _feedback_row(record: FeedbackRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "session_id": record.session_id,
        "task_id": record.task_id,
        "user_id": record.user_id,
        "rating": record.rating,
        "comment": record.comment,
        "created_time": record.created_time,
    }
