"""The CSDS gRPC service (`envoy.service.status.v3.ClientStatusDiscoveryService`), served
on the xDS port beside ADS: each request is answered by a function of the server's open
streams (`XdsServer._client_status`, built by `xds_server.csds`); a node matcher it
cannot evaluate ends the call with INVALID_ARGUMENT and says where and why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2

from xds_server.csds import MatcherError

SERVICE = "envoy.service.status.v3.ClientStatusDiscoveryService"

Answer = Callable[[csds_pb2.ClientStatusRequest], csds_pb2.ClientStatusResponse]


def handler(answer: Answer) -> grpc.GenericRpcHandler:
    """`FetchClientStatus` (unary) and `StreamClientStatus` (each request answered as it
    arrives, with the state at that moment)."""

    async def fetch(
        request: csds_pb2.ClientStatusRequest, context: Any
    ) -> csds_pb2.ClientStatusResponse:
        try:
            return answer(request)
        except MatcherError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # not reached: abort() raises

    async def stream(
        requests: AsyncIterator[csds_pb2.ClientStatusRequest], context: Any
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in requests:
            yield await fetch(request, context)

    codec: dict[str, Any] = {
        "request_deserializer": csds_pb2.ClientStatusRequest.FromString,
        "response_serializer": csds_pb2.ClientStatusResponse.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "FetchClientStatus": grpc.unary_unary_rpc_method_handler(fetch, **codec),
            "StreamClientStatus": grpc.stream_stream_rpc_method_handler(stream, **codec),
        },
    )
