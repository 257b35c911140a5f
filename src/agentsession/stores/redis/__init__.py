"""The Redis backend: the Store contract on redis-py's asyncio client, one Lua script a call.

``store`` holds ``RedisStore`` (its docstring describes the key layout and the round
trips), ``scripts`` the Lua, ``keys`` the key names and sort-key encodings, and
``errors`` how redis-py's failures become ``StoreUnavailable``/``StoreMisconfigured``.
redis-py is optional (``pip install 'agentsession[redis]'``); without it, building a
``RedisStore`` raises ``ConfigError`` saying so.
"""

from agentsession.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
