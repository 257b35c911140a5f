"""The example FastAPI app: the middleware, ``sessions_router()``, the agent and the page."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from agentsession import SessionMiddleware, install_error_handlers, load_config, sessions_router
from example_app.agent import REPLY_DELAY, agent_router
from example_app.secret import dev_secret

logger = logging.getLogger("example_app")

#: Where the development secret and the SQLite file live, relative to the working directory.
STATE_DIR: Final = Path(".agentsession")
STATIC_DIR: Final = Path(__file__).parent / "static"

#: The page loads nothing from anywhere else, and runs no inline script.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def create_app(
    state_dir: Path = STATE_DIR,
    *,
    env: Mapping[str, str] | None = None,
    reply_delay: float = REPLY_DELAY,
) -> FastAPI:
    """Build the app from the environment, filling in a dev secret and SQLite file if unset."""
    settings = dict(os.environ if env is None else env)
    if not settings.get("SESSION_SECRET_KEY"):
        settings["SESSION_SECRET_KEY"] = dev_secret(state_dir)
    if not (settings.get("SESSION_DATABASE_URL") or settings.get("WEB_UI_GATEWAY_DATABASE_URL")):
        state_dir.mkdir(parents=True, exist_ok=True)
        database = (state_dir / "example.db").resolve()
        settings["SESSION_DATABASE_URL"] = f"sqlite:///{database}"
        logger.info("SESSION_DATABASE_URL is unset: keeping conversations in %s", database)
    config = load_config(env=settings)

    # The docs page (Swagger UI) is served from the app itself, not from a CDN, so it
    # works offline and behind a strict firewall.
    app = FastAPIOffline(title="agentsession example", docs_url="/docs", redoc_url=None)
    app.include_router(sessions_router(), prefix="/api/v1")
    app.include_router(agent_router(reply_delay))
    # The agent's route raises the package's exceptions; these answer them (and any 404
    # or 405 under the two prefixes) in the API's error shape.
    install_error_handlers(app, prefix="/api/v1")
    install_error_handlers(app, prefix="/agent")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.add_middleware(SessionMiddleware, config=config)
    return app
