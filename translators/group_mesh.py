"""What a proxy's node metadata says about the mesh, for its `ProxyGroup`
(translators.group): a proxyless gRPC client's workload identity and an xDS-managed gRPC
server's instance IPs (translators.grpc_server, grpc_tls), and the service instance an
Envoy sidecar fronts with whether it holds an identity (translators.inbound)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import struct_pb2

from .grpc_server import META_INSTANCE_IPS, instance_ips

if TYPE_CHECKING:
    from .group import Kind, ProxyGroup

# The identity a proxy claims (Istio's keys; xds_server.identity checks them): its
# workload's namespace and service account.
META_NAMESPACE = "NAMESPACE"
META_SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
# A sidecar names the service instance it fronts (translators.inbound): the service
# (name or name.namespace, Consul's `-sidecar-for`) and the instance's addresses
# (META_INSTANCE_IPS: Istio's INSTANCE_IPS, comma-separated; an xDS-managed gRPC server
# names its own the same way).
META_SIDECAR_FOR = "SIDECAR_FOR"

# A service name, name.namespace or hostname (a dependency, the service a sidecar
# fronts): no separators of a group key.
SERVICE_NAME = re.compile(r"[^\s,;=]+")


# ---------------------------------------------------------------- gRPC identity and server


def grpc_server_fields(
    kind: Kind, fields: Mapping[str, struct_pb2.Value], warnings: list[str]
) -> tuple[bool, frozenset[str]]:
    """gRPC nodes: whether metadata NAMESPACE and SERVICE_ACCOUNT name an identity, and
    the IPs in INSTANCE_IPS (Istio's keys)."""
    if kind != "grpc":
        return False, frozenset()
    identity = all(
        k in fields and fields[k].string_value.strip()
        for k in (META_NAMESPACE, META_SERVICE_ACCOUNT)
    )
    ips: frozenset[str] = frozenset()
    if META_INSTANCE_IPS in fields:
        ips, bad = instance_ips(fields[META_INSTANCE_IPS].string_value)
        if bad:
            warnings.append(f"node metadata {META_INSTANCE_IPS}: not IPs, ignored: {bad}")
    return identity, ips


def check_grpc_server(group: ProxyGroup) -> None:
    if group.kind != "grpc":
        object.__setattr__(group, "identity", False)
        object.__setattr__(group, "instance_ips", frozenset())
        return
    ips, bad = instance_ips(",".join(group.instance_ips))
    if bad:
        raise ValueError(f"invalid instance IPs: {bad}")
    object.__setattr__(group, "instance_ips", ips)


def grpc_server_key(group: ProxyGroup) -> list[str]:
    parts = ["identity"] if group.identity else []
    if group.instance_ips:
        parts.append("ips=" + ",".join(sorted(group.instance_ips)))
    return parts


def pop_identity(key: str, options: list[str]) -> tuple[bool, list[str]]:
    rest = [o for o in options if o != "identity"]
    if len(options) - len(rest) > 1:
        raise ValueError(f"bad proxy group key {key!r}: identity given twice")
    return len(rest) != len(options), rest


# ---------------------------------------------------------------- sidecars (the mesh)


@dataclass(frozen=True, slots=True)
class SidecarOf:
    """The instance a sidecar proxy fronts: its service (name or ``name.namespace``) and
    the instance's addresses."""

    service: str
    ips: tuple[str, ...]

    def __post_init__(self) -> None:
        if not SERVICE_NAME.fullmatch(self.service) or "@" in self.service:
            raise ValueError(f"invalid sidecar service name {self.service!r}")
        if not self.ips or not all(_SIDECAR_IP.fullmatch(ip) for ip in self.ips):
            raise ValueError(f"invalid sidecar instance addresses {self.ips!r}")


_SIDECAR_IP = re.compile(r"[0-9A-Fa-f.:]+")


def mesh_key_parts(sidecar: SidecarOf | None, mesh: bool) -> list[str]:
    parts = []
    if sidecar is not None:
        parts.append(f"sidecar={sidecar.service}@{','.join(sidecar.ips)}")
    if mesh:
        parts.append("mesh=on")
    return parts


def mesh_from_key(values: Mapping[str, str]) -> tuple[SidecarOf | None, bool]:
    sidecar = None
    if "sidecar" in values:
        service, sep, ips = values["sidecar"].partition("@")
        if not sep:
            raise ValueError("sidecar is <service>@<ip,...>")
        sidecar = SidecarOf(service, tuple(ips.split(",")))
    mesh = values.get("mesh", "off")
    if mesh not in ("on", "off"):
        raise ValueError(f"mesh is on or off, got {mesh!r}")
    return sidecar, mesh == "on"


def _string(fields: Mapping[str, struct_pb2.Value], key: str) -> str:
    value = fields.get(key)
    return value.string_value.strip() if value is not None else ""


def mesh_from_node(
    kind: Kind, fields: Mapping[str, struct_pb2.Value], warnings: list[str]
) -> tuple[SidecarOf | None, bool]:
    """An Envoy's sidecar instance (SIDECAR_FOR + INSTANCE_IPS) and whether it claims an
    identity (NAMESPACE + SERVICE_ACCOUNT). A bare service name is taken in the node's
    NAMESPACE."""
    if kind != "envoy":
        return None, False
    namespace = _string(fields, META_NAMESPACE)
    mesh = bool(namespace and _string(fields, META_SERVICE_ACCOUNT))
    service = _string(fields, META_SIDECAR_FOR)
    if not service:
        return None, mesh
    if "." not in service and namespace:
        service = f"{service}.{namespace}"
    ips = tuple(sorted({ip.strip() for ip in _string(fields, META_INSTANCE_IPS).split(",")} - {""}))
    try:
        return SidecarOf(service, ips), mesh
    except ValueError as exc:
        warnings.append(
            f"node metadata {META_SIDECAR_FOR}/{META_INSTANCE_IPS}: {exc}; no inbound listener"
        )
        return None, mesh
