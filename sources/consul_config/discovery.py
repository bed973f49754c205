"""Entry point: every config entry read from Consul → each entry's report, the compiled
policy per service, and the protocol each service is given.

Compiled objects (the input of `translators.policy_resolve.resolve_policies`):
- ``discovery-chain <ns>/<service>``: a `RoutePolicy` for each service with a
  service-router, service-splitter or service-resolver (valid or not);
- ``discovery-chain-resolver <ns>/<service>``: a `DestinationPolicy` for each service
  with a resolver or an `UpstreamConfig` that applies to it.

A chain Consul would refuse, or one that needs an entry that does not parse, is a
`PolicyObject` with `error` and no policy: the resolver then keeps serving its last
valid version. Compile errors read ``consul discovery chain web: service-resolver/api:
Redirect: detected circular resolver redirect: api -> web -> api``.

Protocol of a service: service-defaults `Protocol`, else proxy-defaults
`Config.protocol`, else the instances' meta `protocol` (`meta_protocols`), else Consul's
default, tcp. `Compiled.protocols` holds the ones config entries set, for the
composition root to override the catalog's port protocol with.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from xds_server.model import FieldPath, PolicyKey, PolicyObject, RoutePolicy, ServiceKey

from .chain import ChainCompiler, ChainError
from .destinations import RESOLVER_KIND, SharedUpstreamConfig, compile_destination
from .index import EntryIndex, InvalidEntry, index_entries
from .kinds import (
    CONSUL_DEFAULT_PROTOCOL,
    SERVICE_DEFAULTS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
)

CHAIN_KIND = "discovery-chain"


@dataclass(frozen=True, slots=True)
class Compiled:
    entries: tuple[PolicyObject, ...]  # one per config entry: accepted (notices) or error
    policies: tuple[PolicyObject, ...]  # CHAIN_KIND and RESOLVER_KIND objects
    protocols: tuple[tuple[ServiceKey, str], ...]  # set by service- or proxy-defaults


def compile_entries(
    raw_entries: Iterable[object], meta_protocols: Mapping[ServiceKey, str] | None = None
) -> Compiled:
    """See the module docstring. `meta_protocols`: the catalog's services and their
    instances' meta `protocol` (absent when unset)."""
    meta = dict(meta_protocols or {})
    index = index_entries(raw_entries)
    protocol_of = _Protocols(index, meta)
    chains = ChainCompiler(index, protocol_of)
    policies: list[PolicyObject] = []
    for service in sorted(index.services(SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER)):
        key = PolicyKey(CHAIN_KIND, service.namespace, service.name)
        origin = f"consul discovery chain {service.name}"
        try:
            chain = chains.compile(service)
        except (ChainError, InvalidEntry) as exc:
            policies.append(PolicyObject(key, origin, error=f"{origin}: {exc}"))
            continue
        except Exception as exc:  # a bug must cost this chain (kept at its last good)
            reason = f"{origin}: internal error: {type(exc).__name__}: {exc}"
            policies.append(PolicyObject(key, origin, error=reason))
            continue
        policy = RoutePolicy(key, (service.name,), chain.http, chain.tcp, origin=origin)
        locate = functools.partial(_locate, origin, service.name, len(chain.http) - 1)
        policies.append(PolicyObject(key, origin, policy, locate=locate))
    upstreams = SharedUpstreamConfig(index)
    reached = index.services(SERVICE_RESOLVER) | set(meta)
    for sd in index.all_defaults():
        reached |= {ServiceKey(sd.key.namespace, n) for n, _ in sd.upstream_overrides}
        reached.add(ServiceKey(sd.key.namespace, sd.key.name))
    for service in sorted(reached):
        key = PolicyKey(RESOLVER_KIND, service.namespace, service.name)
        origin = f"consul service-resolver/{service.name}"
        try:
            destination = compile_destination(index, chains, upstreams, service)
        except (ChainError, InvalidEntry) as exc:
            policies.append(
                PolicyObject(key, origin, error=f"consul discovery chain {service.name}: {exc}")
            )
            continue
        if destination is not None:
            locate = functools.partial(_locate, origin, service.name, 0)
            policies.append(PolicyObject(key, origin, destination, locate=locate))
    known = sorted(set(meta) | index.services(SERVICE_DEFAULTS, *_CHAIN_KINDS))
    protocols = tuple((s, p) for s in known if (p := protocol_of.configured(s)) is not None)
    return Compiled(tuple(index.objects), tuple(policies), protocols)


def _locate(origin: str, service: str, routes: int, path: FieldPath) -> tuple[str, str]:
    """Where a field the resolver names (in the model's Istio-shaped paths) comes from:
    a router route's destination, the implicit default route, the entry's name."""
    match path:
        case ("spec", "http", int(i), *_) if i < routes:
            return origin, f"service-router/{service} Routes[{i}].Destination"
        case ("spec", "http" | "tcp", *_):
            return origin, "the default route"
    return origin, "Name"


_CHAIN_KINDS = (SERVICE_ROUTER, SERVICE_SPLITTER, SERVICE_RESOLVER)


class _Protocols:
    def __init__(self, index: EntryIndex, meta: Mapping[ServiceKey, str]) -> None:
        self.index, self.meta = index, meta

    def configured(self, service: ServiceKey) -> str | None:
        """The protocol config entries set for `service`, if any."""
        try:
            defaults = self.index.defaults(service)
            proxy = self.index.proxy_defaults()
        except InvalidEntry:
            return None
        if defaults is not None and defaults.protocol:
            return defaults.protocol
        return proxy.protocol if proxy is not None else None

    def __call__(self, service: ServiceKey) -> str:
        # An invalid service-defaults or proxy-defaults fails the chain (InvalidEntry).
        defaults = self.index.defaults(service)
        proxy = self.index.proxy_defaults()
        if defaults is not None and defaults.protocol:
            return defaults.protocol
        if proxy is not None and proxy.protocol:
            return proxy.protocol
        return self.meta.get(service) or CONSUL_DEFAULT_PROTOCOL
