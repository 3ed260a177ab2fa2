"""grpc.health.v1 wiring: NOT_SERVING while loading and draining, SERVING otherwise.

Two servicers hold the same statuses: the asyncio one on the main port, and a
thread-safe one for the health-only port (``--health-port``), which runs on a
gRPC thread pool of its own so that probes are answered even while the event
loop is busy with a burst of large requests.

The asyncio servicer is poolstream's own (not grpc_health's) for one reason:
a ``Watch`` stream must end once it has told its watcher NOT_SERVING on
drain. grpc_health's keeps it open, and the server's graceful stop waits for
every open call: one idle watcher held each SIGTERM for the whole grace period.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class AsyncHealthServicer(health_pb2_grpc.HealthServicer):
    """Check and Watch on the event loop; Watch streams end after a drain's NOT_SERVING."""

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": SERVING}
        self._changed: asyncio.Event | None = None  # created by the first waiting watcher
        self._closing = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:200]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        last = None
        while True:
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._closing:
                return  # NOT_SERVING was sent: end the stream, so it does not hold the shutdown
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def set(self, service: str, status: int) -> None:
        if self._closing:
            return
        self._status[service] = status
        self._notify()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; open Watch streams send it and end."""
        if self._closing:
            return
        self._closing = True
        for name in self._status:
            self._status[name] = NOT_SERVING
        self._notify()


class ServerHealth:
    """Tracks the status of "" (the whole server) and each served service."""

    def __init__(self, services: list[str]):
        self.servicer = AsyncHealthServicer()
        self.threaded_servicer = health.HealthServicer()  # for the health-only port
        self.services = ["", *services]

    async def set_all(self, status: int) -> None:
        for name in self.services:
            await self.servicer.set(name, status)
            self.threaded_servicer.set(name, status)

    async def drain(self) -> None:
        # Marks every service NOT_SERVING and ignores later set() calls.
        await self.servicer.enter_graceful_shutdown()
        self.threaded_servicer.enter_graceful_shutdown()
