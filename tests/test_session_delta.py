"""Unit tests of the delta (incremental) session state machine, by DESIGN §4 rule."""

from __future__ import annotations

import grpc
import pytest

from tests.xds_util import (
    CDS,
    EDS,
    LDS,
    NODE,
    RDS,
    cla,
    cluster,
    decode_delta,
    delta,
    dreq,
    listener,
    make_cache,
    one,
    routes,
    set_types,
)
from xds_server.cache import SnapshotCache
from xds_server.response import Response
from xds_server.session import ProtocolError
from xds_server.session_delta import DeltaSession


def names(resp: Response) -> list[str]:
    return [r.name for r in decode_delta(resp).resources]


def removed(resp: Response) -> list[str]:
    return list(decode_delta(resp).removed_resources)


def dack(s: DeltaSession, resp: Response, error: str | None = None) -> list[Response]:
    return s.on_request(dreq(resp.type_url, nonce=resp.nonce, error=error))


def started(cache: SnapshotCache, type_url: str = CDS, sub: tuple[str, ...] = (), **kw: object):  # type: ignore[no-untyped-def]
    s = delta(cache)
    return s, s.on_request(dreq(type_url, sub, node=NODE, **kw))  # type: ignore[arg-type]


def test_4_1_delta_requires_type_url_on_ads() -> None:
    s = delta(make_cache(cds=[cluster("a")]))
    with pytest.raises(ProtocolError) as e:
        s.on_request(dreq("", node=NODE))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_4_6_legacy_wildcard_on_first_request_for_cds_lds() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache)
    r = one(first, CDS)
    assert names(r) == ["a", "b"] and s.states[CDS].wildcard
    msg = decode_delta(r)
    assert {x.name: x.version for x in msg.resources} == {
        n: res.version for n, res in cache.get("g").get(CDS).resources.items()
    }


def test_4_6_explicit_wildcard_and_its_unsubscribe() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache, sub=("*", "a"))
    r = one(first)
    assert names(r) == ["a", "b"]
    dack(s, r)
    out = s.on_request(dreq(CDS, unsubscribe=["*"]))
    assert s.states[CDS].wildcard is False and out == []  # pure unsubscribe: no response


def test_4_10_every_subscribed_name_is_answered_and_missing_ones_removed() -> None:
    cache = make_cache(eds=[cla("a"), cla("b")])
    s, first = started(cache, EDS, ("a", "ghost"))
    r = one(first)
    assert names(r) == ["a"] and removed(r) == ["ghost"]  # never sent, still reported
    dack(s, r)
    # Subscribing again to a held, unchanged resource returns it again.
    r2 = one(s.on_request(dreq(EDS, ["a", "b"], nonce=r.nonce)))
    assert names(r2) == ["a", "b"] and removed(r2) == []
    dack(s, r2)
    # The missing name is reported once, not on every change.
    set_types(cache, eds=[cla("a", 9), cla("b")])
    r3 = one(s.on_snapshot(cache.get("g")))
    assert names(r3) == ["a"] and removed(r3) == []


def test_4_7_missing_name_is_sent_when_it_appears_and_removed_when_it_goes() -> None:
    cache = make_cache(eds=[cla("a")])
    s, first = started(cache, EDS, ("late",))
    r = one(first)
    assert removed(r) == ["late"]
    dack(s, r)
    set_types(cache, eds=[cla("a"), cla("late")])
    r2 = one(s.on_snapshot(cache.get("g")))
    assert names(r2) == ["late"]
    dack(s, r2)
    set_types(cache, eds=[cla("a")])
    assert removed(one(s.on_snapshot(cache.get("g")))) == ["late"]


def test_4_10_initial_resource_versions_skip_unchanged() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b"), cluster("c")])
    table = cache.get("g").get(CDS).resources
    initial = {"a": table["a"].version, "b": "outdated", "gone": "v0"}
    s, first = started(cache, initial=initial)
    r = one(first)
    assert names(r) == ["b", "c"]  # a is current, b outdated, c new
    # "gone" may still be used by the listeners/routes this resumed stream has not
    # subscribed to yet (make-before-break, §4.9); it is removed after the first ACK.
    assert removed(r) == []
    assert removed(one(dack(s, r))) == ["gone"]


def test_4_9_resumed_stream_keeps_claimed_clusters_until_routes_are_updated() -> None:
    cache = make_cache(
        cds=[cluster("a")], eds=[cla("a")], lds=[listener("http")], rds=[routes("routes", "a")]
    )
    table = cache.get("g").get(CDS).resources
    s = delta(cache)
    # Envoy resumes: every type at once, each naming what it holds (one of them,
    # cluster "old", is gone on this replica and still routed to).
    out = s.on_request(dreq(CDS, node=NODE, initial={"a": table["a"].version, "old": "v1"}))
    out += s.on_request(dreq(EDS, ["a", "old"], initial={"old": "v1"}))
    out += s.on_request(dreq(LDS, initial={"http": "v1"}))
    out += s.on_request(dreq(RDS, ["routes"], initial={"routes": "v1"}))
    assert [r.type_url for r in out] == [EDS]  # endpoints of a; nothing removed yet
    assert removed(out[0]) == [] and names(out[0]) == ["a"]
    lds, rds = dack(s, out[0])
    assert (lds.type_url, rds.type_url) == (LDS, RDS)
    assert dack(s, lds) == []
    cds, eds = dack(s, rds)  # routes no longer use "old": now it goes
    assert removed(cds) == ["old"] and removed(eds) == ["old"]


def test_4_10_initial_versions_all_current_means_no_response() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    table = cache.get("g").get(CDS).resources
    s, first = started(cache, initial={n: r.version for n, r in table.items()})
    assert first == []
    assert s.status.types[CDS].state() == "SYNCED"
    # And it is the shared view, so later changes diff cheaply.
    assert s.states[CDS].known is cache.get("g").get(CDS).full


def test_4_10_pure_unsubscribe_needs_no_response() -> None:
    cache = make_cache(eds=[cla("a"), cla("b")])
    s, first = started(cache, EDS, ("a", "b"))
    dack(s, one(first))
    assert s.on_request(dreq(EDS, unsubscribe=["b"])) == []
    # b changing later is not sent: the client no longer wants it.
    set_types(cache, eds=[cla("a"), cla("b", 7)])
    assert s.on_snapshot(cache.get("g")) == []


def test_4_10_unsubscribe_of_a_name_covered_by_wildcard_resends_it() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache, sub=("*", "a"))
    dack(s, one(first))
    out = one(s.on_request(dreq(CDS, unsubscribe=["a"])))
    assert names(out) == ["a"]  # still wanted through the wildcard


def test_4_5_delta_applies_subscriptions_even_with_a_stale_nonce() -> None:
    cache = make_cache(eds=[cla("a"), cla("b")])
    s, first = started(cache, EDS, ("a",))
    r1 = one(first)
    # Stale/unknown nonce: not an ACK, but the subscription change applies.
    assert s.on_request(dreq(EDS, ["b"], nonce="999")) == []  # r1 still in flight
    assert s.states[EDS].names == frozenset({"a", "b"})
    out = one(dack(s, r1))
    assert names(out) == ["b"]


def test_4_4_delta_nack_recorded_and_not_resent() -> None:
    cache = make_cache(cds=[cluster("a")])
    s, first = started(cache)
    dack(s, one(first))
    set_types(cache, cds=[cluster("a", 3.0)])
    bad = one(s.on_snapshot(cache.get("g")))
    assert dack(s, bad, error="rejected") == []
    st = s.status.types[CDS]
    assert st.nacks == 1 and st.last_error == "rejected"
    assert s.on_snapshot(cache.get("g")) == []
    set_types(cache, cds=[cluster("a", 4.0)])
    assert names(one(s.on_snapshot(cache.get("g")))) == ["a"]


def test_4_8_delta_sends_only_changes_and_removals() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    s, first = started(cache)
    dack(s, one(first))
    set_types(cache, cds=[cluster("a", 2.0), cluster("c")])
    r = one(s.on_snapshot(cache.get("g")))
    assert names(r) == ["a", "c"] and removed(r) == ["b"]


def test_4_9_delta_make_before_break_and_order() -> None:
    cache = make_cache(
        cds=[cluster("a"), cluster("b")],
        eds=[cla("a"), cla("b")],
        lds=[listener("http")],
        rds=[routes("routes", "a", "b")],
    )
    s, first = started(cache)
    dack(s, one(first, CDS))
    r = one(s.on_request(dreq(EDS, ["a", "b"])), EDS)
    dack(s, r)
    r = one(s.on_request(dreq(LDS)), LDS)
    dack(s, r)
    r = one(s.on_request(dreq(RDS, ["routes"])), RDS)
    dack(s, r)
    set_types(cache, cds=[cluster("a")], eds=[cla("a")], rds=[routes("routes", "a")])
    rds = one(s.on_snapshot(cache.get("g")), RDS)  # routes first; b is kept
    cds, eds = dack(s, rds)  # then the cluster, then its endpoints
    assert (cds.type_url, eds.type_url) == (CDS, EDS)
    assert removed(cds) == ["b"] and names(cds) == []
    assert removed(eds) == ["b"]


def test_4_9_delta_cluster_change_resends_endpoints() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    s, first = started(cache)
    dack(s, one(first))
    dack(s, one(s.on_request(dreq(EDS, ["a"]))))
    set_types(cache, cds=[cluster("a", 9.0)])
    cds, eds = s.on_snapshot(cache.get("g"))
    assert names(cds) == ["a"] and names(eds) == ["a"]


def test_4_11_delta_versions_are_content_hashes() -> None:
    cache = make_cache(cds=[cluster("a")])
    _s, first = started(cache)
    r = decode_delta(one(first))
    assert r.resources[0].version == cache.get("g").get(CDS).resources["a"].version
    assert r.system_version_info == cache.get("g").get(CDS).version
