"""The debouncer between catalog changes and rebuilding resources (DESIGN §5).

A lone change after a quiet period is acted on at once (leading edge), so a single
registry edit reaches proxies in milliseconds. Changes that follow it are coalesced:
the next rebuild runs when no change has arrived for `quiet` seconds, or `max_delay`
seconds after the first pending change, whichever comes first — a registry that
never stops changing still gets pushed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from xds_server import metrics

log = logging.getLogger(__name__)


class Debouncer:
    def __init__(
        self,
        action: Callable[[], Awaitable[None]],
        *,
        quiet: float = 0.1,
        max_delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if quiet < 0 or max_delay < 0:
            raise ValueError("debounce quiet period and maximum delay must not be negative")
        self._action = action
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self._clock = clock
        self._wake = asyncio.Event()
        self._first_pending: float | None = None
        self._last_event = 0.0
        self._last_done: float | None = None
        self.runs = 0

    def notify(self) -> None:
        """A change happened (synchronous; safe to call from any loop callback)."""
        metrics.DEBOUNCE_EVENTS.inc()
        now = self._clock()
        self._last_event = now
        if self._first_pending is None:
            self._first_pending = now
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._first_pending is None:
                continue
            now = self._clock()
            idle = self._last_done is None or now - self._last_done >= self.quiet
            if idle and now - self._first_pending < self.quiet:
                trigger = "leading"
            else:
                trigger = await self._settle()
            self._first_pending = None
            metrics.DEBOUNCE_PUSHES.labels(trigger).inc()
            self.runs += 1
            try:
                await self._action()
            except Exception:  # the next change retries; the loop must survive
                log.exception("rebuild after a registry change failed")
            self._last_done = self._clock()

    async def _settle(self) -> str:
        """Wait until changes stop for `quiet` or `max_delay` has passed; say which."""
        while True:
            assert self._first_pending is not None
            quiet_at = self._last_event + self.quiet
            max_at = self._first_pending + self.max_delay
            now = self._clock()
            if now >= max_at:
                return "max_delay"
            if now >= quiet_at:
                return "quiet"
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), min(quiet_at, max_at) - now)
            except TimeoutError:
                pass
