"""Controller rebuild cost for an endpoint-only change, in-process (no proxies, no I/O).

Fills a catalog with N services x M endpoints, builds one proxy group (`envoy`), then
changes one service's endpoints E times and times each `Controller.rebuild()`: the wall
time (worker thread included) and the time it held the event loop (measured by a
ticker that notes its longest gap between ticks).

    python -m bench.rebuild --services 5000 --endpoints 5 --edits 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from translators import ProxyGroup
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry


def entries(services: int, endpoints: int, edit: int) -> list[ServiceEntry]:
    """The catalog; `edit` moves service 7's endpoints to another port."""
    out = []
    for i in range(services):
        svc = Service(f"svc-{i:05d}", "bench", ports=(Port("http", 80),), source="bench")
        port = 8080 + (edit if i == 7 else 0)
        eps = tuple(
            Endpoint(
                f"10.{i // 250}.{i % 250}.{j + 1}",
                port,
                "http",
                locality=Locality(zone=f"z{j % 3}"),
            )
            for j in range(endpoints)
        )
        out.append(ServiceEntry(svc, eps))
    return out


async def run(services: int, endpoints: int, edits: int) -> None:
    catalog = Catalog()
    catalog.register("bench", "bench")
    cache = SnapshotCache()
    controller = Controller(catalog, cache)
    catalog.replace("bench", entries(services, endpoints, 0))
    await controller.snapshot_for(ProxyGroup().key)
    t0 = time.perf_counter()
    await controller.rebuild()
    print(f"first build: {(time.perf_counter() - t0) * 1000:.1f} ms")

    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    walls: list[float] = []
    held: list[float] = []
    for edit in range(1, edits + 1):
        catalog.replace("bench", entries(services, endpoints, edit))  # not timed
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        longest = 0.0
        t = time.perf_counter()
        await controller.rebuild()
        walls.append(time.perf_counter() - t)
        tick.cancel()
        held.append(longest)
    print(
        f"endpoint change → rebuilt: {ms(walls)} ms (median {statistics.median(walls) * 1000:.1f})"
    )
    print(f"longest event-loop hold per rebuild: {ms(held)} ms")


def ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.1f}" for v in values)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=5000)
    p.add_argument("--endpoints", type=int, default=5)
    p.add_argument("--edits", type=int, default=5)
    a = p.parse_args()
    asyncio.run(run(a.services, a.endpoints, a.edits))


if __name__ == "__main__":
    main()
