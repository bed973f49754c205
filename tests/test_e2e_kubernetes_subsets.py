"""End to end: DestinationRule subsets over Kubernetes pods, selected by the pods' labels.

`xds-server --kubernetes --policy` (a real subprocess) against kmock's Kubernetes API,
a real Envoy and real loopback backends. Each backend is one Pod (labelled `version`)
and one EndpointSlice whose endpoint names it in `targetRef`; EndpointSlices carry no
labels, so the subsets can only work if the server joins the endpoints to the Pods'
labels (its metadata-only Pod watch).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.harness import e2e
from tests.harness.backends import HttpBackend
from tests.harness.e2e import WAIT
from tests.harness.envoy import EnvoyProcess
from tests.harness.kubeapi import KubeApi, endpoint, endpoint_slice, pod, service
from tests.harness.policy import (
    Client,
    destination,
    destination_rule,
    share,
    subsets,
    virtual_service,
)
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures", "tests.harness.kube_fixtures"]
pytestmark = pytest.mark.timeout(120)

NODE = "envoy-kube-subsets"
CLUSTER = "web.default:80"
REQUESTS = 500


def backend_pod(api: KubeApi, b: HttpBackend, version: str) -> None:
    """Pod `web-<name>` labelled `version`, and the EndpointSlice naming it."""
    api.create(pod(f"web-{b.name}", {"app": "web", "version": version}))
    eps = [endpoint(pod=f"web-{b.name}")]
    api.create(endpoint_slice(f"web-{b.name}", "web", eps, [("http", b.port)]))


def at(*backends: HttpBackend) -> list[tuple[str, int]]:
    """The endpoints of `backends` as Envoy lists them (sorted)."""
    return sorted(("127.0.0.1", b.port) for b in backends)


def within(counts: Counter[str], names: str, percent: float) -> bool:
    """The share of the backends `names` is `percent` give or take 5 binomial standard
    deviations (n = 500, 90 %: 1.3 points each)."""
    n = sum(counts.values())
    sigma = 100 * math.sqrt(percent / 100 * (1 - percent / 100) / n)
    return abs(sum(share(counts, name) for name in names) - percent) <= 5 * sigma


def test_pod_label_subsets_split_traffic_and_follow_a_relabel(
    tmp_path: Path,
    kube_api: KubeApi,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    a, b, c = e2e.backends(http_backend_factory, "a", "b", "c")
    kube_api.create(service("web"))
    backend_pod(kube_api, a, "v1")
    backend_pod(kube_api, b, "v2")
    backend_pod(kube_api, c, "v1")
    policy = tmp_path / "policy.yaml"
    vs = virtual_service(
        "web", ["web"], [{"route": [destination("web", "v1", 90), destination("web", "v2", 10)]}]
    )
    policy.write_text(yaml.safe_dump_all([destination_rule("web", "web", subsets("v1", "v2")), vs]))
    port = free_port()
    server = xds_server_factory(
        "--kubernetes", "--kubeconfig", str(kube_api.kubeconfig(tmp_path / "kubeconfig")),
        "--policy", str(policy), "--http-listener-port", str(port),
    )  # fmt: skip
    env = e2e.Mesh(server, port, NODE).envoy(envoy_factory)
    v1, v2 = f"{CLUSTER}|v1", f"{CLUSTER}|v2"
    wait_for(
        lambda: env.endpoints(v1) == at(a, c) and env.endpoints(v2) == at(b),
        WAIT,
        message="subset clusters by pod label",
    )
    client = Client(port)
    counts = client.bodies("web", REQUESTS)
    assert set(counts) == {"a", "b", "c"}, counts
    assert within(counts, "ac", 90) and within(counts, "b", 10), counts

    # Relabel pod c to v2: its endpoint moves to the other subset, nothing else changes.
    kube_api.patch("pods", "web-c", {"metadata": {"labels": {"version": "v2"}}})
    wait_for(
        lambda: env.endpoints(v1) == at(a) and env.endpoints(v2) == at(b, c),
        WAIT,
        message="pod c in subset v2",
    )
    counts = client.bodies("web", REQUESTS)
    client.close()
    assert within(counts, "a", 90) and within(counts, "bc", 10), counts
    assert counts["c"] > 0, counts
    assert e2e.rejected(env) == {}, "Envoy rejected an update"
