"""The pieces behind mutual TLS on the xDS port, without sockets: the peer's SPIFFE ID
from a certificate, the node/identity rule, the log-once memory, where the CA comes from
at start, the serving files' reload rule and `ca issue --host`."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.harness.xds_tls import node, write_workload
from xds_server.identity.ca import CertificateAuthority, intermediate_under
from xds_server.identity.ca_store import open_ca
from xds_server.identity.peer import DenialLog, PeerIdentityError, node_mismatch, peer_identity
from xds_server.identity.pki import CaError, PrivateKey, pem, random_serial
from xds_server.identity.server_tls import ServerTls, TlsFiles
from xds_server.identity.spiffe import SpiffeId

WEB = SpiffeId("cluster.local", "default", "web")


def auth(cert: x509.Certificate) -> dict[str, list[bytes]]:
    return {"x509_pem_cert": [cert.public_bytes(serialization.Encoding.PEM)]}


def cert_with_uris(ca: CertificateAuthority, *uris: str) -> x509.Certificate:
    key = PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if uris:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=True,
        )
    return b.sign(ca.key.key, hashes.SHA256())


def test_peer_identity_is_the_one_spiffe_uri_of_the_certificate() -> None:
    ca = CertificateAuthority.create_root()
    assert peer_identity(auth(ca.issue(WEB).certificate)) == WEB
    assert peer_identity({}) is None  # no certificate: plaintext or server-only TLS
    with pytest.raises(PeerIdentityError, match="0 SPIFFE IDs"):
        peer_identity(auth(cert_with_uris(ca)))
    with pytest.raises(PeerIdentityError, match="0 SPIFFE IDs"):
        peer_identity(auth(cert_with_uris(ca, "https://example.org/web")))
    two = cert_with_uris(ca, WEB.uri, "spiffe://cluster.local/ns/default/sa/api")
    with pytest.raises(PeerIdentityError, match="2 SPIFFE IDs"):
        peer_identity(auth(two))
    with pytest.raises(PeerIdentityError, match="path must be"):
        peer_identity(auth(cert_with_uris(ca, "spiffe://cluster.local/web")))


@pytest.mark.parametrize(
    ("namespace", "sa", "why"),
    [
        ("default", "web", None),
        ("default", "api", "SERVICE_ACCOUNT='api'"),
        ("shop", "web", "NAMESPACE='shop'"),
        (None, "web", "no NAMESPACE"),
        ("default", None, "no SERVICE_ACCOUNT"),
    ],
)
def test_node_must_claim_its_certificates_namespace_and_service_account(
    namespace: str | None, sa: str | None, why: str | None
) -> None:
    n = node("n1", namespace, sa)
    got = node_mismatch(WEB, n.id, n.metadata)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got and WEB.uri in got and "'n1'" in got


def test_denial_log_says_each_pair_once_and_stays_bounded() -> None:
    log = DenialLog(limit=3)
    assert log.first("a", "n1") and not log.first("a", "n1")
    assert log.first("a", "n2") and log.first("b", "n1")
    assert log.first("c", "n9")  # the fourth pair: memory cleared, not grown
    assert len(log._seen) == 1


def test_ca_dir_is_created_on_first_start_and_loaded_after(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    first = open_ca(ca_dir=d)
    assert first is not None and (d / "ca-key.pem").exists()
    again = open_ca(ca_dir=d)
    assert again is not None and again.certificate == first.certificate
    assert open_ca() is None


def test_plugged_in_ca_reads_istio_cacerts_beside_ca_cert(tmp_path: Path) -> None:
    root = CertificateAuthority.create_root("example.org")
    inter = intermediate_under(root, "example.org")
    d = tmp_path / "cacerts"
    inter.save_dir(d)  # ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem
    ca = open_ca(ca_cert=d / "ca-cert.pem", ca_key=d / "ca-key.pem")
    assert ca is not None and ca.certificate == inter.certificate
    assert ca.trust_bundle.roots == (root.certificate,)
    with pytest.raises(CaError, match="give both"):
        open_ca(ca_cert=d / "ca-cert.pem")
    with pytest.raises(CaError, match="not both"):
        open_ca(ca_dir=d, ca_cert=d / "ca-cert.pem", ca_key=d / "ca-key.pem")


def test_server_tls_reloads_only_a_changed_and_consistent_set(tmp_path: Path) -> None:
    ca = CertificateAuthority.create_root()
    d = write_workload(tmp_path / "server", ca.issue(WEB))
    files = TlsFiles(d / "cert-chain.pem", d / "key.pem", d / "root-cert.pem")
    tls = ServerTls(files)
    assert tls.mutual and tls.fetch() is None  # unchanged: gRPC keeps its context
    new = ca.issue(WEB)
    write_workload(d, new)
    assert tls.fetch() is not None and tls.serial == new.serial
    assert tls.fetch() is None
    assert not ServerTls(TlsFiles(d / "cert-chain.pem", d / "key.pem")).mutual  # TLS only
    (d / "key.pem").write_bytes(ca.issue(WEB).key_pem())  # a key of another certificate
    assert tls.fetch() is None and tls.serial == new.serial
    with pytest.raises(CaError, match="does not match"):
        ServerTls(files)


def test_issue_adds_hosts_as_dns_and_ip_sans() -> None:
    ca = CertificateAuthority.create_root()
    cert = ca.issue(WEB, hosts=["localhost", "127.0.0.1", "xds.example.org"]).certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "xds.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB.uri]
    assert b"PRIVATE" not in pem((cert,))
