"""The hot statements of ``SqlStore``, built once per table set and dialect.

Building a SQLAlchemy statement costs more client CPU than a round trip to a local
database (coercing every column, making ``excluded`` proxies, computing the cache
key). So the statements every request runs (reading a conversation, its tasks, the
user's conversations, the state; saving a task; writing the state) are built here once,
with ``bindparam`` placeholders, and executed with a dict of values: SQLAlchemy finds
their compiled form in its cache at once. Every parameter is named ``p_<what>``: a
plain column name (``user_id``) in the values of an UPDATE would be taken by SQLAlchemy
as a column to SET.

A task's save also writes its search index (``chat_tasks.search``, from
``:p_search``, see ``stores.sql.search``): on PostgreSQL ``to_tsvector(<language>,
:p_search)``, on SQLite the text plus the next ``search_key`` (the triggers put it in
FTS5), on MySQL the text; the statement count stays one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Update,
    and_,
    bindparam,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.expression import Executable

from agentsession.stores.sql.schema import Tables
from agentsession.stores.sql.search import tsvector_of

__all__ = ["TOUCH_KINDS", "Statements"]

#: How a save touches its conversation: not at all (the row is only locked), its
#: expiry slid, or its expiry slid and marked viewed.
TOUCH_KINDS = ("lock", "slide", "view")


def _owned(tables: Tables) -> ColumnElement[bool]:
    """The conversation ``:p_session_id`` of ``:p_user_id``, if it is live at ``:p_now``."""
    c = tables.sessions.c
    return and_(
        c.id == bindparam("p_session_id"),
        c.user_id == bindparam("p_user_id"),
        or_(c.expires_at.is_(None), c.expires_at > bindparam("p_now", type_=BigInteger)),
    )


def _page(
    query: Select[Any],
    time_column: Any,
    id_column: Any,
    *,
    newest: bool,
    after: bool,
    reverse_ties: bool = False,
) -> Select[Any]:
    """Order by (time, id), newest or oldest first, ``:p_limit`` rows strictly after
    ``(:p_after_time, :p_after_id)`` when ``after``. Ties by ascending id, or, with
    ``reverse_ties`` (newest first only), descending: the exact reverse of oldest first.
    The redundant ``time <= t`` (or ``>=``) lets the database start its index range at t.
    """
    descending_ids = newest and reverse_ties
    if after:
        time_ = bindparam("p_after_time", type_=BigInteger)
        id_: Any = bindparam("p_after_id")
        tie = id_column < id_ if descending_ids else id_column > id_
        if newest:
            query = query.where(time_column <= time_, or_(time_column < time_, tie))
        else:
            query = query.where(time_column >= time_, or_(time_column > time_, tie))
    order = time_column.desc() if newest else time_column
    ids = id_column.desc() if descending_ids else id_column
    return query.order_by(order, ids).limit(bindparam("p_limit"))


@dataclass(frozen=True)
class Statements:
    """Every hot statement of one table set on one dialect (``build``)."""

    get_session: Select[Any]
    load_state: Select[Any]
    #: ``(after?, pinned)`` -> the user's live conversations, newest first: all of them
    #: (pinned None), or only the pinned (True) or unpinned (False) ones.
    list_sessions: dict[tuple[bool, bool | None], Select[Any]]
    #: ``(newest first?, after?)`` -> a conversation's page of tasks with a marker row.
    list_tasks: dict[tuple[bool, bool], Executable]
    write_state: Update
    #: ``TOUCH_KINDS`` -> the touch of a save: an UPDATE of the conversation that also
    #: checks the task id is not the user's in another conversation.
    touch: dict[str, Update]
    #: PostgreSQL: ``TOUCH_KINDS`` -> the whole save in one statement (a writable CTE).
    #: Elsewhere: ``{"upsert": ...}``, the task's upsert, run after the touch.
    save: dict[str, Executable]

    @classmethod
    def build(cls, tables: Tables, dialect: str, language: str = "simple") -> Statements:
        """Build the statements (no database needed; cheap enough to do in ``__init__``).

        ``language``: PostgreSQL's text search configuration of a task's index (checked
        by ``config.check_search_language``).
        """
        s, t = tables.sessions, tables.chat_tasks
        session_columns = (
            s.c.id,
            s.c.user_id,
            s.c.client_id,
            s.c.name,
            s.c.agent_id,
            s.c.created_time,
            s.c.updated_time,
            s.c.last_viewed_at,
            s.c.expires_at,
            s.c.pinned,
        )
        task_columns = (
            t.c.id,
            t.c.session_id,
            t.c.user_id,
            t.c.user_message,
            t.c.message_bubbles,
            t.c.task_metadata,
            t.c.created_time,
            t.c.updated_time,
        )
        owned = _owned(tables)
        live = or_(s.c.expires_at.is_(None), s.c.expires_at > bindparam("p_now", type_=BigInteger))
        sessions = select(*session_columns).where(s.c.user_id == bindparam("p_user_id"), live)

        def tasks(newest: bool, after: bool) -> Executable:
            # A marker row when the conversation is the user's and live, then the page
            # of tasks (each half on its own index): one query tells "no such
            # conversation" from "no tasks".
            marker = select(
                *(literal(None, column.type).label(column.name) for column in task_columns)
            ).where(owned)
            page = select(*task_columns).where(
                t.c.session_id == bindparam("p_session_id"), t.c.user_id == bindparam("p_user_id")
            )
            page = _page(
                page, t.c.created_time, t.c.id, newest=newest, after=after, reverse_ties=True
            )
            return union_all(marker, select(page.subquery()))

        elsewhere = (
            select(literal(1))
            .where(
                t.c.id == bindparam("p_task_id"),
                t.c.user_id == bindparam("p_user_id"),
                t.c.session_id != bindparam("p_session_id"),
            )
            .exists()
        )
        touches: dict[str, dict[str, Any]] = {
            "lock": {"expires_at": s.c.expires_at},  # changes nothing, but locks the row
            "slide": {"expires_at": bindparam("p_expires_at", type_=BigInteger)},
            "view": {
                "expires_at": bindparam("p_expires_at", type_=BigInteger),
                "last_viewed_at": bindparam("p_now", type_=BigInteger),
            },
        }
        touch = {
            kind: update(s).where(owned, ~elsewhere).values(values)
            for kind, values in touches.items()
        }
        names = [column.name for column in task_columns] + _search_columns(dialect)

        def row(session_id: Any, user_id: Any) -> Select[Any]:
            """The task's row as a SELECT, its conversation and user taken from a table."""
            return select(
                bindparam("p_task_id", type_=t.c.id.type),
                session_id,
                user_id,
                bindparam("p_user_message", type_=t.c.user_message.type),
                bindparam("p_message_bubbles", type_=t.c.message_bubbles.type),
                bindparam("p_task_metadata", type_=t.c.task_metadata.type),
                bindparam("p_created_time", type_=BigInteger),
                bindparam("p_updated_time", type_=BigInteger),
                *_search_values(tables, dialect, language),
            )

        save: dict[str, Executable] = {}
        if dialect == "postgresql":
            for kind, statement in touch.items():
                touched = statement.returning(s.c.id, s.c.user_id).cte(f"touched_{kind}")
                upsert = pg_dialect.insert(t).from_select(
                    names, row(touched.c.id, touched.c.user_id)
                )
                new = upsert.excluded
                save[kind] = (
                    upsert.on_conflict_do_update(
                        index_elements=[t.c.id, t.c.user_id],
                        set_=_task_updates(new),
                        where=t.c.session_id == new.session_id,
                    )
                    .returning(t.c.created_time)
                    .add_cte(touched)
                )
        elif dialect == "sqlite":
            source = row(s.c.id, s.c.user_id).where(owned)
            sqlite_upsert = sqlite_dialect.insert(t).from_select(names, source)
            new = sqlite_upsert.excluded
            save["upsert"] = sqlite_upsert.on_conflict_do_update(
                index_elements=[t.c.id, t.c.user_id],
                set_=_task_updates(new),
                where=t.c.session_id == new.session_id,
            ).returning(t.c.created_time)
        else:
            # No RETURNING: ``created_time = LAST_INSERT_ID(created_time)`` hands the
            # kept creation time back as the insert id (0 when the row was inserted).
            # The user's task of another conversation (saved since the touch looked)
            # sets ``session_id`` to ``''``, which no conversation has, so the foreign
            # key fails the statement: ``IdConflict``. Assignments run left to right:
            # ``session_id`` goes last.
            source = row(s.c.id, s.c.user_id).where(owned)
            mysql_upsert = mysql_dialect.insert(t).from_select(names, source)
            new = mysql_upsert.inserted
            ours = t.c.session_id == new.session_id
            save["upsert"] = mysql_upsert.on_duplicate_key_update(
                [
                    *_task_updates(new).items(),
                    ("created_time", func.LAST_INSERT_ID(t.c.created_time)),
                    ("session_id", func.IF(ours, t.c.session_id, "")),
                ]
            )
        return cls(
            get_session=select(*session_columns).where(owned),
            load_state=select(s.c.state, s.c.version).where(owned),
            list_sessions={
                (after, pinned): _page(
                    _pinned(sessions, s, pinned), s.c.updated_time, s.c.id, newest=True, after=after
                )
                for after in (False, True)
                for pinned in (None, True, False)
            },
            list_tasks={
                (newest, after): tasks(newest, after)
                for newest in (False, True)
                for after in (False, True)
            },
            write_state=update(s)
            .where(owned, s.c.version == bindparam("p_version"))
            .values(
                state=bindparam("p_state"),
                version=s.c.version + 1,
                updated_time=bindparam("p_now", type_=BigInteger),
                expires_at=bindparam("p_expires_at", type_=BigInteger),
            ),
            touch=touch,
            save=save,
        )


def _task_updates(new: Any) -> dict[str, Any]:
    """What saving a task again replaces (``new``: the upsert's proposed row); the
    search index with it (SQLite keeps the task's ``search_key``)."""
    return {
        "user_message": new.user_message,
        "message_bubbles": new.message_bubbles,
        "task_metadata": new.task_metadata,
        "updated_time": new.updated_time,
        "search": new.search,
    }


def pinned_condition(sessions: Any, pinned: bool) -> ColumnElement[bool]:
    """Pinned (or not) conversations, written as the partial index ``ix_sessions_pinned``
    is (``WHERE pinned``), so that PostgreSQL and SQLite match it."""
    column: ColumnElement[bool] = sessions.c.pinned
    return column == true() if pinned else column == false()


def _pinned(query: Select[Any], sessions: Any, pinned: bool | None) -> Select[Any]:
    return query if pinned is None else query.where(pinned_condition(sessions, pinned))


def _search_columns(dialect: str) -> list[str]:
    """The search columns a task's save writes besides its own (see ``_search_values``)."""
    return ["search", "search_key"] if dialect == "sqlite" else ["search"]


def _search_values(tables: Tables, dialect: str, language: str) -> list[Any]:
    """The values of ``_search_columns``: PostgreSQL's tsvector of ``:p_search``,
    elsewhere the text; on SQLite also the next ``search_key`` (one writer at a time)."""
    text = bindparam("p_search", type_=tables.chat_tasks.c.search.type)
    if dialect == "postgresql":
        return [tsvector_of(language, bindparam("p_search"))]
    if dialect == "sqlite":
        key = tables.chat_tasks.c.search_key
        next_key = select(func.coalesce(func.max(key), 0) + 1).scalar_subquery()
        return [text, next_key]
    return [text]
