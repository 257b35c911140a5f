"""The SQL of the retention rules: which rows are old, and one batch of deleting them.

Rules run in ``RULES`` order. Each one walks an index oldest first (its ``key``
column) in batches, and the next batch starts its index range at the largest key
deleted, so rows deleted earlier are never read again. On PostgreSQL and SQLite a
batch is one statement that deletes rows by their physical address, ``DELETE ... WHERE
ctid = ANY(ARRAY(SELECT ctid ... ORDER BY key LIMIT n))`` (SQLite: ``rowid IN``): no
primary-key lookup per row. MySQL cannot LIMIT such a subquery: there a batch reads
the key of the n-th old row (one row), then deletes ``WHERE key BETWEEN ... LIMIT n``
(MariaDB ``RETURNING`` the ids where they are needed). Every DELETE re-checks
the rule, so a row made young meanwhile stays. Deleting a conversation deletes its
tasks and feedback (ON DELETE CASCADE); those are not counted again. A task's key is
``(id, user_id)``: a batch deletes by ``id`` and re-checks the rule on every row, so a
same-id task of another user goes only if it is old too (it would be in a later batch
anyway).

Chat tasks take their feedback along without a foreign key (none fires per row, which
was half a batch's cost; migration 0004): a batch is one transaction that deletes the
tasks and gets their ids back (``delete_tasks``: PostgreSQL and SQLite in one
``DELETE ... RETURNING``, MariaDB by ``delete_range(..., returning=True)``; MySQL,
which has no ``DELETE ... RETURNING``, locks the batch with ``SELECT ... FOR UPDATE``,
then deletes it by id), then deletes the feedback left without its task
(``orphaned_feedback``). That second statement sees every rating committed before it
ran, and a rating saved later finds its task gone (it locks the task first), so none
is left behind.

Idle conversations are the exception: whether one is idle depends on its tasks,
which no index of ``sessions`` can answer, and a planner that cannot estimate how
many candidates pass reads them all, batch after batch. So that rule walks a
*window*: the next ``n`` candidates by ``(updated_time, id)`` (``idle_window``, an
index range and nothing else), then deletes those of them that are idle by id
(``delete_ids``); the next window starts after the last candidate, kept or not.

Pinned conversations (``sessions.pinned``) are never idle, and their tasks are never
old: the chat-task rule skips a task whose conversation is pinned, on PostgreSQL with
``session_id NOT IN (SELECT id FROM sessions WHERE pinned)`` (a hashed subplan: the
pinned ids read once per statement from the partial index ``ix_sessions_pinned``),
elsewhere with a scalar subquery (a primary-key probe per old task; ``NOT EXISTS``
would be a semi-join MariaDB materializes from every conversation). Either way a batch
still walks the ``updated_time`` index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import NamedFromClause

from agentsession.stores.base import RULES, Cutoffs
from agentsession.stores.sql.schema import Tables
from agentsession.stores.sql.statements import pinned_condition

__all__ = [
    "RULES",
    "Cutoffs",
    "boundary_query",
    "count_query",
    "delete_batch",
    "delete_ids",
    "delete_range",
    "delete_tasks",
    "idle_window",
    "orphaned_feedback",
    "select_batch",
]


def _table(t: Tables, rule: str) -> Table:
    return {"chat_tasks": t.chat_tasks, "feedback": t.feedback}.get(rule, t.sessions)


def _key(rule: str, table: NamedFromClause) -> ColumnElement[int]:
    """The indexed time column a rule walks oldest first."""
    name = {"feedback": "created_time", "expired_sessions": "expires_at"}.get(rule, "updated_time")
    column: ColumnElement[int] = table.c[name]
    return column


def _old(
    t: Tables,
    rule: str,
    table: NamedFromClause,
    cut: Cutoffs,
    *,
    recheck: bool = False,
    dialect: str | None = None,
) -> ColumnElement[bool]:
    """The rule's condition on a row of ``table`` (the rule's table or an alias of it).

    ``recheck``: the condition only re-checks rows already picked by id, so its time
    column is wrapped (``+ 0``) where no planner can use it: the ids' primary key
    must be the way in, not a range scan over every old row. ``dialect``: how a task's
    pinned conversation is looked for (``_unpinned``).
    """
    c = table.c

    def time(name: str) -> ColumnElement[int]:
        column: ColumnElement[int] = c[name]
        return column + 0 if recheck else column

    if rule == "chat_tasks":
        assert cut.tasks is not None
        return and_(time("updated_time") < cut.tasks, _unpinned(t, table, dialect))
    if rule == "feedback":
        assert cut.feedback is not None
        return time("created_time") < cut.feedback
    if rule == "expired_sessions":
        return time("expires_at") <= cut.now
    assert cut.idle is not None
    # Idle: not updated, viewed, nor a task saved since the cutoff; not expired (the
    # expiry rule, which runs first, takes those). Tasks older than the task cutoff
    # are gone by now (that rule runs first), so they never count as activity.
    # A recent task is looked for conversation by conversation, through the
    # session_id index (``+ 0`` keeps the planner off the updated_time index, which
    # would read every recent task). It is a scalar subquery, not NOT EXISTS: no
    # planner turns it into an anti-join, which PostgreSQL would run as a hash join
    # over every recent task of every conversation, batch after batch.
    active_since = cut.idle if cut.tasks is None else max(cut.idle, cut.tasks)
    recent_task = (
        select(literal(1))
        .where(t.chat_tasks.c.session_id == c.id, t.chat_tasks.c.updated_time + 0 >= active_since)
        .limit(1)
        .scalar_subquery()
    )
    return and_(
        time("updated_time") < cut.idle,
        or_(c.last_viewed_at.is_(None), c.last_viewed_at < cut.idle),
        or_(c.expires_at.is_(None), c.expires_at > cut.now),
        pinned_condition(table, False),
        recent_task.is_(None),
    )


def _unpinned(t: Tables, tasks: NamedFromClause, dialect: str | None) -> ColumnElement[bool]:
    """The task's conversation is not pinned: on PostgreSQL ``NOT IN`` the pinned ids
    (hashed once per statement), elsewhere a scalar subquery probing the conversation
    by its key (MariaDB would turn ``NOT EXISTS`` into a scan of every conversation)."""
    s = t.sessions
    if dialect == "postgresql":
        pinned_ids = select(s.c.id).where(pinned_condition(s, True))
        return tasks.c.session_id.not_in(pinned_ids)
    pinned = (
        select(literal(1))
        .where(s.c.id == tasks.c.session_id, pinned_condition(s, True))
        .limit(1)
        .scalar_subquery()
    )
    return pinned.is_(None)


def idle_window(t: Tables, cut: Cutoffs, after: tuple[int, str] | None, limit: int) -> Select[Any]:
    """The next ``limit`` idle-rule candidates after ``after``: ``(id, updated_time)``.

    Candidates are conversations not updated since the idle cutoff, in
    ``(updated_time, id)`` order: one range of the ``updated_time`` index, which
    holds the primary key too. ``delete_ids`` then deletes the idle ones.
    """
    assert cut.idle is not None
    key = t.sessions.c.updated_time
    condition: ColumnElement[bool] = key < cut.idle
    if after is not None:
        # Spelled out (not a row comparison), so that MySQL ranges over the index too.
        later = or_(key > after[0], and_(key == after[0], t.sessions.c.id > after[1]))
        condition = and_(key >= after[0], later, condition)
    return select(t.sessions.c.id, key).where(condition).order_by(key, t.sessions.c.id).limit(limit)


def select_batch(
    t: Tables,
    rule: str,
    cut: Cutoffs,
    after: int | None,
    limit: int,
    *,
    dialect: str | None = None,
) -> Select[Any]:
    """The next ``limit`` old rows of ``rule``, oldest first: ``(id, key)``."""
    table = _table(t, rule).alias("batch")
    key = _key(rule, table)
    condition = _old(t, rule, table, cut, dialect=dialect)
    if after is not None:
        condition = and_(key >= after, condition)
    return select(table.c.id, key).where(condition).order_by(key).limit(limit)


def _address(dialect: str, table: NamedFromClause | None = None) -> ColumnElement[Any]:
    """The row's physical address: PostgreSQL's ``ctid``, SQLite's ``rowid``.

    A batch picks its rows on the rule's time index and deletes them by address, so
    no primary-key lookup is made per row: ids are random, so each lookup would read
    another page of the key's index (on PostgreSQL 1,000 lookups cost ~6 ms of a
    ~7.5 ms batch; by ``ctid`` the batch takes ~1.5 ms).
    """
    name = "ctid" if dialect == "postgresql" else "rowid"
    return literal_column(name if table is None else f"{table.name}.{name}")


def _chosen(
    t: Tables, dialect: str, rule: str, cut: Cutoffs, after: int | None, limit: int
) -> ColumnElement[bool]:
    """The rows of the next batch, by address: ``ctid = ANY(ARRAY(...))`` on PostgreSQL
    (the array is computed once; then a TID scan), ``rowid IN (...)`` on SQLite."""
    batch = select_batch(t, rule, cut, after, limit, dialect=dialect)
    alias = batch.get_final_froms()[0]
    assert isinstance(alias, NamedFromClause)
    addresses = batch.with_only_columns(_address(dialect, alias))
    if dialect == "postgresql":
        return _address(dialect) == any_(func.array(addresses.scalar_subquery()))
    return _address(dialect).in_(addresses)


def delete_batch(
    t: Tables, dialect: str, rule: str, cut: Cutoffs, after: int | None, limit: int
) -> Executable:
    """PostgreSQL and SQLite: delete the next batch in one statement.

    PostgreSQL returns one row, ``(count, max key)``, from ``WITH gone AS (DELETE ...
    WHERE ctid = ANY(ARRAY(SELECT ctid ... LIMIT n)) RETURNING key)``; SQLite returns
    the keys. The rule is re-checked on each row: a row updated since it was picked
    is re-read and stays if it is young now.
    """
    table = _table(t, rule)
    key = _key(rule, table)
    chosen = _chosen(t, dialect, rule, cut, after, limit)
    recheck = _old(t, rule, table, cut, recheck=True, dialect=dialect)
    if dialect != "postgresql":
        return delete(table).where(chosen, recheck).returning(key)
    gone = delete(table).where(chosen, recheck).returning(key.label("key")).cte("gone")
    return select(func.count(), func.max(gone.c.key))


def delete_tasks(
    t: Tables, dialect: str, cut: Cutoffs, after: int | None, limit: int
) -> Executable:
    """PostgreSQL and SQLite: delete the next chat-task batch (as ``delete_batch``) and
    return the ids of the tasks deleted, which ``orphaned_feedback`` needs: SQLite
    ``(id, key)`` per task, PostgreSQL one row ``(count, max key, array of ids)``."""
    table = t.chat_tasks
    chosen = _chosen(t, dialect, "chat_tasks", cut, after, limit)
    recheck = _old(t, "chat_tasks", table, cut, recheck=True, dialect=dialect)
    gone = delete(table).where(chosen, recheck).returning(table.c.id, table.c.updated_time)
    if dialect != "postgresql":
        return gone
    # One row, ``(count, max key, ids)``: the ids come back as one array, decoded by the
    # driver, not as a thousand rows.
    done = gone.cte("gone")
    return select(func.count(), func.max(done.c.updated_time), func.array_agg(done.c.id))


def orphaned_feedback(t: Tables, dialect: str, task_ids: Sequence[str]) -> Executable:
    """Delete the feedback on ``task_ids`` whose task (its id and user) is gone.

    Run after the tasks' DELETE, in its transaction: it sees every rating committed
    before it started, so a rating saved while the batch ran goes too. PostgreSQL gets
    the ids as one array (``task_id = ANY(:ids)``): one statement text whatever their
    number, prepared once, where an ``IN`` list of 1,000 is planned anew each time.
    """
    f, c = t.feedback, t.chat_tasks.c
    task = select(literal(1)).where(c.id == f.c.task_id, c.user_id == f.c.user_id).exists()
    if dialect == "postgresql":
        ids = bindparam("task_ids", list(task_ids), type_=postgresql.ARRAY(f.c.task_id.type))
        return delete(f).where(f.c.task_id == any_(ids), ~task)
    return delete(f).where(f.c.task_id.in_(task_ids), ~task)


def boundary_query(
    t: Tables, rule: str, cut: Cutoffs, after: int | None, limit: int
) -> Select[Any]:
    """MySQL: the key of the ``limit``-th old row from ``after`` on (none: fewer are left).

    One row read from the key index, so a batch never brings its ids to the client.
    """
    batch = select_batch(t, rule, cut, after, limit)
    key = batch.selected_columns[1]
    return batch.with_only_columns(key).offset(limit - 1).limit(1)


def delete_range(
    t: Tables,
    rule: str,
    cut: Cutoffs,
    after: int | None,
    upto: int,
    limit: int,
    *,
    returning: bool = False,
) -> Executable:
    """MySQL: delete at most ``limit`` old rows with ``after <= key <= upto``.

    Both ends of the range are given, so the optimizer reads the key index over the
    batch alone (an open-ended range may get a full scan, which waits for every row
    lock the app holds). ``returning``: MariaDB's ``RETURNING id, key`` (the chat-task
    rule needs the ids).
    """
    table = _table(t, rule)
    key = _key(rule, table)
    bounds = key <= upto if after is None else key.between(after, upto)
    statement = (
        delete(table)
        .where(bounds, _old(t, rule, table, cut, recheck=True))
        .with_dialect_options(mysql_limit=limit)
    )
    return statement.returning(table.c.id, key) if returning else statement


def delete_ids(t: Tables, rule: str, cut: Cutoffs, rows: Sequence[Any]) -> Executable:
    """Delete those of the ``(id, key)`` rows (from ``select_batch`` or ``idle_window``)
    that the rule still finds old: MySQL's last (short) batch, and every idle batch.

    The batch's key range and a LIMIT are spelled out beside the ids: without them
    MariaDB may pick a full table scan over many primary-key lookups once the table
    is small.
    """
    table = _table(t, rule)
    key = _key(rule, table)
    keys = [int(row[1]) for row in rows]
    return (
        delete(table)
        .where(
            table.c.id.in_([row[0] for row in rows]),
            key.between(min(keys), max(keys)),
            _old(t, rule, table, cut, recheck=True),
        )
        .with_dialect_options(mysql_limit=len(rows))
    )


def count_query(t: Tables, rule: str, cut: Cutoffs, *, dialect: str | None = None) -> Select[Any]:
    """How many rows ``rule`` would delete, running after the rules before it (dry run).

    Rules before it change nothing it looks at, except that old tasks take their
    feedback along: the feedback rule counts only feedback whose task stays (a recent
    task, or any task of a pinned conversation).
    """
    table = _table(t, rule)
    condition = _old(t, rule, table, cut, dialect=dialect)
    query = select(func.count()).select_from(table).where(condition)
    if rule == "feedback" and cut.tasks is not None:
        tasks = t.chat_tasks
        task = and_(tasks.c.id == t.feedback.c.task_id, tasks.c.user_id == t.feedback.c.user_id)
        pruned = _old(t, "chat_tasks", tasks, cut, dialect=dialect)
        query = query.join(tasks, task).where(~pruned)
    return query
