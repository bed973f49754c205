"""End to end: a proxyless gRPC client reaches a real gRPC backend through ``xds:///web``.

The client is grpcio in its own subprocess (``GrpcXdsClient``, ``GRPC_XDS_BOOTSTRAP``);
the xDS server is the real one (``XdsServerThread``: grpc.aio on its own loop thread);
the backends are real gRPC servers on 127.0.0.1. DESIGN §4.12 (what gRPC accepts), §4.7
(names that do not exist yet), §7 (real components).

SotW only: grpc-core's xDS client (grpcio 1.85) speaks only state-of-the-world ADS. Its
only xDS method path is ``/envoy.service.discovery.v3.AggregatedDiscoveryService/
StreamAggregatedResources``; there is no bootstrap option or server feature that makes it
use ``DeltaAggregatedResources`` (the bare name appears in the library only as part of
the embedded ads.proto descriptor). ``test_status_shows_grpc_node_synced_by_name``
checks ``kind == "ads-sotw"``, so it fails loudly should a future grpcio switch to delta,
and delta ADS is covered end to end with Envoy instead.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from google.protobuf.message import Message

from tests.harness.backends import GrpcBackend
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from translators.resources import (
    VirtualHost,
    api_listener,
    eds_cluster,
    load_assignment,
    route_configuration,
)
from xds_server import types
from xds_server.model import Endpoint, Locality

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(60)

# gRPC's own xDS client tracing goes to the client's log, which every failed wait shows.
TRACE = "xds_client"
# Generous upper bound for "the client got it"; the usual figure is well under a second.
REACH_TIMEOUT = 15.0
CALL_INTERVAL = 0.02  # the client calls every 20 ms, so windows fill quickly
_node_ids = itertools.count(1)

Snapshot = Mapping[str, Sequence[Message]]
ClientFactory = Callable[..., GrpcXdsClient]
BackendFactory = Callable[..., GrpcBackend]


def service(
    name: str, backends: Sequence[GrpcBackend], *, domains: Sequence[str] = ()
) -> dict[str, list[Message]]:
    """What ``xds:///name`` needs (§4.12): api_listener → RDS → EDS cluster → CLA.

    Listener ``name`` (HCM with RDS over ADS, router last), RouteConfiguration
    ``name-routes`` routing ``/`` of the virtual host to cluster ``name-cluster`` (type EDS,
    ADS config source), whose ClusterLoadAssignment lists the backends with a locality and
    a load-balancing weight on the locality.
    """
    routes, cluster = f"{name}-routes", f"{name}-cluster"
    return {
        types.LISTENER: [api_listener(name, routes)],
        types.ROUTE: [
            route_configuration(
                routes, [VirtualHost(f"{name}-vh", list(domains or [name]), cluster)]
            )
        ],
        types.CLUSTER: [eds_cluster(cluster)],
        types.ENDPOINT: [cla(cluster, backends)],
    }


def cla(cluster: str, backends: Sequence[GrpcBackend]) -> Message:
    return load_assignment(
        cluster,
        [Endpoint("127.0.0.1", b.port, locality=Locality("local", "z1")) for b in backends],
    )


def merge(*snapshots: Snapshot) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for snap in snapshots:
        for type_url, items in snap.items():
            out.setdefault(type_url, []).extend(items)
    return out


@pytest.fixture
def xds() -> Iterator[XdsServerThread]:
    srv = XdsServerThread().start()
    try:
        yield srv
    finally:
        srv.stop()


def start_client(
    factory: ClientFactory,
    srv: XdsServerThread,
    target: str,
    group: str,
    *,
    call_timeout: float = 2.0,
) -> GrpcXdsClient:
    node_id = f"grpc-e2e-{next(_node_ids)}"
    return factory(
        grpc_bootstrap(srv.port, node_id, node_cluster=group),
        target,
        interval=CALL_INTERVAL,
        timeout=call_timeout,
        trace=TRACE,
    )


def diagnostics(srv: XdsServerThread, client: GrpcXdsClient) -> str:
    return f"server status: {srv.proxies()}\nclient log tail:\n{client.log_tail(40)}"


def assert_all_from(srv: XdsServerThread, client: GrpcXdsClient, since: int, name: str) -> None:
    """Every call since index ``since`` succeeded and was answered by backend ``name``."""
    results = client.results_since(since)
    assert results, "no calls in the window"
    assert client.bodies_since(since) == {name: len(results)}, (
        f"calls not all answered by {name}: {[r for r in results if r.get('body') != name]}\n"
        + diagnostics(srv, client)
    )


def grpc_proxy(srv: XdsServerThread, node_id: str) -> dict[str, Any] | None:
    found = [p for p in srv.proxies() if p["node_id"] == node_id]
    return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------------------- tests


def test_grpc_client_reaches_backend_through_xds(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
) -> None:
    g1 = grpc_backend_factory("g1")
    xds.set_snapshot("grpc-reach", service("web", [g1]))
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", "grpc-reach")

    first = client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    client.wait_for_calls(10, timeout=10)
    assert_all_from(xds, client, first, "g1")
    assert g1.requests >= 10


def test_grpc_client_follows_endpoint_change_without_failures(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
) -> None:
    g1, g2 = grpc_backend_factory("g1"), grpc_backend_factory("g2")
    group = "grpc-switch"
    xds.set_snapshot(group, service("web", [g1]))
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", group)
    first = client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    client.wait_for_calls(5, timeout=10)

    # Only the ClusterLoadAssignment changes: g1 keeps running, so any failure would be
    # the client's (or the server's) doing, not the backend's.
    assert xds.set_snapshot(group, {types.ENDPOINT: [cla("web-cluster", [g2])]})
    switched = client.wait_for_body("g2", timeout=REACH_TIMEOUT, since=first)
    client.wait_for_calls(10, timeout=10)

    # No failed call at any point after the first success, before, during or after the
    # switch; and once g2 answered, g1 never answered again (gRPC swaps endpoint lists).
    assert client.errors_since(first) == [], diagnostics(xds, client)
    assert_all_from(xds, client, switched, "g2")
    assert set(client.bodies_since(first)) == {"g1", "g2"}


@pytest.mark.parametrize("group_has_snapshot", [True, False], ids=["other-resources", "empty"])
def test_grpc_subscription_to_missing_listener_succeeds_once_added(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
    group_has_snapshot: bool,
) -> None:
    """§4.7: ``xds:///late`` is subscribed by name before "late" exists; it is sent when
    it appears.

    ``other-resources``: the group already serves "web", so the server answers the LDS
    request at once with an empty LDS response (SotW: "late" does not exist), which gRPC
    ACKs. ``empty``: the group has no snapshot yet, so the server does not answer at all.
    Either way gRPC keeps the name subscribed, and its calls are queued until their
    deadline (DEADLINE_EXCEEDED, not UNAVAILABLE): grpc-core does not treat a resource
    missing from a SotW response as "does not exist" unless it had it before; only its
    15 s does-not-exist timer would make calls fail fast.
    """
    g1, g_late = grpc_backend_factory("g1"), grpc_backend_factory("g-late")
    group = "grpc-late"
    web = service("web", [g1])
    if group_has_snapshot:
        xds.set_snapshot(group, web)
    # Short call deadline: queued calls report back quickly while "late" is missing.
    client = start_client(grpc_xds_client_factory, xds, "xds:///late", group, call_timeout=0.3)
    node_id = client.bootstrap["node"]["id"]

    def lds_state() -> str | None:
        proxy = grpc_proxy(xds, node_id)
        lds = proxy["types"].get("listeners") if proxy is not None else None
        if lds is None or lds["subscribed"] != 1 or lds["wildcard"]:
            return None  # not (yet) subscribed to "late" by name
        return str(lds["state"])

    # Answered with an empty, ACKed LDS response, or not answered at all.
    want = "SYNCED" if group_has_snapshot else "NOT_SENT"
    wait_for(
        lambda: lds_state() == want,
        timeout=REACH_TIMEOUT,
        message=f"gRPC client's LDS subscription to 'late' not {want}",
    )
    client.wait_for_calls(2, timeout=10)
    waiting = client.results_since(0)
    assert waiting and not client.bodies_since(0), waiting
    assert {r["code"] for r in waiting} == {"DEADLINE_EXCEEDED"}, waiting

    assert xds.set_snapshot(group, merge(web, service("late", [g_late])))
    first = client.wait_for_body("g-late", timeout=REACH_TIMEOUT)
    client.wait_for_calls(5, timeout=10)
    assert_all_from(xds, client, first, "g-late")
    assert g1.requests == 0


def test_status_shows_grpc_node_synced_by_name(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
) -> None:
    g1 = grpc_backend_factory("g1")
    group = "grpc-status"
    # A second service in the group: a named subscription must not receive it.
    other = grpc_backend_factory("other")
    xds.set_snapshot(group, merge(service("web", [g1]), service("other", [other])))
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", group)
    client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    node_id = client.bootstrap["node"]["id"]

    want = ("clusters", "endpoints", "listeners", "routes")

    def synced() -> dict[str, Any] | None:
        proxy = grpc_proxy(xds, node_id)
        if proxy is None:
            return None
        states = {t: s["state"] for t, s in proxy["types"].items()}
        return proxy if states == dict.fromkeys(want, "SYNCED") else None

    proxy = wait_for(synced, timeout=10, message=f"gRPC node {node_id} not SYNCED everywhere")
    # gRPC speaks SotW ADS only (see the module docstring).
    assert proxy["kind"] == "ads-sotw", proxy
    assert proxy["cluster"] == group and proxy["group"] == group, proxy
    assert "grpc" in proxy["user_agent"].lower(), proxy
    for short in want:
        ts = proxy["types"][short]
        # gRPC subscribes by name, never wildcard, even for LDS/CDS (§4.6).
        assert ts["wildcard"] is False, ts
        assert ts["subscribed"] == 1, ts
        assert ts["nacks"] == 0 and ts["last_error"] is None, ts
        assert ts["acked_version"] == ts["sent_version"] != "", ts
    assert other.requests == 0


# ---------------------------------------------------------------- beyond the basics


@pytest.mark.parametrize("drop_old", [False, True], ids=["keep-old-cluster", "drop-old-cluster"])
def test_grpc_client_follows_route_to_new_cluster_without_failures(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
    drop_old: bool,
) -> None:
    """The route moves to a cluster the client has never subscribed to: gRPC adds it to its
    CDS (and EDS) subscription by name only after the RDS update, and must keep serving
    from the old cluster until the new one is ready (§4.7 named subscription growth, §4.9).

    ``drop-old-cluster``: the same snapshot also deletes the old cluster and its endpoints
    (make-before-break: the server must not remove what the client still routes to)."""
    g1, g2 = grpc_backend_factory("g1"), grpc_backend_factory("g2")
    group = "grpc-reroute"
    base = service("web", [g1])
    extra = {
        types.CLUSTER: [eds_cluster("web-cluster-2")],
        types.ENDPOINT: [cla("web-cluster-2", [g2])],
    }
    xds.set_snapshot(group, merge(base, extra))
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", group)
    first = client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    client.wait_for_calls(5, timeout=10)

    routes = route_configuration("web-routes", [VirtualHost("web-vh", ["web"], "web-cluster-2")])
    change: dict[str, list[Message]] = {types.ROUTE: [routes]}
    if drop_old:
        change |= extra
    assert xds.set_snapshot(group, change)
    switched = client.wait_for_body("g2", timeout=REACH_TIMEOUT, since=first)
    client.wait_for_calls(10, timeout=10)

    assert client.errors_since(first) == [], diagnostics(xds, client)
    assert_all_from(xds, client, switched, "g2")

    # gRPC drops the old cluster from its subscriptions once no route uses it.
    node_id = client.bootstrap["node"]["id"]

    def resubscribed() -> dict[str, Any] | None:
        proxy = grpc_proxy(xds, node_id)
        if proxy is None:
            return None
        t = proxy["types"]
        done = all(
            t[k]["subscribed"] == 1 and t[k]["state"] == "SYNCED"
            for k in ("clusters", "endpoints", "listeners", "routes")
        )
        return proxy if done else None

    wait_for(resubscribed, timeout=10, message="gRPC node did not settle on web-cluster-2")


def test_grpc_nack_is_recorded_and_fixed_content_recovers(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
) -> None:
    """§4.4/§4.12: gRPC NACKs a ClusterLoadAssignment whose locality is unset; the server
    records it; corrected content is sent and ACKed and traffic flows."""
    g1 = grpc_backend_factory("g1")
    group = "grpc-nack"
    bad = cla("web-cluster", [g1])
    bad.endpoints[0].ClearField("locality")
    xds.set_snapshot(group, {**service("web", [g1]), types.ENDPOINT: [bad]})
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", group, call_timeout=0.5)
    node_id = client.bootstrap["node"]["id"]

    def eds_status() -> dict[str, Any] | None:
        proxy = grpc_proxy(xds, node_id)
        return proxy["types"].get("endpoints") if proxy is not None else None

    nacked = wait_for(
        lambda: (s := eds_status()) is not None and s["state"] == "NACKED" and s,
        timeout=REACH_TIMEOUT,
        message="gRPC never NACKed the CLA without a locality",
    )
    assert nacked["nacks"] == 1, nacked
    assert "locality" in nacked["last_error"], nacked
    client.wait_for_calls(2, timeout=10)
    assert not client.bodies_since(0)

    xds.set_snapshot(group, {types.ENDPOINT: [cla("web-cluster", [g1])]})
    client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    fixed = wait_for(
        lambda: (s := eds_status()) is not None and s["state"] == "SYNCED" and s,
        timeout=10,
        message="fixed CLA not ACKed",
    )
    # The rejected version was never offered again (§4.4): still exactly one NACK.
    assert fixed["nacks"] == 1 and fixed["last_error"] is None, fixed


ADS_RESPONSE = re.compile(r"received ADS response: type_url=([\w.]+)")


def ads_responses(client: GrpcXdsClient) -> list[str]:
    """Short type names of the ADS responses the client received, from its xds_client trace."""
    assert client.log_path is not None
    text = client.log_path.read_text(errors="replace")
    return [m.group(1).rsplit(".", 1)[-1] for m in ADS_RESPONSE.finditer(text)]


def test_grpc_client_survives_server_restart_and_gets_only_what_changed(
    xds: XdsServerThread,
    grpc_backend_factory: BackendFactory,
    grpc_xds_client_factory: ClientFactory,
) -> None:
    """The data plane does not depend on the control plane (§1): calls keep succeeding
    while the server is down. On reconnect gRPC re-requests every type with the version
    it holds (and no nonce); content-hash versions (§4.11) mean only what changed during
    the outage (the endpoints) is sent again, and the client follows it."""
    g1, g2 = grpc_backend_factory("g1"), grpc_backend_factory("g2")
    group = "grpc-restart"
    xds.set_snapshot(group, service("web", [g1]))
    client = start_client(grpc_xds_client_factory, xds, "xds:///web", group)
    first = client.wait_for_body("g1", timeout=REACH_TIMEOUT)
    node_id = client.bootstrap["node"]["id"]
    wait_for(
        lambda: (
            (p := grpc_proxy(xds, node_id)) is not None
            and len(p["types"]) == 4
            and all(t["state"] == "SYNCED" for t in p["types"].values())
        ),
        timeout=10,
        message="gRPC node not SYNCED before the restart",
    )
    before = ads_responses(client)
    assert sorted(before) == ["Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"]

    xds.stop()
    # While the server is down (its loop is gone, no stream watches the cache) the
    # endpoints change; the restarted server on the same port serves the new snapshot.
    xds.cache.set_snapshot(group, {types.ENDPOINT: [cla("web-cluster", [g2])]})
    client.wait_for_calls(10, timeout=10)  # still served from gRPC's cached config
    xds.start()

    switched = client.wait_for_body("g2", timeout=REACH_TIMEOUT, since=first)
    client.wait_for_calls(5, timeout=10)
    assert client.errors_since(first) == [], diagnostics(xds, client)
    assert_all_from(xds, client, switched, "g2")
    proxy = wait_for(
        lambda: (
            (p := grpc_proxy(xds, node_id)) is not None
            and len(p["types"]) == 4
            and all(t["state"] == "SYNCED" for t in p["types"].values())
            and p
        ),
        timeout=10,
        message="gRPC node not SYNCED after the restart",
    )
    assert proxy["kind"] == "ads-sotw", proxy
    # Unchanged listener, routes and cluster were not sent again on the new stream.
    assert ads_responses(client)[len(before) :] == ["ClusterLoadAssignment"], client.log_tail(60)
