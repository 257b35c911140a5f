"""The DynamoDB backend: the Store contract in one DynamoDB table, on aiobotocore.

``store`` holds ``DynamoDBStore`` (its docstring lists the requests each call makes),
``layout`` the single-table layout (keys, sort keys, indexes), ``items`` records to
items and back, ``expressions`` the shared conditions, ``client`` the connection
(retries, transactions, batch deletes), ``retention`` the rules' batches, ``table``
the table's definition and ``migrate``, and ``errors`` how botocore's failures become
``StoreUnavailable``/``StoreMisconfigured``. aiobotocore is optional
(``pip install 'agentsession[dynamodb]'``); without it, building a ``DynamoDBStore``
raises ``ConfigError`` saying so.
"""

from agentsession.stores.dynamodb.store import DEFAULT_TABLE, DynamoDBStore

__all__ = ["DEFAULT_TABLE", "DynamoDBStore"]
