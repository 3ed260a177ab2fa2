// The page's two demos, on the server's own HTTP API (no build step, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const e = body.error;
    return typeof e === "string" ? e : (e && e.message) || JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// -- model -------------------------------------------------------------------------
async function showModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (!r.ok) throw new Error(await errorText(r));
    const m = (await r.json()).data[0];
    $("model").textContent = `model ${m.id}` + (m.max_model_len ? `, up to ${m.max_model_len} tokens` : "");
  } catch (e) {
    $("model").textContent = `model: ${e.message}`;
  }
}

// -- texts -> similarity heatmap ---------------------------------------------------------
// Viridis-like ramp: similarity 0..1 -> colour (negative similarities clamp to 0).
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(v) {
  const x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
}

function drawHeatmap(texts, sims) {
  const canvas = $("heatmap"), ctx = canvas.getContext("2d");
  const n = texts.length, label = 180, size = Math.min(440, Math.max(120, n * 60));
  canvas.width = label + size + 20;
  canvas.height = label / 2 + size + 20;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const cell = size / n, top = label / 2;
  ctx.font = "12px system-ui, sans-serif";
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const [r, g, b] = colour(sims[i][j]);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(label + j * cell, top + i * cell, Math.ceil(cell), Math.ceil(cell));
      ctx.fillStyle = sims[i][j] > 0.6 ? "#000" : "#fff";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      if (cell > 28) ctx.fillText(sims[i][j].toFixed(2), label + (j + 0.5) * cell, top + (i + 0.5) * cell);
    }
    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "right";
    const short = texts[i].length > 24 ? `${texts[i].slice(0, 23)}…` : texts[i];
    ctx.fillText(short, label - 6, top + (i + 0.5) * cell);
    ctx.save();
    ctx.translate(label + (i + 0.5) * cell, top - 6);
    ctx.rotate(-Math.PI / 4);
    ctx.textAlign = "left";
    ctx.fillText(`${i + 1}`, 0, 0);
    ctx.restore();
  }
  canvas.dataset.cells = String(n * n);
}

async function compare() {
  const status = $("texts-status"), button = $("compare");
  const texts = $("texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
  if (texts.length < 2) { setStatus(status, "error", "Give at least two texts, one per line."); return; }
  button.disabled = true;
  setStatus(status, "running", `Embedding ${texts.length} texts…`);
  try {
    const t0 = performance.now();
    const r = await fetch("/v1/embeddings", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ input: texts, encoding_format: "float" }),
    });
    if (!r.ok) throw new Error(await errorText(r));
    const body = await r.json();
    const vecs = body.data.sort((a, b) => a.index - b.index).map((d) => {
      const norm = Math.hypot(...d.embedding) || 1;
      return d.embedding.map((v) => v / norm);
    });
    const sims = vecs.map((a) => vecs.map((b) => a.reduce((s, v, k) => s + v * b[k], 0)));
    drawHeatmap(texts, sims);
    setStatus(status, "done", `${texts.length} texts, ${body.usage.prompt_tokens} tokens, ` +
      `${Math.round(performance.now() - t0)} ms`);
  } catch (e) {
    setStatus(status, "error", e.message);
  } finally {
    button.disabled = false;
  }
}

// -- GeoTIFF -> segmentation overlay --------------------------------------------------------
const scene = { look: null, mask: null };

function drawScene() {
  const canvas = $("scene"), ctx = canvas.getContext("2d");
  if (!scene.look) return;
  canvas.width = scene.look.width;
  canvas.height = scene.look.height;
  ctx.putImageData(scene.look, 0, 0);
  if (scene.mask && $("overlay").checked) {
    ctx.globalAlpha = 0.55;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(scene.mask, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
  canvas.dataset.mask = scene.mask ? "drawn" : "none";
}

function base64Of(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function* ndjson(response) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buffered.trim()) yield JSON.parse(buffered);
}

function showLegend(classes) {
  const colours = { land: "rgb(46,139,87)", water: "rgb(30,110,230)", cloud: "rgb(235,235,235)" };
  $("legend").replaceChildren();
  for (const c of classes || []) {
    // textContent, not innerHTML: class names come from the plugin, never markup.
    const span = document.createElement("span"), swatch = document.createElement("i");
    swatch.style.background = colours[c.name] || "#888";
    span.append(swatch, `${c.name} ${(100 * Number(c.fraction)).toFixed(1)}%`);
    $("legend").append(span);
  }
}

async function segment(file) {
  const status = $("geotiff-status"), bar = $("tiles");
  scene.look = scene.mask = null;
  bar.value = 0;
  try {
    setStatus(status, "running", `Reading ${file.name}…`);
    const buffer = await file.arrayBuffer();
    try {
      const image = await TIFF.decode(buffer);
      scene.look = TIFF.quickLook(image, image.bands.length >= 3 ? [2, 1, 0] : [0, 0, 0], 640);
    } catch (e) {  // the server may still read what the quick look cannot
      scene.look = new ImageData(640, 640);
      setStatus(status, "running", `No quick look (${e.message}); segmenting…`);
    }
    drawScene();
    setStatus(status, "running", "Segmenting…");
    const r = await fetch("/pooling/stream", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ data: { geotiff: base64Of(buffer), output_format: "png" } }),
    });
    if (!r.ok) throw new Error(await errorText(r));
    for await (const event of ndjson(r)) {
      if (event.event === "progress") {
        bar.max = Math.max(1, event.total);
        bar.value = event.completed;
        setStatus(status, "running", `Tiles ${event.completed} / ${event.total}`);
      } else if (event.event === "error") {
        throw new Error(event.error.message);
      } else if (event.event === "result") {
        const data = event.data;
        const img = new Image();
        img.src = `data:${data.media_type || "image/png"};base64,${data.data}`;
        await img.decode();
        scene.mask = img;
        drawScene();
        showLegend(data.classes);
        setStatus(status, "done", `${data.width}×${data.height} px, ${data.tile_count} tiles`);
      }
    }
    if (!scene.mask) throw new Error("the stream ended without a result");
  } catch (e) {
    setStatus(status, "error", e.message);
  }
}

// -- wiring ---------------------------------------------------------------------------
$("token").value = localStorage.getItem("poolstream-token") || "";
$("token").addEventListener("change", () => { localStorage.setItem("poolstream-token", $("token").value); showModel(); });
$("compare").addEventListener("click", compare);
$("overlay").addEventListener("change", drawScene);
$("tiff-input").addEventListener("change", (e) => { if (e.target.files[0]) segment(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) segment(e.dataTransfer.files[0]);
});
showModel();
// ?texts=a|b|c runs the similarity demo at once (links, headless checks).
const params = new URLSearchParams(location.search);
if (params.get("texts")) { $("texts").value = params.get("texts").split("|").join("\n"); compare(); }
