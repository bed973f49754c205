"""When a real Envoy has applied something, read from its admin API, the same way whatever
control plane feeds it.

Envoy's endpoint config dump (``/config_dump?resource=…_endpoint_configs&include_eds``)
is built from each cluster's current host set, for EDS clusters and for clusters with
their endpoints inline alike, so it says what Envoy *uses*, not what it was sent; with
``name_regex`` it costs about a millisecond of Envoy's main thread even at 1,000 clusters.
``/stats`` is avoided for polling: filtering walks every stat (tens of milliseconds at
1,000 clusters, on the thread that also applies xDS).

* `wait_applied`: one cluster's endpoints include an address (an edit arrived).
* `wait_all_active`: no cluster is warming and every expected cluster has at least its
  number of endpoints. A cheap probe (warming clusters, a handful of sample clusters)
  runs every `interval`; once it passes, one full dump confirms it, and the time of that
  confirming request is the answer (an upper bound, within one probe of the truth).

Times are ``time.monotonic()`` when the deciding request was sent.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tests.harness.envoy import EnvoyProcess

DYNAMIC = "dynamic_endpoint_configs"
STATIC = "static_endpoint_configs"
# Envoy caps a name_regex's RE2 program size (100 by default): a probe names at most four
# clusters, a few alternatives of a long name each.
SAMPLES = 4


class EnvoyWaitError(RuntimeError):
    pass


def name_regex(names: list[str]) -> str:
    """An RE2 pattern matching exactly these resource names."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


class EnvoyWatch:
    def __init__(self, envoy: EnvoyProcess, dump: str = DYNAMIC, request_timeout: float = 5.0):
        self.envoy = envoy
        self.dump = dump
        self.request_timeout = request_timeout
        self.requests = 0

    def _get(self, path: str) -> dict[str, Any] | None:
        """The admin answer as JSON; None while Envoy's admin does not answer yet.
        EnvoyWaitError if Envoy has exited."""
        if not self.envoy.running:
            raise EnvoyWaitError(f"Envoy exited; log tail:\n{self.envoy.log_tail(30)}")
        self.requests += 1
        try:
            status, body = self.envoy.admin_request("GET", path, self.request_timeout)
        except (OSError, http.client.HTTPException):
            return None
        if 400 <= status < 500:  # a request Envoy will never answer: the benchmark's fault
            raise EnvoyWaitError(f"Envoy answered GET {path} with {status}: {body[:300]}")
        if status != 200:
            return None
        doc: dict[str, Any] = json.loads(body)
        return doc

    def endpoints(self, names: list[str] | None = None) -> dict[str, list[str]] | None:
        """Cluster → the addresses of its hosts (all clusters, or just `names`)."""
        path = f"/config_dump?resource={self.dump}&include_eds"
        if names is not None:
            path += "&name_regex=" + urllib.parse.quote(name_regex(names), safe="")
        doc = self._get(path)
        if doc is None:
            return None
        out: dict[str, list[str]] = {}
        for item in doc.get("configs", []):
            cla = item.get("endpoint_config", {})
            out[cla.get("cluster_name", "")] = [
                lb["endpoint"]["address"]["socket_address"]["address"]
                for locality in cla.get("endpoints", [])
                for lb in locality.get("lb_endpoints", [])
            ]
        return out

    def warming(self) -> int | None:
        """How many clusters are warming (0 for a static bootstrap)."""
        if self.dump == STATIC:
            return 0
        doc = self._get("/config_dump?resource=dynamic_warming_clusters&mask=cluster.name")
        return None if doc is None else len(doc.get("configs", []))

    def wait_applied(
        self, cluster: str, address: str, timeout: float, interval: float = 0.005
    ) -> float:
        """When `cluster`'s hosts first included `address`."""
        deadline = time.monotonic() + timeout
        while True:
            sent = time.monotonic()
            eps = self.endpoints([cluster])
            if eps is not None and address in eps.get(cluster, []):
                return sent
            if sent > deadline:
                raise EnvoyWaitError(
                    f"{cluster}: {address} not in Envoy's hosts after {timeout:g} s "
                    f"(hosts: {None if eps is None else eps.get(cluster)})"
                )
            time.sleep(max(0.0, interval - (time.monotonic() - sent)))

    def all_active(self, expected: Mapping[str, int]) -> tuple[bool, str]:
        """Whether no cluster warms and each expected cluster has its endpoints; why not."""
        warming = self.warming()
        if warming != 0:
            return False, f"{warming} clusters warming"
        eps = self.endpoints()
        if eps is None:
            return False, "no answer"
        short = [n for n, k in expected.items() if len(eps.get(n, [])) < k]
        if short:
            return False, f"{len(short)} of {len(expected)} clusters without their endpoints"
        return True, ""

    def wait_all_active(
        self, expected: Mapping[str, int], timeout: float, interval: float = 0.01
    ) -> float:
        """When every expected cluster was active with its endpoints (see the module)."""
        names = sorted(expected)
        sample = sorted({names[i * (len(names) - 1) // (SAMPLES - 1)] for i in range(SAMPLES)})
        deadline = time.monotonic() + timeout
        why = "not probed yet"
        while True:
            sent = time.monotonic()
            eps = self.endpoints(sample)
            if eps is not None and all(len(eps.get(n, [])) >= expected[n] for n in sample):
                confirm = time.monotonic()
                ok, why = self.all_active(expected)
                if ok:
                    return confirm
            elif eps is not None:
                why = "sample clusters without their endpoints"
            if sent > deadline:
                raise EnvoyWaitError(f"clusters not all active after {timeout:g} s: {why}")
            time.sleep(max(0.0, interval - (time.monotonic() - sent)))
