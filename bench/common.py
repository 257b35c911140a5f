"""What the benchmarks share: versions, the command line, options, the markdown file."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
from pathlib import Path


def version_of(dist: str) -> str:
    """The installed version of ``dist``, or ``not installed``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """How this benchmark was run, for the report."""
    return shlex.join(["python", *sys.argv])


def positive_int(value: str) -> int:
    """An argparse type: an int of at least 1 (``100_000`` allowed)."""
    number = int(value.replace("_", ""))
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def write_section(path: Path, title: str, section: str) -> None:
    """Create ``path`` or replace/append the section headed ``title``, keeping the rest.

    A section runs from its ``## `` title to the next ``## `` heading (or the end).
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start = text.find(title + "\n")
    if start == -1:
        prefix = text.rstrip("\n") + "\n\n" if text.strip() else ""
        new_text = prefix + section
    else:
        end = text.find("\n## ", start + len(title))
        tail = text[end + 1 :] if end != -1 else ""
        new_text = text[:start] + section + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_text, encoding="utf-8")
