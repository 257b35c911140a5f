"""The example chat gateway: FastAPI, the middleware, the HTTP API and a page.

Run it with ``python -m example_app`` from a checkout. ``app.create_app()`` builds it;
``agent`` holds the stand-in agent; ``static/`` holds the page.
"""
