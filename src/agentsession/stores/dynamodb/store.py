"""DynamoDBStore: the Store contract over one DynamoDB table (aiobotocore), for gateways on
AWS Lambda and other serverless hosts that have no SQL server or Redis to point at.

The layout is in ``layout.py``: everything of one user is in one partition
(``pk = U#<user>``), so every call on a user's data stays within it; conversation ids
are made global by a small registry item per id. Requests per call (``client.py``
counts them):

* one: ``get_session``, ``load_state`` (``GetItem``), ``list_sessions``,
  ``list_feedback`` (``Query`` on the listing index, more pages only when expired
  conversations or filtered-out feedback fill them), ``update_session``,
  ``write_state`` (``UpdateItem``), ``insert_session`` (``TransactWriteItems``: the
  registry item and the conversation), ``save_task`` when the task is new and
  ``save_feedback`` (``TransactWriteItems``), the lease methods, ``ping``;
* ``list_tasks``: one ``Query`` on the tasks index for the last page (it ends with the
  conversation item, which says whether it is live), plus one ``GetItem`` for a page
  with more tasks after it;
* ``save_task`` of a task saved before: two (the first transaction, written as an
  insert, is cancelled and hands back the stored ``created_time``; the second keeps it);
* ``delete_session``: mark the conversation deleted (one ``UpdateItem``, after which it
  is missing for every call), then delete it with its tasks and feedback (a ``Query``
  for their keys, ``BatchWriteItem`` per 25 items, and the registry item);
* ``search``: a ``Query`` of the user's live conversations and one of all their tasks
  (1 MB a page): O(the user's tasks), never a table ``Scan`` (``search.py``).

Pins: a pinned conversation's item has ``pn``; ``list_sessions(pinned=...)`` filters on
it while paging the listing index (pinned ones only: the pages read the unpinned ones
too, billed but not returned, ``_PINNED_READ`` a request: one request per 200
conversations or so; a listing item is small). DynamoDB's TTL deletes only conversation items (past
``expires_at``, which a pin leaves as it is), never tasks, so a pin needs nothing of it.

Optimistic state: ``write_state`` is one ``UpdateItem`` conditioned on the version, so
no write is lost. ``save_task`` writes the task and touches its conversation in one
transaction conditioned on the conversation being live and on the task id being the
user's in this conversation (or new). Reads are strongly consistent.

Expiry: a conversation item carries ``ex`` (``expires_at``, ms), checked on every read
and in every condition, and DynamoDB's TTL attribute ``ttl`` (epoch seconds, a grace
day later, ``layout.TTL_GRACE_SECONDS``): the retention job deletes an expired
conversation with its tasks and feedback first; DynamoDB's own deletion is the
backstop. Items are limited to 400 KB by DynamoDB: one conversation's state, one task.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentsession.config import check_table_name
from agentsession.errors import ConfigError, IdConflict, InvalidInput
from agentsession.stores.base import (
    Cutoffs,
    FeedbackFilter,
    FeedbackRecord,
    Holder,
    Revocation,
    SearchHit,
    SearchKey,
    SearchQuery,
    SessionRecord,
    StoredSession,
    TaskRecord,
    Touch,
    UserRows,
)
from agentsession.stores.dynamodb import userdata
from agentsession.stores.dynamodb.client import Connection, error_code
from agentsession.stores.dynamodb.errors import ItemTooLarge
from agentsession.stores.dynamodb.expressions import LIVE, names
from agentsession.stores.dynamodb.items import (
    Item,
    feedback_item,
    feedback_of,
    json_text,
    key,
    number,
    session_item,
    session_of,
    string,
    task_of,
    text,
    value,
)
from agentsession.stores.dynamodb.layout import (
    CONVERSATION,
    FEEDBACK,
    LISTING_INDEX,
    SINGLETON_SK,
    TASK,
    TASKS_INDEX,
    conversation_listing,
    feedback_listing,
    lease_pk,
    registry_pk,
    task_listing,
    task_range,
    ttl_of,
    user_pk,
)
from agentsession.stores.dynamodb.layout import after as strictly_after
from agentsession.stores.dynamodb.retention import Retention, purge
from agentsession.stores.dynamodb.search import search as search_partition
from agentsession.stores.dynamodb.table import check_table, migrate_table

__all__ = ["DEFAULT_TABLE", "DynamoDBStore"]

#: The table of a configuration that names none.
DEFAULT_TABLE = "agentsession"
#: Attempts of ``save_task`` and ``insert_session`` when what they found moved on.
_SAVE_ATTEMPTS = 8
_CCF = "ConditionalCheckFailed"
_RECORD_FIELDS = "#sk, #cl, #nm, #ag, #ct, #ut, #lv, #ex, #dl, #pn"
#: Listing items ``list_sessions(pinned=True)`` reads a request (most are not pinned).
_PINNED_READ = 200


def _live(item: Item | None, now: int) -> bool:
    """Whether a conversation item is there, not deleted, and not expired at ``now``."""
    if not item or "dl" in item:
        return False
    expires_at = value(item, "ex")
    return expires_at is None or expires_at > now


def _kept(item: Item | None) -> bool:
    """Whether a conversation item is there and not being deleted (expired or not)."""
    return bool(item) and item is not None and "dl" not in item


def _failed(reason: dict[str, Any]) -> bool:
    return reason.get("Code") == _CCF


@contextlib.asynccontextmanager
async def _named(field: str, what: str) -> AsyncIterator[None]:
    """An item over DynamoDB's size limit, as ``InvalidInput`` naming the caller's field
    (a decorator of the store's write methods)."""
    try:
        yield
    except ItemTooLarge:
        raise InvalidInput(field, f"{what} is over DynamoDB's 400 KB limit for one item") from None


class DynamoDBStore:
    """Conversations, tasks, feedback and state in one DynamoDB table, shared by every app
    instance (and every Lambda invocation)."""

    #: aiobotocore runs on asyncio (aiohttp) only.
    requires_asyncio = True
    #: Retention runs in batches from ``RetentionScheduler``.
    prunes_lazily = False

    def __init__(
        self,
        table_name: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        pool_size: int = 10,
    ) -> None:
        """``table_name``: the table (``agentsession migrate`` creates it);
        ``endpoint_url``: a local or compatible endpoint instead of AWS's; ``region``:
        else the standard chain's (``AWS_REGION``...). Nothing connects until the first
        call; credentials come from the standard AWS chain."""
        try:
            import aiobotocore  # noqa: F401
        except ImportError:
            raise ConfigError(
                "session_service.type is 'dynamodb', but aiobotocore is not installed: "
                "pip install 'agentsession[dynamodb]'"
            ) from None
        check_table_name(table_name)
        if type(pool_size) is not int or pool_size < 1:
            raise ConfigError(
                f"session_service.pool_size: must be a positive int, not {pool_size!r}"
            )
        self.table_name = table_name
        self.endpoint_url = endpoint_url
        self.connection = Connection(
            table_name, endpoint_url=endpoint_url, region=region, pool_size=pool_size
        )
        self._retention = Retention(self.connection)

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.table_name!r}, endpoint_url={self.endpoint_url!r})"

    async def start(self) -> None:
        """Check that the table exists with this store's key schema (``DescribeTable``)."""
        await check_table(self.connection)

    async def close(self) -> None:
        """Close the client; the store reconnects if used (or started) again."""
        await self.connection.close()

    async def migrate(self) -> list[str]:
        """Create the table (on-demand capacity, TTL on) when it is missing: what was
        done, one line each (``table.migrate_table``; ``agentsession migrate``)."""
        return await migrate_table(self.connection)

    async def ping(self) -> None:
        """One cheap request (``GetItem`` of a key no item has): ``StoreUnavailable``
        when DynamoDB cannot be reached, ``StoreMisconfigured`` without the table."""
        await self.connection.request(
            "get_item",
            Key=key(lease_pk(""), SINGLETON_SK),
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#pk": "pk"},
        )

    # Small helpers

    async def _get(self, user_id: str, sk: str, projection: str) -> Item | None:
        response = await self.connection.request(
            "get_item",
            Key=key(user_pk(user_id), sk),
            ConsistentRead=True,
            ProjectionExpression=projection,
            ExpressionAttributeNames=names(projection),
        )
        item: Item | None = response.get("Item")
        return item

    async def _update(self, item_key: Item, **params: Any) -> Item | None:
        """``UpdateItem`` of ``item_key``: the attributes it returns (``ReturnValues``;
        empty without), or None when its ``ConditionExpression`` failed."""
        expressions = [params.get("UpdateExpression", ""), params.get("ConditionExpression", "")]
        params.setdefault("ExpressionAttributeNames", names(*expressions))
        try:
            response = await self.connection.request("update_item", Key=item_key, **params)
        except Exception as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        item: Item = response.get("Attributes", {})
        return item

    # Conversations

    async def insert_session(self, record: SessionRecord) -> None:
        """One transaction: claim the id in the registry and add the conversation.

        A registry item whose conversation is gone (DynamoDB's TTL deleted it before the
        retention job could) is taken over: one more read and transaction."""
        held: str | None = None
        registry = {
            "pk": string(registry_pk(record.id)),
            "sk": string(SINGLETON_SK),
            "ow": string(record.user_id),
        }
        for _ in range(_SAVE_ATTEMPTS):
            claim = "attribute_not_exists(#pk)" if held is None else "#ow = :held"
            put_registry: dict[str, Any] = {
                "Item": registry,
                "ConditionExpression": claim,
                "ExpressionAttributeNames": names(claim),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            if held is not None:
                put_registry["ExpressionAttributeValues"] = {":held": string(held)}
            reasons = await self.connection.transact(
                [
                    {"Put": put_registry},
                    {
                        "Put": {
                            "Item": session_item(record),
                            "ConditionExpression": "attribute_not_exists(#pk)",
                            "ExpressionAttributeNames": {"#pk": "pk"},
                        }
                    },
                ]
            )
            if reasons is None:
                return
            if _failed(reasons[1]):
                raise IdConflict("session_id", record.id)
            owner = text(reasons[0].get("Item") or {}, "ow")
            if owner is not None and await self._get(owner, CONVERSATION + record.id, "#pk"):
                raise IdConflict("session_id", record.id)
            held = owner
        raise IdConflict("session_id", record.id)

    async def get_session(self, user_id: str, session_id: str, now: int) -> SessionRecord | None:
        item = await self._get(user_id, CONVERSATION + session_id, _RECORD_FIELDS)
        return session_of(user_id, item) if item and _live(item, now) else None

    async def list_sessions(
        self,
        user_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        pinned: bool | None = None,
    ) -> list[SessionRecord]:
        """The listing index from the cursor on, skipping expired and deleted ones (and,
        with ``pinned``, those with the other pin: filtered by DynamoDB while paging)."""
        low = CONVERSATION if after is None else strictly_after(conversation_listing(*after))
        condition = "#pk = :pk AND #ls1 BETWEEN :low AND :high"
        keep = "attribute_not_exists(#dl) AND (attribute_not_exists(#ex) OR #ex > :now)"
        if pinned is not None:
            keep += " AND attribute_exists(#pn)" if pinned else " AND attribute_not_exists(#pn)"
        return await self.connection.collect(
            lambda item: session_of(user_id, item),
            limit,
            read=_PINNED_READ if pinned else 0,
            IndexName=LISTING_INDEX,
            KeyConditionExpression=condition,
            FilterExpression=keep,
            ExpressionAttributeNames=names(condition, keep),
            ExpressionAttributeValues={
                ":pk": string(user_pk(user_id)),
                ":low": string(low),
                ":high": string("C$"),
                ":now": number(now),
            },
            ConsistentRead=True,
        )

    async def update_session(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        *,
        name: str | None = None,
        rename: bool = False,
        viewed: bool = False,
        pinned: bool | None = None,
    ) -> SessionRecord | None:
        """One ``UpdateItem`` conditioned on the conversation being live."""
        update = _Update()
        update.expiry(expires_at)
        if pinned is not None:
            update.set_or_remove("pn", number(1) if pinned else None)
        if rename:
            update.set("ut", number(now))
            update.set("ls1", string(conversation_listing(now, session_id)))
            update.set_or_remove("nm", None if name is None else string(name))
        if viewed:
            update.set("lv", number(now))
        item = await self._update(
            key(user_pk(user_id), CONVERSATION + session_id),
            **update.params(LIVE, {":now": number(now)}),
            ReturnValues="ALL_NEW",
        )
        return None if item is None else session_of(user_id, item)

    async def delete_session(self, user_id: str, session_id: str, now: int) -> bool:
        """Mark it deleted (one conditional ``UpdateItem``), then delete it with its
        tasks, feedback and registry item."""
        marked = await self._update(
            key(user_pk(user_id), CONVERSATION + session_id),
            UpdateExpression="SET #dl = :now",
            ConditionExpression=LIVE,
            ExpressionAttributeValues={":now": number(now)},
        )
        if marked is None:
            return False
        await purge(self.connection, [(user_id, session_id)])
        return True

    # State

    async def load_state(self, user_id: str, session_id: str, now: int) -> tuple[str, int] | None:
        item = await self._get(user_id, CONVERSATION + session_id, "#st, #v, #ex, #dl")
        if not item or not _live(item, now):
            return None
        return str(item["st"]["S"]), int(item["v"]["N"])

    @_named("state", "the conversation with its state")
    async def write_state(
        self,
        user_id: str,
        session_id: str,
        now: int,
        expires_at: int | None,
        state_json: str,
        version: int,
    ) -> bool | None:
        """One ``UpdateItem`` conditioned on the conversation being live at ``version``."""
        update = _Update()
        update.set("st", string(state_json))
        update.set("v", number(version + 1))
        update.set("ut", number(now))
        update.set("ls1", string(conversation_listing(now, session_id)))
        update.expiry(expires_at)
        condition = f"{LIVE} AND #v = :version"
        try:
            await self.connection.request(
                "update_item",
                Key=key(user_pk(user_id), CONVERSATION + session_id),
                **update.params(condition, {":now": number(now), ":version": number(version)}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            old: Item | None = getattr(error, "response", {}).get("Item")
            return False if _live(old, now) else None
        return True

    # Chat tasks

    @_named("message_bubbles", "the chat task")
    async def save_task(self, record: TaskRecord, touch: Touch | None = None) -> TaskRecord | None:
        """One transaction: the task (new, or the user's in this conversation) and the
        conversation's touch, conditioned on the conversation being live."""
        now = record.updated_time
        conversation = _Update()
        conversation.set("ta", number(now))
        if touch is not None:
            conversation.expiry(touch.expires_at)
            if touch.viewed:
                conversation.set("lv", number(now))
        touch_action = {
            "Update": {
                "Key": key(user_pk(record.user_id), CONVERSATION + record.session_id),
                **conversation.params(LIVE, {":now": number(now)}),
            }
        }
        task_key = key(user_pk(record.user_id), TASK + record.id)
        created: int | None = None  # the stored created_time, once known
        for _ in range(_SAVE_ATTEMPTS):
            task = _Update()
            task.set("mb", json_text(record.message_bubbles))
            task.set("md", json_text(record.task_metadata))
            task.set("ut", number(record.updated_time))
            task.set_or_remove(
                "um", None if record.user_message is None else string(record.user_message)
            )
            values: dict[str, Any] = {":sid": string(record.session_id)}
            if created is None:
                task.set("sid", string(record.session_id))
                task.set("ct", number(record.created_time))
                ls2 = task_listing(record.session_id, record.created_time, record.id)
                task.set("ls2", string(ls2))
                values = {}
                condition = "attribute_not_exists(#pk)"
            else:
                values[":created"] = number(created)
                condition = "#sid = :sid AND #ct = :created"
            reasons = await self.connection.transact(
                [
                    touch_action,
                    {
                        "Update": {
                            "Key": task_key,
                            **task.params(condition, values),
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                ]
            )
            if reasons is None:
                stored = record.created_time if created is None else created
                return TaskRecord(
                    id=record.id,
                    session_id=record.session_id,
                    user_id=record.user_id,
                    user_message=record.user_message,
                    message_bubbles=record.message_bubbles,
                    task_metadata=record.task_metadata,
                    created_time=stored,
                    updated_time=record.updated_time,
                )
            if _failed(reasons[0]):
                return None
            old = reasons[1].get("Item")
            if not old:
                created = None  # deleted meanwhile: insert it
                continue
            home = text(old, "sid")
            if home != record.session_id:
                assert home is not None
                await self._free_orphan(record.user_id, record.id, home)
                created = None
                continue
            created = value(old, "ct")
        raise IdConflict("task_id", record.id)

    async def _free_orphan(self, user_id: str, task_id: str, home: str) -> None:
        """Delete the user's task ``task_id`` if its conversation ``home`` is gone (a
        delete or DynamoDB's TTL got there before the cascade); else ``IdConflict``."""
        if await self._get(user_id, CONVERSATION + home, "#pk"):
            raise IdConflict("task_id", task_id)
        condition = "#sid = :home"
        await self.connection.transact(
            [
                {
                    "Delete": {
                        "Key": key(user_pk(user_id), TASK + task_id),
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": names(condition),
                        "ExpressionAttributeValues": {":home": string(home)},
                    }
                },
                {"Delete": {"Key": key(user_pk(user_id), FEEDBACK + task_id)}},
            ]
        )

    async def list_tasks(
        self,
        user_id: str,
        session_id: str,
        now: int,
        limit: int,
        after: tuple[int, str] | None,
        *,
        newest_first: bool = False,
    ) -> list[TaskRecord] | None:
        """The tasks index over the conversation's range; it ends with the conversation."""
        return await self._tasks(
            user_id, session_id, limit, after, lambda item: _live(item, now), newest_first
        )

    async def export_tasks(
        self, user_id: str, session_id: str, limit: int, after: tuple[int, str] | None
    ) -> list[TaskRecord]:
        """As ``list_tasks``, expired conversations too; empty when it is missing."""
        found = await self._tasks(user_id, session_id, limit, after, _kept)
        return found or []

    async def _tasks(
        self,
        user_id: str,
        session_id: str,
        limit: int,
        after: tuple[int, str] | None,
        visible: Callable[[Item | None], bool],
        newest_first: bool = False,
    ) -> list[TaskRecord] | None:
        """A page of the conversation's tasks, or None when ``visible`` refuses the
        conversation item: one ``Query``, which meets the conversation item (the end of
        the range) on the last page oldest first and on the first page newest first;
        one ``GetItem`` more for the other pages."""
        start, end = task_range(session_id)
        cursor = None if after is None else task_listing(session_id, *after)
        low, high = start, end
        if cursor is not None and newest_first:
            high = cursor  # inclusive: the cursor's own task is dropped below
        elif cursor is not None:
            low = strictly_after(cursor)
        condition = "#pk = :pk AND #ls2 BETWEEN :low AND :high"
        pages = self.connection.pages(
            "query",
            IndexName=TASKS_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names(condition),
            ExpressionAttributeValues={
                ":pk": string(user_pk(user_id)),
                ":low": string(low),
                ":high": string(high),
            },
            ConsistentRead=True,
            ScanIndexForward=not newest_first,
            Limit=limit + 1,
        )
        tasks: list[TaskRecord] = []
        conversation: Item | None = None
        async for page in pages:
            for item in page.get("Items", []):
                if str(item["sk"]["S"]).startswith(CONVERSATION):
                    conversation = item
                elif item["ls2"]["S"] != cursor:
                    tasks.append(task_of(user_id, item))
            if len(tasks) >= limit or (conversation is not None and not newest_first):
                break
        if conversation is None:
            conversation = await self._get(user_id, CONVERSATION + session_id, "#pk, #ex, #dl")
        if not visible(conversation):
            return None
        return tasks[:limit]

    # Search

    async def search(
        self, user_id: str, query: SearchQuery, now: int, limit: int, after: SearchKey | None
    ) -> list[SearchHit]:
        """A scan of the user's partition (``search.py``): O(the user's tasks)."""
        return await search_partition(self.connection, user_id, query, now, limit, after)

    # Feedback

    @_named("comment", "the feedback")
    async def save_feedback(self, record: FeedbackRecord, now: int) -> FeedbackRecord | None:
        """One transaction: the conversation is live, the task is the user's in it, and
        the feedback item (one per user and task) is written."""
        partition = user_pk(record.user_id)
        in_conversation = "#sid = :sid"
        reasons = await self.connection.transact(
            [
                {
                    "ConditionCheck": {
                        "Key": key(partition, CONVERSATION + record.session_id),
                        "ConditionExpression": LIVE,
                        "ExpressionAttributeNames": names(LIVE),
                        "ExpressionAttributeValues": {":now": number(now)},
                    }
                },
                {
                    "ConditionCheck": {
                        "Key": key(partition, TASK + record.task_id),
                        "ConditionExpression": in_conversation,
                        "ExpressionAttributeNames": names(in_conversation),
                        "ExpressionAttributeValues": {":sid": string(record.session_id)},
                    }
                },
                {"Put": {"Item": feedback_item(record)}},
            ]
        )
        return record if reasons is None else None

    async def list_feedback(
        self, user_id: str, where: FeedbackFilter, limit: int, after: tuple[int, str] | None
    ) -> list[FeedbackRecord]:
        """A task filter reads that one item; else the listing index newest first, within
        ``since``/``until``, the conversation and rating filtered by DynamoDB."""
        if where.task_id is not None:
            item = await self._get(
                user_id, FEEDBACK + where.task_id, "#fid, #sid, #tid, #rt, #cm, #ct"
            )
            found = [] if item is None else [feedback_of(user_id, item)]
            return [entry for entry in found if where.matches(entry, after)][:limit]
        low = FEEDBACK
        if where.until is not None:
            low = feedback_listing(where.until - 1, "")
        if after is not None:
            low = max(low, strictly_after(feedback_listing(*after)))
        high = "F$" if where.since is None else feedback_listing(where.since - 1, "")
        if low > high:
            return []
        condition = "#pk = :pk AND #ls1 BETWEEN :low AND :high"
        filters = []
        values: dict[str, Any] = {
            ":pk": string(user_pk(user_id)),
            ":low": string(low),
            ":high": string(high),
        }
        if where.session_id is not None:
            filters.append("#sid = :sid")
            values[":sid"] = string(where.session_id)
        if where.rating is not None:
            filters.append("#rt = :rt")
            values[":rt"] = string(where.rating)
        params: dict[str, Any] = {}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        return await self.connection.collect(
            lambda item: feedback_of(user_id, item),
            limit,
            IndexName=LISTING_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names(condition, *filters),
            ExpressionAttributeValues=values,
            ConsistentRead=True,
            **params,
        )

    # Revocation and a user's data (``userdata.py``)

    async def revoke(self, revocation: Revocation, now: int) -> None:
        """Record it (a read and a conditional write); DynamoDB's TTL forgets it later."""
        await userdata.revoke(self.connection, revocation)

    async def list_revocations(
        self, since: int, now: int, limit: int, after: tuple[int, str, str] | None
    ) -> list[Revocation]:
        return await userdata.list_revocations(self.connection, since, now, limit, after)

    async def export_sessions(
        self, user_id: str, limit: int, after: str | None
    ) -> list[StoredSession]:
        return await userdata.export_sessions(self.connection, user_id, limit, after)

    async def import_rows(self, rows: UserRows) -> None:
        await userdata.import_rows(self.connection, rows)

    async def erase_batch(self, user_id: str, limit: int) -> int:
        return await userdata.erase_batch(self.connection, user_id, limit)

    # Retention (``retention.py``)

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """Delete about ``limit`` old items of ``rule`` found by a ``Scan`` of the table."""
        return await self._retention.prune_batch(rule, cut, position, limit)

    async def count_prunable(self, rule: str, cut: Cutoffs) -> int:
        """Count what ``rule`` would delete: a ``Scan`` of the whole table."""
        return await self._retention.count(rule, cut)

    async def take_lease(self, name: str, owner: str, expires_at: int, now: int) -> bool:
        """One conditional ``UpdateItem``: free, expired at ``now``, or ours."""
        condition = "attribute_not_exists(#pk) OR #ow = :owner OR #ex <= :now"
        taken = await self._update(
            key(lease_pk(name), SINGLETON_SK),
            UpdateExpression="SET #ow = :owner, #ex = :expires",
            ConditionExpression=condition,
            ExpressionAttributeValues={
                ":owner": string(owner),
                ":expires": number(expires_at),
                ":now": number(now),
            },
        )
        return taken is not None

    async def release_lease(self, name: str, owner: str, now: int) -> None:
        await self._update(
            key(lease_pk(name), SINGLETON_SK),
            UpdateExpression="SET #ex = :now",
            ConditionExpression="#ow = :owner",
            ExpressionAttributeValues={":owner": string(owner), ":now": number(now)},
        )

    async def lease_holder(self, name: str) -> Holder | None:
        response = await self.connection.request(
            "get_item", Key=key(lease_pk(name), SINGLETON_SK), ConsistentRead=True
        )
        item: Item | None = response.get("Item")
        if not item:
            return None
        return Holder(str(item["ow"]["S"]), int(item["ex"]["N"]))


class _Update:
    """An ``UpdateExpression`` being built: ``SET`` and ``REMOVE`` clauses and values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.values: dict[str, Any] = {}

    def set(self, name: str, content: dict[str, str]) -> None:
        self.sets.append(f"#{name} = :{name}")
        self.values[f":{name}"] = content

    def set_or_remove(self, name: str, content: dict[str, str] | None) -> None:
        if content is None:
            self.removes.append(f"#{name}")
        else:
            self.set(name, content)

    def expiry(self, expires_at: int | None) -> None:
        """``ex`` and DynamoDB's TTL attribute for ``expires_at`` (removed for None)."""
        ttl = ttl_of(expires_at)
        self.set_or_remove("ex", None if expires_at is None else number(expires_at))
        self.set_or_remove("ttl", None if ttl is None else number(ttl))

    def params(self, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        """``UpdateExpression``, ``ConditionExpression`` and their names and values."""
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        expression = " ".join(clauses)
        params: dict[str, Any] = {
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names(expression, condition),
        }
        merged = {**self.values, **values}
        if merged:
            params["ExpressionAttributeValues"] = merged
        return params
