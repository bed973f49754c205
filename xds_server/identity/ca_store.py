"""Where the server's CA comes from at start: a plugged-in one (``--ca-cert/--ca-key``,
Istio's ``cacerts`` files), or the built-in one in ``--ca-dir``, created there on the
first start as ``xds-server ca init`` would."""

from __future__ import annotations

import logging
from pathlib import Path

from xds_server.identity.ca import CACERTS_FILES, CERT_CHAIN, ROOT_CERT, CertificateAuthority
from xds_server.identity.pki import CaError
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN

log = logging.getLogger(__name__)


def open_ca(
    *,
    ca_dir: Path | None = None,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> CertificateAuthority | None:
    """The CA the settings name, None when they name none; CaError ``where: what: why``."""
    if (ca_cert is None) != (ca_key is None):
        raise CaError("--ca-cert and --ca-key: give both (the CA's certificate and its key)")
    if ca_cert is not None and ca_key is not None:
        if ca_dir is not None:
            raise CaError("--ca-dir and --ca-cert/--ca-key: give one CA, not both")
        # Istio mounts the four cacerts files together: the root and the chain sit beside.
        root, chain = ca_cert.parent / ROOT_CERT, ca_cert.parent / CERT_CHAIN
        return CertificateAuthority.load_files(
            ca_cert=ca_cert,
            ca_key=ca_key,
            root_cert=root if root.exists() else None,
            cert_chain=chain if chain.exists() else None,
        )
    if ca_dir is None:
        return None
    if any((ca_dir / name).exists() for name in CACERTS_FILES):
        return CertificateAuthority.load_dir(ca_dir)
    ca = CertificateAuthority.create_root(trust_domain)
    ca.save_dir(ca_dir)
    log.warning("created a self-signed CA for trust domain %s in %s", trust_domain, ca_dir)
    return ca
