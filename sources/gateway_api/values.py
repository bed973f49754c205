"""Readers of the Gateway API's value types, built on the Istio parser's typed readers and
checks: the `type` discriminators with their defaults, lists capped at the CRD's maxItems,
header names and values, paths, and the typed object references."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sources.gateway_api.constants import (
    MAX_HEADER_NAME_LENGTH,
    MAX_HEADER_VALUE_LENGTH,
    MAX_PATH_LENGTH,
)
from sources.istio.checks import control_problem, header_name, header_value_problem
from sources.istio.report import Path, PolicyError
from sources.istio.values import items, string

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")  # the CRD's HTTPHeaderName pattern
# The CRD's HTTPPathMatch / path modifier patterns: an absolute path without `//`, `/./`,
# `/../`, `%2f`, `%2F` or `#`.
_URI_PATH = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
_BAD_PATH = re.compile(r"//|/\./|/\.\./|%2f|%2F|#|/\.\.?$")


def capped(value: object, path: Path, most: int) -> list[Any]:
    """A list of at most `most` items (the CRD's maxItems)."""
    out = items(value, path)
    if len(out) > most:
        raise PolicyError(path, f"{len(out)} items; at most {most} are allowed")
    return out


def required(obj: dict[str, Any], path: Path, *names: str) -> dict[str, Any]:
    """`obj`, once each of `names` is found set in it."""
    for name in names:
        if name not in obj:
            raise PolicyError((*path, name), "required")
    return obj


def kind_of(obj: Mapping[str, Any], path: Path, kinds: tuple[str, ...], default: str) -> str:
    """A `type` discriminator: one of `kinds` (`default` when unset)."""
    kind = string(obj.get("type", default), (*path, "type"))
    if kind not in kinds:
        raise PolicyError(
            (*path, "type"), f"unsupported value {kind!r} (one of {', '.join(kinds)})"
        )
    return kind


def header_token(value: object, path: Path) -> str:
    """A HeaderName (a header or query parameter name): the CRD's token pattern, 1-256."""
    text = string(value, path)
    if not 1 <= len(text) <= MAX_HEADER_NAME_LENGTH or not _HEADER_NAME.fullmatch(text):
        raise PolicyError(
            path, f"invalid name {text!r} (an HTTP token of 1-{MAX_HEADER_NAME_LENGTH} characters)"
        )
    return text


def gateway_header_name(value: object, path: Path) -> str:
    """A header name (HeaderName), lowercased: header names are case-insensitive."""
    return header_name(header_token(value, path), path)


def gateway_header_value(value: object, path: Path) -> str:
    """A header value to set or add: 1-4096 characters Envoy takes verbatim-or-formatted."""
    text = string(value, path)
    if not 1 <= len(text) <= MAX_HEADER_VALUE_LENGTH:
        raise PolicyError(path, f"header value must have 1-{MAX_HEADER_VALUE_LENGTH} characters")
    problem = header_value_problem(text)
    if problem is not None:
        raise PolicyError(path, problem)
    return text


def absolute_path(
    value: object, path: Path, empty_ok: bool = False, uri_characters: bool = False
) -> str:
    """A URL path as the CRD accepts it: starts with "/", no `//`, dot segments, `%2f`, `#`;
    with `uri_characters` (a path match), only RFC 3986 path characters and %-escapes."""
    text = string(value, path)
    if empty_ok and text == "":
        return text
    if not text.startswith("/"):
        raise PolicyError(path, f"path {text!r} must start with '/'")
    if len(text) > MAX_PATH_LENGTH:
        raise PolicyError(path, f"path is longer than {MAX_PATH_LENGTH} characters")
    if _BAD_PATH.search(text):
        raise PolicyError(
            path, f"path {text!r} must not contain '//', '/./', '/../', '%2f', '%2F' or '#'"
        )
    if uri_characters and not _URI_PATH.fullmatch(text):
        raise PolicyError(
            path, f"path {text!r} must only contain URI path characters and %-escapes"
        )
    problem = control_problem(text)
    if problem is None and any(c.isspace() for c in text):
        problem = "contains whitespace"
    if problem is not None:
        raise PolicyError(path, f"path {problem}")
    return text
