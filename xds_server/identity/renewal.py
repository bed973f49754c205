"""When to renew a workload certificate: a pure function of the clock and a random draw."""

from __future__ import annotations

import datetime as dt


def renewal_time(
    now: dt.datetime,
    not_before: dt.datetime,
    not_after: dt.datetime,
    random: float,
    *,
    ratio: float = 0.5,
    jitter: float = 0.1,
) -> dt.datetime:
    """When to renew a certificate valid ``not_before``..``not_after``.

    At ``ratio`` of its life plus up to ``jitter`` of its life (``random`` in [0, 1) picks
    where), so proxies that connected together do not renew together; ``now`` when that
    time has already passed. Istio renews at 50 % (SECRET_GRACE_PERIOD_RATIO); the 10 %
    spread keeps every renewal far from expiry (Consul's upper bound is 90 %).
    """
    if not 0.0 <= random < 1.0:
        raise ValueError(f"random {random}: must be in [0, 1)")
    life = not_after - not_before
    at = not_before + life * (ratio + jitter * random)
    return max(now, at)
