"""A policy object as a source publishes it: parsed (traffic policy or security policy)
or refused with its reason, where it was read, and which registry it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .policy import FieldPath, Policy, PolicyKey

if TYPE_CHECKING:
    from .security import SecurityPolicy


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """One policy object as a source read it: the parsed `policy`, or `error` saying why
    it was refused (then `policy` is None). `origin` says where it was read ("file:line").
    `notices` name what it contains that is not applied (unsupported fields); `applies`
    is False for a valid object that configures no proxy this server serves (a
    VirtualService only for gateways, a DestinationRule with a workloadSelector)."""

    key: PolicyKey
    origin: str
    policy: Policy | None = None
    error: str = ""
    notices: tuple[str, ...] = ()
    applies: bool = True
    # Where a field of it is and how the source names it: ("file:line:col", "field.path")
    # (used for errors found later, such as a subset no DestinationRule defines).
    locate: Callable[[FieldPath], tuple[str, str]] | None = field(
        default=None, compare=False, repr=False
    )
    # An AuthorizationPolicy or PeerAuthentication (then `policy` is None): model.security.
    security: SecurityPolicy | None = None
    # The registry it came from ("kubernetes", "consul", "file"), set by the catalog from
    # the publishing source's kind: it decides which object owns a service when several
    # registries configure it (translators.policy_owners). Not part of what the object
    # says: one source always marks its objects alike.
    source: str = field(default="", compare=False)


# The catalog kind of a source → the registry its policy objects are shown as coming
# from (the policy file source's kind is "policy": its objects come from a file).
_REGISTRY_OF_KIND = {"policy": "file"}


def registry_of(kind: str) -> str:
    """The registry name (`PolicyObject.source`) of a catalog source of kind `kind`."""
    return _REGISTRY_OF_KIND.get(kind, kind)
