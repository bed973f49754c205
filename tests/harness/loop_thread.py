"""An asyncio event loop on a daemon thread: how synchronous tests run async servers.

Tests that block on Envoy, HTTP and subprocesses cannot share a loop with the servers
they drive (the in-process xDS server, the admin server, the Consul and Kubernetes
emulators), so each such server gets a `LoopThread` and is driven through `run`/`call`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from tests.harness.lifecycle import StartStop

T = TypeVar("T")


class LoopThread(StartStop):
    """A new event loop running forever on a daemon thread until `stop`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def start(self) -> Self:
        self._thread.start()
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the loop; its result (or exception) here, within `timeout`."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run the plain function `fn` on the loop (for state only the loop may touch)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, join the thread and close the loop; safe to call twice."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()
