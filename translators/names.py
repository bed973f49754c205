"""Naming rules for every resource the translators emit. All names are built here.

- Cluster, and its ClusterLoadAssignment, per service port: ``<name>.<namespace>:<port>``
  (``web.default:8080``).
- Envoy HTTP listener and its RouteConfiguration: ``http_<listener port>`` (``http_10000``).
- Envoy TCP listener per tcp service port: ``tcp_<port>`` (``tcp_5432``).
- Virtual host of a service's first http-like port: ``<name>.<namespace>``; of each further
  http-like port: ``<name>.<namespace>:<port>``.
- Proxyless gRPC: the Listener, its RouteConfiguration and its one virtual host are all
  named after the target the client dials (``xds:///web`` → ``web``; see `grpc_names`).
- Subset cluster (and its ClusterLoadAssignment): ``<cluster>|<subset>``
  (``web.default:8080|v2``). Service names never hold ``|``, so it cannot collide.
- Policy routes: named after the rule that made them, ``<subject> http[<i>] (<rule name>)``,
  plus `` match[<j>] (<match name>)`` when the rule has several match alternatives; the
  route of a service without routing rules is ``default``.
"""

from __future__ import annotations

from xds_server.model import Port, Service


def service_id(service: Service) -> str:
    """``<name>.<namespace>``: how a service is named in resources and reports."""
    return f"{service.name}.{service.namespace}"


def cluster_name(service: Service, port: Port) -> str:
    return f"{service_id(service)}:{port.port}"


def http_listener_name(port: int) -> str:
    return f"http_{port}"


def http_route_name(port: int) -> str:
    """The RouteConfiguration of the HTTP listener on `port` (the listener's own name)."""
    return http_listener_name(port)


def tcp_listener_name(port: int) -> str:
    return f"tcp_{port}"


def virtual_host_name(service: Service, port: Port, first: bool) -> str:
    return service_id(service) if first else cluster_name(service, port)


def base_domains(service: Service) -> list[str]:
    """``<name>``, ``<name>.<namespace>``, then the registry hostnames; no repeats."""
    return list(dict.fromkeys((service.name, service_id(service), *service.hostnames)))


def with_port(domain: str, port: Port) -> str:
    return f"{domain}:{port.port}"


def http_like_ports(service: Service) -> list[Port]:
    return [p for p in service.ports if p.http_like]


def grpc_names(service: Service) -> list[tuple[str, Port]]:
    """Every target name a proxyless gRPC client may dial for `service`, with its port.

    For each base domain: the bare name (the first http-like port) and ``name:<port>`` for
    each http-like port. Empty when the service has no http-like port.
    """
    ports = http_like_ports(service)
    if not ports:
        return []
    out: dict[str, Port] = {}
    for domain in base_domains(service):
        out.setdefault(domain, ports[0])
        for port in ports:
            out.setdefault(with_port(domain, port), port)
    return list(out.items())


DEFAULT_ROUTE_NAME = "default"


def subset_cluster_name(base_cluster: str, subset: str) -> str:
    """The cluster of one subset of `base_cluster`'s endpoints: ``web.default:80|v2``."""
    return f"{base_cluster}|{subset}"


def failover_cluster_name(primary_cluster: str) -> str:
    """The aggregate cluster that sends `primary_cluster`'s traffic to its failover
    targets when none of its endpoints is healthy: ``web.default:80|v1/failover`` (a "/"
    is in no service, port or subset name, so it cannot collide)."""
    return f"{primary_cluster}/failover"


def policy_rule_subject(subject: str, index: int, name: str = "") -> str:
    """Rule `index` (0-based, as written) of the policy `subject`, in reports and route
    names: ``VirtualService shop/reviews http[1] (canary)``."""
    base = f"{subject} http[{index}]"
    return f"{base} ({name})" if name else base


def policy_route_name(rule_subject: str, index: int, name: str, alternatives: int) -> str:
    """The route made from match alternative `index` of a rule with `alternatives` of them;
    a rule with one alternative (or none) gives a route named after the rule alone."""
    if alternatives <= 1:
        return rule_subject
    base = f"{rule_subject} match[{index}]"
    return f"{base} ({name})" if name else base
