"""``python -m example_app [--host 127.0.0.1] [--port 8000]``: serve the example chat app."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from example_app.app import create_app


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return port


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up noise
    uvicorn.run(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
