"""Locality load balancing (Istio's LocalityLoadBalancerSetting): weighted distribution
between localities, or failover between regions."""

from __future__ import annotations

from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import boolean, fields, integer, items, mapping, nonempty, string
from xds_server.model import LocalityDistribute, LocalityFailover, LocalityLb


def locality(ctx: Context, value: object, path: Path) -> LocalityLb:
    obj = fields(value, path, ("distribute", "failover", "failoverPriority", "enabled"))
    ctx.ignore(obj, path, ("failoverPriority",))
    if obj.get("distribute") and obj.get("failover"):
        raise PolicyError(path, "distribute and failover cannot both be set")
    distribute: list[LocalityDistribute] = []
    origins: list[tuple[str, ...]] = []
    for i, raw in enumerate(items(obj.get("distribute", []), (*path, "distribute"))):
        where = (*path, "distribute", i)
        entry = fields(raw, where, ("from", "to"))
        if "from" not in entry:
            raise PolicyError((*where, "from"), "required")
        origin = string(entry["from"], (*where, "from"))
        _claim(origins, _locality_spec(origin, (*where, "from")), (*where, "from"))
        targets: list[tuple[str, int]] = []
        claimed: list[tuple[str, ...]] = []
        for loc, weight in mapping(entry.get("to", {}), (*where, "to")).items():
            at = (*where, "to", loc)
            _claim(claimed, _locality_spec(loc, at), at)
            targets.append((loc, integer(weight, at, 1, 100)))
        total = sum(w for _, w in targets)
        if total != 100:
            raise PolicyError((*where, "to"), f"weights add up to {total}, not 100")
        distribute.append(LocalityDistribute(origin, tuple(sorted(targets))))
    failover: list[LocalityFailover] = []
    for i, raw in enumerate(items(obj.get("failover", []), (*path, "failover"))):
        where = (*path, "failover", i)
        entry = fields(raw, where, ("from", "to"))
        regions = []
        for end in ("from", "to"):
            if end not in entry:
                raise PolicyError((*where, end), "required")
            region = nonempty(entry[end], (*where, end))
            if "/" in region or "*" in region:
                raise PolicyError((*where, end), f"{region!r} is not a region (no '/' or '*')")
            regions.append(region)
        if regions[0] == regions[1]:
            raise PolicyError(where, "from and to must be different regions")
        failover.append(LocalityFailover(regions[0], regions[1]))
    enabled = boolean(obj.get("enabled", True), (*path, "enabled"))
    return LocalityLb(enabled, tuple(distribute), tuple(failover))


def _locality_spec(text: object, path: Path) -> tuple[str, ...]:
    """`region[/zone[/subzone]]`, optionally ending in a `*` segment: the locality prefix
    it covers (`us-east/*` and `us-east` both cover all of us-east)."""
    spec = nonempty(text, path)
    parts = spec.split("/")
    if len(parts) > 3:
        raise PolicyError(path, f"invalid locality {spec!r} (region/zone/subzone)")
    if parts[-1] == "*":
        parts = parts[:-1]
    if any(not p or "*" in p for p in parts):
        raise PolicyError(
            path, f"invalid locality {spec!r} (no empty parts; '*' only as the last part)"
        )
    return tuple(parts)


def _claim(claimed: list[tuple[str, ...]], prefix: tuple[str, ...], path: Path) -> None:
    """Record a locality prefix; one that overlaps an earlier one is an error."""
    for other in claimed:
        shorter = min(len(other), len(prefix))
        if other[:shorter] == prefix[:shorter]:
            raise PolicyError(
                path, f"locality {'/'.join(prefix) or '*'} overlaps {'/'.join(other) or '*'}"
            )
    claimed.append(prefix)
