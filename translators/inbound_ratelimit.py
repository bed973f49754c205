"""The inbound local rate limit: Envoy's `envoy.filters.http.local_ratelimit` on a
sidecar's inbound listener, from a service's `RateLimit` (429 when the bucket is empty).

The bucket is per listener (per sidecar), as Envoy's local rate limit is: a service
with N instances accepts up to N times the rate in total.
"""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_server.model import RateLimit

from . import resources as rb

LOCAL_RATE_LIMIT_FILTER: Final = "envoy.filters.http.local_ratelimit"
# Envoy's documented runtime keys; present so an operator can turn the limit off (or to
# shadow mode) at runtime without a push.
ENABLED_KEY: Final = "local_rate_limit_enabled"
ENFORCED_KEY: Final = "local_rate_limit_enforced"


def _always(runtime_key: str) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key=runtime_key,
    )


def local_rate_limit_filter(limit: RateLimit, stat_prefix: str) -> hcm_pb2.HttpFilter:
    """The filter enforcing `limit`: `burst` tokens, `requests_per_second` added every
    second; stats ``<stat_prefix>.http_local_rate_limit.rate_limited``; a limited request
    gets 429 and ``x-local-rate-limit: true``."""
    config = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst,
            tokens_per_fill=wrappers_pb2.UInt32Value(value=limit.requests_per_second),
            fill_interval=duration_pb2.Duration(seconds=1),
        ),
        filter_enabled=_always(ENABLED_KEY),
        filter_enforced=_always(ENFORCED_KEY),
        # Tells a caller the 429 is the limit's, not the application's.
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="x-local-rate-limit", value="true"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )
    return hcm_pb2.HttpFilter(name=LOCAL_RATE_LIMIT_FILTER, typed_config=rb.pack(config))
