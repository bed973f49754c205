"""Readers shared by the entry parsers: an entry's fields as Consul's API returns them
(CamelCase; fields a newer Consul added, or this server does not apply, are notices),
targets, header operations, Consul's durations and numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sources.istio.checks import header_name, header_value
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    duration,
    fields,
    integer,
    mapping,
    optional,
    string,
    string_map,
    strings,
)
from xds_server.model import HeaderOps

from .kinds import Target

_IGNORED = "not supported; ignored"
# Set by Consul on every entry it returns: never a notice.
ENVELOPE = ("Kind", "Name", "Namespace", "Partition", "Meta", "CreateIndex", "ModifyIndex", "Hash")


def known(
    value: object,
    path: Path,
    ctx: Context,
    supported: tuple[str, ...],
    ignored: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The supported fields of an object (null ones left out). Fields in `ignored`, and
    fields this server does not know (Consul validated the entry when it was written:
    an unknown field is a newer Consul's), are notices when they are set."""
    obj = mapping(value, path)
    ctx.ignore(obj, path, ignored)
    for key, item in obj.items():
        if key not in supported and key not in ignored and item not in (None, "", [], {}):
            ctx.notice((*path, key), "unknown field (of a newer Consul?); ignored")
    return fields({k: v for k, v in obj.items() if k in supported}, path, supported)


def target(obj: Mapping[str, Any], path: Path, ctx: Context) -> Target:
    """`Service`, `ServiceSubset`, `Namespace` of a route destination, split or redirect."""
    partition = obj.get("Partition")
    if partition not in (None, "", "default"):
        ctx.notice((*path, "Partition"), "admin partitions are not supported; ignored")
    return Target(
        service=optional(obj, "Service", path, string) or "",
        subset=optional(obj, "ServiceSubset", path, string) or "",
        namespace=optional(obj, "Namespace", path, string) or "",
    )


def seconds(obj: Mapping[str, Any], name: str, path: Path) -> float | None:
    """A Consul duration: a Go duration string ("15s"), or nanoseconds as a number (how
    some API clients encode a time.Duration); 0 means unset."""
    value = obj.get(name)
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        ns = integer(value, (*path, name), 0, 315_576_000_000 * 10**9)
        value = f"{ns}ns"
    return duration(value, (*path, name), zero_ok=True) or None


def header_ops(obj: Mapping[str, Any], path: Path, ctx: Context) -> HeaderOps:
    """`RequestHeaders` and `ResponseHeaders` ({Add, Set, Remove}) of a route destination
    or a split."""
    sides = []
    for side in ("RequestHeaders", "ResponseHeaders"):
        where = (*path, side)
        ops = known(obj.get(side) or {}, where, ctx, ("Add", "Set", "Remove"))
        add = _pairs(ops.get("Add"), (*where, "Add"))
        set_ = _pairs(ops.get("Set"), (*where, "Set"))
        for name, _ in (*add, *set_):
            if name.startswith(":") or name == "host":
                raise PolicyError(where, f"header {name!r} cannot be modified")
        remove = tuple(
            header_name(n, (*where, "Remove", i))
            for i, n in enumerate(strings(ops.get("Remove", []), (*where, "Remove")))
        )
        sides.append((set_, add, remove))
    (req_set, req_add, req_remove), (resp_set, resp_add, resp_remove) = sides
    return HeaderOps(req_set, req_add, req_remove, resp_set, resp_add, resp_remove)


def _pairs(value: object, path: Path) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    raw = string_map(value, path)
    return tuple(
        sorted((header_name(k, (*path, k)), header_value(v, (*path, k))) for k, v in raw.items())
    )
