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
from collections.abc import Sequence
from typing import Any, cast

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
from sqlalchemy.ext.asyncio import AsyncEngine

from agentsession.common import dump_json
from agentsession.errors import IdConflict, StoreUnavailable
from agentsession.stores.base import (
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    SessionRecord,
    TaskRecord,
)
from agentsession.stores.sql.engine import create_engine, dialect_of, mask_url, normalize_url
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
from agentsession.stores.sql.schema import chat_tasks, feedback, sessions

__all__ = ["SqlStore"]

#: Times a statement is retried after the database chose it as a deadlock victim.
DEADLOCK_RETRIES = 5
_DEADLOCK_CODES = {"40P01", "40001", "1213", "1205", "1020"}

_SESSION_COLUMNS = (
    sessions.c.id,
    sessions.c.user_id,
    sessions.c.client_id,
    sessions.c.name,
    sessions.c.agent_id,
    sessions.c.created_time,
    sessions.c.updated_time,
    sessions.c.last_viewed_at,
    sessions.c.expires_at,
)
_TASK_COLUMNS = (
    chat_tasks.c.id,
    chat_tasks.c.session_id,
    chat_tasks.c.user_id,
    chat_tasks.c.user_message,
    chat_tasks.c.message_bubbles,
    chat_tasks.c.task_metadata,
    chat_tasks.c.created_time,
    chat_tasks.c.updated_time,
)
_FEEDBACK_COLUMNS = (
    feedback.c.id,
    feedback.c.session_id,
    feedback.c.task_id,
    feedback.c.user_id,
    feedback.c.rating,
    feedback.c.comment,
    feedback.c.created_time,
)


class SqlStore:
    """Conversations, tasks, feedback and state in a SQL database that many apps share."""

    #: SQLAlchemy's async engine runs on asyncio only.
    requires_asyncio = True
    #: Retention runs in batches from ``RetentionScheduler``.
    prunes_lazily = False

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        """``url`` in any form ``engine.normalize_url`` accepts; nothing connects yet."""
        self.url = normalize_url(url)
        self.dialect = dialect_of(self.url)
        self.engine: AsyncEngine = create_engine(self.url, pool_size=pool_size)
        #: ``INSERT ... ON CONFLICT`` of PostgreSQL or SQLite (MySQL has its own upsert).
        self._upsert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert

    def __repr__(self) -> str:
        return f"SqlStore({mask_url(self.url)!r})"

    async def start(self) -> None:
        """Bring the schema to head (under a cross-process lock; a no-op when current)."""
        from agentsession.stores.sql.migrate import migrate

        await migrate(self.engine)

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
            await self._execute(sessions.insert().values(values))
        except sa_exc.IntegrityError:
            raise IdConflict("session_id", record.id) from None

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        query = select(*_SESSION_COLUMNS).where(_owned(user_id, session_id, now))
        rows = await self._rows(query)
        return _session(rows[0]) if rows else None

    async def list_sessions(
        self, user_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[SessionRecord]:
        query = select(*_SESSION_COLUMNS).where(sessions.c.user_id == user_id, _alive(now))
        query = _keyset(query, sessions.c.updated_time, sessions.c.id, after, limit, newest=True)
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
        statement = update(sessions).where(_owned(user_id, session_id, now)).values(values)
        if self.dialect != "mysql":
            rows = await self._rows(statement.returning(*_SESSION_COLUMNS))
            return _session(rows[0]) if rows else None
        # MySQL has no UPDATE ... RETURNING: read the row back.
        if not await self._rowcount(statement):
            return None
        return await self.get_session(user_id, session_id, now)

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        statement = delete(sessions).where(_owned(user_id, session_id, now))
        return await self._rowcount(statement) > 0

    # State

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        query = select(sessions.c.state, sessions.c.version).where(_owned(user_id, session_id, now))
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
            update(sessions)
            .where(_owned(user_id, session_id, now), sessions.c.version == version)
            .values(
                state=state_json,
                version=sessions.c.version + 1,
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

    async def save_task(self, record: TaskRecord) -> TaskRecord | None:
        source = select(
            literal(record.id, chat_tasks.c.id.type),
            sessions.c.id,
            sessions.c.user_id,
            literal(record.user_message, chat_tasks.c.user_message.type),
            literal(_dump(record.message_bubbles) or "null", chat_tasks.c.message_bubbles.type),
            literal(_dump(record.task_metadata), chat_tasks.c.task_metadata.type),
            literal(record.created_time, chat_tasks.c.created_time.type),
            literal(record.updated_time, chat_tasks.c.updated_time.type),
        ).where(_owned(record.user_id, record.session_id, record.updated_time))
        names = [column.name for column in _TASK_COLUMNS]
        if self.dialect == "mysql":
            created = await self._save_task_mysql(names, source, record)
        else:
            created = await self._save_task_returning(names, source)
        if created is None:
            if await self.get_session(record.user_id, record.session_id, record.updated_time):
                raise IdConflict("task_id", record.id)
            return None
        return TaskRecord(
            id=record.id,
            session_id=record.session_id,
            user_id=record.user_id,
            user_message=record.user_message,
            message_bubbles=record.message_bubbles,
            task_metadata=record.task_metadata,
            created_time=created,
            updated_time=record.updated_time,
        )

    async def _save_task_returning(self, names: list[str], source: Any) -> int | None:
        """PostgreSQL and SQLite: the upsert returns the stored ``created_time``."""
        upsert = self._upsert(chat_tasks).from_select(names, source)
        new = upsert.excluded
        statement = upsert.on_conflict_do_update(
            index_elements=[chat_tasks.c.id],
            set_={
                "user_message": new.user_message,
                "message_bubbles": new.message_bubbles,
                "task_metadata": new.task_metadata,
                "updated_time": new.updated_time,
            },
            # Another user's task, or a task of another conversation, is left alone.
            where=and_(
                chat_tasks.c.user_id == new.user_id,
                chat_tasks.c.session_id == new.session_id,
            ),
        ).returning(chat_tasks.c.created_time)
        rows = await self._rows(statement)
        return int(rows[0][0]) if rows else None

    async def _save_task_mysql(
        self, names: list[str], source: Any, record: TaskRecord
    ) -> int | None:
        """MySQL: ``ON DUPLICATE KEY UPDATE``, with no RETURNING.

        ``created_time = LAST_INSERT_ID(created_time)`` hands the kept creation time
        back as the statement's insert id (0 when the row was inserted). A task of
        another user or conversation sets ``session_id`` to ``''``, which no
        conversation has, so the foreign key fails the whole statement and nothing
        changes. Assignments run left to right: ``session_id`` goes last.
        """
        statement = mysql_dialect.insert(chat_tasks).from_select(names, source)
        new = statement.inserted
        ours = and_(chat_tasks.c.user_id == new.user_id, chat_tasks.c.session_id == new.session_id)
        statement = statement.on_duplicate_key_update(
            [
                ("user_message", new.user_message),
                ("message_bubbles", new.message_bubbles),
                ("task_metadata", new.task_metadata),
                ("updated_time", new.updated_time),
                ("created_time", func.LAST_INSERT_ID(chat_tasks.c.created_time)),
                ("session_id", func.IF(ours, chat_tasks.c.session_id, "")),
            ]
        )
        try:
            _, count, last_id = await self._run(statement)
        except sa_exc.IntegrityError:
            raise IdConflict("task_id", record.id) from None
        if not count:
            return None
        return int(last_id) if last_id else record.created_time

    async def list_tasks(
        self, user_id: str, session_id: str, now: int, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord] | None:
        # One query: a marker row when the conversation is the user's and live, then
        # the page of tasks (each half on its own index); sorted here, at most limit+1.
        marker = select(
            *(literal(None, column.type).label(column.name) for column in _TASK_COLUMNS),
        ).where(_owned(user_id, session_id, now))
        page = select(*_TASK_COLUMNS).where(
            chat_tasks.c.session_id == session_id, chat_tasks.c.user_id == user_id
        )
        page = _keyset(page, chat_tasks.c.created_time, chat_tasks.c.id, after, limit, newest=False)
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
                literal(record.id, feedback.c.id.type),
                chat_tasks.c.session_id,
                chat_tasks.c.id,
                chat_tasks.c.user_id,
                literal(record.rating, feedback.c.rating.type),
                literal(record.comment, feedback.c.comment.type),
                literal(record.created_time, feedback.c.created_time.type),
            )
            .select_from(chat_tasks.join(sessions, sessions.c.id == chat_tasks.c.session_id))
            .where(
                chat_tasks.c.id == record.task_id,
                chat_tasks.c.user_id == record.user_id,
                chat_tasks.c.session_id == record.session_id,
                _owned(record.user_id, record.session_id, now),
            )
        )
        names = [column.name for column in _FEEDBACK_COLUMNS]
        replace = ("id", "session_id", "rating", "comment", "created_time")
        statement: Executable
        if self.dialect == "mysql":
            insert = mysql_dialect.insert(feedback).from_select(names, source)
            statement = insert.on_duplicate_key_update(
                {name: insert.inserted[name] for name in replace}
            )
        else:
            upsert = self._upsert(feedback).from_select(names, source)
            statement = upsert.on_conflict_do_update(
                index_elements=[feedback.c.task_id, feedback.c.user_id],
                set_={name: upsert.excluded[name] for name in replace},
            )
        return record if await self._rowcount(statement) else None

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        query = select(*_FEEDBACK_COLUMNS).where(feedback.c.user_id == user_id)
        if where.session_id is not None:
            query = query.where(feedback.c.session_id == where.session_id)
        if where.task_id is not None:
            query = query.where(feedback.c.task_id == where.task_id)
        if where.rating is not None:
            query = query.where(feedback.c.rating == where.rating)
        if where.since is not None:
            query = query.where(feedback.c.created_time >= where.since)
        if where.until is not None:
            query = query.where(feedback.c.created_time < where.until)
        query = _keyset(query, feedback.c.created_time, feedback.c.id, after, limit, newest=True)
        return [_feedback(row) for row in await self._rows(query)]

    # Retention: the statements of ``prune`` and ``lease``, one batch per call.

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """One batch of ``rule`` (see ``prune``); the next batch starts at the position."""
        if rule == "idle_sessions":
            window = cast("tuple[int, str] | None", position)
            candidates = await self._rows(idle_window(cut, window, limit))
            deleted = 0
            if candidates:
                deleted = await self._rowcount(delete_ids(rule, cut, candidates))
            if len(candidates) < limit:
                return deleted, None
            return deleted, (int(candidates[-1][1]), str(candidates[-1][0]))
        after = cast("int | None", position)
        if self.dialect == "mysql":
            # MySQL cannot LIMIT a subquery: find the batch's last key, delete the range.
            found = await self._rows(boundary_query(rule, cut, after, limit))
            if found:
                upto = int(found[0][0])
                return await self._rowcount(delete_range(rule, cut, after, upto, limit)), upto
            rows = await self._rows(select_batch(rule, cut, after, limit))
            if not rows:
                return 0, None
            return await self._rowcount(delete_ids(rule, cut, rows)), None
        rows = await self._rows(delete_batch(self.dialect, rule, cut, after, limit))
        if self.dialect == "postgresql":  # (count, max key)
            deleted, last = int(rows[0][0]), rows[0][1]
        else:  # the keys
            deleted, last = len(rows), max((row[0] for row in rows), default=None)
        if deleted < limit:
            return deleted, None
        return deleted, after if last is None else int(last)

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """How many rows ``rule`` would delete (one COUNT query)."""
        rows = await self._rows(count_query(rule, cut))
        return int(rows[0][0])

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """One conditional upsert of the ``agentsession_leases`` row."""
        statement = acquire_statement(self.dialect, name, owner, expires_at, now)
        rows, _, last_id = await self._run(statement, fetch=self.dialect != "mysql")
        return lease_taken(self.dialect, rows, last_id)

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        """Expire the lease row now if ``owner`` still holds it."""
        await self._execute(release_statement(name, owner, now))

    async def lease_holder(self, name: str) -> Holder | None:
        """The lease row's owner and expiry, if the row exists."""
        rows = await self._rows(holder_query(name))
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
        A statement the database picked as a deadlock victim was rolled back whole,
        so it is run again. Database failures become ``StoreUnavailable``.
        """
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                async with self.engine.connect() as connection:
                    result: CursorResult[Any] = await connection.execute(statement)
                    rows = result.fetchall() if fetch else ()
                    return rows, result.rowcount, getattr(result, "lastrowid", None)
            except sa_exc.IntegrityError:
                raise
            except sa_exc.DBAPIError as error:
                if _is_deadlock(error) and attempt < DEADLOCK_RETRIES:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError) or (
                    error.connection_invalidated
                ):
                    raise StoreUnavailable(f"{mask_url(self.url)}: {_reason(error)}") from error
                raise
            except sa_exc.TimeoutError as error:
                raise StoreUnavailable(
                    f"{mask_url(self.url)}: no free connection in the pool"
                ) from error
            except (TimeoutError, OSError) as error:
                raise StoreUnavailable(f"{mask_url(self.url)}: {error!r}") from error
        raise AssertionError("unreachable")


def _is_deadlock(error: sa_exc.DBAPIError) -> bool:
    """Whether the database rolled the statement back to break a deadlock or lock wait."""
    original = error.orig
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if code is None and original is not None and original.args:
        code = original.args[0]
    return str(code) in _DEADLOCK_CODES


def _reason(error: sa_exc.DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__


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


def _alive(now: int) -> ColumnElement[bool]:
    return or_(sessions.c.expires_at.is_(None), sessions.c.expires_at > now)


def _owned(user_id: str, session_id: str, now: int) -> ColumnElement[bool]:
    """The conversation ``session_id`` of ``user_id``, if it has not expired."""
    return and_(sessions.c.id == session_id, sessions.c.user_id == user_id, _alive(now))


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
