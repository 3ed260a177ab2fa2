"""grpc.health.v1 wiring: NOT_SERVING while loading and draining, SERVING otherwise.

Two servicers hold the same statuses: the asyncio one on the main port, and a
thread-safe one for the health-only port (``--health-port``), which runs on a
gRPC thread pool of its own so that probes are answered even while the event
loop is busy with a burst of large requests.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2
from grpc_health.v1.health import aio as health_aio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServerHealth:
    """Tracks the status of "" (the whole server) and each served service."""

    def __init__(self, services: list[str]):
        self.servicer = health_aio.HealthServicer()
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
