"""Throughput of signed-cookie session middlewares on a minimal Starlette app.

What is measured
----------------
One process, one asyncio loop, no network and no HTTP client: the harness builds
ASGI ``scope`` dicts itself and calls ``await app(scope, receive, send)`` in a loop.
The request templates (scope + header list) are prebuilt once per (stack, kind); each
request only shallow-copies its template, so the harness overhead is small and the same
for every stack.

Stacks (each wraps its own instance of the same minimal Starlette app):

* ``bare``: no session middleware (only the ``untouched`` kind applies).
* ``starlette``: ``starlette.middleware.sessions.SessionMiddleware(app, secret_key=KEY)``.
* ``starsessions``: ``starsessions.SessionMiddleware(app, store=CookieStore(KEY))``; the
  read/write endpoints call ``await load_session(request)`` (starsessions' documented
  explicit loading; the ``untouched`` endpoint does not load the session).
* ``agentsession``: ``agentsession.SessionMiddleware(app, secret_key=KEY)``, used exactly
  like Starlette's. Skipped with a note if it does not import.

Request kinds (one route each, all return a tiny ``PlainTextResponse``):

* ``untouched``: the endpoint never touches ``request.session``; the request still
  carries a valid session cookie, as browsers always send it.
* ``read``: ``request.session.get("user")`` from a cookie holding
  ``{"user": "alice", "theme": "dark", "n": 1}``; nothing is modified.
* ``write``: ``request.session["n"] = request.session.get("n", 0) + 1``; every response
  carries ``Set-Cookie``.

Each stack gets its cookie from one real seeding request through that same stack (the
``Set-Cookie`` of the ``http.response.start`` message is replayed as the ``cookie``
request header). Every (stack, kind) is sanity-checked once before timing (status, body,
presence or absence of ``Set-Cookie``) and the run aborts if a check fails, so a broken
stack cannot look fast.

Timing: a warm-up, then ``--rounds`` rounds of ``--requests`` requests per (stack, kind),
interleaved round-robin (the order rotates every round) to spread machine noise. GC is
collected before and disabled during each timed round. The table reports the best round
(highest requests/s) for each cell.

Run it from the repository root::

    .venv/bin/python bench/middleware.py
    .venv/bin/python bench/middleware.py --requests 5000 --rounds 5 --markdown docs/benchmarks.md

``--markdown PATH`` writes (or replaces) the "## Middleware (bench/middleware.py)"
section of PATH with the same table, versions and command line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

from common import command_line, positive_int, publish, version_of

KEY = "bench-secret-key-0123456789abcdef"
SEED_SESSION: dict[str, object] = {"user": "alice", "theme": "dark", "n": 1}
KINDS: tuple[str, ...] = ("untouched", "read", "write")
PEERS: tuple[str, ...] = ("bare", "starlette", "starsessions")
OURS = "agentsession"
SECTION_TITLE = "## Middleware (bench/middleware.py)"
METHODS: dict[str, str] = {"seed": "POST", "untouched": "GET", "read": "GET", "write": "POST"}
STARSESSIONS_WIRING = (
    "`SessionMiddleware(app, store=CookieStore(secret_key=KEY))`, default options; "
    "the read/write endpoints call `await load_session(request)` (explicit loading as "
    "documented by starsessions), the untouched endpoint does not load the session"
)

Endpoint = Callable[[Request], Awaitable[PlainTextResponse]]
Headers = list[tuple[bytes, bytes]]


class BenchError(RuntimeError):
    """A stack failed its sanity check or could not be set up."""


# --------------------------------------------------------------------------- apps


async def untouched_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def read_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.session.get("user")))


async def write_endpoint(request: Request) -> PlainTextResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(str(request.session["n"]))


async def seed_endpoint(request: Request) -> PlainTextResponse:
    request.session.update(SEED_SESSION)
    return PlainTextResponse("seeded")


def build_app(endpoints: dict[str, Endpoint]) -> Starlette:
    """A minimal Starlette app with one plain route per kind (plus ``/seed``)."""
    routes = [
        Route(f"/{name}", endpoint, methods=[METHODS[name]]) for name, endpoint in endpoints.items()
    ]
    return Starlette(routes=routes)


def plain_endpoints() -> dict[str, Endpoint]:
    return {
        "seed": seed_endpoint,
        "untouched": untouched_endpoint,
        "read": read_endpoint,
        "write": write_endpoint,
    }


def starsessions_endpoints() -> dict[str, Endpoint]:
    """Same endpoints, but read/write/seed load the session first (starsessions API)."""
    from starsessions import load_session

    async def seed(request: Request) -> PlainTextResponse:
        await load_session(request)
        request.session.update(SEED_SESSION)
        return PlainTextResponse("seeded")

    async def read(request: Request) -> PlainTextResponse:
        await load_session(request)
        return PlainTextResponse(str(request.session.get("user")))

    async def write(request: Request) -> PlainTextResponse:
        await load_session(request)
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    return {"seed": seed, "untouched": untouched_endpoint, "read": read, "write": write}


# --------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    name: str
    app: ASGIApp
    kinds: tuple[str, ...] = KINDS
    #: starsessions has no modification tracking: a loaded, non-empty session is
    #: re-signed and re-sent on every response, including plain reads.
    reissues_on_read: bool = False
    cookie: bytes = b""


def bare_stack() -> Stack:
    return Stack("bare", build_app(plain_endpoints()), kinds=("untouched",))


def starlette_stack() -> Stack:
    from starlette.middleware.sessions import SessionMiddleware

    return Stack("starlette", SessionMiddleware(build_app(plain_endpoints()), secret_key=KEY))


def starsessions_stack() -> Stack:
    from starsessions import CookieStore, SessionMiddleware

    app = build_app(starsessions_endpoints())
    wrapped = SessionMiddleware(app, store=CookieStore(secret_key=KEY))
    return Stack("starsessions", wrapped, reissues_on_read=True)


def agentsession_stack() -> Stack:
    from agentsession import SessionMiddleware

    return Stack(OURS, SessionMiddleware(build_app(plain_endpoints()), secret_key=KEY))


def build_stacks() -> tuple[list[Stack], dict[str, str]]:
    """Build every stack; a stack that fails to import is skipped with a note."""
    builders: list[tuple[str, Callable[[], Stack]]] = [
        ("bare", bare_stack),
        ("starlette", starlette_stack),
        ("starsessions", starsessions_stack),
        (OURS, agentsession_stack),
    ]
    stacks: list[Stack] = []
    skipped: dict[str, str] = {}
    for name, builder in builders:
        try:
            stacks.append(builder())
        except ImportError as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"note: skipping {name} ({skipped[name]})", file=sys.stderr)
    return stacks, skipped


# --------------------------------------------------------------------------- ASGI harness

_REQUEST_MESSAGE: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return _REQUEST_MESSAGE


async def discard(message: Message) -> None:
    return None


def make_scope(path: str, method: str, cookie: bytes) -> Scope:
    headers: Headers = [
        (b"host", b"bench.local"),
        (b"user-agent", b"Mozilla/5.0 (bench/middleware.py)"),
        (b"accept", b"text/plain,*/*;q=0.8"),
        (b"accept-encoding", b"gzip, deflate, br"),
    ]
    if cookie:
        headers.append((b"cookie", cookie))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 54321),
        "server": ("bench.local", 80),
    }


@dataclass
class Captured:
    status: int = 0
    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def set_cookies(self) -> list[bytes]:
        return [value for name, value in self.headers if name.lower() == b"set-cookie"]


async def call_once(app: ASGIApp, scope: Scope) -> Captured:
    captured = Captured()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            captured.body += message.get("body", b"")

    await app(dict(scope), receive, send)
    return captured


async def seed_cookie(stack: Stack) -> bytes:
    """One real write through the stack; return the ``name=value`` pair it set."""
    response = await call_once(stack.app, make_scope("/seed", METHODS["seed"], b""))
    cookies = response.set_cookies()
    if response.status != 200 or len(cookies) != 1:
        raise BenchError(
            f"{stack.name}: seeding returned status {response.status} with "
            f"{len(cookies)} Set-Cookie headers (expected 200 and exactly 1)"
        )
    return cookies[0].split(b";", 1)[0].strip()


def expectation(stack: Stack, kind: str) -> tuple[bytes, bool]:
    """Expected response body and whether a Set-Cookie must (True) / must not be sent."""
    if kind == "untouched":
        return b"ok", False
    if kind == "read":
        return b"alice", stack.reissues_on_read
    return b"2", True


async def sanity_check(stack: Stack, kind: str, scope: Scope) -> None:
    response = await call_once(stack.app, scope)
    body, wants_cookie = expectation(stack, kind)
    has_cookie = bool(response.set_cookies())
    problems = []
    if response.status != 200:
        problems.append(f"status {response.status} != 200")
    if response.body != body:
        problems.append(f"body {response.body!r} != {body!r}")
    if has_cookie != wants_cookie:
        problems.append(f"Set-Cookie {'present' if has_cookie else 'absent'}")
    if problems:
        raise BenchError(f"sanity check failed for ({stack.name}, {kind}): {'; '.join(problems)}")


# --------------------------------------------------------------------------- timing


@dataclass
class Cell:
    stack: Stack
    kind: str
    scope: Scope
    rates: list[float] = field(default_factory=list)


async def run_batch(app: ASGIApp, scope: Scope, count: int) -> float:
    """Send ``count`` copies of ``scope`` through ``app``; return elapsed seconds."""
    start = time.perf_counter()
    for _ in range(count):
        await app(dict(scope), receive, discard)
    return time.perf_counter() - start


async def timed_round(cell: Cell, count: int) -> None:
    gc.collect()
    gc.disable()
    try:
        elapsed = await run_batch(cell.stack.app, cell.scope, count)
    finally:
        gc.enable()
    cell.rates.append(count / elapsed)


async def prepare_cells(stacks: Sequence[Stack]) -> list[Cell]:
    """Seed a cookie per stack, build request templates and sanity-check every cell."""
    by_name = {stack.name: stack for stack in stacks}
    for stack in stacks:
        if stack.name != "bare":
            stack.cookie = await seed_cookie(stack)
    if "bare" in by_name:
        # No session for bare; send a same-sized realistic cookie header anyway.
        donor = by_name.get("starlette") or next(iter(by_name.values()))
        by_name["bare"].cookie = donor.cookie
    cells = []
    for kind in KINDS:
        for stack in stacks:
            if kind in stack.kinds:
                scope = make_scope(f"/{kind}", METHODS[kind], stack.cookie)
                await sanity_check(stack, kind, scope)
                cells.append(Cell(stack, kind, scope))
    return cells


async def measure(stacks: Sequence[Stack], requests: int, rounds: int) -> list[Cell]:
    cells = await prepare_cells(stacks)
    warmup = max(200, requests // 5)
    for cell in cells:
        await run_batch(cell.stack.app, cell.scope, warmup)
    for round_index in range(rounds):
        shift = round_index % len(cells)
        for cell in cells[shift:] + cells[:shift]:
            await timed_round(cell, requests)
    return cells


# --------------------------------------------------------------------------- report


def ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None:
        return "n/a"
    return f"{ours / other:.2f}x"


def render_table(cells: Sequence[Cell], stack_names: Sequence[str]) -> str:
    best = {(cell.stack.name, cell.kind): max(cell.rates) for cell in cells}
    with_ours = OURS in stack_names
    header = ["kind", *stack_names]
    if with_ours:
        header += [f"ours/{peer}" for peer in PEERS if peer in stack_names]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|",
    ]
    for kind in KINDS:
        row = [kind]
        row += [f"{best[(n, kind)]:,.0f}" if (n, kind) in best else "n/a" for n in stack_names]
        if with_ours:
            ours = best.get((OURS, kind))
            row += [ratio(ours, best.get((peer, kind))) for peer in PEERS if peer in stack_names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def report_spread(cells: Sequence[Cell]) -> None:
    """Per-cell best/median/worst round on stderr, to judge the noise of a run."""
    for cell in cells:
        best, worst = max(cell.rates), min(cell.rates)
        print(
            f"{cell.stack.name:>12} {cell.kind:<9} best {best:>9,.0f}  "
            f"median {statistics.median(cell.rates):>9,.0f}  worst {worst:>9,.0f} req/s",
            file=sys.stderr,
        )


def environment_line(skipped: dict[str, str]) -> str:
    versions = ", ".join(
        f"{dist} {version_of(dist)}" + (" (not importable)" if dist in skipped else "")
        for dist in ("starlette", "starsessions", "itsdangerous", OURS)
    )
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), {versions}; "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs."
    )


def render_section(
    cells: Sequence[Cell], stacks: Sequence[Stack], skipped: dict[str, str], args: Args
) -> str:
    names = [stack.name for stack in stacks]
    notes = [
        f"Requests/s, best of {args.rounds} rounds of {args.requests:,} requests per "
        "(stack, kind), rounds interleaved round-robin; one process, ASGI app called "
        "directly (no network). Higher is better; `ours/X` = agentsession req/s ÷ X req/s.",
        "",
        render_table(cells, names),
        "",
        "- `bare` has no session, so only `untouched` applies; its request carries the "
        "same cookie header as the `starlette` stack.",
        f"- starsessions wiring: {STARSESSIONS_WIRING}.",
        "- starsessions has no modification tracking: on `read` it re-signs and re-sends "
        "the cookie (the sanity check expects that); the other stacks send no Set-Cookie "
        "on `read`.",
    ]
    notes += [f"- {name}: pending (not importable in this run)" for name in skipped]
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            "Command:",
            "",
            "```",
            command_line(),
            "```",
            "",
            *notes,
            "",
            f"Environment: {environment_line(skipped)}",
            "",
        ]
    )


# --------------------------------------------------------------------------- CLI


class Args(argparse.Namespace):
    requests: int
    rounds: int
    markdown: Path | None


def parse_args(argv: Sequence[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        description="Session middleware throughput on a minimal Starlette app (ASGI, no network)."
    )
    parser.add_argument(
        "--requests", type=positive_int, default=20_000, help="requests per round (default 20000)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=5, help="timed rounds per cell (default 5)"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the results as the '{SECTION_TITLE[3:]}' section of PATH",
    )
    return parser.parse_args(argv, namespace=Args())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stacks, skipped = build_stacks()
    try:
        cells = asyncio.run(measure(stacks, args.requests, args.rounds))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report_spread(cells)
    section = render_section(cells, stacks, skipped, args)
    publish(section, args.markdown, SECTION_TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
