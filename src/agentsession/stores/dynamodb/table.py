"""The DynamoDB store's table: its definition, the check at startup, and ``migrate``.

``migrate`` (``agentsession migrate``) creates a missing table with on-demand capacity
(``PAY_PER_REQUEST``) and the two local secondary indexes, waits until it is active,
and turns DynamoDB's TTL on for the ``ttl`` attribute. It never changes an existing
table's keys or indexes: a table whose layout differs is a ``ConfigError`` naming
what differs. The only change it makes to an existing table of this layout is turning
TTL on when it is off, and it says so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentsession.errors import StoreMisconfigured
from agentsession.stores.dynamodb.client import Connection, error_code
from agentsession.stores.dynamodb.layout import (
    LISTING_INDEX,
    LISTING_PROJECTION,
    TASKS_INDEX,
    TASKS_PROJECTION,
    TTL_ATTRIBUTE,
)

__all__ = ["check_table", "definition", "describe", "migrate_table", "problems"]

#: Seconds ``migrate`` waits for a new table to become active, and between two looks.
ACTIVE_TIMEOUT = 300.0
POLL_INTERVAL = 0.5

_INDEXES = {
    LISTING_INDEX: ("ls1", LISTING_PROJECTION),
    TASKS_INDEX: ("ls2", TASKS_PROJECTION),
}


def definition(table: str) -> dict[str, Any]:
    """``CreateTable``'s parameters for this store's layout (``layout.py``)."""
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "ls1", "ls2")
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "LocalSecondaryIndexes": [
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(projected)},
            }
            for index, (sort_key, projected) in _INDEXES.items()
        ],
    }


def _keys(schema: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(key["AttributeName"]), str(key["KeyType"])) for key in schema]


def problems(table: dict[str, Any]) -> list[str]:
    """How ``DescribeTable``'s ``Table`` differs from this store's layout (empty: none)."""
    found: list[str] = []
    keys = _keys(table.get("KeySchema", []))
    if keys != [("pk", "HASH"), ("sk", "RANGE")]:
        found.append(f"its key schema is {keys}, not [pk (HASH), sk (RANGE)]")
    types = {d["AttributeName"]: d["AttributeType"] for d in table.get("AttributeDefinitions", [])}
    for name in ("pk", "sk"):
        if name in types and types[name] != "S":
            found.append(f"attribute {name} is of type {types[name]}, not S (string)")
    indexes = {index["IndexName"]: index for index in table.get("LocalSecondaryIndexes", [])}
    for name, (sort_key, projected) in _INDEXES.items():
        index = indexes.get(name)
        if index is None:
            found.append(f"it has no local secondary index {name!r} (pk, {sort_key})")
            continue
        if _keys(index.get("KeySchema", [])) != [("pk", "HASH"), (sort_key, "RANGE")]:
            found.append(f"index {name!r} is not keyed by (pk, {sort_key})")
        projection = index.get("Projection", {})
        missing = set(projected) - set(projection.get("NonKeyAttributes", []))
        if projection.get("ProjectionType") != "ALL" and missing:
            found.append(f"index {name!r} does not project {', '.join(sorted(missing))}")
    return found


async def describe(connection: Connection) -> dict[str, Any] | None:
    """``DescribeTable``'s ``Table``, or None when there is no such table."""
    try:
        response = await connection.request("describe_table")
    except StoreMisconfigured as error:
        if error_code(error.__cause__ or error) == "ResourceNotFoundException":
            return None
        raise
    table: dict[str, Any] = response["Table"]
    return table


def _mismatch(connection: Connection, found: list[str]) -> StoreMisconfigured:
    return StoreMisconfigured(
        f"{connection.label} exists with another layout: {'; '.join(found)}. agentsession "
        "does not change an existing table: set session_service.table_name "
        "(SESSION_DYNAMODB_TABLE) to a new name and run `agentsession migrate`"
    )


async def check_table(connection: Connection) -> None:
    """``StoreMisconfigured`` unless the table exists with this store's layout."""
    table = await describe(connection)
    if table is None:
        raise StoreMisconfigured(
            f"{connection.label} does not exist: create it with `agentsession migrate` "
            "or fix session_service.table_name (SESSION_DYNAMODB_TABLE)"
        )
    found = problems(table)
    if found:
        raise _mismatch(connection, found)


async def migrate_table(connection: Connection) -> list[str]:
    """Create the table (and turn TTL on) when it is missing; what was done, one line each.

    ``ConfigError`` (``StoreMisconfigured``) when a table of that name has another layout.
    """
    done: list[str] = []
    table = await describe(connection)
    if table is None:
        await connection.request("create_table", **definition(connection.table))
        done.append(f"created {connection.label} (on-demand capacity, 2 local indexes)")
        await _wait_active(connection)
    else:
        found = problems(table)
        if found:
            raise _mismatch(connection, found)
    response = await connection.request("describe_time_to_live")
    ttl = response.get("TimeToLiveDescription", {})
    status = ttl.get("TimeToLiveStatus", "DISABLED")
    attribute = ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING"):
        if attribute != TTL_ATTRIBUTE:
            done.append(
                f"left as it is: DynamoDB's TTL is on for attribute {attribute!r}, not "
                f"{TTL_ATTRIBUTE!r}, so DynamoDB will not delete expired conversations "
                "(they stay hidden, and the retention job deletes them)"
            )
    elif status == "DISABLED":
        await connection.request(
            "update_time_to_live",
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        done.append(f"turned TTL on for attribute {TTL_ATTRIBUTE!r}")
    return done


async def _wait_active(connection: Connection) -> None:
    """Wait until the new table is ``ACTIVE`` (DynamoDB creates it in seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACTIVE_TIMEOUT
    while True:
        table = await describe(connection)
        if table is not None and table.get("TableStatus") == "ACTIVE":
            return
        if loop.time() > deadline:
            raise StoreMisconfigured(f"{connection.label} did not become active in time")
        await asyncio.sleep(POLL_INTERVAL)
