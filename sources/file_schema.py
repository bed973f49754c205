"""The file registry's format: services and endpoints listed in a YAML (or JSON) file.

The embedded default registry. The file looks like::

    services:
      - name: web
        namespace: default                    # optional, default "default"
        ports: [{name: http, port: 80, protocol: http}]
        hostnames: [web.example.com]          # optional extra FQDNs
        labels: {team: shop}                  # optional
        # external_name: api.example.com      # instead of endpoints: Envoy resolves it
        service_account: web                  # optional: its sidecars' identity
        rate_limit: {requests_per_second: 100, burst: 200}   # optional, per sidecar
        endpoints:
          - {address: 127.0.0.1, port: 8081, zone: z1, labels: {version: v1}}
          - {address: 127.0.0.2, port: 8081, sidecar_port: 15006}
          - {address: 127.0.0.1, ports: {http: 8082}, region: eu, zone: z2,
             health: draining, weight: 2}

Mapping to the model (`xds_server.model`):

- a service port's `name` defaults to its `protocol`, which defaults to `http`;
- an endpoint gives its instance port(s) in one of three ways: `port: N` (for the
  service's first port), `ports: {port name: N, ...}` (one Endpoint per entry, in
  file order), or neither (one Endpoint per service port, on the service port's
  number, like a Kubernetes targetPort left out). Giving both is a schema error;
- `region`/`zone`/`subzone` default to "", `health` to "healthy", `weight` to 1;
- `external_name` (a DNS name, like a Kubernetes ExternalName) makes the service one
  Envoy resolves itself: a DNS cluster per port on that name, and no endpoints;
- `sidecar_port` says a sidecar proxy fronts the endpoint's (single) instance port:
  callers reach the instance at `address:sidecar_port`, the sidecar forwards to
  `address:port` (`model.Sidecar`); `service_account` is the identity its sidecars
  present (default: the service's name); `rate_limit` limits the requests each sidecar
  accepts (`burst` defaults to `requests_per_second`).

Two kinds of problem, handled differently:

1. The *file* is unusable: unreadable, not UTF-8, a YAML syntax error, an empty
   document, a top level that is not a mapping with a `services` list, a duplicate
   key, an unknown key, or a field of the wrong *type*. Types are strict: `port: "80"`
   and `name: 123` are type errors just like `port: abc` or `endpoints: 5`, and YAML
   1.1 scalars keep their YAML type (`on`/`yes` are booleans). The whole file is
   rejected with ONE line::

       <file>:<line>:<column>: <path>: <reason>[ (+N more errors)]

   e.g. ``examples/registry.yaml:12:9: services[0].endpoints[1].port: Input should
   be a valid integer``. Line and column are 1-based and point at the offending
   value (at the key for unknown/duplicate keys, at the enclosing mapping for a
   missing field). Errors with no position (unreadable, empty) are
   ``<file>: <reason>``. The source keeps its last good state and publishes nothing.

2. An *entry* has a bad value of the right type: an invalid IP, a port outside
   1-65535, an empty name, a weight of 0, a duplicate service, an endpoint `ports`
   key naming no service port, a `health` or `protocol` string outside the model's
   allowed set. The schema lets all of these through unchanged (health and protocol
   are accepted as any string and handed over as-is, although the model types them
   as Literals): the catalog validates every source's entries, skips bad ones with a
   reason and a metric, and the rest of the file applies.
"""

from __future__ import annotations

import json
from typing import Any, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from sources.file_chunks import cut, parse_item
from sources.yaml_positions import (
    KEY,
    CLoader,
    DuplicateKey,
    Nodes,
    PyLoader,
    YamlPath,
    located,
    unique_pairs,
)
from xds_server import model
from xds_server.model import Endpoint, Locality, Port, RateLimit, Service, ServiceEntry, Sidecar


class FileRegistryError(ValueError):
    """The registry file cannot be used; the message is one line naming file, place, reason."""


# --- schema ------------------------------------------------------------------------


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_field",
                        "unknown field {field}; expected one of: {expected}",
                        {"key": key, "field": repr(key), "expected": ", ".join(cls.model_fields)},
                    )
        return data


class _PortSpec(_Schema):
    name: str | None = None
    port: int
    protocol: str = "http"


class _EndpointSpec(_Schema):
    address: str
    port: int | None = None
    ports: dict[str, int] | None = None
    region: str = ""
    zone: str = ""
    subzone: str = ""
    health: str = "healthy"
    weight: int = 1
    labels: dict[str, str] = Field(default_factory=dict)
    sidecar_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _one_port_form(self) -> _EndpointSpec:
        if self.port is not None and self.ports is not None:
            raise PydanticCustomError("port_and_ports", "give either port or ports, not both")
        if self.sidecar_port is not None and self.ports is not None and len(self.ports) != 1:
            raise PydanticCustomError(
                "sidecar_port_ports", "sidecar_port fronts one instance port: give port, not ports"
            )
        return self


class _RateLimitSpec(_Schema):
    requests_per_second: int = Field(ge=1)
    burst: int | None = Field(default=None, ge=1)


class _ServiceSpec(_Schema):
    name: str
    namespace: str = model.DEFAULT_NAMESPACE
    ports: list[_PortSpec]
    hostnames: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    endpoints: list[_EndpointSpec] = Field(default_factory=list)
    external_name: str | None = None
    service_account: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    rate_limit: _RateLimitSpec | None = None

    @model_validator(mode="after")
    def _external_has_no_endpoints(self) -> _ServiceSpec:
        if self.external_name is not None and self.endpoints:
            raise PydanticCustomError(
                "external_with_endpoints",
                "a service with external_name has no endpoints (Envoy resolves the name)",
            )
        return self


class _RegistrySpec(_Schema):
    services: list[_ServiceSpec]


# --- mapping to the model ------------------------------------------------------------


def _entry(spec: _ServiceSpec, source: str) -> ServiceEntry:
    ports = tuple(
        Port(
            name=p.protocol if p.name is None else p.name,
            port=p.port,
            protocol=cast(model.Protocol, p.protocol),
        )
        for p in spec.ports
    )
    endpoints: list[Endpoint] = []
    for ep in spec.endpoints:
        if ep.ports is not None:
            targets = list(ep.ports.items())
        elif ep.port is not None:
            targets = [(ports[0].name if ports else "", ep.port)]
        else:
            targets = [(p.name, p.port) for p in ports]
        endpoints.extend(
            Endpoint(
                ip=ep.address,
                port=port,
                port_name=port_name,
                health=cast(model.Health, ep.health),
                locality=Locality(ep.region, ep.zone, ep.subzone),
                weight=ep.weight,
                labels=model.labels(ep.labels),
                sidecar=Sidecar(ep.sidecar_port) if ep.sidecar_port is not None else None,
            )
            for port_name, port in targets
        )
    service = Service(
        name=spec.name,
        namespace=spec.namespace,
        ports=ports,
        hostnames=tuple(spec.hostnames),
        labels=model.labels(spec.labels),
        source=source,
        external_name=spec.external_name or "",
        service_accounts=(spec.service_account,) if spec.service_account else (),
        rate_limit=_rate_limit(spec.rate_limit),
    )
    return ServiceEntry(service=service, endpoints=tuple(endpoints))


def _rate_limit(spec: _RateLimitSpec | None) -> RateLimit | None:
    if spec is None:
        return None
    rps = spec.requests_per_second
    return RateLimit(rps, spec.burst if spec.burst is not None else rps)


# --- parsing with positions ----------------------------------------------------------


def _at(filename: str, mark: yaml.Mark | None, path: YamlPath, reason: str) -> FileRegistryError:
    return FileRegistryError(located(filename, mark, path, reason))


class _Document:
    """A parsed document and its nodes; the path → node index is built only when an
    error needs a line number (walking every node costs as much as parsing)."""

    def __init__(self, filename: str, root: yaml.Node | None = None, text: str = "") -> None:
        self._root = root
        self._text = text  # composed on demand when `root` is not given (JSON input)
        self._filename = filename
        self._nodes: Nodes | None = None

    def mark(self, path: YamlPath) -> yaml.Mark | None:
        if self._nodes is None:
            root = self._root or PyLoader(self._text).get_single_node()
            if root is None:
                return None
            self._nodes = Nodes(root, self._filename, FileRegistryError)
        return self._nodes.mark(path)


def _construct(loader: Any, root: yaml.Node, filename: str) -> Any:
    try:
        return loader.construct_document(root)
    except DuplicateKey:
        Nodes(root, filename, FileRegistryError)  # raises the duplicate, with its path and line
        raise


def _compose(text: str, filename: str, fast: bool = True) -> tuple[Any, _Document]:
    if fast and text.lstrip().startswith("{"):
        # JSON is YAML, and json parses it ~50x faster; anything it refuses (including
        # duplicate keys) goes down the YAML path, which explains the problem.
        try:
            return json.loads(text, object_pairs_hook=unique_pairs), _Document(filename, text=text)
        except ValueError:
            pass
    if fast:
        fast_loader = CLoader(text)
        try:
            root = fast_loader.get_single_node()
        except yaml.YAMLError:
            return _compose(text, filename, fast=False)  # raises, in PyYAML's words
        if root is not None:
            return _construct(fast_loader, root, filename), _Document(filename, root)
    try:
        loader = PyLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        at = yaml.Mark(filename, exc.position, line, column, None, 0)
        reason = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise _at(filename, at, (), reason) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise FileRegistryError(
                f"{filename}: empty document; expected a mapping with a 'services' list"
            )
        data = _construct(loader, root, filename)
        nodes = _Document(filename, root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "not valid YAML"
        if exc.problem and exc.context:
            reason += f" ({exc.context}"
            started = exc.context_mark
            if started is not None and mark is not None and started.line != mark.line:
                reason += f" at {started.line + 1}:{started.column + 1}"
            reason += ")"
        raise _at(filename, mark, (), f"invalid YAML: {reason}") from exc
    finally:
        loader.dispose()
    return data, nodes


def _reason(err: ErrorDetails) -> str:
    if err["type"] in ("model_type", "dict_type"):
        return "expected a mapping"
    if err["type"] == "list_type":
        return "expected a list"
    return err["msg"]


class ServiceCache:
    """The services of the last good load, so a reload parses, validates and maps only
    the services whose content changed: by the text of their item where the file can be
    cut into items (`sources.file_chunks`), and by the constructed item (its ``repr``,
    which tells ``1`` from ``"1"`` and ``true``) where the whole file was parsed.
    `validated` counts the service items validated so far (an edit of one service adds 1).
    """

    def __init__(self) -> None:
        self.by_text: dict[str, ServiceEntry] = {}
        self.by_item: dict[str, ServiceEntry] = {}
        self.validated = 0


# More changed items than this are parsed as one file: parsing items one by one costs
# a loader each.
_MAX_ITEMS_ALONE = 64


def parse_registry(
    text: str, filename: str, source: str, cache: ServiceCache | None = None
) -> list[ServiceEntry]:
    """The entries a registry file describes; FileRegistryError if the file is unusable.

    With `cache`, a service unchanged since the cache's last load is taken from there,
    and the cache then holds this load's services (only if it succeeded)."""
    chunks = cut(text) if cache is not None else None
    if cache is not None and chunks is not None:
        entries = _reusing_text(chunks, source, cache)
        if entries is not None:
            return entries
    data, nodes = _compose(text, filename)
    if not isinstance(data, dict):
        raise _at(
            filename,
            nodes.mark(()),
            (),
            f"expected a mapping with a 'services' list, got {type(data).__name__}",
        )
    items = data.get("services")
    if cache is not None and data.keys() == {"services"} and isinstance(items, list):
        entries = _reusing_items(items, source, cache)
        if entries is not None:
            if chunks is not None and len(chunks) == len(entries):
                cache.by_text = dict(zip(chunks, entries, strict=True))
            return entries
    # No cache, an unusual top level, or an invalid service: validate the whole file,
    # which reports the first error with the count of the others, as it always has.
    try:
        spec = _RegistrySpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        path: YamlPath = tuple(err["loc"])
        mark = nodes.mark(path)
        if err["type"] == "unknown_field":
            path = (*path, err.get("ctx", {})["key"])
            mark = nodes.mark((*path, KEY))
        more = len(errors) - 1
        reason = _reason(err) + (f" (+{more} more error{'s' * (more > 1)})" if more else "")
        raise _at(filename, mark, path, reason) from None
    if cache is not None:
        cache.validated += len(spec.services)
    return [_entry(s, source) for s in spec.services]


def _reusing_text(chunks: list[str], source: str, cache: ServiceCache) -> list[ServiceEntry] | None:
    """Every item's entry, parsing and validating only the items whose text is not in
    `cache`; None if there are many of them, or one is not a valid service on its own."""
    known = cache.by_text
    changed = {c for c in chunks if c not in known}
    if len(changed) > _MAX_ITEMS_ALONE:
        return None
    fresh: dict[str, ServiceEntry] = {}
    for chunk in changed:
        item = parse_item(chunk)
        if item is None:
            return None
        cache.validated += 1
        try:
            fresh[chunk] = _entry(_ServiceSpec.model_validate(item), source)
        except ValidationError:
            return None
    entries = [fresh[c] if c in fresh else known[c] for c in chunks]
    cache.by_text = dict(zip(chunks, entries, strict=True))
    return entries


def _reusing_items(items: list[Any], source: str, cache: ServiceCache) -> list[ServiceEntry] | None:
    """Every item's entry, validating only the items not in `cache`; None if one is invalid."""
    known = cache.by_item
    fresh: dict[str, ServiceEntry] = {}
    out: list[ServiceEntry] = []
    for item in items:
        text = repr(item)
        entry = known.get(text) or fresh.get(text)
        if entry is None:
            cache.validated += 1
            try:
                entry = _entry(_ServiceSpec.model_validate(item), source)
            except ValidationError:
                return None
        fresh[text] = entry
        out.append(entry)
    cache.by_item = fresh
    return out
