"""``python -m example_app [--host 127.0.0.1] [--port 8000]``: serve the example chat app."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from example_app.app import create_app


def _port(text: str) -> int:
    """A TCP port number, or an error that argparse reports naming the option."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description="Serve the example chat gateway: the page at /, the API under /api/v1.",
        epilog=(
            "SESSION_DATABASE_URL picks the database (default: SQLite in "
            ".agentsession/example.db); SESSION_SECRET_KEY signs the cookies (default: a "
            "development secret kept in .agentsession/secret)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on (%(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up noise
    uvicorn.run(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
