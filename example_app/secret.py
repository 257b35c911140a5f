"""A development secret for the example app: created once, reused, never in the library."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

logger = logging.getLogger("example_app")


def dev_secret(directory: Path) -> str:
    """The key in ``directory/secret``, created (mode 0600) on first use; logs which.

    Only for a developer's machine: a deployment sets ``SESSION_SECRET_KEY`` itself, the
    same on every instance, and the app then never calls this.
    """
    path = directory / "secret"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        logger.warning("SESSION_SECRET_KEY is unset: created a development secret in %s", path)
        return key
    if not key:
        raise SystemExit(f"{path} is empty: delete it to have a new development secret made")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        logger.warning("%s can be read by other users: chmod 600 it", path)
    logger.warning("SESSION_SECRET_KEY is unset: using the development secret in %s", path)
    return key
