"""Responses are encoded once per transition and shared by the streams that make it
(DESIGN §5), without breaking per-stream nonces (§4.3, §4.5)."""

from __future__ import annotations

from tests.xds_util import (
    CDS,
    EDS,
    NODE,
    ack,
    cla,
    cluster,
    decode_delta,
    decode_sotw,
    delta,
    dreq,
    make_cache,
    one,
    set_types,
    sotw,
    sreq,
)
from xds_server.cache import SnapshotCache
from xds_server.session_delta import DeltaSession
from xds_server.session_sotw import SotwSession


def _sotw_synced(cache: SnapshotCache) -> SotwSession:
    """A SotW stream holding clusters a, b and their endpoints, all ACKed."""
    s = sotw(cache)
    ack(s, one(s.on_request(sreq(CDS, node=NODE)), CDS))
    ack(s, one(s.on_request(sreq(EDS, ["a", "b"])), EDS), ["a", "b"])
    return s


def test_streams_of_a_group_share_one_encoding_per_push_sotw() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")], eds=[cla("a"), cla("b")])
    s1 = sotw(cache)
    s2 = sotw(cache)
    first1 = one(s1.on_request(sreq(CDS, node=NODE)), CDS)
    first2 = one(s2.on_request(sreq(CDS, node=NODE)), CDS)
    assert first1.data is first2.data  # the full state: one encoding
    assert first1.resources is first2.resources  # and one listing, not one per stream
    ack(s1, first1)
    ack(s2, first2)
    e1 = one(s1.on_request(sreq(EDS, ["a", "b"])), EDS)
    e2 = one(s2.on_request(sreq(EDS, ["a", "b"])), EDS)
    assert e1.data is e2.data
    ack(s1, e1, ["a", "b"])
    ack(s2, e2, ["a", "b"])
    # An endpoint change: both streams make the same transition, one encoding.
    set_types(cache, cds=[cluster("a"), cluster("b")], eds=[cla("a", 81), cla("b")])
    u1 = one(s1.on_snapshot(cache.get("g")), EDS)
    u2 = one(s2.on_snapshot(cache.get("g")), EDS)
    assert u1.data is u2.data and u1.resources is u2.resources
    msg = decode_sotw(u1)
    assert msg.nonce == u1.nonce == u2.nonce and msg.version_info == u1.version
    assert [a.type_url for a in msg.resources] == [EDS] and u1.names == ["a"]
    # Each stream takes it as the ACK of what it was sent.
    assert ack(s1, u1, ["a", "b"]) == [] and s1.states[EDS].inflight is None
    assert ack(s2, u2, ["a", "b"]) == [] and s2.states[EDS].inflight is None


def test_streams_of_a_group_share_one_encoding_per_push_delta() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")], eds=[cla("a"), cla("b")])
    streams: list[DeltaSession] = []
    for _ in range(2):
        s = delta(cache)
        r = one(s.on_request(dreq(CDS, node=NODE)), CDS)
        s.on_request(dreq(CDS, nonce=r.nonce))
        r = one(s.on_request(dreq(EDS, ["a", "b"])), EDS)
        s.on_request(dreq(EDS, nonce=r.nonce))
        streams.append(s)
    set_types(cache, cds=[cluster("a", timeout=2.0)], eds=[cla("a", 81)])
    out = [s.on_snapshot(cache.get("g")) for s in streams]
    cds1, cds2 = (one([r for r in o if r.type_url == CDS]) for o in out)
    assert cds1.data is cds2.data and cds1.resources is cds2.resources
    assert list(decode_delta(cds1).removed_resources) == ["b"] and cds1.names == ["a"]


def test_a_stream_never_sends_its_last_nonce_again() -> None:
    # After a NACK the same transition can be offered again; its shared encoding's
    # nonce is the one the client just answered, so the stream gets a fresh one, or a
    # request sent before the resend arrived would count as the resend's ACK.
    cache = make_cache(cds=[cluster("a"), cluster("b")], eds=[cla("a"), cla("b")])
    s, other = _sotw_synced(cache), _sotw_synced(cache)
    set_types(cache, cds=[cluster("a"), cluster("b")], eds=[cla("a", 81), cla("b")])
    sent = one(s.on_snapshot(cache.get("g")), EDS)
    s.on_request(sreq(EDS, ["a", "b"], nonce=sent.nonce, error="rejected"))
    s.states[EDS].last_version = None  # whatever makes the session offer it again
    again = one(s.on_snapshot(cache.get("g")), EDS)
    assert again.nonce != sent.nonce
    assert decode_sotw(again).resources == decode_sotw(sent).resources
    # Another stream making the transition still gets a shared encoding.
    assert one(other.on_snapshot(cache.get("g")), EDS).data in (sent.data, again.data)


def test_a_response_with_names_of_the_stream_s_own_is_not_shared() -> None:
    # §4.10: a delta stream that subscribed to a missing name is told it is removed;
    # that is its own response, not the group's: a stream that did not ask for the name
    # making the same transition must not be told about it.
    cache = make_cache(cds=[cluster("a"), cluster("b")], eds=[cla("a"), cla("b")])
    s1, s2 = delta(cache), delta(cache)
    r1 = one(s1.on_request(dreq(EDS, ["a", "b", "missing"], node=NODE)), EDS)
    r2 = one(s2.on_request(dreq(EDS, ["a", "b"], node=NODE)), EDS)
    assert list(decode_delta(r1).removed_resources) == ["missing"]
    assert list(decode_delta(r2).removed_resources) == []
    assert [r.name for r in decode_delta(r2).resources] == ["a", "b"]
