"""The export document of one user's data: written as a stream, read back for import.

``agentsession-user-export`` version 1 is one JSON object::

    {"format": "agentsession-user-export", "version": 1,
     "userId": "...", "exportedAt": <epoch ms>,
     "conversations": [
        {"id", "clientId", "name", "agentId", "createdTime", "updatedTime",
         "lastViewedAt", "expiresAt", "pinned", "state": {...}, "stateVersion": <int>,
         "chatTasks": [{"id", "userMessage", "messageBubbles", "taskMetadata",
                        "createdTime", "updatedTime"}, ...]}, ...],
     "feedback": [{"id", "sessionId", "taskId", "rating", "comment", "createdTime"}, ...]}

Every row of the user is in it (conversations past their TTL that are not yet
pruned too), with ids and times as stored, so ``import_user`` gives back the same
rows. ``pinned`` (true or false) was added after version 1 was first written: a
document without it imports its conversations unpinned. ``write_document``
produces it page by page from the store: memory stays bounded by a page, whatever
the user's number of tasks. ``read_document`` checks a parsed document and turns it
into the rows ``Store.import_rows`` takes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

from agentsession.common import dump_json
from agentsession.errors import InvalidInput
from agentsession.stores.base import (
    FeedbackFilter,
    FeedbackRecord,
    SessionRecord,
    Store,
    StoredSession,
    TaskRecord,
    UserRows,
)

__all__ = ["FORMAT", "VERSION", "read_document", "write_document"]

#: The document's ``format`` and ``version`` (a reader refuses other values).
FORMAT: Final = "agentsession-user-export"
VERSION: Final = 1
#: Rows per store call while exporting.
PAGE_SIZE: Final = 500
#: Bytes gathered before a chunk is handed on.
CHUNK_SIZE: Final = 64 * 1024

#: ``call(store operation)``: the service's timeout and error handling around a store call.
Call = Callable[[Awaitable[Any]], Awaitable[Any]]


def _conversation_head(item: StoredSession) -> str:
    """The conversation's object up to its ``chatTasks`` array, left open."""
    record = item.record
    head = {
        "id": record.id,
        "clientId": record.client_id,
        "name": record.name,
        "agentId": record.agent_id,
        "createdTime": record.created_time,
        "updatedTime": record.updated_time,
        "lastViewedAt": record.last_viewed_at,
        "expiresAt": record.expires_at,
        "pinned": record.pinned,
    }
    text = dump_json(head)[:-1]
    return f'{text},"state":{item.state_json},"stateVersion":{item.version},"chatTasks":['


def _task(record: TaskRecord) -> str:
    return dump_json(
        {
            "id": record.id,
            "userMessage": record.user_message,
            "messageBubbles": record.message_bubbles,
            "taskMetadata": record.task_metadata,
            "createdTime": record.created_time,
            "updatedTime": record.updated_time,
        }
    )


def _feedback(record: FeedbackRecord) -> str:
    return dump_json(
        {
            "id": record.id,
            "sessionId": record.session_id,
            "taskId": record.task_id,
            "rating": record.rating,
            "comment": record.comment,
            "createdTime": record.created_time,
        }
    )


async def _pieces(store: Store, call: Call, user_id: str, now: int) -> AsyncIterator[str]:
    """The document as small pieces of text, one store page at a time."""
    yield f'{{"format":"{FORMAT}","version":{VERSION},"userId":{dump_json(user_id)},'
    yield f'"exportedAt":{now},"conversations":['
    after: str | None = None
    first = True
    while True:
        page: list[StoredSession] = await call(store.export_sessions(user_id, PAGE_SIZE, after))
        for item in page:
            yield ("" if first else ",") + _conversation_head(item)
            first = False
            task_after: tuple[int, str] | None = None
            task_first = True
            while True:
                tasks: list[TaskRecord] = await call(
                    store.export_tasks(user_id, item.record.id, PAGE_SIZE, task_after)
                )
                for task in tasks:
                    yield ("" if task_first else ",") + _task(task)
                    task_first = False
                if len(tasks) < PAGE_SIZE:
                    break
                task_after = tasks[-1].sort_key
            yield "]}"
        if len(page) < PAGE_SIZE:
            break
        after = page[-1].record.id
    yield '],"feedback":['
    feedback_after: tuple[int, str] | None = None
    first = True
    while True:
        rows: list[FeedbackRecord] = await call(
            store.list_feedback(user_id, FeedbackFilter(), PAGE_SIZE, feedback_after)
        )
        for row in rows:
            yield ("" if first else ",") + _feedback(row)
            first = False
        if len(rows) < PAGE_SIZE:
            break
        feedback_after = rows[-1].sort_key
    yield "]}\n"


async def write_document(store: Store, call: Call, user_id: str, now: int) -> AsyncIterator[bytes]:
    """The export document of ``user_id`` as UTF-8 chunks of about ``CHUNK_SIZE`` bytes."""
    buffer: list[str] = []
    size = 0
    async for piece in _pieces(store, call, user_id, now):
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_SIZE:
            yield "".join(buffer).encode("utf-8")
            buffer.clear()
            size = 0
    if buffer:
        yield "".join(buffer).encode("utf-8")


def parse(raw: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """A document given as JSON text (or bytes), or already parsed."""
    if isinstance(raw, Mapping):
        return raw
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidInput("document", f"is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("document", "must be a JSON object")
    return document


def read_document(
    document: Mapping[str, Any], check: Callable[[Any, str, str], Any], user_id: str | None = None
) -> UserRows:
    """The rows of a parsed export document, every value checked before anything is written.

    ``check(value, kind, field)`` is the service's validation (kind ``id``,
    ``optional_id``, ``name``, ``text``, ``json``, ``time``, ``optional_time``,
    ``rating``, ``int``); it raises ``InvalidInput`` naming the field. ``user_id``
    imports the rows for another user than the document's.
    """
    if document.get("format") != FORMAT:
        raise InvalidInput("format", f"must be {FORMAT!r}, not {document.get('format')!r:.80}")
    if document.get("version") != VERSION:
        raise InvalidInput("version", f"must be {VERSION}, not {document.get('version')!r:.80}")
    owner = check(document.get("userId") if user_id is None else user_id, "id", "userId")
    sessions: list[StoredSession] = []
    tasks: list[TaskRecord] = []
    homes: dict[str, set[str]] = {}
    seen: set[str] = set()
    for index, item in enumerate(_array(document, "conversations")):
        where = f"conversations[{index}]"
        item = _object(item, where)
        session_id = check(item.get("id"), "id", f"{where}.id")
        if session_id in homes:
            raise InvalidInput(f"{where}.id", f"{session_id!r} appears twice")
        state = check(item.get("state", {}), "json", f"{where}.state")
        if not isinstance(state, dict):
            raise InvalidInput(f"{where}.state", "must be an object")
        record = SessionRecord(
            id=session_id,
            user_id=owner,
            client_id=check(item.get("clientId"), "optional_id", f"{where}.clientId"),
            name=check(item.get("name"), "name", f"{where}.name"),
            agent_id=check(item.get("agentId"), "optional_id", f"{where}.agentId"),
            created_time=check(item.get("createdTime"), "time", f"{where}.createdTime"),
            updated_time=check(item.get("updatedTime"), "time", f"{where}.updatedTime"),
            last_viewed_at=check(
                item.get("lastViewedAt"), "optional_time", f"{where}.lastViewedAt"
            ),
            expires_at=check(item.get("expiresAt"), "optional_time", f"{where}.expiresAt"),
            pinned=_flag(item.get("pinned", False), f"{where}.pinned"),
        )
        version = check(item.get("stateVersion", 0), "int", f"{where}.stateVersion")
        sessions.append(StoredSession(record, dump_json(state), version))
        owned = homes[session_id] = set()
        for number, task in enumerate(_array(item, "chatTasks", where)):
            at = f"{where}.chatTasks[{number}]"
            task = _object(task, at)
            task_id = check(task.get("id"), "id", f"{at}.id")
            if task_id in seen:
                raise InvalidInput(f"{at}.id", f"{task_id!r} appears twice")
            seen.add(task_id)
            owned.add(task_id)
            tasks.append(
                TaskRecord(
                    id=task_id,
                    session_id=session_id,
                    user_id=owner,
                    user_message=check(task.get("userMessage"), "text", f"{at}.userMessage"),
                    message_bubbles=check(
                        task.get("messageBubbles"), "json", f"{at}.messageBubbles"
                    ),
                    task_metadata=check(task.get("taskMetadata"), "json", f"{at}.taskMetadata"),
                    created_time=check(task.get("createdTime"), "time", f"{at}.createdTime"),
                    updated_time=check(task.get("updatedTime"), "time", f"{at}.updatedTime"),
                )
            )
    feedback: list[FeedbackRecord] = []
    rated: set[str] = set()
    for index, item in enumerate(_array(document, "feedback")):
        at = f"feedback[{index}]"
        item = _object(item, at)
        session_id = check(item.get("sessionId"), "id", f"{at}.sessionId")
        task_id = check(item.get("taskId"), "id", f"{at}.taskId")
        if task_id not in homes.get(session_id, ()):
            raise InvalidInput(f"{at}.taskId", "names no chat task of that conversation")
        if task_id in rated:
            raise InvalidInput(f"{at}.taskId", f"{task_id!r} is rated twice")
        rated.add(task_id)
        feedback.append(
            FeedbackRecord(
                id=check(item.get("id"), "id", f"{at}.id"),
                session_id=session_id,
                task_id=task_id,
                user_id=owner,
                rating=check(item.get("rating"), "rating", f"{at}.rating"),
                comment=check(item.get("comment"), "text", f"{at}.comment"),
                created_time=check(item.get("createdTime"), "time", f"{at}.createdTime"),
            )
        )
    if len({item.id for item in feedback}) != len(feedback):
        raise InvalidInput("feedback", "an id appears twice")
    return UserRows(owner, sessions, tasks, feedback)


def _flag(value: Any, where: str) -> bool:
    """A true/false field (an absent one was read as false by the caller)."""
    if not isinstance(value, bool):
        raise InvalidInput(where, f"must be true or false, not {value!r:.80}")
    return value


def _array(parent: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
    value = parent.get(key, [])
    if not isinstance(value, list):
        raise InvalidInput(f"{where}.{key}" if where else key, "must be an array")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(where, "must be an object")
    return value
