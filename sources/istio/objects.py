"""One Istio object → `Parsed`: apiVersion, kind and metadata checked here, the spec handed
to the VirtualService or DestinationRule parser."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sources.istio.checks import DNS_SUBDOMAIN, dns_label
from sources.istio.constants import API_VERSIONS, KINDS
from sources.istio.destination_rule import destination_rule
from sources.istio.report import Context, Notice, PolicyError
from sources.istio.values import fields, mapping, string
from sources.istio.virtual_service import virtual_service
from xds_server.model import DestinationPolicy, PolicyKey, RoutePolicy


@dataclass(frozen=True)
class Parsed:
    """A parsed object. `applies` is False when it applies to no proxy this server
    configures (a VirtualService for gateways only or with no rule left, a DestinationRule
    with a workloadSelector): the caller shows it as a warning, and it should take part in
    no host conflict with the objects that do apply."""

    policy: RoutePolicy | DestinationPolicy
    notices: tuple[Notice, ...] = ()
    applies: bool = True


def is_supported_kind(obj: Mapping[str, Any]) -> bool:
    """A networking.istio.io VirtualService or DestinationRule (any served version)."""
    return is_object_of(obj, API_VERSIONS, KINDS)


def is_object_of(obj: object, versions: Collection[str], kinds: Collection[str]) -> bool:
    """An object of one of `kinds` in one of the API `versions`."""
    if not isinstance(obj, Mapping):
        return False
    version, kind = obj.get("apiVersion"), obj.get("kind")
    return isinstance(version, str) and version in versions and kind in kinds


def object_header(
    ctx: Context, obj: object, versions: Collection[str], kinds: Sequence[str]
) -> tuple[dict[str, Any], str, str]:
    """The top-level fields, kind and name of a Kubernetes-style object, its apiVersion,
    kind and metadata checked; its namespace goes to `ctx` (other metadata is not ours)."""
    top = fields(obj, (), ("apiVersion", "kind", "metadata", "spec", "status"))
    version = top.get("apiVersion")
    if not isinstance(version, str) or version not in versions:
        raise PolicyError(
            ("apiVersion",),
            f"unsupported apiVersion {version!r} (one of {', '.join(sorted(versions))})",
        )
    kind = top.get("kind")
    if kind not in kinds:
        raise PolicyError(("kind",), f"unsupported kind {kind!r} ({' or '.join(kinds)})")
    meta = mapping(top.get("metadata", {}), ("metadata",))
    if meta.get("name") is None:
        raise PolicyError(("metadata", "name"), "required")
    name = string(meta["name"], ("metadata", "name"))
    if len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        raise PolicyError(
            ("metadata", "name"), f"invalid name {name!r} (a lowercase DNS subdomain)"
        )
    if meta.get("namespace") is not None:
        ctx.namespace = dns_label(meta["namespace"], ("metadata", "namespace"), "namespace")
    return top, str(kind), name


def parse_policy(obj: Mapping[str, Any], origin: str = "") -> Parsed:
    """The model value of one VirtualService or DestinationRule; raises PolicyError."""
    ctx = Context()
    top, kind, name = object_header(ctx, obj, API_VERSIONS, KINDS)
    if "spec" not in top:
        raise PolicyError(("spec",), "required")
    key = PolicyKey(kind, ctx.namespace, name)
    if kind == "VirtualService":
        route, applies = virtual_service(ctx, top["spec"], ("spec",), key, origin)
        return Parsed(route, tuple(ctx.notices), applies)
    dest, applies = destination_rule(ctx, top["spec"], ("spec",), key, origin)
    return Parsed(dest, tuple(ctx.notices), applies)
