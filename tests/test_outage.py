"""sources.base.Outage: one prober while a registry is down, every watch woken at once."""

from __future__ import annotations

import asyncio

import pytest

from sources.base import Backoff, Outage

pytestmark = pytest.mark.timeout(10)


async def test_one_prober_for_every_waiting_watch_and_all_wake_together() -> None:
    answers = [ConnectionError("refused"), ConnectionError("refused"), None]
    failed: list[BaseException] = []

    async def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    outage = Outage(Backoff(0.01, 0.02), probe, failed.append)
    waiters = [asyncio.create_task(outage.wait()) for _ in range(50)]
    done, _ = await asyncio.wait(waiters, timeout=5)
    assert len(done) == 50  # released together by one successful probe
    assert outage.probes == 3 and len(failed) == 2  # one probe per step, not one per watch
    assert outage.backoff.failures == 3  # a probe alone does not reset the backoff
    assert not outage.down


async def test_a_watch_that_gets_through_ends_the_outage_and_its_prober() -> None:
    async def probe() -> None:
        raise ConnectionError("refused")

    outage = Outage(Backoff(0.01, 0.02), probe)
    waiter = asyncio.create_task(outage.wait())
    await asyncio.sleep(0.1)
    assert outage.down and not waiter.done()
    outage.up()
    await asyncio.wait_for(waiter, 1)
    probes = outage.probes
    await asyncio.sleep(0.1)
    assert outage.probes == probes  # the prober is gone
    assert outage.backoff.failures == 0
