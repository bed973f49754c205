"""Strings Envoy and Kubernetes accept: RE2 regexes within Envoy's program size, header
names and header values (Envoy's substitution formats), host names, DNS labels, labels."""

from __future__ import annotations

import functools
import re

import re2

from sources.istio.constants import (
    ENVOY_REGEX_PROGRAM_SIZE_LIMIT,
    HEADER_VARIABLES,
    MAX_HEADER_BYTES,
    MAX_QUERY_NAME_BYTES,
    MAX_REGEX_LENGTH,
)
from sources.istio.report import Path, PolicyError
from sources.istio.values import checked, string, string_map

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: a header name
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_CONTROL = re.compile(r"[\x00\r\n]")  # what Envoy's (non-strict) header value rule refuses
_HEADER_VARIABLE = re.compile(r"%([A-Z_]+)(?:\(([-0-9A-Za-z_.:]+)\))?%")


@functools.lru_cache(maxsize=4096)
def check_regex(pattern: str) -> str | None:
    """None if Envoy accepts `pattern` as a safe_regex (RE2, program size <= 100), else why.

    Memoised: the same patterns come back on every re-read of a policy file."""
    if not pattern:
        return "empty regex"
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex is {len(pattern)} characters long; the limit is {MAX_REGEX_LENGTH}"
    options = re2.Options()
    options.log_errors = False  # the reason is returned, not printed to stderr
    try:
        size = re2.compile(pattern, options).programsize
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return f"invalid RE2 regex: {detail}"
    if size > ENVOY_REGEX_PROGRAM_SIZE_LIMIT:
        return (
            f"regex program size {size} exceeds Envoy's limit of {ENVOY_REGEX_PROGRAM_SIZE_LIMIT}"
        )
    return None


def header_value_problem(value: str) -> str | None:
    """None if Envoy accepts `value` in a header operation, else why. Envoy reads a value
    as a substitution format: `%VAR%` must name a known variable and a literal '%' is '%%'."""
    if _CONTROL.search(value):
        return "header value contains a NUL, CR or LF character"
    if len(value.encode()) > MAX_HEADER_BYTES:
        return f"header value is longer than {MAX_HEADER_BYTES} bytes"
    i = 0
    while (i := value.find("%", i)) >= 0:
        if value.startswith("%%", i):
            i += 2
            continue
        var = _HEADER_VARIABLE.match(value, i)
        known = var is not None and (
            var[1] == "REQ" if var[2] is not None else var[1] in HEADER_VARIABLES
        )
        if var is None or not known:
            return (
                f"invalid '%' at position {i} in header value {value!r}: write '%%' for a "
                "literal '%', or use a known variable such as %HOSTNAME% or %REQ(x-name)%"
            )
        i = var.end()
    return None


def header_name(value: object, path: Path) -> str:
    name = string(value, path)
    if not name:
        raise PolicyError(path, "header name must not be empty")
    if not TOKEN.fullmatch(name.lstrip(":")):
        raise PolicyError(path, f"invalid header name {name!r}")
    if len(name) > MAX_HEADER_BYTES:  # tokens are ASCII: characters are bytes
        raise PolicyError(path, f"header name is longer than {MAX_HEADER_BYTES} bytes")
    return name.lower()


def control_problem(text: str) -> str | None:
    return "contains a NUL, CR or LF character" if _CONTROL.search(text) else None


def query_name_problem(text: str) -> str | None:
    if len(text.encode()) > MAX_QUERY_NAME_BYTES:
        return f"query parameter name is longer than {MAX_QUERY_NAME_BYTES} bytes"
    return control_problem(text)


def header_value(value: object, path: Path) -> str:
    return checked(value, path, header_value_problem)


def plain_value(value: object, path: Path) -> str:
    """A string Envoy puts in a header verbatim (authority, redirect path, cookie path)."""
    return checked(value, path, control_problem)


def regex(value: object, path: Path) -> str:
    return checked(value, path, check_regex)


def host_name(value: object, path: Path) -> str:
    host = string(value, path)
    if host.startswith("*"):
        raise PolicyError(path, f"wildcard hosts are not supported ({host!r})")
    labels = host.removesuffix(".").split(".")
    if (
        not host
        or len(host) > 253
        or labels[-1].isdigit()
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
    ):
        raise PolicyError(path, f"invalid host {host!r} (a lowercase DNS name)")
    return host


def dns_label(value: object, path: Path, what: str) -> str:
    text = string(value, path)
    if not _DNS_LABEL.fullmatch(text):
        raise PolicyError(path, f"invalid {what} {text!r} (a lowercase DNS label)")
    return text


def label_map(value: object, path: Path) -> tuple[tuple[str, str], ...]:
    """Kubernetes label syntax: `[prefix/]name` keys, values of at most 63 characters."""
    labels = string_map(value, path)
    for key, val in labels.items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.fullmatch(name) or (
            prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))
        ):
            raise PolicyError((*path, key), f"invalid label key {key!r}")
        if not _LABEL_VALUE.fullmatch(val):
            raise PolicyError((*path, key), f"invalid label value {val!r}")
    return tuple(sorted(labels.items()))
