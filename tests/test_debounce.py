"""The debouncer: leading edge after quiet, coalescing bursts, the maximum delay."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness.waiting import running_task
from xds_server.debounce import Debouncer


class Recorder:
    def __init__(self) -> None:
        self.runs: list[float] = []
        self.event = asyncio.Event()

    async def __call__(self) -> None:
        self.runs.append(asyncio.get_running_loop().time())
        self.event.set()

    async def wait_runs(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.runs) < n:
                self.event.clear()
                await self.event.wait()


async def test_a_lone_change_runs_at_once_not_after_the_quiet_period() -> None:
    rec = Recorder()
    # A quiet period far longer than the test: only the leading edge can make it pass.
    d = Debouncer(rec, quiet=30, max_delay=60)
    async with running_task(d.run()):
        d.notify()
        await rec.wait_runs(1, timeout=5)


async def test_a_burst_after_the_leading_edge_is_coalesced_into_one_run() -> None:
    rec = Recorder()
    d = Debouncer(rec, quiet=0.3, max_delay=10)
    async with running_task(d.run()):
        d.notify()
        await rec.wait_runs(1)
        for _ in range(20):
            d.notify()
            await asyncio.sleep(0.01)
        await rec.wait_runs(2)
        await asyncio.sleep(0.6)
        assert len(rec.runs) == 2
        assert d.runs == 2


async def test_changes_that_never_stop_are_pushed_at_the_maximum_delay() -> None:
    rec = Recorder()
    d = Debouncer(rec, quiet=0.2, max_delay=0.5)
    async with running_task(d.run()):
        d.notify()
        await rec.wait_runs(1)
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.6
        while loop.time() < end:  # a change every 50 ms: never quiet for 200 ms
            d.notify()
            await asyncio.sleep(0.05)
        # Without the maximum delay only the leading run would have happened.
        assert len(rec.runs) >= 3


async def test_a_failing_rebuild_does_not_stop_the_debouncer() -> None:
    calls = 0
    done = asyncio.Event()

    async def action() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        done.set()

    d = Debouncer(action, quiet=0.05, max_delay=0.2)
    async with running_task(d.run()):
        d.notify()
        await asyncio.sleep(0.1)
        d.notify()
        async with asyncio.timeout(5):
            await done.wait()


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Debouncer(Recorder(), quiet=-1)
