"""One app instance's retention scheduler in a process of its own (multi-instance tests).

``python -m tests.retention_worker URL LOG [--batch-size N] [--interval-hours H]
[--pause RATIO] [--lease-ttl S]`` prunes chat tasks older than a day. Every record of
the ``agentsession.retention`` logger is appended to LOG as ``<epoch s> <pid>
<message>``: the run log the tests read. SIGTERM stops it cleanly; SIGKILL is a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time

from agentsession.config import RetentionConfig, ServiceConfig
from agentsession.retention import RetentionScheduler
from agentsession.service import SessionService


class RunLog(logging.Handler):
    """Appends each record, with its wall-clock time and this pid, to a file."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.created:.6f} {os.getpid()} {record.getMessage()}\n"
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("log")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--interval-hours", type=float, default=0.0002)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    args = parser.parse_args()

    logger = logging.getLogger("agentsession.retention")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(RunLog(args.log))
    retention = RetentionConfig(
        task_retention_days=1,
        feedback_retention_days=0,
        session_retention_days=0,
        cleanup_interval_hours=args.interval_hours,
        batch_size=args.batch_size,
    )
    service = SessionService.from_config(ServiceConfig(type="sql", database_url=args.url))
    scheduler = RetentionScheduler(
        service, retention, startup_jitter=0, lease_ttl=args.lease_ttl, pause=args.pause
    )
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    async with service:
        await scheduler.start()
        print("ready", time.time(), flush=True)
        await stopped.wait()
        await scheduler.stop()


if __name__ == "__main__":
    asyncio.run(main())
