"""Search on the DynamoDB store: a scan of one user's partition, never a table ``Scan``.

There is no full-text index: ``search`` reads the user's live conversations (a
``Query`` of the listing index, their ids, names and times only), matches their names,
then reads every task of the user (a ``Query`` of the partition's ``T#`` range,
projected to the searchable attributes, ``TASK_PAGE`` tasks or 1 MB a page) and
matches those of live conversations in Python, keeping only the best ``limit`` hits.
Cost: O(the user's conversations + tasks): about ``1 + max(tasks / TASK_PAGE, task
bytes / 1 MB)`` requests, read units for every byte of the user's tasks (strongly
consistent reads: 1 per 4 KB). Memory: a page, the user's live conversation ids and
names, and ``2 * limit`` hits. No other user's partition is read.
"""

from __future__ import annotations

import json

from agentsession.stores.base import SearchHit, SearchKey, SearchQuery, SessionRecord
from agentsession.stores.dynamodb.client import Connection
from agentsession.stores.dynamodb.expressions import names
from agentsession.stores.dynamodb.items import Item, number, string, text, value
from agentsession.stores.dynamodb.layout import CONVERSATION, LISTING_INDEX, TASK, user_pk
from agentsession.stores.scan import BestHits, name_hit, task_hit

__all__ = ["search"]

#: Tasks one ``Query`` request reads at most (DynamoDB also stops a page at 1 MB).
TASK_PAGE = 500
#: What a search reads of a conversation (from the listing index) and of a task.
_CONVERSATION_FIELDS = "#sk, #nm, #ut"
_TASK_FIELDS = "#sk, #sid, #um, #mb, #ct"


async def search(
    connection: Connection,
    user_id: str,
    query: SearchQuery,
    now: int,
    limit: int,
    after: SearchKey | None,
) -> list[SearchHit]:
    """The user's best ``limit`` matches after ``after`` (module docstring)."""
    best = BestHits(limit, after)
    conversations = await _live_conversations(connection, user_id, now)
    for record in conversations.values():
        best.add(name_hit(record, query.terms))
    condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
    pages = connection.pages(
        "query",
        KeyConditionExpression=condition,
        ProjectionExpression=_TASK_FIELDS,
        ExpressionAttributeNames=names(condition, _TASK_FIELDS),
        ExpressionAttributeValues={
            ":pk": string(user_pk(user_id)),
            ":low": string(TASK),
            ":high": string("T$"),
        },
        ConsistentRead=True,
        Limit=TASK_PAGE,
    )
    async for page in pages:
        for item in page.get("Items", []):
            home = conversations.get(str(item["sid"]["S"]))
            if home is not None:
                best.add(_task_hit(home, item, query.terms))
    return best.hits()


async def _live_conversations(
    connection: Connection, user_id: str, now: int
) -> dict[str, SessionRecord]:
    """The user's live conversations by id (only id, name and ``updated_time`` set)."""
    condition = "#pk = :pk AND #ls1 BETWEEN :low AND :high"
    keep = "attribute_not_exists(#dl) AND (attribute_not_exists(#ex) OR #ex > :now)"
    pages = connection.pages(
        "query",
        IndexName=LISTING_INDEX,
        KeyConditionExpression=condition,
        FilterExpression=keep,
        ProjectionExpression=_CONVERSATION_FIELDS,
        ExpressionAttributeNames=names(condition, keep, _CONVERSATION_FIELDS),
        ExpressionAttributeValues={
            ":pk": string(user_pk(user_id)),
            ":low": string(CONVERSATION),
            ":high": string("C$"),
            ":now": number(now),
        },
        ConsistentRead=True,
    )
    found: dict[str, SessionRecord] = {}
    async for page in pages:
        for item in page.get("Items", []):
            session_id = str(item["sk"]["S"])[len(CONVERSATION) :]
            updated = int(item["ut"]["N"])
            found[session_id] = SessionRecord(
                session_id, user_id, None, text(item, "nm"), None, updated, updated, None, None
            )
    return found


def _task_hit(home: SessionRecord, item: Item, terms: tuple[str, ...]) -> SearchHit | None:
    """The task item as a match, or None (``scan.task_hit``)."""
    message = text(item, "um")
    bubbles = str(item["mb"]["S"])
    created = value(item, "ct")
    assert created is not None
    task_id = str(item["sk"]["S"])[len(TASK) :]
    return task_hit(
        home,
        task_id,
        created,
        f"{message or ''}\n{bubbles}",
        lambda: (message, json.loads(bubbles)),
        terms,
    )
