"""Istio `security.istio.io` PeerAuthentication spec → `model.PeerAuthentication`.

`selector.matchLabels` (none: the namespace, or the mesh in the root namespace), `mtls.mode`
UNSET (inherit), DISABLE, PERMISSIVE or STRICT, and `portLevelMtls` (workload ports to
modes), which Istio accepts only with a selector.
"""

from __future__ import annotations

from sources.istio.authorization import selector
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import fields, mapping, port_number
from xds_server.model import MTLS_MODES, MtlsMode, PeerAuthentication, PolicyKey

_SPEC = ("selector", "mtls", "portLevelMtls")


def _mode(value: object, path: Path) -> MtlsMode:
    obj = fields(value, path, ("mode",))
    mode = obj.get("mode", "UNSET")
    for known in MTLS_MODES:
        if mode == known:
            return known
    raise PolicyError((*path, "mode"), f"unknown mode {mode!r} (one of {', '.join(MTLS_MODES)})")


def peer_authentication(
    ctx: Context, spec: object, path: Path, key: PolicyKey, origin: str
) -> PeerAuthentication:
    del ctx  # nothing to notice: every field is applied
    obj = fields(spec, path, _SPEC)
    labels = selector(obj, path)
    mode = _mode(obj["mtls"], (*path, "mtls")) if "mtls" in obj else "UNSET"
    ports: list[tuple[int, MtlsMode]] = []
    if "portLevelMtls" in obj:
        where = (*path, "portLevelMtls")
        if labels is None:
            raise PolicyError(where, "portLevelMtls requires a workload selector (as in Istio)")
        for name, value in mapping(obj["portLevelMtls"], where).items():
            if not name.isdigit():
                raise PolicyError((*where, name), f"invalid port {name!r} (a number 1-65535)")
            number = port_number(int(name), (*where, name))
            ports.append((number, _mode(value, (*where, name))))
    return PeerAuthentication(key, mode, labels, tuple(sorted(ports)), origin)
