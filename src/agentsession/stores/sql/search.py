"""Full-text search on SQL: what a row's index holds, and the one statement of a search.

What is indexed is ``agentsession.search.index_text`` of a task's document (and of a
conversation's name), computed here in Python so that every database sees the same
words, each cut to ``MAX_TERM_LENGTH`` characters (a term is never longer, so a
prefix still matches). A search reads only the searching user's rows, whatever the
table holds, so its cost is that user's history, not everyone's: on PostgreSQL and
MySQL the user's live conversations (the listing index), then their tasks (the
``session_id`` index); on SQLite the user's own terms in FTS5.

* PostgreSQL: ``chat_tasks.search`` is a ``tsvector`` (``to_tsvector(<language>,
  words)`` in the statement that writes the task), matched with ``@@`` against
  ``to_tsquery(<language>, 'term':* & ...)`` and ranked with ``ts_rank``. (No GIN
  index: on 300,000 tasks the planner chose GIN bitmaps for words common across
  users, 15-28 ms where the user's ~1,000 rows take 4 ms, and the more the larger the
  table; a partial match of a short prefix reads every user's postings.)
* MySQL/MariaDB: ``chat_tasks.search`` is `` word word ...`` (a space before each
  word): a term matches where `` term`` occurs (``INSTR``), the rank counts those
  occurrences. (No FULLTEXT index: on 300,000 tasks InnoDB took 0.5 s for a one-letter
  prefix and 30 ms for "the*", reading every user's postings; and each query re-reads
  the ids of every row deleted since the last ``OPTIMIZE TABLE``: 111,000 deleted rows
  made a rare word's query 0.7 -> 18 ms. Nor its stop words and minimum word length.)
* SQLite: an FTS5 table (``unicode61 remove_diacritics 0``) whose tokens are the
  words each prefixed by the owner's token (``_<8 base32 chars of a hash of the user
  id>_``), so a prefix query ``"<token>term"*`` reads only that user's terms. The row
  holds ``<token> word word ...``; triggers on ``chat_tasks`` expand it into the FTS5
  row keyed by ``search_key`` on insert, update and delete (a cascade too). The rank
  counts occurrences, as on MySQL.

Conversation names match the same way, over the user's live conversations (the
listing index): ``to_tsvector(<language>, search_name)`` on PostgreSQL, ``INSTR``
elsewhere. Ranks are computed from the row alone (never from table-wide statistics),
so a row's rank is the same from one page to the next and the keyset holds.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR

from agentsession.search import MAX_DOCUMENT, MAX_TERM_LENGTH, document, words
from agentsession.stores.base import SearchHit, SearchKey
from agentsession.stores.sql.schema import Tables, search_objects

__all__ = [
    "SearchStatements",
    "fts_expansion",
    "hit_of",
    "indexed_words",
    "match_query",
    "name_words",
    "owner_token",
    "search_config",
    "task_search_value",
    "task_words",
    "tsquery_text",
    "tsvector_of",
]


#: A word, as ``agentsession.search.words`` reads one.
_WORD = re.compile(r"[^\W_]+")
#: A word longer than a term can be: its first ``MAX_TERM_LENGTH`` characters are kept.
_LONG_WORD = re.compile(rf"(\S{{{MAX_TERM_LENGTH}}})\S+")


def indexed_words(text: str) -> str:
    """``index_text(text)`` with each word cut to ``MAX_TERM_LENGTH`` characters: the
    words found, joined, then casefolded in one go (casefolding maps each character on
    its own, so this is the same text, in a third of the time). Casefolding makes a
    word at most three times as long: shorter words need no cut."""
    found = _WORD.findall(text[:MAX_DOCUMENT])
    joined = " ".join(found).casefold()
    if max(map(len, found), default=0) * 3 <= MAX_TERM_LENGTH:
        return joined
    return _LONG_WORD.sub(r"\1", joined)


def task_words(user_message: str | None, message_bubbles: Any) -> str:
    """A task's indexed words: ``indexed_words`` of its document."""
    return indexed_words(document(user_message, message_bubbles))


def name_words(name: str | None) -> str | None:
    """``sessions.search_name``: a space before each word of the name; None without one."""
    if name is None:
        return None
    words = indexed_words(name)
    return " " + words if words else ""


@functools.lru_cache(maxsize=4096)
def owner_token(user_id: str) -> str:
    """SQLite: the user's token, ``_`` + 8 base32 characters of a hash + ``_``.

    No query term can make it (terms have no ``_``). Two users sharing one only makes
    their searches read each other's candidates, which the user check drops."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=5).digest()
    return "_" + base64.b32encode(digest).decode("ascii").lower() + "_"


def task_search_value(dialect: str, user_id: str, words: str) -> str:
    """What ``chat_tasks.search`` is written with: the words (PostgreSQL makes the
    tsvector of them), `` word word`` (MySQL), ``<token> word word`` (SQLite)."""
    if dialect == "postgresql":
        return words
    if dialect == "mysql":
        return " " + words if words else ""
    return owner_token(user_id) + " " + words


def tsquery_text(terms: Sequence[str]) -> str:
    """PostgreSQL: every term as a quoted prefix, ``'term':* & ...`` (never syntax)."""
    quoted = ("'" + term.replace("\\", "\\\\").replace("'", "''") + "':*" for term in terms)
    return " & ".join(quoted)


def match_query(user_id: str, terms: Sequence[str]) -> str:
    """SQLite: the FTS5 query, ``"<token>term"* AND ...`` (quoted strings, never syntax)."""
    token = owner_token(user_id)
    return " AND ".join('"' + (token + term).replace('"', '""') + '"*' for term in terms)


def fts_expansion(value: str) -> str:
    """SQLite: SQL of the FTS5 text of ``chat_tasks.search`` value ``value`` (a column
    of ``new`` or ``old`` in a trigger): each word after the token prefixed by it."""
    space = f"instr({value}, ' ')"
    return (
        f"replace(' ' || substr({value}, {space} + 1), ' ', ' ' || substr({value}, 1, {space} - 1))"
    )


def search_config(language: str) -> ColumnElement[Any]:
    """PostgreSQL: the text search configuration ``language`` as a ``regconfig`` literal
    (the name is checked by ``config.check_search_language``: no quotes can be in it)."""
    return literal_column(f"'{language}'::regconfig")


def tsvector_of(language: str, text: Any) -> ColumnElement[Any]:
    """PostgreSQL: ``to_tsvector(<language>, text)``, what ``chat_tasks.search`` holds."""
    return func.to_tsvector(search_config(language), text)


def hit_of(row: Any) -> SearchHit:
    """A row of the search statement as a ``SearchHit`` (its text made for a task)."""
    group, rank, time_, _key, session_id, name, task_id, message, bubbles = row
    if int(group) == 0:
        text = name or ""
    else:
        text = document(message, None if bubbles is None else json.loads(bubbles))
    return SearchHit(session_id, name, task_id, text, float(rank), int(time_))


class SearchStatements:
    """The search statements of one table set on one dialect, built once each.

    PostgreSQL has one per "after a key?" (the terms are one tsquery parameter); the
    others one per number of terms too (each term is a parameter of its own).
    """

    def __init__(self, tables: Tables, dialect: str, language: str = "simple") -> None:
        self.tables = tables
        self.dialect = dialect
        #: PostgreSQL's text search configuration, checked by ``config.check_search_language``.
        self.language = language
        self._built: dict[tuple[int, bool], Select[Any]] = {}

    def values(
        self,
        user_id: str,
        terms: Sequence[str],
        now: int,
        limit: int,
        after: SearchKey | None,
    ) -> tuple[Select[Any], dict[str, Any]] | None:
        """The statement for this search and its bound values; None when a term is not
        a word (``SearchQuery`` promises words): no indexed word can start with it."""
        terms = [term[:MAX_TERM_LENGTH] for term in terms]
        if not terms or any(words(term) != [term] for term in terms):
            return None
        values: dict[str, Any] = {"p_user_id": user_id, "p_now": now, "p_limit": limit}
        if self.dialect == "postgresql":
            values["p_query"] = tsquery_text(terms)
            values["p_checks"] = [tsquery_text([term]) for term in terms]
        else:
            values.update({f"p_term_{i}": " " + term for i, term in enumerate(terms)})
            if self.dialect == "sqlite":
                values["p_match"] = match_query(user_id, terms)
        if after is not None:
            group, rank, time_, key = after
            values.update(
                p_after_group=group, p_after_rank=rank, p_after_time=time_, p_after_id=key
            )
        count = 0 if self.dialect == "postgresql" else len(terms)
        return self.statement(count, after is not None), values

    def statement(self, terms: int, after: bool) -> Select[Any]:
        """The statement for ``terms`` terms (0 on PostgreSQL), built on first use."""
        found = self._built.get((terms, after))
        if found is None:
            found = self._built[terms, after] = self._build(terms, after)
        return found

    def _build(self, terms: int, after: bool) -> Select[Any]:
        """Name hits and task hits in one ``UNION ALL``, by ``SearchHit.sort_key``."""
        hits = union_all(self._names(terms), self._tasks(terms)).subquery("hits")
        query = select(*hits.c)
        if after:
            query = query.where(_after(hits))
        return query.order_by(
            hits.c.grp, hits.c.rank.desc(), hits.c.time.desc(), hits.c.hit_key
        ).limit(bindparam("p_limit"))

    # The two halves

    def _names(self, terms: int) -> Select[Any]:
        s = self.tables.sessions
        t = self.tables.chat_tasks
        rank: ColumnElement[Any]
        if self.dialect == "postgresql":
            vector = tsvector_of(self.language, s.c.search_name)
            match: ColumnElement[bool] = vector.bool_op("@@")(self._tsquery())
            rank = func.ts_rank(vector, self._tsquery())
        else:
            match = _all_found(s.c.search_name, terms)
            rank = _occurrences(s.c.search_name, terms)
        if self.dialect == "postgresql":
            match = and_(match, self._parsed())
        return select(
            literal(0, Integer).label("grp"),
            type_coerce(rank, Float).label("rank"),
            s.c.updated_time.label("time"),
            s.c.id.label("hit_key"),
            s.c.id.label("session_id"),
            s.c.name.label("session_name"),
            literal(None, t.c.id.type).label("task_id"),
            literal(None, t.c.user_message.type).label("user_message"),
            literal(None, t.c.message_bubbles.type).label("message_bubbles"),
        ).where(s.c.user_id == bindparam("p_user_id"), _live(s), match)

    def _tasks(self, terms: int) -> Select[Any]:
        if self.dialect == "postgresql":
            return self._tasks_postgresql()
        s = self.tables.sessions
        t = self.tables.chat_tasks
        if self.dialect == "mysql":
            match = _all_found(t.c.search, terms)
            rank = _occurrences(t.c.search, terms)
            source: Any = t.join(s, s.c.id == t.c.session_id)
        else:
            fts_name = search_objects(self.tables.prefix)["fts"]
            fts = table(fts_name, column("rowid", BigInteger))
            match = literal_column(fts_name).op("MATCH", return_type=Boolean)(bindparam("p_match"))
            rank = _occurrences(literal(" ") + t.c.search, terms)
            # FTS5 first (it holds only this user's candidates), then each task by its key.
            source = fts.join(t, t.c.search_key == fts.c.rowid).join(s, s.c.id == t.c.session_id)
        return (
            select(
                literal(1, Integer).label("grp"),
                type_coerce(rank, Float).label("rank"),
                t.c.created_time.label("time"),
                t.c.id.label("hit_key"),
                t.c.session_id.label("session_id"),
                s.c.name.label("session_name"),
                t.c.id.label("task_id"),
                t.c.user_message.label("user_message"),
                t.c.message_bubbles.label("message_bubbles"),
            )
            .select_from(source)
            .where(
                match,
                t.c.user_id == bindparam("p_user_id"),
                s.c.user_id == bindparam("p_user_id"),
                _live(s),
            )
        )

    def _tasks_postgresql(self) -> Select[Any]:
        """The user's live conversations, then each one's matching tasks (``LATERAL``,
        through the ``session_id`` index). ``OFFSET 0`` keeps the planner from joining
        otherwise: on a small table it would read every task, matching each (a seq scan
        of 10,000 tasks took 20 ms where the user's 1,000 take 4)."""
        s = self.tables.sessions
        t = self.tables.chat_tasks
        vector = type_coerce(t.c.search, TSVECTOR)
        hits = (
            select(
                type_coerce(func.ts_rank(vector, self._tsquery()), Float).label("rank"),
                t.c.created_time,
                t.c.id,
                t.c.user_message,
                t.c.message_bubbles,
            )
            .where(
                t.c.session_id == s.c.id,
                t.c.user_id == bindparam("p_user_id"),
                vector.bool_op("@@")(self._tsquery()),
            )
            .offset(literal_column("0"))
            .lateral("task_hits")
        )
        return (
            select(
                literal(1, Integer).label("grp"),
                hits.c.rank,
                hits.c.created_time.label("time"),
                hits.c.id.label("hit_key"),
                s.c.id.label("session_id"),
                s.c.name.label("session_name"),
                hits.c.id.label("task_id"),
                hits.c.user_message,
                hits.c.message_bubbles,
            )
            .select_from(s.join(hits, true()))
            .where(s.c.user_id == bindparam("p_user_id"), _live(s), self._parsed())
        )

    def _tsquery(self) -> ColumnElement[Any]:
        return func.to_tsquery(search_config(self.language), bindparam("p_query"))

    def _parsed(self) -> ColumnElement[bool]:
        """PostgreSQL: every term (``:p_checks``, one tsquery each) is a word to the
        parser. One that is not (``½`` in most locales) would drop out of the AND and
        widen the match; no indexed word can hold it, so nothing matches. Parsed with
        ``simple``: a stop word of the language still drops out, as it should."""
        checks = bindparam("p_checks", type_=ARRAY(Text))
        term = func.unnest(checks).column_valued("term")
        lost = func.numnode(func.to_tsquery(search_config("simple"), term)) == 0
        return ~select(literal(1)).where(lost).exists()


def _live(s: Any) -> ColumnElement[bool]:
    expires_at = s.c.expires_at
    return or_(expires_at.is_(None), expires_at > bindparam("p_now", type_=BigInteger))


def _all_found(text: Any, terms: int) -> ColumnElement[bool]:
    """Every `` term`` (``:p_term_<i>``) occurs in ``text``: each a word's start."""
    return and_(*(func.instr(text, bindparam(f"p_term_{i}")) > 0 for i in range(terms)))


def _occurrences(text: Any, terms: int) -> ColumnElement[Any]:
    """How many words of ``text`` start with a term: per term, the characters its
    occurrences take, divided by its length (a whole number)."""
    counts: list[ColumnElement[Any]] = []
    for i in range(terms):
        term: Any = bindparam(f"p_term_{i}")
        removed = func.length(text) - func.length(func.replace(text, term, ""))
        # Whole numbers: ``/`` on SQLite (no FLOOR needed, which some builds lack).
        counts.append(type_coerce(removed, Integer) // type_coerce(func.length(term), Integer))
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    return total


def _after(hits: Any) -> ColumnElement[bool]:
    """Strictly after ``(:p_after_group, :p_after_rank, :p_after_time, :p_after_id)`` in
    (group, rank desc, time desc, id) order."""
    group = bindparam("p_after_group", type_=Integer)
    rank = bindparam("p_after_rank", type_=Float)
    time_ = bindparam("p_after_time", type_=BigInteger)
    key: Any = bindparam("p_after_id")
    c = hits.c
    return or_(
        c.grp > group,
        and_(
            c.grp == group,
            or_(
                c.rank < rank,
                and_(
                    c.rank == rank,
                    or_(c.time < time_, and_(c.time == time_, c.hit_key > key)),
                ),
            ),
        ),
    )
