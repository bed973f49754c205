"""What every harness server, loop and client shares: `with` starts and stops it, and an
exit-time safety net stops the processes a crashed test left running."""

from __future__ import annotations

import atexit
import contextlib
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
