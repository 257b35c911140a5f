"""Search by scanning, shared by the stores that keep no full-text index (memory, Redis,
DynamoDB): a user's rows are matched in Python and the best hits kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentsession.search import document, occurrences
from agentsession.stores.base import SearchHit, SearchKey, SessionRecord, search_after

__all__ = ["BestHits", "name_hit", "search_order", "task_hit"]


def search_order(hit: SearchHit) -> tuple[int, float, int, str]:
    """``SearchHit.sort_key`` as an ascending key: group, rank desc, time desc, id."""
    group, rank, time_, id_ = hit.sort_key
    return (group, -rank, -time_, id_)


def name_hit(record: SessionRecord, terms: tuple[str, ...]) -> SearchHit | None:
    """The conversation as a name match, or None."""
    name = record.name
    rank = 0 if name is None else occurrences(terms, name)
    if not rank or name is None:
        return None
    return SearchHit(record.id, name, None, name, float(rank), record.updated_time)


def task_hit(
    home: SessionRecord,
    task_id: str,
    created_time: int,
    stored: str,
    load: Callable[[], tuple[str | None, Any]],
    terms: tuple[str, ...],
) -> SearchHit | None:
    """The task as a match, or None. ``stored`` is its text as stored (JSON holding its
    message and bubbles); ``load()`` decodes them, which is done only when ``stored``
    holds every term: a word starting with a term is in JSON text as it is (only quotes,
    backslashes and control characters are escaped), so the shortcut skips no match."""
    folded = stored.casefold()
    if not all(term in folded for term in terms):
        return None
    found = document(*load())
    rank = occurrences(terms, found)
    if not rank:
        return None
    return SearchHit(home.id, home.name, task_id, found, float(rank), created_time)


class BestHits:
    """The best ``limit`` hits after ``after`` seen so far: a list cut back to ``limit``
    whenever it reaches twice that (memory: ``2 * limit`` hits)."""

    def __init__(self, limit: int, after: SearchKey | None) -> None:
        self.limit = limit
        self.after = after
        self.found: list[SearchHit] = []

    def add(self, hit: SearchHit | None) -> None:
        """Keep ``hit`` if it sorts after ``after`` (None: nothing to keep)."""
        if hit is None or not search_after(hit.sort_key, self.after):
            return
        self.found.append(hit)
        if len(self.found) >= 2 * self.limit:
            self.found = self.hits()

    def hits(self) -> list[SearchHit]:
        """The best ``limit``, in search order."""
        return sorted(self.found, key=search_order)[: self.limit]
