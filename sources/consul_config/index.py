"""All config entries read, parsed and indexed by kind and service; what the compiler
looks up (`EntryIndex`), and each entry's own report as a `PolicyObject`.

Error strings have the form ``consul config entry <kind>/<name>: <field>: <reason>``
(``<kind>/<namespace>/<name>`` outside the default namespace), e.g.
``consul config entry service-router/web: Routes[0].Match.HTTP.PathRegex: invalid RE2
regex: missing ): (``. Field paths use Consul's JSON names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sources.istio.report import Context, PolicyError
from xds_server.model import DEFAULT_NAMESPACE, PolicyKey, PolicyObject, ServiceKey

from .entries import entry_key, parse_entry
from .kinds import (
    PROXY_DEFAULTS,
    PROXY_DEFAULTS_NAME,
    SERVICE_DEFAULTS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    Entry,
    ProxyDefaults,
    ServiceDefaults,
    ServiceResolver,
    ServiceRouter,
    ServiceSplitter,
)

E = TypeVar("E")


def entry_name(key: PolicyKey) -> str:
    """How Consul's CLI names an entry: ``service-router/web``."""
    ns = "" if key.namespace == DEFAULT_NAMESPACE else f"{key.namespace}/"
    return f"{key.kind}/{ns}{key.name}"


def entry_origin(key: PolicyKey) -> str:
    return f"consul config entry {entry_name(key)}"


class InvalidEntry(Exception):
    """The compiler needs an entry that did not parse."""

    def __init__(self, key: PolicyKey) -> None:
        super().__init__(f"{entry_name(key)} is invalid (see its own status)")
        self.key = key


@dataclass(slots=True)
class EntryIndex:
    objects: list[PolicyObject] = field(default_factory=list)
    parsed: dict[PolicyKey, Entry] = field(default_factory=dict)
    invalid: set[PolicyKey] = field(default_factory=set)

    def add(self, raw: object) -> None:
        key = entry_key(raw)
        origin = entry_origin(key)
        ctx = Context()
        try:
            entry = parse_entry(raw, ctx)
        except PolicyError as exc:
            self.invalid.add(key)
            self.objects.append(PolicyObject(key, origin, error=f"{origin}: {exc}"))
            return
        except Exception as exc:  # a bug here must cost this entry, not every entry
            self.invalid.add(key)
            reason = f"{origin}: internal error: {type(exc).__name__}: {exc}"
            self.objects.append(PolicyObject(key, origin, error=reason))
            return
        if key in self.parsed or key in self.invalid:
            self.objects.append(PolicyObject(key, origin, error=f"{origin}: listed twice"))
            return
        self.parsed[key] = entry
        self.objects.append(PolicyObject(key, origin, notices=tuple(map(str, ctx.notices))))

    def _get(self, kind: str, ns: str, name: str, cls: type[E]) -> E | None:
        key = PolicyKey(kind, ns, name)
        if key in self.invalid:
            raise InvalidEntry(key)
        found = self.parsed.get(key)
        return found if isinstance(found, cls) else None

    def router(self, s: ServiceKey) -> ServiceRouter | None:
        return self._get(SERVICE_ROUTER, s.namespace, s.name, ServiceRouter)

    def splitter(self, s: ServiceKey) -> ServiceSplitter | None:
        return self._get(SERVICE_SPLITTER, s.namespace, s.name, ServiceSplitter)

    def resolver(self, s: ServiceKey) -> ServiceResolver | None:
        return self._get(SERVICE_RESOLVER, s.namespace, s.name, ServiceResolver)

    def defaults(self, s: ServiceKey) -> ServiceDefaults | None:
        return self._get(SERVICE_DEFAULTS, s.namespace, s.name, ServiceDefaults)

    def proxy_defaults(self) -> ProxyDefaults | None:
        return self._get(PROXY_DEFAULTS, DEFAULT_NAMESPACE, PROXY_DEFAULTS_NAME, ProxyDefaults)

    def services(self, *kinds: str) -> set[ServiceKey]:
        """Services named by an entry (valid or not) of one of `kinds`."""
        keys = [*self.parsed, *self.invalid]
        return {ServiceKey(k.namespace, k.name) for k in keys if k.kind in kinds}

    def all_defaults(self) -> list[ServiceDefaults]:
        found = [e for e in self.parsed.values() if isinstance(e, ServiceDefaults)]
        return sorted(found, key=lambda e: e.key)


def index_entries(raw_entries: Iterable[Mapping[str, object] | object]) -> EntryIndex:
    index = EntryIndex()
    for raw in raw_entries:
        index.add(raw)
    index.objects.sort(key=lambda o: o.key)
    return index
