"""The single-table layout of the DynamoDB store: key values, sort keys, attribute names.

One table, partition key ``pk`` and sort key ``sk`` (both strings), two local secondary
indexes that give the listings their order inside one user's partition:

* conversation, with its state: ``pk = U#<u>``, ``sk = C#<sid>``;
  ``ls1 = C#<desc updated><sid>`` (the listing), ``ls2 = X#<tag sid>#~``; ``pn``
  (the number 1) while it is pinned, absent otherwise.
* chat task: ``pk = U#<u>``, ``sk = T#<tid>`` (task ids are per user);
  ``ls2 = X#<tag sid>#<asc created><tid>`` (its conversation's tasks, oldest first).
* feedback, one per user and task: ``pk = U#<u>``, ``sk = F#<tid>``;
  ``ls1 = F#<desc created><fid>`` (the feedback listing).
* conversation id registry (conversation ids are global): ``pk = I#<sid>``, ``sk = #``.
* lease: ``pk = L#<name>``, ``sk = #``.
* revocation: ``pk = R#``, ``sk = <kind>#<subject>``; ``ls1 = <asc revoked_at><kind>#<subject>``.

``<desc …>``/``<asc …>`` are ``stores.sortkeys`` times (16 hex digits); ``<tag sid>``
is a fixed-length digest of the conversation id, so that no id can make one
conversation's task range overlap another's and long ids still fit the 1,024-byte
sort-key limit; ids at the end of a sort key are written as they are unless longer
than ``ID_BYTES`` (``sortable``). A conversation's ``ls2`` (``…#~``) sorts after all of
its tasks, so a query over its task range ends with the conversation itself: the last
page of ``list_tasks`` reads the tasks and checks the conversation in one request.
"""

from __future__ import annotations

import hashlib

from agentsession.stores.sortkeys import ascending, descending

__all__ = [
    "ATTRIBUTES",
    "CONVERSATION",
    "FEEDBACK",
    "ID_BYTES",
    "LISTING_INDEX",
    "LISTING_PROJECTION",
    "REVOCATIONS_PK",
    "SINGLETON_SK",
    "TASK",
    "TASKS_INDEX",
    "TASKS_PROJECTION",
    "TTL_ATTRIBUTE",
    "TTL_GRACE_SECONDS",
    "after",
    "conversation_listing",
    "feedback_listing",
    "lease_pk",
    "registry_pk",
    "sortable",
    "task_listing",
    "task_range",
    "ttl_of",
    "user_of",
    "user_pk",
]

#: Sort-key prefixes of a user's items.
CONVERSATION, TASK, FEEDBACK = "C#", "T#", "F#"
#: The partition of the revocations (``sk = <kind>#<subject>``).
REVOCATIONS_PK = "R#"
#: The sort key of the registry and lease items (one item per partition).
SINGLETON_SK = "#"
#: The index of conversations and feedback, newest first (sort key ``ls1``).
LISTING_INDEX = "listing"
#: The index of a conversation's tasks, oldest first, then the conversation (``ls2``).
TASKS_INDEX = "tasks"
#: DynamoDB's TTL attribute (epoch seconds) on conversation items.
TTL_ATTRIBUTE = "ttl"
#: How long after ``expires_at`` DynamoDB's TTL may delete a conversation item: the
#: retention job's ``expired_sessions`` rule deletes it first with its tasks and
#: feedback; DynamoDB's own deletion is the backstop when no job runs.
TTL_GRACE_SECONDS = 86_400
#: Longest id (UTF-8 bytes) written as it is at the end of an index sort key.
ID_BYTES = 900

#: Item attributes: keys, then what each kind of item holds.
ATTRIBUTES = {
    "keys": ("pk", "sk", "ls1", "ls2"),
    "conversation": ("cl", "nm", "ag", "ct", "ut", "lv", "ex", "ttl", "v", "st", "ta", "dl", "pn"),
    "task": ("sid", "um", "mb", "md", "ct", "ut"),
    "feedback": ("fid", "sid", "tid", "rt", "cm", "ct"),
}
#: What each index copies besides the keys: conversation records without their state,
#: feedback, and tasks with what ``list_tasks`` returns.
LISTING_PROJECTION = (
    "cl",
    "nm",
    "ag",
    "ct",
    "ut",
    "lv",
    "ex",
    "dl",
    "pn",
    "fid",
    "sid",
    "tid",
    "rt",
    "cm",
)
TASKS_PROJECTION = ("ex", "dl", "sid", "um", "mb", "md", "ct", "ut")


def user_pk(user_id: str) -> str:
    """The partition of everything of ``user_id``."""
    return "U#" + user_id


def user_of(pk: str) -> str | None:
    """The user whose partition ``pk`` is, or None for a registry or lease item."""
    return pk[2:] if pk.startswith("U#") else None


def registry_pk(session_id: str) -> str:
    """The partition of the registry item that makes conversation ids global."""
    return "I#" + session_id


def lease_pk(name: str) -> str:
    """The partition of lease ``name``."""
    return "L#" + name


def sortable(value: str) -> str:
    """``value`` as it sorts at the end of an index key: itself, or, past ``ID_BYTES``
    bytes, its head and a digest (ids that share their first 850 bytes then sort by
    digest, not by id: a consistent order, kept by the cursors)."""
    data = value.encode()
    if len(data) <= ID_BYTES:
        return value
    head = data[: ID_BYTES - 50].decode(errors="ignore")
    return head + "\x01" + hashlib.sha256(data).hexdigest()[:40]


def _tag(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def conversation_listing(updated_time: int, session_id: str) -> str:
    """A conversation's ``ls1``: newest ``updated_time`` first, then its id."""
    return CONVERSATION + descending(updated_time) + sortable(session_id)


def feedback_listing(created_time: int, feedback_id: str) -> str:
    """A feedback item's ``ls1``: newest ``created_time`` first, then its id."""
    return FEEDBACK + descending(created_time) + sortable(feedback_id)


def task_listing(session_id: str, created_time: int, task_id: str) -> str:
    """A task's ``ls2``: its conversation's range, oldest ``created_time`` first."""
    return f"X#{_tag(session_id)}#{ascending(created_time)}{sortable(task_id)}"


def task_range(session_id: str) -> tuple[str, str]:
    """``ls2`` bounds of a conversation's tasks; the upper one is the conversation's own."""
    start = f"X#{_tag(session_id)}#"
    return start, start + "~"


def after(key: str) -> str:
    """The smallest key that sorts strictly after ``key`` among keys without NUL
    (the service refuses NUL in ids): an inclusive ``BETWEEN`` bound for a cursor."""
    return key + "\x01"


def ttl_of(expires_at: int | None) -> int | None:
    """The TTL attribute (epoch seconds) of a conversation expiring at ``expires_at``."""
    if expires_at is None:
        return None
    return -(-expires_at // 1000) + TTL_GRACE_SECONDS
