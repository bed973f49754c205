"""Route destinations and their weights, the header operations of a rule or destination
(with Istio's authority rewrite), and mirrors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sources.istio.checks import dns_label, header_name, header_value, host_name, plain_value
from sources.istio.constants import MAX_HEADERS_TO_ADD, UINT32_MAX
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import fields, integer, items, mapping, optional, percent, port_selector
from xds_server.model import Destination, HeaderOps, Mirror, WeightedDestination

_DESTINATION_FIELDS = ("host", "subset", "port")
_ROUTE_DESTINATION_FIELDS = ("destination", "weight", "headers")


def destination(ctx: Context, value: object, path: Path) -> Destination:
    dest = fields(value, path, _DESTINATION_FIELDS)
    if "host" not in dest:
        raise PolicyError((*path, "host"), "required")
    return Destination(
        host=host_name(dest["host"], (*path, "host")),
        namespace=ctx.namespace,
        port=port_selector(dest["port"], (*path, "port")) if "port" in dest else None,
        subset=dns_label(dest["subset"], (*path, "subset"), "subset name")
        if dest.get("subset")
        else "",
    )


def route_destinations(
    ctx: Context, value: object, path: Path, known: tuple[str, ...]
) -> list[tuple[int, Destination, int, dict[str, Any]]]:
    """Every route destination as (index, destination, weight, its fields)."""
    raw = items(value, path)
    if not raw:
        raise PolicyError(path, "at least one destination is required")
    out = []
    for i, item in enumerate(raw):
        where = (*path, i)
        entry = fields(item, where, known)
        if "destination" not in entry:
            raise PolicyError((*where, "destination"), "required")
        dest = destination(ctx, entry["destination"], (*where, "destination"))
        out.append((i, dest, integer(entry.get("weight", 0), (*where, "weight")), entry))
    if len(out) > 1:
        total = sum(weight for _, _, weight, _ in out)
        if total == 0:
            raise PolicyError(path, "total weight is zero (give at least one destination a weight)")
        if total > UINT32_MAX:
            raise PolicyError(path, f"total weight {total} exceeds {UINT32_MAX}")
    return out


def weighted(
    entries: list[tuple[int, Destination, int, dict[str, Any]]],
) -> list[tuple[int, Destination, int, dict[str, Any]]]:
    """The destinations that take traffic, as Istio reads weights: a single one takes
    all of it whatever its weight; of several, those weighted 0 take none."""
    kept = entries if len(entries) == 1 else [e for e in entries if e[2] > 0]
    if len(kept) == 1:
        i, dest, _, entry = kept[0]
        return [(i, dest, 100, entry)]
    return kept


def http_destinations(
    ctx: Context, value: object, path: Path
) -> tuple[tuple[WeightedDestination, ...], str | None]:
    """The weighted destinations, and the authority a single destination's headers set
    (Istio turns that into the route's authority rewrite)."""
    entries = route_destinations(ctx, value, path, _ROUTE_DESTINATION_FIELDS)
    weights = {i: weight for i, _, weight, _ in weighted(entries)}
    out = []
    authority = None
    for i, dest, _, entry in entries:
        ops, dest_authority = header_ops(entry.get("headers"), (*path, i, "headers"))
        if i not in weights:
            continue  # checked all the same: an object is valid or not as a whole
        if dest_authority is not None:
            if len(weights) > 1:
                raise PolicyError(
                    (*path, i, "headers", "request"),
                    "setting the authority per destination is not supported; "
                    "use the rule's rewrite.authority",
                )
            authority = dest_authority
        out.append(WeightedDestination(dest, weights[i], ops))
    return tuple(out), authority


def header_ops(value: object, path: Path) -> tuple[HeaderOps, str | None]:
    """Header operations, and the authority that `request.set`/`add` of `:authority` or
    `host` gives (Envoy cannot modify those headers; Istio rewrites the authority)."""
    if value is None:
        return HeaderOps(), None
    obj = fields(value, path, ("request", "response"))
    ops: dict[str, Any] = {}
    authority: str | None = None
    for side in ("request", "response"):
        where = (*path, side)
        part = fields(obj.get(side, {}), where, ("set", "add", "remove"))
        for verb in ("set", "add"):
            pairs: dict[str, str] = {}
            for raw, val in mapping(part.get(verb, {}), (*where, verb)).items():
                at = (*where, verb, raw)
                name = header_name(raw, at)
                if side == "request" and name in (":authority", "host"):
                    if authority is not None:
                        raise PolicyError(at, "the authority is set more than once")
                    authority = plain_value(val, at)
                    continue
                check_modifiable(name, at)
                if name in pairs:
                    raise PolicyError(at, f"duplicate header {name!r}")
                pairs[name] = header_value(val, at)
            ops[f"{side}_{verb}"] = tuple(sorted(pairs.items()))
        if len(ops[f"{side}_set"]) + len(ops[f"{side}_add"]) > MAX_HEADERS_TO_ADD:
            raise PolicyError(where, f"more than {MAX_HEADERS_TO_ADD} headers to set and add")
        removed = set()
        for i, raw in enumerate(items(part.get("remove", []), (*where, "remove"))):
            at = (*where, "remove", i)
            name = header_name(raw, at)
            check_modifiable(name, at)
            removed.add(name)
        ops[f"{side}_remove"] = tuple(sorted(removed))
    return HeaderOps(**ops), authority


def check_modifiable(name: str, path: Path) -> None:
    if name.startswith(":"):
        raise PolicyError(path, f"pseudo-header {name!r} cannot be modified")
    if name == "host":
        raise PolicyError(path, "the host header cannot be modified here")


def mirrors(ctx: Context, rule: Mapping[str, Any], path: Path) -> tuple[Mirror, ...]:
    """`mirror` with its percentage (default 100) and `mirrors[]`; 0 % mirrors nothing."""
    out: list[Mirror] = []
    pct = 100.0
    if "mirrorPercentage" in rule:
        pct = percent(rule["mirrorPercentage"], (*path, "mirrorPercentage"))
    else:
        for legacy in ("mirrorPercent", "mirror_percent"):
            if legacy in rule:
                pct = float(integer(rule[legacy], (*path, legacy), 0, 100))
    if "mirror" in rule:
        dest = destination(ctx, rule["mirror"], (*path, "mirror"))
        if pct > 0:
            out.append(Mirror(dest, pct))
    for i, raw in enumerate(items(rule.get("mirrors", []), (*path, "mirrors"))):
        where = (*path, "mirrors", i)
        entry = fields(raw, where, ("destination", "percentage"))
        if "destination" not in entry:
            raise PolicyError((*where, "destination"), "required")
        dest = destination(ctx, entry["destination"], (*where, "destination"))
        share = optional(entry, "percentage", where, percent)
        share = 100.0 if share is None else share
        if share > 0:
            out.append(Mirror(dest, share))
    return tuple(out)
