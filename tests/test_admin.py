"""The admin HTTP server over real loopback HTTP: health, readiness, metrics, debug views."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2

from tests.harness.admin_state import GROUP, NACK_ERROR, OTHER, POLICIES, SOURCES, AdminState
from translators.resources import eds_cluster, load_assignment
from xds_server import admin, types
from xds_server.admin import envoy_json, parse_address
from xds_server.cache import SnapshotCache
from xds_server.model import Endpoint
from xds_server.snapshot import Snapshot

pytestmark = pytest.mark.timeout(30)


class Client:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, **params: str) -> tuple[int, str, str]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.session.get(self.base + path, params=params, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.text()

    async def json(self, path: str, status: int = 200, **params: str) -> Any:
        async with self.session.get(
            self.base + path, params=params, timeout=aiohttp.ClientTimeout(total=10)
        ) as r:
            assert r.status == status, await r.text()
            assert r.content_type == "application/json"
            return await r.json()


@pytest.fixture
def fx() -> Any:
    f = AdminState()
    f.connect()
    yield f
    f.disconnect()


@pytest.fixture
async def client(fx: AdminState) -> AsyncIterator[Client]:
    server = fx.server()
    port = await server.start()
    assert port > 0
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(session, port)
    finally:
        await server.stop()


async def test_healthz_and_index(client: Client) -> None:
    assert await client.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, _, text = await client.get("/")
    assert status == 200
    for route in ("/healthz", "/readyz", "/metrics", "/debug/snapshot", "/debug/proxies"):
        assert route in text
    status, _, _ = await client.get("/nope")
    assert status == 404


async def test_readyz_flips_when_reasons_clear(fx: AdminState, client: Client) -> None:
    fx.reasons.append("no snapshot built yet")
    status, _, text = await client.get("/readyz")
    assert status == 503
    assert text.splitlines() == ["source k8s has not synced yet", "no snapshot built yet"]
    verbose = await client.json("/readyz", 503, verbose="")
    assert verbose == {"ready": False, "reasons": fx.reasons}
    fx.reasons.clear()
    assert (await client.get("/readyz"))[::2] == (200, "ready\n")
    assert await client.json("/readyz", verbose="1") == {"ready": True, "reasons": []}


async def test_a_stale_source_is_a_warning_not_unreadiness(fx: AdminState, client: Client) -> None:
    fx.reasons.clear()
    fx.warnings.append("source consul (consul) is stale, serving its last good state: down")
    status, _, text = await client.get("/readyz")
    assert (status, text.splitlines()) == (200, ["ready", f"warning: {fx.warnings[0]}"])
    verbose = await client.json("/readyz", verbose="")
    assert verbose == {"ready": True, "reasons": [], "warnings": fx.warnings}


async def test_metrics(client: Client) -> None:
    status, ctype, text = await client.get("/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=")
    assert 'xds_connected_proxies{kind="ads-sotw"}' in text
    assert "# TYPE xds_nacks_total counter" in text


async def test_snapshot_default_group_in_push_order(fx: AdminState, client: Client) -> None:
    doc = await client.json("/debug/snapshot")
    assert doc["group"] == GROUP
    assert doc["versions"] == {
        "clusters": fx.version(types.CLUSTER),
        "endpoints": fx.version(types.ENDPOINT),
        "listeners": fx.version(types.LISTENER),
        "routes": fx.version(types.ROUTE),
    }
    assert [(r["type"], r["name"]) for r in doc["resources"]] == [
        ("clusters", "api"),
        ("clusters", "backend"),
        ("endpoints", "api"),
        ("endpoints", "backend"),
        ("listeners", "http"),
        ("routes", "local"),
    ]
    backend = doc["resources"][1]
    res = fx.snap.get(types.CLUSTER).resources["backend"]
    assert backend["version"] == res.version
    assert backend["resource"] == envoy_json(res)
    assert backend["resource"]["@type"] == types.CLUSTER
    assert backend["resource"]["type"] == "EDS"
    assert backend["resource"]["connect_timeout"] == "1s"  # proto field names, JSON forms
    # Nested Any values are rendered with their own "@type", as in Envoy's config_dump.
    listener = doc["resources"][4]["resource"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["@type"].endswith("HttpConnectionManager")
    assert hcm["rds"]["route_config_name"] == "local"
    endpoint = doc["resources"][2]["resource"]["endpoints"][0]
    assert endpoint["locality"] == {"zone": "z1"}
    assert endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "10.0.0.2",
        "port_value": 9090,
    }


@pytest.mark.parametrize("type_param", ["endpoints", "EDS", types.ENDPOINT])
async def test_snapshot_type_filter(fx: AdminState, client: Client, type_param: str) -> None:
    doc = await client.json("/debug/snapshot", type=type_param)
    assert doc["versions"] == {"endpoints": fx.version(types.ENDPOINT)}
    assert [(r["type"], r["name"]) for r in doc["resources"]] == [
        ("endpoints", "api"),
        ("endpoints", "backend"),
    ]


async def test_snapshot_by_group_and_node(fx: AdminState, client: Client) -> None:
    doc = await client.json("/debug/snapshot", group=OTHER)
    assert doc["group"] == OTHER
    assert [r["name"] for r in doc["resources"]] == ["jobs"]
    doc = await client.json("/debug/snapshot", node="envoy-2", type="clusters")
    assert doc["group"] == OTHER
    assert [r["name"] for r in doc["resources"]] == ["jobs"]
    doc = await client.json("/debug/snapshot", node="envoy-1", type="routes")
    assert doc["group"] == GROUP
    assert [r["name"] for r in doc["resources"]] == ["local"]
    # A type the group has nothing of: empty, with the version an empty set is sent at.
    doc = await client.json("/debug/snapshot", group=OTHER, type="routes")
    assert doc["resources"] == []
    assert doc["versions"] == {"routes": Snapshot().get(types.ROUTE).version}


async def test_snapshot_errors(client: Client) -> None:
    doc = await client.json("/debug/snapshot", 404, node="ghost")
    assert doc == {"error": "no connected proxy with node id 'ghost'"}
    doc = await client.json("/debug/snapshot", 400, group="nope")
    assert "unknown proxy group 'nope'" in doc["error"]
    doc = await client.json("/debug/snapshot", 400, type="secrets")
    assert "unknown resource type 'secrets'" in doc["error"]
    assert "clusters, endpoints, listeners, routes" in doc["error"]
    doc = await client.json("/debug/snapshot", 400, node="envoy-1", group=GROUP)
    assert "not both" in doc["error"]


async def test_snapshot_of_many_resources_renders_off_the_loop(
    fx: AdminState, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"svc-{i:04d}" for i in range(1000)]
    fx.cache.set_snapshot(
        "big",
        {
            types.CLUSTER: [eds_cluster(n) for n in names],
            types.ENDPOINT: [
                load_assignment(n, [Endpoint(f"10.1.{i // 250}.{i % 250}", 80)])
                for i, n in enumerate(names)
            ],
        },
    )
    rendered_in: list[int] = []
    render = admin.render_snapshot

    def spy(*args: Any) -> bytes:
        rendered_in.append(threading.get_ident())
        return render(*args)

    monkeypatch.setattr(admin, "render_snapshot", spy)
    doc = await client.json("/debug/snapshot", group="big")
    assert len(doc["resources"]) == 2000
    assert doc["resources"][0]["name"] == "svc-0000"
    assert doc["resources"][1000]["type"] == "endpoints"
    assert rendered_in and threading.get_ident() not in rendered_in  # a worker thread


async def test_proxies_state_against_current_snapshot(fx: AdminState, client: Client) -> None:
    # envoy-1 names one of the group's two endpoint sets and holds exactly that: its
    # target is the version a group holding only those endpoints would have, not the
    # whole set's version (which would make it look STALE).
    held = fx.snap.get(types.ENDPOINT).resources["backend"]
    only_backend = SnapshotCache()
    only_backend.set_snapshot(
        "only", {types.ENDPOINT: [endpoint_pb2.ClusterLoadAssignment.FromString(held.body)]}
    )
    subset_version = only_backend.get("only").get(types.ENDPOINT).version
    assert subset_version != fx.version(types.ENDPOINT)
    eds = fx.proxies[0].types[types.ENDPOINT]
    eds.subscribed, eds.names = 1, frozenset({"backend"})
    eds.sent_version = eds.acked_version = subset_version
    doc = await client.json("/debug/proxies")
    assert [(p["node_id"], p["group"], p["kind"]) for p in doc] == [
        ("envoy-1", GROUP, "ads-sotw"),
        ("envoy-2", OTHER, "ads-delta"),
    ]
    t1 = doc[0]["types"]
    assert {k: v["state"] for k, v in t1.items()} == {
        "clusters": "SYNCED",
        "endpoints": "SYNCED",
        "listeners": "NACKED",
    }
    assert t1["clusters"]["target_version"] == fx.version(types.CLUSTER)
    # A named subscription's target is the subset it names.
    assert t1["endpoints"]["target_version"] == subset_version
    assert t1["listeners"]["last_error"] == NACK_ERROR
    assert t1["listeners"]["nacks"] == 1
    assert doc[0]["peer"] == "ipv4:127.0.0.1:40001"
    # envoy-2 acked everything it was sent, but not what the server would send now.
    t2 = doc[1]["types"]["clusters"]
    assert t2["state"] == "STALE"
    assert t2["target_version"] == fx.cache.get(OTHER).get(types.CLUSTER).version
    # Once it catches up, it is in sync.
    fx.proxies[1].types[types.CLUSTER].acked_version = t2["target_version"]
    fx.proxies[1].types[types.CLUSTER].sent_version = t2["target_version"]
    doc = await client.json("/debug/proxies")
    assert doc[1]["types"]["clusters"]["state"] == "SYNCED"
    fx.disconnect()
    assert await client.json("/debug/proxies") == []


async def test_sources(client: Client) -> None:
    assert await client.json("/debug/sources") == SOURCES


async def test_policies(client: Client) -> None:
    assert await client.json("/debug/policies") == POLICIES


async def test_busy_port_raises_and_stop_frees_it(fx: AdminState) -> None:
    first = fx.server()
    port = await first.start()
    try:
        with pytest.raises(OSError):
            await fx.server(f"127.0.0.1:{port}").start()
    finally:
        await first.stop()
    again = fx.server(f"127.0.0.1:{port}")
    assert await again.start() == port
    await again.stop()
    await again.stop()  # idempotent


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:19000") == ("127.0.0.1", 19000)
    assert parse_address("[::1]:0") == ("::1", 0)
    assert parse_address(":9") == (None, 9)
    for bad in ("localhost", "host:http", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
