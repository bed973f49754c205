"""service-resolver: subsets (by `Filter`), the default subset, a redirect, failover,
timeouts and the load balancer.

Consul's write-time rules: subset names are DNS labels, `DefaultSubset` names a defined
subset, a redirect names another service or subset and excludes `Subsets`,
`DefaultSubset` and `Failover`, a failover key is "*" or a defined subset, hash policies
only with ring_hash or maglev. Filters are read by `filter.filter_labels`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sources.istio.checks import dns_label, header_name, plain_value, query_name_problem
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import boolean, checked, each, integer, mapping, optional, string
from xds_server.model import HashOn, LoadBalancer, PolicyKey

from .filter import FilterError, filter_labels
from .kinds import ServiceResolver, Target
from .read import ENVELOPE, known, seconds, target

_FIELDS = (
    "DefaultSubset", "Subsets", "Redirect", "Failover", "ConnectTimeout", "RequestTimeout",
    "LoadBalancer",
)  # fmt: skip
_IGNORED = ("PrioritizeByLocality", "Peer", "SamenessGroup")
_SIMPLE = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM"}
_POLICIES = ("", *_SIMPLE, "ring_hash", "maglev")


def parse_resolver(obj: Mapping[str, Any], key: PolicyKey, ctx: Context) -> ServiceResolver:
    body = known(obj, (), ctx, (*ENVELOPE, *_FIELDS), _IGNORED)
    subsets: list[tuple[str, Any]] = []
    for name, spec in mapping(body.get("Subsets", {}), ("Subsets",)).items():
        where: Path = ("Subsets", name)
        dns_label(name, where, "subset name")
        s = known(spec or {}, where, ctx, ("Filter",), ("OnlyPassing",))
        text = optional(s, "Filter", where, string) or ""
        try:
            labels = filter_labels(text) if text else ()
        except FilterError as exc:
            raise PolicyError((*where, "Filter"), str(exc)) from None
        subsets.append((name, labels))
    subsets.sort()
    names = {n for n, _ in subsets}
    default = optional(body, "DefaultSubset", (), string) or ""
    if default and default not in names:
        raise PolicyError(("DefaultSubset",), f"DefaultSubset {default!r} is not a valid subset")
    redirect: Target | None = None
    if "Redirect" in body:
        redirect = _redirect(body["Redirect"], key, ctx)
        for other in ("Subsets", "DefaultSubset", "Failover"):
            if body.get(other):
                raise PolicyError(("Redirect",), f"Redirect and {other} cannot both be set")
    failover = []
    for subset, spec in sorted(mapping(body.get("Failover", {}), ("Failover",)).items()):
        where = ("Failover", subset)
        if subset != "*" and subset not in names:
            raise PolicyError(where, f"Bad Failover[{subset!r}]: not a valid subset")
        failover.append((subset, _failover(spec, where, ctx)))
    return ServiceResolver(
        key,
        default_subset=default,
        subsets=tuple(subsets),
        redirect=redirect,
        failover=tuple(failover),
        connect_timeout=seconds(body, "ConnectTimeout", ()),
        request_timeout=seconds(body, "RequestTimeout", ()),
        load_balancer=_load_balancer(body["LoadBalancer"], ("LoadBalancer",), ctx)
        if "LoadBalancer" in body
        else None,
    )


def _redirect(value: object, key: PolicyKey, ctx: Context) -> Target:
    path: Path = ("Redirect",)
    obj = known(
        value,
        path,
        ctx,
        ("Service", "ServiceSubset", "Namespace", "Partition"),
        ("Datacenter", "Peer", "SamenessGroup"),
    )
    t = target(obj, path, ctx)
    if not (t.service or t.subset or t.namespace):
        raise PolicyError(path, "Redirect is empty")
    if (t.service or key.name) == key.name and not t.subset and t.namespace in ("", key.namespace):
        raise PolicyError(path, "Redirect is a self-redirect")
    return t


def _failover(value: object, path: Path, ctx: Context) -> tuple[Target, ...]:
    obj = known(value, path, ctx, ("Service", "ServiceSubset", "Namespace", "Targets"),
                ("Datacenters", "Policy", "SamenessGroup"))  # fmt: skip
    own = target(obj, path, ctx)
    if "Targets" in obj:
        if own.service or own.subset or own.namespace:
            raise PolicyError(
                path, "Targets cannot be set with Service, ServiceSubset or Namespace"
            )

        def one(item: Any, where: Path) -> Target:
            t = known(item, where, ctx, ("Service", "ServiceSubset", "Namespace", "Partition"),
                      ("Datacenter", "Peer"))  # fmt: skip
            return target(t, where, ctx)

        return tuple(each(obj["Targets"], (*path, "Targets"), one))
    if not (own.service or own.subset or own.namespace):
        raise PolicyError(path, "one of Service, ServiceSubset, Namespace or Targets is required")
    return (own,)


def _load_balancer(value: object, path: Path, ctx: Context) -> LoadBalancer | None:
    obj = known(value, path, ctx, ("Policy", "RingHashConfig", "LeastRequestConfig",
                                   "HashPolicies"))  # fmt: skip
    policy = optional(obj, "Policy", path, string) or ""
    if policy not in _POLICIES:
        raise PolicyError((*path, "Policy"), f"unknown load balancing policy {policy!r} "
                          f"(one of {', '.join(p for p in _POLICIES if p)})")  # fmt: skip
    hashes = obj.get("HashPolicies") or []
    if hashes and policy not in ("ring_hash", "maglev"):
        raise PolicyError(
            (*path, "HashPolicies"), f"HashPolicies specified for non-hash-based Policy: {policy!r}"
        )
    if "LeastRequestConfig" in obj:
        lr = known(obj["LeastRequestConfig"], (*path, "LeastRequestConfig"), ctx, ("ChoiceCount",))
        if policy != "least_request":
            raise PolicyError((*path, "LeastRequestConfig"), "only with Policy least_request")
        ctx.ignore(lr, (*path, "LeastRequestConfig"), ("ChoiceCount",))
    ring_min: int | None = None
    if "RingHashConfig" in obj:
        rp = (*path, "RingHashConfig")
        ring = known(obj["RingHashConfig"], rp, ctx, ("MinimumRingSize", "MaximumRingSize"))
        if policy != "ring_hash":
            raise PolicyError(rp, "only with Policy ring_hash")
        ring_min = optional(ring, "MinimumRingSize", rp, lambda v, p: integer(v, p, 1, 8_388_608))
        ctx.ignore(ring, rp, ("MaximumRingSize",))
    if policy in _SIMPLE:
        return LoadBalancer(simple=_SIMPLE[policy])  # type: ignore[arg-type]
    if not policy:
        return None
    hp = (*path, "HashPolicies")
    ons = each(hashes, hp, lambda h, p: _hash_on(h, p, ctx))
    if not ons:
        # Envoy hashes nothing then: each request lands on a random host.
        ctx.notice(hp, f"{policy} without HashPolicies balances at random")
        return LoadBalancer(simple="RANDOM")
    if len(ons) > 1:
        ctx.notice((*hp, 1), "only the first hash policy is applied")
    return LoadBalancer(hash=ons[0], maglev=policy == "maglev", minimum_ring_size=ring_min)


def _hash_on(value: object, path: Path, ctx: Context) -> HashOn:
    h = known(value, path, ctx, ("Field", "FieldValue", "SourceIP", "CookieConfig"), ("Terminal",))
    field = optional(h, "Field", path, string) or ""
    source_ip = bool(optional(h, "SourceIP", path, boolean))
    if source_ip:
        if field:
            raise PolicyError(
                path, "a single hash policy cannot hash both a key and a source address"
            )
        return HashOn(source_ip=True)
    if field not in ("header", "cookie", "query_parameter"):
        raise PolicyError(
            (*path, "Field"), f"Field must be header, cookie or query_parameter, not {field!r}"
        )
    name = optional(h, "FieldValue", path, string)
    if not name:
        raise PolicyError(
            (*path, "FieldValue"), f"field {field!r} was specified without a FieldValue"
        )
    if field == "header":
        return HashOn(header=header_name(name, (*path, "FieldValue")))
    if field == "query_parameter":
        return HashOn(query_parameter=checked(name, (*path, "FieldValue"), query_name_problem))
    cp = (*path, "CookieConfig")
    cookie = known(h.get("CookieConfig", {}), cp, ctx, ("Session", "TTL", "Path"))
    ttl = seconds(cookie, "TTL", cp)
    if optional(cookie, "Session", cp, boolean):
        if ttl:
            raise PolicyError(cp, "a session cookie cannot have an associated TTL")
        ttl = 0.0  # Envoy: a TTL of 0 makes a session cookie
    return HashOn(
        cookie=checked(name, (*path, "FieldValue"), query_name_problem),
        cookie_ttl=ttl,
        cookie_path=optional(cookie, "Path", cp, plain_value),
    )
