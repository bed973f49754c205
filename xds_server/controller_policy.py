"""The controller's policy state (split out of xds_server.controller; part of the
composition root, so it may use the translators): the policy objects resolved against
the catalog view, what is in force per service and per caller namespace, each object's
status (counted in a metric, a new rejection logged once), and the answers the admin
API and `/debug/explain` read from it. The security objects' own memory
(translators.authz_inbound.SecurityPolicies) rides along, since their statuses replace
the traffic policy resolver's.

An object that stops resolving keeps its last accepted version in force while it
exists (`accepted`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping

from translators.authz_inbound import SecurityPolicies
from translators.policy_resolve import PolicyStatus, ServicePolicy, resolve_policies
from translators.policy_status import grpc_not_applied, subset_warnings
from xds_server import metrics
from xds_server.model import Policy, PolicyKey, PolicyObject, ServiceEntry, ServiceKey

log = logging.getLogger("xds_server.controller")


class PolicyState:
    """See the module docstring. Touched only under the controller's lock."""

    def __init__(self) -> None:
        self.objects: tuple[PolicyObject, ...] = ()
        self.accepted: dict[PolicyKey, Policy] = {}
        self.services: dict[ServiceKey, ServicePolicy] = {}
        # Per caller namespace, what its consumer routes change (Resolution.consumers).
        self.consumers: dict[str, dict[ServiceKey, ServicePolicy]] = {}
        self.statuses: list[PolicyStatus] = []
        # PeerAuthentication, AuthorizationPolicy and intentions (the controller turns
        # what is in force into its inbound and proxyless hooks).
        self.security = SecurityPolicies()
        self._logged_statuses: set[PolicyStatus] = set()
        self._kinds: set[str] = {"VirtualService", "DestinationRule"}

    def resolve(
        self, view: Mapping[ServiceKey, ServiceEntry], registries: Mapping[str, str]
    ) -> tuple[set[ServiceKey], bool]:
        """Resolve the objects against `view`: the services whose policy changed, and
        whether any namespace's consumer routes did."""
        resolution = resolve_policies(view, self.objects, self.accepted, registries)
        consumers_changed = resolution.consumers != self.consumers
        self.consumers = resolution.consumers
        keys = {o.key for o in self.objects}
        # A version accepted once stays the fallback while its object exists.
        merged = {**self.accepted, **resolution.accepted}
        self.accepted = {k: v for k, v in merged.items() if k in keys}
        before, self.services = self.services, resolution.services
        self.statuses = self.security.statuses_in(grpc_not_applied(resolution, view))
        self._report()
        after = self.services
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        return changed, consumers_changed

    def _report(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for status in self.statuses:
            kind_state = (status.key.kind, status.state)
            counts[kind_state] = counts.get(kind_state, 0) + 1
        # Every kind seen so far keeps its series (at 0 once its last object is gone).
        self._kinds |= {kind for kind, _ in counts}
        for kind in sorted(self._kinds):
            for state in ("ACCEPTED", "WARNING", "REJECTED", "SHADOWED"):
                metrics.POLICY_OBJECTS.labels(kind, state).set(counts.get((kind, state), 0))
        for status in self.statuses:
            if status.state == "REJECTED" and status not in self._logged_statuses:
                reasons = "; ".join(status.reasons)
                log.warning("policy %s (%s) rejected: %s", status.key, status.origin, reasons)
        self._logged_statuses = set(self.statuses)

    def status_docs(self, view: Mapping[ServiceKey, ServiceEntry]) -> list[dict[str, object]]:
        """Every object's status, with warnings about subsets that select no endpoints
        in `view` now."""
        extra = subset_warnings(self.services, view)
        out = []
        for status in self.statuses:
            doc = status.as_dict()
            more = extra.get(status.key, [])
            if more:
                doc["reasons"] = [*status.reasons, *more]
                if doc["state"] == "ACCEPTED":
                    doc["state"] = "WARNING"
            out.append(doc)
        return out

    def subset_labels(self, service: str, subset: str) -> dict[str, str] | None:
        """The labels subset `subset` of `service` (``name.namespace``) selects, from the
        DestinationRule in force; None when none defines it."""
        for key, policy in self.services.items():
            if str(key) == service and policy.destination is not None:
                found = policy.destination.subset(subset)
                return dict(found.labels) if found is not None else None
        return None

    def rule_writer(self, subject: str, index: int) -> tuple[str, str, str] | None:
        """(kind, namespace, name) of the object that wrote rule `index` of the routing
        policy `subject` when that policy merges several; None otherwise."""
        consumers = (p for policies in self.consumers.values() for p in policies.values())
        for policy in itertools.chain(self.services.values(), consumers):
            routing = policy.routing
            if routing is None or str(routing.key) != subject or index >= len(routing.http):
                continue
            key = routing.http[index].route
            return (key.kind, key.namespace, key.name) if key is not None else None
        return None
