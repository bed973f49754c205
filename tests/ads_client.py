"""A minimal asyncio ADS client for transport-level tests (real gRPC, loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2


class AdsClient:
    def __init__(self, port: int, delta: bool = False):
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        method = (
            self.stub.DeltaAggregatedResources if delta else self.stub.StreamAggregatedResources
        )
        self.call = method(self._requests())
        # Reads run in their own task so a receive timeout does not cancel the RPC.
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                await self.inbox.put(msg)
                if msg is grpc.aio.EOF:
                    return
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            await self.inbox.put(exc)

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            req = await self.queue.get()
            if req is None:
                return
            yield req

    async def send(self, req: Any) -> None:
        await self.queue.put(req)

    async def recv(self, timeout: float = 5.0) -> Any:
        msg = await asyncio.wait_for(self.inbox.get(), timeout)
        if isinstance(msg, BaseException):
            raise msg
        return msg

    async def expect_status(self, timeout: float = 5.0) -> grpc.StatusCode:
        """Read until the stream ends; return its status code."""
        try:
            while True:
                msg = await self.recv(timeout)
                if msg is grpc.aio.EOF:
                    code: grpc.StatusCode = await asyncio.wait_for(self.call.code(), timeout)
                    return code
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    async def close(self) -> None:
        await self.queue.put(None)
        self.call.cancel()
        self._reader.cancel()
        await self.channel.close()


def discovery_request(**kw: Any) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(**kw)
