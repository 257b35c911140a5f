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
    "AND (attribute_not_exists(#ta) OR #ta < :active)"
)
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
        params: dict[str, Any] = {
            "FilterExpression": condition,
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": names(condition, "#pk, #sk"),
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
        return await self._delete(rule, cut, candidates), next_position

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
            if rule == "chat_tasks":
                task_id = str(item["sk"]["S"])[len(TASK) :]
                feedback_key = {"pk": item["pk"], "sk": string(FEEDBACK + task_id)}
                units.append(
                    [{"Delete": {"Key": key, **checked}}, {"Delete": {"Key": feedback_key}}]
                )
            elif rule == "feedback":
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
        if rule in ("chat_tasks", "feedback"):
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
        if rule == "feedback" and cut.tasks is not None:
            return await self._count_feedback(values)
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

    async def _count_feedback(self, values: dict[str, Any]) -> int:
        """Old feedback whose task the task rule keeps (one ``Scan`` reading both)."""
        condition = (
            f"(begins_with(#sk, :task) AND {_RULES['chat_tasks'][1]}) "
            f"OR (begins_with(#sk, :fb) AND {_RULES['feedback'][1]})"
        )
        old_tasks: set[tuple[str, str]] = set()
        old_feedback: list[tuple[str, str]] = []
        pages = self.connection.pages(
            "scan",
            FilterExpression=condition,
            ProjectionExpression="#pk, #sk",
            ExpressionAttributeNames=names(condition, "#pk"),
            ExpressionAttributeValues=_used(
                {**values, ":task": string(TASK), ":fb": string(FEEDBACK)}, condition
            ),
            ConsistentRead=True,
        )
        async for page in pages:
            for item in page.get("Items", []):
                pk, sk = str(item["pk"]["S"]), str(item["sk"]["S"])
                if sk.startswith(TASK):
                    old_tasks.add((pk, sk[len(TASK) :]))
                else:
                    old_feedback.append((pk, sk[len(FEEDBACK) :]))
        return sum(pair not in old_tasks for pair in old_feedback)


async def run_units(
    connection: Connection, units: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """Run ``units`` (lists of actions that go together) in transactions of at most
    ``TRANSACTION_SIZE`` actions; a unit whose condition fails is left out and the rest
    of its transaction sent again. Returns the units written."""
    done: list[list[dict[str, Any]]] = []
    group: list[list[dict[str, Any]]] = []
    size = 0
    groups: list[list[list[dict[str, Any]]]] = []
    for unit in units:
        if size + len(unit) > TRANSACTION_SIZE:
            groups.append(group)
            group, size = [], 0
        group.append(unit)
        size += len(unit)
    if group:
        groups.append(group)
    for pending in groups:
        while pending:
            reasons = await connection.transact([action for unit in pending for action in unit])
            if reasons is None:
                done += pending
                break
            kept: list[list[dict[str, Any]]] = []
            index = 0
            for unit in pending:
                unit_reasons = reasons[index : index + len(unit)]
                index += len(unit)
                if not any(
                    reason.get("Code") == "ConditionalCheckFailed" for reason in unit_reasons
                ):
                    kept.append(unit)
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
