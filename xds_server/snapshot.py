"""Immutable, content-addressed resources and snapshots.

A `Resource` is serialised once (deterministically) when its content changes; its
version is a hash of those bytes, so any replica given the same input computes the same
version (DESIGN §4.11). The serialised `Any` and the pre-encoded response fields are
built once and shared by every stream that receives the resource (DESIGN §5).

A `View` is a set of resources of one type as one client sees it (a snapshot's full
set, a subscription's subset, or what a client has acknowledged). Views memoise their
version and their diffs against other views, and views and diffs hold the response
encoded for them (`Encoded`), so the many streams of one proxy group pay for a
transition once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, Self

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server import types, wire


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class Resource:
    """One named xDS resource of one type, serialised once."""

    __slots__ = (
        "_delta_field",
        "_sotw_field",
        "any_bytes",
        "body",
        "cluster_refs",
        "eds_names",
        "name",
        "type_url",
        "version",
    )

    def __init__(
        self,
        type_url: str,
        name: str,
        body: bytes,
        eds_names: tuple[str, ...] = (),
        cluster_refs: tuple[str, ...] = (),
    ):
        self.type_url = type_url
        self.name = name
        self.body = body
        self.version = content_hash(body)
        self.any_bytes = wire.any_bytes(type_url, body)
        # For clusters: the ClusterLoadAssignment names that warm them (DESIGN §4.9).
        self.eds_names = eds_names
        # For route configurations: the clusters they send traffic to (make-before-break).
        self.cluster_refs = cluster_refs
        self._delta_field: bytes | None = None
        self._sotw_field: bytes | None = None

    @classmethod
    def from_message(cls, type_url: str, message: Message) -> Self:
        name = types.resource_name(type_url, message)
        if not name:
            raise ValueError(f"{types.short_name(type_url)} resource without a name")
        return cls(
            type_url,
            name,
            message.SerializeToString(deterministic=True),
            _eds_names(message) if type_url == types.CLUSTER else (),
            _cluster_refs(message) if type_url == types.ROUTE else (),
        )

    @property
    def sotw_field(self) -> bytes:
        """`DiscoveryResponse.resources` (field 2) holding this resource's Any."""
        if self._sotw_field is None:
            self._sotw_field = wire.field_bytes(2, self.any_bytes)
        return self._sotw_field

    @property
    def delta_field(self) -> bytes:
        """`DeltaDiscoveryResponse.resources` (field 2) holding a discovery Resource."""
        if self._delta_field is None:
            inner = (
                wire.field_str(1, self.version)
                + wire.field_bytes(2, self.any_bytes)
                + wire.field_str(3, self.name)
            )
            self._delta_field = wire.field_bytes(2, inner)
        return self._delta_field

    def message(self) -> Message:
        cls = types.MESSAGE_CLASSES.get(self.type_url)
        if cls is None:
            raise KeyError(f"no message class for {self.type_url}")
        return cls.FromString(self.body)

    def to_any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.body)

    def __repr__(self) -> str:
        return f"Resource({types.short_name(self.type_url)}/{self.name}@{self.version})"


class Known:
    """A resource version a client claims to hold (delta `initial_resource_versions`)."""

    __slots__ = ("name", "version")

    def __init__(self, name: str, version: str):
        self.name = name
        self.version = version


Versioned = Resource | Known


def _eds_names(message: Message) -> tuple[str, ...]:
    cluster: cluster_pb2.Cluster = message
    if cluster.WhichOneof("cluster_discovery_type") == "type" and cluster.type == cluster.EDS:
        return (cluster.eds_cluster_config.service_name or cluster.name,)
    return ()


def _cluster_refs(message: Message) -> tuple[str, ...]:
    rc: route_pb2.RouteConfiguration = message
    refs: set[str] = set()
    for vh in rc.virtual_hosts:
        for route in vh.routes:
            action = route.route
            if action.cluster:
                refs.add(action.cluster)
            refs.update(w.name for w in action.weighted_clusters.clusters)
    return tuple(sorted(refs))


class Encoded:
    """A whole encoded response and its nonce (built by `xds_server.response`)."""

    __slots__ = ("data", "nonce")

    def __init__(self, data: bytes, nonce: str):
        self.data = data
        self.nonce = nonce


class Diff:
    """Names that a target view adds or changes, and names it drops, relative to a base;
    and the response that carries exactly that change, once some stream needed it."""

    __slots__ = ("changed", "delta_msg", "listed", "removed", "sotw_msg")

    def __init__(self, changed: tuple[str, ...], removed: tuple[str, ...]):
        self.changed = changed
        self.removed = removed
        self.listed: tuple[Resource, ...] | None = None  # see View.changed_resources
        self.sotw_msg: Encoded | None = None
        self.delta_msg: Encoded | None = None


_DIFF_MEMO_SIZE: Final = 8


class View:
    """An immutable name → resource mapping of one type, with memoised derived data."""

    __slots__ = ("_diffs", "_listed", "_missing", "_version", "resources", "sotw_msg")

    def __init__(self, resources: Mapping[str, Versioned]):
        self.resources = resources
        self._version: str | None = None
        self._listed: tuple[Resource, ...] | None = None
        # SotW's full-state response (LDS/CDS): the same whatever the client held.
        self.sotw_msg: Encoded | None = None
        self._diffs: OrderedDict[int, tuple[View, Diff]] = OrderedDict()
        self._missing: tuple[frozenset[str], frozenset[str]] | None = None

    def missing(self, names: frozenset[str]) -> frozenset[str]:
        """`names` this view lacks; memoised for the (interned) name set that the
        streams of a group share, so a push does not cost O(names) per stream."""
        hit = self._missing
        if hit is not None and hit[0] is names:
            return hit[1]
        result = names.difference(self.resources)
        self._missing = (names, result)
        return result

    @property
    def version(self) -> str:
        if self._version is None:
            # An empty set gets a real version too: "" would read as "nothing received".
            h = hashlib.blake2b(digest_size=8)
            for name in sorted(self.resources):
                h.update(name.encode())
                h.update(b"\0")
                h.update(self.resources[name].version.encode())
                h.update(b"\n")
            self._version = h.hexdigest()
        return self._version

    @property
    def listed(self) -> tuple[Resource, ...]:
        """Its resources in name order (what a full-state response carries), listed once
        for every stream that sends them rather than once per stream."""
        if self._listed is None:
            self._listed = tuple(r for r in self.resources.values() if isinstance(r, Resource))
        return self._listed

    def changed_resources(self, diff: Diff) -> tuple[Resource, ...]:
        """The resources `diff` (one of this view's) adds or changes, in name order;
        listed once per diff, for every stream making that transition."""
        if diff.listed is None:
            table = self.resources
            diff.listed = tuple(r for n in diff.changed if isinstance(r := table[n], Resource))
        return diff.listed

    def diff_from(self, base: View) -> Diff:
        """What a client holding `base` must receive to hold this view."""
        if base is self:
            return _NO_DIFF
        hit = self._diffs.get(id(base))
        if hit is not None and hit[0] is base:
            return hit[1]
        old = base.resources
        changed = tuple(
            n
            for n, r in self.resources.items()
            if (o := old.get(n)) is None or (o is not r and o.version != r.version)
        )
        removed = tuple(n for n in old if n not in self.resources)
        d = Diff(changed, removed)
        self._diffs[id(base)] = (base, d)  # holding `base` keeps its id from being reused
        if len(self._diffs) > _DIFF_MEMO_SIZE:
            self._diffs.popitem(last=False)
        return d

    def __len__(self) -> int:
        return len(self.resources)

    def __iter__(self) -> Iterator[str]:
        return iter(self.resources)


_NO_DIFF: Final = Diff((), ())
EMPTY_VIEW: Final = View({})

_SUBSET_MEMO_SIZE: Final = 256


class TypeSnapshot:
    """Every resource of one type for one proxy group."""

    __slots__ = ("_subsets", "full", "type_url")

    def __init__(self, type_url: str, resources: Iterable[Resource]):
        self.type_url = type_url
        ordered = sorted(resources, key=lambda r: r.name)
        table: dict[str, Resource] = {}
        for r in ordered:
            if r.name in table:
                # DESIGN §4.8: a name may appear once per response.
                raise ValueError(f"duplicate {types.short_name(type_url)} name {r.name!r}")
            table[r.name] = r
        self.full = View(table)
        self._subsets: OrderedDict[frozenset[str], View] = OrderedDict()

    @property
    def resources(self) -> Mapping[str, Resource]:
        return self.full.resources  # type: ignore[return-value]

    @property
    def version(self) -> str:
        return self.full.version

    def subset(self, names: frozenset[str]) -> View:
        """The view of a named subscription; shared by streams with equal subscriptions."""
        hit = self._subsets.get(names)
        if hit is not None:
            self._subsets.move_to_end(names)
            return hit
        table = self.full.resources
        picked = {n: table[n] for n in sorted(names) if n in table}
        view = self.full if len(picked) == len(table) else View(picked)
        self._subsets[names] = view
        if len(self._subsets) > _SUBSET_MEMO_SIZE:
            self._subsets.popitem(last=False)
        return view


class Snapshot:
    """An immutable set of TypeSnapshots: what one proxy group should have.

    `changed_at` is when (time.monotonic) the earliest registry change this snapshot
    carries was seen, so sessions can measure push and convergence latency.
    """

    __slots__ = ("changed_at", "types")

    def __init__(
        self, types_: Mapping[str, TypeSnapshot] | None = None, changed_at: float | None = None
    ):
        self.types: Mapping[str, TypeSnapshot] = dict(types_ or {})
        self.changed_at = changed_at

    def get(self, type_url: str) -> TypeSnapshot:
        ts = self.types.get(type_url)
        if ts is None:
            ts = _empty_type(type_url)
        return ts

    @property
    def version(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for type_url in sorted(self.types):
            h.update(type_url.encode())
            h.update(self.types[type_url].version.encode())
        return h.hexdigest()


_EMPTY_TYPES: dict[str, TypeSnapshot] = {}


def _empty_type(type_url: str) -> TypeSnapshot:
    ts = _EMPTY_TYPES.get(type_url)
    if ts is None:
        ts = _EMPTY_TYPES[type_url] = TypeSnapshot(type_url, ())
    return ts


EMPTY_SNAPSHOT: Final = Snapshot()
