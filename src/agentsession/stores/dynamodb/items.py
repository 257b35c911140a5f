"""Records to DynamoDB items and back (the low-level ``{"S": ...}``/``{"N": ...}`` form).

Times are numbers (``N``) so that conditions compare them (``ex > :now``); JSON values
(bubbles, metadata, state) are stored as the compact JSON text ``dump_json`` writes, so
floats keep their exact spelling and nothing depends on DynamoDB's decimal numbers. An
absent optional value is an absent attribute.
"""

from __future__ import annotations

import json
from typing import Any

from agentsession.common import dump_json
from agentsession.stores.base import FeedbackRecord, SessionRecord, TaskRecord
from agentsession.stores.dynamodb.layout import (
    CONVERSATION,
    FEEDBACK,
    TASK,
    conversation_listing,
    feedback_listing,
    task_range,
    ttl_of,
    user_pk,
)

__all__ = [
    "Item",
    "feedback_item",
    "feedback_of",
    "key",
    "number",
    "session_item",
    "session_of",
    "string",
    "task_of",
    "text",
    "value",
]

#: One DynamoDB item (attribute name -> typed value), as botocore takes and gives it.
Item = dict[str, Any]


def string(text: str) -> dict[str, str]:
    """A string attribute value."""
    return {"S": text}


def key(pk: str, sk: str) -> Item:
    """The primary key of an item."""
    return {"pk": string(pk), "sk": string(sk)}


def number(value: int) -> dict[str, str]:
    """A number attribute value."""
    return {"N": str(value)}


def text(item: Item, name: str) -> str | None:
    """The string attribute ``name`` of ``item``, or None when absent."""
    found = item.get(name)
    return None if found is None else str(found["S"])


def value(item: Item, name: str) -> int | None:
    """The number attribute ``name`` of ``item`` (an int), or None when absent."""
    found = item.get(name)
    return None if found is None else int(found["N"])


def _put(item: Item, name: str, content: str | int | None) -> None:
    if isinstance(content, str):
        item[name] = string(content)
    elif content is not None:
        item[name] = number(content)


def session_item(record: SessionRecord) -> Item:
    """A new conversation's item: state ``{}``, version 0."""
    _, tasks_end = task_range(record.id)
    item: Item = {
        "pk": string(user_pk(record.user_id)),
        "sk": string(CONVERSATION + record.id),
        "ls1": string(conversation_listing(record.updated_time, record.id)),
        "ls2": string(tasks_end),
        "ct": number(record.created_time),
        "ut": number(record.updated_time),
        "v": number(0),
        "st": string("{}"),
    }
    _put(item, "cl", record.client_id)
    _put(item, "nm", record.name)
    _put(item, "ag", record.agent_id)
    _put(item, "lv", record.last_viewed_at)
    _put(item, "ex", record.expires_at)
    _put(item, "ttl", ttl_of(record.expires_at))
    _put(item, "pn", 1 if record.pinned else None)
    return item


def session_of(user_id: str, item: Item) -> SessionRecord:
    """The record of a conversation item (from the table or the listing index)."""
    return SessionRecord(
        id=str(item["sk"]["S"])[len(CONVERSATION) :],
        user_id=user_id,
        client_id=text(item, "cl"),
        name=text(item, "nm"),
        agent_id=text(item, "ag"),
        created_time=int(item["ct"]["N"]),
        updated_time=int(item["ut"]["N"]),
        last_viewed_at=value(item, "lv"),
        expires_at=value(item, "ex"),
        pinned="pn" in item,
    )


def task_of(user_id: str, item: Item) -> TaskRecord:
    """The record of a task item (from the table or the tasks index)."""
    return TaskRecord(
        id=str(item["sk"]["S"])[len(TASK) :],
        session_id=str(item["sid"]["S"]),
        user_id=user_id,
        user_message=text(item, "um"),
        message_bubbles=json.loads(item["mb"]["S"]),
        task_metadata=json.loads(item["md"]["S"]),
        created_time=int(item["ct"]["N"]),
        updated_time=int(item["ut"]["N"]),
    )


def feedback_item(record: FeedbackRecord) -> Item:
    """The item of the user's (one) feedback on ``record.task_id``."""
    item: Item = {
        "pk": string(user_pk(record.user_id)),
        "sk": string(FEEDBACK + record.task_id),
        "ls1": string(feedback_listing(record.created_time, record.id)),
        "fid": string(record.id),
        "sid": string(record.session_id),
        "tid": string(record.task_id),
        "rt": string(record.rating),
        "ct": number(record.created_time),
    }
    _put(item, "cm", record.comment)
    return item


def feedback_of(user_id: str, item: Item) -> FeedbackRecord:
    """The record of a feedback item (from the table or the listing index)."""
    return FeedbackRecord(
        id=str(item["fid"]["S"]),
        session_id=str(item["sid"]["S"]),
        task_id=str(item["tid"]["S"]),
        user_id=user_id,
        rating=str(item["rt"]["S"]),
        comment=text(item, "cm"),
        created_time=int(item["ct"]["N"]),
    )


def json_text(content: Any) -> dict[str, str]:
    """A JSON value as a string attribute (``dump_json``'s spelling)."""
    return string(dump_json(content))
