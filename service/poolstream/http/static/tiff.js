// A small GeoTIFF reader for the page's quick look: the first image of a TIFF
// (classic, not BigTIFF), strips or tiles, chunky or planar, 8/16/32-bit
// integers or 32/64-bit floats, uncompressed, LZW or Deflate (with the
// horizontal predictor). Enough for multispectral scenes; anything else is
// refused with a message. The segmentation itself is done by the server.
"use strict";

const TIFF = (() => {
  const TYPE_SIZES = { 1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8 };

  function readIfd(view, little) {
    const magic = view.getUint16(2, little);
    if (magic === 43) throw new Error("BigTIFF is not supported by the quick look");
    if (magic !== 42) throw new Error("not a TIFF file");
    const ifd = view.getUint32(4, little);
    const count = view.getUint16(ifd, little);
    const tags = {};
    for (let i = 0; i < count; i++) {
      const at = ifd + 2 + i * 12;
      const tag = view.getUint16(at, little), type = view.getUint16(at + 2, little);
      const n = view.getUint32(at + 4, little);
      const size = (TYPE_SIZES[type] || 1) * n;
      const base = size <= 4 ? at + 8 : view.getUint32(at + 8, little);
      const values = [];
      for (let k = 0; k < n && k < 1 << 20; k++) {
        const p = base + k * (TYPE_SIZES[type] || 1);
        switch (type) {
          case 1: case 7: values.push(view.getUint8(p)); break;
          case 2: values.push(view.getUint8(p)); break;
          case 3: values.push(view.getUint16(p, little)); break;
          case 4: values.push(view.getUint32(p, little)); break;
          case 6: values.push(view.getInt8(p)); break;
          case 8: values.push(view.getInt16(p, little)); break;
          case 9: values.push(view.getInt32(p, little)); break;
          case 11: values.push(view.getFloat32(p, little)); break;
          case 12: values.push(view.getFloat64(p, little)); break;
          default: values.push(0);
        }
      }
      tags[tag] = type === 2 ? String.fromCharCode(...values.filter((c) => c !== 0)) : values;
    }
    return tags;
  }

  function lzw(input) {
    // TIFF LZW: MSB-first codes, 9..12 bits, early change.
    const out = [];
    let table = [], bits = 9, pos = 0, prev = null;
    const reset = () => { table = []; for (let i = 0; i < 256; i++) table.push([i]); table.push(null, null); bits = 9; };
    const next = () => {
      let code = 0;
      for (let i = 0; i < bits; i++) {
        const byte = input[(pos + i) >> 3];
        if (byte === undefined) return 257;
        code = (code << 1) | ((byte >> (7 - ((pos + i) & 7))) & 1);
      }
      pos += bits;
      return code;
    };
    reset();
    for (;;) {
      const code = next();
      if (code === 257) break;
      if (code === 256) { reset(); prev = null; continue; }
      let entry;
      if (code < table.length && table[code]) entry = table[code];
      else if (prev) entry = prev.concat(prev[0]);
      else throw new Error("corrupt LZW data");
      for (const b of entry) out.push(b);
      if (prev) table.push(prev.concat(entry[0]));
      prev = entry;
      if (table.length + 1 >= 1 << bits && bits < 12) bits++;
    }
    return new Uint8Array(out);
  }

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function samplesOf(bytes, bits, format, little, count) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const out = new Float64Array(count);
    const step = bits / 8;
    for (let i = 0; i < count; i++) {
      const p = i * step;
      if (p + step > bytes.byteLength) break;
      if (format === 3) out[i] = bits === 32 ? view.getFloat32(p, little) : view.getFloat64(p, little);
      else if (format === 2) out[i] = bits === 8 ? view.getInt8(p) : bits === 16 ? view.getInt16(p, little) : view.getInt32(p, little);
      else out[i] = bits === 8 ? view.getUint8(p) : bits === 16 ? view.getUint16(p, little) : view.getUint32(p, little);
    }
    return out;
  }

  // Decode the first image: {width, height, bands: Float64Array[], nodata}.
  async function decode(buffer) {
    const view = new DataView(buffer);
    const order = view.getUint16(0, false);
    if (order !== 0x4949 && order !== 0x4d4d) throw new Error("not a TIFF file");
    const little = order === 0x4949;
    const t = readIfd(view, little);
    const width = t[256][0], height = t[257][0];
    const spp = (t[277] || [1])[0], bits = (t[258] || [8])[0];
    const format = (t[339] || [1])[0], compression = (t[259] || [1])[0];
    const planar = (t[284] || [1])[0], predictor = (t[317] || [1])[0];
    if (![8, 16, 32, 64].includes(bits)) throw new Error(`${bits}-bit samples are not supported`);
    if (![1, 5, 8, 32946].includes(compression)) throw new Error(`TIFF compression ${compression} is not supported`);
    if (predictor === 3) throw new Error("the floating-point predictor is not supported");
    if (width * height * spp > 4096 * 4096 * 8) throw new Error("the raster is too large for the quick look");
    const tiled = t[322] !== undefined;
    const bw = tiled ? t[322][0] : width;
    const bh = tiled ? t[323][0] : (t[278] || [height])[0];
    const offsets = tiled ? t[324] : t[273], counts = tiled ? t[325] : t[279];
    const across = Math.ceil(width / bw), down = Math.ceil(height / bh);
    const perPlane = across * down;
    const bands = Array.from({ length: spp }, () => new Float64Array(width * height));
    const nodata = t[42113] !== undefined ? parseFloat(t[42113]) : null;
    for (let b = 0; b < offsets.length; b++) {
      let bytes = new Uint8Array(buffer, offsets[b], counts[b]);
      if (compression === 5) bytes = lzw(bytes);
      else if (compression === 8 || compression === 32946) bytes = await inflate(bytes);
      const plane = planar === 2 ? Math.floor(b / perPlane) : 0;
      const block = b % perPlane;
      const bx = (block % across) * bw, by = Math.floor(block / across) * bh;
      const nSamples = planar === 2 ? 1 : spp;
      const rows = tiled ? bh : Math.min(bh, height - by);
      const values = samplesOf(bytes, bits, format, little, bw * rows * nSamples);
      if (predictor === 2) {
        for (let y = 0; y < rows; y++) {
          for (let x = 1; x < bw; x++) {
            for (let s = 0; s < nSamples; s++) {
              const i = (y * bw + x) * nSamples + s;
              values[i] += values[i - nSamples];
              if (format !== 3) {  // integer wrap-around of the sample's width
                const mod = 2 ** bits;
                values[i] = ((values[i] % mod) + mod) % mod;
                if (format === 2 && values[i] >= mod / 2) values[i] -= mod;
              }
            }
          }
        }
      }
      for (let y = 0; y < rows && by + y < height; y++) {
        for (let x = 0; x < bw && bx + x < width; x++) {
          const dst = (by + y) * width + bx + x;
          for (let s = 0; s < nSamples; s++) bands[plane + s][dst] = values[(y * bw + x) * nSamples + s];
        }
      }
    }
    return { width, height, bands, nodata };
  }

  // An RGB quick look (2-98 percentile stretch per band) as ImageData, at most maxSide pixels wide/high.
  function quickLook(image, rgb, maxSide) {
    const { width, height, bands, nodata } = image;
    const scale = Math.max(1, Math.ceil(Math.max(width, height) / maxSide));
    const w = Math.ceil(width / scale), h = Math.ceil(height / scale);
    const out = new ImageData(w, h);
    const stretch = rgb.map((bi) => {
      const band = bands[Math.min(bi, bands.length - 1)];
      const sample = [];
      for (let i = 0; i < band.length; i += Math.max(1, Math.floor(band.length / 20000))) {
        const v = band[i];
        if (Number.isFinite(v) && v !== nodata) sample.push(v);
      }
      sample.sort((a, b) => a - b);
      const lo = sample[Math.floor(sample.length * 0.02)] ?? 0, hi = sample[Math.floor(sample.length * 0.98)] ?? 1;
      return { band, lo, span: hi > lo ? hi - lo : 1 };
    });
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const src = Math.min(height - 1, y * scale) * width + Math.min(width - 1, x * scale);
        const o = (y * w + x) * 4;
        let missing = false;
        stretch.forEach(({ band, lo, span }, c) => {
          const v = band[src];
          if (!Number.isFinite(v) || v === nodata) missing = true;
          out.data[o + c] = Math.max(0, Math.min(255, ((v - lo) / span) * 255));
        });
        out.data[o + 3] = missing ? 0 : 255;
      }
    }
    return out;
  }

  return { decode, quickLook };
})();
