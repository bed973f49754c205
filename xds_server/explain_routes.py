"""The routes end of `xdsctl explain`: a route's match in one line, its action in brief
(cluster or weighted clusters, redirect, direct response; timeout and retries), and the
policy rule that made it.

Route names carry the rule's subject (translators/names.py `policy_rule_subject`,
read here without importing the translators): ``<Kind> <namespace>/<name> http[<i>]``
plus `` (<rule name>)``, then `` match[<j>]`` for one of several match alternatives;
a service's route without policy is ``default``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import json_format

from xds_server.explain_clusters import seconds
from xds_server.explain_match import describe_string

DEFAULT_ROUTE_NAME = "default"
# (merged policy subject, rule index) -> (kind, namespace, name) of the object that wrote it
RuleWriter = Callable[[str, int], tuple[str, str, str] | None]


def describe_match(match: rc.RouteMatch) -> str:
    """A RouteMatch in one line, as an operator reads it."""
    kind = match.WhichOneof("path_specifier") or "?"
    value = match.safe_regex.regex if kind == "safe_regex" else getattr(match, kind, "")
    parts = [f"{'regex' if kind == 'safe_regex' else kind} {value!r}"]
    if match.HasField("case_sensitive") and not match.case_sensitive.value:
        parts[0] += " (case-insensitive)"
    for h in match.headers:
        spec = h.WhichOneof("header_match_specifier")
        if spec == "present_match":
            what = "present" if h.present_match else "absent"
        elif spec == "string_match":
            what = describe_string(h.string_match)
        elif spec is None:
            what = "present"
        else:
            value = h.safe_regex_match.regex if spec == "safe_regex_match" else getattr(h, spec)
            what = f"{spec.removesuffix('_match')} {value!r}"
        parts.append(f"header {h.name} {'not ' if h.invert_match else ''}{what}")
    for q in match.query_parameters:
        what = describe_string(q.string_match) if q.HasField("string_match") else "present"
        parts.append(f"query {q.name} {what}")
    if match.HasField("runtime_fraction"):
        parts.append("runtime_fraction")
    return ", ".join(parts)


def _retries(policy: rc.RetryPolicy) -> dict[str, Any]:
    doc: dict[str, Any] = {"retry_on": policy.retry_on}
    doc["num_retries"] = policy.num_retries.value if policy.HasField("num_retries") else 1
    if policy.HasField("per_try_timeout"):
        doc["per_try_timeout"] = seconds(policy.per_try_timeout)
    return doc


def route_action(
    route: rc.Route, vhost: rc.VirtualHost
) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The route's action in brief, and the (cluster, weight) pairs it sends to."""
    kind = route.WhichOneof("action")
    if kind == "redirect":
        redirect = json_format.MessageToDict(route.redirect, preserving_proto_field_name=True)
        return {"kind": "redirect", **redirect}, []
    if kind == "direct_response":
        dr = route.direct_response
        body = dr.body.inline_string or dr.body.inline_bytes.decode(errors="replace")
        return {"kind": "direct_response", "status": dr.status, "body": body[:200]}, []
    if kind != "route":
        return {"kind": kind or "none"}, []
    action = route.route
    doc: dict[str, Any] = {}
    targets: list[tuple[str, int]] = []
    spec = action.WhichOneof("cluster_specifier")
    if spec == "cluster":
        doc["kind"] = "cluster"
        targets = [(action.cluster, 1)]
    elif spec == "weighted_clusters":
        doc["kind"] = "weighted_clusters"
        targets = [(c.name, c.weight.value) for c in action.weighted_clusters.clusters]
    else:
        doc["kind"] = spec or "none"
        if spec == "cluster_header":
            doc["cluster_header"] = action.cluster_header
    if action.HasField("timeout"):
        timeout = seconds(action.timeout)
        doc["timeout"] = "off" if timeout == 0 else timeout
    else:
        doc["timeout"] = "15.0 (Envoy's default)"
    if action.HasField("retry_policy"):
        doc["retries"] = _retries(action.retry_policy)
    elif vhost.HasField("retry_policy"):
        doc["retries"] = {**_retries(vhost.retry_policy), "from": "virtual host"}
    if action.prefix_rewrite:
        doc["prefix_rewrite"] = action.prefix_rewrite
    if action.host_rewrite_literal:
        doc["host_rewrite"] = action.host_rewrite_literal
    return doc, targets


def route_policy(
    name: str, statuses: Sequence[Mapping[str, Any]], writer: RuleWriter = lambda s, i: None
) -> dict[str, Any] | None:
    """The policy object whose rule made route `name`, with its origin, state and
    registry (`source`: kubernetes, consul, file); None
    for a route no policy made (a service's `default` route).

    A route merged from several objects (Gateway API routes attached to one Service) is
    named after the merged policy (``Service <ns>/<name> http[<i>]``); `writer(subject,
    i)` names the object that wrote rule i of it."""
    if name == DEFAULT_ROUTE_NAME or not name:
        return None
    rule = name.split(" match[", 1)[0]
    subject, sep, rest = rule.partition(" http[")
    index = rest.split("]", 1)[0]
    written = writer(subject, int(index)) if sep and index.isdigit() else None
    best: Mapping[str, Any] | None = None
    for s in statuses:
        key = (s.get("kind"), s.get("namespace"), s.get("name"))
        if written is not None:
            if key == written:
                best = s
            continue
        prefix = f"{key[0]} {key[1]}/{key[2]} http["
        if name.startswith(prefix) and (
            best is None or len(str(best.get("name"))) < len(str(s.get("name")))
        ):
            best = s
    if best is None:
        return {"rule": rule, "note": "no policy object of this name is known now"}
    keys = ("kind", "namespace", "name", "origin", "state", "source")
    return {"rule": rule, **{k: best.get(k) for k in keys}}
