"""Revocations and a user's data (export, import, erase) on the DynamoDB store.

Revocations are items of one partition of their own (``pk = R#``, ``sk =
<kind>#<subject>``), listed oldest first through the listing index (``ls1 = <asc
revoked_at><kind>#<subject>``); ``ex`` holds ``keep_until`` and DynamoDB's TTL
attribute lets DynamoDB forget them afterwards. Recording one is an optimistic
read-then-conditional-write, so concurrent revocations of one subject keep the later
times. A user's data is read from the user's partition; an import checks every id
first, then writes in transactions of up to 100 items, deleting what it wrote if a
later one fails; an erase step deletes up to 100 items (feedback, then tasks, then
conversations with their registry items) in one transaction.
"""

from __future__ import annotations

from typing import Any

from agentsession.common import dump_json
from agentsession.errors import IdConflict
from agentsession.stores.base import Revocation, StoredSession, TaskRecord, UserRows
from agentsession.stores.dynamodb.client import TRANSACTION_SIZE, Connection
from agentsession.stores.dynamodb.expressions import names
from agentsession.stores.dynamodb.items import (
    Item,
    feedback_item,
    key,
    number,
    session_item,
    session_of,
    string,
    value,
)
from agentsession.stores.dynamodb.layout import (
    CONVERSATION,
    FEEDBACK,
    LISTING_INDEX,
    REVOCATIONS_PK,
    SINGLETON_SK,
    TASK,
    after,
    registry_pk,
    sortable,
    task_listing,
    ttl_of,
    user_pk,
)
from agentsession.stores.sortkeys import TIME_WIDTH, ascending, time_of

__all__ = [
    "erase_batch",
    "export_sessions",
    "import_rows",
    "list_revocations",
    "revoke",
]

#: Attempts of ``revoke`` when a concurrent one changed the item in between.
_REVOKE_ATTEMPTS = 16


def _revocation_listing(revoked_at: int, kind: str, subject: str) -> str:
    return f"{ascending(revoked_at)}{kind}#{sortable(subject)}"


async def revoke(connection: Connection, revocation: Revocation) -> None:
    """Record ``revocation``, keeping the later ``revoked_at`` and ``keep_until`` of it
    and a stored one (None is latest)."""
    sk = f"{revocation.kind}#{revocation.subject}"
    for _ in range(_REVOKE_ATTEMPTS):
        response = await connection.request(
            "get_item", Key=key(REVOCATIONS_PK, sk), ConsistentRead=True
        )
        found: Item | None = response.get("Item")
        revoked_at, keep_until = revocation.revoked_at, revocation.keep_until
        params: dict[str, Any]
        if found is None:
            condition = "attribute_not_exists(#pk)"
            params = {"ExpressionAttributeNames": names(condition)}
        else:
            old_at, old_keep = value(found, "at"), value(found, "ex")
            assert old_at is not None
            revoked_at = max(revoked_at, old_at)
            keep_until = (
                None if old_keep is None or keep_until is None else max(old_keep, keep_until)
            )
            condition = "#at = :at AND " + (
                "attribute_not_exists(#ex)" if old_keep is None else "#ex = :keep"
            )
            values = {":at": number(old_at)}
            if old_keep is not None:
                values[":keep"] = number(old_keep)
            params = {
                "ExpressionAttributeNames": names(condition),
                "ExpressionAttributeValues": values,
            }
        item: Item = {
            **key(REVOCATIONS_PK, sk),
            "ls1": string(_revocation_listing(revoked_at, revocation.kind, revocation.subject)),
            "at": number(revoked_at),
        }
        if keep_until is not None:
            item["ex"] = number(keep_until)
            ttl = ttl_of(keep_until)
            assert ttl is not None
            item["ttl"] = number(ttl)
        try:
            await connection.request("put_item", Item=item, ConditionExpression=condition, **params)
            return
        except Exception as error:
            if getattr(error, "response", {}).get("Error", {}).get("Code") != (
                "ConditionalCheckFailedException"
            ):
                raise
    raise IdConflict("revocation", sk)


async def list_revocations(
    connection: Connection, since: int, now: int, limit: int, after_key: tuple[int, str, str] | None
) -> list[Revocation]:
    """Revocations from ``since`` on (kept at ``now``), oldest first, after ``after_key``."""
    low = ascending(since)
    if after_key is not None:
        low = max(low, after(_revocation_listing(*after_key)))
    condition = "#pk = :pk AND #ls1 BETWEEN :low AND :high"
    kept = "attribute_not_exists(#ex) OR #ex >= :now"

    def revocation(item: Item) -> Revocation:
        kind, _, subject = str(item["sk"]["S"]).partition("#")
        revoked_at = time_of(str(item["ls1"]["S"])[:TIME_WIDTH], newest_first=False)
        return Revocation(kind, subject, revoked_at, value(item, "ex"))

    return await connection.collect(
        revocation,
        limit,
        IndexName=LISTING_INDEX,
        KeyConditionExpression=condition,
        FilterExpression=kept,
        ExpressionAttributeNames=names(condition, kept),
        ExpressionAttributeValues={
            ":pk": string(REVOCATIONS_PK),
            ":low": string(low),
            ":high": string("~"),
            ":now": number(now),
        },
        ConsistentRead=True,
    )


async def export_sessions(
    connection: Connection, user_id: str, limit: int, after_id: str | None
) -> list[StoredSession]:
    """The user's conversations (expired too, not those being deleted) by id."""
    low = CONVERSATION if after_id is None else after(CONVERSATION + after_id)
    condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
    keep = "attribute_not_exists(#dl)"

    def stored(item: Item) -> StoredSession:
        record = session_of(user_id, item)
        return StoredSession(record, str(item["st"]["S"]), int(item["v"]["N"]))

    return await connection.collect(
        stored,
        limit,
        KeyConditionExpression=condition,
        FilterExpression=keep,
        ExpressionAttributeNames=names(condition, keep),
        ExpressionAttributeValues={
            ":pk": string(user_pk(user_id)),
            ":low": string(low),
            ":high": string("C$"),
        },
        ConsistentRead=True,
    )


def _task_item(task: TaskRecord) -> Item:
    item: Item = {
        **key(user_pk(task.user_id), TASK + task.id),
        "ls2": string(task_listing(task.session_id, task.created_time, task.id)),
        "sid": string(task.session_id),
        "mb": string(dump_json(task.message_bubbles)),
        "md": string(dump_json(task.task_metadata)),
        "ct": number(task.created_time),
        "ut": number(task.updated_time),
    }
    if task.user_message is not None:
        item["um"] = string(task.user_message)
    return item


async def _existing(connection: Connection, keys: list[Item]) -> set[tuple[str, str]]:
    """Which of ``keys`` name an item (``BatchGetItem``, 100 keys a request)."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {
            connection.table: {
                "Keys": keys[start : start + 100],
                "ProjectionExpression": "#pk, #sk",
                "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
                "ConsistentRead": True,
            }
        }
        while pending:
            response = await connection.request("batch_get_item", RequestItems=pending)
            for item in response.get("Responses", {}).get(connection.table, []):
                found.add((str(item["pk"]["S"]), str(item["sk"]["S"])))
            pending = response.get("UnprocessedKeys") or {}
    return found


async def _feedback_ids(connection: Connection, user_id: str) -> set[str]:
    """The ids of the user's feedback (one ``Query`` page per 1 MB)."""
    condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
    found: set[str] = set()
    pages = connection.pages(
        "query",
        KeyConditionExpression=condition,
        ProjectionExpression="#fid",
        ExpressionAttributeNames=names(condition, "#fid"),
        ExpressionAttributeValues={
            ":pk": string(user_pk(user_id)),
            ":low": string(FEEDBACK),
            ":high": string("F$"),
        },
        ConsistentRead=True,
    )
    async for page in pages:
        found.update(str(item["fid"]["S"]) for item in page.get("Items", []) if "fid" in item)
    return found


async def import_rows(connection: Connection, rows: UserRows) -> None:
    """Check every id, then write every row (conditionally); on a failure part-way,
    delete what was written and raise."""
    user = rows.user_id
    partition = user_pk(user)
    registry_keys = [key(registry_pk(s.record.id), SINGLETON_SK) for s in rows.sessions]
    conversation_keys = [key(partition, CONVERSATION + s.record.id) for s in rows.sessions]
    task_keys = [key(partition, TASK + t.id) for t in rows.tasks]
    taken = await _existing(connection, registry_keys + conversation_keys + task_keys)
    for stored in rows.sessions:
        sid = stored.record.id
        if (registry_pk(sid), SINGLETON_SK) in taken or (partition, CONVERSATION + sid) in taken:
            raise IdConflict("session_id", sid)
    for task in rows.tasks:
        if (partition, TASK + task.id) in taken:
            raise IdConflict("task_id", task.id)
    if rows.feedback:
        existing = await _feedback_ids(connection, user)
        for feedback in rows.feedback:
            if feedback.id in existing:
                raise IdConflict("feedback_id", feedback.id)
    puts: list[tuple[Item, str, str]] = []  # item, field and id named on a conflict
    for stored in rows.sessions:
        item = session_item(stored.record)
        item["st"] = string(stored.state_json)
        item["v"] = number(stored.version)
        registry = {**key(registry_pk(stored.record.id), SINGLETON_SK), "ow": string(user)}
        puts += [(registry, "session_id", stored.record.id), (item, "session_id", stored.record.id)]
    puts += [(_task_item(task), "task_id", task.id) for task in rows.tasks]
    puts += [(feedback_item(item), "feedback_id", item.id) for item in rows.feedback]
    written: list[Item] = []
    try:
        for start in range(0, len(puts), TRANSACTION_SIZE):
            chunk = puts[start : start + TRANSACTION_SIZE]
            reasons = await connection.transact(
                [
                    {
                        "Put": {
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(#pk)",
                            "ExpressionAttributeNames": {"#pk": "pk"},
                        }
                    }
                    for item, _, _ in chunk
                ]
            )
            if reasons is not None:
                for (_, field, name), reason in zip(chunk, reasons, strict=True):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise IdConflict(field, name)
                raise IdConflict(chunk[0][1], chunk[0][2])
            written += [{"pk": item["pk"], "sk": item["sk"]} for item, _, _ in chunk]
    except BaseException:
        if written:
            await connection.delete_all(written)
        raise


async def erase_batch(connection: Connection, user_id: str, limit: int) -> int:
    """Delete up to ``limit`` (at most 100, 50 conversations) items of the user in one
    transaction: feedback first, then tasks, then conversations with their registry
    items. 0 when the user has none left."""
    partition = user_pk(user_id)
    condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
    for prefix, high in ((FEEDBACK, "F$"), (TASK, "T$"), (CONVERSATION, "C$")):
        per_item = 2 if prefix == CONVERSATION else 1
        size = max(1, min(limit, TRANSACTION_SIZE // per_item))
        response = await connection.request(
            "query",
            KeyConditionExpression=condition,
            ProjectionExpression="#pk, #sk",
            ExpressionAttributeNames=names(condition),
            ExpressionAttributeValues={
                ":pk": string(partition),
                ":low": string(prefix),
                ":high": string(high),
            },
            ConsistentRead=True,
            Limit=size,
        )
        items: list[Item] = response.get("Items", [])
        if not items:
            continue
        actions: list[dict[str, Any]] = []
        for item in items:
            actions.append({"Delete": {"Key": {"pk": item["pk"], "sk": item["sk"]}}})
            if prefix == CONVERSATION:
                sid = str(item["sk"]["S"])[len(CONVERSATION) :]
                owner = "#ow = :owner"
                actions.append(
                    {
                        "Delete": {
                            "Key": key(registry_pk(sid), SINGLETON_SK),
                            "ConditionExpression": f"attribute_not_exists(#pk) OR {owner}",
                            "ExpressionAttributeNames": names("#pk", owner),
                            "ExpressionAttributeValues": {":owner": string(user_id)},
                        }
                    }
                )
        if await connection.transact(actions) is not None:
            # A registry item another user holds (it was taken over): not ours to free.
            await connection.delete_all([{"pk": item["pk"], "sk": item["sk"]} for item in items])
        return len(items)
    return 0
