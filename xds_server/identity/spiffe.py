"""SPIFFE IDs in Istio's form: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

Trust domains follow the SPIFFE ID standard (spiffe/spiffe standards/SPIFFE-ID.md): lower
case letters, digits, ``.``, ``-`` and ``_``, at most 255 characters, no port or user
info. Namespaces are Kubernetes namespaces (DNS-1123 labels); service accounts are
Kubernetes ServiceAccount names (DNS-1123 subdomains: Kubernetes accepts dots in them,
so refusing those would refuse real service accounts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

SCHEME: Final = "spiffe://"
DEFAULT_TRUST_DOMAIN: Final = "cluster.local"  # Istio's TRUST_DOMAIN default

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SpiffeIdError(ValueError):
    """A SPIFFE ID, trust domain, namespace or service account that cannot be used."""


def check_trust_domain(value: str) -> str:
    """Return ``value`` if it is a valid SPIFFE trust domain name, else raise SpiffeIdError."""
    if not value:
        raise SpiffeIdError("trust domain: empty")
    if len(value) > 255:
        raise SpiffeIdError(f"trust domain {value[:20]!r}...: longer than 255 characters")
    if ":" in value or "@" in value:
        raise SpiffeIdError(f"trust domain {value!r}: no port or user info allowed")
    if not _TRUST_DOMAIN.fullmatch(value):
        raise SpiffeIdError(
            f"trust domain {value!r}: only lower case letters, digits, '.', '-' and '_'"
        )
    return value


def check_namespace(value: str) -> str:
    """Return ``value`` if it is a DNS-1123 label (a Kubernetes namespace name)."""
    return _check_dns(value, "namespace", _LABEL, 63, "label", "'-'")


def check_service_account(value: str) -> str:
    """Return ``value`` if it is a DNS-1123 subdomain (a Kubernetes ServiceAccount name)."""
    return _check_dns(value, "service account", _SUBDOMAIN, 253, "subdomain", "'-' and '.'")


def _check_dns(
    value: str, what: str, pattern: re.Pattern[str], limit: int, kind: str, extra: str
) -> str:
    if len(value) > limit or not pattern.fullmatch(value):
        raise SpiffeIdError(
            f"{what} {value!r}: not a DNS-1123 {kind} (at most {limit} lower case letters, "
            f"digits and {extra}, starting and ending with a letter or digit)"
        )
    return value


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """One workload identity; build with the constructor (validated) or :meth:`parse`."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_namespace(self.namespace)
        check_service_account(self.service_account)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://td/ns/N/sa/S``; raise SpiffeIdError saying what is wrong."""
        if not uri.startswith(SCHEME):
            raise SpiffeIdError(f"SPIFFE ID {uri!r}: must start with {SCHEME!r}")
        rest = uri[len(SCHEME) :]
        if "?" in rest or "#" in rest:
            raise SpiffeIdError(f"SPIFFE ID {uri!r}: no query or fragment allowed")
        trust_domain, _, path = rest.partition("/")
        try:
            check_trust_domain(trust_domain)
        except SpiffeIdError as exc:
            raise SpiffeIdError(f"SPIFFE ID {uri!r}: {exc}") from None
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise SpiffeIdError(
                f"SPIFFE ID {uri!r}: path must be /ns/<namespace>/sa/<service-account>"
            )
        try:
            return cls(trust_domain, parts[1], parts[3])
        except SpiffeIdError as exc:
            raise SpiffeIdError(f"SPIFFE ID {uri!r}: {exc}") from None

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri
