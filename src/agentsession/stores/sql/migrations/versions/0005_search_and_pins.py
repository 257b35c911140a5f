"""Search of a user's history, and pinned conversations.

Revision ID: 0005
Revises: 0004
Create Date: 2027-03-01

``sessions`` gains ``pinned`` (false for every existing row: retention treats nothing
differently until a user pins) and ``search_name`` (the name's words, for search);
``chat_tasks`` gains ``search`` (what search matches: a ``tsvector`` on PostgreSQL,
the words as text elsewhere) and ``search_key`` (SQLite's FTS5 row; null elsewhere).
See ``stores.sql.search`` for why each database indexes as it does. Indexes:

* ``ix_<p>sessions_pinned`` on ``(user_id, updated_time DESC, id) WHERE pinned``
  (PostgreSQL, SQLite; MySQL has no partial index and filters the listing index);
* SQLite: ``uq_<p>chat_tasks_search_key`` and the FTS5 table ``<p>chat_tasks_search``
  (contentless, ``unicode61 remove_diacritics 0``, ``_`` a token character), kept in
  step by three triggers on ``chat_tasks`` (insert, update, delete; a cascade from
  ``sessions`` fires them too). A later revision that rebuilds ``chat_tasks``
  (``batch_alter_table``) must create the triggers again.

Existing rows are indexed here, in batches of ``BATCH`` in primary-key order, the words
computed in Python exactly as a save computes them; on PostgreSQL with the store's
``search_language`` (``config.attributes["search_language"]``): a task indexed under
one language keeps its lexemes if the setting changes later. MySQL gets each batch
into a temporary table and updates from it in one statement (an ``UPDATE`` per row
would be a round trip per row). The downgrade removes all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection

from agentsession.errors import ConfigError
from agentsession.stores.sql.schema import search_objects, tables_from
from agentsession.stores.sql.search import (
    fts_expansion,
    name_words,
    task_search_value,
    task_words,
    tsvector_of,
)

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Rows read, indexed and written back per step of the backfill.
BATCH = 1000


def _dialect() -> str:
    name = op.get_bind().dialect.name
    return "mysql" if name == "mariadb" else name


def upgrade() -> None:
    target = tables_from(context.config.attributes)
    language = str(context.config.attributes.get("search_language") or "simple")
    p, schema, dialect = target.prefix, target.schema, _dialect()
    sessions, tasks = f"{p}sessions", f"{p}chat_tasks"
    op.add_column(
        sessions,
        sa.Column(
            "pinned", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.false()
        ),
        schema=schema,
    )
    op.add_column(sessions, sa.Column("search_name", sa.Text(), nullable=True), schema=schema)
    search_type: sa.types.TypeEngine[Any] = sa.Text()
    if dialect == "postgresql":
        search_type = postgresql.TSVECTOR()
    elif dialect == "mysql":
        search_type = mysql.LONGTEXT()
    op.add_column(tasks, sa.Column("search", search_type, nullable=True), schema=schema)
    op.add_column(tasks, sa.Column("search_key", sa.BigInteger(), nullable=True), schema=schema)
    if dialect != "mysql":
        op.create_index(
            f"ix_{p}sessions_pinned",
            sessions,
            [sa.column("user_id"), sa.column("updated_time").desc(), sa.column("id")],
            schema=schema,
            postgresql_where=sa.text("pinned"),
            sqlite_where=sa.text("pinned = 1"),
        )
    if dialect == "sqlite":
        op.create_index(f"uq_{p}chat_tasks_search_key", tasks, ["search_key"], unique=True)
        _create_fts(p)
    bind = op.get_bind()
    _backfill_names(bind, dialect, sessions, schema)
    _backfill_tasks(bind, dialect, tasks, schema, language)


def downgrade() -> None:
    target = tables_from(context.config.attributes)
    p, schema, dialect = target.prefix, target.schema, _dialect()
    sessions, tasks = f"{p}sessions", f"{p}chat_tasks"
    if dialect == "sqlite":
        objects = search_objects(p)
        for kind in ("insert", "update", "delete"):
            op.execute(f'DROP TRIGGER IF EXISTS "{objects[kind]}"')
        op.execute(f'DROP TABLE IF EXISTS "{objects["fts"]}"')
        op.drop_index(f"uq_{p}chat_tasks_search_key", tasks)
    if dialect != "mysql":
        op.drop_index(f"ix_{p}sessions_pinned", sessions, schema=schema)
    for table, column in (
        (tasks, "search_key"),
        (tasks, "search"),
        (sessions, "search_name"),
        (sessions, "pinned"),
    ):
        op.drop_column(table, column, schema=schema)


def _create_fts(p: str) -> None:
    """SQLite: the FTS5 table and the triggers that keep it in step with chat_tasks.

    A row's ``search`` is ``<token> word word``; FTS5 gets ``<token>word <token>word``
    (``search.fts_expansion``) under the row's ``search_key``. Deleting from a
    contentless table takes the very text that was indexed, so each trigger expands
    the old value again.
    """
    objects, tasks = search_objects(p), f"{p}chat_tasks"
    fts = objects["fts"]
    bind = op.get_bind()
    if not bind.exec_driver_sql("SELECT sqlite_compileoption_used('ENABLE_FTS5')").scalar():
        raise ConfigError(
            "session_service.database_url: this SQLite library was built without FTS5, "
            "which search needs; use a Python whose sqlite3 has it (python.org and most "
            "distributions' builds do) or PostgreSQL/MySQL"
        )
    op.execute(
        f"CREATE VIRTUAL TABLE \"{fts}\" USING fts5(words, content='', "
        "tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\")"
    )
    indexed = "{0}.search_key IS NOT NULL AND {0}.search IS NOT NULL"
    add = f'INSERT INTO "{fts}" (rowid, words) SELECT new.search_key, {fts_expansion("new.search")}'
    remove = (
        f'INSERT INTO "{fts}" ("{fts}", rowid, words) '
        f"SELECT 'delete', old.search_key, {fts_expansion('old.search')}"
    )
    op.execute(
        f'CREATE TRIGGER "{objects["insert"]}" AFTER INSERT ON "{tasks}" '
        f"BEGIN {add} WHERE {indexed.format('new')}; END"
    )
    op.execute(
        f'CREATE TRIGGER "{objects["delete"]}" AFTER DELETE ON "{tasks}" '
        f"BEGIN {remove} WHERE {indexed.format('old')}; END"
    )
    op.execute(
        f'CREATE TRIGGER "{objects["update"]}" AFTER UPDATE OF search, search_key ON "{tasks}" '
        f"BEGIN {remove} WHERE {indexed.format('old')}; {add} WHERE {indexed.format('new')}; END"
    )


def _backfill_names(bind: Connection, dialect: str, name: str, schema: str | None) -> None:
    """``search_name`` of every named conversation."""
    table = sa.table(
        name, sa.column("id"), sa.column("name"), sa.column("search_name"), schema=schema
    )
    c = table.c

    def values(row: Any) -> dict[str, Any]:
        return {"k_id": row.id, "v_search_name": name_words(row.name)}

    after: str | None = None
    while True:
        query = sa.select(c.id, c.name).where(c.name.is_not(None))
        if after is not None:
            query = query.where(c.id > after)
        rows = bind.execute(query.order_by(c.id).limit(BATCH)).all()
        if not rows:
            return
        _write(bind, dialect, table, ("id",), [values(row) for row in rows], {})
        after = rows[-1].id


def _backfill_tasks(
    bind: Connection, dialect: str, name: str, schema: str | None, language: str
) -> None:
    """``search`` (and on SQLite ``search_key``) of every task, as a save writes them."""
    table = sa.table(
        name,
        sa.column("id"),
        sa.column("user_id"),
        sa.column("user_message"),
        sa.column("message_bubbles"),
        sa.column("search"),
        sa.column("search_key"),
        schema=schema,
    )
    c = table.c
    next_key = 1

    def values(row: Any) -> dict[str, Any]:
        bubbles = json.loads(row.message_bubbles) if row.message_bubbles else None
        words = task_words(row.user_message, bubbles)
        found = {"k_id": row.id, "k_user_id": row.user_id}
        found["v_search"] = task_search_value(dialect, row.user_id, words)
        return found

    wrap: dict[str, Callable[[Any], Any]] = {}
    if dialect == "postgresql":
        wrap["search"] = lambda value: tsvector_of(language, value)
    after: tuple[str, str] | None = None
    while True:
        query = sa.select(c.id, c.user_id, c.user_message, c.message_bubbles)
        if after is not None:
            query = query.where(c.id >= after[0], sa.or_(c.id > after[0], c.user_id > after[1]))
        rows = bind.execute(query.order_by(c.id, c.user_id).limit(BATCH)).all()
        if not rows:
            return
        batch = [values(row) for row in rows]
        if dialect == "sqlite":
            for number, item in enumerate(batch, start=next_key):
                item["v_search_key"] = number
            next_key += len(batch)
        _write(bind, dialect, table, ("id", "user_id"), batch, wrap)
        after = (rows[-1].id, rows[-1].user_id)


def _write(
    bind: Connection,
    dialect: str,
    table: Any,
    keys: tuple[str, ...],
    rows: list[dict[str, Any]],
    wrap: dict[str, Callable[[Any], Any]],
) -> None:
    """Set the ``v_<column>`` values of ``rows`` on the rows whose ``keys`` are their
    ``k_<key>`` values: one ``UPDATE`` run for the batch (``executemany``), or on MySQL
    through a temporary table (``_write_mysql``)."""
    columns = [name[2:] for name in rows[0] if name.startswith("v_")]
    if dialect == "mysql":
        _write_mysql(bind, table, keys, columns, rows)
        return
    where = [table.c[key] == sa.bindparam(f"k_{key}") for key in keys]
    sets = {
        column: wrap.get(column, lambda value: value)(sa.bindparam(f"v_{column}"))
        for column in columns
    }
    bind.execute(sa.update(table).where(*where).values(sets), rows)


def _write_mysql(
    bind: Connection,
    table: Any,
    keys: tuple[str, ...],
    columns: list[str],
    rows: list[dict[str, Any]],
) -> None:
    """MySQL: the batch into a temporary copy of the columns (same types and
    collations), then one ``UPDATE ... JOIN``; the copy is dropped afterwards."""
    names = [*keys, *columns]
    scratch = f"{table.name}_backfill"
    listed = ", ".join(f"`{name}`" for name in names)
    bind.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS `{scratch}`")
    bind.exec_driver_sql(
        f"CREATE TEMPORARY TABLE `{scratch}` AS SELECT {listed} FROM `{table.name}` LIMIT 0"
    )
    try:
        marks = ", ".join(["%s"] * len(names))
        bind.exec_driver_sql(
            f"INSERT INTO `{scratch}` ({listed}) VALUES ({marks})",
            [tuple(row[f"k_{n}"] if n in keys else row[f"v_{n}"] for n in names) for row in rows],
        )
        joined = " AND ".join(f"t.`{key}` = s.`{key}`" for key in keys)
        sets = ", ".join(f"t.`{column}` = s.`{column}`" for column in columns)
        bind.exec_driver_sql(f"UPDATE `{table.name}` t JOIN `{scratch}` s ON {joined} SET {sets}")
    finally:
        bind.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS `{scratch}`")
