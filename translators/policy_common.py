"""What the traffic-policy renderers share: the kinds of client they render for, the
report of what a client kind cannot apply, what the resolver tells them about a
destination (`RouteTarget`), and small protobuf values (durations, percentages, string
matchers) built from the policy model's plain numbers and strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from xds_server.model import HashOn, StringMatch

Client = Literal["envoy", "grpc"]
"""Envoy proxies, or proxyless gRPC clients (grpcio >= 1.70, DESIGN §4.12)."""

CLIENTS: tuple[Client, ...] = ("envoy", "grpc")

UINT32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class NotApplied:
    """Something in a policy that a client kind cannot apply, shown to the operator.

    `subject` names where it was written (``VirtualService shop/reviews http[1] (canary)``),
    `what` says what is not applied (``query parameter match: not applied to gRPC clients``).
    """

    subject: str
    what: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.what}"


def not_for_grpc(subject: str, feature: str, instead: str = "") -> NotApplied:
    """The standard wording of a gRPC limitation, with what gRPC clients do instead."""
    what = f"{feature}: not applied to gRPC clients"
    return NotApplied(subject, f"{what} ({instead})" if instead else what)


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds as a Duration, exact to the nanosecond (nanos always < 1e9)."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def fractional_percent(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage (0-100) with the coarsest denominator that keeps its decimals: 12 →
    12/HUNDRED, 0.5 → 50/TEN_THOUSAND, 0.0001 → 1/MILLION (finer is rounded)."""
    fp = percent_pb2.FractionalPercent
    percent = min(100.0, max(0.0, percent))
    for denominator, scale in ((fp.HUNDRED, 1), (fp.TEN_THOUSAND, 100)):
        scaled = percent * scale
        if abs(scaled - round(scaled)) < 1e-9:
            return fp(numerator=round(scaled), denominator=denominator)
    return fp(numerator=round(percent * 10_000), denominator=fp.MILLION)


def regex_matcher(pattern: str) -> regex_pb2.RegexMatcher:
    """An RE2 regex; the engine is left unset, which is Envoy's (and gRPC's) RE2 default
    (the explicit `google_re2` field is deprecated)."""
    return regex_pb2.RegexMatcher(regex=pattern)


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    """exact / prefix / regex as Envoy's StringMatcher; "present" (any value) as the regex
    ``.*`` where a value matcher is required.

    Envoy rejects an empty prefix or regex, so those become their equivalents: an empty
    prefix matches anything (``.*``), an empty (fully matched) regex only the empty string.
    """
    if match.kind == "exact" or (match.kind == "regex" and not match.value):
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind == "prefix" and match.value:
        return string_pb2.StringMatcher(prefix=match.value)
    if match.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_matcher(match.value))
    return string_pb2.StringMatcher(safe_regex=regex_matcher(".*"))


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What the resolver says about a Destination: the (existing) cluster to route to, and
    the consistent-hash key of that destination's load balancer, if it hashes."""

    cluster: str
    hash_on: HashOn | None = None
