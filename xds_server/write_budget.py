"""A budget of response bytes in flight across every stream, so a fan-out stays bounded.

gRPC copies each message it is given, and the copy lives until the transport has
written it. Pushing one 406 KB RouteConfiguration to 1,000 proxies at once therefore
held ~400 MB of copies (issue 12). Streams take turns instead:

* a stream waits for the budget to be open *before* it computes what to send, so what
  it sends after waiting is the latest snapshot, never one that went stale while it
  waited (DESIGN §4.13);
* a write of a large response is charged its size until it completes, or for at most
  `hold` seconds: a proxy that stops reading keeps its own copy in gRPC's buffers (one
  per type, §4.13) but not the others' turn;
* streams pass the gate in the order they arrived (FIFO), one woken at a time: the
  woken stream lets the next one through once it has charged what it writes, so
  releases that come together cannot let several waiters in before any has charged.

Small responses (an endpoint change) are not charged: they cost nothing to hold, and
the common push pays no bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class WriteBudget:
    """Bytes charged by writes in progress; `limit` <= 0 turns the budget off."""

    def __init__(self, limit: int, hold: float = 1.0, charge_from: int = 16 * 1024):
        self.limit = limit
        self.hold = hold
        self.charge_from = charge_from
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = False  # a waiter was let through and has not charged yet

    @property
    def open(self) -> bool:
        return self.limit <= 0 or self.used < self.limit

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def turn(self) -> bool:
        """Return when the caller may compute and charge its writes; it must then call
        `pass_on(woken)` with what this returned, once it has charged them (or found
        nothing to write). True if it had to wait."""
        if self.open and not self._waiters and not self._woken:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            if fut.done() and not fut.cancelled():
                self.pass_on(woken=True)  # it was this waiter's turn: give it on
            raise
        return True

    def pass_on(self, woken: bool = False) -> None:
        """Let the next waiter through if the budget is open and nobody let through
        before is still to charge; `woken`: the caller is the one let through."""
        if woken:
            self._woken = False
        elif self._woken:
            return
        while self._waiters and self.open:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken = True
                return

    def charge(self, size: int) -> _Charge | None:
        """Charge a write of `size` bytes; release the result when the write is done.
        None for a write too small to count."""
        if self.limit <= 0 or size < self.charge_from:
            return None
        self.used += size
        charge = _Charge(self, size)
        charge.timer = asyncio.get_running_loop().call_later(self.hold, charge.release)
        return charge


class _Charge:
    __slots__ = ("budget", "size", "timer")

    def __init__(self, budget: WriteBudget, size: int):
        self.budget = budget
        self.size = size
        self.timer: asyncio.TimerHandle | None = None

    def release(self) -> None:
        """Idempotent: the write's end or the hold's, whichever comes first."""
        if self.size:
            if self.timer is not None:
                self.timer.cancel()
            self.budget.used -= self.size
            self.size = 0
            self.budget.pass_on()
