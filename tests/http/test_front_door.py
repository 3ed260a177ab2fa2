"""HttpFrontDoor itself: several processes' doors on one port, TCP_NODELAY on connections."""

from __future__ import annotations

import asyncio
import socket

from poolstream.http.app import HttpFrontDoor


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_doors_share_a_port_with_reuse_port():
    first = HttpFrontDoor(hello, "127.0.0.1", 0, reuse_port=True, grace_period_s=1)
    port = await first.start()
    second = HttpFrontDoor(hello, "127.0.0.1", port, reuse_port=True, grace_period_s=1)
    try:
        assert await second.start() == port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        assert reply.startswith(b"HTTP/1.1 200") and b"hello" in reply
    finally:
        await second.stop()
        await first.stop()


async def test_connections_have_tcp_nodelay():
    door = HttpFrontDoor(hello, "127.0.0.1", 0, grace_period_s=1)
    port = await door.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.1)
        [conn] = [c for c in door.server.server_state.connections]
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        writer.close()
    finally:
        await door.stop()
