"""The CSDS gRPC service (`envoy.service.status.v3.ClientStatusDiscoveryService`), served
on the xDS port beside ADS: each request is answered from the server's open streams
(`XdsServer._client_configs`, built by `xds_server.csds`), node by node; a node matcher it
cannot evaluate ends the call with INVALID_ARGUMENT and says where and why.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from envoy.service.status.v3 import csds_pb2

from xds_server.csds import MatcherError

SERVICE = "envoy.service.status.v3.ClientStatusDiscoveryService"

Answer = Callable[[csds_pb2.ClientStatusRequest], Iterator[csds_pb2.ClientConfig]]


def handler(answer: Answer) -> grpc.GenericRpcHandler:
    """`FetchClientStatus` (unary) and `StreamClientStatus` (each request answered as it
    arrives, with the state at that moment)."""

    async def fetch(
        request: csds_pb2.ClientStatusRequest, context: Any
    ) -> csds_pb2.ClientStatusResponse:
        response = csds_pb2.ClientStatusResponse()
        try:
            for config in answer(request):
                response.config.append(config)
                # A node's config costs ~5 µs per resource: a fleet's answer would hold
                # the event loop for seconds, so pushes run between nodes.
                await asyncio.sleep(0)
        except MatcherError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return response

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
