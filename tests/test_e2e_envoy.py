"""End-to-end: the real xds-server (in-process gRPC) driving a real Envoy over ADS.

Every test runs twice, over SotW ADS and over delta ADS. Outcomes are asserted where
an operator would see them: real HTTP traffic through Envoy to loopback backends, and
Envoy's own admin API (``/stats``, ``/config_dump``). The server's per-proxy status is
checked only where the rule is about the server's bookkeeping (NACK records, nothing
pushed after a reconnect).

Envoy counters used (all per subscription; each accepted response adds one to
``update_success``, even when its content is identical to what Envoy already has):

* CDS ``cluster_manager.cds.update_{success,rejected}``
* LDS ``listener_manager.lds.update_{success,rejected}``
* RDS ``http.<hcm stat_prefix>.rds.<route config>.update_success``
* EDS ``cluster.<cluster>.update_success``

``update_attempt`` is not used: Envoy counts every request it sends (including the
first one of a reconnected stream), so it says nothing about what was applied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop
from tests.harness.e2e import CDS_OK, CDS_REJECTED, LDS_OK, LDS_REJECTED, WAIT, counters, eds_ok
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from translators import resources as rb
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.model import Endpoint

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(90)

CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE

GROUP = "e2e"  # the snapshot group == the Envoy node's cluster
NODE = "envoy-e2e"
LISTENER = "ingress"
ROUTE = "ingress-routes"

RDS_OK = f"http.{LISTENER}.rds.{ROUTE}.update_success"


# --------------------------------------------------------------------------- helpers


def mesh(
    port: int,
    clusters: Mapping[str, int],
    domains: Mapping[str, str],
    *,
    listeners: Sequence[Any] = (),
) -> dict[str, list[Any]]:
    """A full snapshot: one EDS cluster per backend port, one HTTP listener on
    127.0.0.1:``port`` whose RDS route config maps each domain to a cluster."""
    return {
        CDS: [rb.eds_cluster(name) for name in clusters],
        EDS: [rb.load_assignment(n, [Endpoint("127.0.0.1", p)]) for n, p in clusters.items()],
        LDS: [rb.http_listener(LISTENER, port, ROUTE, address="127.0.0.1"), *listeners],
        RDS: [
            rb.route_configuration(ROUTE, [rb.VirtualHost(d, [d], c) for d, c in domains.items()])
        ],
    }


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(params=["sotw", "delta"])
def delta(request: pytest.FixtureRequest) -> bool:
    """Each test runs over SotW ADS and over delta ADS."""
    return bool(request.param == "delta")


@pytest.fixture
def xds_factory() -> Iterator[Callable[..., XdsServerThread]]:
    """``start(port=0, cache=None) -> XdsServerThread`` (started); all stopped at teardown."""
    started: list[XdsServerThread] = []

    def start(port: int = 0, cache: SnapshotCache | None = None) -> XdsServerThread:
        srv = XdsServerThread(port, cache)
        started.append(srv)
        return srv.start()

    yield start
    for srv in reversed(started):
        with contextlib.suppress(Exception):
            srv.stop()


def start_envoy(envoy_factory: Callable[..., EnvoyProcess], srv: XdsServerThread, delta: bool):
    boot = bootstrap(srv.port, free_port(), NODE, node_cluster=GROUP, delta=delta)
    return envoy_factory(boot, name="delta" if delta else "sotw", wait="ready", timeout=WAIT)


def stream_status(srv: XdsServerThread) -> dict[str, dict[str, Any]] | None:
    """The status of every type on our Envoy's one stream, or None if it is not connected."""
    return e2e.proxy_types(srv.proxies(), NODE)


def synced(srv: XdsServerThread) -> dict[str, dict[str, Any]]:
    """Until our Envoy has ACKed every push of ``srv``; its per-type status."""
    return e2e.wait_synced(srv.proxies, NODE)


@dataclass
class OneCluster:
    """A server whose snapshot (``good``) routes every host to cluster c1 (backend b1),
    and an Envoy on it through whose listener (``port``) ``loop`` reaches b1."""

    b1: HttpBackend
    port: int
    good: dict[str, list[Any]]
    srv: XdsServerThread
    env: EnvoyProcess
    loop: RequestLoop


@pytest.fixture
def one_cluster(
    delta: bool, envoy_factory, http_backend_factory, request_loop_factory, xds_factory
) -> OneCluster:
    b1: HttpBackend = http_backend_factory("b1")
    port = free_port()
    srv = xds_factory()
    good = mesh(port, {"c1": b1.port}, {"*": "c1"})
    srv.set_snapshot(GROUP, good)
    env = start_envoy(envoy_factory, srv, delta)
    loop: RequestLoop = request_loop_factory(url(port))
    loop.wait_for_body("b1", WAIT, since=0)
    return OneCluster(b1, port, good, srv, env, loop)


# ----------------------------------------------------------------------------- tests


def test_traffic_through_envoy_reaches_the_backend(delta: bool, one_cluster: OneCluster) -> None:
    b1, srv, env, loop = one_cluster.b1, one_cluster.srv, one_cluster.env, one_cluster.loop
    loop.wait_for_requests(20, WAIT)
    summary = e2e.stop_served(loop)
    assert set(summary.bodies) == {"b1"}, summary
    assert b1.requests >= summary.ok

    # Envoy holds exactly what the server sent, and applied each type once.
    assert env.cluster_names(dynamic_only=True) == ["c1"]
    assert env.warming_cluster_names() == []
    assert env.endpoints("c1") == [("127.0.0.1", b1.port)]
    assert env.listener_names(dynamic_only=True) == [LISTENER]
    assert env.route_config_names() == [ROUTE]
    applied = counters(env, CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK)
    assert applied == {CDS_OK: 1, eds_ok("c1"): 1, LDS_OK: 1, RDS_OK: 1}, applied
    status = synced(srv)
    assert all(s["nacks"] == 0 for s in status.values()), status
    (proxy,) = [p for p in srv.proxies() if p["node_id"] == NODE]
    assert proxy["kind"] == ("ads-delta" if delta else "ads-sotw")
    assert proxy["group"] == GROUP


def test_endpoint_change_moves_real_traffic(one_cluster: OneCluster, http_backend_factory) -> None:
    srv, env, loop = one_cluster.srv, one_cluster.env, one_cluster.loop
    b2: HttpBackend = http_backend_factory("b2")
    before = counters(env, CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK)

    mark = loop.mark()
    assert srv.set_snapshot(
        GROUP, {EDS: [rb.load_assignment("c1", [Endpoint("127.0.0.1", b2.port)])]}
    )
    first_b2 = loop.wait_for_body("b2", WAIT, since=mark)
    loop.wait_for_requests(20, WAIT)
    summary = loop.stop()

    assert summary.failed == 0, summary
    after_switch = [text for _t, _code, text in loop.results(first_b2)]
    assert set(after_switch) == {"b2"}, e2e.runs(after_switch)
    assert env.endpoints("c1") == [("127.0.0.1", b2.port)]
    # Only EDS moved: one accepted EDS response, nothing else re-sent.
    assert counters(env, CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK) == {
        **before,
        eds_ok("c1"): before[eds_ok("c1")] + 1,  # type: ignore[operator]
    }


# The two runtime rejections verified against Envoy 1.40: both pass the server's proto
# handling, Envoy refuses them when applying the update.
NACK_CASES = {
    # cluster_manager: "cluster provided LB specified but cluster 'c2' did not provide one"
    "cluster": (CDS_OK, CDS_REJECTED, "clusters", "cluster provided LB specified"),
    # lds: "malformed IP address: not-an-ip"
    "listener": (LDS_OK, LDS_REJECTED, "listeners", "malformed IP address: not-an-ip"),
}


@pytest.mark.parametrize("kind", sorted(NACK_CASES))
def test_rejected_resource_is_recorded_not_resent_and_next_version_applies(
    kind: str, one_cluster: OneCluster, http_backend_factory, request_loop_factory
) -> None:
    ok_stat, rejected_stat, short, message = NACK_CASES[kind]
    b1, port, good = one_cluster.b1, one_cluster.port, one_cluster.good
    srv, env, loop = one_cluster.srv, one_cluster.env, one_cluster.loop
    b2: HttpBackend = http_backend_factory("b2")
    port2 = free_port()
    synced(srv)
    ok_before = env.stat(ok_stat)
    assert env.stat(rejected_stat) == 0

    if kind == "cluster":
        # EDS with lb_policy CLUSTER_PROVIDED: valid proto, refused by the cluster manager.
        bad_cluster = rb.eds_cluster("c2", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
        bad = {
            CDS: [rb.eds_cluster("c1"), bad_cluster],
            EDS: [*good[EDS], rb.load_assignment("c2", [Endpoint("127.0.0.1", b2.port)])],
        }
        # The fix: a valid c2, and the route moves to it.
        fixed = mesh(port, {"c1": b1.port, "c2": b2.port}, {"*": "c2"})
    else:
        bad_listener = rb.http_listener("second", port2, ROUTE, address="not-an-ip")
        bad = {LDS: [*good[LDS], bad_listener]}
        # The fix: the second listener on a real address, serving the same routes.
        fixed = mesh(
            port,
            {"c1": b1.port},
            {"*": "c1"},
            listeners=[rb.http_listener("second", port2, ROUTE, address="127.0.0.1")],
        )

    assert srv.set_snapshot(GROUP, bad)
    wait_for(
        lambda: (env.stat(rejected_stat) or 0) >= 1,
        WAIT,
        message=f"Envoy never rejected the bad {kind}; log:\n{env.log_tail(20)}",
    )
    envoy_line = env.wait_log(r"gRPC config for .* rejected: ", WAIT)
    assert message in envoy_line, envoy_line

    def nacked() -> dict[str, Any] | None:
        types_ = stream_status(srv)
        st = types_ and types_.get(short)
        return st if st and st["nacks"] >= 1 and st["state"] == "NACKED" else None

    record = wait_for(nacked, WAIT, message=f"server never recorded the NACK: {stream_status(srv)}")
    assert message in record["last_error"], record
    assert record["error_version"] == record["sent_version"] != record["acked_version"], record

    # No resend loop: for a second, neither side moves.
    time.sleep(1.0)
    assert env.stat(rejected_stat) == 1, "the rejected version was sent again"
    assert env.stat(ok_stat) == ok_before
    again = stream_status(srv)
    assert again is not None
    assert again[short]["sent_nonce"] == record["sent_nonce"], (record, again[short])
    assert again[short]["nacks"] == 1, again[short]
    # Envoy kept its last good config and traffic flows on it.
    assert env.cluster_names(dynamic_only=True) == ["c1"]
    assert env.listener_names(dynamic_only=True) == [LISTENER]
    mark = loop.mark()
    loop.wait_for_requests(20, WAIT)
    assert loop.snapshot(mark).bodies.keys() == {"b1"}, loop.snapshot(mark)

    # The next good version is applied.
    assert srv.set_snapshot(GROUP, fixed)
    wait_for(
        lambda: env.stat(ok_stat) == ok_before + 1,  # type: ignore[operator]
        WAIT,
        message=f"Envoy never applied the fixed {kind}; log:\n{env.log_tail(20)}",
    )
    if kind == "cluster":
        loop.wait_for_body("b2", WAIT, since=mark)
        assert env.cluster_names(dynamic_only=True) == ["c1", "c2"]
    else:
        second: RequestLoop = request_loop_factory(url(port2))
        second.wait_for_body("b1", WAIT, since=0)
        assert env.listener_names(dynamic_only=True) == [LISTENER, "second"]
    assert env.stat(rejected_stat) == 1
    status = synced(srv)
    assert status[short]["last_error"] is None and status[short]["nacks"] == 1, status[short]
    e2e.stop_served(loop)


def test_server_restart_loses_no_request_and_resends_nothing(
    delta: bool, envoy_factory, http_backend_factory, request_loop_factory, xds_factory
) -> None:
    b1, b2 = e2e.backends(http_backend_factory, "b1", "b2")
    port = free_port()

    def content() -> dict[str, list[Any]]:  # fresh messages every call, same content
        return mesh(port, {"c1": b1.port}, {"*": "c1"})

    first = xds_factory()
    first.set_snapshot(GROUP, content())
    env = start_envoy(envoy_factory, first, delta)
    loop: RequestLoop = request_loop_factory(url(port))
    loop.wait_for_body("b1", WAIT, since=0)
    synced(first)
    watched = (CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK)
    before = counters(env, *watched)
    assert all(before.values()), before
    versions = counters(
        env,
        "cluster_manager.cds.version",
        "listener_manager.lds.version",
        f"http.{LISTENER}.rds.{ROUTE}.version",
    )

    first.stop()
    wait_for(
        lambda: env.stat("control_plane.connected_state") == 0,
        WAIT,
        message="Envoy did not notice the xDS server going away",
    )
    # A second replica: a new cache filled independently with identical content.
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, content())
    second = xds_factory(port=first.port, cache=cache)
    assert second.port == first.port

    synced(second)  # Envoy resynced with the new server
    wait_for(lambda: env.stat("control_plane.connected_state") == 1, WAIT)
    time.sleep(0.5)  # room for any (wrong) push to arrive and be counted

    status = stream_status(second)
    assert status is not None
    assert {t: s["sent_nonce"] for t, s in status.items()} == dict.fromkeys(status, ""), status
    assert all(s["state"] == "SYNCED" for s in status.values()), status
    assert counters(env, *watched) == before
    assert counters(env, *versions) == versions
    assert e2e.rejected(env) == {}

    # The new stream is live: an endpoint change goes through and is counted once.
    mark = loop.mark()
    changed = content()
    changed[EDS] = [rb.load_assignment("c1", [Endpoint("127.0.0.1", b2.port)])]
    assert second.set_snapshot(GROUP, changed)
    loop.wait_for_body("b2", WAIT, since=mark)
    assert counters(env, *watched) == {**before, eds_ok("c1"): before[eds_ok("c1")] + 1}  # type: ignore[operator]

    summary = e2e.stop_served(loop)
    assert summary.bodies.keys() == {"b1", "b2"}, summary


ROUNDS = 5


def test_cluster_and_route_added_or_removed_together_never_503(
    delta: bool, envoy_factory, http_backend_factory, request_loop_factory, xds_factory
) -> None:
    """Warming and make-before-break (DESIGN §4.9) seen from the data plane: a new
    virtual host answers 404 (no route yet) until it answers 200, and a removed one
    answers 200 until it answers 404; neither ever answers 503 (route to a cluster
    Envoy does not have, or has not warmed)."""
    b1: HttpBackend = http_backend_factory("b1")
    port = free_port()
    clusters: dict[str, int] = {"c1": b1.port}
    domains: dict[str, str] = {"old.test": "c1"}
    srv = xds_factory()
    srv.set_snapshot(GROUP, mesh(port, clusters, domains))
    env = start_envoy(envoy_factory, srv, delta)
    old: RequestLoop = request_loop_factory(url(port), "old.test")
    old.wait_for_body("b1", WAIT, since=0)

    added: list[tuple[str, str, RequestLoop]] = []
    for i in range(ROUNDS):
        cluster, host = f"add{i}", f"add{i}.test"
        backend: HttpBackend = http_backend_factory(cluster)
        probe: RequestLoop = request_loop_factory(url(port), host, interval=0.0)
        e2e.wait_for_status(probe, 404, since=0)  # hammering before the change
        mark = probe.mark()
        clusters[cluster] = backend.port
        domains[host] = cluster
        assert srv.set_snapshot(GROUP, mesh(port, clusters, domains))
        first_ok = e2e.wait_for_switch(probe, mark, 404, 200)
        assert probe.snapshot(first_ok).bodies.keys() == {cluster}, probe.snapshot(first_ok)
        assert cluster in env.cluster_names(dynamic_only=True)
        added.append((cluster, host, probe))

    for cluster, host, probe in added:
        mark = probe.mark()
        assert e2e.outcomes(probe, mark - 5)[:5] == [200] * 5, e2e.runs(e2e.outcomes(probe))
        del clusters[cluster], domains[host]
        assert srv.set_snapshot(GROUP, mesh(port, clusters, domains))
        e2e.wait_for_switch(probe, mark, 200, 404)
        probe.stop()
        # Make-before-break completes: the cluster goes once no route uses it.
        wait_for(
            lambda cluster=cluster: cluster not in env.cluster_names(dynamic_only=True),
            WAIT,
            message=f"cluster {cluster} was never removed from Envoy",
        )

    assert env.cluster_names(dynamic_only=True) == ["c1"]
    summary = e2e.stop_served(old)
    assert summary.bodies.keys() == {"b1"}, summary
    assert e2e.rejected(env) == {}


def test_changed_cluster_rewarms_with_unchanged_endpoints(one_cluster: OneCluster) -> None:
    """DESIGN §4.9: a changed cluster is re-created warming in Envoy and only becomes
    active once its endpoints arrive, so the server sends the (unchanged) endpoints
    again. Without them the new version would sit warming for Envoy's 15 s
    initial-fetch timeout and then come up with no endpoints."""
    b1, srv, env, loop = one_cluster.b1, one_cluster.srv, one_cluster.env, one_cluster.loop
    before = counters(env, CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK)

    def active_timeout() -> str | None:
        (item,) = env.config_dump("dynamic_active_clusters")["configs"]
        timeout: str = item["cluster"]["connect_timeout"]
        return timeout

    assert active_timeout() == "1s"
    eds_nonce = stream_status(srv)["endpoints"]["sent_nonce"]  # type: ignore[index]
    assert srv.set_snapshot(GROUP, {CDS: [rb.eds_cluster("c1", connect_timeout=2.0)]})
    wait_for(
        lambda: active_timeout() == "2s" and not env.warming_cluster_names(),
        5.0,
        message=f"changed cluster never became active: {env.warming_cluster_names()}",
    )
    mark = loop.mark()
    loop.wait_for_requests(20, WAIT)
    assert loop.snapshot(mark).bodies.keys() == {"b1"}, loop.snapshot(mark)
    assert env.endpoints("c1") == [("127.0.0.1", b1.port)]
    status = synced(srv)
    assert status["endpoints"]["sent_nonce"] != eds_nonce, status["endpoints"]
    after = counters(env, CDS_OK, eds_ok("c1"), LDS_OK, RDS_OK)
    assert after[CDS_OK] == before[CDS_OK] + 1, (before, after)  # type: ignore[operator]
    # One EDS response, but Envoy may count it twice: while the new cluster warms, the
    # old one's EDS watch and the new one's both receive it, and both count into
    # ``cluster.c1.``.
    assert after[eds_ok("c1")] > before[eds_ok("c1")], (before, after)  # type: ignore[operator]
    assert (after[LDS_OK], after[RDS_OK]) == (before[LDS_OK], before[RDS_OK]), (before, after)
    e2e.stop_served(loop)


RESUME_ROUNDS = 3


def test_reconnect_to_a_replica_without_a_service(
    delta: bool, envoy_factory, http_backend_factory, request_loop_factory, xds_factory
) -> None:
    """A proxy moves to a replica whose catalog no longer has a service (DESIGN §4.8,
    §4.9, §4.11): requests for that service's host go from 200 to 404 (route gone), the
    other hosts' requests never fail, and Envoy is sent one new cluster set and one new
    route configuration, never its unchanged listener.

    Delta never answers 503: Envoy names what it holds (initial_resource_versions), so
    the replica keeps the cluster Envoy still routes to, pushes the routes first and
    removes the cluster once they are ACKed (make-before-break across a reconnect).

    SotW has a limit, asserted here as exactly as it is: the request carries one opaque
    version per type and a CDS answer is the whole set (absence = deletion), so the
    replica, which never knew the removed cluster, can neither hold it over nor tell
    what Envoy holds. It answers in the usual order, clusters (without the removed one)
    before routes, so from Envoy applying the clusters until it applies the routes the
    removed host's route names a cluster Envoy no longer has: requests for that host,
    and only those, may answer 503 (Envoy's ``no_cluster``) between its last 200 and its
    first 404, never after. Its endpoints are re-sent too: the EDS version Envoy names
    covers a subscription that still included the removed cluster. Replicas of one
    registry normally agree, so the window needs a service removed during a failover.
    """
    no_cluster = f"http.{LISTENER}.no_cluster"
    port = free_port()
    clusters: dict[str, int] = {}
    domains: dict[str, str] = {}
    for i in range(RESUME_ROUNDS + 1):
        backend: HttpBackend = http_backend_factory(f"s{i}")
        clusters[f"s{i}"], domains[f"s{i}.test"] = backend.port, f"s{i}"
    srv = xds_factory()
    srv.set_snapshot(GROUP, mesh(port, clusters, domains))
    env = start_envoy(envoy_factory, srv, delta)
    keep: RequestLoop = request_loop_factory(url(port), f"s{RESUME_ROUNDS}.test")
    keep.wait_for_body(f"s{RESUME_ROUNDS}", WAIT, since=0)

    for i in range(RESUME_ROUNDS):
        probe: RequestLoop = request_loop_factory(url(port), f"s{i}.test", interval=0.0)
        probe.wait_for_body(f"s{i}", WAIT, since=0)
        synced(srv)
        del clusters[f"s{i}"], domains[f"s{i}.test"]
        watched = (CDS_OK, LDS_OK, RDS_OK, no_cluster, *map(eds_ok, clusters))
        before = counters(env, *watched)
        srv.stop()
        cache = SnapshotCache()
        cache.set_snapshot(GROUP, mesh(port, clusters, domains))
        srv = xds_factory(port=srv.port, cache=cache)
        e2e.wait_for_switch(probe, 0, 200, 404, via=None if delta else 503)
        probe.stop()
        status = synced(srv)

        refused = e2e.outcomes(probe).count(503)  # 0 in delta: wait_for_switch allows none
        resent = dict.fromkeys(map(eds_ok, clusters), 0 if delta else 1)
        expected = {CDS_OK: 1, LDS_OK: 0, RDS_OK: 1, no_cluster: refused, **resent}
        after = counters(env, *watched)
        applied = {k: None if v is None else v - before[k] for k, v in after.items()}  # type: ignore[operator]
        assert applied == expected, f"round {i}: {applied}"
        sent = {t: s["sent_nonce"] for t, s in status.items()}  # nonces count up per stream
        assert sent["listeners"] == "", sent
        first, then = ("routes", "clusters") if delta else ("clusters", "routes")
        assert int(sent[first]) < int(sent[then]), f"round {i}: {first} after {then}: {sent}"

    assert env.cluster_names(dynamic_only=True) == [f"s{RESUME_ROUNDS}"]
    e2e.stop_served(keep)
