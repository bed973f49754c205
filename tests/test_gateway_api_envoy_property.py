"""Property: every Gateway API route the parser accepts renders (alone, and merged with
the others attached to the Service) to routes the real Envoy accepts (`envoy --mode
validate`), and to gRPC routes with nothing grpcio does not know (no
path_separated_prefix, no rewrites).

Each example is a batch of generated routes (`tests.gateway_strategies`), validated in
one bootstrap, so the few Envoy runs stay fast; hypothesis runs derandomized with no
database, as `test_policy_envoy_property` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from sources.gateway_api import ParsedRoute, merge_attached
from sources.istio import PolicyError
from tests.gateway_objects import parse
from tests.gateway_render import rendered
from tests.gateway_strategies import routes
from tests.harness.envoy import static_bootstrap, validate_bootstrap

pytestmark = pytest.mark.timeout(120)

BATCH = 12
SETTINGS = settings(
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def accepted(objs: list[dict[str, Any]]) -> list[ParsedRoute]:
    out = []
    for obj in objs:
        try:
            out.append(parse(obj))
        except PolicyError:
            continue
    return out


@SETTINGS
@given(st.lists(routes(), min_size=BATCH, max_size=BATCH))
def test_accepted_routes_render_to_what_envoy_and_grpc_accept(
    tmp_path_factory: pytest.TempPathFactory, objs: list[dict[str, Any]]
) -> None:
    parsed = accepted(objs)
    assert len(parsed) >= BATCH // 2, "the strategy should mostly draw valid routes"
    policies = [p.policy for p in parsed]
    policies.append(merge_attached("web", "shop", parsed))
    envoy: list[dict[str, Any]] = []
    for policy in policies:
        for_envoy, _ = rendered(policy, "envoy")
        envoy += [MessageToDict(r) for r in for_envoy]
        for_grpc, _ = rendered(policy, "grpc")
        for r in for_grpc:
            assert r.match.WhichOneof("path_specifier") in ("prefix", "path", "safe_regex")
            assert not r.route.prefix_rewrite and not r.route.HasField("regex_rewrite")
            assert not r.HasField("redirect")
    note(f"{len(envoy)} Envoy routes")
    boot = static_bootstrap(10000, 10001, 10002)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"] = envoy
    validate_bootstrap(boot, Path(tmp_path_factory.mktemp("envoy")))
