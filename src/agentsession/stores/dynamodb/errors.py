"""How a botocore/aiobotocore failure reaches the caller: ``StoreUnavailable``,
``StoreMisconfigured``, or (a bug, such as a malformed request) the error as it is.

* DynamoDB cannot serve now: the endpoint is unreachable, the connection is lost or
  times out, the request is throttled after botocore's retries with backoff ran out
  (``ProvisionedThroughputExceededException``, ``ThrottlingException``,
  ``RequestLimitExceeded``), or the service fails (``InternalServerError``, HTTP 5xx):
  ``StoreUnavailable``.
* The configuration is wrong: no credentials or region, credentials DynamoDB refuses
  (``UnrecognizedClientException``, ``InvalidSignatureException``, an expired token),
  a role without the permissions the store needs (``AccessDeniedException``), or no
  such table (``ResourceNotFoundException``): ``StoreMisconfigured``, naming the table
  and the fix.
"""

from __future__ import annotations

import asyncio

import aiohttp
from botocore import exceptions as boto

from agentsession.errors import InvalidInput, StoreMisconfigured, StoreUnavailable
from agentsession.stores.dynamodb.client import error_code

__all__ = ["ITEM_LIMIT", "THROTTLING_CODES", "ItemTooLarge", "too_large", "translate"]

#: DynamoDB's limit on one item (a conversation with its state, a task), in bytes.
ITEM_LIMIT = 400 * 1024


class ItemTooLarge(InvalidInput):
    """A write DynamoDB refused because the item would pass ``ITEM_LIMIT``.

    Raised with the field ``item``; the store names the caller's field instead
    (``message_bubbles`` for a task, the state, the comment), so the API answers 422.
    """


def too_large(error: BaseException) -> bool:
    """Whether ``error`` is DynamoDB's refusal of an item over its size limit."""
    return (
        error_code(error) == "ValidationException"
        and "size" in str(error)
        and ("exceeded" in str(error))
    )


#: Error codes of a throttled request (botocore retries these with backoff first).
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TransactionInProgressException",
    }
)
_UNAVAILABLE_CODES = THROTTLING_CODES | {
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "LimitExceededException",
}
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_CREDENTIALS_HINT = (
    "give the app AWS credentials DynamoDB accepts (the standard chain: environment, "
    "shared config/credentials files, container or instance role)"
)
_PERMISSIONS_HINT = (
    "grant the app's role the DynamoDB actions the store needs on this table and its "
    "indexes (README: DynamoDB, IAM permissions)"
)


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def translate(error: BaseException, table: str) -> StoreUnavailable | None:
    """The package's error for ``error`` (raise it ``from error``), or None to re-raise it.

    ``table`` is named in the message (``dynamodb table <name> at <endpoint>``).
    """
    reason = _reason(error)
    code = error_code(error)
    if isinstance(
        error,
        boto.NoCredentialsError
        | boto.PartialCredentialsError
        | boto.CredentialRetrievalError
        | boto.TokenRetrievalError,
    ):
        return StoreMisconfigured(f"{table}: {reason}; {_CREDENTIALS_HINT}")
    if isinstance(error, boto.NoRegionError):
        return StoreMisconfigured(
            f"{table}: {reason}; set session_service.region (SESSION_DYNAMODB_REGION) "
            "or AWS_REGION / AWS_DEFAULT_REGION"
        )
    if code in _CREDENTIAL_CODES:
        return StoreMisconfigured(f"{table}: {reason}; {_CREDENTIALS_HINT}")
    if code == "AccessDeniedException":
        return StoreMisconfigured(f"{table}: {reason}; {_PERMISSIONS_HINT}")
    if code == "ResourceNotFoundException":
        return StoreMisconfigured(
            f"{table}: {reason}; create the table with `agentsession migrate` or fix "
            "session_service.table_name (SESSION_DYNAMODB_TABLE)"
        )
    if code in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"{table}: {reason}")
    if isinstance(error, boto.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if isinstance(status, int) and status >= 500:
            return StoreUnavailable(f"{table}: {reason}")
        return None
    if isinstance(
        error,
        boto.EndpointConnectionError
        | boto.ConnectionError
        | boto.HTTPClientError
        | aiohttp.ClientError
        | OSError
        | asyncio.TimeoutError,
    ):
        return StoreUnavailable(f"{table}: {reason}")
    return None
