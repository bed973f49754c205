"""A service-resolver subset `Filter` → the endpoint labels it selects.

Consul evaluates `Filter` as a go-bexpr expression over each instance. Endpoints carry
the instance's service meta as labels and each tag as a label with an empty value
(`sources/consul_mapping.py`), so the expressions that are a set of required labels
map exactly:

- ``Service.Meta.<key> == <value>``  → label ``key=value``
- ``<tag> in Service.Tags``          → label ``tag=""``

joined by ``and``. Values and tags are quoted ("v1", `v1`) or bare (v1, as Consul's
own examples write them). Anything else (``or``, ``not``, ``!=``, ``matches``, other
selectors) cannot be expressed as labels: `FilterError` says why and the resolver is
rejected, never applied to more endpoints than Consul would pick.
"""

from __future__ import annotations

import re

from xds_server.model import Labels

# bexpr's bare values: no white space, quotes or parentheses.
_VALUE = r'"(?P<{0}q>(?:[^"\\]|\\.)*)"|`(?P<{0}b>[^`]*)`|(?P<{0}w>[^\s"`()]+)'
_META = re.compile(r"Service\.Meta\.(?P<key>[A-Za-z0-9_-]+)\s*==\s*(?:" + _VALUE.format("v") + ")")
_TAG = re.compile(r"(?:" + _VALUE.format("t") + r")\s+in\s+Service\.Tags\b")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_KEYWORDS = {"and", "or", "not", "in", "is", "matches", "contains"}


class FilterError(ValueError):
    """The filter is not one this server can apply; the message says why."""


def _unquote(match: re.Match[str], prefix: str) -> str:
    quoted = match[f"{prefix}q"]
    if quoted is not None:
        return re.sub(r"\\(.)", r"\1", quoted)
    bare = match[f"{prefix}b"]
    return bare if bare is not None else match[f"{prefix}w"]


def filter_labels(expression: str) -> Labels:
    """The labels an endpoint must have to pass `expression` (see the module docstring)."""
    text = expression.strip()
    if not text:
        raise FilterError("empty filter")
    found: dict[str, str] = {}
    pos = 0
    while True:
        meta = _META.match(text, pos)
        tag = None if meta else _TAG.match(text, pos)
        clause = meta or tag
        if clause is None or (clause[0].split()[-1].lower() in _KEYWORDS and tag is None):
            raise FilterError(
                f"unsupported filter {expression!r} at {text[pos:][:40]!r}: only "
                '`Service.Meta.<key> == "<value>"` and `"<tag>" in Service.Tags`, '
                "joined by `and`, can select endpoints here"
            )
        key, value = (meta["key"], _unquote(meta, "v")) if meta else (_unquote(clause, "t"), "")
        if found.get(key, value) != value:
            raise FilterError(
                f"filter {expression!r} can never match: it requires {key!r} to be both "
                f"{found[key]!r} and {value!r}"
            )
        found[key] = value
        pos = clause.end()
        if pos == len(text):
            return tuple(sorted(found.items()))
        joiner = _AND.match(text, pos)
        if joiner is None:
            raise FilterError(
                f"unsupported filter {expression!r} at {text[pos:][:40]!r}: clauses must "
                "be joined by `and`"
            )
        pos = joiner.end()
