"""TLS and mutual TLS on the xDS port, from certificate files that are re-read when they
change (no restart).

gRPC asks :meth:`ServerTls.fetch` for the certificate configuration on every new
handshake (``grpc.dynamic_ssl_server_credentials``); it answers "unchanged" unless one of
the files' stat (inode, size, mtime) moved, so a handshake costs three ``stat`` calls.
A changed set is loaded and checked as a whole (certificate parses, key matches it,
client CA parses): a half-written or mismatched swap is logged once and the last good set
keeps serving, like every other input of the server.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from xds_server.identity.pki import CaError, load_certs, read_file, spki

log = logging.getLogger(__name__)

_Stat = tuple[int, int, int] | None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The xDS port's serving certificate (chain) and key, and the client CA bundle
    (``None``: TLS without client certificates)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        extra = () if self.client_ca is None else (self.client_ca,)
        return (self.cert, self.key, *extra)


@dataclass(frozen=True, slots=True)
class _Loaded:
    cert_chain: bytes
    key: bytes
    client_ca: bytes | None
    serial: int


def load(files: TlsFiles) -> _Loaded:
    """Read and check one set of files; CaError ``where: what: why`` if unusable."""
    chain = read_file(files.cert)
    certs = load_certs(chain, str(files.cert))
    key_pem = read_file(files.key)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CaError(f"{files.key}: not an unencrypted PEM private key: {exc}") from None
    if spki(key.public_key()) != spki(certs[0].public_key()):  # type: ignore[arg-type]
        raise CaError(f"{files.key}: does not match the certificate in {files.cert}")
    ca = None
    if files.client_ca is not None:
        ca = read_file(files.client_ca)
        load_certs(ca, str(files.client_ca))
    return _Loaded(chain, key_pem, ca, certs[0].serial_number)


def _stat(path: Path) -> _Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ServerTls:
    """The xDS port's credentials: TLS, or mutual TLS when a client CA is given."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stats = self._stat_all()
        self._current = load(files)  # a bad set at start is the operator's error: raise
        self._bad: tuple[_Stat, ...] | None = None
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        """Clients must present a certificate the client CA verifies."""
        return self.files.client_ca is not None

    @property
    def serial(self) -> int:
        """The serving certificate's serial (what a new client sees)."""
        return self._current.serial

    def _stat_all(self) -> tuple[_Stat, ...]:
        return tuple(_stat(p) for p in self.files.paths())

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cur = self._current
        return grpc.ssl_server_certificate_configuration(
            [(cur.key, cur.cert_chain)], root_certificates=cur.client_ca
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake question: a new configuration, or None for "unchanged"."""
        stats = self._stat_all()
        if stats == self._stats:
            return None
        try:
            loaded = load(self.files)
        except (CaError, ValueError, TypeError) as exc:  # never raise into gRPC's handshake
            if stats != self._bad:  # once per bad state, not once per handshake
                self._bad = stats
                log.warning("xDS TLS: %s; still serving certificate %x", exc, self.serial)
            return None
        # Recorded after a good load: a file still being replaced is re-checked next time.
        self._stats, self._current, self._bad = stats, loaded, None
        self.reloads += 1
        log.info("xDS TLS: reloaded %s, serving certificate %x", self.files.cert, self.serial)
        return self._configuration()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self.fetch, require_client_authentication=self.mutual
        )
