"""The built-in CA: roots, plugged-in intermediates (Istio's cacerts), workload
certificates checked by two independent verifiers (`cryptography`'s X.509 path
validation and `openssl verify`), trust bundles with two roots, renewal, key hygiene."""

from __future__ import annotations

import datetime as dt
import pickle
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from xds_server.identity.ca import (
    BACKDATE,
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    CertificateAuthority,
    WorkloadCertificate,
    intermediate_under,
)
from xds_server.identity.pki import CaError, TrustBundle, pem
from xds_server.identity.renewal import renewal_time
from xds_server.identity.spiffe import SpiffeId

WEB = SpiffeId("cluster.local", "default", "web")
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
OPENSSL = shutil.which("openssl")


def verify(workload: WorkloadCertificate, bundle: TrustBundle, at: dt.datetime) -> list[str]:
    """Path-validate as a TLS server validates a client; return the leaf's URI SANs."""
    verifier = PolicyBuilder().store(Store(list(bundle.roots))).time(at).build_client_verifier()
    verified = verifier.verify(workload.certificate, list(workload.chain))
    return [str(s.value) for s in verified.subjects or []]


def openssl_verify(tmp: Path, workload: WorkloadCertificate, bundle: TrustBundle) -> str:
    """`openssl verify -CAfile roots -untrusted chain leaf` at the current time."""
    assert OPENSSL, "openssl is on this machine (checked when these tests were written)"
    (tmp / "roots.pem").write_bytes(bundle.pem())
    (tmp / "chain.pem").write_bytes(pem(workload.chain) or bundle.pem())
    (tmp / "leaf.pem").write_bytes(pem((workload.certificate,)))
    done = subprocess.run(
        [OPENSSL, "verify", "-purpose", "sslclient", "-CAfile", str(tmp / "roots.pem"),
         "-untrusted", str(tmp / "chain.pem"), str(tmp / "leaf.pem")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_root_profile() -> None:
    ca = CertificateAuthority.create_root("example.org", now=NOW)
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "example.org"
    assert ca.trust_domain == "example.org"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)
    assert ca.trust_bundle.roots == (cert,)
    assert ca.chain == () and ca.chain_for_leaf() == ()


def test_workload_certificate_profile() -> None:
    ca = CertificateAuthority.create_root(now=NOW)
    w = ca.issue(WEB, now=NOW, ttl=dt.timedelta(hours=6))
    cert = w.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty
    assert list(san.value) == [x509.UniformResourceIdentifier(WEB.uri)]  # exactly one SAN
    assert cert.subject == x509.Name([])
    assert cert.issuer == ca.certificate.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_before_utc == NOW - BACKDATE
    assert BACKDATE == dt.timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(hours=6)
    assert isinstance(w.key.key, ec.EllipticCurvePrivateKey)
    assert w.key.key.curve.name == "secp256r1"
    assert 0 < w.serial < 1 << 128


def test_default_ttl_is_24_hours_and_serials_are_random() -> None:
    ca = CertificateAuthority.create_root(now=NOW)
    a, b = ca.issue(WEB, now=NOW), ca.issue(WEB, now=NOW)
    assert a.not_after - NOW == dt.timedelta(hours=24)
    assert a.serial != b.serial
    assert a.key.pem() != b.key.pem()  # a fresh key for every certificate


def test_leaf_never_outlives_its_ca() -> None:
    ca = CertificateAuthority.create_root(now=NOW, ttl=dt.timedelta(hours=2))
    w = ca.issue(WEB, now=NOW, ttl=dt.timedelta(hours=24))
    assert w.not_after == ca.certificate.not_valid_after_utc
    with pytest.raises(CaError, match="the signing CA expired"):
        ca.issue(WEB, now=NOW + dt.timedelta(hours=3))


def test_root_and_workload_verify_with_cryptography_and_openssl(tmp_path: Path) -> None:
    ca = CertificateAuthority.create_root()
    w = ca.issue(WEB)
    assert verify(w, ca.trust_bundle, dt.datetime.now(dt.UTC)) == [WEB.uri]
    assert "leaf.pem: OK" in openssl_verify(tmp_path, w, ca.trust_bundle)
    # The same leaf under a foreign root fails both verifiers.
    other = CertificateAuthority.create_root().trust_bundle
    with pytest.raises(VerificationError):
        verify(w, other, dt.datetime.now(dt.UTC))
    assert "leaf.pem: OK" not in openssl_verify(tmp_path, w, other)


def test_backdating_and_expiry_seen_by_the_verifier() -> None:
    ca = CertificateAuthority.create_root(now=NOW)
    w = ca.issue(WEB, now=NOW, ttl=dt.timedelta(hours=1))
    # A peer whose clock is 30 s behind still accepts the new certificate...
    assert verify(w, ca.trust_bundle, NOW - dt.timedelta(seconds=30)) == [WEB.uri]
    # ...and nobody accepts it after its TTL.
    with pytest.raises(VerificationError):
        verify(w, ca.trust_bundle, NOW + dt.timedelta(hours=1, seconds=1))


def test_two_root_bundle_verifies_certificates_from_either_root(tmp_path: Path) -> None:
    old = CertificateAuthority.create_root()
    new = CertificateAuthority.create_root()
    bundle = old.trust_bundle.with_root(new.certificate)
    assert bundle.roots == (old.certificate, new.certificate)
    assert bundle.with_root(new.certificate) is bundle
    assert TrustBundle.from_pem(bundle.pem()) == bundle  # PEM concatenated, order kept
    now = dt.datetime.now(dt.UTC)
    for ca in (old, new):
        w = ca.with_trust_bundle(bundle).issue(WEB)
        assert w.trust_bundle == bundle
        assert verify(w, bundle, now) == [WEB.uri]
        assert "leaf.pem: OK" in openssl_verify(tmp_path, w, bundle)
    # The rotation's end: the old root dropped, the old root's leaves no longer verify.
    after = bundle.without_root(old.certificate)
    with pytest.raises(VerificationError):
        verify(old.issue(WEB), after, now)
    with pytest.raises(CaError, match="does not end at a root"):
        old.with_trust_bundle(after)
    with pytest.raises(CaError, match="empty"):
        TrustBundle(())


def _plug_in(tmp: Path, root: CertificateAuthority, *, with_root_in_chain: bool) -> Path:
    """Istio's cacerts for an intermediate under ``root``, as an operator would make it."""
    inter = intermediate_under(root, "cluster.local")
    d = tmp / "cacerts"
    d.mkdir()
    (d / CA_CERT).write_bytes(pem((inter.certificate,)))
    (d / CA_KEY).write_bytes(inter.key.pem())
    chain = (inter.certificate, *((root.certificate,) if with_root_in_chain else ()))
    (d / CERT_CHAIN).write_bytes(pem(chain))
    (d / ROOT_CERT).write_bytes(root.trust_bundle.pem())
    return d


@pytest.mark.parametrize("with_root_in_chain", [True, False])
def test_istio_cacerts_intermediate_is_plugged_in(tmp_path: Path, with_root_in_chain: bool) -> None:
    root = CertificateAuthority.create_root()
    ca = CertificateAuthority.load_dir(
        _plug_in(tmp_path, root, with_root_in_chain=with_root_in_chain)
    )
    assert ca.trust_bundle.roots == (root.certificate,)
    assert ca.chain == ()  # the root is not repeated in a leaf's chain
    w = ca.issue(WEB)
    assert w.chain == (ca.certificate,)  # leaf, then the intermediate
    assert x509.load_pem_x509_certificates(w.cert_chain_pem()) == [w.certificate, ca.certificate]
    assert verify(w, ca.trust_bundle, dt.datetime.now(dt.UTC)) == [WEB.uri]
    assert "leaf.pem: OK" in openssl_verify(tmp_path, w, ca.trust_bundle)
    # Without the intermediate in the chain the leaf does not verify: the chain matters.
    bare = WorkloadCertificate(WEB, w.certificate, w.key, (), w.trust_bundle)
    with pytest.raises(VerificationError):
        verify(bare, ca.trust_bundle, dt.datetime.now(dt.UTC))


def test_cacerts_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    root = CertificateAuthority.create_root()
    d = _plug_in(tmp_path, root, with_root_in_chain=True)
    stranger = CertificateAuthority.create_root()
    (d / ROOT_CERT).write_bytes(stranger.trust_bundle.pem())
    with pytest.raises(CaError, match="does not end at a root of the trust bundle"):
        CertificateAuthority.load_dir(d)
    (d / ROOT_CERT).write_bytes(root.trust_bundle.pem())
    (d / CA_KEY).write_bytes(stranger.key.pem())
    with pytest.raises(CaError, match=r"ca-key.pem: does not match the certificate in .*ca-cert"):
        CertificateAuthority.load_dir(d)
    (d / CA_KEY).unlink()
    with pytest.raises(CaError, match=r"ca-key\.pem: cannot read"):
        CertificateAuthority.load_dir(d)
    leaf_dir = tmp_path / "leaf"
    leaf_dir.mkdir()
    w = root.issue(WEB)
    (leaf_dir / CA_CERT).write_bytes(pem((w.certificate,)))
    (leaf_dir / CA_KEY).write_bytes(w.key.pem())
    (leaf_dir / ROOT_CERT).write_bytes(root.trust_bundle.pem())
    with pytest.raises(CaError, match="not a CA certificate"):
        CertificateAuthority.load_dir(leaf_dir)


def test_save_and_load_round_trip_and_refuse_overwrite(tmp_path: Path) -> None:
    ca = CertificateAuthority.create_root("example.org")
    ca.save_dir(tmp_path / "ca")
    for name, mode in [(CA_KEY, 0o600), (CA_CERT, 0o644), (ROOT_CERT, 0o644), (CERT_CHAIN, 0o644)]:
        assert stat.S_IMODE((tmp_path / "ca" / name).stat().st_mode) == mode, name
    loaded = CertificateAuthority.load_dir(tmp_path / "ca")
    assert loaded.certificate == ca.certificate and loaded.trust_bundle == ca.trust_bundle
    assert loaded.key.pem() == ca.key.pem()
    before = (tmp_path / "ca" / CA_KEY).read_bytes()
    with pytest.raises(CaError, match=r"already holds a CA \(root-cert.pem, ca-cert.pem"):
        CertificateAuthority.create_root().save_dir(tmp_path / "ca")
    assert (tmp_path / "ca" / CA_KEY).read_bytes() == before


def test_private_keys_never_in_repr_or_str() -> None:
    ca = CertificateAuthority.create_root()
    w = ca.issue(WEB)
    for obj in (ca, w, ca.key, w.key):
        for text in (repr(obj), str(obj)):
            assert "PRIVATE KEY" not in text
            assert "redacted" in text or "PrivateKey" not in text
    assert b"PRIVATE KEY" in w.key_pem()  # the key is there when asked for by name
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(w.key)


@pytest.mark.parametrize("random", [0.0, 0.25, 0.999999])
def test_renewal_between_half_life_and_half_life_plus_jitter(random: float) -> None:
    nb, na = NOW, NOW + dt.timedelta(hours=24)
    at = renewal_time(NOW, nb, na, random)
    assert (
        nb + dt.timedelta(hours=12)
        <= at
        <= nb + dt.timedelta(hours=12) + dt.timedelta(hours=24 * 0.1)
    )
    assert at == nb + dt.timedelta(hours=24) * (0.5 + 0.1 * random)


def test_renewal_is_now_when_already_due_and_random_checked() -> None:
    nb, na = NOW, NOW + dt.timedelta(hours=24)
    late = NOW + dt.timedelta(hours=20)
    assert renewal_time(late, nb, na, 0.5) == late
    assert renewal_time(NOW, nb, na, 0.0, ratio=0.8, jitter=0.0) == NOW + dt.timedelta(
        hours=24 * 0.8
    )
    with pytest.raises(ValueError, match="must be in"):
        renewal_time(NOW, nb, na, 1.0)
