"""Consul's health view of one service → the registry model (pure functions).

Input is the JSON list `/v1/health/service/<name>` returns: one entry per instance,
each with its Node, its Service registration and the Checks that apply to it (the
node's own and the instance's). Output is one ServiceEntry:

- protocol from Consul's config entries when they set one (service-defaults
  `Protocol`, else proxy-defaults `Config.protocol`: the `protocol` argument), else
  from the instances' service meta `protocol` (`http`, `http2`, `grpc`, `tcp`, the
  values of Consul's service-defaults), default `http`, so a service
  registered with nothing but a name and a port is reachable through the HTTP
  listener by its name. An unknown value is passed on, and catalog validation skips
  the service with a reason;
- one port, named after the protocol, numbered after the instances' port (the lowest
  when they differ; kept while any instance still uses it, so a scaled or restarted
  instance elsewhere does not rename the cluster);
- health aggregated over the checks as Consul does (any critical → critical, else any
  warning → warning): critical → unhealthy, warning → healthy at `Weights.Warning`
  (0 means "no traffic while warning" → unhealthy), passing → healthy at
  `Weights.Passing`; maintenance mode is a critical check, so it drains the instance;
- the address is `Service.Address`, or `Node.Address` when that is empty;
- locality: region = the node's datacenter, zone = node meta `zone`;
- labels: the instance's service meta, and each tag as a label with an empty value;
- hostnames `<name>.service.consul` and `<name>.service.<dc>.consul` (Consul DNS);
- Connect sidecars and gateways (`Service.Kind` set) are not ordinary instances and
  are left out; a service that has only those is not a service for us (a sidecar
  instead marks the instance it fronts: sources.consul_connect);
- an external service (consul-esm's pattern: a node whose address is a DNS name, e.g.
  `api.example.com`) whose instances all name the same host and port becomes a service
  with that external name: Envoy resolves it itself (a DNS cluster). Its checks cannot
  be expressed on a DNS cluster and are not applied. Instances naming several hosts
  are left as they are, and validation skips each non-IP address with a reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from xds_server.model import (
    DEFAULT_NAMESPACE,
    Endpoint,
    Health,
    Locality,
    Port,
    Protocol,
    Service,
    ServiceEntry,
    labels,
)
from xds_server.validation import dns_name, valid_ip

DEFAULT_PROTOCOL = "http"
# Service kinds of Consul's service mesh (connect-proxy, mesh-gateway, ...); "typical"
# is how some API versions spell an ordinary service.
ORDINARY_KINDS = frozenset({"", "typical"})
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2}

Instance = Mapping[str, Any]


def ordinary(instances: Sequence[Instance]) -> list[Instance]:
    """The instances that are plain services (not sidecar proxies or gateways)."""
    return [i for i in instances if ((i.get("Service") or {}).get("Kind") or "") in ORDINARY_KINDS]


def aggregate_status(checks: Sequence[Mapping[str, Any]] | None) -> str:
    """`passing`, `warning` or `critical`: the worst check wins; an unknown status
    (or `maintenance`) counts as critical, since Consul would not route to it either."""
    worst = 0
    for check in checks or ():
        worst = max(worst, _SEVERITY.get(str(check.get("Status", "")), 2))
    return ("passing", "warning", "critical")[worst]


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def health_and_weight(instance: Instance) -> tuple[Health, int]:
    svc = instance.get("Service") or {}
    weights = svc.get("Weights") or {}
    passing = _int(weights.get("Passing"), 1) or 1
    status = aggregate_status(instance.get("Checks"))
    if status == "critical":
        return "unhealthy", passing
    if status == "warning":
        warning = _int(weights.get("Warning"), 1)
        return ("healthy", warning) if warning > 0 else ("unhealthy", passing)
    return "healthy", passing


def protocol_of(instances: Sequence[Instance]) -> str:
    """The protocol most instances declare in meta `protocol` (ties: alphabetical), or http."""
    votes = Counter(
        str(((i.get("Service") or {}).get("Meta") or {}).get("protocol") or DEFAULT_PROTOCOL)
        for i in instances
    )
    if not votes:
        return DEFAULT_PROTOCOL
    return min(votes, key=lambda p: (-votes[p], p))


def meta_protocol(instances: Sequence[Instance]) -> str | None:
    """What protocol_of decides when some ordinary instance sets meta `protocol`, else
    None (what the config-entry compiler takes as the instances' protocol)."""
    kept = ordinary(instances)
    if not any(((i.get("Service") or {}).get("Meta") or {}).get("protocol") for i in kept):
        return None
    return protocol_of(kept)


def service_port(instances: Sequence[Instance], previous: int | None) -> int | None:
    """The port number the service is known by (see the module docstring)."""
    ports = {p for i in instances if (p := _int((i.get("Service") or {}).get("Port"), 0)) > 0}
    if previous is not None and (previous in ports or not ports):
        return previous
    if ports:
        return min(ports)
    # Instances registered without a port: 0, so catalog validation skips the service
    # with a reason operators see (`xdsctl sources`) instead of it vanishing silently.
    return 0 if instances else None


def to_entry(
    name: str,
    instances: Sequence[Instance],
    *,
    source: str,
    datacenter: str = "",
    previous_port: int | None = None,
    protocol: str | None = None,
) -> ServiceEntry | None:
    """The service as the model sees it, or None when it has no ordinary instance and
    no port known from before (nothing to build a cluster for). `protocol`: the one
    config entries set, which wins over the instances' meta."""
    kept = ordinary(instances)
    external = _external_target(kept)
    port = external[1] if external else service_port(kept, previous_port)
    if port is None:
        return None
    protocol = protocol or protocol_of(kept)
    port_name = protocol
    dc = datacenter or next(
        (str(i["Node"].get("Datacenter")) for i in kept if (i.get("Node") or {}).get("Datacenter")),
        "",
    )
    hostnames: tuple[str, ...] = ()
    if _DNS_LABEL.match(name):
        hostnames = (f"{name}.service.consul",) + ((f"{name}.service.{dc}.consul",) if dc else ())
    endpoints: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for inst in sorted(kept, key=_order):
        svc = inst.get("Service") or {}
        node = inst.get("Node") or {}
        ip = _address(inst)
        inst_port = _int(svc.get("Port"), 0)
        if (ip, inst_port) in seen:  # the same instance registered twice (two agents)
            continue
        seen.add((ip, inst_port))
        health, weight = health_and_weight(inst)
        node_meta = node.get("Meta") or {}
        endpoints.append(
            Endpoint(
                ip=ip,
                port=inst_port,
                port_name=port_name,
                health=health,
                weight=weight,
                locality=Locality(
                    region=str(node.get("Datacenter") or dc), zone=str(node_meta.get("zone", ""))
                ),
                labels=_labels(svc),
            )
        )
    service = Service(
        name=name,
        namespace=DEFAULT_NAMESPACE,
        # An unknown protocol string goes to catalog validation, which skips the
        # service and says why (the model's Literal is checked there, not here).
        ports=(Port(port_name, port, cast(Protocol, protocol)),),
        hostnames=hostnames,
        source=source,
        external_name=external[0] if external else "",
    )
    return ServiceEntry(service, () if external else tuple(endpoints))


def with_protocol(entry: ServiceEntry, protocol: str) -> ServiceEntry:
    """`entry` with its port's protocol (and name) set to `protocol`, as to_entry would
    have made it: when config entries change a service's protocol, its instances have
    not changed and are not kept to be mapped again."""
    port = entry.service.ports[0]
    if port.protocol == protocol:
        return entry
    new_port = replace(port, name=protocol, protocol=cast(Protocol, protocol))
    service = replace(entry.service, ports=(new_port, *entry.service.ports[1:]))
    endpoints = tuple(
        replace(e, port_name=protocol) if e.port_name == port.name else e for e in entry.endpoints
    )
    return ServiceEntry(service, endpoints)


def _address(instance: Instance) -> str:
    return str(
        (instance.get("Service") or {}).get("Address")
        or (instance.get("Node") or {}).get("Address")
        or ""
    )


def _external_target(instances: Sequence[Instance]) -> tuple[str, int] | None:
    """(host, port) when every instance names the same DNS host and port (an external
    service), else None."""
    targets = {(_address(i), _int((i.get("Service") or {}).get("Port"), 0)) for i in instances}
    if len(targets) != 1:
        return None
    ((host, port),) = targets
    if port <= 0 or valid_ip(host) or not dns_name(host):
        return None
    return host.rstrip("."), port


def _order(instance: Instance) -> tuple[str, str]:
    return (
        str((instance.get("Node") or {}).get("Node", "")),
        str((instance.get("Service") or {}).get("ID", "")),
    )


def _labels(svc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out = {str(tag): "" for tag in svc.get("Tags") or ()}
    out.update({str(k): str(v) for k, v in (svc.get("Meta") or {}).items()})
    return labels(out)
