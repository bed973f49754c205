"""What every harness server, loop and client shares: `with` starts and stops it, one
way to stop a child process, and an exit-time safety net for the processes a crashed
test left running."""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
from typing import Any, Protocol, Self


class Stoppable(Protocol):
    def stop(self) -> Any: ...


class StartStop:
    """``with thing:`` is ``thing.start()`` ... ``thing.stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Leftovers:
    """The live processes of one kind, stopped at interpreter exit if a test forgot them."""

    def __init__(self) -> None:
        self.live: set[Stoppable] = set()
        atexit.register(self.stop_all)

    def add(self, item: Stoppable) -> None:
        self.live.add(item)

    def discard(self, item: Stoppable) -> None:
        self.live.discard(item)

    def stop_all(self) -> None:
        for item in list(self.live):
            with contextlib.suppress(Exception):
                item.stop()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
