"""SqlStore: the Store contract over SQLite, PostgreSQL and MySQL/MariaDB (async Core).

Every operation is one statement in autocommit mode, so a read costs one query and
a write one statement, with no BEGIN/COMMIT round trips. Ownership and the session
TTL are checked inside that statement (``INSERT ... SELECT ... FROM sessions WHERE``
the caller owns a live conversation); upserts are ``INSERT ... ON CONFLICT`` on
PostgreSQL and SQLite and ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL. Only
error paths (a missing conversation, a lost optimistic race) spend a second query
to say which it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    and_,
    delete,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentsession.common import dump_json
from agentsession.errors import ConfigError, IdConflict
from agentsession.stores.base import (
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    SessionRecord,
    TaskRecord,
    Touch,
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
    idle_window,
    select_batch,
)
from agentsession.stores.sql.schema import tables

__all__ = ["SqlStore"]

T = TypeVar("T")

#: Times a statement is retried after the database chose it as a deadlock victim.
DEADLOCK_RETRIES = 5


class SqlStore:
    """Conversations, tasks, feedback and state in a SQL database that many apps share."""

    #: SQLAlchemy's async engine runs on asyncio only.
    requires_asyncio = True
    #: Retention runs in batches from ``RetentionScheduler``.
    prunes_lazily = False

    def __init__(
        self, url: str, *, pool_size: int = 10, table_prefix: str = "", schema: str | None = None
    ) -> None:
        """``url`` in any form ``engine.normalize_url`` accepts; nothing connects yet.

        ``table_prefix`` names the tables ``<prefix>sessions`` etc., and ``schema`` (on
        PostgreSQL) puts them in that schema, so they live beside an app's own tables.
        """
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
        """Bring the schema to head (under a cross-process lock; a no-op when current)."""
        from agentsession.stores.sql.migrate import migrate

        await migrate(self.engine, self.tables)

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
        }
        try:
            await self._execute(self.sessions.insert().values(values))
        except sa_exc.IntegrityError:
            raise IdConflict("session_id", record.id) from None

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        query = select(*self._session_columns).where(self._owned(user_id, session_id, now))
        rows = await self._rows(query)
        return _session(rows[0]) if rows else None

    async def list_sessions(
        self, user_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[SessionRecord]:
        query = select(*self._session_columns).where(
            self.sessions.c.user_id == user_id, self._alive(now)
        )
        query = _keyset(
            query, self.sessions.c.updated_time, self.sessions.c.id, after, limit, newest=True
        )
        return [_session(row) for row in await self._rows(query)]

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
    ) -> SessionRecord | None:
        values: dict[str, Any] = {"expires_at": expires_at}
        if rename:
            values.update(name=name, updated_time=now)
        if viewed:
            values["last_viewed_at"] = now
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
        query = select(self.sessions.c.state, self.sessions.c.version).where(
            self._owned(user_id, session_id, now)
        )
        rows = await self._rows(query)
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
        statement = (
            update(self.sessions)
            .where(self._owned(user_id, session_id, now), self.sessions.c.version == version)
            .values(
                state=state_json,
                version=self.sessions.c.version + 1,
                updated_time=now,
                expires_at=expires_at,
            )
        )
        if await self._rowcount(statement):
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
        # Without a touch the UPDATE changes nothing, but still locks the row.
        values: dict[str, Any] = {"expires_at": self.sessions.c.expires_at}
        if touch is not None:
            values["expires_at"] = touch.expires_at
            if touch.viewed:
                values["last_viewed_at"] = now
        elsewhere = (
            select(literal(1))
            .where(
                self.chat_tasks.c.id == record.id,
                self.chat_tasks.c.user_id == record.user_id,
                self.chat_tasks.c.session_id != record.session_id,
            )
            .exists()
        )
        statement = (
            update(self.sessions)
            .where(self._owned(record.user_id, record.session_id, now), ~elsewhere)
            .values(values)
        )
        if self.dialect == "postgresql":
            created = await self._save_task_postgresql(statement, record)
        else:
            created = await self._transaction(
                lambda connection: self._save_task_in(connection, statement, record)
            )
        if created is None:
            if await self.get_session(record.user_id, record.session_id, now):
                raise IdConflict("task_id", record.id)
            return None
        return replace(record, created_time=created)

    def _task_values(self, record: TaskRecord, session_id: Any, user_id: Any) -> Select[Any]:
        """The task's row as a SELECT, its conversation and user taken from a table."""
        return select(
            literal(record.id, self.chat_tasks.c.id.type),
            session_id,
            user_id,
            literal(record.user_message, self.chat_tasks.c.user_message.type),
            literal(
                _dump(record.message_bubbles) or "null", self.chat_tasks.c.message_bubbles.type
            ),
            literal(_dump(record.task_metadata), self.chat_tasks.c.task_metadata.type),
            literal(record.created_time, self.chat_tasks.c.created_time.type),
            literal(record.updated_time, self.chat_tasks.c.updated_time.type),
        )

    async def _save_task_postgresql(self, touch: Any, record: TaskRecord) -> int | None:
        """``WITH touched AS (UPDATE sessions ... RETURNING) INSERT ... SELECT FROM touched
        ON CONFLICT DO UPDATE ... RETURNING created_time``: all of it or nothing."""
        touched = touch.returning(self.sessions.c.id, self.sessions.c.user_id).cte("touched")
        source = self._task_values(record, touched.c.id, touched.c.user_id)
        upsert = pg_dialect.insert(self.chat_tasks).from_select(self._task_names, source)
        new = upsert.excluded
        statement = (
            upsert.on_conflict_do_update(
                index_elements=[self.chat_tasks.c.id, self.chat_tasks.c.user_id],
                set_=_task_updates(new),
                where=self.chat_tasks.c.session_id == new.session_id,
            )
            .returning(self.chat_tasks.c.created_time)
            .add_cte(touched)
        )
        rows = await self._rows(statement)
        return int(rows[0][0]) if rows else None

    async def _save_task_in(
        self, connection: AsyncConnection, touch: Any, record: TaskRecord
    ) -> int | None:
        """SQLite and MySQL, inside ``_transaction``: touch, then upsert; None if untouched."""
        if not (await connection.execute(touch)).rowcount:
            return None
        source = self._task_values(record, self.sessions.c.id, self.sessions.c.user_id).where(
            self._owned(record.user_id, record.session_id, record.updated_time)
        )
        if self.dialect == "sqlite":
            upsert = sqlite_dialect.insert(self.chat_tasks).from_select(self._task_names, source)
            new = upsert.excluded
            statement = upsert.on_conflict_do_update(
                index_elements=[self.chat_tasks.c.id, self.chat_tasks.c.user_id],
                set_=_task_updates(new),
                where=self.chat_tasks.c.session_id == new.session_id,
            ).returning(self.chat_tasks.c.created_time)
            rows = (await connection.execute(statement)).fetchall()
            return int(rows[0][0]) if rows else None
        return await self._save_task_mysql(connection, source, record)

    async def _save_task_mysql(
        self, connection: AsyncConnection, source: Any, record: TaskRecord
    ) -> int | None:
        """MySQL: ``ON DUPLICATE KEY UPDATE``, with no RETURNING.

        ``created_time = LAST_INSERT_ID(created_time)`` hands the kept creation time
        back as the statement's insert id (0 when the row was inserted). The user's
        task of another conversation (saved since the touch looked) sets
        ``session_id`` to ``''``, which no conversation has, so the foreign key fails
        the statement and the transaction is rolled back: ``IdConflict``. Assignments
        run left to right: ``session_id`` goes last.
        """
        statement = mysql_dialect.insert(self.chat_tasks).from_select(self._task_names, source)
        new = statement.inserted
        ours = self.chat_tasks.c.session_id == new.session_id
        statement = statement.on_duplicate_key_update(
            [
                *_task_updates(new).items(),
                ("created_time", func.LAST_INSERT_ID(self.chat_tasks.c.created_time)),
                ("session_id", func.IF(ours, self.chat_tasks.c.session_id, "")),
            ]
        )
        try:
            result = await connection.execute(statement)
        except sa_exc.IntegrityError:
            raise IdConflict("task_id", record.id) from None
        if not result.rowcount:
            return None
        last_id = result.lastrowid
        return int(last_id) if last_id else record.created_time

    async def list_tasks(
        self, user_id: str, session_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord] | None:
        # One query: a marker row when the conversation is the user's and live, then
        # the page of tasks (each half on its own index); sorted here, at most limit+1.
        marker = select(
            *(literal(None, column.type).label(column.name) for column in self._task_columns),
        ).where(self._owned(user_id, session_id, now))
        page = select(*self._task_columns).where(
            self.chat_tasks.c.session_id == session_id, self.chat_tasks.c.user_id == user_id
        )
        page = _keyset(
            page, self.chat_tasks.c.created_time, self.chat_tasks.c.id, after, limit, newest=False
        )
        rows = await self._rows(union_all(marker, select(page.subquery())))
        if not any(row[0] is None for row in rows):
            return None
        tasks = [_task(row) for row in rows if row[0] is not None]
        tasks.sort(key=lambda task: task.sort_key)
        return tasks

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

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """How many rows ``rule`` would delete (one COUNT query)."""
        rows = await self._rows(count_query(self.tables, rule, cut))
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

    # Execution: one statement per connection checkout, errors translated.

    async def _rows(self, statement: Executable) -> Sequence[Any]:
        rows, _, _ = await self._run(statement, fetch=True)
        return rows

    async def _rowcount(self, statement: Executable) -> int:
        _, count, _ = await self._run(statement)
        return count

    async def _execute(self, statement: Executable) -> None:
        await self._run(statement)

    async def _run(
        self, statement: Executable, *, fetch: bool = False
    ) -> tuple[Sequence[Any], int, int | None]:
        """Execute one statement on a pooled autocommit connection.

        Returns the rows (when ``fetch``), the row count and the last insert id.
        """

        async def run(connection: AsyncConnection) -> tuple[Sequence[Any], int, int | None]:
            result: CursorResult[Any] = await connection.execute(statement)
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
                deadlock = isinstance(error, sa_exc.DBAPIError) and is_deadlock(error)
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


def _task_updates(new: Any) -> dict[str, Any]:
    """What saving a task again replaces (``new``: the upsert's proposed row)."""
    return {
        "user_message": new.user_message,
        "message_bubbles": new.message_bubbles,
        "task_metadata": new.task_metadata,
        "updated_time": new.updated_time,
    }


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
