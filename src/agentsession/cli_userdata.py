"""The ``agentsession`` commands for one user's data: ``export-user``, ``import-user``,
``erase-user`` (subcommands of ``cli.py``; each works on SQL and Redis stores).

* ``export-user USER_ID [-o FILE]``: the export document (``agentsession.export``) to
  FILE or stdout, streamed.
* ``import-user FILE``: load a document, all or nothing (``-`` reads stdin).
* ``erase-user USER_ID [--yes]``: delete every row of the user in batches, then revoke
  all their sessions; asks for confirmation unless ``--yes``.

Long runs show a progress line on stderr (``--progress`` / ``--no-progress``; by
default when stderr is a terminal).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, BinaryIO, TextIO

from agentsession.config import AgentSessionConfig
from agentsession.errors import IdConflict, InvalidInput
from agentsession.service import SessionService

__all__ = ["COMMANDS", "add_commands"]


class Progress:
    """A one-line counter on stderr, redrawn at most ten times a second."""

    def __init__(self, what: str, unit: str, stream: TextIO | None) -> None:
        self.what, self.unit, self.stream = what, unit, stream
        self.started = self.drawn = time.monotonic()
        self.count = 0

    def update(self, count: int) -> None:
        self.count = count
        if self.stream is not None and time.monotonic() - self.drawn >= 0.1:
            self._draw()

    def close(self) -> None:
        if self.stream is not None:
            self._draw()
            self.stream.write("\n")

    def _draw(self) -> None:
        assert self.stream is not None
        self.drawn = time.monotonic()
        elapsed = self.drawn - self.started
        self.stream.write(f"\r{self.what}: {self.count:,} {self.unit} {elapsed:.1f} s")
        self.stream.flush()


def _progress_stream(args: argparse.Namespace) -> TextIO | None:
    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    return sys.stderr if wanted else None


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the three subcommands to ``commands`` (an argparse subparsers action)."""
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    export = commands.add_parser(
        "export-user", parents=[common, progress], help="write a user's data as a JSON document"
    )
    export.add_argument("user_id", metavar="USER_ID")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    load = commands.add_parser(
        "import-user",
        parents=[common],
        help="load a document export-user wrote (ids kept; a conflict loads nothing)",
    )
    load.add_argument("file", metavar="FILE", help="the document ('-': stdin)")
    erase = commands.add_parser(
        "erase-user",
        parents=[common, progress],
        help="delete every row of a user in batches, then log them out everywhere",
    )
    erase.add_argument("user_id", metavar="USER_ID")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")


async def export_user(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    progress = Progress("exported", "bytes", _progress_stream(args))
    async with SessionService.from_config(config) as service:
        if args.output is None:
            sink = sys.stdout.buffer
            await _copy(service, args.user_id, sink, progress)
        else:
            with _open_output(args.output) as sink:
                await _copy(service, args.user_id, sink, progress)
    progress.close()
    return 0


async def _copy(service: SessionService, user_id: str, sink: Any, progress: Progress) -> None:
    written = 0
    async for chunk in service.export_user(user_id):
        sink.write(chunk)
        written += len(chunk)
        progress.update(written)
    sink.flush()


async def import_user(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    raw = sys.stdin.buffer.read() if args.file == "-" else _read(args.file)
    async with SessionService.from_config(config) as service:
        try:
            counts = await service.import_user(raw)
        except IdConflict as error:
            print(f"agentsession: nothing imported: {error}", file=sys.stderr)
            return 1
        except InvalidInput as error:
            print(
                f"agentsession: nothing imported: the document is invalid: {error}", file=sys.stderr
            )
            return 2
    print(
        f"imported {counts.conversations} conversations, {counts.chat_tasks} chat tasks, "
        f"{counts.feedback} feedback"
    )
    return 0


def _open_output(path: str) -> BinaryIO:
    return open(path, "wb")


def _confirmed(user_id: str) -> bool:
    answer = input(f"Erase every row of user {user_id!r} and log them out? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _read(path: str) -> bytes:
    with open(path, "rb") as source:
        return source.read()


async def erase_user(config: AgentSessionConfig, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "agentsession: erase-user needs --yes when not run at a terminal", file=sys.stderr
            )
            return 2
        if not _confirmed(args.user_id):
            print("nothing erased")
            return 1
    progress = Progress("erased", "rows", _progress_stream(args))
    async with SessionService.from_config(config) as service:
        total = await service.erase_user(
            args.user_id,
            batch_size=config.data_retention.batch_size,
            keep_for=config.session.max_age,
            progress=progress.update,
        )
    progress.close()
    print(f"erased {total} rows of user {args.user_id!r}; their sessions are revoked")
    return 0


#: Command name -> handler, for ``cli.main``.
COMMANDS = {"export-user": export_user, "import-user": import_user, "erase-user": erase_user}
