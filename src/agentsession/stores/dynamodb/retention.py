"""Retention on the DynamoDB store: the rules' batches, the dry-run counts, the cascade.

A rule's old items are found by a ``Scan`` of the table filtered by DynamoDB (the only
way across every user's partition; one pass per rule and run, its reads billed on
the whole table), from where the previous batch stopped. They are deleted by
``TransactWriteItems`` of conditional actions, up to 100 actions a request, each
re-checking the rule on the item, so that a task saved again or a conversation used
meanwhile is kept: a task goes with its feedback; an expired or idle conversation is
first marked deleted (``dl``, after which every call treats it as missing), then
``purge`` deletes it with its tasks and feedback by ``BatchWriteItem`` and frees its
id in the registry. A conversation marked deleted whose purge did not finish (the
process stopped) is an ``expired_sessions`` candidate until it does.

Pinned conversations (``pn``): the idle rule's condition requires no ``pn``. A task
item does not know its conversation's pin, so the task rule reads the candidates'
conversations (``BatchGetItem``), leaves out the tasks of pinned ones, and guards each
transaction with one ``ConditionCheck`` per conversation that it is still unpinned (a
conversation pinned meanwhile keeps its tasks); its dry-run count scans the pinned
conversations with the old tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentsession.stores.base import Cutoffs
from agentsession.stores.dynamodb.client import TRANSACTION_SIZE, Connection
from agentsession.stores.dynamodb.expressions import names
from agentsession.stores.dynamodb.items import Item, number, string
from agentsession.stores.dynamodb.layout import (
    CONVERSATION,
    FEEDBACK,
    SINGLETON_SK,
    TASK,
    TASKS_INDEX,
    registry_pk,
    task_range,
    user_of,
    user_pk,
)

__all__ = ["Retention", "purge"]

#: Items one ``Scan`` request evaluates, and the requests one batch may make.
SCAN_PAGE = 1000
SCANS_PER_BATCH = 20

_LIVE_IDLE = (
    "attribute_not_exists(#dl) AND (attribute_not_exists(#ex) OR #ex > :now) "
    "AND #ut < :idle AND (attribute_not_exists(#lv) OR #lv < :idle) "
    "AND (attribute_not_exists(#ta) OR #ta < :active) AND attribute_not_exists(#pn)"
)
#: A conversation's tasks may go: it is not pinned (true of a missing conversation too).
_UNPINNED = "attribute_not_exists(#pn)"
#: Per rule: the condition an item must meet to go (in ``Scan`` filters and in the
#: deletes' conditions), and the sort-key prefix of the items it looks at.
_RULES = {
    "chat_tasks": (TASK, "#ut < :tasks"),
    "feedback": (FEEDBACK, "#ct < :feedback"),
    "expired_sessions": (CONVERSATION, "(attribute_exists(#dl) OR #ex <= :now)"),
    "idle_sessions": (CONVERSATION, _LIVE_IDLE),
}


@dataclass(frozen=True, slots=True)
class _Walk:
    """Where a rule's ``Scan`` goes on (``prune_batch``'s position): the key to start after."""

    start: Item


def _values(cut: Cutoffs) -> dict[str, Any]:
    """Every value the rules' expressions may name, for ``cut``."""
    idle = cut.idle if cut.idle is not None else 0
    active = idle if cut.tasks is None else max(idle, cut.tasks)
    values: dict[str, Any] = {
        ":now": number(cut.now),
        ":idle": number(idle),
        ":active": number(active),
    }
    if cut.tasks is not None:
        values[":tasks"] = number(cut.tasks)
    if cut.feedback is not None:
        values[":feedback"] = number(cut.feedback)
    return values


def _used(values: dict[str, Any], *expressions: str) -> dict[str, Any]:
    """The entries of ``values`` that ``expressions`` name (DynamoDB refuses unused ones)."""
    return {name: v for name, v in values.items() if any(name in e for e in expressions)}


def _scan_filter(rule: str) -> str:
    _, condition = _RULES[rule]
    return f"begins_with(#sk, :prefix) AND {condition}"


class Retention:
    """``prune_batch`` and ``count_prunable`` of a ``DynamoDBStore`` on ``connection``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def prune_batch(
        self, rule: str, cut: Cutoffs, position: object | None, limit: int
    ) -> tuple[int, object | None]:
        """Scan on from ``position`` for up to ``limit`` candidates, then delete them."""
        limit = max(1, limit)
        prefix, _ = _RULES[rule]
        condition = _scan_filter(rule)
        values = {**_values(cut), ":prefix": string(prefix)}
        projection = "#pk, #sk, #sid" if rule == "chat_tasks" else "#pk, #sk"
        params: dict[str, Any] = {
            "FilterExpression": condition,
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": names(condition, projection),
            "ExpressionAttributeValues": _used(values, condition),
            "ConsistentRead": True,
            "Limit": SCAN_PAGE,
        }
        if isinstance(position, _Walk):
            params["ExclusiveStartKey"] = position.start
        candidates: list[Item] = []
        next_position: _Walk | None = None
        scans = 0
        async for page in self.connection.pages("scan", **params):
            scans += 1
            for item in page.get("Items", []):
                candidates.append(item)
                if len(candidates) >= limit:
                    next_position = _Walk({"pk": item["pk"], "sk": item["sk"]})
                    break
            if next_position is not None:
                break
            last = page.get("LastEvaluatedKey")
            if last and scans >= SCANS_PER_BATCH:
                next_position = _Walk(last)
                break
        if rule == "chat_tasks":
            return await self._delete_tasks(cut, candidates), next_position
        return await self._delete(rule, cut, candidates), next_position

    async def _delete_tasks(self, cut: Cutoffs, candidates: Sequence[Item]) -> int:
        """Delete the old tasks (with their feedback) of conversations not pinned, each
        transaction guarded by those conversations being still unpinned; how many went."""
        homes = {_home(item) for item in candidates}
        pinned = await _pinned(self.connection, sorted(homes))
        condition = _RULES["chat_tasks"][1]
        checked = {
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names(condition),
            "ExpressionAttributeValues": _used(_values(cut), condition),
        }
        units: list[list[dict[str, Any]]] = []
        guards: list[dict[str, Any] | None] = []
        for item in candidates:
            home = _home(item)
            if home in pinned:
                continue
            task_id = str(item["sk"]["S"])[len(TASK) :]
            feedback_key = {"pk": item["pk"], "sk": string(FEEDBACK + task_id)}
            task_key = {"pk": item["pk"], "sk": item["sk"]}
            units.append(
                [{"Delete": {"Key": task_key, **checked}}, {"Delete": {"Key": feedback_key}}]
            )
            guards.append(
                {
                    "ConditionCheck": {
                        "Key": {"pk": string(home[0]), "sk": string(CONVERSATION + home[1])},
                        "ConditionExpression": _UNPINNED,
                        "ExpressionAttributeNames": names(_UNPINNED),
                    }
                }
            )
        return len(await run_units(self.connection, units, guards))

    async def _delete(self, rule: str, cut: Cutoffs, candidates: Sequence[Item]) -> int:
        """Delete the candidates that still meet the rule; how many went (rows counted as
        the contract counts them: a task's feedback and a conversation's rows go uncounted)."""
        if not candidates:
            return 0
        _, condition = _RULES[rule]
        values = _used(_values(cut), condition)
        checked = {"ConditionExpression": condition, "ExpressionAttributeNames": names(condition)}
        if values:
            checked["ExpressionAttributeValues"] = values
        units: list[list[dict[str, Any]]] = []
        for item in candidates:
            key = {"pk": item["pk"], "sk": item["sk"]}
            if rule == "feedback":
                units.append([{"Delete": {"Key": key, **checked}}])
            else:
                mark = "SET #dl = if_not_exists(#dl, :now)"
                values_now = {**values, ":now": number(cut.now)}
                units.append(
                    [
                        {
                            "Update": {
                                "Key": key,
                                "UpdateExpression": mark,
                                "ConditionExpression": condition,
                                "ExpressionAttributeNames": names(mark, condition),
                                "ExpressionAttributeValues": values_now,
                            }
                        }
                    ]
                )
        done = await run_units(self.connection, units)
        if rule == "feedback":
            return len(done)
        owned = []
        for unit in done:
            key = unit[0]["Update"]["Key"]
            user = user_of(str(key["pk"]["S"]))
            if user is not None:
                owned.append((user, str(key["sk"]["S"])[len(CONVERSATION) :]))
        await purge(self.connection, owned)
        return len(owned)

    async def count(self, rule: str, cut: Cutoffs) -> int:
        """How many items ``rule`` would delete after the rules before it (a full ``Scan``;
        feedback of tasks the task rule deletes is not counted again)."""
        values = _values(cut)
        if rule == "chat_tasks" or (rule == "feedback" and cut.tasks is not None):
            return await self._count_old(rule, values)
        prefix, _ = _RULES[rule]
        condition = _scan_filter(rule)
        total = 0
        pages = self.connection.pages(
            "scan",
            Select="COUNT",
            FilterExpression=condition,
            ExpressionAttributeNames=names(condition),
            ExpressionAttributeValues=_used({**values, ":prefix": string(prefix)}, condition),
            ConsistentRead=True,
        )
        async for page in pages:
            total += int(page.get("Count", 0))
        return total

    async def _count_old(self, rule: str, values: dict[str, Any]) -> int:
        """The task rule's count (old tasks of conversations not pinned), or the feedback
        rule's after it (old feedback whose task it keeps): one ``Scan`` reading the old
        tasks, the pinned conversations and, for feedback, the old feedback."""
        condition = (
            f"(begins_with(#sk, :task) AND {_RULES['chat_tasks'][1]}) "
            f"OR (begins_with(#sk, :conv) AND attribute_exists(#pn))"
        )
        if rule == "feedback":
            condition += f" OR (begins_with(#sk, :fb) AND {_RULES['feedback'][1]})"
        old_tasks: list[tuple[str, str, str]] = []
        pinned: set[tuple[str, str]] = set()
        old_feedback: list[tuple[str, str]] = []
        pages = self.connection.pages(
            "scan",
            FilterExpression=condition,
            ProjectionExpression="#pk, #sk, #sid",
            ExpressionAttributeNames=names(condition, "#pk, #sid"),
            ExpressionAttributeValues=_used(
                {
                    **values,
                    ":task": string(TASK),
                    ":conv": string(CONVERSATION),
                    ":fb": string(FEEDBACK),
                },
                condition,
            ),
            ConsistentRead=True,
        )
        async for page in pages:
            for item in page.get("Items", []):
                pk, sk = str(item["pk"]["S"]), str(item["sk"]["S"])
                if sk.startswith(TASK):
                    old_tasks.append((pk, sk[len(TASK) :], str(item["sid"]["S"])))
                elif sk.startswith(CONVERSATION):
                    pinned.add((pk, sk[len(CONVERSATION) :]))
                else:
                    old_feedback.append((pk, sk[len(FEEDBACK) :]))
        going = {(pk, tid) for pk, tid, sid in old_tasks if (pk, sid) not in pinned}
        if rule == "chat_tasks":
            return len(going)
        return sum(pair not in going for pair in old_feedback)


def _home(item: Item) -> tuple[str, str]:
    """A task item's ``(partition, conversation id)``."""
    return str(item["pk"]["S"]), str(item["sid"]["S"])


async def _pinned(connection: Connection, homes: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these ``(partition, conversation id)`` are pinned (``BatchGetItem``,
    100 keys a request)."""
    found: set[tuple[str, str]] = set()
    keys = [{"pk": string(pk), "sk": string(CONVERSATION + sid)} for pk, sid in homes]
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {
            connection.table: {
                "Keys": keys[start : start + 100],
                "ProjectionExpression": "#pk, #sk, #pn",
                "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#pn": "pn"},
                "ConsistentRead": True,
            }
        }
        while pending:
            response = await connection.request("batch_get_item", RequestItems=pending)
            for item in response.get("Responses", {}).get(connection.table, []):
                if "pn" in item:
                    sk = str(item["sk"]["S"])
                    found.add((str(item["pk"]["S"]), sk[len(CONVERSATION) :]))
            pending = response.get("UnprocessedKeys") or {}
    return found


#: A unit of actions that go together, and its guard (a ``ConditionCheck`` several units
#: may share: a transaction holds it once), or None.
_Unit = tuple[list[dict[str, Any]], dict[str, Any] | None]


def _guard_key(guard: dict[str, Any] | None) -> tuple[str, str] | None:
    if guard is None:
        return None
    key = guard["ConditionCheck"]["Key"]
    return str(key["pk"]["S"]), str(key["sk"]["S"])


def _transactions(units: Sequence[_Unit]) -> list[list[_Unit]]:
    """``units`` packed in order into transactions of at most ``TRANSACTION_SIZE``
    actions, each distinct guard counted once."""
    groups: list[list[_Unit]] = []
    group: list[_Unit] = []
    guards: set[tuple[str, str]] = set()
    size = 0
    for unit in units:
        key = _guard_key(unit[1])
        extra = len(unit[0]) + (key is not None and key not in guards)
        if group and size + extra > TRANSACTION_SIZE:
            groups.append(group)
            group, guards, size = [], set(), 0
            extra = len(unit[0]) + (key is not None)
        group.append(unit)
        size += extra
        if key is not None:
            guards.add(key)
    if group:
        groups.append(group)
    return groups


def _failed(reason: dict[str, Any]) -> bool:
    return reason.get("Code") == "ConditionalCheckFailed"


async def run_units(
    connection: Connection,
    units: list[list[dict[str, Any]]],
    guards: Sequence[dict[str, Any] | None] | None = None,
) -> list[list[dict[str, Any]]]:
    """Run ``units`` (lists of actions that go together) in transactions of at most
    ``TRANSACTION_SIZE`` actions; a unit whose condition fails, or whose guard's
    (``guards[i]``, a ``ConditionCheck`` shared by the units naming the same item) does,
    is left out and the rest of its transaction sent again. Returns the units written."""
    paired: list[_Unit] = list(zip(units, guards or [None] * len(units), strict=True))
    done: list[list[dict[str, Any]]] = []
    for pending in _transactions(paired):
        while pending:
            checks = {
                key: guard
                for _, guard in pending
                if guard is not None and (key := _guard_key(guard)) is not None
            }
            actions = [*checks.values(), *(action for unit, _ in pending for action in unit)]
            reasons = await connection.transact(actions)
            if reasons is None:
                done += [unit for unit, _ in pending]
                break
            refused = {key for key, reason in zip(checks, reasons, strict=False) if _failed(reason)}
            kept: list[_Unit] = []
            index = len(checks)
            for unit, guard in pending:
                unit_reasons = reasons[index : index + len(unit)]
                index += len(unit)
                if _guard_key(guard) not in refused and not any(map(_failed, unit_reasons)):
                    kept.append((unit, guard))
            if len(kept) == len(pending):
                break  # nothing to leave out: give up on this group rather than loop
            pending = kept
    return done


async def purge(connection: Connection, conversations: Sequence[tuple[str, str]]) -> None:
    """Delete these ``(user, conversation id)`` conversations (already marked deleted)
    with their tasks and feedback, then free their ids in the registry."""
    keys: list[Item] = []
    for user_id, session_id in conversations:
        start, end = task_range(session_id)
        condition = "#pk = :pk AND #ls2 BETWEEN :low AND :high"
        pages = connection.pages(
            "query",
            IndexName=TASKS_INDEX,
            KeyConditionExpression=condition,
            ProjectionExpression="#sk",
            ExpressionAttributeNames=names(condition, "#sk"),
            ExpressionAttributeValues={
                ":pk": string(user_pk(user_id)),
                ":low": string(start),
                ":high": string(end),
            },
            ConsistentRead=True,
        )
        partition = string(user_pk(user_id))
        async for page in pages:
            for item in page.get("Items", []):
                sk = str(item["sk"]["S"])
                keys.append({"pk": partition, "sk": string(sk)})
                if sk.startswith(TASK):
                    keys.append({"pk": partition, "sk": string(FEEDBACK + sk[len(TASK) :])})
        keys.append({"pk": partition, "sk": string(CONVERSATION + session_id)})
    unique = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
    await connection.delete_all(unique)
    owner = "#ow = :owner"
    await run_units(
        connection,
        [
            [
                {
                    "Delete": {
                        "Key": {"pk": string(registry_pk(session_id)), "sk": string(SINGLETON_SK)},
                        "ConditionExpression": owner,
                        "ExpressionAttributeNames": names(owner),
                        "ExpressionAttributeValues": {":owner": string(user_id)},
                    }
                }
            ]
            for user_id, session_id in conversations
        ],
    )
