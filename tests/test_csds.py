"""CSDS (envoy.service.status.v3): the mapping from our status model to
`ClientStatusResponse` (unit, over real sans-IO sessions), and a real Envoy seen through
a grpcio CSDS client on a real `xds-server --file` process's xDS port."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
import yaml
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, regex_pb2, string_pb2, struct_pb2, value_pb2

from tests import test_e2e_envoy as envoy_e2e
from tests.harness import e2e
from tests.harness.e2e import Mesh
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from tests.xds_util import (
    CDS,
    EDS,
    GROUP,
    LDS,
    NODE,
    RDS,
    ack,
    cla,
    cluster,
    delta,
    dreq,
    make_cache,
    one,
    set_types,
    sotw,
    sreq,
)
from translators import resources as rb
from xds_server import csds
from xds_server.cache import SnapshotCache
from xds_server.session import Session

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(90)

Config: TypeAlias = csds_pb2.ClientConfig.GenericXdsConfig


# --------------------------------------------------------------------------- helpers


def answer(
    cache: SnapshotCache, *sessions: Session, request: csds_pb2.ClientStatusRequest | None = None
) -> csds_pb2.ClientStatusResponse:
    """What FetchClientStatus answers with these sessions connected."""
    states = [s for s in (csds.of_session(x) for x in sessions) if s is not None]
    return csds.client_status(request or csds_pb2.ClientStatusRequest(), states, cache.get)


def by_name(response: csds_pb2.ClientStatusResponse, type_url: str) -> dict[str, Config]:
    (config,) = response.config
    return {c.name: c for c in config.generic_xds_configs if c.type_url == type_url}


def statuses(configs: dict[str, Config]) -> dict[str, tuple[str, str]]:
    """name -> (config_status, client_status) by enum name, for readable failures."""
    return {
        n: (
            csds_pb2.ConfigStatus.Name(c.config_status),
            dump_pb2.ClientResourceStatus.Name(c.client_status),
        )
        for n, c in configs.items()
    }


def unpacked(config: Config) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster()
    assert config.xds_config.Unpack(out), config
    return out


def node(node_id: str, cluster: str = GROUP, **metadata: Any) -> base_pb2.Node:
    n = base_pb2.Node(id=node_id, cluster=cluster)
    if metadata:
        n.metadata.update(metadata)
    return n


def matching(*matchers: node_pb2.NodeMatcher) -> csds_pb2.ClientStatusRequest:
    return csds_pb2.ClientStatusRequest(node_matchers=list(matchers))


def id_matcher(**kw: Any) -> node_pb2.NodeMatcher:
    return node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(**kw))


def exact(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value)


def meta_matcher(keys: list[str], **value: Any) -> node_pb2.NodeMatcher:
    return node_pb2.NodeMatcher(
        node_metadatas=[
            struct_pb2.StructMatcher(
                path=[struct_pb2.StructMatcher.PathSegment(key=k) for k in keys],
                value=value_pb2.ValueMatcher(**value),
            )
        ]
    )


# ------------------------------------------------------------------------ the mapping


def test_acked_clusters_are_synced_and_acked_with_the_content_sent() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b", timeout=2.0)])
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(CDS, node=NODE)), CDS))

    response = answer(cache, s)
    (config,) = response.config
    assert config.node.id == NODE.id
    clusters = by_name(response, CDS)
    assert statuses(clusters) == {n: ("SYNCED", "ACKED") for n in ("a", "b")}
    sent = cache.get(GROUP).get(CDS).resources
    for name, c in clusters.items():
        assert unpacked(c).name == name
        assert c.version_info == sent[name].version
        assert c.xds_config.value == sent[name].body
        assert c.last_updated.seconds > 0
    assert unpacked(clusters["b"]).connect_timeout.seconds == 2


def test_sent_and_not_yet_acked_is_stale_and_requested() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache)
    resp = one(s.on_request(sreq(CDS, node=NODE)), CDS)
    assert statuses(by_name(answer(cache, s), CDS)) == {"a": ("STALE", "REQUESTED")}
    ack(s, resp)
    assert statuses(by_name(answer(cache, s), CDS)) == {"a": ("SYNCED", "ACKED")}


def test_behind_the_snapshot_is_stale_with_what_the_proxy_acked() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(CDS, node=NODE)), CDS))
    old = cache.get(GROUP).get(CDS).resources["a"].version
    # The snapshot moves on; the session has not pushed it yet.
    set_types(cache, cds=[cluster("a", timeout=5.0)])
    (a,) = by_name(answer(cache, s), CDS).values()
    assert statuses({"a": a}) == {"a": ("STALE", "ACKED")}
    assert a.version_info == old and unpacked(a).connect_timeout.seconds == 1


def test_nacked_is_error_and_nacked_with_envoys_error_and_the_rejected_content() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(CDS, node=NODE)), CDS))
    good = cache.get(GROUP).get(CDS).resources["a"]
    set_types(cache, cds=[cluster("a", timeout=7.0), cluster("new")])
    bad = one(s.on_snapshot(cache.get(GROUP)), CDS)
    s.on_request(sreq(CDS, nonce=bad.nonce, version="", error="cluster a: bad timeout"))

    clusters = by_name(answer(cache, s), CDS)
    assert statuses(clusters) == {n: ("ERROR", "NACKED") for n in ("a", "new")}
    a = clusters["a"]
    assert a.error_state.details == "cluster a: bad timeout"
    assert a.error_state.version_info == bad.version
    assert a.error_state.last_update_attempt.seconds > 0
    # What the proxy still runs, and what it refused.
    assert a.version_info == good.version and unpacked(a).connect_timeout.seconds == 1
    failed = cluster_pb2.Cluster()
    assert a.error_state.failed_configuration.Unpack(failed)
    assert failed.connect_timeout.seconds == 7
    assert unpacked(clusters["new"]).name == "new"  # never accepted: the rejected one


def test_a_requested_name_the_server_does_not_have_does_not_exist() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(EDS, ["a", "ghost"], node=NODE)), EDS), ["a", "ghost"])
    endpoints = by_name(answer(cache, s), EDS)
    assert statuses(endpoints) == {"a": ("SYNCED", "ACKED"), "ghost": ("SYNCED", "DOES_NOT_EXIST")}
    assert not endpoints["ghost"].HasField("xds_config") and not endpoints["ghost"].version_info


def test_delta_acked_and_claimed_resources() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    d = delta(cache)
    held = cache.get(GROUP).get(CDS).resources["a"].version
    # A reconnecting delta client claims "a" at the current version: not sent again.
    resp = one(d.on_request(dreq(CDS, node=NODE, initial={"a": held})), CDS)
    d.on_request(dreq(CDS, nonce=resp.nonce))
    clusters = by_name(answer(cache, d), CDS)
    assert statuses(clusters) == {n: ("SYNCED", "ACKED") for n in ("a", "b")}
    assert unpacked(clusters["b"]).name == "b"


@pytest.mark.parametrize(
    ("group", "state"),
    [(GROUP, "SYNCED"), ("no-snapshot-yet", "NOT_SENT")],
    ids=["empty-subscription", "nothing-sent"],
)
def test_a_type_with_nothing_to_list_still_shows_its_state(group: str, state: str) -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s = sotw(cache)
    # EDS naming nothing is in sync at once; a group without a snapshot is sent nothing.
    s.on_request(sreq(EDS, [], node=node("proxy-1", cluster=group)))
    configs = list(answer(cache, s).config[0].generic_xds_configs)
    got = [(c.type_url, c.name, csds_pb2.ConfigStatus.Name(c.config_status)) for c in configs]
    assert got == [(EDS, "", state)]


def test_exclude_resource_contents_leaves_out_the_resources() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(CDS, node=NODE)), CDS))
    request = csds_pb2.ClientStatusRequest(exclude_resource_contents=True)
    (a,) = by_name(answer(cache, s, request=request), CDS).values()
    assert a.version_info and not a.HasField("xds_config")


def test_streams_of_one_node_answer_as_one_client_config() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    cds_stream = sotw(cache, type_url=CDS)
    ack(cds_stream, one(cds_stream.on_request(sreq("", node=NODE)), CDS))
    eds_stream = sotw(cache, type_url=EDS)
    ack(eds_stream, one(eds_stream.on_request(sreq("", ["a"], node=NODE)), EDS), ["a"])
    response = answer(cache, cds_stream, eds_stream)
    assert [c.node.id for c in response.config] == [NODE.id]
    assert [(c.type_url, c.name) for c in response.config[0].generic_xds_configs] == [
        (CDS, "a"),
        (EDS, "a"),
    ]


# --------------------------------------------------------------------------- matchers


@pytest.fixture
def fleet() -> tuple[SnapshotCache, list[Session]]:
    cache = make_cache(cds=[cluster("a")])
    sessions: list[Session] = []
    for n in (
        node("gw-1", role="gateway", zone={"name": "a"}),
        node("Sidecar-1", role="sidecar", canary=True),
        node("sidecar-2"),
    ):
        s = sotw(cache)
        s.on_request(sreq(CDS, node=n))
        sessions.append(s)
    return cache, sessions


@pytest.mark.parametrize(
    ("request_", "ids"),
    [
        (matching(), ["Sidecar-1", "gw-1", "sidecar-2"]),
        (matching(id_matcher(exact="gw-1")), ["gw-1"]),
        (matching(id_matcher(prefix="sidecar")), ["sidecar-2"]),
        (matching(id_matcher(prefix="sidecar", ignore_case=True)), ["Sidecar-1", "sidecar-2"]),
        (matching(id_matcher(suffix="-1")), ["Sidecar-1", "gw-1"]),
        (matching(id_matcher(contains="car")), ["Sidecar-1", "sidecar-2"]),
        # A regex matches the whole id, as Envoy's safe_regex.
        (matching(id_matcher(safe_regex=regex_pb2.RegexMatcher(regex="[a-z]+-2"))), ["sidecar-2"]),
        (matching(id_matcher(safe_regex=regex_pb2.RegexMatcher(regex="side"))), []),
        (matching(id_matcher(exact="gw-1"), id_matcher(exact="sidecar-2")), ["gw-1", "sidecar-2"]),
        (matching(meta_matcher(["role"], string_match=exact("gateway"))), ["gw-1"]),
        (matching(meta_matcher(["zone", "name"], string_match=exact("a"))), ["gw-1"]),
        (matching(meta_matcher(["canary"], bool_match=True)), ["Sidecar-1"]),
        (matching(meta_matcher(["role"], present_match=False)), ["sidecar-2"]),
        # Any string at all, but "zone" holds a struct.
        (matching(meta_matcher(["zone"], string_match=string_pb2.StringMatcher(prefix=""))), []),
    ],
    ids=[
        "empty-is-all", "exact", "prefix", "prefix-ignore-case", "suffix", "contains",
        "regex", "regex-is-anchored", "or", "metadata-string", "metadata-path",
        "metadata-bool", "metadata-absent", "metadata-struct-is-not-a-string",
    ],
)  # fmt: skip
def test_node_matchers_select_the_nodes(
    fleet: tuple[SnapshotCache, list[Session]],
    request_: csds_pb2.ClientStatusRequest,
    ids: list[str],
) -> None:
    cache, sessions = fleet
    assert [c.node.id for c in answer(cache, *sessions, request=request_).config] == ids


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (
            matching(id_matcher(safe_regex=regex_pb2.RegexMatcher(regex="(unclosed"))),
            "node_matchers[0].node_id.safe_regex: invalid RE2 regex",
        ),
        (
            matching(id_matcher(exact="x"), meta_matcher(["v"], double_match={"exact": 1.0})),
            "node_matchers[1].node_metadatas[0].value: double_match is not supported",
        ),
        (
            matching(node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher())),
            "node_matchers[0].node_id: no match_pattern",
        ),
        (
            matching(node_pb2.NodeMatcher(node_metadatas=[struct_pb2.StructMatcher()])),
            "node_matchers[0].node_metadatas[0].path: must name at least one key",
        ),
    ],
    ids=["bad-regex", "unsupported-value-matcher", "empty-string-matcher", "empty-path"],
)  # fmt: skip
def test_unsupported_matchers_are_refused_with_where_and_why(
    request_: csds_pb2.ClientStatusRequest, says: str
) -> None:
    # Refused even with no node connected: the request itself is wrong.
    with pytest.raises(csds.MatcherError) as e:
        csds.client_status(request_, [], make_cache().get)
    assert says in str(e.value)


# ------------------------------------------------------------------- a real Envoy, e2e

NODE_ID = "envoy-csds"
SERVICES = ("api", "web")


def write_registry(path: Path, backends: dict[str, int]) -> None:
    services = [
        {
            "name": name,
            "ports": [{"port": 80}],
            "endpoints": [{"address": "127.0.0.1", "port": port}],
        }
        for name, port in backends.items()
    ]
    path.write_text(yaml.safe_dump({"services": services}))


@pytest.fixture
def mesh(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Mesh, EnvoyProcess]]:
    """`xds-server --file` with two services and one ready, synced Envoy (over delta ADS
    when parametrised indirectly with True)."""
    registry = tmp_path / "registry.yaml"
    write_registry(registry, {name: free_port() for name in SERVICES})
    port = free_port()
    server = xds_server_factory(
        "--file", str(registry), "--file-interval", "1h", "--http-listener-port", str(port)
    )
    m = Mesh(server, port, NODE_ID)
    env = m.envoy(envoy_factory, getattr(request, "param", False))
    m.wait_synced()
    yield m, env


@pytest.fixture
def csds_stub(
    mesh: tuple[Mesh, EnvoyProcess],
) -> Iterator[csds_pb2_grpc.ClientStatusDiscoveryServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{mesh[0].server.xds_port}") as channel:
        yield csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)


@pytest.mark.parametrize("mesh", [False, True], ids=["sotw", "delta"], indirect=True)
def test_fetch_client_status_shows_the_real_envoy_with_its_clusters_synced(
    mesh: tuple[Mesh, EnvoyProcess], csds_stub: csds_pb2_grpc.ClientStatusDiscoveryServiceStub
) -> None:
    response = csds_stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=e2e.WAIT)
    (config,) = response.config
    assert config.node.id == NODE_ID and config.node.user_agent_name == "envoy"
    clusters = {c.name: c for c in config.generic_xds_configs if c.type_url == CDS}
    # The registry's services, as the server names their clusters, and as Envoy has them.
    assert sorted(clusters) == [f"{name}.default:80" for name in SERVICES]
    assert sorted(clusters) == mesh[1].cluster_names(dynamic_only=True)
    assert statuses(clusters) == {n: ("SYNCED", "ACKED") for n in clusters}
    assert {unpacked(c).name for c in clusters.values()} == set(clusters)
    # Every type Envoy subscribed to reads SYNCED too, as /debug/proxies says.
    by_type = {
        (c.type_url, csds_pb2.ConfigStatus.Name(c.config_status))
        for c in config.generic_xds_configs
    }
    assert {s for _, s in by_type} == {"SYNCED"}, by_type
    assert {t for t, _ in by_type} == {CDS, EDS, LDS, RDS}

    # A matcher the server cannot evaluate: INVALID_ARGUMENT, saying where and why.
    bad = matching(id_matcher(safe_regex=regex_pb2.RegexMatcher(regex="(")))
    with pytest.raises(grpc.RpcError) as e:
        csds_stub.FetchClientStatus(bad, timeout=e2e.WAIT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "node_matchers[0].node_id.safe_regex: invalid RE2 regex" in (e.value.details() or "")


def test_stream_client_status_answers_each_request_as_it_arrives(
    mesh: tuple[Mesh, EnvoyProcess], csds_stub: csds_pb2_grpc.ClientStatusDiscoveryServiceStub
) -> None:
    requests: queue.Queue[csds_pb2.ClientStatusRequest | None] = queue.Queue()

    def feed() -> Iterator[csds_pb2.ClientStatusRequest]:
        while (r := requests.get()) is not None:
            yield r

    call = csds_stub.StreamClientStatus(feed(), timeout=e2e.WAIT)
    try:
        # The second request is sent only after the first one's answer arrived.
        requests.put(matching(id_matcher(exact=NODE_ID)))
        first = next(call)
        assert [c.node.id for c in first.config] == [NODE_ID]
        requests.put(matching(id_matcher(prefix="no-such-")))
        second = next(call)
        assert list(second.config) == []
    finally:
        requests.put(None)
    assert list(call) == []


def test_a_real_nack_reads_error_and_nacked_with_envoys_own_message(
    envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    """A cluster the real Envoy refuses (valid proto, refused by its cluster manager)."""
    srv = XdsServerThread().start()
    try:
        good = envoy_e2e.mesh(free_port(), {"c1": free_port()}, {"*": "c1"})
        srv.set_snapshot(envoy_e2e.GROUP, good)
        boot = bootstrap(srv.port, free_port(), envoy_e2e.NODE, node_cluster=envoy_e2e.GROUP)
        envoy_factory(boot, name="nacking", wait="ready", timeout=e2e.WAIT)
        e2e.wait_synced(srv.proxies, envoy_e2e.NODE)
        bad = rb.eds_cluster("c2", lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
        srv.set_snapshot(envoy_e2e.GROUP, {**good, CDS: [*good[CDS], bad]})

        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)

            def nacked() -> dict[str, Config] | None:
                response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
                clusters = by_name(response, CDS)
                c2 = clusters.get("c2")
                return clusters if c2 is not None and c2.client_status == dump_pb2.NACKED else None

            found = wait_for(nacked, e2e.WAIT, message="CSDS never showed the NACK")
    finally:
        srv.stop()
    assert found is not None
    clusters = found
    assert statuses(clusters) == {n: ("ERROR", "NACKED") for n in ("c1", "c2")}
    _, _, _, message = envoy_e2e.NACK_CASES["cluster"]
    for c in clusters.values():
        assert message in c.error_state.details, c.error_state
    # c1 is what Envoy still runs; c2 it never accepted: what it refused.
    assert unpacked(clusters["c1"]).name == "c1"
    refused = cluster_pb2.Cluster()
    assert clusters["c2"].error_state.failed_configuration.Unpack(refused)
    assert refused.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
