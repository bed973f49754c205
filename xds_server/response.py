"""Encoded xDS responses, built once and shared by every stream that sends them.

A push to a proxy group is the same message on every stream of the group: the same
version, the same resources, the same removals. Only the nonce would differ, and a nonce
only has to be unique among the responses of one stream (DESIGN §4.3). So a response is
encoded once, with a nonce from one process-wide counter, and memoised on what decides
its content (a `View` for a full state, a `Diff` for a change); every stream then hands
gRPC the same `bytes` object instead of concatenating its own copy (DESIGN §5). A stream
never sends one encoding twice in a row (`Session` asks for a fresh one then), so its
next nonce always differs from its last.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from xds_server import wire
from xds_server.snapshot import Encoded, Resource

CONTROL_PLANE_ID = "xds-server"
_CONTROL_PLANE_SOTW = wire.field_bytes(6, wire.field_str(1, CONTROL_PLANE_ID))
_CONTROL_PLANE_DELTA = wire.field_bytes(7, wire.field_str(1, CONTROL_PLANE_ID))

# Process-wide: an encoding shared by many streams needs a nonce unique on each of them.
_nonces = itertools.count(1)


def encode(
    delta: bool,
    type_url: str,
    version: str,
    resources: Sequence[Resource],
    removed: Sequence[str] = (),
) -> Encoded:
    """A whole DiscoveryResponse (or DeltaDiscoveryResponse) with a new nonce.

    The resources' fields are pre-encoded once per resource (`Resource.sotw_field`,
    `delta_field`); protobuf lets fields come in any order, so this is one join."""
    nonce = str(next(_nonces))
    if delta:
        parts = (
            wire.field_str(1, version),
            *(r.delta_field for r in resources),
            wire.field_str(4, type_url),
            wire.field_str(5, nonce),
            *(wire.field_str(6, n) for n in removed),
            _CONTROL_PLANE_DELTA,
        )
    else:
        parts = (
            wire.field_str(1, version),
            *(r.sotw_field for r in resources),
            wire.field_str(4, type_url),
            wire.field_str(5, nonce),
            _CONTROL_PLANE_SOTW,
        )
    return Encoded(b"".join(parts), nonce)


@dataclass(slots=True)
class Response:
    """One DiscoveryResponse / DeltaDiscoveryResponse as a session decided it."""

    type_url: str
    version: str
    nonce: str
    resources: Sequence[Resource]
    removed: Sequence[str]
    delta: bool
    data: bytes  # the whole encoded message, possibly shared with other streams

    def encode(self) -> bytes:
        return self.data

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.resources]
