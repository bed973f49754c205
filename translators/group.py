"""Proxy groups: proxies that receive identical configuration share one group.

A group is what the translation depends on besides the catalog: the kind of client
(Envoy or proxyless gRPC), which services it depends on, the Envoy HTTP listener port,
the proxy's locality (a DestinationRule's locality load balancing gives each locality
its own endpoint priorities), its namespace (node metadata ``NAMESPACE``, as Istio's
agent writes it: Gateway API consumer routes apply only to callers in their namespace),
for gRPC its identity and server IPs (translators.grpc_server, grpc_tls), and for a
sidecar the instance it fronts and whether it is in the mesh (translators.inbound).
Its `key` is stable and readable (``envoy``, ``envoy;port=10001``, ``envoy;deps=api,web``,
``grpc;deps=web``, ``envoy;locality=eu/eu-a/``, ``envoy;ns=shop``,
``grpc;identity;ips=10.0.0.5``, ``envoy;sidecar=api.default@10.0.0.5;mesh=on``) so it
can serve as the cache group id and be typed on the command line; `ProxyGroup.from_key`
parses it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format, struct_pb2

from xds_server.model import Locality, Service

from .group_mesh import (
    META_NAMESPACE,
    SERVICE_NAME,
    SidecarOf,
    check_grpc_server,
    grpc_server_fields,
    grpc_server_key,
    mesh_from_key,
    mesh_from_node,
    mesh_key_parts,
    pop_identity,
)
from .names import service_id

Kind = Literal["envoy", "grpc"]
KINDS: tuple[Kind, ...] = ("envoy", "grpc")
DEFAULT_HTTP_LISTENER_PORT = 10000

# Node metadata keys a proxy may set.
META_DEPENDENCIES = "dependencies"
META_HTTP_LISTENER_PORT = "http_listener_port"
# Istio's proxyless bootstrap marks the node with GENERATOR: grpc (istiod picks its gRPC
# generator from it); grpc-java and grpc-go send their own user agent name besides.
META_GENERATOR = "GENERATOR"

# A locality part (region, zone, subzone): nothing that separates parts of the key.
_LOCALITY_PART = re.compile(r"[^\s,;=/]*")


def _valid_port(port: object) -> bool:
    return isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536


@dataclass(frozen=True, slots=True)
class ProxyGroup:
    """What a proxy's configuration depends on. Equal groups get identical resources.

    `dependencies` None means every service; an empty set means none. gRPC groups have
    no HTTP listener, so their `http_listener_port` is always the default (any other
    value is normalised away, keeping group equality the same as key equality).
    """

    kind: Kind = "envoy"
    dependencies: frozenset[str] | None = None
    http_listener_port: int = DEFAULT_HTTP_LISTENER_PORT
    locality: Locality | None = None
    namespace: str | None = None
    # gRPC only (translators.grpc_server, grpc_tls): the node names a workload identity
    # (mTLS where the CA is on), and the IPs of the xDS-managed server it runs.
    identity: bool = False
    instance_ips: frozenset[str] = frozenset()
    # The instance this proxy is the sidecar of, and whether it holds a workload
    # identity (mutual TLS with other sidecars).
    sidecar: SidecarOf | None = None
    mesh: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"proxy group kind must be one of {', '.join(KINDS)}: {self.kind!r}")
        if not _valid_port(self.http_listener_port):
            raise ValueError(
                f"http_listener_port must be a port number 1-65535: {self.http_listener_port!r}"
            )
        if self.kind == "grpc":
            object.__setattr__(self, "http_listener_port", DEFAULT_HTTP_LISTENER_PORT)
        if self.dependencies is not None:
            deps = frozenset(self.dependencies)
            bad = sorted(d for d in deps if not SERVICE_NAME.fullmatch(d))
            if bad:
                raise ValueError(f"invalid dependency names (empty, or with , ; = or space): {bad}")
            object.__setattr__(self, "dependencies", deps)
        if self.locality is not None:
            parts = (self.locality.region, self.locality.zone, self.locality.subzone)
            if not all(_LOCALITY_PART.fullmatch(p) for p in parts):
                raise ValueError(f"invalid locality (no space , ; = or /): {parts}")
            if not any(parts):
                object.__setattr__(self, "locality", None)
        if self.namespace is not None and not _LOCALITY_PART.fullmatch(self.namespace):
            raise ValueError(f"invalid namespace (no space , ; = or /): {self.namespace!r}")
        if self.namespace == "":
            object.__setattr__(self, "namespace", None)
        check_grpc_server(self)

    # ---------------------------------------------------------------- key

    @property
    def key(self) -> str:
        parts: list[str] = [self.kind]
        if self.dependencies is not None:
            parts.append("deps=" + ",".join(sorted(self.dependencies)))
        if self.http_listener_port != DEFAULT_HTTP_LISTENER_PORT:
            parts.append(f"port={self.http_listener_port}")
        if self.locality is not None:
            loc = self.locality
            parts.append(f"locality={loc.region}/{loc.zone}/{loc.subzone}")
        if self.namespace is not None:
            parts.append(f"ns={self.namespace}")
        parts += grpc_server_key(self)
        parts += mesh_key_parts(self.sidecar, self.mesh)
        return ";".join(parts)

    def __str__(self) -> str:
        return self.key

    @classmethod
    def from_key(cls, key: str) -> ProxyGroup:
        """Parse a `key` back: ``<kind>[;deps=a,b][;port=N][;locality=R/Z/S][;ns=NS]
        [;identity][;ips=a,b]`` (options in any order)."""
        kind, *options = key.strip().split(";")
        if kind not in KINDS:
            raise ValueError(
                f"bad proxy group key {key!r}: must start with one of {', '.join(KINDS)}"
            )
        values: dict[str, str] = {}
        identity, options = pop_identity(key, options)
        for option in options:
            name, sep, value = option.partition("=")
            if not sep or name not in ("deps", "port", "locality", "ns", "ips", "sidecar", "mesh"):
                raise ValueError(
                    f"bad proxy group key {key!r}: options are deps=<a,b,...>, port=<N>, "
                    f"locality=<region/zone/subzone>, ns=<namespace>, identity, "
                    f"ips=<a,b,...>, sidecar=<service>@<ip,...> and mesh=on, got {option!r}"
                )
            if name in values:
                raise ValueError(f"bad proxy group key {key!r}: {name} given twice")
            values[name] = value
        port = DEFAULT_HTTP_LISTENER_PORT
        if "port" in values:
            if kind == "grpc":
                raise ValueError(f"bad proxy group key {key!r}: gRPC groups have no port")
            if not values["port"].isdigit() or not _valid_port(int(values["port"])):
                raise ValueError(
                    f"bad proxy group key {key!r}: port must be 1-65535, got {values['port']!r}"
                )
            port = int(values["port"])
        deps = None
        if "deps" in values:
            deps = frozenset(d for d in values["deps"].split(",") if d)
        locality = None
        if "locality" in values:
            parts = values["locality"].split("/")
            if len(parts) != 3:
                raise ValueError(
                    f"bad proxy group key {key!r}: locality is region/zone/subzone, "
                    f"got {values['locality']!r}"
                )
            locality = Locality(*parts)
        ips = frozenset(i for i in values.get("ips", "").split(",") if i)
        try:
            sidecar, mesh = mesh_from_key(values)
            return cls(kind, deps, port, locality, values.get("ns"), identity, ips, sidecar, mesh)
        except ValueError as exc:
            raise ValueError(f"bad proxy group key {key!r}: {exc}") from None

    # ---------------------------------------------------------------- node

    @classmethod
    def parse(
        cls, node: base_pb2.Node, default_port: int = DEFAULT_HTTP_LISTENER_PORT
    ) -> tuple[ProxyGroup, list[str]]:
        """The group of a proxy from its Node, and warnings about metadata it ignored.

        Kind is ``grpc`` when the user agent names gRPC (``gRPC Python``, ``grpc-go``)
        or the metadata says ``GENERATOR: grpc`` (what Istio's agent writes into proxyless
        bootstraps), else ``envoy``. Metadata ``dependencies``: a list of strings or a
        comma-separated string. Metadata ``http_listener_port``: a number or numeric
        string (Envoy only). The node's locality, if it has one. Metadata ``NAMESPACE``:
        the proxy's namespace (a string).
        """
        if not _valid_port(default_port):
            raise ValueError(f"default_port must be a port number 1-65535: {default_port!r}")
        fields = node.metadata.fields
        kind: Kind = "grpc" if _proxyless(node.user_agent_name, fields) else "envoy"
        warnings: list[str] = []
        deps = None
        if META_DEPENDENCIES in fields:
            deps = _dependencies(fields[META_DEPENDENCIES], warnings)
        port = default_port
        if kind == "envoy" and META_HTTP_LISTENER_PORT in fields:
            port = _port(fields[META_HTTP_LISTENER_PORT], default_port, warnings)
        loc = node.locality
        locality: Locality | None = Locality(loc.region, loc.zone, loc.sub_zone)
        parts = (loc.region, loc.zone, loc.sub_zone)
        if not all(_LOCALITY_PART.fullmatch(p) for p in parts):
            warnings.append(f"node locality {parts} has a space , ; = or /; ignored")
            locality = None
        namespace = _namespace(fields.get(META_NAMESPACE), warnings)
        identity, ips = grpc_server_fields(kind, fields, warnings)
        sidecar, mesh = mesh_from_node(kind, fields, warnings)
        return cls(kind, deps, port, locality, namespace, identity, ips, sidecar, mesh), warnings

    @classmethod
    def from_node(
        cls, node: base_pb2.Node, default_port: int = DEFAULT_HTTP_LISTENER_PORT
    ) -> ProxyGroup:
        """`parse` without the warnings."""
        return cls.parse(node, default_port)[0]

    # ---------------------------------------------------------------- scoping

    def wants(self, service: Service) -> bool:
        """Whether this group's proxies get `service`: a dependency equals its name,
        ``name.namespace`` or one of its hostnames (no dependencies: every service)."""
        if self.dependencies is None:
            return True
        deps = self.dependencies
        return (
            service.name in deps
            or service_id(service) in deps
            or any(h in deps for h in service.hostnames)
        )


def _describe(value: struct_pb2.Value) -> str:
    return str(json_format.MessageToJson(value, indent=None))


def _proxyless(user_agent: str, fields: Mapping[str, struct_pb2.Value]) -> bool:
    if "grpc" in user_agent.lower():
        return True
    generator = fields.get(META_GENERATOR)
    return generator is not None and generator.string_value.strip().lower() == "grpc"


def _dependencies(value: struct_pb2.Value, warnings: list[str]) -> frozenset[str] | None:
    kind = value.WhichOneof("kind")
    items: Iterable[struct_pb2.Value]
    if kind == "null_value":
        return None
    if kind == "string_value":
        items = [value]
    elif kind == "list_value":
        items = value.list_value.values
    else:
        warnings.append(
            f"node metadata {META_DEPENDENCIES}={_describe(value)} is not a list of names; "
            "ignored (the proxy gets every service)"
        )
        return None
    deps: set[str] = set()
    for item in items:
        if item.WhichOneof("kind") != "string_value":
            warnings.append(
                f"node metadata {META_DEPENDENCIES}: {_describe(item)} is not a string; ignored"
            )
            continue
        for name in item.string_value.split(","):
            name = name.strip()
            if not name:
                continue
            if SERVICE_NAME.fullmatch(name):
                deps.add(name)
            else:
                warnings.append(
                    f"node metadata {META_DEPENDENCIES}: {name!r} is not a service name or "
                    "hostname; ignored"
                )
    return frozenset(deps)


def _namespace(value: struct_pb2.Value | None, warnings: list[str]) -> str | None:
    if value is None:
        return None
    name = value.string_value.strip() if value.WhichOneof("kind") == "string_value" else None
    if name is not None and _LOCALITY_PART.fullmatch(name):
        return name or None
    warnings.append(
        f"node metadata {META_NAMESPACE}={_describe(value)} is not a namespace name; ignored "
        "(Gateway API consumer routes do not apply to this proxy)"
    )
    return None


def _port(value: struct_pb2.Value, default: int, warnings: list[str]) -> int:
    kind = value.WhichOneof("kind")
    port: int | None = None
    if kind == "number_value" and value.number_value.is_integer():
        port = int(value.number_value)
    elif kind == "string_value" and value.string_value.strip().isdigit():
        port = int(value.string_value.strip())
    if port is not None and _valid_port(port):
        return port
    warnings.append(
        f"node metadata {META_HTTP_LISTENER_PORT}={_describe(value)} is not a port number "
        f"(1-65535); using {default}"
    )
    return default
