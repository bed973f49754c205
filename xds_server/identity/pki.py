"""PKI building blocks the CA is made of: keys that never show themselves, PEM bundles,
signature checks between certificates, the trust bundle, atomic 0600 file writes."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CaError(ValueError):
    """A CA that cannot be loaded, created or used: ``where: what: why``."""


class PrivateKey:
    """A private key that never shows itself in repr, str, logs or dumps."""

    __slots__ = ("_key",)

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def key(self) -> SigningKey:
        return self._key

    def pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM (what Envoy, gRPC and Istio read)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        kind = "EC P-256" if isinstance(self._key, ec.EllipticCurvePrivateKey) else "RSA"
        return f"<PrivateKey {kind} redacted>"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:  # pickling would copy the key out
        raise TypeError("PrivateKey cannot be pickled")


def pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates PEM-encoded and concatenated, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and issued_by(cert, cert)


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The roots peers trust; two during a CA rotation (old and new), PEM concatenated."""

    roots: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise CaError("trust bundle: empty: at least one root certificate is needed")

    @classmethod
    def from_pem(cls, data: bytes, where: str = "trust bundle") -> TrustBundle:
        return cls(tuple(load_certs(data, where)))

    def pem(self) -> bytes:
        return pem(self.roots)

    def with_root(self, root: x509.Certificate) -> TrustBundle:
        """This bundle plus ``root`` (kept once): the overlap of a CA rotation."""
        if root in self.roots:
            return self
        return TrustBundle((*self.roots, root))

    def without_root(self, root: x509.Certificate) -> TrustBundle:
        """This bundle without ``root``: the end of a CA rotation."""
        return TrustBundle(tuple(r for r in self.roots if r != root))


def random_serial() -> int:
    """A random positive serial of up to 128 bits (RFC 5280: positive, at most 20 octets)."""
    return secrets.randbelow((1 << 128) - 1) + 1


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` atomically (temp file + rename: Envoy and gRPC file watchers see one
    swap, never a half-written file), 0600 for keys, 0644 otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not private:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CaError(f"{path}: cannot read: {exc.strerror}") from None


def load_certs(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CaError(f"{where}: no PEM certificate: {exc}") from None
    return certs


def spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
