"""The DynamoDB connection of a store: one aiobotocore client, requests with their errors
translated, transactions retried on conflicts, batch deletes until all are processed.

The client is made on first use (so that it binds the running event loop) from the
standard AWS chain (environment, shared files, container or instance role); botocore's
``standard`` retry mode retries throttling and transient failures with exponential
backoff and jitter (4 attempts for DynamoDB), after which the error becomes
``StoreUnavailable`` (``errors.translate``). Transactions cancelled by a conflicting
write (``TransactionConflict``) or throttled are retried here, with backoff too.
Every request goes through ``request``; tests count them with ``requests_made``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

from agentsession.errors import StoreUnavailable
from agentsession.stores.dynamodb.items import Item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["BATCH_SIZE", "TRANSACTION_SIZE", "Connection", "error_code"]

T = TypeVar("T")

#: Seconds to connect, and to wait for a response, before botocore gives up (and retries).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
#: Items one ``BatchWriteItem`` takes, and actions one ``TransactWriteItems`` takes.
BATCH_SIZE = 25
TRANSACTION_SIZE = 100
#: Attempts of a transaction cancelled by a conflict or throttling, and of a batch
#: whose items come back unprocessed; the first backoff, in seconds (then doubled).
ATTEMPTS = 8
FIRST_BACKOFF = 0.01
#: Cancellation reasons that another attempt may clear.
_RETRY_REASONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)


class Connection:
    """One aiobotocore DynamoDB client for one table, made on first use."""

    def __init__(
        self, table: str, *, endpoint_url: str | None, region: str | None, pool_size: int
    ) -> None:
        self.table = table
        self.endpoint_url = endpoint_url
        self.region = region
        self.pool_size = pool_size
        #: Requests sent (each API call once, whatever botocore retried): for tests.
        self.requests_made = 0
        where = f" at {endpoint_url}" if endpoint_url else ""
        self.label = f"DynamoDB table {table!r}{where}"
        self._client: DynamoDBClient | None = None
        self._stack: AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None

    async def client(self) -> DynamoDBClient:
        """The client, made on first use."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                config = AioConfig(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard"},
                    max_pool_connections=self.pool_size,
                )
                stack = AsyncExitStack()
                creator = get_session().create_client(
                    "dynamodb",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                )
                try:
                    self._client = await stack.enter_async_context(creator)
                except Exception as error:
                    await stack.aclose()
                    raise self._translated(error) from error
                self._stack = stack
        assert self._client is not None
        return self._client

    async def close(self) -> None:
        """Close the client's connections; the next request makes a new client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _translated(self, error: Exception) -> Exception:
        from agentsession.stores.dynamodb.errors import translate

        found = translate(error, self.label)
        return error if found is None else found

    async def request(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` (botocore's snake_case name) with ``params``; ``TableName``
        is added unless given. Errors are translated (``errors.translate``)."""
        client = await self.client()
        if operation not in ("transact_write_items", "batch_write_item", "batch_get_item"):
            params.setdefault("TableName", self.table)
        self.requests_made += 1
        try:
            response: dict[str, Any] = await getattr(client, operation)(**params)
        except Exception as error:
            if error_code(error) in (
                "ConditionalCheckFailedException",
                "TransactionCanceledException",
            ):
                raise
            from agentsession.stores.dynamodb.errors import ItemTooLarge, too_large

            if too_large(error):  # the caller's input, not the store: a 422, never a 500
                raise ItemTooLarge(
                    "item", "is over DynamoDB's 400 KB limit for one item"
                ) from error
            translated = self._translated(error)
            if translated is error:
                raise
            raise translated from error
        return response

    async def transact(self, actions: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run ``TransactWriteItems``: None when it committed, else the cancellation
        reasons (one per action, ``{"Code": ..., "Item": ...}``) when a condition failed.

        Conflicts with concurrent writes and throttling are retried with backoff;
        ``StoreUnavailable`` when they go on.
        """
        items = [_with_table(action, self.table) for action in actions]
        delay = FIRST_BACKOFF
        for _ in range(ATTEMPTS):
            try:
                await self.request("transact_write_items", TransactItems=items)
                return None
            except Exception as error:
                if error_code(error) != "TransactionCanceledException":
                    raise
                response: dict[str, Any] = getattr(error, "response", {})
                reasons: list[dict[str, Any]] = list(response.get("CancellationReasons", []))
                codes = {reason.get("Code") for reason in reasons}
                if not codes & _RETRY_REASONS:
                    if "ConditionalCheckFailed" in codes:
                        return reasons
                    raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay *= 2
        raise StoreUnavailable(f"{self.label}: a transaction kept conflicting with other writes")

    async def delete_all(self, keys: Sequence[Item]) -> None:
        """Delete the items with these keys (unconditionally), ``BATCH_SIZE`` a request,
        sending what DynamoDB left unprocessed again with backoff."""
        for start in range(0, len(keys), BATCH_SIZE):
            pending: list[dict[str, Any]] = [
                {"DeleteRequest": {"Key": key}} for key in keys[start : start + BATCH_SIZE]
            ]
            delay = FIRST_BACKOFF
            for _ in range(ATTEMPTS):
                response = await self.request(
                    "batch_write_item", RequestItems={self.table: pending}
                )
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
            else:
                raise StoreUnavailable(f"{self.label}: deletes stayed unprocessed (throttled)")

    async def collect(
        self, convert: Callable[[Item], T], limit: int, *, read: int = 0, **params: Any
    ) -> list[T]:
        """Up to ``limit`` items of a ``Query``, converted: ``Limit=max(limit, read)`` a
        request (``read``: for a filter expected to drop most items), more requests only
        while a ``FilterExpression`` (or DynamoDB's 1 MB) left pages short."""
        found: list[T] = []
        async for page in self.pages("query", Limit=max(limit, read), **params):
            found += [convert(item) for item in page.get("Items", [])]
            if len(found) >= limit:
                break
        return found[:limit]

    async def pages(self, operation: str, **params: Any) -> Any:
        """The pages of a ``query`` or ``scan`` (an async iterator of responses)."""
        while True:
            response = await self.request(operation, **params)
            yield response
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last


def error_code(error: BaseException) -> str:
    """The DynamoDB error code of a botocore ``ClientError`` (``""`` for other errors)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _with_table(action: dict[str, Any], table: str) -> dict[str, Any]:
    """A ``TransactWriteItems`` action with ``TableName`` set."""
    ((kind, body),) = action.items()
    return {kind: {"TableName": table, **body}}
