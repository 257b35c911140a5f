"""The example FastAPI app: agentsession's middleware and a page that uses the session."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from agentsession import SessionMiddleware, get_client_id, load_config
from example_app.secret import ensure_dev_secret

STATE_DIR = Path(".agentsession")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentsession example</title></head>
<body><h1>agentsession</h1><p>Visits in this session: <b>{visits}</b></p>
<p>Client id: <code>{client}</code></p></body></html>"""


def create_app() -> FastAPI:
    """Build the app; the secret comes from SESSION_SECRET_KEY or a local dev file."""
    ensure_dev_secret(STATE_DIR)
    app = FastAPI(title="agentsession example")

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> str:
        visits = request.session.get("visits", 0) + 1
        request.session["visits"] = visits
        return PAGE.format(visits=visits, client=get_client_id(request))

    app.add_middleware(SessionMiddleware, config=load_config())
    return app
