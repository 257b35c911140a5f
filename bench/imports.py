"""What it costs to start using a session middleware: import it and build it, cookies only.

Each case runs in a fresh interpreter (``python -c ...``), interleaved round-robin with
the others for ``--rounds`` rounds. A case's cost is its median wall time minus the
median of a bare interpreter (``pass``) in the same run; the table also shows how many
modules the case loaded (``sys.modules``) and whether SQLAlchemy was among them.

Run: ``python bench/imports.py [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

KEY = "k" * 48
REPORT = "import sys, json; print(json.dumps([len(sys.modules), 'sqlalchemy' in sys.modules]))"
CASES = {
    "python (bare)": "pass",
    "starlette": (
        "from starlette.middleware.sessions import SessionMiddleware\n"
        f"SessionMiddleware(lambda s, r, se: None, secret_key={KEY!r})"
    ),
    "starsessions": (
        "from starsessions import CookieStore, SessionMiddleware\n"
        f"SessionMiddleware(lambda s, r, se: None, store=CookieStore({KEY!r}))"
    ),
    "agentsession": (
        "from agentsession import SessionMiddleware\n"
        f"SessionMiddleware(lambda s, r, se: None, secret_key={KEY!r})"
    ),
}


def run(code: str) -> tuple[float, int, bool]:
    """Wall seconds of one fresh interpreter running ``code``, its module count, SQLAlchemy."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},
    )
    elapsed = time.perf_counter() - started
    modules, sqlalchemy = json.loads(result.stdout.splitlines()[-1])
    return elapsed, int(modules), bool(sqlalchemy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each case (default 15)")
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in CASES}
    facts: dict[str, tuple[int, bool]] = {}
    for code in CASES.values():  # warm-up: the file cache, .pyc files
        run(code)
    for index in range(rounds):
        names = list(CASES)
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, modules, sqlalchemy = run(CASES[name])
            times[name].append(elapsed)
            facts[name] = (modules, sqlalchemy)
    bare = statistics.median(times["python (bare)"])
    ours = statistics.median(times["agentsession"]) - bare
    print(
        f"Import and construct, cookie settings only: median of {rounds} fresh interpreters, "
        "minus a bare interpreter's median; `ours/X` = agentsession's cost / X's.\n"
    )
    print("| case | wall ms | cost ms | modules | SQLAlchemy loaded | ours/X |")
    print("|---|---:|---:|---:|---|---:|")
    for name in CASES:
        median = statistics.median(times[name])
        cost = median - bare
        modules, sqlalchemy = facts[name]
        ratio = "" if name == "python (bare)" or cost <= 0 else f"{ours / cost:.2f}x"
        print(
            f"| {name} | {median * 1000:.0f} | {cost * 1000:.0f} | {modules} | "
            f"{'yes' if sqlalchemy else 'no'} | {ratio} |"
        )
    print(f"\nPython {sys.version.split()[0]}, {sys.platform}.")


if __name__ == "__main__":
    main()
