"""Istio objects for the parser tests (sources.istio): builders of VirtualServices and
DestinationRules in namespace `shop`, and the parse-and-inspect shortcuts they share."""

from __future__ import annotations

from typing import Any

import pytest

from sources.istio import PolicyError, parse_policy, render_path
from xds_server.model import Destination, DestinationPolicy, HttpRule, TrafficPolicy

NS = "shop"
REVIEWS = Destination("reviews", NS)


def v1(subset: str = "v1", port: int | None = None) -> Destination:
    return Destination("reviews", NS, port, subset)


def vs(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews-route", "namespace": NS, **meta},
        "spec": spec,
    }


def dr(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews-dr", "namespace": NS, **meta},
        "spec": {"host": "reviews", **spec},
    }


def to_reviews(**fields: Any) -> dict[str, Any]:
    """An HTTP rule routing to `reviews`, with `fields` added."""
    return {"route": [{"destination": {"host": "reviews"}}], **fields}


def http_vs(*rules: dict[str, Any]) -> dict[str, Any]:
    return vs({"hosts": ["reviews"], "http": list(rules)})


def parse_rule(**fields: Any) -> HttpRule:
    (rule,) = parse_policy(http_vs(to_reviews(**fields))).policy.http  # type: ignore[union-attr]
    return rule


def parse_dr(**spec: Any) -> DestinationPolicy:
    policy = parse_policy(dr(spec)).policy
    assert isinstance(policy, DestinationPolicy)
    return policy


def top_policy(**traffic: Any) -> TrafficPolicy | None:
    return parse_dr(trafficPolicy=traffic).policy


def rejection(obj: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    err = caught.value
    if err.path:  # the documented shape of the message
        assert str(err) == f"{render_path(err.path)}: {err.reason}"
    return str(err)


def notices(obj: dict[str, Any]) -> list[str]:
    return [str(n) for n in parse_policy(obj).notices]
