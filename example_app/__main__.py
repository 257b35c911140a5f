"""``python -m example_app [--host 127.0.0.1] [--port 8000]``: serve the example app."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from example_app.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
