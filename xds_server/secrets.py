"""Workload certificates over SDS: the per-identity secret layer the sessions consult.

Secrets are per identity, not per proxy group, so they cannot live in a group's shared
snapshot. The `SecretStore` holds, per SPIFFE ID, a two-resource `TypeSnapshot` of
`Secret`s named as Istio names them: ``default`` (certificate chain + private key) and
``ROOTCA`` (the trust bundle as a validation context). A session asks the store for the
Secret type (`Session._type_snapshot`) and gets its own identity's set, never another's;
the rest of the shared-bytes path is untouched, and the proxies of one identity still
share one set of encoded bytes.

Issuance is lazy (on a stream's first Secret request) and one certificate serves every
proxy of its identity. Renewal (`renew_due`, driven by `xds_server.secret_rotation`)
reissues at half life plus jitter and wakes every stream of that identity. A CA
rotation (`set_ca`) publishes the old and new roots together first, signs with the new
key once every stream holds that bundle, and only then drops the old root (digest §3).

Private keys stay in the `default` resource's bytes on the wire: `SecretResource`
renders itself (admin, CSDS, diff) with ``private_key`` ``[redacted]`` as Envoy's own
config_dump does, and nothing here logs a key.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from prometheus_client import Counter, Gauge

from xds_server import types
from xds_server.identity.ca import WORKLOAD_TTL, CertificateAuthority, WorkloadCertificate
from xds_server.identity.pki import CaError, TrustBundle
from xds_server.identity.renewal import renewal_time
from xds_server.identity.spiffe import SpiffeId, SpiffeIdError
from xds_server.session_state import TypeState
from xds_server.snapshot import EMPTY_SNAPSHOT, Resource, TypeSnapshot

log = logging.getLogger(__name__)

CERTIFICATE: Final = "default"  # Istio's names (pkg/security: WorkloadKeyCertResourceName)
ROOT_CA: Final = "ROOTCA"
REDACTED: Final = "[redacted]"  # what Envoy's config_dump shows for sensitive fields
# How long a CA rotation stage waits for every stream to acknowledge before moving on.
ROTATION_WAIT: Final = dt.timedelta(seconds=30)

ISSUED = Counter(
    "xds_workload_certificates_issued_total",
    "Workload certificates issued, by reason (first, renewal, ca_rotation)",
    ["reason"],
)
ISSUE_ERRORS = Counter(
    "xds_workload_certificate_errors_total", "Workload certificates that could not be issued"
)
IDENTITIES = Gauge("xds_workload_identities", "Identities holding a workload certificate")
NO_IDENTITY = Counter(
    "xds_secret_requests_without_identity_total",
    "Streams that asked for secrets without a usable NAMESPACE/SERVICE_ACCOUNT",
)
_EMPTY: Final = EMPTY_SNAPSHOT.get(types.SECRET)


class SecretResource(Resource):
    """A Secret: its wire bytes carry the key; every rendering for people redacts it."""

    __slots__ = ()

    def message(self) -> secret_pb2.Secret:
        secret = secret_pb2.Secret.FromString(self.body)
        redact(secret)
        return secret

    def to_any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.message().SerializeToString())


def redact(secret: secret_pb2.Secret) -> None:
    """Replace the sensitive fields of ``secret`` in place, as Envoy's config_dump does."""
    if secret.HasField("tls_certificate"):
        tls = secret.tls_certificate
        for name in ("private_key", "password", "pkcs12"):
            if tls.HasField(name):
                getattr(tls, name).inline_string = REDACTED
    if secret.HasField("generic_secret"):
        secret.generic_secret.secret.inline_string = REDACTED


def certificate_secret(workload: WorkloadCertificate) -> SecretResource:
    secret = secret_pb2.Secret(name=CERTIFICATE)
    secret.tls_certificate.certificate_chain.inline_bytes = workload.cert_chain_pem()
    secret.tls_certificate.private_key.inline_bytes = workload.key_pem()
    return SecretResource.from_message(types.SECRET, secret)


def root_secret(bundle: TrustBundle) -> SecretResource:
    secret = secret_pb2.Secret(name=ROOT_CA)
    secret.validation_context.trusted_ca.inline_bytes = bundle.pem()
    return SecretResource.from_message(types.SECRET, secret)


class SecretClient(Protocol):
    """What the store needs of a session: its node, its Secret state, a way to wake it."""

    node: base_pb2.Node | None
    states: dict[str, TypeState]
    wake: Callable[[], None] | None


def _metadata(node: base_pb2.Node, key: str) -> str:
    value = node.metadata.fields.get(key)
    return value.string_value if value is not None else ""


def identity_of(client: SecretClient, trust_domain: str) -> SpiffeId:
    """The identity whose secrets this stream may receive: node metadata ``NAMESPACE``
    and ``SERVICE_ACCOUNT`` (Istio's convention), trusted as given.

    That is only safe with --xds-insecure on a trusted network; with mutual TLS on the
    xDS port this must return the identity verified from the peer certificate (the node
    is checked against it before any request is served). SpiffeIdError if unusable."""
    node = client.node
    if node is None:
        raise SpiffeIdError("no node yet")
    namespace, account = _metadata(node, "NAMESPACE"), _metadata(node, "SERVICE_ACCOUNT")
    if not namespace or not account:
        raise SpiffeIdError("node metadata lacks NAMESPACE or SERVICE_ACCOUNT")
    return SpiffeId(trust_domain, namespace, account)


@dataclass(eq=False, slots=True)
class _Identity:
    spiffe_id: SpiffeId
    workload: WorkloadCertificate
    secrets: TypeSnapshot
    renew_at: dt.datetime
    clients: set[SecretClient] = field(default_factory=set)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SecretStore:
    """Workload certificates and trust bundle per identity, issued by one CA."""

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        trust_domain: str,
        ttl: dt.timedelta = WORKLOAD_TTL,
        clock: Callable[[], dt.datetime] = _now,
        rand: Callable[[], float] = random.random,
        rotation_wait: dt.timedelta = ROTATION_WAIT,
    ) -> None:
        self.ca = ca
        self.trust_domain = trust_domain
        self.ttl = ttl
        self.clock = clock
        self.rand = rand
        self.rotation_wait = rotation_wait
        self._bundle = ca.trust_bundle  # what ROOTCA carries (old + new during a rotation)
        self._root = root_secret(self._bundle)
        self._identities: dict[SpiffeId, _Identity] = {}
        self._clients: dict[SecretClient, SpiffeId | None] = {}
        # A CA rotation in progress: the next CA, its stage ("trust" or "sign") and when
        # that stage began.
        self._next: CertificateAuthority | None = None
        self._stage: str | None = None
        self._stage_at = self.clock()

    # -- serving ------------------------------------------------------------------

    def secrets_for(self, client: SecretClient) -> TypeSnapshot:
        """The Secret resources ``client`` may receive (none without an identity)."""
        if client in self._clients:
            spiffe_id = self._clients[client]
        else:
            spiffe_id = self._attach(client)
        if spiffe_id is None:
            return _EMPTY
        entry = self._identities.get(spiffe_id)
        if entry is None:
            entry = self._issue(spiffe_id, "first")
            if entry is None:
                return _EMPTY
        entry.clients.add(client)
        return entry.secrets

    def _attach(self, client: SecretClient) -> SpiffeId | None:
        try:
            spiffe_id: SpiffeId | None = identity_of(client, self.trust_domain)
        except SpiffeIdError as exc:
            spiffe_id = None
            NO_IDENTITY.inc()
            node_id = client.node.id if client.node is not None else "?"
            log.warning("node %r asks for secrets but gets none: %s", node_id, exc)
        self._clients[client] = spiffe_id
        return spiffe_id

    def detach(self, client: SecretClient) -> None:
        """A stream ended. Its identity's certificate stays until renewal is due, so a
        reconnecting proxy gets the same one; then it is dropped if nobody uses it."""
        spiffe_id = self._clients.pop(client, None)
        entry = self._identities.get(spiffe_id) if spiffe_id is not None else None
        if entry is not None:
            entry.clients.discard(client)

    def _issue(self, spiffe_id: SpiffeId, reason: str) -> _Identity | None:
        now = self.clock()
        try:
            workload = self.ca.issue(spiffe_id, ttl=self.ttl, now=now)
        except CaError as exc:
            ISSUE_ERRORS.inc()
            log.error("cannot issue a workload certificate for %s: %s", spiffe_id, exc)
            return None
        # Half life plus jitter from *issuance*: notBefore is backdated for clock skew.
        renew_at = renewal_time(now, now, workload.not_after, self.rand())
        cert = certificate_secret(workload)
        old = self._identities.get(spiffe_id)
        entry = _Identity(
            spiffe_id,
            workload,
            TypeSnapshot(types.SECRET, (cert, self._root)),
            renew_at,
            old.clients if old is not None else set(),
        )
        self._identities[spiffe_id] = entry
        ISSUED.labels(reason).inc()
        IDENTITIES.set(len(self._identities))
        log.info(
            "issued workload certificate for %s: serial %x, valid until %s, renewal at %s",
            spiffe_id,
            workload.serial,
            workload.not_after.isoformat(timespec="seconds"),
            renew_at.isoformat(timespec="seconds"),
        )
        return entry

    @staticmethod
    def _wake(entry: _Identity) -> None:
        for client in entry.clients:
            if client.wake is not None:
                client.wake()

    # -- rotation -----------------------------------------------------------------

    def next_due(self) -> dt.datetime | None:
        """When `renew_due` next has something to do (None: nothing scheduled)."""
        if self._stage is not None:
            return self.clock()  # a CA rotation is in progress: check it often
        return min((e.renew_at for e in self._identities.values()), default=None)

    def renew_due(self) -> int:
        """Reissue every certificate whose renewal time has come and that some stream
        uses (dropping the unused ones); advance a CA rotation. Returns how many."""
        self._advance_rotation()
        now = self.clock()
        renewed = 0
        for spiffe_id, entry in list(self._identities.items()):
            if entry.renew_at > now:
                continue
            if not entry.clients:
                del self._identities[spiffe_id]
                IDENTITIES.set(len(self._identities))
                continue
            fresh = self._issue(spiffe_id, "renewal")
            if fresh is None:  # the CA cannot sign: retry soon, keep serving the old one
                entry.renew_at = now + dt.timedelta(seconds=10)
                self._identities[spiffe_id] = entry
                continue
            self._wake(fresh)
            renewed += 1
        return renewed

    def reissue_all(self, reason: str = "ca_rotation") -> int:
        """Reissue every certificate in use now (a new signing CA)."""
        count = 0
        for spiffe_id, entry in list(self._identities.items()):
            if not entry.clients:
                del self._identities[spiffe_id]
                continue
            fresh = self._issue(spiffe_id, reason)
            if fresh is not None:
                self._wake(fresh)
                count += 1
        IDENTITIES.set(len(self._identities))
        return count

    @property
    def trust_bundle(self) -> TrustBundle:
        return self._bundle

    @property
    def rotating(self) -> str | None:
        """The CA rotation stage in progress: "trust", "sign", or None."""
        return self._stage

    def set_ca(self, ca: CertificateAuthority) -> None:
        """Start using ``ca`` (e.g. a reloaded --ca-dir). The same signing certificate
        with another bundle just changes ROOTCA; a new signing certificate is rotated to
        in stages: trust both roots everywhere, then sign with it, then trust only its
        bundle (ROOTCA first, leaves after: istio#47424)."""
        if ca.certificate == self.ca.certificate and self._next is None:
            self.ca = ca
            self._publish_bundle(ca.trust_bundle)
            return
        if self._next is not None and ca.certificate == self._next.certificate:
            self._next = ca  # the rotation's target bundle changed; the stages go on
            if self._stage == "sign" or self._stage is None:
                self._publish_bundle(_union(self.ca.trust_bundle, ca.trust_bundle))
            return
        self._next = ca
        self._stage = "trust"
        self._stage_at = self.clock()
        log.info(
            "CA rotation: trusting the new root (%d roots in ROOTCA) before signing with it",
            len(_union(self._bundle, ca.trust_bundle).roots),
        )
        self._publish_bundle(_union(self._bundle, ca.trust_bundle))

    def _advance_rotation(self) -> None:
        if self._stage is None or self._next is None:
            return
        waited = self.clock() - self._stage_at
        name = ROOT_CA if self._stage == "trust" else CERTIFICATE
        laggards = self._not_holding(name)
        if laggards and waited < self.rotation_wait:
            return
        if laggards:
            log.warning(
                "CA rotation: %d streams have not acknowledged %s after %s; going on",
                len(laggards),
                name,
                self.rotation_wait,
            )
        if self._stage == "trust":
            self.ca = self._next.with_trust_bundle(self._bundle)
            self._stage, self._stage_at = "sign", self.clock()
            count = self.reissue_all()
            log.info("CA rotation: signing with the new CA; %d certificates reissued", count)
            return
        nxt, self._next, self._stage = self._next, None, None
        self.ca = nxt
        self._publish_bundle(nxt.trust_bundle)
        log.info("CA rotation done: ROOTCA holds %d roots", len(nxt.trust_bundle.roots))

    def _not_holding(self, name: str) -> list[SecretClient]:
        """Streams that use secret ``name`` and have not acknowledged its current bytes."""
        out = []
        for entry in self._identities.values():
            want = entry.secrets.resources.get(name)
            for client in entry.clients:
                ts = client.states.get(types.SECRET)
                if ts is None or not (ts.wildcard or name in ts.names) or want is None:
                    continue
                held = ts.known.resources.get(name)
                if held is None or held.version != want.version:
                    out.append(client)
        return out

    def _publish_bundle(self, bundle: TrustBundle) -> None:
        if bundle == self._bundle:
            return
        self._bundle = bundle
        self._root = root_secret(bundle)
        for entry in self._identities.values():
            cert = entry.secrets.resources[CERTIFICATE]
            entry.secrets = TypeSnapshot(types.SECRET, (cert, self._root))
            self._wake(entry)

    def describe(self) -> list[dict[str, object]]:
        """Identities and certificates (no key material), for operators."""
        return [
            {
                "spiffe_id": e.spiffe_id.uri,
                "serial": f"{e.workload.serial:x}",
                "not_after": e.workload.not_after.isoformat(),
                "renew_at": e.renew_at.isoformat(),
                "streams": len(e.clients),
            }
            for e in sorted(self._identities.values(), key=lambda e: e.spiffe_id.uri)
        ]


def _union(first: TrustBundle, second: TrustBundle) -> TrustBundle:
    """Both bundles' roots, ``first``'s first, each once."""
    for root in second.roots:
        first = first.with_root(root)
    return first
