"""`xdsctl explain` and `/debug/explain`: why a request from one proxy goes where it goes.

Walks a group's current snapshot (what the server would send the proxy now) as Envoy,
or a proxyless gRPC client, would: listener → RouteConfiguration → virtual host → the
first matching route (with, for every earlier route, why it did not match) → its action
(cluster, weighted clusters, redirect, direct response; timeout and retries) → the
policy rule that made the route (route names carry the rule's subject, see
translators/names.py `policy_rule_subject`) → each cluster and its endpoints.

Sans-IO: `explain` takes the snapshot, the request and the controller's policy statuses
and returns a plain JSON-able dict; `ExplainError` carries the HTTP status and a
`where: what: why` message. Matching is in `explain_match`, routes described in
`explain_routes`, clusters and endpoints in `explain_clusters`; rendering as text is
`explain_text` (no protobuf there, so `xdsctl` stays light).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from xds_server import types
from xds_server.explain_clusters import (
    SubsetLabels,
    describe_cluster,
    destination_policies,
)
from xds_server.explain_match import Request, find_virtual_host, match_route
from xds_server.explain_routes import RuleWriter, describe_match, route_action, route_policy
from xds_server.snapshot import Snapshot

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"


class ExplainError(Exception):
    """A request that cannot be explained: HTTP `status`, message `where: what: why`."""

    def __init__(self, status: int, where: str, what: str, why: str) -> None:
        super().__init__(f"{where}: {what}: {why}")
        self.status = status


def grpc_target_name(target: str) -> str:
    """The listener a gRPC client looks up for `target`: ``xds:///web`` → ``web``
    (``xds://authority/web`` too: the resource name is the path)."""
    if not target.startswith("xds:"):
        raise ExplainError(400, "target", repr(target), "a proxyless target is xds:///<name>")
    rest = target.removeprefix("xds:")
    if rest.startswith("//"):  # an authority (maybe empty), then the name
        name = rest[2:].partition("/")[2]
    else:
        name = rest.lstrip("/")
    if not name:
        raise ExplainError(400, "target", repr(target), "no name after xds:///")
    return name


# ---------------------------------------------------------------------- resources


class _Resources:
    """One snapshot's resources by type and name, decoded on first use."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def get(self, type_url: str, name: str) -> Message | None:
        r = self.snap.get(type_url).resources.get(name)
        return r.message() if r is not None else None

    def listeners(self) -> list[listener_pb2.Listener]:
        out = []
        for r in self.snap.get(types.LISTENER).resources.values():
            message = r.message()
            assert isinstance(message, listener_pb2.Listener)
            out.append(message)
        return out


def _filter(listener: listener_pb2.Listener) -> tuple[str, Message] | None:
    """The HCM or TCP proxy of a listener (first filter chain), decoded."""
    if listener.HasField("api_listener"):
        hcm = hcm_pb2.HttpConnectionManager()
        return ("api", hcm) if listener.api_listener.api_listener.Unpack(hcm) else None
    for chain in listener.filter_chains[:1]:
        for f in chain.filters:
            if f.name == HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(hcm):
                    return "http", hcm
            if f.name == TCP_PROXY_FILTER:
                proxy = tcp_proxy_pb2.TcpProxy()
                if f.typed_config.Unpack(proxy):
                    return "tcp", proxy
    return None


def _port(listener: listener_pb2.Listener) -> int:
    return int(listener.address.socket_address.port_value)


def _split_host_port(host: str) -> tuple[str, int | None]:
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return name, int(port)
    return host, None


def _choose_listener(
    res: _Resources, host: str, port: int | None
) -> tuple[listener_pb2.Listener, str]:
    """The listener an Envoy sidecar takes the request on, and why that one."""
    listeners = [lst for lst in res.listeners() if not lst.HasField("api_listener")]
    on_ports = ", ".join(f"{lst.name} on {_port(lst)}" for lst in listeners) or "none"
    if port is not None:
        for lst in listeners:
            if _port(lst) == port:
                return lst, f"the listener on port {port} (--port)"
        raise ExplainError(
            404, "listener", f"port {port}", f"the proxy has no listener there ({on_ports})"
        )
    _, host_port = _split_host_port(host)
    for lst in listeners:
        if host_port is not None and _port(lst) == host_port:
            return lst, f"the listener on port {host_port}, the port in the host"
    http = [lst for lst in listeners if (_filter(lst) or ("",))[0] == "http"]
    if len(http) == 1:
        return http[0], f"the proxy's HTTP listener (port {_port(http[0])})"
    if not http:
        raise ExplainError(
            404, "listener", f"host {host!r}", f"the proxy has no HTTP listener ({on_ports})"
        )
    raise ExplainError(
        400, "listener", f"host {host!r}", f"several HTTP listeners ({on_ports}): give --port"
    )


# -------------------------------------------------------------------------- walk


def explain(
    snap: Snapshot,
    request: Request,
    *,
    policies: Sequence[Mapping[str, Any]] = (),
    port: int | None = None,
    target: str | None = None,
    subset_labels: SubsetLabels = lambda service, subset: None,
    rule_writer: RuleWriter = lambda subject, index: None,
) -> dict[str, Any]:
    """Explain `request` against snapshot `snap` (see the module docstring). For a
    proxyless client give `target` (``xds:///web``); `request.host` is then its name."""
    res = _Resources(snap)
    doc: dict[str, Any] = {"request": _request_doc(request, target)}
    if target is not None:
        name = grpc_target_name(target)
        lst = res.get(types.LISTENER, name)
        if not isinstance(lst, listener_pb2.Listener) or not lst.HasField("api_listener"):
            raise ExplainError(
                404, "listener", repr(name), f"no API listener for target {target} in the snapshot"
            )
        why = f"the API listener named by the target {target}"
    else:
        lst, why = _choose_listener(res, request.host, port)
    found = _filter(lst)
    if found is None:
        raise ExplainError(
            422, "listener", lst.name, "neither an HTTP connection manager nor a TCP proxy"
        )
    kind, config = found
    doc["listener"] = {"name": lst.name, "port": _port(lst), "kind": kind, "chosen": why}
    lookup_policy = destination_policies(list(policies))

    def cluster(name: str) -> dict[str, Any]:
        return describe_cluster(
            name,
            lambda n: res.get(types.CLUSTER, n),
            lambda n: res.get(types.ENDPOINT, n),
            lookup_policy,
            subset_labels,
        )

    if isinstance(config, tcp_proxy_pb2.TcpProxy):
        pairs = (
            [(config.cluster, 1)]
            if config.cluster
            else [(c.name, c.weight) for c in config.weighted_clusters.clusters]
        )
        doc["action"] = {"kind": "tcp_proxy"}
        doc["clusters"] = _weighted(pairs, cluster)
        return doc
    assert isinstance(config, hcm_pb2.HttpConnectionManager)
    rc_name = config.rds.route_config_name if config.HasField("rds") else ""
    route_config = res.get(types.ROUTE, rc_name) if rc_name else config.route_config
    if not isinstance(route_config, route_pb2.RouteConfiguration):
        raise ExplainError(
            404,
            "route configuration",
            rc_name,
            f"listener {lst.name} names it, the snapshot lacks it",
        )
    doc["route_config"] = {"name": route_config.name, "rds": bool(rc_name)}
    vhost, how = find_virtual_host(route_config, request.host)
    if vhost is None:
        domains = sorted(d for v in route_config.virtual_hosts for d in v.domains)
        shown = ", ".join(domains[:12]) + (" ..." if len(domains) > 12 else "")
        raise ExplainError(
            404,
            "virtual host",
            f"host {request.host!r}",
            f"no domain of route configuration {route_config.name} matches ({shown or 'none'})"
            " (Envoy: 404 NR)",
        )
    doc["virtual_host"] = {"name": vhost.name, "matched_by": how}
    doc["not_matched"] = []
    for index, route in enumerate(vhost.routes):
        verdict = match_route(route, request)
        if not verdict.matched:
            doc["not_matched"].append(
                {
                    "index": index,
                    "name": route.name,
                    "match": describe_match(route.match),
                    "why": list(verdict.why),
                }
            )
            continue
        action, targets = route_action(route, vhost)
        doc["route"] = {
            "index": index,
            "name": route.name,
            "match": describe_match(route.match),
            "notes": list(verdict.notes),
            "policy": route_policy(route.name, policies, rule_writer),
        }
        doc["action"] = action
        doc["clusters"] = _weighted(targets, cluster)
        return doc
    doc["route"] = None
    doc["action"] = {
        "kind": "none",
        "note": f"no route of virtual host {vhost.name} matches (Envoy: 404 NR)",
    }
    doc["clusters"] = []
    return doc


def _weighted(pairs: list[tuple[str, int]], cluster: Any) -> list[dict[str, Any]]:
    total = sum(w for _, w in pairs) or 1
    out = []
    for name, weight in pairs:
        out.append({"weight": weight, "share": round(100 * weight / total, 1), **cluster(name)})
    return out


def _request_doc(request: Request, target: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"client": request.client, "host": request.host, "path": request.path}
    if request.client == "envoy":
        doc["method"] = request.method
    if request.headers:
        doc["headers"] = dict(request.headers)
    if target is not None:
        doc["target"] = target
    return doc


def parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    """``K=V`` (or ``K:V``) strings as a header map by lower-case name; a repeated name
    joins its values with "," as Envoy's matcher sees multiple headers."""
    out: dict[str, str] = {}
    for pair in pairs:
        sep = "=" if "=" in pair else ":" if ":" in pair.lstrip(":") else None
        if sep is None:
            raise ExplainError(400, "header", repr(pair), "give K=V")
        if pair.startswith(":") and sep == ":":
            name, _, value = pair[1:].partition(":")
            name = ":" + name
        else:
            name, _, value = pair.partition(sep)
        name = name.strip().lower()
        if not name:
            raise ExplainError(400, "header", repr(pair), "the name is empty")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def sync_summary(proxy_types: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per type, whether the proxy has ACKed what the server would send now (from
    `/debug/proxies`'s per-type entries, which carry `state` and `target_version`)."""
    out: dict[str, Any] = {}
    for short, entry in proxy_types.items():
        out[short] = {
            "state": entry.get("state"),
            "acked_version": entry.get("acked_version") or None,
            "target_version": entry.get("target_version"),
        }
        if entry.get("state") == "NACKED":
            out[short]["last_error"] = entry.get("last_error")
    return out
