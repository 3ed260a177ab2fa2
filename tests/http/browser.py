"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol.

A small CDP client on ``websockets``: start the browser with
``--remote-debugging-port=0``, read the port from ``DevToolsActivePort``,
attach to one page (flat sessions) and send commands. Also a PNG decoder for
the screenshots (8-bit RGB/RGBA, the five filters), so tests can check pixels.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1100", "--hide-scrollbars"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is not installed: `make test` installs Debian's chromium (mk/browser.mk)")


class Page:
    """One browser tab: ``await page.send(method, **params)``."""

    def __init__(self, ws: Any, session: str):
        self.ws = ws
        self.session = session
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = asyncio.ensure_future(self._read())
        self.console: list[str] = []

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown"):
                self.console.append(json.dumps(msg.get("params"))[:500])

    async def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 120)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{expression} still false after {timeout}s; console: {self.console[-5:]}")

    async def screenshot(self, selector: str, path: Path) -> np.ndarray:
        """A PNG of one element (saved to ``path``), decoded to an [h, w, 3] uint8 array."""
        rect = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })()")
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={**rect, "scale": 1})
        import base64

        png = base64.b64decode(shot["data"])
        path.write_bytes(png)
        return decode_png(png)[..., :3]


class Browser:
    """``async with Browser() as page:`` a fresh headless Chromium with one page."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="poolstream-chromium-"))
        self.proc: subprocess.Popen | None = None
        self.page: Page | None = None
        self.ws: Any = None

    async def __aenter__(self) -> Page:
        log = open(self.profile / "chromium.log", "wb")
        self.proc = subprocess.Popen([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"], stdout=log, stderr=log)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start:\n{(self.profile / 'chromium.log').read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=1 << 28)
        bootstrap = Page(self.ws, "")
        target = await bootstrap.send("Target.createTarget", session=False, url="about:blank")
        attached = await bootstrap.send("Target.attachToTarget", session=False, targetId=target["targetId"],
                                        flatten=True)
        bootstrap.session = attached["sessionId"]
        self.page = bootstrap
        await bootstrap.send("Page.enable")
        await bootstrap.send("Runtime.enable")
        return bootstrap

    async def __aexit__(self, *exc: Any) -> None:
        if self.page is not None:
            self.page._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


async def goto(page: Page, url: str) -> None:
    await page.send("Page.navigate", url=url)
    await page.wait_for("document.readyState === 'complete' && typeof TIFF !== 'undefined'", timeout=60)


def decode_png(data: bytes) -> np.ndarray:
    """8-bit, non-interlaced truecolour (RGB/RGBA) or greyscale PNG -> [h, w, channels] uint8."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (0, 2, 4, 6), header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, width * channels + 1)
    out = np.zeros((height, width * channels), np.int32)
    prev = np.zeros(width * channels, np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + prev) & 255
        else:
            row = np.zeros_like(line)
            for x in range(len(line)):
                left = row[x - channels] if x >= channels else 0
                if kind == 1:
                    row[x] = (line[x] + left) & 255
                elif kind == 3:
                    row[x] = (line[x] + (left + prev[x]) // 2) & 255
                else:
                    up, ul = prev[x], prev[x - channels] if x >= channels else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                    row[x] = (line[x] + pred) & 255
        out[y] = row
        prev = row
    return out.reshape(height, width, channels).astype(np.uint8)
