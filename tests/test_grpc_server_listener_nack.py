"""What we send proxyless gRPC for servers and mTLS clients is accepted by real grpcio
(gRFC A29, A36, A41): a table of variants pushed one after another to a running
``grpc.server(xds=True)`` and an ``xds:///`` client, each seen ACKed; and negative
controls (a SAN match on a server, an unknown certificate provider instance) seen
NACKed, so the check can tell the two apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from tests.harness.grpc_mesh import XDS_CREDENTIALS, GrpcXdsServer, mesh_bootstrap, server_bootstrap
from tests.harness.grpc_xds import GrpcXdsClient
from tests.harness.ports import free_port
from tests.harness.waiting import wait_for
from tests.harness.xds import XdsServerThread
from tests.harness.xds_tls import XdsPki
from translators.group import ProxyGroup
from translators.grpc_server import (
    GRPC_TEMPLATE,
    ISTIO_TEMPLATE,
    ServerInstance,
    allow_principals,
    server_listener,
    server_listeners,
)
from translators.grpc_tls import TLS_MODE_LABEL, downstream_tls, upstream_tls, with_upstream_tls
from translators.resources import pack
from translators.translate import translate
from xds_server import types
from xds_server.model import Endpoint, Port, Service, ServiceEntry, ServiceKey

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(120)

WEB = "spiffe://cluster.local/ns/default/sa/web"
GROUP = "grpc"  # XdsServerThread's cache groups nodes by cluster; both use "grpc"
_versions = itertools.count()


def deny(principal: str) -> rbac_pb2.RBAC:
    rule = allow_principals([principal])
    rule.rules.action = rbac_config_pb2.RBAC.DENY
    return rule


def bad_socket(mutate: Callable[[Any], None], context: Any) -> base_pb2.TransportSocket:
    socket = (
        downstream_tls()
        if isinstance(context, tls_pb2.DownstreamTlsContext)
        else upstream_tls([WEB])
    )
    socket.typed_config.Unpack(context)
    mutate(context)
    socket.typed_config.CopyFrom(pack(context))
    return socket


def san_on_server(ctx: tls_pb2.DownstreamTlsContext) -> None:
    ctx.common_tls_context.validation_context.match_subject_alt_names.add(exact=WEB)


def unknown_instance(ctx: Any) -> None:
    ctx.common_tls_context.tls_certificate_provider_instance.instance_name = "missing"


def status(srv: XdsServerThread, node_id: str, short: str) -> dict[str, Any]:
    for proxy in srv.proxies():
        if proxy["node_id"] == node_id and short in proxy["types"]:
            return dict(proxy["types"][short])
    return {}


def push(
    srv: XdsServerThread, node_id: str, type_url: str, resources: Sequence[Message]
) -> dict[str, Any]:
    """Install `resources` of `type_url`, then wait for the node's answer to them."""
    short = types.short_name(type_url)
    before = status(srv, node_id, short).get("sent_version")
    assert srv.set_snapshot(GROUP, {type_url: list(resources)})

    def answered() -> dict[str, Any] | None:
        st = status(srv, node_id, short)
        if st.get("sent_version") != before and st.get("state") in ("SYNCED", "NACKED"):
            return st
        return None

    return wait_for(answered, timeout=20, message=f"{node_id} never answered {short}")


def test_server_listeners_and_tls_clusters_are_acked_and_bad_ones_nacked(
    tmp_path: Path, grpc_xds_client_factory: Callable[..., GrpcXdsClient]
) -> None:
    pki = XdsPki(tmp_path / "pki")
    port = free_port()
    at = f"127.0.0.1:{port}"
    name = GRPC_TEMPLATE.replace("%s", at)
    api = Service("api", ports=(Port("grpc", 50051, "grpc"),), labels=((TLS_MODE_LABEL, "istio"),))
    api_entry = ServiceEntry(api, (Endpoint("127.0.0.1", port, "grpc"),))
    client = translate({ServiceKey("default", "api"): api_entry}, ProxyGroup("grpc")).resources
    instance = ServerInstance("127.0.0.1", port, (api,), api_entry.endpoints)
    # What the server does not ask for rides along, as in a real group snapshot.
    others = [
        *client[types.LISTENER],
        server_listener(ISTIO_TEMPLATE.replace("%s", at), *at.split(":")[:1], port),
    ]

    def listener(rbac: Sequence[rbac_pb2.RBAC], socket: base_pb2.TransportSocket | None) -> Message:
        return server_listener(name, "127.0.0.1", port, rbac, socket)

    plain = listener((), None)
    with XdsServerThread() as srv:
        srv.set_snapshot(GROUP, {**client, types.LISTENER: [*others, plain]})
        api_boot = server_bootstrap(srv.port, "api", pki.client("default", "api"))
        web_boot = mesh_bootstrap(
            srv.port, "web-1", "default", "web", pki.client("default", "web"), xds_tls=False
        )
        with GrpcXdsServer("api", port, api_boot, tmp_path / "api.log"):
            web = grpc_xds_client_factory(web_boot, "xds:///api", env=XDS_CREDENTIALS)
            # Plaintext first (no TLS anywhere yet): both ends are up and configured.
            web.wait_for_body('{"name": "api", "peer": "", "serial": ""}', timeout=30)

            ours = server_listeners([instance], lambda i: [allow_principals([WEB])], tls=True)
            server_table: list[tuple[str, Message, str]] = [
                (
                    "translator output (RBAC + mTLS)",
                    next(x for x in ours if x.name == name),
                    "SYNCED",
                ),
                (
                    "deny, allow, mTLS",
                    listener([deny(WEB + "x"), allow_principals([WEB])], downstream_tls()),
                    "SYNCED",
                ),
                ("mTLS, no RBAC", listener((), downstream_tls()), "SYNCED"),
                (
                    "control: SAN match on a server",
                    listener((), bad_socket(san_on_server, tls_pb2.DownstreamTlsContext())),
                    "NACKED",
                ),
                (
                    "control: unknown provider",
                    listener((), bad_socket(unknown_instance, tls_pb2.DownstreamTlsContext())),
                    "NACKED",
                ),
                ("plain again", plain, "SYNCED"),
            ]
            got = {}
            for label, resource, _ in server_table:
                st = push(srv, "api-1", types.LISTENER, [*others, resource])
                got[label] = (st["state"], st["last_error"])
            # The controls fail for the reason they were built with.
            assert (
                "match_subject_alt_names not supported" in got["control: SAN match on a server"][1]
            )
            assert "unrecognized certificate provider" in got["control: unknown provider"][1]
            assert {k: v[0] for k, v in got.items()} == {k: w for k, _, w in server_table}, got

            clusters = [
                cluster_pb2.Cluster.FromString(m.SerializeToString()) for m in client[types.CLUSTER]
            ]
            broken = with_upstream_tls(clusters, api, "cluster.local")
            for c in broken:
                c.transport_socket.CopyFrom(
                    bad_socket(unknown_instance, tls_pb2.UpstreamTlsContext())
                )
            client_table: list[tuple[str, list[cluster_pb2.Cluster], str]] = [
                (
                    "translator output (mTLS + SAN)",
                    with_upstream_tls(clusters, api, "cluster.local"),
                    "SYNCED",
                ),
                ("control: unknown provider", broken, "NACKED"),
                ("plain again", clusters, "SYNCED"),
            ]
            states = {
                k: push(srv, "web-1", types.CLUSTER, cs)["state"] for k, cs, _ in client_table
            }
            assert states == {k: w for k, _, w in client_table}
