"""Builders of Gateway API route objects for the tests: an HTTPRoute or GRPCRoute attached
to Service shop/web (port 80 unless told), and a helper that parses one and returns the
rejection message."""

from __future__ import annotations

import copy
from typing import Any

from sources.gateway_api import ParsedRoute, parse_route
from sources.istio import PolicyError

WEB = {"group": "", "kind": "Service", "name": "web", "port": 80}


def route(
    *rules: dict[str, Any],
    kind: str = "HTTPRoute",
    name: str = "web",
    namespace: str = "shop",
    parents: list[dict[str, Any]] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "parentRefs": copy.deepcopy(parents if parents is not None else [WEB]),
            "rules": list(rules),
        },
    }


def to(*names: str, port: int = 80, **rule: Any) -> dict[str, Any]:
    """A rule sending to the Services `names` (weight 1 each)."""
    return {"backendRefs": [{"name": n, "port": port} for n in names], **rule}


def parse(obj: dict[str, Any]) -> ParsedRoute:
    return parse_route(obj, "test")


def rejection(obj: Any) -> str:
    try:
        parse_route(obj, "test")
    except PolicyError as exc:
        return str(exc)
    raise AssertionError("accepted")
