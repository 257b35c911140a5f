"""The cookie layer: signed sessions for Starlette, standing alone.

``codec`` signs and verifies the value, ``session`` is ``request.session`` and the id
functions beside it, ``middleware`` is the pure-ASGI ``SessionMiddleware`` with its
lifespan handling, ``lifecycle`` the startup and shutdown hooks. Nothing here imports
the persistence layer at import time: ``SessionMiddleware`` reaches for
``agentsession.persistence`` only when an app asks for conversations.
"""
