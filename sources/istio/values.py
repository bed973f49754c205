"""Typed readers of an object's values: each returns the value or raises a `PolicyError`
naming the field path and what was expected (objects, lists, strings, integers in range,
durations, percentages, ports)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any, TypeVar

from sources.istio.constants import INT32_MAX, MAX_DURATION_SECONDS, UINT32_MAX
from sources.istio.report import Path, PolicyError

_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNIT = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}

T = TypeVar("T")


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def wrong(path: Path, want: str, value: object) -> PolicyError:
    return PolicyError(path, f"expected {want}, got {describe(value)}")


def unknown_field(key: str, known: Iterable[str]) -> str:
    camel = re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), key)
    guess = [camel] if camel != key and camel in known else difflib.get_close_matches(key, known, 1)
    return f'unknown field "{key}"' + (f' (did you mean "{guess[0]}"?)' if guess else "")


def mapping(value: object, path: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise wrong(path, "an object", value)
    for key in value:
        if not isinstance(key, str):
            raise PolicyError(path, f"field names must be strings, got {describe(key)}")
    return value


def fields(value: object, path: Path, known: tuple[str, ...]) -> dict[str, Any]:
    """`value` as an object whose fields are all in `known`, null members left out (as
    Kubernetes treats them); an unknown field is an error at its own path."""
    obj = mapping(value, path)
    for key in obj:
        if key not in known:
            raise PolicyError((*path, key), unknown_field(key, known))
    return {k: v for k, v in obj.items() if v is not None}


def items(value: object, path: Path) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise wrong(path, "a list", value)
    for i, item in enumerate(value):
        if item is None:
            raise PolicyError((*path, i), "must not be null")
    return list(value)


def string(value: object, path: Path) -> str:
    if not isinstance(value, str):
        raise wrong(path, "a string", value)
    return value


def nonempty(value: object, path: Path) -> str:
    text = string(value, path)
    if not text:
        raise PolicyError(path, "must not be empty")
    return text


def boolean(value: object, path: Path) -> bool:
    if not isinstance(value, bool):
        raise wrong(path, "a boolean", value)
    return value


def integer(value: object, path: Path, low: int = 0, high: int = INT32_MAX) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON decoders may give 5.0 for 5
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(path, "an integer", value)
    if not low <= value <= high:
        raise PolicyError(path, f"{value} is outside {low}-{high}")
    return value


def count(value: object, path: Path) -> int:
    return integer(value, path, 0, UINT32_MAX)


def limit(value: object, path: Path) -> int | None:
    """A connection pool limit: Istio reads a proto3 0 as unset (no limit), never as 0."""
    return integer(value, path) or None


def int_percent(value: object, path: Path) -> int:
    return integer(value, path, 0, 100)


def finite_number(value: object, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong(path, "a number", value)
    if not math.isfinite(value):
        raise PolicyError(path, f"{value} is not a finite number")
    return float(value)


def strings(value: object, path: Path) -> list[str]:
    return [string(item, (*path, i)) for i, item in enumerate(items(value, path))]


def string_map(value: object, path: Path) -> dict[str, str]:
    return {k: string(v, (*path, k)) for k, v in mapping(value, path).items()}


def one_of(obj: Mapping[str, Any], path: Path, names: tuple[str, ...]) -> str | None:
    """The one field of `names` that is set (None if none); two set is an error."""
    found = [n for n in names if n in obj]
    if len(found) > 1:
        raise PolicyError(
            path, f"only one of {', '.join(names)} may be set (got {' and '.join(found)})"
        )
    return found[0] if found else None


def optional(
    obj: Mapping[str, Any], field: str, path: Path, read: Callable[[Any, Path], T]
) -> T | None:
    """`read` of `obj[field]` at that field's path; None when the field is unset (absent,
    or the proto3 default "")."""
    value = obj.get(field)
    return None if value is None or value == "" else read(value, (*path, field))


def each(value: object, path: Path, parse: Callable[[Any, Path], T | None]) -> list[T]:
    """`parse(item, item_path)` over a list, leaving out the items it returns None for."""
    out: list[T] = []
    for i, item in enumerate(items(value, path)):
        parsed = parse(item, (*path, i))
        if parsed is not None:
            out.append(parsed)
    return out


def checked(value: object, path: Path, problem_of: Callable[[str], str | None]) -> str:
    """A string that `problem_of` finds nothing wrong with."""
    text = string(value, path)
    problem = problem_of(text)
    if problem is not None:
        raise PolicyError(path, problem)
    return text


def parse_duration(text: str) -> float:
    """Seconds in a Go/Kubernetes duration ("1.5s", "100ms", "1h30m", "0"); ValueError."""
    body = text
    if body in ("0", "-0", "+0"):
        return 0.0
    if not _DURATION.fullmatch(body):
        raise ValueError(f'invalid duration {text!r} (for example "1.5s", "100ms", "1m")')
    total = sum(
        (Fraction(num) * _DURATION_UNIT[unit] for num, unit in _DURATION_PART.findall(body)),
        Fraction(0),
    )
    if body.startswith("-") and total:
        raise ValueError(f"negative duration {text!r}")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {text!r} is longer than {MAX_DURATION_SECONDS}s (Envoy's limit)"
        )
    return float(total)


def duration(value: object, path: Path, zero_ok: bool = False) -> float:
    """Seconds; at least 1ms as Istio requires, or exactly 0 where 0 means "off"."""
    text = string(value, path)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise PolicyError(path, str(exc)) from None
    if seconds == 0 and zero_ok:
        return 0.0
    if seconds < 0.001:
        raise PolicyError(path, f"duration {text!r} is shorter than 1ms")
    return seconds


def off_or_duration(value: object, path: Path) -> float:
    """A duration where 0 means "off" (a route timeout, an idle timeout, a cookie TTL)."""
    return duration(value, path, zero_ok=True)


def percent(value: object, path: Path) -> float:
    """An Istio Percent ({value: 0-100}): 0, or at least 0.0001 (Envoy's granularity)."""
    obj = fields(value, path, ("value",))
    pct = finite_number(obj.get("value", 0.0), (*path, "value"))
    if pct != 0 and not 0.0001 <= pct <= 100:
        raise PolicyError((*path, "value"), f"{pct:g} is neither 0 nor within 0.0001-100")
    return pct


def port_number(value: object, path: Path) -> int:
    return integer(value, path, 1, 65535)


def port_selector(value: object, path: Path) -> int:
    obj = fields(value, path, ("number",))
    if "number" not in obj:
        raise PolicyError((*path, "number"), "required")
    return port_number(obj["number"], (*path, "number"))
