"""A development secret for the example app: created once, reused, never in the library."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger("example_app")


def ensure_dev_secret(directory: Path) -> None:
    """Set SESSION_SECRET_KEY from ``directory/secret`` (mode 0600), creating it if needed."""
    if os.environ.get("SESSION_SECRET_KEY"):
        return
    path = directory / "secret"
    if path.exists():
        key = path.read_text().strip()
        logger.warning("SESSION_SECRET_KEY is unset: using the development secret in %s", path)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        logger.warning("SESSION_SECRET_KEY is unset: created a development secret in %s", path)
    os.environ["SESSION_SECRET_KEY"] = key
