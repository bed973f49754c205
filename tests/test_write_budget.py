"""The budget of response bytes in flight across streams (xds_server.write_budget):
bounded, first come first served, and a write that never ends holds it only briefly."""

from __future__ import annotations

import asyncio

import pytest

from xds_server.write_budget import WriteBudget

pytestmark = pytest.mark.timeout(10)


async def _through(budget: WriteBudget, name: str, log: list[str], size: int) -> None:
    woken = await budget.turn()
    log.append(name)
    charge = budget.charge(size)
    budget.pass_on(woken)
    assert charge is not None
    await asyncio.sleep(0.05)
    charge.release()


async def test_streams_pass_in_order_and_the_budget_bounds_what_is_in_flight() -> None:
    budget = WriteBudget(limit=100, hold=5.0, charge_from=1)
    log: list[str] = []
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, budget.used)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(_through(budget, f"s{i}", log, 60) for i in range(6)))
    watcher.cancel()
    assert log == [f"s{i}" for i in range(6)]
    # Two 60-byte writes at most: the second was let in while 60 < 100 were charged.
    assert peak == 120
    assert budget.used == 0 and budget.waiting == 0


async def test_a_write_that_never_ends_holds_the_budget_only_for_the_hold_time() -> None:
    budget = WriteBudget(limit=100, hold=0.1, charge_from=1)
    await budget.turn()
    stuck = budget.charge(500)  # a proxy that stopped reading: never released by its write
    budget.pass_on()
    assert stuck is not None and not budget.open
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(budget.turn(), 2.0)
    assert loop.time() - t0 >= 0.09
    assert budget.used == 0
    stuck.release()  # its write ends later: nothing is released twice
    assert budget.used == 0


async def test_small_writes_are_not_charged_and_a_zero_limit_turns_it_off() -> None:
    assert WriteBudget(limit=100, charge_from=1024).charge(1000) is None
    off = WriteBudget(limit=0)
    assert off.charge(10**9) is None and off.open


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    budget = WriteBudget(limit=10, hold=5.0, charge_from=1)
    await budget.turn()
    first = budget.charge(10)
    budget.pass_on()
    assert first is not None
    cancelled = asyncio.create_task(budget.turn())
    later = asyncio.create_task(budget.turn())
    await asyncio.sleep(0)
    cancelled.cancel()
    first.release()
    await asyncio.wait_for(later, 1.0)
    assert cancelled.cancelled()
