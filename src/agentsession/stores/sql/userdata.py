"""Statements of revocation and of a user's data (export, import, erase) for SqlStore.

Revocation: one upsert per ``revoke`` that keeps the later ``revoked_at`` and
``keep_until`` (``ON CONFLICT DO UPDATE`` on PostgreSQL and SQLite, ``ON DUPLICATE
KEY UPDATE`` on MySQL), and a keyset read in ``(revoked_at, kind, subject)`` order
on the ``revoked_at`` index. A user's data: keyset reads by id, existence checks for
an import, and the two halves of one erase step (pick a batch of keys, delete them:
MySQL cannot LIMIT a subquery of DELETE) children first, so each step is small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Delete, Executable, Select, and_, case, delete, or_, select
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from agentsession.stores.base import Revocation
from agentsession.stores.sql.schema import Tables

__all__ = [
    "ERASE_ORDER",
    "erase_keys",
    "erase_statement",
    "forget_revocations",
    "revocations_query",
    "revoke_statement",
    "taken_query",
]

#: The tables an erase step empties, in order: children before parents.
ERASE_ORDER = ("feedback", "chat_tasks", "sessions")


def revoke_statement(dialect: str, tables: Tables, revocation: Revocation) -> Executable:
    """Insert the revocation, or move a stored one's times forward (never back)."""
    table = tables.revocations
    values = {
        "kind": revocation.kind,
        "subject": revocation.subject,
        "revoked_at": revocation.revoked_at,
        "keep_until": revocation.keep_until,
    }
    if dialect == "mysql":
        insert = mysql_dialect.insert(table).values(values)
        new: Any = insert.inserted
        return insert.on_duplicate_key_update(_later(table.c, new))
    upsert = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)
    upsert = upsert.values(values)
    return upsert.on_conflict_do_update(
        index_elements=[table.c.kind, table.c.subject], set_=_later(table.c, upsert.excluded)
    )


def _later(old: Any, new: Any) -> dict[str, Any]:
    """The stored row's new times: the later of each (a null ``keep_until`` is latest)."""
    return {
        "revoked_at": case((new.revoked_at > old.revoked_at, new.revoked_at), else_=old.revoked_at),
        "keep_until": case(
            (or_(old.keep_until.is_(None), new.keep_until.is_(None)), None),
            (new.keep_until > old.keep_until, new.keep_until),
            else_=old.keep_until,
        ),
    }


def forget_revocations(tables: Tables, now: int) -> Delete:
    """Delete the revocations that void nothing any more (``keep_until`` before now)."""
    table = tables.revocations
    return delete(table).where(table.c.keep_until.is_not(None), table.c.keep_until < now)


def revocations_query(
    tables: Tables, since: int, now: int, limit: int, after: tuple[int, str, str] | None
) -> Select[Any]:
    """Kept revocations from ``since`` on, by ``(revoked_at, kind, subject)``, after ``after``."""
    c = tables.revocations.c
    query = select(c.kind, c.subject, c.revoked_at, c.keep_until).where(
        c.revoked_at >= since, or_(c.keep_until.is_(None), c.keep_until >= now)
    )
    if after is not None:
        time_, kind, subject = after
        query = query.where(
            c.revoked_at >= time_,
            or_(
                c.revoked_at > time_,
                c.kind > kind,
                and_(c.kind == kind, c.subject > subject),
            ),
        )
    return query.order_by(c.revoked_at, c.kind, c.subject).limit(limit)


def taken_query(tables: Tables, field: str, user_id: str, ids: Sequence[str]) -> Select[Any]:
    """Which of ``ids`` are taken for an import of ``user_id``'s rows (``IdConflict``
    field ``session_id``: any owner; ``task_id``: the user's; ``feedback_id``: any)."""
    if field == "session_id":
        return select(tables.sessions.c.id).where(tables.sessions.c.id.in_(ids))
    if field == "task_id":
        c = tables.chat_tasks.c
        return select(c.id).where(c.user_id == user_id, c.id.in_(ids))
    return select(tables.feedback.c.id).where(tables.feedback.c.id.in_(ids))


def erase_keys(tables: Tables, name: str, user_id: str, limit: int) -> Select[Any]:
    """Up to ``limit`` keys of the user's rows of table ``name`` (one of ``ERASE_ORDER``).

    Tasks are found through the user's conversations (``chat_tasks`` has no index
    that starts with ``user_id``), each half on its own index.
    """
    if name == "feedback":
        c = tables.feedback.c
        return select(c.id).where(c.user_id == user_id).limit(limit)
    if name == "chat_tasks":
        c = tables.chat_tasks.c
        owned = select(tables.sessions.c.id).where(tables.sessions.c.user_id == user_id)
        return select(c.id).where(c.session_id.in_(owned), c.user_id == user_id).limit(limit)
    c = tables.sessions.c
    return select(c.id).where(c.user_id == user_id).limit(limit)


def erase_statement(tables: Tables, name: str, user_id: str, keys: Sequence[str]) -> Delete:
    """Delete the user's rows of table ``name`` whose id is in ``keys``."""
    table = getattr(tables, name)
    condition: ColumnElement[bool] = and_(table.c.user_id == user_id, table.c.id.in_(keys))
    return delete(table).where(condition)
