"""`xdsctl explain`'s text: the `/debug/explain` document (xds_server/explain.py) as an
operator reads it, top to bottom in the order the proxy decides. No protobuf imports,
so `xdsctl` stays light."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _policy(p: Mapping[str, Any] | None) -> str:
    if p is None:
        return "none (the service's default route)"
    if "kind" not in p:
        return f"{p.get('rule')} ({p.get('note')})"
    return f"{p.get('rule')}  [{p.get('state')}, from {_where(p)}]"


def _where(p: Mapping[str, Any]) -> str:
    """Where a policy object was read: its origin, and its registry when that is not
    already what the origin says (kubernetes:ns/name, consul:...)."""
    origin, source = str(p.get("origin") or ""), str(p.get("source") or "")
    return origin if not source or origin.startswith(source) else f"{origin} ({source})"


def _cluster_lines(c: Mapping[str, Any], indent: str, weighted: bool) -> list[str]:
    head = f"{indent}cluster {c['name']}"
    if weighted:
        head += f"  weight {c.get('weight')} ({c.get('share')}%)"
    if "subset" in c:
        head += f"  subset {c['subset']}"
        if c.get("subset_labels"):
            head += " (" + ",".join(f"{k}={v}" for k, v in c["subset_labels"].items()) + ")"
    lines = [head]
    if "missing" in c:
        return [*lines, f"{indent}  {c['missing']}"]
    brief = f"{indent}  type {c.get('type')}, lb {c.get('lb_policy')}"
    if c.get("circuit_breakers"):
        brief += ", limits " + " ".join(f"{k}={v}" for k, v in c["circuit_breakers"].items())
    if c.get("outlier_detection"):
        brief += ", outlier " + " ".join(f"{k}={v}" for k, v in c["outlier_detection"].items())
    lines.append(brief)
    dp = c.get("destination_policy")
    if dp:
        lines.append(
            f"{indent}  policy {dp.get('kind')} {dp.get('namespace')}/{dp.get('name')}"
            f"  [{dp.get('state')}, from {_where(dp)}]"
        )
    for m in c.get("members", []):
        lines += _cluster_lines(m, indent + "  ", False)
    if "endpoints" in c:
        eps = c["endpoints"]
        if not eps:
            lines.append(
                f"{indent}  no endpoints"
                + (f": {c['endpoints_missing']}" if c.get("endpoints_missing") else "")
            )
        for e in eps:
            line = (
                f"{indent}  endpoint {e['address']}  {e['health']}  weight {e['weight']}"
                f"  priority {e['priority']}  locality {e['locality'] or '-'}"
            )
            if e.get("labels"):
                line += "  labels " + ",".join(f"{k}={v}" for k, v in e["labels"].items())
            lines.append(line)
    return lines


def render(doc: Mapping[str, Any]) -> str:
    """The explanation as text lines."""
    req = doc.get("request", {})
    lines = []
    what = req.get("target") or req.get("host")
    lines.append(
        f"NODE {doc.get('node') or '-'}  GROUP {doc.get('group')}  CLIENT {req.get('client')}"
    )
    method = f"{req['method']} " if req.get("method") else ""
    headers = " ".join(f"{k}={v}" for k, v in req.get("headers", {}).items())
    lines.append(f"request: {method}{what}{req.get('path')}  {headers}".rstrip())
    sync = doc.get("sync")
    if sync:
        states = " ".join(f"{t}={s.get('state')}" for t, s in sync.items())
        acked = all(s.get("state") == "SYNCED" for s in sync.values())
        verdict = "yes" if acked else "no: it runs an older or rejected version"
        lines.append(f"the proxy has ACKed this configuration: {verdict}  ({states})")
        for t, s in sync.items():
            if s.get("last_error"):
                lines.append(f"  {t} NACKED: {s['last_error']}")
    elif doc.get("node") is None:
        lines.append("no proxy named: the group's snapshot as the server would send it")
    lst = doc.get("listener", {})
    where = f"{lst.get('kind')}, port {lst.get('port')}"
    lines.append(f"listener {lst.get('name')} ({where}): {lst.get('chosen')}")
    if "route_config" in doc:
        lines.append(f"route configuration {doc['route_config']['name']}")
    if "virtual_host" in doc:
        vh = doc["virtual_host"]
        lines.append(f"virtual host {vh['name']}: {vh['matched_by']}")
    for nm in doc.get("not_matched", []):
        lines.append(f"  route[{nm['index']}] {nm['name'] or '-'}: no match ({nm['match']})")
        lines += [f"      {why}" for why in nm["why"]]
    route = doc.get("route")
    if route:
        lines.append(
            f"  route[{route['index']}] {route['name'] or '-'}: MATCHES ({route['match']})"
        )
        lines += [f"      note: {n}" for n in route.get("notes", [])]
        lines.append(f"policy: {_policy(route.get('policy'))}")
    action = doc.get("action", {})
    parts = [f"action: {action.get('kind')}"]
    for key in ("timeout", "prefix_rewrite", "host_rewrite", "status", "note"):
        if key in action:
            parts.append(f"{key} {action[key]}")
    if "retries" in action:
        r = action["retries"]
        parts.append(f"retries {r.get('num_retries')} on {r.get('retry_on')}")
    if action.get("kind") == "redirect":
        parts += [f"{k} {v}" for k, v in action.items() if k != "kind"]
    lines.append(", ".join(parts))
    clusters = doc.get("clusters", [])
    for c in clusters:
        lines += _cluster_lines(c, "  ", len(clusters) > 1)
    return "\n".join(lines)
