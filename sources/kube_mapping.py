"""Kubernetes Services and EndpointSlices (raw JSON dicts) → the registry-neutral model.

Pure functions, no I/O. The watch loop (`sources.kubernetes`) parses each object once
into the small frozen values below and keeps those, not the JSON, so memory is
proportional to what the model needs and "did this object change?" is an equality
check.

Mapping (DESIGN §6):

- a Service is keyed (namespace, name); its hostnames are `name.namespace.svc` and
  `name.namespace.svc.<cluster domain>`; its labels are the Service's labels;
- each TCP service port becomes a Port named after the service port (an unnamed single
  port is named after its protocol); UDP/SCTP ports are left out (Envoy's listeners here
  proxy TCP only);
- protocol: `appProtocol` (`http`, `http2`/`kubernetes.io/h2c`, `grpc`, `tcp`, ...),
  else the port-name prefix convention `http-`, `http2-`, `grpc-`, `tcp-`, else tcp;
- EndpointSlices join their Service through the `kubernetes.io/service-name` label; a
  slice port is matched to the service port *by name*, and the slice's port number is
  the endpoint's (so a targetPort that differs from the service port just works);
- conditions: ready nil → ready; serving nil → ready; a terminating endpoint is never
  healthy: serving → draining, not serving → unhealthy; not ready → unhealthy;
- an address in several slices is kept once (the healthiest state wins: the endpoint
  slice controller moves endpoints between slices non-atomically);
- an endpoint's labels are its pod's (`targetRef` of kind Pod; `sources.kube_pods`
  watches them): DestinationRule subsets select endpoints by them, as in Istio;
- `zone` → locality zone (regions would need the Nodes, which are not watched);
- headless Services work like any other (their endpoints are pod IPs); an ExternalName
  Service becomes a service with that external name: a DNS cluster per port, which
  Envoy resolves itself, reachable by the Service's names like any other (one without
  ports is skipped with a reason: there is nothing to connect to).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from xds_server import model
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

_APP_PROTOCOLS: dict[str, model.Protocol] = {
    "http": "http",
    "http2": "http2",
    "h2c": "http2",
    "kubernetes.io/h2c": "http2",
    "grpc": "grpc",
    "grpc-web": "http",
    "kubernetes.io/ws": "http",
    "tcp": "tcp",
}
# Istio's naming convention: `<protocol>[-<suffix>]`.
_NAME_PREFIXES: tuple[tuple[str, model.Protocol], ...] = (
    ("http2", "http2"),
    ("grpc", "grpc"),
    ("http", "http"),
    ("tcp", "tcp"),
)
# Best first: a duplicate address keeps the state with the lowest rank.
_HEALTH_RANK: dict[model.Health, int] = {"healthy": 0, "draining": 1, "unknown": 2, "unhealthy": 3}


@dataclass(frozen=True, slots=True)
class KubePort:
    """A service port: the Kubernetes name (joins slice ports) and the model's Port."""

    kube_name: str
    port: Port


@dataclass(frozen=True, slots=True)
class KubeService:
    namespace: str
    name: str
    ports: tuple[KubePort, ...] = ()
    labels: model.Labels = ()
    skip: str | None = None  # why this Service is not published, if it is not
    external_name: str = ""  # spec.externalName of an ExternalName Service


@dataclass(frozen=True, slots=True)
class KubeEndpoint:
    addresses: tuple[str, ...]
    health: model.Health
    zone: str = ""
    pod: str = ""  # the name of the Pod in targetRef ("": none, or not a Pod)


@dataclass(frozen=True, slots=True)
class KubeSlice:
    namespace: str
    name: str
    service: str  # the owning Service's name ("" if the slice has no service-name label)
    ports: tuple[tuple[str, int], ...] = ()  # (port name, port number)
    endpoints: tuple[KubeEndpoint, ...] = ()


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    """(namespace, name) of any namespaced object."""
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def resource_version(obj: dict[str, Any]) -> str | None:
    rv = _meta(obj).get("resourceVersion")
    return rv if isinstance(rv, str) and rv else None


def protocol_of(name: str, app_protocol: str | None) -> model.Protocol:
    if app_protocol:
        return _APP_PROTOCOLS.get(app_protocol.lower(), "tcp")
    lowered = name.lower()
    for prefix, protocol in _NAME_PREFIXES:
        if lowered == prefix or lowered.startswith(prefix + "-"):
            return protocol
    return "tcp"


def parse_service(obj: dict[str, Any]) -> KubeService:
    namespace, name = object_key(obj)
    labels_raw = _meta(obj).get("labels")
    labels = model.labels(
        {str(k): str(v) for k, v in labels_raw.items()} if isinstance(labels_raw, dict) else {}
    )
    spec = obj.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    external = ""
    if spec.get("type") == "ExternalName":
        external = str(spec.get("externalName") or "").rstrip(".")
        if not external:
            return KubeService(namespace, name, labels=labels, skip="ExternalName without a name")
    ports: list[KubePort] = []
    raw_ports = spec.get("ports")
    for p in raw_ports if isinstance(raw_ports, list) else []:
        if not isinstance(p, dict) or str(p.get("protocol") or "TCP").upper() != "TCP":
            continue
        number = p.get("port")
        if not isinstance(number, int):
            continue
        kube_name = str(p.get("name") or "")
        protocol = protocol_of(kube_name, p.get("appProtocol"))
        ports.append(KubePort(kube_name, Port(kube_name or protocol, number, protocol)))
    if not ports:
        reason = f"ExternalName ({external}) without TCP ports" if external else "no TCP ports"
        return KubeService(namespace, name, labels=labels, skip=reason)
    return KubeService(namespace, name, tuple(ports), labels, external_name=external)


def _health(conditions: Any) -> model.Health:
    cond = conditions if isinstance(conditions, dict) else {}
    ready = cond.get("ready")
    ready = True if ready is None else bool(ready)
    serving = cond.get("serving")
    serving = ready if serving is None else bool(serving)
    if cond.get("terminating"):
        return "draining" if serving else "unhealthy"
    return "healthy" if ready else "unhealthy"


def parse_slice(obj: dict[str, Any]) -> KubeSlice:
    namespace, name = object_key(obj)
    labels = _meta(obj).get("labels")
    service = str(labels.get(SERVICE_NAME_LABEL) or "") if isinstance(labels, dict) else ""
    if obj.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
        return KubeSlice(namespace, name, "")  # FQDN slices: addresses are not IPs
    ports: list[tuple[str, int]] = []
    raw_ports = obj.get("ports")
    for p in raw_ports if isinstance(raw_ports, list) else []:
        if not isinstance(p, dict) or str(p.get("protocol") or "TCP").upper() != "TCP":
            continue
        if isinstance(p.get("port"), int):
            ports.append((str(p.get("name") or ""), p["port"]))
    endpoints: list[KubeEndpoint] = []
    raw_endpoints = obj.get("endpoints")
    for ep in raw_endpoints if isinstance(raw_endpoints, list) else []:
        if not isinstance(ep, dict) or not isinstance(ep.get("addresses"), list):
            continue
        ref = ep.get("targetRef")
        pod = ref.get("name") if isinstance(ref, dict) and ref.get("kind") == "Pod" else None
        endpoints.append(
            KubeEndpoint(
                tuple(str(a) for a in ep["addresses"]),
                _health(ep.get("conditions")),
                str(ep.get("zone") or ""),
                sys.intern(pod) if isinstance(pod, str) else "",  # shared with the pod store
            )
        )
    return KubeSlice(namespace, name, service, tuple(ports), tuple(endpoints))


def hostnames(namespace: str, name: str, cluster_domain: str) -> tuple[str, ...]:
    base = f"{name}.{namespace}.svc"
    return (base, f"{base}.{cluster_domain}") if cluster_domain else (base,)


def build_entry(
    svc: KubeService,
    slices: Iterable[KubeSlice],
    source: str,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    pod_labels: Callable[[str, str], model.Labels] | None = None,
) -> ServiceEntry:
    """The model entry of a (not skipped) Service and the slices that name it;
    `pod_labels(namespace, name)` gives each endpoint its pod's labels.

    Endpoints are sorted, so the entry depends only on the set of slices, never on the
    order they arrived in (a relist must not look like a change)."""
    by_kube_name = {p.kube_name: p.port.name for p in svc.ports}
    best: dict[tuple[str, int, str], Endpoint] = {}
    for sl in slices:
        matched = [(by_kube_name[n], num) for n, num in sl.ports if n in by_kube_name]
        for kep in sl.endpoints:
            locality = Locality(zone=kep.zone)
            labels = pod_labels(sl.namespace, kep.pod) if pod_labels and kep.pod else ()
            for ip in kep.addresses:
                for port_name, number in matched:
                    key = (ip, number, port_name)
                    old = best.get(key)
                    if old is None or _HEALTH_RANK[kep.health] < _HEALTH_RANK[old.health]:
                        best[key] = Endpoint(
                            ip, number, port_name, kep.health, locality, labels=labels
                        )
    service = Service(
        name=svc.name,
        namespace=svc.namespace,
        ports=tuple(p.port for p in svc.ports),
        hostnames=hostnames(svc.namespace, svc.name, cluster_domain),
        labels=svc.labels,
        source=source,
        external_name=svc.external_name,
    )
    if svc.external_name:
        return ServiceEntry(service)  # Envoy resolves the name: no endpoints
    endpoints = tuple(best[k] for k in sorted(best, key=lambda k: (k[2], k[0], k[1])))
    return ServiceEntry(service, endpoints)
