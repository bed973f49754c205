"""Hypothesis strategies: Istio VirtualServices and DestinationRules for one fixed registry,
valid (with the boundary values of every field) or carrying one known defect.

The registry (`values`: `HTTP_PORTS`, `SUBSET_LABELS`, `LOCALITIES`): HTTP services
``web`` (port 80) and ``api`` (ports 80 and 8080), TCP service ``db`` (one port, chosen by
the test); their endpoints carry the labels of subsets v1, v2 and canary, in localities
r1/a and r2/b. A `Scenario` is at most one DestinationRule and one VirtualService per
service (so no two of them compete for a host), and objects that are nothing but a defect
(named to be resolved first: see `broken`). Each is a `Drawn`: the object, the words its
rejection must contain if it has a defect of its own, and the services whose subsets it
routes to (if their DestinationRule is rejected, the subsets it names do not exist: it is
rejected too).

Defects are what the product must refuse before anything reaches a proxy: RE2 errors and
programs over Envoy's size limit, zero and overflowing weights, status codes, percentages
and durations out of range, unknown retry conditions, subsets, hosts and ports that do not
exist, ring and table sizes Envoy or gRPC reject, locality weights not adding up to 100.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.policy_strategies.destination_rules import (
    DR_DEFECTS,
    broken_destination_rule,
    declared_subsets,
    destination_rule,
)
from tests.policy_strategies.objects import Drawn, Scenario
from tests.policy_strategies.values import (
    HTTP_PORTS,
    HTTP_SERVICES,
    LIKELY,
    SUBSET_LABELS,
    TCP_SERVICE,
    Draw,
)
from tests.policy_strategies.virtual_services import (
    ROUTE_DEFECTS,
    RULE_DEFECTS,
    broken_virtual_service,
    defects_for,
    virtual_service,
)

__all__ = [
    "DEFECT_WORDS",
    "EVERY_DEFECT",
    "SUBSET_LABELS",
    "Drawn",
    "Scenario",
    "every_defect_in_turn",
    "scenarios",
]

SERVICES = (*HTTP_SERVICES, TCP_SERVICE)


@st.composite
def scenarios(draw: Draw, tcp_port: int) -> Scenario:
    """Up to one DestinationRule and one VirtualService per service, about one in four
    with a defect, and up to two objects that are nothing but a defect."""
    ports = {**HTTP_PORTS, TCP_SERVICE: (tcp_port,)}
    # Three in four present, one in four bad; hypothesis starts from the simplest draw
    # (0): every object present and valid.
    bad = LIKELY.map(lambda likely: not likely)
    drs = {h: draw(destination_rule(h, ports[h], draw(bad))) for h in SERVICES if draw(LIKELY)}
    subsets = {h: declared_subsets(dr) for h, dr in drs.items()}
    vss = [draw(virtual_service(h, ports, subsets, draw(bad))) for h in SERVICES if draw(LIKELY)]
    return Scenario([*drs.values(), *vss, *draw(_broken())])


# Every defect every kind of object for every service can have.
EVERY_DEFECT = [
    *(("DestinationRule", h, d) for h in SERVICES for d in sorted(DR_DEFECTS)),
    *(("VirtualService", h, d) for h in SERVICES for d in defects_for(h)),
]


# The words of every defect's rejection.
DEFECT_WORDS = frozenset(
    words for table in (DR_DEFECTS, ROUTE_DEFECTS, RULE_DEFECTS) for _, words in table.values()
)


def broken(kind: str, host: str, defect: str, label: str) -> Drawn:
    """An object with nothing but a defect. Its name starts with ``label`` (``bad...``),
    before the other objects of its kind: the server resolves objects in name order and a
    rejected one claims no host, so it is rejected for its defect, never for a host
    conflict, and the other objects never for one either."""
    make = broken_destination_rule if kind == "DestinationRule" else broken_virtual_service
    return make(host, defect, label)


def every_defect_in_turn(n: int) -> Drawn:
    """The ``n``-th of EVERY_DEFECT (cyclically): a run of len(EVERY_DEFECT) examples
    meets every one, whatever hypothesis draws."""
    kind, host, defect = EVERY_DEFECT[n % len(EVERY_DEFECT)]
    return broken(kind, host, defect, "bad-turn")


@st.composite
def _broken(draw: Draw) -> list[Drawn]:
    """Up to two objects with nothing but a defect each."""
    chosen = draw(st.lists(st.sampled_from(EVERY_DEFECT), max_size=2, unique=True))
    return [broken(*c, f"bad{i}") for i, c in enumerate(chosen)]
