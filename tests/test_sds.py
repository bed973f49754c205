"""Workload certificates over SDS, sans-IO: sessions asking a `SecretStore` for the
Secret type (SotW and delta), one identity's secrets only, renewal and CA rotation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from tests.xds_util import (
    GROUP,
    ack,
    cluster,
    decode_delta,
    decode_sotw,
    delta,
    dreq,
    make_cache,
    one,
    sotw,
    sreq,
)
from xds_server import csds, diff, secrets, status, types
from xds_server.cache import SnapshotCache
from xds_server.identity.ca import CertificateAuthority
from xds_server.identity.pki import TrustBundle, issued_by, spki
from xds_server.response import Response
from xds_server.secrets import CERTIFICATE, ROOT_CA, SecretStore
from xds_server.session import Session
from xds_server.session_delta import DeltaSession
from xds_server.session_sotw import SotwSession

SDS = types.SECRET
NAMES = (CERTIFICATE, ROOT_CA)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create_root("example.org", now=T0 - dt.timedelta(days=1))


@pytest.fixture
def cache(ca: CertificateAuthority, clock: Clock) -> Iterator[SnapshotCache]:
    c = make_cache(cds=[cluster("a")])
    c.secrets = SecretStore(
        ca, trust_domain="example.org", ttl=dt.timedelta(seconds=4), clock=clock, rand=lambda: 0.5
    )
    yield c


def store_of(cache: SnapshotCache) -> SecretStore:
    assert cache.secrets is not None
    return cache.secrets


def node(sa: str, ns: str = "default", node_id: str | None = None) -> base_pb2.Node:
    n = base_pb2.Node(id=node_id or f"{sa}-1", cluster=GROUP)
    if ns:
        n.metadata.fields["NAMESPACE"].string_value = ns
    if sa:
        n.metadata.fields["SERVICE_ACCOUNT"].string_value = sa
    return n


class Woken:
    def __init__(self, session: Session) -> None:
        self.count = 0
        session.wake = self

    def __call__(self) -> None:
        self.count += 1


def sotw_secrets(resp: Response) -> dict[str, secret_pb2.Secret]:
    out = {}
    for a in decode_sotw(resp).resources:
        s = secret_pb2.Secret()
        assert a.Unpack(s)
        out[s.name] = s
    return out


def delta_secrets(resp: Response) -> dict[str, secret_pb2.Secret]:
    out = {}
    for r in decode_delta(resp).resources:
        s = secret_pb2.Secret()
        assert r.resource.Unpack(s)
        out[s.name] = s
    return out


def leaf(secret: secret_pb2.Secret) -> x509.Certificate:
    return x509.load_pem_x509_certificates(secret.tls_certificate.certificate_chain.inline_bytes)[0]


def uri(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def roots(secret: secret_pb2.Secret) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(secret.validation_context.trusted_ca.inline_bytes)


def sotw_start(cache: SnapshotCache, sa: str, **kw: str) -> tuple[SotwSession, Response]:
    s = sotw(cache)
    return s, one(s.on_request(sreq(SDS, NAMES, node=node(sa, **kw))), SDS)


def delta_start(cache: SnapshotCache, sa: str) -> tuple[DeltaSession, Response]:
    s = delta(cache)
    return s, one(s.on_request(dreq(SDS, NAMES, node=node(sa))), SDS)


def dack(s: DeltaSession, resp: Response) -> list[Response]:
    return s.on_request(dreq(SDS, nonce=resp.nonce))


def test_sotw_serves_default_and_rootca_for_the_node_identity(
    cache: SnapshotCache, ca: CertificateAuthority
) -> None:
    s, resp = sotw_start(cache, "web")
    got = sotw_secrets(resp)
    assert sorted(got) == sorted(NAMES)
    cert = leaf(got[CERTIFICATE])
    assert uri(cert) == ["spiffe://example.org/ns/default/sa/web"]
    assert issued_by(cert, ca.certificate)
    key = serialization.load_pem_private_key(
        got[CERTIFICATE].tls_certificate.private_key.inline_bytes, None
    )
    assert spki(key.public_key()) == spki(cert.public_key())  # type: ignore[arg-type]
    assert roots(got[ROOT_CA]) == [ca.certificate]
    assert ack(s, resp, NAMES) == []
    st = s.status.types[SDS]
    assert st.state(status.target_version(cache.get(GROUP), st)) == "SYNCED"


def test_identities_get_their_own_certificate_and_share_it_with_their_proxies(
    cache: SnapshotCache,
) -> None:
    _, web1 = sotw_start(cache, "web")
    _, web2 = sotw_start(cache, "web")
    _, api = sotw_start(cache, "api")
    assert web1.data is web2.data  # one identity: one certificate, one encoding
    assert leaf(sotw_secrets(api)[CERTIFICATE]) != leaf(sotw_secrets(web1)[CERTIFICATE])
    assert uri(leaf(sotw_secrets(api)[CERTIFICATE])) == ["spiffe://example.org/ns/default/sa/api"]
    web_key = sotw_secrets(web1)[CERTIFICATE].tls_certificate.private_key.inline_bytes
    assert web_key not in api.data


def test_other_names_and_nodes_without_identity_get_nothing(cache: SnapshotCache) -> None:
    s = sotw(cache)
    # A name that is not this identity's (another SPIFFE ID, another secret) is not served.
    api_name = "spiffe://example.org/ns/default/sa/api"
    assert s.on_request(sreq(SDS, [api_name], node=node("web"))) == []
    assert s.on_request(sreq(SDS, ["api-cert"], node=node("web"))) == []
    for bad in (node("web", ns=""), node("", ns="default"), node("Not_A_Name")):
        s = sotw(cache)
        assert s.on_request(sreq(SDS, NAMES, node=bad)) == [], bad
    d = delta(cache)
    resp = one(d.on_request(dreq(SDS, NAMES, node=node("web", ns=""))), SDS)
    assert delta_secrets(resp) == {}
    assert sorted(decode_delta(resp).removed_resources) == sorted(NAMES)


def test_no_ca_no_secrets() -> None:
    cache = make_cache(cds=[cluster("a")])
    s = sotw(cache)
    assert s.on_request(sreq(SDS, NAMES, node=node("web"))) == []


def test_sotw_renewal_at_half_life_wakes_the_identity_and_resends_both(
    cache: SnapshotCache, clock: Clock
) -> None:
    s, resp = sotw_start(cache, "web")
    other, other_resp = sotw_start(cache, "api")
    ack(s, resp, NAMES)
    ack(other, other_resp, NAMES)
    woken, other_woken = Woken(s), Woken(other)
    store = store_of(cache)
    serial = leaf(sotw_secrets(resp)[CERTIFICATE]).serial_number
    # TTL 4s, renewal at 50% + 0.5 x 10% jitter = 2.2s after issuance (not after the
    # backdated notBefore, which would be long past).
    assert store.next_due() == T0 + dt.timedelta(seconds=2.2)
    clock.advance(2.1)
    assert store.renew_due() == 0 and woken.count == 0
    clock.advance(0.1)
    assert store.renew_due() == 2
    assert woken.count == 1 and other_woken.count == 1
    new = one(s.on_snapshot(cache.get(GROUP)), SDS)
    got = sotw_secrets(new)
    assert sorted(got) == sorted(NAMES)
    assert leaf(got[CERTIFICATE]).serial_number != serial
    assert new.version != resp.version


def test_delta_renewal_sends_only_the_new_certificate(cache: SnapshotCache, clock: Clock) -> None:
    s, resp = delta_start(cache, "web")
    assert sorted(delta_secrets(resp)) == sorted(NAMES)
    assert dack(s, resp) == []
    clock.advance(3)
    store = store_of(cache)
    assert store.renew_due() == 1
    new = one(s.on_snapshot(cache.get(GROUP)), SDS)
    assert list(delta_secrets(new)) == [CERTIFICATE]
    # A reconnecting proxy that names what it holds is not sent it again.
    again = delta(cache)
    versions = {r.name: r.version for r in decode_delta(new).resources}
    versions[ROOT_CA] = {r.name: r.version for r in decode_delta(resp).resources}[ROOT_CA]
    out = again.on_request(dreq(SDS, NAMES, initial=versions, node=node("web")))
    assert out == []


def test_unused_identities_are_dropped_at_renewal_not_reissued(
    cache: SnapshotCache, clock: Clock
) -> None:
    s, resp = sotw_start(cache, "web")
    store = store_of(cache)
    s.close()
    # Reconnecting before renewal gets the same certificate.
    s2, resp2 = sotw_start(cache, "web")
    assert sotw_secrets(resp2) == sotw_secrets(resp)
    assert [d["streams"] for d in store.describe()] == [1]
    s2.close()
    clock.advance(3)
    assert store.renew_due() == 0
    assert store.describe() == []


def test_ca_rotation_trusts_both_roots_before_signing_with_the_new_key(
    cache: SnapshotCache, ca: CertificateAuthority, clock: Clock
) -> None:
    store = store_of(cache)
    store.rotation_wait = dt.timedelta(hours=1)
    web, r1 = sotw_start(cache, "web")
    api, r2 = sotw_start(cache, "api")
    ack(web, r1, NAMES)
    new = CertificateAuthority.create_root("example.org", now=T0 - dt.timedelta(days=1))
    new = new.with_trust_bundle(TrustBundle((new.certificate, ca.certificate)))
    store.set_ca(new)
    assert store.rotating == "trust"
    pushed = one(web.on_snapshot(cache.get(GROUP)), SDS)
    got = sotw_secrets(pushed)
    assert roots(got[ROOT_CA]) == [ca.certificate, new.certificate]
    assert issued_by(leaf(got[CERTIFICATE]), ca.certificate)  # not yet the new key
    # api has not acknowledged the two-root bundle: nothing is signed with the new key.
    ack(web, pushed, NAMES)
    store.renew_due()
    assert store.rotating == "trust"
    ack(api, one(ack(api, r2, NAMES), SDS), NAMES)  # its ACK is answered with the bundle
    store.renew_due()
    assert store.rotating == "sign"
    for s in (web, api):
        pushed = one(s.on_snapshot(cache.get(GROUP)), SDS)
        got = sotw_secrets(pushed)
        assert issued_by(leaf(got[CERTIFICATE]), new.certificate)
        assert len(roots(got[ROOT_CA])) == 2
        store.renew_due()
        assert store.rotating == "sign"  # until both hold their new certificates
        ack(s, pushed, NAMES)
    store.renew_due()
    assert store.rotating is None
    # The new CA's bundle (`ca rotate` keeps the old root until --finish) is served.
    assert store.trust_bundle == new.trust_bundle
    store.set_ca(new.with_trust_bundle(TrustBundle((new.certificate,))))
    got = sotw_secrets(one(web.on_snapshot(cache.get(GROUP)), SDS))
    assert roots(got[ROOT_CA]) == [new.certificate]


def test_ca_rotation_goes_on_after_the_wait_when_a_stream_never_acks(
    cache: SnapshotCache, ca: CertificateAuthority, clock: Clock
) -> None:
    store = store_of(cache)
    store.rotation_wait = dt.timedelta(seconds=30)
    sotw_start(cache, "web")  # never ACKs
    store.set_ca(CertificateAuthority.create_root("example.org", now=T0 - dt.timedelta(days=1)))
    store.renew_due()
    assert store.rotating == "trust"
    clock.advance(31)
    store.renew_due()
    assert store.rotating == "sign"


def test_secret_resources_render_redacted_but_go_out_whole(cache: SnapshotCache) -> None:
    _, resp = sotw_start(cache, "web")
    key = sotw_secrets(resp)[CERTIFICATE].tls_certificate.private_key.inline_bytes
    assert b"PRIVATE KEY" in key and key in resp.data
    for r in resp.resources:
        shown = r.to_any().value + r.message().SerializeToString() + repr(r).encode()
        assert b"PRIVATE KEY" not in shown and key not in shown
    default = next(r for r in resp.resources if r.name == CERTIFICATE)
    assert default.message().tls_certificate.private_key.inline_string == secrets.REDACTED


def test_diff_and_csds_compare_secrets_with_what_the_stream_was_sent(
    cache: SnapshotCache, clock: Clock
) -> None:
    s, resp = sotw_start(cache, "web")
    ack(s, resp, NAMES)
    state = csds.of_session(s)
    assert state is not None
    # The group's snapshot holds no secrets: that must not read as "removed".
    found = diff.compare([state], cache.get(GROUP))
    assert found.changes == [] and found.types["secrets"]["state"] == "SYNCED", found
    configs = csds.type_configs(s.status.types[SDS], state.held[SDS], cache.get(GROUP))
    assert sorted(c.name for c in configs) == sorted(NAMES)
    assert {c.client_status for c in configs} == {dump_pb2.ACKED}
