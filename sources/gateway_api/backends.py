"""Object references of a route: `parentRefs` (the Services it attaches to) and the
backends of `backendRefs` and mirrors, as `Destination`s."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sources.gateway_api.constants import CORE_GROUPS, MAX_PARENT_REFS, SERVICE
from sources.gateway_api.values import capped
from sources.istio.checks import DNS_SUBDOMAIN, dns_label
from sources.istio.report import Path, PolicyError
from sources.istio.values import fields, port_number, string
from xds_server.model import Destination

_REF_FIELDS = ("group", "kind", "name", "namespace", "port")
_PARENT_FIELDS = ("group", "kind", "name", "namespace", "sectionName", "port")
_GATEWAY_GROUP = "gateway.networking.k8s.io"
_KIND = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference as written, defaults applied; `path` is where (for status and errors)."""

    path: Path
    group: str
    kind: str
    namespace: str
    name: str
    port: int | None = None
    section: str = ""

    @property
    def is_service(self) -> bool:
        return self.group in CORE_GROUPS and self.kind == SERVICE


def reference(
    value: object, path: Path, namespace: str, default_group: str, default_kind: str,
    known: tuple[str, ...] = _REF_FIELDS,
) -> Ref:  # fmt: skip
    ref = fields(value, path, known)
    if "name" not in ref:
        raise PolicyError((*path, "name"), "required")
    name = string(ref["name"], (*path, "name"))
    if not name or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        raise PolicyError((*path, "name"), f"invalid name {name!r} (a lowercase DNS subdomain)")
    group = string(ref.get("group", default_group), (*path, "group"))
    if group and (len(group) > 253 or not DNS_SUBDOMAIN.fullmatch(group)):
        raise PolicyError((*path, "group"), f"invalid group {group!r} (empty, or a DNS subdomain)")
    kind = string(ref.get("kind", default_kind), (*path, "kind"))
    if not _KIND.fullmatch(kind) or len(kind) > 63:
        raise PolicyError((*path, "kind"), f"invalid kind {kind!r} (a CamelCase name)")
    ns = namespace
    if ref.get("namespace"):
        ns = dns_label(ref["namespace"], (*path, "namespace"), "namespace")
    port = port_number(ref["port"], (*path, "port")) if "port" in ref else None
    section = (
        section_name(ref["sectionName"], (*path, "sectionName")) if "sectionName" in ref else ""
    )
    return Ref(path, group, kind, ns, name, port, section)


def section_name(value: object, path: Path) -> str:
    """A SectionName (a rule name, a parentRef's sectionName): a DNS subdomain."""
    name = string(value, path)
    if not name or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        raise PolicyError(path, f"invalid name {name!r} (a lowercase DNS subdomain)")
    return name


def parent_refs(value: object, path: Path, namespace: str) -> list[Ref]:
    """Every parentRef (group defaults to the Gateway API's, kind to Gateway), with the
    CRD's uniqueness rules: the same parent twice needs distinct ports or sectionNames."""
    refs = [
        reference(raw, (*path, i), namespace, _GATEWAY_GROUP, "Gateway", _PARENT_FIELDS)
        for i, raw in enumerate(capped(value or [], path, MAX_PARENT_REFS))
    ]
    for i, ref in enumerate(refs):
        for other in refs[:i]:
            same = (ref.group, ref.kind, ref.namespace, ref.name) == (
                other.group, other.kind, other.namespace, other.name
            )  # fmt: skip
            if not same:
                continue
            if (ref.port, ref.section) == (other.port, other.section):
                raise PolicyError(ref.path, f"duplicate parentRef (same as {other.path[-1]})")
            if not (ref.port or ref.section) or not (other.port or other.section):
                raise PolicyError(
                    ref.path,
                    "sectionName or port must be specified when parentRefs includes 2 or "
                    "more references to the same parent",
                )
    return refs


def backend_ref(value: object, path: Path, namespace: str, known: tuple[str, ...]) -> Ref:
    """A BackendObjectReference: a Service (the default kind) needs a port."""
    ref = reference(value, path, namespace, "", SERVICE, known)
    if ref.is_service and ref.port is None:
        raise PolicyError((*path, "port"), "required for a Service backend")
    return ref


def destination(ref: Ref) -> Destination:
    return Destination(ref.name, ref.namespace, ref.port)
