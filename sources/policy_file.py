"""Policy files: Istio VirtualService and DestinationRule objects, and Gateway API
HTTPRoute and GRPCRoute objects (mesh mode: `parentRefs` naming Services), from YAML/JSON
files.

`--policy PATH` (repeatable) names a file of one or more YAML documents, or a directory
whose ``*.yaml``, ``*.yml`` and ``*.json`` files are read in name order. Each document
is a Kubernetes-shaped object (``kind: List`` with ``items`` is unpacked, as `kubectl get
-o yaml` writes it). Every object becomes a `PolicyObject`:

- parsed (`sources.istio`), with notices for what it contains that is not applied;
- or refused, with ``file:line:col: Kind namespace/name: field.path: reason``;
  its last accepted version stays in force (the controller keeps it).

A file that cannot be read or is not valid YAML is one error for the source (shown in
`xdsctl sources`); its objects as last read stay published. Files are watched like the
registry file (`sources.watch`: OS notifications on their directories, polling where
those are unavailable); a change in any of them re-reads that file only, and of that file only
the documents whose text changed are parsed again (`parse_policy_file_reusing`), so
shifting one weight in a file of thousands of objects costs one document's parse.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sources import gateway_api
from sources.base import Catalog
from sources.istio import Parsed, PolicyError, is_supported_kind, parse_policy
from sources.watch import Mode, Watch
from sources.yaml_positions import CLoader, DuplicateKey, Nodes, PyLoader, located, render_path
from xds_server.model import DEFAULT_NAMESPACE, PolicyKey, PolicyObject

log = logging.getLogger("sources.policy")

KIND = "policy"
SUFFIXES = (".yaml", ".yml", ".json")


class PolicyFileError(ValueError):
    """A policy file is unusable: unreadable, or not YAML."""


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


def _key(obj: Any) -> PolicyKey:
    """The object's identity as far as it can be read (for reporting a refused object)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    kind = obj.get("kind") if isinstance(obj, dict) else None
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    return PolicyKey(str(kind or "?"), str(namespace), str(meta.get("name") or "?"))


def _documents(text: str, filename: str) -> Iterator[tuple[Any, yaml.Node]]:
    """Each document's data and its node (for positions). PolicyFileError if not YAML."""
    loader: Any = CLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            try:
                data = loader.construct_document(node)
            except DuplicateKey:
                Nodes(node, filename, PolicyFileError)  # raises it, with its line
                raise
            yield data, node
    except yaml.YAMLError:
        # libyaml's messages are terse: let PyYAML say what is wrong, and where.
        slow = PyLoader(text)
        try:
            while slow.check_node():
                slow.get_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = exc.problem or exc.context or "not valid YAML"
            raise PolicyFileError(located(filename, mark, (), f"invalid YAML: {reason}")) from None
        except yaml.YAMLError as exc:
            raise PolicyFileError(f"{filename}: invalid YAML: {exc}") from None
        finally:
            slow.dispose()
        raise PolicyFileError(f"{filename}: invalid YAML") from None
    finally:
        loader.dispose()


def _objects(data: Any, node: yaml.Node) -> Iterator[tuple[Any, yaml.Node, tuple[Any, ...]]]:
    """The objects of one document, with the path of each within it (a List's items)."""
    items = data.get("items") if isinstance(data, dict) and data.get("kind") == "List" else None
    if isinstance(items, list):
        for i, item in enumerate(items):
            yield item, node, ("items", i)
    elif data is not None:
        yield data, node, ()


_STR_TAG = "tag:yaml.org,2002:str"


class _Positions:
    """Where things are in one document. Indexing all of its nodes (`Nodes`) costs as
    much as parsing it, so that is done only when a message needs the line of a field
    (an error or a notice); where an object starts is read off its own node."""

    def __init__(self, node: yaml.Node, filename: str) -> None:
        self._node = node
        self._filename = filename
        self._nodes: Nodes | None = None

    def mark(self, path: tuple[Any, ...]) -> yaml.Mark | None:
        if self._nodes is None:
            self._nodes = Nodes(self._node, self._filename, PolicyFileError)
        return self._nodes.mark(path)

    def start(self, base: tuple[Any, ...]) -> yaml.Mark | None:
        """Where the object at `base` (``()``, or ``("items", i)`` of a List) starts."""
        if not base:
            return self._node.start_mark
        if isinstance(self._node, yaml.MappingNode):
            for key, value in self._node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and key.tag == _STR_TAG
                    and key.value == base[0]
                    and isinstance(value, yaml.SequenceNode)
                    and base[1] < len(value.value)
                ):
                    item: yaml.Node = value.value[base[1]]
                    return item.start_mark
        return self.mark(base)


def parse_policy_file(text: str, filename: str) -> list[PolicyObject]:
    """Every object of a policy file; PolicyFileError if the file is not YAML."""
    out: list[PolicyObject] = []
    for i, (document, node) in enumerate(_documents(text, filename)):
        out += _document_objects(document, node, filename, _Source(text, i))
    return out


@dataclass(frozen=True, slots=True)
class _Source:
    """The text a document was parsed from and its index there: enough to find a field's
    line later, without keeping the document's nodes (they cost more than the text)."""

    text: str
    index: int


class _Locator:
    """`PolicyObject.locate` for an object of a policy file: composes its document again
    (only when a later error needs a field's line, which is rare) and finds the field."""

    def __init__(self, filename: str, source: _Source, base: tuple[Any, ...]) -> None:
        self.filename, self.source, self.base = filename, source, base

    def __call__(self, path: tuple[str | int, ...]) -> tuple[str, str]:
        loader = PyLoader(self.source.text)
        node: yaml.Node | None = None
        try:
            for _ in range(self.source.index + 1):
                node = loader.get_node() if loader.check_node() else None
        finally:
            loader.dispose()
        mark = _Positions(node, self.filename).mark((*self.base, *path)) if node else None
        return located(self.filename, mark, (), "").removesuffix(": "), render_path(path)


def _document_objects(
    document: Any, node: yaml.Node, filename: str, source: _Source
) -> list[PolicyObject]:
    at = _Positions(node, filename)
    return [
        _object(data, base, at, filename, _Locator(filename, source, base))
        for data, _, base in _objects(document, node)
    ]


# -- parsing only the documents that changed ----------------------------------------------

# One document as written: the line it starts on (0-based) and its text.
Chunk = tuple[int, str]
Reuse = Mapping[Chunk, list[PolicyObject]]
# A line that starts a document: ``---`` then a blank or the end of the line. Inside a
# document no line may start so (YAML forbids it, even in a scalar; libyaml and PyYAML
# end the document there), so cutting a file at these lines gives its documents.
_DOCUMENT_START = re.compile(r"^---(?=[ \t]|\r?$)", re.MULTILINE)
# What makes cutting unsafe or line numbers ambiguous: directives (they belong to the
# next document), document end markers, line breaks other than \n and \r\n, a BOM.
_UNCUTTABLE = re.compile(
    r"^(?:%|\.\.\.(?=[ \t]|\r?$))|\r(?!\n)|[\x85\u2028\u2029\ufeff]", re.MULTILINE
)
# Parsing one document alone costs its line number in blank lines (they keep every
# position exact); with more changed documents than this, the whole file is parsed once.
_MAX_REPARSED = 32


def _chunks(text: str) -> list[Chunk] | None:
    """The file cut into its documents, or None when it cannot safely be cut."""
    if _UNCUTTABLE.search(text):
        return None
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    out: list[Chunk] = []
    line = 0
    for i, start in enumerate(starts):
        if i:
            line += text.count("\n", starts[i - 1], start)
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        out.append((line, text[start:end]))
    return out


def parse_policy_file_reusing(
    text: str, filename: str, reuse: Reuse
) -> tuple[list[PolicyObject], dict[Chunk, list[PolicyObject]]]:
    """`parse_policy_file`, with the objects of every document whose text and first line
    are as in the file that returned `reuse` taken from there; and the `reuse` for the
    next version of the file. The result equals `parse_policy_file`'s, errors included.
    """
    chunks = _chunks(text)
    if chunks is None:
        return parse_policy_file(text, filename), {}
    changed = [c for c in chunks if c not in reuse]
    if len(changed) > _MAX_REPARSED:
        return _parse_whole(text, filename, chunks)
    try:
        # Blank lines before the document keep its positions those of the whole file.
        fresh = {c: parse_policy_file("\n" * c[0] + c[1], filename) for c in changed}
    except PolicyFileError:
        # The whole file reports its first error as it would without reuse.
        return _parse_whole(text, filename, chunks)
    memo = {c: fresh[c] if c in fresh else reuse[c] for c in chunks}
    return [o for c in chunks for o in memo[c]], memo


def _parse_whole(
    text: str, filename: str, chunks: list[Chunk]
) -> tuple[list[PolicyObject], dict[Chunk, list[PolicyObject]]]:
    """Parse the whole file; each document's objects filed under the chunk it starts in."""
    starts = [line for line, _ in chunks]
    memo: dict[Chunk, list[PolicyObject]] = {c: [] for c in chunks}
    out: list[PolicyObject] = []
    for i, (document, node) in enumerate(_documents(text, filename)):
        objects = _document_objects(document, node, filename, _Source(text, i))
        out += objects
        if objects:
            memo[chunks[bisect.bisect_right(starts, node.start_mark.line) - 1]] += objects
    return out, memo


def _object(
    data: Any, base: tuple[Any, ...], at: _Positions, filename: str, locate: _Locator
) -> PolicyObject:
    """One object of a document (at `base` in it), parsed or refused with its reason."""
    where = located(filename, at.start(base), (), "").rstrip(": ")
    key = _key(data)
    if not isinstance(data, dict):
        error = located(filename, at.start(base), (), "expected a Kubernetes object")
        return PolicyObject(key, where, error=error)
    route = gateway_api.is_supported_kind(data)
    if not route and not is_supported_kind(data):
        api = data.get("apiVersion", "?")
        reason = (
            f"{key.kind} {key.namespace}/{key.name}: kind {key.kind} ({api}) is not "
            "supported (VirtualService and DestinationRule of networking.istio.io, "
            f"HTTPRoute and GRPCRoute of {gateway_api.API_GROUP}/v1 are)"
        )
        return PolicyObject(key, where, error=located(filename, at.start(base), (), reason))
    try:
        parsed: Parsed = (
            gateway_api.parse_route(data, origin=where) if route else parse_policy(data, where)
        )
    except PolicyError as exc:
        subject = f"{key.kind} {key.namespace}/{key.name}"
        error = located(filename, at.mark((*base, *exc.path)), (), f"{subject}: {exc}")
        return PolicyObject(key, where, error=error)
    notices = tuple(
        located(filename, at.mark((*base, *n.path)), n.path, n.message) for n in parsed.notices
    )
    policy = (
        gateway_api.attached(parsed)
        if isinstance(parsed, gateway_api.ParsedRoute)
        else parsed.policy
    )
    return PolicyObject(
        parsed.policy.key,
        where,
        policy,
        notices=notices,
        applies=parsed.applies,
        locate=locate,
    )


def _files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        else:
            out.append(path)
    return out


class PolicyFileSource:
    """Watches policy files and publishes their objects to the catalog."""

    def __init__(
        self,
        paths: Sequence[Path],
        catalog: Catalog,
        *,
        name: str = "policy",
        interval: float = 1.0,
        watch: Mode = "auto",
    ) -> None:
        self.paths = list(paths)
        self.catalog = catalog
        self.name = name
        self.interval = interval
        self.watch = Watch(
            self.paths, self.poll, interval=interval, mode=watch, suffixes=SUFFIXES, what="policy"
        )
        self._stamps: dict[Path, _Stamp] = {}
        self._objects: dict[Path, list[PolicyObject]] = {}
        self._reuse: dict[Path, dict[Chunk, list[PolicyObject]]] = {}
        self._errors: dict[Path, str] = {}
        self._published: tuple[PolicyObject, ...] | None = None
        catalog.register(name, KIND)

    def load_once(self) -> list[PolicyObject]:
        """Read everything now; PolicyFileError (the first unusable file) at startup."""
        self._scan(force=True)
        if self._errors:
            raise PolicyFileError(next(iter(self._errors.values())))
        return self._publish()

    async def run(self) -> None:
        """Forever: watch the files and publish what changed."""
        await self.watch.run()

    async def poll(self) -> None:
        changed = await asyncio.to_thread(self._scan)
        if changed:
            self._publish()

    def _scan(self, force: bool = False) -> bool:
        """Re-read the files whose stamp changed; whether anything did."""
        try:
            files = _files(self.paths)
        except OSError as exc:
            return self._fail(Path(exc.filename or self.paths[0]), f"cannot list: {exc.strerror}")
        changed = False
        for gone in set(self._objects) - set(files):
            del self._objects[gone]
            self._reuse.pop(gone, None)
            self._stamps.pop(gone, None)
            changed = True
        for path in files:
            try:
                st = os.stat(path)
                stamp = _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)
                if not force and self._stamps.get(path) == stamp:
                    continue
                text = path.read_bytes().decode("utf-8")
            except OSError as exc:
                changed |= self._fail(path, f"{path}: cannot read: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError as exc:
                changed |= self._fail(path, f"{path}: not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            self._stamps[path] = stamp
            try:
                objects, reuse = parse_policy_file_reusing(
                    text, str(path), self._reuse.get(path, {})
                )
            except PolicyFileError as exc:
                changed |= self._fail(path, str(exc))
                continue
            self._reuse[path] = reuse
            if self._errors.pop(path, None) is not None:
                log.info("%s: valid again", path)
                changed = True
            if objects != self._objects.get(path):
                self._objects[path] = objects
                changed = True
        return changed

    def _fail(self, path: Path, error: str) -> bool:
        """A file is unusable: report it once; its objects as last read stay."""
        if self._errors.get(path) == error:
            return False
        self._errors[path] = error
        log.error("%s; keeping its last good objects", error)
        return True

    def _publish(self) -> list[PolicyObject]:
        seen: dict[PolicyKey, str] = {}
        objects: list[PolicyObject] = []
        for path in _files_in_order(self._objects, self.paths):
            for obj in self._objects[path]:
                first = seen.get(obj.key)
                if first is not None and obj.key.name != "?":
                    error = f"{obj.origin}: {obj.key}: duplicate of the object at {first}"
                    objects.append(PolicyObject(obj.key, obj.origin, error=error))
                    continue
                seen[obj.key] = obj.origin
                objects.append(obj)
        published = tuple(objects)
        if published != self._published:
            for obj in published:
                if obj.error:
                    log.warning("policy rejected: %s", obj.error)
            log.info("policy: published %d objects", len(published))
        if published != self._published or not self._errors:
            # The catalog ignores an unchanged set, but marks the source recovered.
            self._published = published
            self.catalog.replace_policies(self.name, published)
        if self._errors:
            self.catalog.set_error(self.name, "; ".join(self._errors.values()))
        return list(published)


def _files_in_order(known: dict[Path, list[PolicyObject]], paths: Sequence[Path]) -> list[Path]:
    order = {p: i for i, p in enumerate(_safe_files(paths))}
    return sorted(known, key=lambda p: (order.get(p, len(order)), str(p)))


def _safe_files(paths: Sequence[Path]) -> list[Path]:
    try:
        return _files(paths)
    except OSError:
        return []
