"""The built-in CA: a root (or a plugged-in intermediate, Istio's ``cacerts``) that signs
X.509-SVID workload certificates, and the trust bundle that verifies them.

Profile (SPIFFE X509-SVID standard, ECDSA P-256 + SHA-256 as the research digest §5):
- root: self-signed, ``CA:TRUE`` with pathlen 1 (one intermediate may be plugged in under
  it later), key usage keyCertSign + cRLSign, subject ``O=<trust domain>`` like Istio's
  self-signed root, 10 years like Istio's ``DefaultSelfSignedCACertTTL``;
- workload: empty subject, the SPIFFE ID as the only URI SAN (critical, because the subject
  is empty), ``CA:FALSE``, key usage digitalSignature only (an ECDSA key cannot encipher,
  so Istio's Go-default keyEncipherment would say nothing true), EKU serverAuth +
  clientAuth, a random 128-bit serial, notBefore backdated for clock skew and notAfter
  never past the signing CA's.

Private keys live in :class:`~xds_server.identity.pki.PrivateKey`, which never shows them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xds_server.identity.pki import (
    CaError,
    PrivateKey,
    TrustBundle,
    is_self_signed,
    issued_by,
    load_certs,
    pem,
    random_serial,
    read_file,
    spki,
    write_file,
)
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, check_trust_domain

ROOT_TTL: Final = dt.timedelta(days=3650)  # Istio's DefaultSelfSignedCACertTTL
WORKLOAD_TTL: Final = dt.timedelta(hours=24)  # Istio's DEFAULT_WORKLOAD_CERT_TTL
BACKDATE: Final = dt.timedelta(minutes=1)  # notBefore this early: peers' clocks differ

# Istio's cacerts layout (https://istio.io/latest/docs/tasks/security/cert-management/
# plugin-ca-cert/): the signing CA, its key, its chain up to the root, and the root(s).
CA_CERT: Final = "ca-cert.pem"
CA_KEY: Final = "ca-key.pem"
CERT_CHAIN: Final = "cert-chain.pem"
ROOT_CERT: Final = "root-cert.pem"
CACERTS_FILES: Final = (ROOT_CERT, CA_CERT, CA_KEY, CERT_CHAIN)


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """An issued X.509-SVID: the leaf, its key, the intermediates up to a root, the roots."""

    spiffe_id: SpiffeId
    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]  # intermediates, leaf's issuer first; no root
    trust_bundle: TrustBundle

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def cert_chain_pem(self) -> bytes:
        """Leaf then intermediates: Envoy's ``certificate_chain``, gRPC's certificate_file."""
        return pem((self.certificate, *self.chain))

    def key_pem(self) -> bytes:
        return self.key.pem()


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A signing CA: its certificate and key, the intermediates above it, the trust bundle.

    ``chain`` holds the CA certificates between the signing certificate and a root, the
    signing certificate's issuer first; it is empty when the signing CA is itself a root.
    """

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    trust_bundle: TrustBundle

    @property
    def trust_domain(self) -> str | None:
        orgs = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(orgs[0].value) if orgs else None

    # ------------------------------------------------------------------ creating

    @classmethod
    def create_root(
        cls,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        *,
        now: dt.datetime | None = None,
        ttl: dt.timedelta = ROOT_TTL,
    ) -> CertificateAuthority:
        """A new self-signed root that signs workload certificates itself."""
        check_trust_domain(trust_domain)
        key = PrivateKey.generate()
        cert = build_ca_certificate(
            subject=_ca_name(trust_domain),
            public_key=key.key.public_key(),
            issuer=None,
            issuer_key=key,
            now=now or _now(),
            ttl=ttl,
            path_length=1,
        )
        return cls(cert, key, (), TrustBundle((cert,)))

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def load_dir(cls, directory: Path) -> CertificateAuthority:
        """Load Istio's ``cacerts`` layout from ``directory`` (cert-chain.pem optional)."""
        directory = Path(directory)
        chain = directory / CERT_CHAIN
        return cls.load_files(
            ca_cert=directory / CA_CERT,
            ca_key=directory / CA_KEY,
            root_cert=directory / ROOT_CERT,
            cert_chain=chain if chain.exists() else None,
        )

    @classmethod
    def load_files(
        cls,
        *,
        ca_cert: Path,
        ca_key: Path,
        root_cert: Path | None = None,
        cert_chain: Path | None = None,
    ) -> CertificateAuthority:
        """Load and check a CA; ``root_cert`` defaults to ``ca_cert`` (a self-signed CA).

        ``cert_chain`` is Istio's cert-chain.pem: the signing certificate, the
        intermediates, maybe the root; the signing certificate and roots are dropped.
        """
        certs = load_certs(read_file(ca_cert), str(ca_cert))
        cert = certs[0]
        key_data = read_file(ca_key)
        try:
            loaded = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as exc:
            raise CaError(f"{ca_key}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CaError(f"{ca_key}: {type(loaded).__name__}: only EC and RSA CA keys")
        if spki(loaded.public_key()) != spki(cert.public_key()):
            raise CaError(f"{ca_key}: does not match the certificate in {ca_cert}")
        bundle = TrustBundle.from_pem(read_file(root_cert or ca_cert), str(root_cert or ca_cert))
        above = [*certs[1:]]
        if cert_chain is not None:
            above = load_certs(read_file(cert_chain), str(cert_chain))
        intermediates = tuple(c for c in above if c != cert and not is_self_signed(c))
        ca = cls(cert, PrivateKey(loaded), intermediates, bundle)
        ca.check(where=str(ca_cert))
        return ca

    def check(self, where: str = "CA") -> None:
        """Raise CaError unless this CA may sign and chains to a root of its bundle."""
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            bc = None
        if bc is None or not bc.value.ca:
            raise CaError(f"{where}: not a CA certificate (no basicConstraints CA:TRUE)")
        path = (self.certificate, *self.chain)
        for child, parent in itertools.pairwise(path):
            _check_issued(child, parent, where)
        top = path[-1]
        if not any(issued_by(top, root) for root in self.trust_bundle.roots):
            raise CaError(
                f"{where}: chain does not end at a root of the trust bundle: "
                f"{top.issuer.rfc4514_string()!r} is not among its roots"
            )

    def save_dir(self, directory: Path) -> None:
        """Write Istio's ``cacerts`` layout; refuse (CaError) if any of its files exists."""
        directory = Path(directory)
        existing = [n for n in CACERTS_FILES if (directory / n).exists()]
        if existing:
            names = ", ".join(existing)
            raise CaError(f"{directory}: already holds a CA ({names}); not overwritten")
        directory.mkdir(parents=True, exist_ok=True)
        write_file(directory / ROOT_CERT, self.trust_bundle.pem())
        write_file(directory / CERT_CHAIN, pem((self.certificate, *self.chain)))
        write_file(directory / CA_CERT, pem((self.certificate,)))
        write_file(directory / CA_KEY, self.key.pem(), private=True)

    # ------------------------------------------------------------------ issuing

    def issue(
        self,
        spiffe_id: SpiffeId,
        *,
        ttl: dt.timedelta = WORKLOAD_TTL,
        now: dt.datetime | None = None,
        hosts: Sequence[str] = (),
    ) -> WorkloadCertificate:
        """A workload certificate for ``spiffe_id`` with a fresh ECDSA P-256 key.

        ``hosts`` (DNS names or IP addresses) are added as DNS/IP SANs: a server that
        gRPC clients dial by name (the xDS port) must carry that name, as istiod's
        certificate carries ``istiod.istio-system.svc``.
        """
        if ttl <= dt.timedelta(0):
            raise CaError(f"issue {spiffe_id}: ttl {ttl}: must be positive")
        now = now or _now()
        key = PrivateKey.generate()
        not_before = max(now - BACKDATE, self.certificate.not_valid_before_utc)
        not_after = min(now + ttl, self.certificate.not_valid_after_utc)
        if not_after <= now:
            raise CaError(f"issue {spiffe_id}: the signing CA expired at {not_after}")
        issuer_ski = self.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.certificate.subject)
            .public_key(key.key.public_key())
            .serial_number(random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe_id.uri), *map(host_name, hosts)]
                ),
                critical=True,  # the subject is empty (RFC 5280 §4.2.1.6)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                critical=False,
            )
        )
        cert = builder.sign(self.key.key, hashes.SHA256())
        return WorkloadCertificate(spiffe_id, cert, key, self.chain_for_leaf(), self.trust_bundle)

    def chain_for_leaf(self) -> tuple[x509.Certificate, ...]:
        """What goes after a leaf this CA signs: the CA itself unless it is a root."""
        if is_self_signed(self.certificate):
            return ()
        return (self.certificate, *self.chain)

    def with_trust_bundle(self, bundle: TrustBundle) -> CertificateAuthority:
        """This CA handing out ``bundle`` (e.g. old + new root during a rotation)."""
        ca = CertificateAuthority(self.certificate, self.key, self.chain, bundle)
        ca.check()
        return ca


def build_ca_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    now: dt.datetime,
    ttl: dt.timedelta,
    path_length: int | None,
) -> x509.Certificate:
    """A CA certificate: self-signed when ``issuer`` is None, else an intermediate."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        if issuer is None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(issuer_key.key, hashes.SHA256())
    )


def intermediate_under(
    parent: CertificateAuthority,
    trust_domain: str,
    *,
    now: dt.datetime | None = None,
    ttl: dt.timedelta = ROOT_TTL,
) -> CertificateAuthority:
    """A new intermediate CA signed by ``parent`` (pathlen 0: it signs workloads only)."""
    key = PrivateKey.generate()
    cert = build_ca_certificate(
        subject=_ca_name(trust_domain),
        public_key=key.key.public_key(),
        issuer=parent.certificate,
        issuer_key=parent.key,
        now=now or _now(),
        ttl=ttl,
        path_length=0,
    )
    return CertificateAuthority(cert, key, parent.chain_for_leaf(), parent.trust_bundle)


def host_name(host: str) -> x509.GeneralName:
    """``host`` as a SAN: an IP address when it parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _ca_name(trust_domain: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_issued(child: x509.Certificate, parent: x509.Certificate, where: str) -> None:
    if not issued_by(child, parent):
        raise CaError(
            f"{where}: {child.subject.rfc4514_string()!r} is not signed by "
            f"{parent.subject.rfc4514_string()!r}: cert-chain.pem out of order or foreign"
        )
