"""Gateway API routes rendered as Envoy routes for the tests: parsed, then rendered by
`translators.policy_routes.http_routes` with every destination on the one cluster
"backend", as JSON a static bootstrap takes."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf.json_format import MessageToDict

from sources.gateway_api import merge_attached
from tests.gateway_objects import parse
from translators.policy_common import Client, NotApplied, RouteTarget
from translators.policy_routes import http_routes
from xds_server.model import RoutePolicy


def rendered(
    policy: RoutePolicy, client: Client = "envoy", port: int = 80
) -> tuple[list[rc.Route], list[NotApplied]]:
    return http_routes(
        policy.http,
        port=port,
        resolve=lambda d: RouteTarget("backend"),
        client=client,
        subject=str(policy.key),
    )


def envoy_routes(obj: dict[str, Any], port: int = 80) -> list[dict[str, Any]]:
    routes, _ = rendered(parse(obj).policy, "envoy", port)
    return [MessageToDict(r) for r in routes]


def merged_envoy_routes(*objs: dict[str, Any], port: int = 80) -> list[dict[str, Any]]:
    """The routes of Service shop/web once `objs` are merged in precedence order."""
    policy = merge_attached("web", "shop", [parse(obj) for obj in objs])
    routes, _ = rendered(policy, "envoy", port)
    return [MessageToDict(r) for r in routes]
