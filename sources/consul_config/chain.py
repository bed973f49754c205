"""The discovery chain of one called service, compiled as Consul's
`agent/consul/discoverychain/compile.go` does, into a `RoutePolicy`.

- the service's router: its routes in order, then the implicit catch-all route to the
  service itself (unmatched requests are not a 404);
- a route's destination goes through that service's splitter, unless it names a subset;
  a split to another service goes through that service's splitter too, nested splits
  flattened by multiplying weights (a split to the splitter's own service, or to a
  subset, goes straight to the resolver);
- then the resolver: `Redirect`s followed (to another service, whose own resolver then
  applies), `DefaultSubset` when no subset is named, the subset checked to exist;
- the route timeout is the route's `RequestTimeout`, else, when the route reaches a
  single target, that target's resolver `RequestTimeout`; retries only as the router
  asks (Consul sets no retry policy otherwise).

Refused as Consul refuses them, with its reasons: a router or splitter on a service
whose protocol is not http, http2 or grpc; targets of another protocol than the called
service's (mixed protocols); a circular split or redirect; an unknown subset.

Weights are integers in hundredths of a percent, summing to 10000 per route (Consul's
own Envoy weights are the same x100 scale); rounding of nested products keeps the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from xds_server.model import (
    Destination,
    HeaderOps,
    HttpRule,
    RequestMatch,
    Retry,
    Rewrite,
    ServiceKey,
    TcpRule,
    WeightedDestination,
)

from .index import EntryIndex
from .kinds import L7_PROTOCOLS, TOTAL_WEIGHT, Target

NO_RETRY = Retry(attempts=0)


class ChainError(Exception):
    """Consul would refuse this chain: `where` names the entry and field, `reason` why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Leaf:
    """One resolved target of a route, with its share of the traffic."""

    service: ServiceKey
    subset: str
    share: Fraction
    headers: HeaderOps = field(default_factory=HeaderOps)


@dataclass(frozen=True, slots=True)
class CompiledChain:
    protocol: str
    http: tuple[HttpRule, ...] = ()
    tcp: tuple[TcpRule, ...] = ()


class ChainCompiler:
    """Compiles the chain of one service; `protocol_of` gives each service's protocol."""

    def __init__(self, index: EntryIndex, protocol_of: Callable[[ServiceKey], str]) -> None:
        self.index = index
        self.protocol_of = protocol_of

    def compile(self, service: ServiceKey) -> CompiledChain:
        proto = self.protocol_of(service)
        router = self.index.router(service)
        splitter = self.index.splitter(service)
        if proto not in L7_PROTOCOLS:
            for entry in (router, splitter):
                if entry is not None:
                    raise _not_l7(entry.key.kind, service, proto)
            leaves = self._resolve(service, Target(), service, proto)
            return CompiledChain(proto, tcp=(TcpRule(self._weighted(service, leaves)),))
        rules: list[HttpRule] = []
        for i, route in enumerate(router.routes if router else ()):
            where = f"service-router/{service.name}: Routes[{i}].Destination"
            t = route.target
            dest = ServiceKey(t.namespace or service.namespace, t.service or service.name)
            if t.subset:
                leaves = self._resolve(dest, t, service, proto, where)
            else:
                leaves = self._split_or_resolve(dest, service, proto, (), where)
            rules.append(
                HttpRule(
                    name=f"route-{i}",
                    matches=_matches(route.match),
                    destinations=self._weighted(service, leaves),
                    timeout=route.timeout if route.timeout is not None else self._timeout(leaves),
                    retry=route.retry,
                    rewrite=Rewrite(uri=route.prefix_rewrite) if route.prefix_rewrite else None,
                    headers=route.headers,
                )
            )
        leaves = self._split_or_resolve(service, service, proto, (), f"{service.name}")
        rules.append(
            HttpRule(
                name="default",
                destinations=self._weighted(service, leaves),
                timeout=self._timeout(leaves),
                retry=NO_RETRY,
            )
        )
        return CompiledChain(proto, http=tuple(rules))

    def failover_target(self, service: ServiceKey, t: Target, where: str) -> Leaf:
        """A failover target of `service` through its own resolver (redirect, default
        subset, subset check), as Consul resolves one; of `service`'s protocol."""
        target = ServiceKey(t.namespace or service.namespace, t.service or service.name)
        (leaf,) = self._resolve(target, t, service, self.protocol_of(service), where)
        return leaf

    # -- splitting ---------------------------------------------------------------------

    def _split_or_resolve(
        self,
        service: ServiceKey,
        chain: ServiceKey,
        proto: str,
        visiting: tuple[ServiceKey, ...],
        where: str,
    ) -> list[Leaf]:
        if service in visiting:
            names = " -> ".join(f"service-splitter/{s.name}" for s in (*visiting, service))
            raise ChainError(where, f"detected circular reference: {names}")
        splitter = self.index.splitter(service)
        if splitter is None:
            return self._resolve(service, Target(), chain, proto, where)
        if self.protocol_of(service) not in L7_PROTOCOLS:
            raise _not_l7("service-splitter", service, self.protocol_of(service))
        out: list[Leaf] = []
        for i, split in enumerate(splitter.splits):
            t = split.target
            share = Fraction(split.weight, TOTAL_WEIGHT)
            at = f"service-splitter/{service.name}: Splits[{i}]"
            target = ServiceKey(t.namespace or service.namespace, t.service or service.name)
            if t.subset or target == service:
                found = self._resolve(target, t, chain, proto, at)
            else:
                found = self._split_or_resolve(target, chain, proto, (*visiting, service), at)
            for leaf in found:
                out.append(
                    Leaf(
                        leaf.service,
                        leaf.subset,
                        leaf.share * share,
                        _merge_headers(split.headers, leaf.headers),
                    )
                )
        return out

    # -- resolving ---------------------------------------------------------------------

    def _resolve(
        self, service: ServiceKey, t: Target, chain: ServiceKey, proto: str, where: str = ""
    ) -> list[Leaf]:
        subset = t.subset
        seen = [service]
        resolver = self.index.resolver(service)
        while resolver is not None and resolver.redirect is not None:
            r = resolver.redirect
            nxt = ServiceKey(r.namespace or service.namespace, r.service or service.name)
            if nxt == service:  # a redirect to a subset of the same service
                subset = r.subset
                break
            if nxt in seen:
                names = " -> ".join(s.name for s in (*seen, nxt))
                raise ChainError(
                    f"service-resolver/{service.name}: Redirect",
                    f"detected circular resolver redirect: {names}",
                )
            seen.append(nxt)
            service, subset = nxt, r.subset
            resolver = self.index.resolver(service)
        if not subset and resolver is not None:
            subset = resolver.default_subset
        if subset and (resolver is None or not resolver.has_subset(subset)):
            defined = ", ".join(n for n, _ in resolver.subsets) if resolver else ""
            raise ChainError(
                where or f"service-resolver/{service.name}",
                f"service {service.name!r} does not have a subset named {subset!r}"
                + (
                    f" (service-resolver/{service.name} defines: {defined})"
                    if defined
                    else f" (no service-resolver/{service.name} defines subsets)"
                ),
            )
        got = self.protocol_of(service)
        if got != proto:
            raise ChainError(
                where or f"{chain.name}",
                f"discovery chain {chain.name!r} uses inconsistent protocols: "
                f"{chain.name!r} is {proto!r} but its target {service.name!r} is {got!r}",
            )
        return [Leaf(service, subset, Fraction(1))]

    # -- output ------------------------------------------------------------------------

    def _timeout(self, leaves: list[Leaf]) -> float | None:
        if len(leaves) != 1:
            return None
        resolver = self.index.resolver(leaves[0].service)
        return resolver.request_timeout if resolver is not None else None

    @staticmethod
    def _weighted(chain: ServiceKey, leaves: list[Leaf]) -> tuple[WeightedDestination, ...]:
        merged: dict[tuple[ServiceKey, str], Leaf] = {}
        for leaf in leaves:
            key = (leaf.service, leaf.subset)
            had = merged.get(key)
            merged[key] = (
                leaf
                if had is None
                else Leaf(leaf.service, leaf.subset, had.share + leaf.share, had.headers)
            )
        weights = integer_weights([m.share for m in merged.values()])
        return tuple(
            WeightedDestination(
                Destination(m.service.name, m.service.namespace, subset=m.subset), w, m.headers
            )
            for m, w in zip(merged.values(), weights, strict=True)
        )


def _not_l7(kind: str, service: ServiceKey, proto: str) -> ChainError:
    return ChainError(
        f"{kind}/{service.name}",
        f"does not permit advanced routing or splitting behavior with protocol {proto!r} "
        '(set service-defaults Protocol to "http", "http2" or "grpc")',
    )


def integer_weights(shares: list[Fraction]) -> list[int]:
    """Shares (summing to 1) as integers summing to `TOTAL_WEIGHT`: each rounded down,
    the remainder given to the largest fractional parts (first listed on ties)."""
    exact = [s * TOTAL_WEIGHT for s in shares]
    out = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: TOTAL_WEIGHT - sum(out)]:
        out[i] += 1
    return out


def _matches(match: RequestMatch | None) -> tuple[RequestMatch, ...]:
    return () if match is None or match == RequestMatch() else (match,)


def _merge_headers(outer: HeaderOps, inner: HeaderOps) -> HeaderOps:
    if not outer:
        return inner
    if not inner:
        return outer
    return HeaderOps(*(getattr(outer, f) + getattr(inner, f) for f in HeaderOps.__slots__))
