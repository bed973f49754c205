"""The debouncer: leading edge after quiet, coalescing bursts, the maximum delay (DESIGN §5).

Every test runs on an event loop with virtual time, and the debouncer reads the same
clock, so each assertion names the exact instant a rebuild ran: nothing depends on
how busy the machine is. Durations are binary fractions (1/4, 1/32, ...), so the
sums are exact floats and compare with `==`.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.harness.waiting import running_task
from xds_server import metrics
from xds_server.debounce import Debouncer

QUIET = 1 / 4
MAX_DELAY = 1.0
TRIGGERS = ("leading", "quiet", "max_delay")


class _VirtualTimeSelector(selectors.DefaultSelector):
    """Never blocks: where the loop would wait `timeout` seconds, virtual time jumps by it.

    Time only moves when no callback is ready, so everything due at an instant runs
    at that instant, however long it takes in real time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)  # the loop's own wake-up pipe, should a thread use it
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Nothing is ready and no timer is set: a real loop would hang here.
            raise RuntimeError("virtual-time loop: every task waits and no timer is set")
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualTimeSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def in_virtual_time(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a VirtualTimeLoop (virtual time starts at 0)."""

    @functools.wraps(test)
    def run() -> None:
        loop = VirtualTimeLoop()
        try:
            loop.run_until_complete(test())
        finally:
            loop.close()

    return run


async def sleep_until(instant: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(instant - loop.time())


def debouncer(action: Callable[[], Coroutine[Any, Any, None]]) -> Debouncer:
    return Debouncer(
        action, quiet=QUIET, max_delay=MAX_DELAY, clock=asyncio.get_running_loop().time
    )


class Recorder:
    """The debouncer's action: records the (virtual) instant of each rebuild."""

    def __init__(self) -> None:
        self.runs: list[float] = []

    async def __call__(self) -> None:
        self.runs.append(asyncio.get_running_loop().time())


def triggers() -> dict[str, float]:
    return {t: metrics.DEBOUNCE_PUSHES.labels(t)._value.get() for t in TRIGGERS}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    """Rebuilds per trigger since `before` (the counters are process-wide)."""
    now = triggers()
    return {t: now[t] - before[t] for t in TRIGGERS if now[t] != before[t]}


@in_virtual_time
async def test_a_lone_change_runs_at_once_not_after_the_quiet_period() -> None:
    rec, before = Recorder(), triggers()
    d = debouncer(rec)
    async with running_task(d.run()):
        await sleep_until(2.0)
        d.notify()
        await sleep_until(2.0 + QUIET / 2)
        assert rec.runs == [2.0]  # at the instant of the change, not QUIET later
        # A quiet period after that rebuild, a lone change is again acted on at once.
        await sleep_until(3.0)
        d.notify()
        await sleep_until(10.0)
    assert rec.runs == [2.0, 3.0]
    assert counted_since(before) == {"leading": 2}


@in_virtual_time
async def test_a_change_soon_after_a_rebuild_waits_for_the_quiet_period() -> None:
    rec, before = Recorder(), triggers()
    d = debouncer(rec)
    async with running_task(d.run()):
        d.notify()
        await sleep_until(1 / 16)
        d.notify()  # within QUIET of the last rebuild: not a leading edge
        await sleep_until(10.0)
    assert rec.runs == [0.0, 1 / 16 + QUIET]
    assert counted_since(before) == {"leading": 1, "quiet": 1}


@in_virtual_time
async def test_a_burst_after_the_leading_edge_is_coalesced_into_one_run() -> None:
    rec, before = Recorder(), triggers()
    d = debouncer(rec)
    async with running_task(d.run()):
        d.notify()
        # 20 changes 1/32 s apart, each within QUIET of the one before it.
        for k in range(1, 21):
            await sleep_until(k / 32)
            d.notify()
        await sleep_until(10.0)
    # One rebuild for the burst, QUIET after its last change (20/32 s), well before
    # MAX_DELAY after its first.
    assert rec.runs == [0.0, 20 / 32 + QUIET]
    assert d.runs == 2
    assert counted_since(before) == {"leading": 1, "quiet": 1}


@in_virtual_time
async def test_changes_that_never_stop_are_pushed_at_the_maximum_delay() -> None:
    rec, before = Recorder(), triggers()
    d = debouncer(rec)
    async with running_task(d.run()):
        d.notify()
        # A change every 1/8 s (never quiet for 1/4 s) from 1/32 s to 2 29/32 s.
        for k in range(24):
            await sleep_until(1 / 32 + k / 8)
            d.notify()
        await sleep_until(10.0)
    assert rec.runs == [
        0.0,  # leading edge
        1 / 32 + MAX_DELAY,  # MAX_DELAY after the first change pending since then
        1 / 32 + 9 / 8 + MAX_DELAY,  # the first change after that rebuild + MAX_DELAY
        1 / 32 + 23 / 8 + QUIET,  # the changes stopped: QUIET after the last one
    ]
    assert counted_since(before) == {"leading": 1, "max_delay": 2, "quiet": 1}


@in_virtual_time
async def test_a_change_during_a_rebuild_gets_a_rebuild_after_it() -> None:
    started: list[float] = []

    async def slow_rebuild() -> None:
        started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(1 / 2)

    d = debouncer(slow_rebuild)
    async with running_task(d.run()):
        d.notify()
        await sleep_until(1 / 8)
        d.notify()  # while the first rebuild runs: it may not have seen this change
        await sleep_until(10.0)
    # The change has been quiet for QUIET by the time the first rebuild ends.
    assert started == [0.0, 1 / 2]


@in_virtual_time
async def test_a_failing_rebuild_does_not_stop_the_debouncer() -> None:
    calls: list[float] = []

    async def action() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise RuntimeError("boom")

    d = debouncer(action)
    async with running_task(d.run()):  # also checks the task did not die
        d.notify()
        await sleep_until(1.0)
        d.notify()
        await sleep_until(10.0)
    assert calls == [0.0, 1.0]


def test_the_virtual_time_loop_fails_where_a_real_one_would_hang() -> None:
    loop = VirtualTimeLoop()
    try:
        stuck = loop.create_task(asyncio.Event().wait())
        with pytest.raises(RuntimeError, match="no timer is set"):
            loop.run_until_complete(stuck)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(stuck)
    finally:
        loop.close()


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Debouncer(Recorder(), quiet=-1)
