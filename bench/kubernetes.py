"""Kubernetes source benchmark: Services + EndpointSlices in kmock → the real ``xds-server
--kubernetes`` → simulated proxies; start → ready, memory, EndpointSlice change → ACKs.

    python -m bench.kubernetes --services 5000 --endpoints 5 --proxies 100 --mode both --edits 5

For each mode it starts kmock's Kubernetes emulator (``tests.harness.kubeapi``: a real HTTP
server on loopback, in a thread of this process) holding ``--services`` Services (namespace
``bench``, one port ``http`` 80) and as many EndpointSlices of ``--endpoints`` ready
endpoints (10.x.y.z:8080, never dialled; with ``--pods`` each endpoint names a Pod,
labelled ``app``/``version``, which the server's metadata-only Pod watch reads; with
``--routes`` each Service ``svc-i`` has an HTTPRoute ``svc-i-canary`` sending 90 % to it
and 10 % to the next Service, and the edits shift one route's weights instead), writes a
kubeconfig for it, starts ``xds-server --kubernetes`` and measures:

1. startup: process start → ``/readyz`` 200 (both lists read, every service built);
   server RSS then;
2. ramp: the simulated Envoys (``bench.sim``) connect at ``--ramp-rate``/s until all have
   their full configuration; then ``--settle`` s idle (kmock replays every object as ADDED
   when a watch starts: the server finds nothing new in them);
3. edits: ``--edits`` EndpointSlice PATCHes, each on a different service, moving one
   endpoint to a new address (with ``--routes``: merge PATCHes of one HTTPRoute's
   weights, 80/20, 70/30, …, each delivering a new RouteConfiguration, predicted in
   this process by parsing, resolving and translating as the server does).
   Latency = ``time.time()`` just before the PATCH is sent → each proxy's ACK of the
   EDS (RDS) response carrying the new ClusterLoadAssignment (RouteConfiguration), matched
   by content against what ``sources.kube_mapping`` + the translators produce for it).
   This includes kmock's handling of the PATCH and its watch event, the source, catalog,
   debouncer, translation, push and ACK. The next edit starts ``--edit-interval`` s after
   the previous one, and at least 0.5 s after it converged. Reported: the *per-proxy*
   latency (pooled over edits x proxies: p50/p99/max), *PATCH → last proxy ACKed* (per
   edit: median and max over the edits), and the server's CPU per edit from just before
   the PATCH to when the benchmark saw the last ACK (psutil).

Prints a table; ``--json [PATH]`` also writes the figures. Every wait has a timeout; the
server, the emulator and the workers are stopped on exit, on error and on Ctrl-C. No
thresholds are enforced.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import kmock

from bench import changes, common, fixtures
from bench.sim import body_marker
from sources.kube_mapping import build_entry, parse_service, parse_slice
from sources.kube_policies import parse_object
from tests.harness.kubeapi import (
    HTTP_ROUTES,
    PODS,
    SERVICES,
    SLICES,
    KubeApi,
    endpoint,
    endpoint_slice,
    pod,
    service,
)
from translators import ProxyGroup
from translators.policy_resolve import resolve_policies
from translators.services import service_load_assignments
from translators.translate import group_resources
from xds_server.model import PolicyObject, ServiceEntry, ServiceKey

NAMESPACE = "bench"
ENDPOINT_PORT = 8080
SOURCE = "kubernetes"


def _ip(n: int, first: int = 10) -> str:
    return f"{first}.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"


class Cluster:
    """The Services and EndpointSlices held by the emulator, and what an edit must deliver."""

    def __init__(
        self, api: KubeApi, services: int, endpoints: int, pods: bool = False, routes: bool = False
    ) -> None:
        self.api = api
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.weights: dict[str, int] = {}  # route → weight of its own Service (the rest: next)
        self.fresh = 0
        for i in range(services):
            name = f"svc-{i:05d}"
            self.services[name] = service(name, namespace=NAMESPACE)
            eps = [
                endpoint(_ip(i * endpoints + j + 1), zone=f"z{j % 3}", ready=True)
                for j in range(endpoints)
            ]
            if pods:
                for j, ep in enumerate(eps):
                    self._add_pod(ep, f"{name}-{j:03d}", name, f"v{j % 2 + 1}")
            if routes:
                self.weights[name] = 90
                self.routes[name] = self._route(name, f"svc-{(i + 1) % services:05d}")
            self.slices[name] = endpoint_slice(
                f"{name}-abcde", name, eps, [("http", ENDPOINT_PORT)], namespace=NAMESPACE
            )
        if routes:
            api.serve_crds()

        def load(k: kmock.KubernetesEmulator) -> None:
            # Straight into the emulator's store: 10,000 POSTs would only time kmock.
            svc_res, slice_res = kmock.resource(SERVICES), kmock.resource(SLICES)
            for name, obj in self.services.items():
                k.objects[svc_res, NAMESPACE, name] = obj
            for obj in self.slices.values():
                k.objects[slice_res, NAMESPACE, obj["metadata"]["name"]] = obj
            pod_res = kmock.resource(PODS)
            for pod_name, obj in self.pods.items():
                k.objects[pod_res, NAMESPACE, pod_name] = obj
            route_res = kmock.resource(HTTP_ROUTES)
            for obj in self.routes.values():
                k.objects[route_res, NAMESPACE, obj["metadata"]["name"]] = obj

        api.script(load)

    def _add_pod(self, ep: dict[str, Any], name: str, app: str, version: str) -> None:
        """Endpoint `ep` is Pod `name`, labelled as a Deployment's pods are."""
        ep["targetRef"] = {"kind": "Pod", "name": name, "namespace": NAMESPACE}
        labels = {"app": app, "version": version, "pod-template-hash": "5d8f7c9b6d"}
        self.pods[name] = pod(name, labels, namespace=NAMESPACE)

    def _route(self, name: str, other: str) -> dict[str, Any]:
        """HTTPRoute `<name>-canary` (GAMMA: parent Service `name`): `weights[name]` parts
        to `name`, the rest to `other` (a canary across Services)."""
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": f"{name}-canary", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": name, "port": 80}],
                "rules": [{"backendRefs": self._backends(name, other)}],
            },
        }

    def _backends(self, name: str, other: str) -> list[dict[str, Any]]:
        w = self.weights[name]
        return [
            {"name": name, "port": 80, "weight": w},
            {"name": other, "port": 80, "weight": 100 - w},
        ]

    def route_markers(self) -> list[str]:
        """`body_marker` of every RouteConfiguration the proxies' group gets now, built as
        the server builds it (parse, resolve against the catalog, translate)."""
        if not hasattr(self, "_entries"):
            self._entries: dict[ServiceKey, ServiceEntry] = {}
            for name, svc in self.services.items():
                sl = parse_slice(self.slices[name])
                entry = build_entry(parse_service(svc), [sl], SOURCE)
                self._entries[entry.key] = entry
            self._parsed: dict[str, tuple[dict[str, Any], PolicyObject]] = {}
        for name, obj in self.routes.items():
            if name not in self._parsed or self._parsed[name][0] is not obj:  # new or edited
                origin = f"kubernetes:{NAMESPACE}/{obj['metadata']['name']}"
                self._parsed[name] = (obj, parse_object(obj, origin))
        objects = [parsed for _, parsed in self._parsed.values()]
        resolution = resolve_policies(self._entries, objects, {})
        services = [e.service for e in self._entries.values()]
        _, routes, _ = group_resources(services, ProxyGroup(), resolution.services)
        return [body_marker(rc.name, rc.SerializeToString(deterministic=True)) for rc in routes]

    def shift_weight(self, name: str, serial: int) -> tuple[str, list[str], dict[str, Any]]:
        """Edit `serial` of route `<name>-canary`: 80/20, 70/30, … (cycling); what it
        does, the markers it must deliver, and the merge patch that does it."""
        before = self.weights[name]
        self.weights[name] = 80 - 10 * (serial % 9)
        rules = self.routes[name]["spec"]["rules"]
        other = rules[0]["backendRefs"][1]["name"]
        new = {**self.routes[name], "spec": {**self.routes[name]["spec"]}}
        new["spec"]["rules"] = [{"backendRefs": self._backends(name, other)}]
        self.routes[name] = new
        w = self.weights[name]
        what = f"HTTPRoute {name}-canary: {before}/{100 - before} → {w}/{100 - w}"
        return what, self.route_markers(), {"spec": {"rules": new["spec"]["rules"]}}

    def patch_route(self, name: str, patch: dict[str, Any]) -> None:
        self.api.patch_custom(
            "gateway.networking.k8s.io/v1", "HTTPRoute", f"{name}-canary", patch, NAMESPACE
        )

    def move_endpoint(self, name: str) -> changes.Edit:
        """PATCH the service's slice: its first endpoint gets a new address. The edit,
        with the marker of the ClusterLoadAssignment it must produce and the time just
        before the PATCH was sent."""
        self.fresh += 1
        sl = self.slices[name]
        eps = [dict(e) for e in sl["endpoints"]]
        eps[0] = {**eps[0], "addresses": [_ip(self.fresh, first=200)]}
        sl["endpoints"] = eps
        entry = build_entry(parse_service(self.services[name]), [parse_slice(sl)], SOURCE)
        clas = [fixtures.cla_marker(cla) for cla in service_load_assignments(entry)]
        at = time.time()
        self.api.patch("endpointslices", sl["metadata"]["name"], {"endpoints": eps}, NAMESPACE)
        what = f"{name}: endpoint moved to {eps[0]['addresses'][0]}"
        return changes.Edit("move", what, clas, [], at)


@dataclass
class Options(common.RunOptions):
    services: int
    endpoints: int
    edits: int
    edit_interval: float
    pods: bool
    routes: bool


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-kubernetes-") as tmp,
        common.ServerRun(mode, o, "bench-kubernetes") as run,
    ):
        api = KubeApi().start()  # in this process: its CPU counts as the benchmark's own
        run.stack.callback(api.stop)
        t0 = time.perf_counter()
        cluster = Cluster(api, o.services, o.endpoints, o.pods, o.routes)
        run.out["emulator_load_s"] = round(time.perf_counter() - t0, 2)
        config = api.kubeconfig(Path(tmp) / "kubeconfig")
        server = run.start_server(["--kubernetes", "--kubeconfig", str(config)])
        ready_s = server.wait_ready(o.timeout)
        w = run.start_workers(server.xds_port)
        run.out.update(_measure(o, cluster, server, w, ready_s))
    return run.out


def _measure(
    o: Options, cluster: Cluster, server: common.RealServer, w: common.Workers, ready_s: float
) -> dict[str, Any]:
    res = common.connect_all(server, w, o, ready_s)

    tr = changes.Tracker(w, server)
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(cluster.services), min(o.edits, len(cluster.services)))
    edits: list[dict[str, Any]] = []
    for k, target in enumerate(targets):
        if o.routes:  # a route weight shifted (the markers predicted before the clock starts)
            what, markers, patch = cluster.shift_weight(target, k)

            def act(
                target: str = target, what: str = what, m: list[str] = markers, p: Any = patch
            ) -> changes.Edit:
                at = time.time()
                cluster.patch_route(target, p)
                return changes.Edit("weight", what, [], m, at)

            edits.append(tr.measure(act, o.timeout, o.edit_interval))
        else:
            move = partial(cluster.move_endpoint, target)
            edits.append(tr.measure(move, o.timeout, o.edit_interval))
    return {**res, **tr.finish(edits, "edits")}


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    t = common.Table(results)
    t.connect_rows()
    row = t.row
    noun = "route weight edits" if o.routes else "slice edits"
    changes.per_change_rows(t, "edits", "edit", "PATCH")
    changes.change_rows(t, noun, "PATCH", "edits", lambda r: r["edits_summary"])
    row(
        f"{noun}: translate per edit (mean)",
        lambda r: r["edits_total"]["translate"]["mean_ms"],
        " ms",
    )
    row("proxy ACKs missing", lambda r: r["edits_summary"]["missing"])
    row("server peak RSS", lambda r: r["server"]["peak_rss_mb"], " MB")
    heading = (
        f"Kubernetes source: {o.services} Services + {o.services} EndpointSlices x "
        f"{o.endpoints} endpoints{' (each a Pod)' if o.pods else ''}"
        f"{f' + {o.services} HTTPRoutes' if o.routes else ''}, {o.proxies} proxies, "
        f"{o.edits} {noun}"
    )
    changes.print_table(t, heading, o, info, "edits", "edit")


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        common.int_options(p, services=5000, endpoints=5, edits=5)
        p.add_argument("--edit-interval", type=float, default=2.0)
        p.add_argument(
            "--pods",
            action="store_true",
            help="every endpoint is a Pod (labels app, version) the server watches",
        )
        p.add_argument(
            "--routes",
            action="store_true",
            help="one HTTPRoute per Service (90/10 to it and the next one); the edits shift"
            " a route's weights instead of moving endpoints",
        )
        p.set_defaults(proxies=100)

    prog = "python -m bench.kubernetes"
    return common.cli(prog, __doc__, Options, arguments, run_mode, print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
