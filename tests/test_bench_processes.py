"""Several benchmark server processes on one port (`bench.server_group`): SO_REUSEPORT
lets them share the port only when asked, the kernel hands each a share of the
connections, they serve identical content-hash versions, and their replies merge into
one (a difference in versions is an error, not an average)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from bench import common, fixtures
from bench.server_group import ServerGroup, merge
from tests.xds_util import CDS, cluster
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer

pytestmark = pytest.mark.timeout(60)

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _stats(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "rss": 100,
        "peak_rss": 200,
        "streams": 3,
        "cpu_user": 1.0,
        "cpu_system": 0.5,
        "gc_pause_total_s": 0.01,
        "gc_pause_max_s": 0.002,
        "gc_pause_max_since_mark_s": 0.001,
        "gc_collections": [1, 2, 3],
        "gc_pause_max_by_generation_ms": [0.1, 0.2, 0.3],
        "time": 10.0,
        "versions": {"clusters": "a", "snapshot": "s"},
    }
    return {**base, **kw}


def test_merge_sums_what_adds_up_and_keeps_the_longest_pause() -> None:
    m = merge(
        [
            _stats(),
            _stats(
                rss=50, streams=7, gc_pause_max_s=0.009, gc_pause_max_by_generation_ms=[1, 0, 0]
            ),
        ]
    )
    assert (m["rss"], m["streams"], m["streams_each"]) == (150, 10, [3, 7])
    assert m["cpu_user"] + m["cpu_system"] == pytest.approx(3.0)
    assert m["gc_pause_max_s"] == 0.009
    assert m["gc_collections"] == [2, 4, 6]
    assert m["gc_pause_max_by_generation_ms"] == [1, 0.2, 0.3]


def test_merge_rejects_processes_serving_different_versions() -> None:
    with pytest.raises(common.BenchError, match="differ in versions"):
        merge([_stats(), _stats(versions={"clusters": "b", "snapshot": "s"})])


def _server(port: int, reuseport: bool) -> XdsServer:
    cache = SnapshotCache()
    cache.set_snapshot("g", {CDS: [cluster("a")]})
    options = ServerOptions(address=f"127.0.0.1:{port}", shutdown_grace=0.5, so_reuseport=reuseport)
    return XdsServer(cache, options=options)


async def test_a_second_server_shares_the_port_only_with_so_reuseport() -> None:
    first = _server(0, reuseport=False)
    port = await first.start()
    try:
        # The default: a second server on a busy port fails instead of sharing it.
        second = _server(port, reuseport=False)
        with pytest.raises((OSError, RuntimeError)):
            try:
                await second.start()
            finally:
                await second.stop(grace=0.5)  # if it did start: a server left would hang
    finally:
        await first.stop(grace=0.5)
    a, b = _server(0, reuseport=True), _server(0, reuseport=True)
    port = await a.start()
    try:
        b.options.address = f"127.0.0.1:{port}"
        assert await b.start() == port
        await b.stop(grace=0.5)
    finally:
        await a.stop(grace=0.5)


@contextlib.asynccontextmanager
async def _cds_stream(port: int) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
    """A CDS request on a channel of its own (its own TCP connection, as a proxy's) and
    the first response; the stream stays open until the block ends."""
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    done = asyncio.Event()
    node = base_pb2.Node(id="t", cluster=fixtures.GROUP)

    async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(node=node, type_url=CDS)
        await done.wait()

    call = channel.stream_stream(
        ADS,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )(requests())
    try:
        yield await asyncio.wait_for(call.read(), 10.0)
    finally:
        done.set()
        call.cancel()
        await channel.close()


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    with open(tmp_path / "server.log", "wb") as log:
        yield log


async def test_server_processes_share_the_connections_and_serve_identical_versions(
    server_log: IO[bytes],
) -> None:
    group = ServerGroup(2, 5, 2, server_log)
    try:
        ready = await asyncio.to_thread(group.wait_ready, 30.0)
        assert ready["pids"][0] != ready["pids"][1]
        versions: set[str] = set()
        async with contextlib.AsyncExitStack() as streams:
            # Connections land on a process by a hash of their addresses: open them
            # until each process holds one (all 40 on one: a chance of 2**-39).
            for _ in range(40):
                response = await streams.enter_async_context(_cds_stream(group.port))
                versions.add(response.version_info)
                stats = await asyncio.to_thread(group.request, {"cmd": "stats"})
                if min(stats["streams_each"]) > 0:
                    break
            assert min(stats["streams_each"]) > 0, stats["streams_each"]
        # Both processes answered, with one version between them.
        assert len(versions) == 1 and versions != {""}
        assert versions == {ready["versions"]["clusters"]}
        # A change applied by both: still one version (merge raises otherwise).
        changed = await asyncio.to_thread(
            group.request, {"cmd": "change", "cluster": 1, "generation": 1}
        )
        assert changed["changed"]
        assert changed["versions"]["endpoints"] != ready["versions"]["endpoints"]
    finally:
        await asyncio.to_thread(group.close)
