"""deploy/grafana/xds-server.json: a valid dashboard whose every query names a series the
real server exposes.

The server runs as a user runs it (the example registry and policy), with one ADS client
that subscribes CDS → EDS → LDS → RDS, ACKs, follows a registry edit and NACKs one push,
and a broken registry edit in between: afterwards every series the dashboard queries
must have a sample in /metrics (a labelled series with no sample would be an empty
panel in Grafana, so a declared family alone does not count).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.ads_client import AdsClient
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import async_wait_for
from tests.xds_util import CDS, EDS, LDS, NODE, RDS

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "xds-server.json"
EXAMPLES = ROOT / "examples"
Start = Callable[..., XdsServerProcess]

# -- PromQL: the metric names an expression reads -------------------------------------

# Grafana's variables are not PromQL: a range variable becomes a duration, any other one
# sits in a label matcher's regex, where any text will do.
_RANGE_VARIABLE = re.compile(r"\$(?:__rate_interval|__interval|__range)\b")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$")


def promql_metrics(expr: str) -> set[str]:
    """The metric names a Grafana PromQL expression reads, from its parsed syntax tree
    (a syntax error raises ValueError). Grafana's ``label_values(selector, label)`` (a
    variable's query) reads the selector's metric."""
    if (m := _LABEL_VALUES.match(expr)) is not None:
        expr = m.group(1)
    tree = promql_parser.parse(_VARIABLE.sub(".*", _RANGE_VARIABLE.sub("5m", expr)))
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(tree, visit)
    return names


def test_promql_metrics_finds_metrics_and_nothing_else() -> None:
    assert promql_metrics(
        'histogram_quantile(0.99, sum by (le, type) (rate(a_bucket{type="x", '
        'instance=~"$instance"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert promql_metrics("sum(b) / ignoring(x) c offset 5m > bool 1e3") == {"b", "c"}
    assert promql_metrics(
        'count(max by (source) (max_over_time(d{s="e(f)"}[$__range]))) or vector(0)'
    ) == {"d"}
    assert promql_metrics("label_values(g{h='i'}, instance)") == {"g"}
    with pytest.raises(ValueError, match="parenthesis"):
        promql_metrics("sum(rate(x[5m])")


# -- the dashboard ------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def queries(doc: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression: panel targets and query variables, by where it is."""
    out = {}
    for panel in doc["panels"]:
        for t in panel.get("targets", []):
            out[f"panel {panel['title']!r} {t['refId']}"] = t["expr"]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out[f"variable {var['name']}"] = query["query"] if isinstance(query, dict) else query
    return out


def test_dashboard_shape() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] == "xds-server"
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        assert p["title"] and p["type"], p
        pos = p["gridPos"]
        assert all(isinstance(pos[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"], p["title"]
    # What the issue asks to see, by the series that show it.
    read = set().union(*map(promql_metrics, queries(doc).values()))
    assert {
        "xds_connected_proxies",
        "xds_pushes_total",
        "xds_push_bytes_total",
        "xds_convergence_latency_seconds_bucket",
        "xds_push_latency_seconds_bucket",
        "xds_nacks_total",
        "xds_source_stale",
        "xds_source_rejected_entries",
        "xds_policy_objects",
    } <= read


def test_every_query_parses_and_reads_a_metric() -> None:
    bad = {}
    for where, expr in queries(dashboard()).items():
        try:
            if not promql_metrics(expr):
                bad[where] = "reads no metric"
        except ValueError as exc:
            bad[where] = f"{exc}: {expr}"
    assert bad == {}


# -- against the real server -----------------------------------------------------------------


def _names(resp: discovery_pb2.DiscoveryResponse, message: Any) -> list[str]:
    out = []
    for any_ in resp.resources:
        m = message()
        any_.Unpack(m)
        out.append(m.name)
    return out


def _route_names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    names = []
    for any_ in resp.resources:
        listener = listener_pb2.Listener()
        any_.Unpack(listener)
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    names.append(hcm.rds.route_config_name)
    return sorted(set(names))


class Proxy:
    """One ADS stream behaving like Envoy: subscribes CDS, then EDS for those clusters,
    LDS, then RDS for the listeners' route configurations, and answers every response."""

    def __init__(self, port: int):
        self.client = AdsClient(port)
        self.names: dict[str, list[str]] = {CDS: [], EDS: [], LDS: [], RDS: []}
        self.versions: dict[str, str] = {}  # the last version ACKed, per type

    async def start(self) -> None:
        await self.client.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS))
        await self.client.send(discovery_pb2.DiscoveryRequest(type_url=LDS))
        while self.versions.keys() != {CDS, EDS, LDS, RDS}:
            await self.answer()

    async def answer(self, nack: bool = False) -> discovery_pb2.DiscoveryResponse:
        resp = await self.client.recv(timeout=10)
        t = resp.type_url
        follow = None
        if t == CDS:
            follow = (EDS, _names(resp, cluster_pb2.Cluster))
        elif t == LDS:
            follow = (RDS, _route_names(resp))
        if follow is not None and follow[1] != self.names[follow[0]]:
            self.names[follow[0]] = follow[1]
            await self.client.send(
                discovery_pb2.DiscoveryRequest(type_url=follow[0], resource_names=follow[1])
            )
        error = status_pb2.Status(code=3, message="rejected by the test") if nack else None
        await self.client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=t,
                resource_names=self.names[t],
                response_nonce=resp.nonce,
                version_info=self.versions.get(t, "") if nack else resp.version_info,
                error_detail=error,
            )
        )
        if not nack:
            self.versions[t] = resp.version_info
        return resp


def exposed(server: XdsServerProcess) -> set[str]:
    """Names of the samples /metrics has (a histogram's `_bucket`, `_sum`, `_count`)."""
    status, text = server.get_text("/metrics")
    assert status == 200
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def test_every_series_the_dashboard_queries_exists(
    tmp_path: Path, xds_server_factory: Start
) -> None:
    wanted = set().union(*map(promql_metrics, queries(dashboard()).values()))
    registry = tmp_path / "registry.yaml"
    example = (EXAMPLES / "registry.yaml").read_text()
    registry.write_text(example)
    server = xds_server_factory(
        *("--file", str(registry), "--file-interval", "0.1"),
        *("--policy", str(EXAMPLES / "policy.yaml")),
    )
    proxy = Proxy(server.xds_port)
    try:
        await proxy.start()
        # A broken file: the source goes stale (errors, last good state kept)...
        registry.write_text("services: [\n")
        await async_wait_for(
            lambda: server.metrics().get('xds_source_stale{source="file"}') == 1.0,
            timeout=10,
            message="the file source reported stale",
        )
        # ...then an edit with one more endpoint and one bad one (a rejected entry):
        # pushed with a registry change behind it (push and convergence latency).
        registry.write_text(
            example.replace(
                "      - {address: 127.0.0.1, port: 8083, zone: z1}\n",
                "      - {address: 127.0.0.1, port: 8083, zone: z1}\n"
                "      - {address: 127.0.0.1, port: 8085, zone: z1}\n"
                "      - {address: 127.0.0.1, port: 70000, zone: z1}\n",
            )
        )
        assert (await proxy.answer()).type_url == EDS
        # Another edit, and the proxy rejects its push.
        registry.write_text(example)
        assert (await proxy.answer(nack=True)).type_url == EDS
        await async_wait_for(
            lambda: wanted <= exposed(server),
            timeout=10,
            message=lambda: f"series the dashboard queries: {sorted(wanted - exposed(server))}",
        )
    finally:
        await proxy.client.close()
