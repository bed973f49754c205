"""Who is on the other end of an xDS stream: the SPIFFE ID of the verified client
certificate, and whether the node it claims is that identity (Istio's rule).

Istio's ``checkConnectionIdentity`` (pilot/pkg/xds/auth.go): the node's namespace and
service account (node metadata ``NAMESPACE`` and ``SERVICE_ACCOUNT``) must be those of
an identity in the verified certificate; otherwise the stream ends with
PERMISSION_DENIED before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography import x509

from xds_server.identity.spiffe import SCHEME, SpiffeId, SpiffeIdError

# Node metadata keys naming the identity a proxy claims (Istio's).
NAMESPACE_KEY: Final = "NAMESPACE"
SERVICE_ACCOUNT_KEY: Final = "SERVICE_ACCOUNT"


class PeerIdentityError(ValueError):
    """A verified client certificate that names no usable SPIFFE ID."""


def peer_identity(auth_context: Mapping[str, Sequence[bytes]]) -> SpiffeId | None:
    """The SPIFFE ID of the peer's verified certificate, from gRPC's ``auth_context()``;
    None when the peer sent no certificate (plaintext or server-only TLS).

    The certificate is re-parsed here rather than trusting gRPC's ``peer_spiffe_id``
    so the SPIFFE rule (exactly one ``spiffe://`` URI SAN) is ours and testable.
    """
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError as exc:
        raise PeerIdentityError(f"client certificate: cannot parse: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith(SCHEME)]
    if len(spiffe) != 1:
        raise PeerIdentityError(
            f"client certificate serial {cert.serial_number:x}: {len(spiffe)} SPIFFE IDs in"
            " its URI SANs: exactly one is needed (SPIFFE X509-SVID)"
        )
    try:
        return SpiffeId.parse(spiffe[0])
    except SpiffeIdError as exc:
        raise PeerIdentityError(f"client certificate: {exc}") from None


def node_mismatch(identity: SpiffeId, node_id: str, metadata: Any) -> str | None:
    """Why the node may not use ``identity`` (one line), or None when it matches.

    ``metadata`` is the node's ``google.protobuf.Struct``; a missing key is a mismatch:
    with mutual TLS on, a node must say who it is.
    """
    fields = metadata.fields
    claimed = []
    for key, want in (
        (NAMESPACE_KEY, identity.namespace),
        (SERVICE_ACCOUNT_KEY, identity.service_account),
    ):
        value = fields[key].string_value if key in fields else ""
        if value != want:
            claimed.append(f"{key}={value!r}" if value else f"no {key}")
    if not claimed:
        return None
    return (
        f"node {node_id!r} claims {', '.join(claimed)} but its certificate is {identity}:"
        f" node metadata {NAMESPACE_KEY} and {SERVICE_ACCOUNT_KEY} must name the"
        " certificate's namespace and service account"
    )


class DenialLog:
    """Remembers which (peer identity, node) pairs were already logged: a refused proxy
    retries every few seconds, and one line per pair is enough to find it."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()

    def first(self, peer: str, node_id: str) -> bool:
        """True the first time this pair is denied (then log it)."""
        key = (peer, node_id)
        if key in self._seen:
            return False
        if len(self._seen) >= self.limit:  # bounded: a flood of made-up node IDs
            self._seen.clear()
        self._seen.add(key)
        return True
