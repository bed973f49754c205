"""Unit tests of the SotW session state machine; each names the DESIGN §4 rule it proves."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_util import (
    CDS,
    EDS,
    LDS,
    NODE,
    RDS,
    ack,
    cla,
    cluster,
    decode_sotw,
    listener,
    make_cache,
    one,
    routes,
    set_types,
    sotw,
    sotw_names,
    sreq,
)
from xds_server import metrics, types
from xds_server.cache import SnapshotCache
from xds_server.response import Response
from xds_server.session import ProtocolError
from xds_server.session_sotw import SotwSession


def started(cache: SnapshotCache, type_url: str = CDS, names: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    s = sotw(cache)
    first = s.on_request(sreq(type_url, names, node=NODE))
    return s, first


@pytest.mark.parametrize(
    ("type_url", "says"),
    [("", "type_url is required"), ("type.googleapis.com/no.such.Type", "no.such.Type")],
    ids=["missing", "unknown"],
)
def test_4_1_ads_needs_a_known_type_url(type_url: str, says: str) -> None:
    s = sotw(make_cache(cds=[cluster("a")]))
    with pytest.raises(ProtocolError) as e:
        s.on_request(sreq(type_url, node=NODE))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in e.value.message


def test_4_1_per_type_service_fills_in_type_url_and_refuses_others() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache, type_url=CDS)
    assert sotw_names(one(s.on_request(sreq("", node=NODE)), CDS)) == ["a"]
    s2 = sotw(cache, type_url=CDS)
    with pytest.raises(ProtocolError):
        s2.on_request(sreq(LDS, node=NODE))


def test_4_2_node_only_on_first_request_is_kept_for_the_stream() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s, first = started(cache)
    resp = one(first, CDS)
    # Later requests carry no node; the stream still knows who it is, so the first
    # EDS request is answered at once from the node's group (types are independent:
    # the CDS response need not be ACKed first).
    out = s.on_request(sreq(EDS, ["a"], nonce=""))
    assert one(out, EDS).names == ["a"]
    ack(s, resp)
    assert s.status.node_id == "proxy-1" and s.group == "g"


@pytest.mark.parametrize(
    "node, message",
    [(None, "must carry the node"), (base_pb2.Node(cluster="g"), "node.id must not be empty")],
)
def test_4_2_malformed_node_is_refused(node: base_pb2.Node | None, message: str) -> None:
    s = sotw(make_cache(cds=[cluster("a")]))
    with pytest.raises(ProtocolError) as e:
        s.on_request(sreq(CDS, node=node))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.message


def test_4_3_ack_processed_before_the_write_completes() -> None:
    # The session records the nonce when it returns the response, so an ACK that
    # races the write is recognised.
    s, first = started(make_cache(cds=[cluster("a")]))
    resp = one(first)
    assert s.states[CDS].inflight is not None and s.states[CDS].inflight.nonce == resp.nonce
    ack(s, resp)
    assert s.states[CDS].inflight is None
    assert s.status.types[CDS].acked_version == resp.version


def test_4_3_nonces_are_per_stream_and_unique() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s, first = started(cache)
    r1 = one(first)
    ack(s, r1)
    r2 = one(s.on_request(sreq(EDS, ["a"])))
    assert r1.nonce != r2.nonce
    _s2, first2 = started(cache)
    assert one(first2).nonce == r1.nonce  # another stream has its own sequence


def test_4_4_nack_is_recorded_counted_and_not_resent() -> None:
    cache = make_cache(cds=[cluster("a")])
    s, first = started(cache)
    ack(s, one(first))
    set_types(cache, cds=[cluster("a", timeout=2.0)])
    bad = one(s.on_snapshot(cache.get("g")))
    before = metrics.NACKS.labels("clusters")._value.get()
    out = s.on_request(sreq(CDS, nonce=bad.nonce, version="old", error="bad cluster"))
    assert out == []
    st = s.status.types[CDS]
    assert st.last_error == "bad cluster" and st.nacks == 1 and st.state() == "NACKED"
    assert metrics.NACKS.labels("clusters")._value.get() == before + 1
    # Same content again: nothing is resent, however often the client asks.
    assert s.on_snapshot(cache.get("g")) == []
    assert s.on_request(sreq(CDS, nonce=bad.nonce, version="old")) == []
    # New content is sent and, once ACKed, clears the error.
    set_types(cache, cds=[cluster("a", timeout=3.0)])
    good = one(s.on_snapshot(cache.get("g")))
    assert good.version != bad.version
    ack(s, good)
    assert st.last_error is None and st.state() == "SYNCED"


def test_4_5_stale_nonce_is_ignored() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")], eds=[cla("a"), cla("b")])
    s, first = started(cache)
    ack(s, one(first))
    r1 = one(s.on_request(sreq(EDS, ["a"])))
    set_types(cache, eds=[cla("a", 81), cla("b")])
    # A change arrives before the ACK: it waits (one in flight per type).
    assert s.on_snapshot(cache.get("g")) == []
    r2 = one(ack(s, r1, ["a"]))
    # A request carrying the old nonce is stale: its subscription change is ignored.
    assert s.on_request(sreq(EDS, ["a", "b"], nonce=r1.nonce)) == []
    assert s.states[EDS].names == frozenset({"a"})
    out = ack(s, r2, ["a", "b"])
    assert sotw_names(one(out)) == ["b"]


def test_4_6_legacy_wildcard_and_explicit_star() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache)  # empty names: legacy wildcard
    r = one(first)
    assert sotw_names(r) == ["a", "b"] and s.states[CDS].wildcard
    _s2, first2 = started(cache, names=("*",))
    assert sotw_names(one(first2)) == ["a", "b"]
    # "*" plus a name: still everything.
    s3, first3 = started(cache, names=("*", "a"))
    assert sotw_names(one(first3)) == ["a", "b"] and s3.states[CDS].wildcard


def test_4_6_legacy_wildcard_ends_once_a_name_was_sent() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache, names=("a",))
    r = one(first)
    assert sotw_names(r) == ["a"] and not s.states[CDS].wildcard
    # Now an empty list means "no names", not wildcard.
    out = ack(s, r, [])
    assert sotw_names(one(out)) == []


def test_4_6_empty_names_is_not_wildcard_for_eds_or_rds() -> None:
    cache = make_cache(eds=[cla("a")], rds=[routes("r", "a")])
    s, first = started(cache, type_url=EDS)
    assert first == [] and not s.states[EDS].wildcard


def test_4_7_subscription_to_a_missing_name_is_served_when_it_appears() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s, first = started(cache, type_url=EDS, names=("later",))
    assert first == []
    set_types(cache, eds=[cla("a"), cla("later")])
    assert sotw_names(one(s.on_snapshot(cache.get("g")))) == ["later"]


def test_4_7_newly_named_resource_is_resent_even_if_sent_before() -> None:
    cache = make_cache(eds=[cla("a"), cla("b")])
    s, first = started(cache, type_url=EDS, names=("a",))
    r = one(first)
    out = ack(s, r, ["b"])  # drop a, add b
    r2 = one(out)
    assert sotw_names(r2) == ["b"]
    out = ack(s, r2, ["a", "b"])  # a again: unchanged, but newly named on the stream
    assert sotw_names(one(out)) == ["a"]


def test_4_8_lds_cds_carry_full_state_and_absence_deletes() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache)
    ack(s, one(first))
    # Only a changes, yet the response carries b too: full state.
    set_types(cache, cds=[cluster("a", timeout=5.0), cluster("b")])
    full = one(s.on_snapshot(cache.get("g")))
    assert sotw_names(full) == ["a", "b"]
    ack(s, full)
    # b is removed and a is unchanged: the response still carries a, and b's absence
    # is the deletion (SotW has no removed list; nothing else will tell the proxy).
    set_types(cache, cds=[cluster("a", timeout=5.0)])
    deleted = one(s.on_snapshot(cache.get("g")))
    assert sotw_names(deleted) == ["a"]
    ack(s, deleted)
    assert set(s.states[CDS].known.resources) == {"a"}


def test_4_8_eds_rds_carry_only_changed_resources() -> None:
    cache = make_cache(eds=[cla("a"), cla("b"), cla("c")])
    s, first = started(cache, type_url=EDS, names=("a", "b", "c"))
    r = one(first)
    assert sotw_names(r) == ["a", "b", "c"]
    ack(s, r, ["a", "b", "c"])
    set_types(cache, eds=[cla("a"), cla("b", 99), cla("c")])
    out = one(s.on_snapshot(cache.get("g")))
    assert sotw_names(out) == ["b"]
    # The version still describes the whole subscribed state.
    assert decode_sotw(out).version_info == cache.get("g").get(EDS).version


def test_4_8_duplicate_names_are_refused_and_the_old_snapshot_kept() -> None:
    cache = make_cache(cds=[cluster("a")])
    before = cache.get("g")
    with pytest.raises(ValueError, match="duplicate"):
        set_types(cache, cds=[cluster("x"), cluster("x")])
    assert cache.get("g") is before


def _envoy_like(cache: SnapshotCache):  # type: ignore[no-untyped-def]
    """Bring a session to a fully acked CDS/EDS/LDS/RDS state, as Envoy does."""
    s, first = started(cache)
    cds = one(first, CDS)
    ack(s, cds)
    eds = one(s.on_request(sreq(EDS, sorted(cache.get("g").get(EDS).resources))), EDS)
    ack(s, eds, sorted(cache.get("g").get(EDS).resources))
    lds = one(s.on_request(sreq(LDS)), LDS)
    ack(s, lds)
    rds = one(s.on_request(sreq(RDS, ["routes"])), RDS)
    assert ack(s, rds, ["routes"]) == []
    return s


def test_4_9_cluster_change_is_followed_by_endpoints_even_if_unchanged() -> None:
    cache = make_cache(
        cds=[cluster("a"), cluster("b")],
        eds=[cla("a"), cla("b")],
        lds=[listener("http")],
        rds=[routes("routes", "a", "b")],
    )
    s = _envoy_like(cache)
    set_types(cache, cds=[cluster("a", timeout=4.0), cluster("b")])
    cds, eds = s.on_snapshot(cache.get("g"))
    assert (cds.type_url, eds.type_url) == (CDS, EDS)
    assert sotw_names(eds) == ["a"]  # re-warm a with its unchanged endpoints


def test_4_9_push_order_cds_eds_lds_rds() -> None:
    cache = make_cache(
        cds=[cluster("a")], eds=[cla("a")], lds=[listener("http")], rds=[routes("routes", "a")]
    )
    s = _envoy_like(cache)
    old_eds_nonce = s.states[EDS].nonce
    # A change that touches every type at once.
    set_types(
        cache,
        cds=[cluster("a"), cluster("n")],
        eds=[cla("a", 1), cla("n")],
        lds=[listener("http", "routes2")],
        rds=[routes("routes", "a"), routes("routes2", "a", "n")],
    )
    sent = s.on_snapshot(cache.get("g"))
    assert [r.type_url for r in sent] == [CDS, EDS]  # EDS may follow CDS; LDS waits for ACKs
    cds, eds = sent
    assert old_eds_nonce and eds.nonce != old_eds_nonce
    # Envoy's order: the CDS update pauses EDS; on resume it asks for the new cluster's
    # endpoints still carrying the previous EDS nonce (stale: ignored, so the
    # subscription stays {a}), then ACKs CDS.
    assert s.on_request(sreq(EDS, ["a", "n"], nonce=old_eds_nonce)) == []
    assert s.states[EDS].names == frozenset({"a"})
    assert s.on_request(sreq(CDS, nonce=cds.nonce, version=cds.version)) == []
    assert s.states[EDS].nonce == eds.nonce and s.states[EDS].inflight is not None
    # The EDS ACK names n; n is sent before any listener or route.
    out = s.on_request(sreq(EDS, ["a", "n"], nonce=eds.nonce, version=eds.version))
    assert [r.type_url for r in out] == [EDS] and sotw_names(out[0]) == ["n"]
    out = ack(s, out[0], ["a", "n"])
    assert [r.type_url for r in out] == [LDS]
    # Listener then routes; RDS follows LDS without waiting for its ACK (warming pair).
    lds = out[0]
    out = s.on_request(sreq(RDS, ["routes", "routes2"], nonce=s.states[RDS].nonce))
    assert [r.type_url for r in out] == [RDS]
    assert sotw_names(out[0]) == ["routes2"]  # routes is unchanged and already held
    ack(s, lds)


def _drop_cluster_b() -> tuple[SotwSession, Response]:
    """An Envoy-like stream holding clusters a, b; then b and its route are removed."""
    cache = make_cache(
        cds=[cluster("a"), cluster("b")],
        eds=[cla("a"), cla("b")],
        lds=[listener("http")],
        rds=[routes("routes", "a", "b")],
    )
    s = _envoy_like(cache)
    set_types(cache, cds=[cluster("a")], eds=[cla("a")], rds=[routes("routes", "a")])
    # Routes go first; the cluster they stop using is still there.
    return s, one(s.on_snapshot(cache.get("g")), RDS)


def test_4_9_removed_cluster_kept_until_routes_no_longer_use_it() -> None:
    s, rds = _drop_cluster_b()
    assert "b" in s.states[CDS].known.resources
    out = ack(s, rds, ["routes"])
    cds = one(out, CDS)
    assert sotw_names(cds) == ["a"]  # only now is b removed (make-before-break)


def test_4_9_removed_cluster_stays_while_routes_are_nacked() -> None:
    s, rds = _drop_cluster_b()
    out = s.on_request(sreq(RDS, ["routes"], nonce=rds.nonce, version="x", error="no"))
    assert out == []  # the proxy still routes to b, so b stays


def test_4_11_versions_are_content_hashes_identical_across_replicas() -> None:
    a = make_cache(cds=[cluster("x"), cluster("y")], eds=[cla("x", 1, 2)])
    b = make_cache(cds=[cluster("y"), cluster("x")], eds=[cla("x", 1, 2)])
    for t in (CDS, EDS):
        assert a.get("g").get(t).version == b.get("g").get(t).version
        assert {n: r.version for n, r in a.get("g").get(t).resources.items()} == {
            n: r.version for n, r in b.get("g").get(t).resources.items()
        }


def test_4_11_reconnect_with_current_version_gets_nothing_resent() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    _s, first = started(cache)
    r = one(first)
    s2 = sotw(cache)  # a new stream, e.g. to another replica
    assert s2.on_request(sreq(CDS, node=NODE, version=r.version)) == []
    assert s2.status.types[CDS].state() == "SYNCED"
    eds_version = cache.get("g").get(EDS).version
    assert s2.on_request(sreq(EDS, ["a"], version=eds_version)) == []
    # But an outdated version is answered.
    s3 = sotw(cache)
    assert one(s3.on_request(sreq(CDS, node=NODE, version="stale"))).version == r.version


def test_4_13_only_changes_are_sent() -> None:
    cache = make_cache(cds=[cluster("a")])
    s, first = started(cache)
    ack(s, one(first))
    set_types(cache, cds=[cluster("a")])  # same content
    assert s.on_snapshot(cache.get("g")) == []


def test_4_13_slow_proxy_holds_one_pending_update_per_type() -> None:
    cache = make_cache(cds=[cluster("a")])
    s, first = started(cache)
    r1 = one(first)
    for t in range(2, 12):  # ten updates while the first is unacknowledged
        set_types(cache, cds=[cluster("a", timeout=float(t))])
        assert s.on_snapshot(cache.get("g")) == []
    out = one(ack(s, r1))
    assert out.version == cache.get("g").get(CDS).version  # only the latest


def test_no_answer_before_the_group_has_a_snapshot() -> None:
    cache = SnapshotCache()
    s = sotw(cache)
    assert s.on_request(sreq(CDS, node=NODE)) == []
    set_types(cache, cds=[cluster("a")])
    assert sotw_names(one(s.on_snapshot(cache.get("g")))) == ["a"]


def test_wire_encoding_is_a_valid_discovery_response() -> None:
    cache = make_cache(cds=[cluster("a")])
    _s, first = started(cache)
    msg = decode_sotw(one(first))
    assert msg.type_url == types.CLUSTER and msg.nonce and msg.version_info
    assert msg.control_plane.identifier == "xds-server"
    assert msg.resources[0].type_url == types.CLUSTER


def test_4_9_named_cluster_client_keeps_old_cluster_until_new_one_arrives() -> None:
    # gRPC's order: LDS → RDS → CDS by name → EDS by name; it keeps old routes until
    # every cluster they name has arrived.
    cache = make_cache(
        lds=[listener("web", "web-routes")],
        rds=[routes("web-routes", "a")],
        cds=[cluster("a"), cluster("b")],
        eds=[cla("a"), cla("b")],
    )
    s, first = started(cache, type_url=LDS, names=("web",))
    ack(s, one(first), ["web"])
    ack(s, one(s.on_request(sreq(RDS, ["web-routes"]))), ["web-routes"])
    ack(s, one(s.on_request(sreq(CDS, ["a"]))), ["a"])
    ack(s, one(s.on_request(sreq(EDS, ["a"]))), ["a"])
    # Route moves to b and a is deleted, in one snapshot.
    set_types(cache, rds=[routes("web-routes", "b")], cds=[cluster("b")], eds=[cla("b")])
    rds = one(s.on_snapshot(cache.get("g")), RDS)
    # The client ACKs the route but has not got b yet: a must not be deleted.
    assert s.on_request(sreq(RDS, ["web-routes"], nonce=rds.nonce, version=rds.version)) == []
    out = s.on_request(sreq(CDS, ["a", "b"], nonce=s.states[CDS].nonce))
    cds = one(out, CDS)
    assert sotw_names(cds) == ["a", "b"]  # b added, a still there
    ack(s, cds, ["a", "b"])
    eds = one(s.on_request(sreq(EDS, ["a", "b"], nonce=s.states[EDS].nonce)), EDS)
    # Once b is held, a can go.
    out = ack(s, eds, ["a", "b"])
    assert sotw_names(one(out, CDS)) == ["b"]


def test_streams_with_the_same_subscription_share_one_names_key() -> None:
    # DESIGN §5: an Envoy's EDS ACK repeats every cluster name; the per-stream record
    # of the last request's names is one shared object, not a copy per stream.
    names = [f"c{i}" for i in range(50)]
    cache = make_cache(cds=[cluster(n) for n in names], eds=[cla(n) for n in names])
    a, b = sotw(cache), sotw(cache)
    for s in (a, b):
        s.on_request(sreq(EDS, names, node=NODE))
        eds = s.states[EDS]
        req = sreq(EDS, names, nonce=eds.nonce, version=eds.last_version or "")
        s.on_request(req)
        # The ACK is read, not changed.
        assert (req.response_nonce, req.version_info, req.type_url) == (
            eds.nonce,
            eds.last_version,
            EDS,
        )
    assert a.states[EDS].names_key is b.states[EDS].names_key
    # A stream whose names change gets its own key; the other keeps the shared one.
    a.on_request(sreq(EDS, names[:10], nonce=a.states[EDS].nonce))
    assert a.states[EDS].names_key is not b.states[EDS].names_key
    assert a.states[EDS].names == frozenset(names[:10])


def test_an_ack_received_as_bytes_with_unchanged_names_is_not_re_serialised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DESIGN §5: the gRPC layer hands SotW requests over as received; an ACK that
    # repeats the subscription is recognised from its bytes, without the copy and
    # re-serialisation of `_names_key` (counted, not timed).
    from xds_server import session_sotw

    names = [f"c{i}" for i in range(50)]
    cache = make_cache(cds=[cluster(n) for n in names], eds=[cla(n) for n in names])
    s = sotw(cache)
    s.on_request(sreq(EDS, names, node=NODE).SerializeToString())
    calls: list[int] = []
    real = session_sotw._names_key

    def counting(req):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(req)

    monkeypatch.setattr(session_sotw, "_names_key", counting)
    eds = s.states[EDS]
    for _ in range(3):
        raw = sreq(EDS, names, nonce=eds.nonce, version=eds.last_version or "")
        assert s.on_request(raw.SerializeToString()) == []
    assert calls == [] and eds.inflight is None and eds.known.version == eds.last_version
    # Changed names are seen, as bytes too.
    out = s.on_request(sreq(EDS, names[:10], nonce=eds.nonce).SerializeToString())
    assert calls == [1] and eds.names == frozenset(names[:10]) and out == []


def test_a_request_as_bytes_in_another_field_order_is_still_read_right() -> None:
    # Encoders write fields in number order, but protobuf allows any order: an ACK that
    # repeats the held names and names one more after its nonce subscribes to it too.
    names = ["a", "b", "c"]
    cache = make_cache(cds=[cluster(n) for n in names], eds=[cla(n) for n in names])
    s = sotw(cache)
    s.on_request(sreq(EDS, ["a", "b"], node=NODE).SerializeToString())
    eds = s.states[EDS]
    ack_raw = sreq(EDS, ["a", "b"], nonce=eds.nonce, version=eds.last_version or "")
    extra = discovery_pb2.DiscoveryRequest(resource_names=["c"]).SerializeToString()
    out = s.on_request(ack_raw.SerializeToString() + extra)
    assert eds.names == frozenset(names)
    assert one(out, EDS).names == ["c"]


def test_a_request_that_is_not_protobuf_ends_the_stream() -> None:
    s = sotw(make_cache(cds=[cluster("a")]))
    with pytest.raises(ProtocolError) as e:
        s.on_request(b"\xff\xff\xff")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
