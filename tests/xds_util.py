"""Helpers for driving sans-IO sessions in unit tests: requests in, decoded responses out."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from translators import resources as rb
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.model import Endpoint
from xds_server.response import Response
from xds_server.session_delta import DeltaSession
from xds_server.session_sotw import SotwSession

GROUP = "g"
NODE = base_pb2.Node(id="proxy-1", cluster=GROUP)

CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE


def cluster(name: str, timeout: float = 1.0) -> cluster_pb2.Cluster:
    return rb.eds_cluster(name, connect_timeout=timeout)


def cla(name: str, *ports: int):  # type: ignore[no-untyped-def]
    return rb.load_assignment(name, [Endpoint("127.0.0.1", p) for p in ports or (80,)])


def routes(name: str, *clusters: str):  # type: ignore[no-untyped-def]
    return rb.route_configuration(name, [rb.VirtualHost(c, [c], c) for c in clusters])


def listener(name: str, route: str = "routes"):  # type: ignore[no-untyped-def]
    return rb.http_listener(name, 10000, route)


def make_cache(**types_: Iterable[object]) -> SnapshotCache:
    cache = SnapshotCache()
    cache.set_snapshot(GROUP, {_URL[k]: list(v) for k, v in types_.items()})  # type: ignore[misc]
    return cache


_URL = {"cds": CDS, "eds": EDS, "lds": LDS, "rds": RDS}


def set_types(cache: SnapshotCache, **types_: Iterable[object]) -> None:
    cache.set_snapshot(GROUP, {_URL[k]: list(v) for k, v in types_.items()})  # type: ignore[misc]


def sreq(
    type_url: str,
    names: Iterable[str] = (),
    *,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
    node: base_pb2.Node | None = None,
) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=list(names),
        response_nonce=nonce,
        version_info=version,
    )
    if node is not None:
        r.node.CopyFrom(node)
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def dreq(
    type_url: str,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    *,
    nonce: str = "",
    error: str | None = None,
    initial: dict[str, str] | None = None,
    node: base_pb2.Node | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    r = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if node is not None:
        r.node.CopyFrom(node)
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def sotw(cache: SnapshotCache, **kw: object) -> SotwSession:
    return SotwSession(cache, **kw)  # type: ignore[arg-type]


def delta(cache: SnapshotCache, **kw: object) -> DeltaSession:
    return DeltaSession(cache, **kw)  # type: ignore[arg-type]


def decode_sotw(resp: Response) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse.FromString(resp.encode())


def decode_delta(resp: Response) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse.FromString(resp.encode())


def one(responses: list[Response], type_url: str | None = None) -> Response:
    assert len(responses) == 1, (
        f"expected one response, got {[(r.type_url, r.names) for r in responses]}"
    )
    if type_url is not None:
        assert responses[0].type_url == type_url
    return responses[0]


def sotw_names(resp: Response) -> list[str]:
    msg = decode_sotw(resp)
    cls = types.MESSAGE_CLASSES[msg.type_url]
    out = []
    for a in msg.resources:
        m = cls()
        assert a.Unpack(m)
        out.append(types.resource_name(msg.type_url, m))
    return out


def ack(session: SotwSession, resp: Response, names: Iterable[str] = ()) -> list[Response]:
    return session.on_request(sreq(resp.type_url, names, nonce=resp.nonce, version=resp.version))
