"""Issue 13, test 6: mutual TLS on the xDS port, with real grpcio clients against the real
`xds-server` subprocess.

The port refuses a client without a certificate, with one from another CA and with an
expired one (the handshake fails: UNAVAILABLE); a valid client whose node claims another
identity ends with PERMISSION_DENIED and receives nothing; a swapped server certificate is
served to new clients without a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.harness.xds_tls import (
    XdsPki,
    ads_once,
    channel_credentials,
    node,
    server_serial,
)
from xds_server.identity.ca import CertificateAuthority
from xds_server.identity.cli import ROOT_CERT_FILE
from xds_server.identity.pki import PrivateKey, pem, random_serial

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)
REGISTRY = Path(__file__).resolve().parents[1] / "examples" / "registry.yaml"
Start = Callable[..., XdsServerProcess]


def rejected(server: XdsServerProcess, reason: str) -> float:
    return server.metrics().get(f'xds_streams_rejected_total{{reason="{reason}"}}', 0.0)


@pytest.fixture
def pki(tmp_path: Path) -> XdsPki:
    return XdsPki(tmp_path / "pki")


@pytest.fixture
def mtls_server(pki: XdsPki, xds_server_factory: Start) -> XdsServerProcess:
    return xds_server_factory("--file", str(REGISTRY), *pki.server_args(), insecure=False)


def roots(pki: XdsPki) -> Path:
    return pki.server_dir / ROOT_CERT_FILE


def test_valid_client_with_its_own_identity_is_served(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    web = pki.client("default", "web")
    creds = channel_credentials(web, roots(pki))
    for delta in (False, True):
        got = ads_once(mtls_server.xds_port, creds, node("web-1", "default", "web"), delta=delta)
        assert got.code is None, got
        assert got.response is not None and len(got.response.resources) > 0


def test_port_refuses_no_certificate_another_ca_and_expired(
    pki: XdsPki, mtls_server: XdsServerProcess, tmp_path: Path
) -> None:
    port, me = mtls_server.xds_port, node("web-1", "default", "web")
    no_cert = ads_once(port, channel_credentials(None, roots(pki)), me)
    assert no_cert.code == grpc.StatusCode.UNAVAILABLE and no_cert.response is None, no_cert

    other = XdsPki(tmp_path / "other")  # same trust domain and identity, another root
    foreign = ads_once(port, channel_credentials(other.client("default", "web"), roots(pki)), me)
    assert foreign.code == grpc.StatusCode.UNAVAILABLE and foreign.response is None, foreign

    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    old = pki.client("default", "web", name="expired", now=long_ago, ttl=dt.timedelta(hours=1))
    expired = ads_once(port, channel_credentials(old, roots(pki)), me)
    assert expired.code == grpc.StatusCode.UNAVAILABLE and expired.response is None, expired

    # The same port and node with a valid certificate: the refusals were the certificates.
    ok = ads_once(port, channel_credentials(pki.client("default", "web"), roots(pki)), me)
    assert ok.code is None and ok.response is not None, ok


def test_node_claiming_another_identity_gets_permission_denied_and_nothing(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    creds = channel_credentials(pki.client("default", "web"), roots(pki))
    port = mtls_server.xds_port
    before = rejected(mtls_server, "identity")
    claims = [
        node("api-1", "default", "api"),  # another service account
        node("web-1", "shop", "web"),  # another namespace
        node("web-1", None, None),  # says nothing: with mutual TLS it must
    ]
    for delta in (False, True):
        for claim in claims:
            got = ads_once(port, creds, claim, delta=delta)
            assert got.code == grpc.StatusCode.PERMISSION_DENIED, (claim, got)
            assert got.response is None
    assert "spiffe://cluster.local/ns/default/sa/web" in got.details
    assert rejected(mtls_server, "identity") == before + 2 * len(claims)
    # Logged once per (identity, node): api-1's two refusals (SotW, delta) make one line.
    lines = [ln for ln in mtls_server.log().splitlines() if "PERMISSION_DENIED" in ln]
    assert sum("'api-1'" in ln for ln in lines) == 1, lines


def test_server_certificate_swap_is_served_without_restart(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    web = pki.client("default", "web")
    first = server_serial(mtls_server.xds_port, web, roots(pki))
    assert first == pki.server.serial
    new = pki.issue_server().serial  # cert-chain.pem and key.pem replaced by renames
    wait_for(
        lambda: server_serial(mtls_server.xds_port, web, roots(pki)) == new,
        timeout=10,
        message="a new client sees the new server certificate",
    )
    got = ads_once(
        mtls_server.xds_port, channel_credentials(web, roots(pki)), node("w", "default", "web")
    )
    assert got.code is None and got.response is not None, got
    assert mtls_server.proc is not None and mtls_server.proc.poll() is None


def test_bad_swap_keeps_serving_the_last_good_certificate(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    web = pki.client("default", "web")
    old = pki.server.serial
    # A key that does not match the certificate: refused, logged, old pair kept.
    other = CertificateAuthority.create_root("cluster.local").issue(pki.server.spiffe_id)
    (pki.server_dir / "key.pem").write_bytes(other.key_pem())

    def reported() -> bool:
        server_serial(mtls_server.xds_port, web, roots(pki))  # a handshake re-reads files
        return "does not match the certificate" in mtls_server.log()

    wait_for(reported, timeout=10, message="the bad key is reported")
    assert server_serial(mtls_server.xds_port, web, roots(pki)) == old


def test_start_requires_a_choice_between_tls_and_insecure(
    xds_server_factory: Start, pki: XdsPki
) -> None:
    server = xds_server_factory(insecure=False, wait_ready=False)
    assert server.wait(20) == 2
    lines = server.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xds-server: "), lines
    assert "--xds-tls-cert" in lines[0] and "--xds-insecure" in lines[0], lines
    both = xds_server_factory("--xds-insecure", *pki.server_args(), wait_ready=False)
    assert both.wait(20) == 2 and "xds_insecure" in both.log()


def test_certificate_without_a_spiffe_id_is_denied(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    # Signed by the right CA, but naming a host instead of a workload: nobody to match.
    key = PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
        .issuer_name(pki.ca.certificate.subject)
        .public_key(key.key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("web")]), critical=False)
        .sign(pki.ca.key.key, hashes.SHA256())
    )
    creds = grpc.ssl_channel_credentials(roots(pki).read_bytes(), key.pem(), pem((cert,)))
    got = ads_once(mtls_server.xds_port, creds, node("web-1", "default", "web"))
    assert got.code == grpc.StatusCode.PERMISSION_DENIED and got.response is None, got
    assert "0 SPIFFE IDs" in got.details


def test_csds_on_the_xds_port_requires_a_client_certificate(
    pki: XdsPki, mtls_server: XdsServerProcess
) -> None:
    """CSDS shares the port, so it shares the credentials: a verified client only."""
    web = pki.client("default", "web")

    def fetch(client: Path | None) -> grpc.StatusCode | None:
        creds = channel_credentials(client, roots(pki))
        with grpc.secure_channel(f"localhost:{mtls_server.xds_port}", creds) as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            try:
                stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
        return None

    assert fetch(None) == grpc.StatusCode.UNAVAILABLE
    assert fetch(web) is None


def test_server_only_tls_from_the_environment_serves_clients_without_certificates(
    pki: XdsPki, xds_server_factory: Start
) -> None:
    """TLS without --xds-client-ca: encrypted, no client identity, so no node check."""
    env = {
        "XDS_SERVER_XDS_TLS_CERT": str(pki.server_dir / "cert-chain.pem"),
        "XDS_SERVER_XDS_TLS_KEY": str(pki.server_dir / "key.pem"),
    }
    server = xds_server_factory("--file", str(REGISTRY), insecure=False, env=env)
    got = ads_once(server.xds_port, channel_credentials(None, roots(pki)), node("n", None, None))
    assert got.code is None and got.response is not None, got
    with grpc.insecure_channel(f"127.0.0.1:{server.xds_port}") as channel:
        with pytest.raises(grpc.FutureTimeoutError):  # plaintext never gets a connection
            grpc.channel_ready_future(channel).result(timeout=3)


def test_first_start_creates_the_ca_dir_and_a_half_plugged_ca_is_refused(
    tmp_path: Path, xds_server_factory: Start
) -> None:
    ca_dir = tmp_path / "cacerts"
    server = xds_server_factory("--ca-dir", str(ca_dir))
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"
    ]  # fmt: skip
    assert "created a self-signed CA" in server.log()
    half = xds_server_factory("--ca-cert", str(ca_dir / "ca-cert.pem"), wait_ready=False)
    assert half.wait(20) == 2
    assert half.log().strip() == (
        "xds-server: CA: --ca-cert and --ca-key: give both (the CA's certificate and its key)"
    )
