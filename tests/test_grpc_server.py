"""Transport tests over real gRPC on loopback: bad input, isolation, shutdown, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.ads_client import AdsClient
from tests.harness.waiting import async_wait_for
from tests.xds_util import CDS, EDS, NODE, cla, cluster
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def running_server(**options: Any) -> AsyncIterator[XdsServer]:
    cache = SnapshotCache()
    cache.set_snapshot("g", {CDS: [cluster("a")], EDS: [cla("a")]})
    srv = XdsServer(cache, options=ServerOptions(address="127.0.0.1:0", **options))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0.5)


@pytest.fixture
async def server() -> AsyncIterator[XdsServer]:
    async with running_server(shutdown_grace=1.0) as srv:
        yield srv


async def _healthy_client(srv: XdsServer) -> AdsClient:
    c = AdsClient(srv.port or 0)
    await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
    resp = await c.recv()
    assert resp.type_url == CDS
    await c.send(
        discovery_pb2.DiscoveryRequest(
            type_url=CDS, response_nonce=resp.nonce, version_info=resp.version_info
        )
    )
    return c


@pytest.mark.parametrize(
    "request_kw, detail",
    [
        ({"node": NODE}, "type_url is required"),
        ({"node": NODE, "type_url": "type.googleapis.com/bogus.Type"}, "unknown resource type"),
        ({"type_url": CDS}, "must carry the node"),
    ],
)
async def test_bad_requests_end_only_their_stream_with_invalid_argument(
    server: XdsServer,
    request_kw: dict[str, object],
    detail: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = await _healthy_client(server)
    bad = AdsClient(server.port or 0)
    caplog.set_level(logging.WARNING, logger="xds_server")
    await bad.send(discovery_pb2.DiscoveryRequest(**request_kw))  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bad.recv()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (e.value.details() or "")
    # Logged once, naming the node when it is known.
    lines = [r.getMessage() for r in caplog.records if "ending" in r.getMessage()]
    assert len(lines) == 1 and detail in lines[0]
    # The healthy stream still gets updates.
    server.cache.set_snapshot("g", {CDS: [cluster("a"), cluster("b")]})
    resp = await good.recv()
    assert len(resp.resources) == 2
    await bad.close()
    await good.close()


async def test_client_that_never_acks_does_not_affect_others(server: XdsServer) -> None:
    silent = AdsClient(server.port or 0)
    await silent.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
    first = await silent.recv()  # and never ACKs
    good = await _healthy_client(server)
    for t in range(2, 8):
        server.cache.set_snapshot("g", {CDS: [cluster("a", timeout=float(t))]})
        resp = await good.recv()
        await good.send(
            discovery_pb2.DiscoveryRequest(
                type_url=CDS, response_nonce=resp.nonce, version_info=resp.version_info
            )
        )
    # The silent client holds one pending update (bounded), nothing queued.
    silent_status = next(p for p in server.registry.all() if p.types[CDS].acked_version == "")
    assert silent_status.types[CDS].sent_nonce == first.nonce
    await silent.close()
    await good.close()


async def test_client_disconnecting_mid_stream_is_cleaned_up(server: XdsServer) -> None:
    c = AdsClient(server.port or 0)
    await c.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
    await c.recv()
    assert len(server.registry) == 1
    c.call.cancel()
    await c.channel.close()
    await async_wait_for(
        lambda: len(server.registry) == 0 and server.stream_count == 0,
        timeout=5,
        message="the cancelled stream is removed from the registry and the stream count",
    )
    # The server still serves new streams.
    good = await _healthy_client(server)
    await good.close()


async def test_graceful_shutdown_ends_streams_with_unavailable() -> None:
    async with running_server() as srv:
        c = await _healthy_client(srv)
        await srv.stop(grace=2.0)
        assert await c.expect_status() == grpc.StatusCode.UNAVAILABLE
        await c.close()


async def test_new_stream_rate_limit_answers_resource_exhausted() -> None:
    async with running_server(new_streams_per_second=0.001, new_streams_burst=1) as srv:
        first = await _healthy_client(srv)
        second = AdsClient(srv.port or 0)
        await second.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await second.recv()
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await first.close()
        await second.close()


async def test_max_connection_age_makes_clients_reconnect() -> None:
    async with running_server(max_connection_age=0.5, max_connection_age_grace=0.5) as srv:
        c = await _healthy_client(srv)
        code = await c.expect_status(timeout=10)
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        await c.close()


async def test_delta_stream_over_grpc(server: XdsServer) -> None:
    c = AdsClient(server.port or 0, delta=True)
    await c.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=CDS))
    resp = await c.recv()
    assert [r.name for r in resp.resources] == ["a"]
    await c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, response_nonce=resp.nonce))
    await c.send(
        discovery_pb2.DeltaDiscoveryRequest(type_url=EDS, resource_names_subscribe=["a", "missing"])
    )
    resp = await c.recv()
    assert [r.name for r in resp.resources] == ["a"]
    assert list(resp.removed_resources) == ["missing"]
    await c.close()


async def test_per_type_services_serve_their_type_sotw_and_delta(server: XdsServer) -> None:
    from envoy.service.cluster.v3 import cds_pb2_grpc
    from envoy.service.endpoint.v3 import eds_pb2_grpc

    release = asyncio.Event()

    async def keep_open(first: Any) -> AsyncIterator[Any]:
        yield first
        await release.wait()  # like Envoy: never half-close

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        cds = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters(
            keep_open(discovery_pb2.DiscoveryRequest(node=NODE))  # type_url filled in
        )
        resp = await asyncio.wait_for(cds.read(), 5)
        assert resp.type_url == CDS and len(resp.resources) == 1
        eds = eds_pb2_grpc.EndpointDiscoveryServiceStub(channel).DeltaEndpoints(
            keep_open(
                discovery_pb2.DeltaDiscoveryRequest(node=NODE, resource_names_subscribe=["a"])
            )
        )
        dresp = await asyncio.wait_for(eds.read(), 5)
        assert dresp.type_url == EDS and [r.name for r in dresp.resources] == ["a"]
        kinds = sorted(p.kind for p in server.registry.all())
        assert kinds == ["clusters-sotw", "endpoints-delta"]
        release.set()
        cds.cancel()
        eds.cancel()
    finally:
        await channel.close()


async def test_a_stream_waiting_for_the_write_budget_sends_the_latest_snapshot_only() -> None:
    # While the budget of bytes in flight is spent, a stream waits *before* deciding what
    # to send; two snapshots published meanwhile reach it as one response, the newer.
    async with running_server(max_bytes_in_flight=1024, write_hold=30.0) as srv:
        c = await _healthy_client(srv)
        woken = await srv.budget.turn()
        spent = srv.budget.charge(10**6)  # another stream's large write in progress
        srv.budget.pass_on(woken)
        assert spent is not None and not srv.budget.open
        srv.cache.set_snapshot("g", {CDS: [cluster("a", timeout=2.0)]})
        await asyncio.sleep(0.2)
        srv.cache.set_snapshot("g", {CDS: [cluster("a", timeout=3.0)]})
        latest = srv.cache.get("g").get(CDS).version
        with pytest.raises(TimeoutError):
            await c.recv(timeout=0.3)  # nothing while the budget is spent
        spent.release()
        resp = await c.recv()
        assert resp.version_info == latest
        assert resp.resources[0].value == srv.cache.get("g").get(CDS).resources["a"].body
        await c.close()
