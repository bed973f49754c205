"""Static Envoy bootstraps carrying rendered authorization filters, for the tests that
check them against a real Envoy without the xDS server or mTLS: an HTTP listener (the
given HTTP filters before the router, to a backend cluster) and TCP listeners (the given
network filters before a tcp_proxy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from tests.harness.envoy import static_bootstrap

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def to_json(message: Message) -> dict[str, Any]:
    """A proto as Envoy's JSON config (Any fields keep their @type)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def tcp_listener(name: str, port: int, filters: Sequence[Message], cluster: str) -> dict[str, Any]:
    proxy = {"@type": TCP_PROXY, "stat_prefix": name, "cluster": cluster}
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    *(to_json(f) for f in filters),
                    {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy},
                ]
            }
        ],
    }


def authz_bootstrap(
    admin_port: int,
    http_port: int,
    backend_port: int,
    http_filters: Sequence[Message],
    tcp: Sequence[tuple[str, int, Sequence[Message]]] = (),
) -> dict[str, Any]:
    """`static_bootstrap` (listener ``listener_0``, HCM stat prefix ``ingress``) with
    `http_filters` before its router, and a TCP listener per (name, port, filters)."""
    config = static_bootstrap(admin_port, http_port, backend_port)
    (listener,) = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [*(to_json(f) for f in http_filters), *hcm["http_filters"]]
    cluster = config["static_resources"]["clusters"][0]["name"]
    config["static_resources"]["listeners"] += [
        tcp_listener(name, port, filters, cluster) for name, port, filters in tcp
    ]
    return config
