"""Reading policy files' text: YAML documents (``kind: List`` unpacked) into policy
objects (`sources.istio`, `sources.gateway_api`), refusals located as
``file:line:col: Kind namespace/name: field.path: reason``, and a re-read that parses
only the documents whose text changed (`parse_policy_file_reusing`). Used by
`sources.policy_file`, which watches the files."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sources import gateway_api
from sources.istio import Parsed, PolicyError, is_supported_kind, parse_policy
from sources.istio.security import ParsedSecurity, is_security_kind, parse_security
from sources.yaml_positions import CLoader, DuplicateKey, Nodes, PyLoader, located, render_path
from xds_server.model import DEFAULT_NAMESPACE, PolicyKey, PolicyObject


class PolicyFileError(ValueError):
    """A policy file is unusable: unreadable, or not YAML."""


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
    security = is_security_kind(data)
    if not route and not security and not is_supported_kind(data):
        api = data.get("apiVersion", "?")
        reason = (
            f"{key.kind} {key.namespace}/{key.name}: kind {key.kind} ({api}) is not "
            "supported (VirtualService and DestinationRule of networking.istio.io, "
            "AuthorizationPolicy and PeerAuthentication of security.istio.io, "
            f"HTTPRoute and GRPCRoute of {gateway_api.API_GROUP}/v1 are)"
        )
        return PolicyObject(key, where, error=located(filename, at.start(base), (), reason))
    try:
        parsed: Parsed | ParsedSecurity = (
            parse_security(data, where)
            if security
            else gateway_api.parse_route(data, origin=where)
            if route
            else parse_policy(data, where)
        )
    except PolicyError as exc:
        subject = f"{key.kind} {key.namespace}/{key.name}"
        error = located(filename, at.mark((*base, *exc.path)), (), f"{subject}: {exc}")
        return PolicyObject(key, where, error=error)
    notices = tuple(
        located(filename, at.mark((*base, *n.path)), n.path, n.message) for n in parsed.notices
    )
    return policy_object(parsed, where, notices, locate)


def policy_object(
    parsed: Parsed | ParsedSecurity,
    origin: str,
    notices: tuple[str, ...],
    locate: Callable[[tuple[str | int, ...]], tuple[str, str]],
) -> PolicyObject:
    """The PolicyObject of a parsed object (a Gateway API route as its attached policy),
    for policy files and the Kubernetes policy source alike."""
    if isinstance(parsed, ParsedSecurity):
        return PolicyObject(
            parsed.policy.key, origin, notices=notices, locate=locate, security=parsed.policy
        )
    policy = (
        gateway_api.attached(parsed)
        if isinstance(parsed, gateway_api.ParsedRoute)
        else parsed.policy
    )
    return PolicyObject(
        parsed.policy.key, origin, policy, notices=notices, applies=parsed.applies, locate=locate
    )
