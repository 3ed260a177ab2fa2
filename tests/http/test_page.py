"""The page at / of the HTTP port, run by headless Chromium: both demos, checked on screenshots.

- Texts -> heatmap: the page embeds the texts with /v1/embeddings and draws the
  cosine-similarity matrix; the screenshot of the heatmap must show the
  diagonal at the top of the colour ramp (self-similarity 1) and related pairs
  brighter than unrelated ones.
- GeoTIFF -> segmentation: the page decodes the scene for an RGB quick look,
  streams /pooling/stream (tile progress) and overlays the mask; the screenshot
  with the overlay must differ from the quick look alone over most of the scene
  and show the plugin's class colours.

Screenshots are saved under the test's tmp_path (and kept in
``$POOLSTREAM_SCREENSHOTS`` when set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.http.browser import Browser, goto
from tests.http.conftest import HttpServer

YELLOW = np.array([253, 231, 37])  # the ramp's top: similarity 1
WATER = np.array([30, 110, 230])  # the geotiff plugin's quick-look colour for water


def keep(path: Path) -> None:
    target = os.environ.get("POOLSTREAM_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


@pytest.mark.slow
async def test_similarity_heatmap(http_server: HttpServer, tmp_path: Path):
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply today.",
             "Shares dropped after the earnings report."]
    async with Browser() as page:
        await goto(page, f"{http_server.base_url}/")
        await page.evaluate(f"document.getElementById('texts').value = {texts!r}.join('\\n'); "
                            "document.getElementById('compare').click(); true")
        state = await page.wait_for("['done', 'error'].includes(document.getElementById('texts-status')"
                                    ".dataset.state) && document.getElementById('texts-status').dataset.state")
        status = await page.evaluate("document.getElementById('texts-status').textContent")
        assert state == "done", status
        assert await page.evaluate("document.getElementById('heatmap').dataset.cells") == "16"
        size = await page.evaluate("[document.getElementById('heatmap').width, "
                                   "document.getElementById('heatmap').height]")
        shot = tmp_path / "heatmap.png"
        pixels = (await page.screenshot("#heatmap", shot)).astype(int)
        keep(shot)
    # The drawing's geometry (app.js): labels 180 px wide, 90 px above, n cells of size/n.
    scale = pixels.shape[1] / size[0]
    n, label, top = len(texts), 180, 90
    cell = min(440, max(120, n * 60)) / n

    def cell_colour(i: int, j: int) -> np.ndarray:
        x0, y0 = int((label + j * cell + 4) * scale), int((top + i * cell + 4) * scale)
        x1, y1 = int((label + (j + 1) * cell - 4) * scale), int((top + (i + 1) * cell - 4) * scale)
        block = pixels[y0:y1, x0:x1].reshape(-1, 3)
        return np.median(block, axis=0)  # the printed number is a few pixels of text

    region = pixels[int(top * scale):int((top + n * cell) * scale), int(label * scale):int((label + n * cell) * scale)]
    assert region.std() > 20, "the heatmap region is flat"
    for i in range(n):
        assert np.abs(cell_colour(i, i) - YELLOW).max() <= 12, (i, cell_colour(i, i))
    brightness = {(i, j): cell_colour(i, j).sum() for i in range(n) for j in range(n)}
    assert brightness[(0, 1)] > brightness[(0, 2)] + 30  # cat/kitten above cat/stocks
    assert brightness[(2, 3)] > brightness[(1, 3)] + 30  # stocks/shares above kitten/shares
    assert len({tuple(cell_colour(i, j).astype(int)) for i in range(n) for j in range(n)}) >= 6


@pytest.mark.slow
async def test_geotiff_segmentation_overlay(geotiff_http_server: HttpServer, scene_tif: Path, tmp_path: Path):
    async with Browser() as page:
        await goto(page, f"{geotiff_http_server.base_url}/")
        # Progress events are recorded as the stream arrives (the bar's values over time).
        await page.evaluate("window.progressSeen = []; new MutationObserver(() => progressSeen.push("
                            "document.getElementById('tiles').value)).observe(document.getElementById('tiles'),"
                            " {attributes: true}); true")
        document = await page.send("DOM.getDocument")
        node = await page.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#tiff-input")
        await page.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(scene_tif)])
        state = await page.wait_for("['done', 'error'].includes(document.getElementById('geotiff-status')"
                                    ".dataset.state) && document.getElementById('geotiff-status').dataset.state",
                                    timeout=180)
        status = await page.evaluate("document.getElementById('geotiff-status').textContent")
        assert state == "done", status
        assert await page.evaluate("document.getElementById('scene').dataset.mask") == "drawn"
        tiles = await page.evaluate("[document.getElementById('tiles').value, document.getElementById('tiles').max]")
        assert tiles[0] == tiles[1] >= 1
        with_mask = tmp_path / "geotiff-overlay.png"
        overlay = (await page.screenshot("#scene", with_mask)).astype(int)
        keep(with_mask)
        await page.evaluate("document.getElementById('overlay').click(); true")
        await page.wait_for("document.getElementById('scene').dataset.mask === 'drawn' && "
                            "!document.getElementById('overlay').checked")
        quick = (await page.screenshot("#scene", tmp_path / "geotiff-quicklook.png")).astype(int)
        keep(tmp_path / "geotiff-quicklook.png")
        legend = await page.evaluate("document.getElementById('legend').textContent")
    assert overlay.shape == quick.shape and overlay.shape[0] >= 200
    assert quick.std() > 10, "the quick look is empty"
    changed = np.abs(overlay - quick).sum(axis=2) > 30
    assert changed.mean() > 0.5, f"the mask changes only {changed.mean():.1%} of the scene"
    # Where the overlay tints towards the water colour, the scene has water (and the legend says so).
    towards_water = (overlay[..., 2] - quick[..., 2] > 25) & (np.abs(overlay - WATER).sum(axis=2)
                                                               < np.abs(quick - WATER).sum(axis=2))
    assert towards_water.mean() > 0.01
    assert "water" in legend and "land" in legend
