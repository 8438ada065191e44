// cnnkit serve: the learner's page. Plain JavaScript, no libraries, no network beyond this server.
"use strict";

const MAPS_SHOWN = 32; // feature maps drawn per layer (the API gives more on request)
const POS = [217, 72, 15];
const NEG = [25, 113, 194];

let model = null; // GET /api/model
let currentBlob = null; // the image being explained
let layerViews = {}; // layer name -> {data, scale, canvases: {channel: canvas}, color}
let highlighted = []; // canvases with an outline to clear

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "pad";
  if (!Number.isFinite(v)) return v > 0 ? "+inf" : "-inf";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 0.5 * 10 ** -digits)) return v.toExponential(2);
  return v.toFixed(digits);
}

function notesShape(shape) {
  if (!shape) return "?";
  if (shape.length === 3) return `${shape[1]}×${shape[2]}×${shape[0]}`;
  return shape.join("×");
}

function thousands(n) {
  return n.toLocaleString("en-US");
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

function status(text) {
  $("#status").textContent = text;
}

async function getJSON(url) {
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || `${url}: HTTP ${res.status}`);
  return body;
}

async function postImage(url, fields) {
  const form = new FormData();
  form.append("file", currentBlob, "image.png");
  for (const [k, v] of Object.entries(fields || {})) form.append(k, String(v));
  const res = await fetch(url, { method: "POST", body: form });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || `${url}: HTTP ${res.status}`);
  return body;
}

// ------------------------------------------------------------------------------------------ colours
function diverging(v, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, v / scale)) : 0;
  const c = t >= 0 ? POS : NEG;
  const a = Math.abs(t);
  return [255 + (c[0] - 255) * a, 255 + (c[1] - 255) * a, 255 + (c[2] - 255) * a];
}

function drawGrid(canvas, grid, scale, colour, scaleY) {
  const h = grid.length;
  const w = grid[0].length;
  const sy = scaleY || scale;
  canvas.width = w * scale;
  canvas.height = h * sy;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w * scale, h * sy);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      const rgb = colour(grid[i][j]);
      for (let di = 0; di < sy; di++) {
        let p = ((i * sy + di) * w * scale + j * scale) * 4;
        for (let dj = 0; dj < scale; dj++, p += 4) {
          img.data[p] = rgb[0];
          img.data[p + 1] = rgb[1];
          img.data[p + 2] = rgb[2];
          img.data[p + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
}

function pixelScale(h, w) {
  return Math.max(1, Math.min(12, Math.round(84 / Math.max(h, w))));
}

// ------------------------------------------------------------------------------------------ model
async function loadModel() {
  model = await getJSON("/api/model");
  const size = model.input.image_size;
  $("#model-line").textContent =
    `Model ${model.name}: ${model.layers.filter((l) => !l.container).length} layers, ` +
    `${thousands(model.total_params)} parameters, input ${size[0]}×${size[1]} ${model.input.color}, ` +
    `${model.classes.length} classes.`;
  if (model.input.shape[0] === 1) $("#draw-box").hidden = false;
  loadSamples();
  loadFilters();
}

async function loadSamples() {
  try {
    const body = await getJSON("/api/samples");
    if (!body.samples.length) return;
    const box = $("#samples");
    for (const s of body.samples) {
      const img = el("img", { src: `/api/samples/${s.index}.png`, alt: s.label, title: s.label });
      img.addEventListener("click", async () => {
        document.querySelectorAll("#samples img").forEach((x) => x.classList.remove("chosen"));
        img.classList.add("chosen");
        const blob = await (await fetch(img.src)).blob();
        classify(blob, `sample: ${s.label}`);
      });
      box.append(img);
    }
    $("#samples-box").hidden = false;
  } catch (err) {
    // no samples for this model's data: upload and drawing remain
  }
}

async function loadFilters() {
  if (!model.first_conv) return;
  const body = await getJSON("/api/filters");
  const [f, c] = body.shape;
  const box = $("#filters");
  let scale = 0;
  for (const w of body.weight) for (const ch of w) for (const r of ch) for (const v of r) scale = Math.max(scale, Math.abs(v));
  for (let k = 0; k < Math.min(f, 64); k++) {
    const canvas = el("canvas", { title: `filter ${k}` });
    if (c === 3) {
      // RGB filters: each colour channel's weight mapped to 0..255 around grey
      const grid = body.weight[k][0].map((row, i) =>
        row.map((_, j) => [0, 1, 2].map((ch) => 128 + (127 * body.weight[k][ch][i][j]) / scale)),
      );
      drawGrid(canvas, grid, 8, (v) => v);
    } else {
      drawGrid(canvas, body.weight[k][0], 8, (v) => diverging(v, scale));
    }
    box.append(el("div", { class: "map" }, canvas, el("span", { text: `filter ${k}` })));
  }
  const note = c === 3 ? "colour = the weights of the red, green and blue channels" : "";
  if (note) box.append(el("p", { class: "small muted", text: note }));
  $("#filters-card").hidden = false;
}

// ------------------------------------------------------------------------------------------ classify
async function classify(blob, label) {
  currentBlob = blob;
  showError("");
  $("#explain").hidden = true;
  status(`Classifying ${label}…`);
  $("#original").src = URL.createObjectURL(blob);
  try {
    const pred = await postImage("/api/predict");
    $("#results").hidden = false;
    renderPrediction(pred);
    const input = await postImage("/api/activations", { layer: "input", limit: 3 });
    renderSeen(input);
    await renderNetwork(input);
    status(`Done: ${label}. Click a pixel of a feature map to see its arithmetic.`);
  } catch (err) {
    status("");
    showError(err.message);
  }
}

function renderPrediction(pred) {
  const order = pred.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const box = $("#prediction");
  box.replaceChildren();
  order.forEach(([p, i], rank) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    const bar = el(
      "div",
      { class: rank === 0 ? "bar top" : "bar", "data-class": pred.classes[i], "data-probability": String(p) },
      el("span", { class: "name", text: pred.classes[i] }),
      el("div", { class: "track" }, fill),
      el("span", { class: "p", text: `${(100 * p).toFixed(1)}%` }),
    );
    box.append(bar);
  });
}

function renderSeen(input) {
  const img = input.image; // uint8 (C, H, W)
  const [c, h, w] = [img.length, img[0].length, img[0][0].length];
  const grid = img[0].map((row, i) => row.map((_, j) => (c === 3 ? [img[0][i][j], img[1][i][j], img[2][i][j]] : img[0][i][j])));
  drawGrid($("#resized"), grid, Math.max(1, Math.round(112 / Math.max(h, w))), (v) => (c === 3 ? v : [v, v, v]));
  const norm = model.input.normalize;
  const [lo, hi] = input.ranges[0];
  let scale = 0;
  for (const [a, b] of input.ranges) scale = Math.max(scale, Math.abs(a), Math.abs(b));
  drawGrid($("#normalised"), input.maps[0], Math.max(1, Math.round(112 / Math.max(h, w))), (v) => diverging(v, scale));
  $("#resized-caption").textContent = `${h}×${w} ${model.input.color}, pixels 0…255`;
  let formula = "x / 255";
  if (norm.mode === "symmetric") formula = "x / 127.5 − 1";
  if (norm.mode === "standardize") {
    const m = norm.mean.map((v) => v.toFixed(3)).join(", ");
    const s = norm.std.map((v) => v.toFixed(3)).join(", ");
    formula = `(x / 255 − mean) / std, mean ${m}, std ${s}`;
  }
  $("#normalised-caption").textContent = `normalised${c === 3 ? " (red channel)" : ""}`;
  $("#seen-text").textContent =
    `The network reads numbers, not pixels: each pixel x becomes ${formula} (notes §12, tip 1), ` +
    `here from ${fmt(lo)} to ${fmt(hi)}. Blue is below 0, white 0, orange above.`;
}

async function renderNetwork(input) {
  const box = $("#network");
  box.replaceChildren();
  layerViews = {};
  highlighted = [];
  box.append(layerRow({ name: "input", kind: "Input", output_shape: model.input.shape, params: 0, working: [] }, input));
  for (const layer of model.layers) {
    const row = layerRow(layer, null);
    box.append(row);
  }
  for (const layer of model.layers) {
    const data = await postImage("/api/activations", { layer: layer.name, limit: MAPS_SHOWN });
    fillMaps(layer, data);
  }
}

function layerRow(layer, data) {
  const info = el(
    "div",
    { class: "info" },
    el("div", { class: "title", text: `${layer.name === "input" ? "" : "layer " + layer.name + ": "}${layer.kind}` }),
    el("div", { class: "shape", text: `output ${notesShape(layer.output_shape)}` }),
    el("div", { class: "small", text: layer.params ? `${thousands(layer.params)} parameters` : "no parameters" }),
  );
  if (layer.working && layer.working.length) {
    info.append(el("details", {}, el("summary", { text: "how the size and parameters are computed" }), el("pre", { text: layer.working.join("\n") })));
  }
  const maps = el("div", { class: "maps", "data-layer": layer.name });
  const row = el("div", { class: layer.container ? "layer container" : "layer", id: `layer-${layer.name}` }, info, maps);
  layerViews[layer.name] = { row, maps, layer, canvases: {} };
  if (data) fillMaps(layer, data);
  return row;
}

function layerScale(data) {
  let scale = 0;
  for (const [a, b] of data.ranges) scale = Math.max(scale, Math.abs(a), Math.abs(b));
  return scale;
}

function fillMaps(layer, data) {
  const view = layerViews[layer.name];
  view.data = data;
  view.maps.replaceChildren();
  if (data.vector) {
    const values = data.vector.slice(0, 512);
    const scale = Math.max(Math.abs(data.range[0]), Math.abs(data.range[1]));
    const canvas = el("canvas", { title: `${data.vector.length} numbers` });
    drawGrid(canvas, [values], Math.max(1, Math.min(24, Math.floor(600 / values.length))), (v) => diverging(v, scale), 16);
    const note = data.vector.length > values.length ? ` (first ${values.length} shown)` : "";
    const last = model.layers[model.layers.length - 1].name === layer.name;
    if (last && data.vector.length === model.classes.length) {
      const scores = el("div", { class: "scores small" });
      data.vector.forEach((v, k) => scores.append(el("span", { text: `${model.classes[k]} ${fmt(v, 2)}` })));
      view.maps.append(el("div", { class: "vector" }, canvas, el("span", { class: "small muted", text: "scores (logits), one per class; the softmax turns them into the probabilities above:" }), scores));
      return;
    }
    view.maps.append(el("div", { class: "vector" }, canvas, el("span", { class: "small muted", text: `a vector of ${data.vector.length} numbers${note}, from ${fmt(data.range[0])} to ${fmt(data.range[1])}` })));
    return;
  }
  const scale = layerScale(data);
  const [, h, w] = data.shape;
  const px = pixelScale(h, w);
  view.scale = scale;
  view.px = px;
  const clickable = ["Conv2D", "ReLU", "MaxPool2D", "AvgPool2D", "MinPool2D"].includes(layer.kind) && !layer.container;
  data.maps.forEach((grid, k) => {
    const channel = data.offset + k;
    const canvas = el("canvas", { class: clickable ? "map-canvas clickable" : "map-canvas", "data-layer": layer.name, "data-channel": String(channel) });
    drawGrid(canvas, grid, px, (v) => diverging(v, scale));
    canvas.style.width = `${Math.min(w * px, 112)}px`;
    if (clickable) {
      canvas.addEventListener("click", (ev) => {
        const rect = canvas.getBoundingClientRect();
        const col = Math.min(w - 1, Math.floor(((ev.clientX - rect.left) / rect.width) * w));
        const row = Math.min(h - 1, Math.floor(((ev.clientY - rect.top) / rect.height) * h));
        explain(layer, channel, row, col);
      });
    }
    view.canvases[channel] = canvas;
    view.maps.append(el("div", { class: "map" }, canvas, el("span", { text: `${data.kind === "Input" ? "channel" : "map"} ${channel}` })));
  });
  if (data.channels > data.offset + data.maps.length) {
    const rest = data.channels - data.offset - data.maps.length;
    const more = el("button", { class: "secondary more", type: "button", text: `show the other ${rest} maps` });
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const next = await postImage("/api/activations", { layer: layer.name, offset: data.offset + data.maps.length, limit: 256 });
        fillMaps(layer, { ...data, maps: data.maps.concat(next.maps), ranges: data.ranges.concat(next.ranges) });
      } catch (err) {
        showError(err.message);
        more.disabled = false;
      }
    });
    view.maps.append(more);
  }
}

// ------------------------------------------------------------------------------------------ highlight
function outline(layerName, channel, r0, c0, hgt, wid, colour) {
  const view = layerViews[layerName];
  if (!view || !view.canvases[channel]) return;
  const canvas = view.canvases[channel];
  const ctx = canvas.getContext("2d");
  const px = view.px;
  ctx.lineWidth = 2;
  ctx.strokeStyle = colour;
  if (hgt === 1 && wid === 1) {
    // one pixel: a ring around it, so that it stays visible on small maps
    ctx.strokeRect(c0 * px - 2, r0 * px - 2, px + 4, px + 4);
  } else {
    ctx.strokeRect(c0 * px + 1, r0 * px + 1, wid * px - 2, hgt * px - 2);
  }
  highlighted.push([layerName, channel]);
}

function clearOutlines() {
  for (const [name, channel] of highlighted) {
    const view = layerViews[name];
    const grid = view.data.maps[channel - view.data.offset];
    drawGrid(view.canvases[channel], grid, view.px, (v) => diverging(v, view.scale));
  }
  highlighted = [];
}

// ------------------------------------------------------------------------------------------ explain
async function explain(layer, channel, row, col) {
  showError("");
  let body;
  try {
    body = await postImage("/api/explain", { layer: layer.name, channel, row, col });
  } catch (err) {
    showError(err.message);
    return;
  }
  clearOutlines();
  const panel = $("#explain");
  panel.replaceChildren();
  Object.assign(panel.dataset, { layer: layer.name, channel, row, col });
  panel.append(el("button", { class: "close secondary", text: "close", onclick: () => { panel.hidden = true; clearOutlines(); } }));
  if (body.kind === "conv") renderConv(panel, layer, body);
  else if (body.kind === "pool") renderPool(panel, layer, body);
  else renderRelu(panel, layer, body);
  outline(layer.name, channel, row, col, 1, 1, "#000");
  layerViews[layer.name].row.after(panel);
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}

function gridTable(values, opts = {}) {
  const table = el("table", { class: "grid" });
  values.forEach((rowValues, i) => {
    const tr = el("tr");
    rowValues.forEach((v, j) => {
      const td = el("td", { text: fmt(v, opts.digits || 3) });
      if (opts.role) td.setAttribute("data-role", opts.role);
      if (v !== null && v !== undefined) td.setAttribute("data-value", String(v));
      if (opts.pad && opts.pad(i, j)) td.classList.add("pad");
      if (opts.win && opts.win[0] === i && opts.win[1] === j) td.classList.add("win");
      if (opts.signs && v > 0) td.classList.add("plus");
      if (opts.signs && v < 0) td.classList.add("minus");
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function labelled(label, node) {
  return el("div", {}, el("div", { class: "label", text: label }), node);
}

function sourceName(name) {
  return name === "input" ? "the input" : `layer ${name}`;
}

function renderConv(panel, layer, e) {
  const [f, i, j] = e.position;
  const kh = e.kernel[0].length;
  const kw = e.kernel[0][0].length;
  const [r0, c0] = e.window_origin;
  const [dh, dw] = e.dilation;
  const spanH = dh * (kh - 1) + 1;
  const spanW = dw * (kw - 1) + 1;
  const src = e.input_layer;
  const inputShape = layer.input_shape || [];
  const inH = inputShape[1];
  const inW = inputShape[2];
  const pad = (a, b) => {
    const r = r0 + a * dh;
    const c = c0 + b * dw;
    return inH !== undefined && (r < 0 || c < 0 || r >= inH || c >= inW);
  };
  let padded = false;
  for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) padded = padded || pad(a, b);
  panel.append(el("h2", { text: `One number, explained: layer ${e.layer} (Conv2D), map ${f}, row ${i}, column ${j}` }));
  panel.append(
    el("p", {
      class: "small",
      text:
        `Filter ${f} is a ${kh}×${kw}×${e.window.length} block of learned weights. It lies over rows ${r0}…${r0 + spanH - 1} ` +
        `and columns ${c0}…${c0 + spanW - 1} of ${src ? sourceName(src) : "this layer's input"}` +
        `${src ? " (outlined there)" : ""}. Each input value is multiplied by the weight over it, ` +
        `the products are added up, and the filter's bias is added (notes §3.3, with ${e.window.length} input ` +
        `channel${e.window.length > 1 ? "s" : ""}: one ${kh}×${kw} slice each).` +
        (padded ? " Grey cells lie in the zero padding around the input (notes §3.4)." : ""),
    }),
  );
  const grids = el("div", { class: "grids" });
  const shown = Math.min(e.window.length, 8);
  for (let c = 0; c < shown; c++) {
    const channel = e.input_channels[c];
    grids.append(
      el(
        "div",
        { class: "triple" },
        labelled(`input window, channel ${channel}`, gridTable(e.window[c], { pad })),
        el("span", { class: "op", text: "×" }),
        labelled(`filter ${f}'s weights, channel ${c}`, gridTable(e.kernel[c])),
        el("span", { class: "op", text: "=" }),
        labelled(`products (sum ${fmt(e.channel_sums[c], 4)})`, gridTable(e.products[c], { role: "product", digits: 4, signs: true })),
      ),
    );
  }
  panel.append(grids);
  if (e.window.length > shown) {
    const rest = e.channel_sums.slice(shown);
    const extra = el("p", { class: "small" }, `… and ${rest.length} more input channels, computed the same way; their sums: `);
    rest.forEach((s, k) => {
      extra.append(el("span", { "data-role": "channel-sum", "data-value": String(s), text: fmt(s, 4) + (k < rest.length - 1 ? ", " : "") }));
    });
    panel.append(extra);
  }
  const line = el(
    "div",
    { class: "sum-line" },
    "sum of all products ",
    el("strong", { "data-role": "sum", "data-value": String(e.sum), text: fmt(e.sum, 4) }),
    el("span", { class: "eq", text: "+" }),
    `bias `,
    el("strong", { "data-role": "bias", "data-value": String(e.bias), text: fmt(e.bias, 4) }),
    el("span", { class: "eq", text: "=" }),
    el("strong", { "data-role": "value", "data-value": String(e.value), text: fmt(e.value, 4) }),
  );
  panel.append(line);
  const agree = Math.abs(e.computed - e.value) <= 1e-4 * Math.max(1, Math.abs(e.value));
  panel.append(
    el("p", { class: "small" },
      el("span", { class: agree ? "ok" : "", text: agree ? "✓ " : "✗ " }),
      `this is the number in map ${f} at row ${i}, column ${j} (the layer's own float32 result; the products are shown rounded).`),
  );
  if (e.relu) {
    panel.append(
      el("div", { class: "sum-line" }, `then ReLU (layer ${e.relu.layer}): max(0, ${fmt(e.value, 4)}) `,
        el("span", { class: "eq", text: "=" }),
        el("strong", { "data-role": "relu", "data-value": String(e.relu.value), text: fmt(e.relu.value, 4) }),
        el("span", { class: "small muted", text: e.relu.value > 0 ? "  (positive: passes through)" : "  (negative: becomes 0)" })),
    );
    outline(e.relu.layer, f, i, j, 1, 1, "#000");
  }
  if (src) {
    for (const channel of e.input_channels) outline(src, channel, r0, c0, spanH, spanW, "#f59f00");
  }
}

function renderPool(panel, layer, e) {
  const [c, i, j] = e.position;
  const [r0, c0] = e.window_origin;
  const kh = e.window.length;
  const kw = e.window[0].length;
  const what = { max: "the largest value", min: "the smallest value", avg: "the mean of the values" }[e.pool];
  const section = { max: "§4.2.1", avg: "§4.2.2", min: "§4.2.3" }[e.pool];
  panel.append(el("h2", { text: `One number, explained: layer ${e.layer} (${layer.kind}), map ${c}, row ${i}, column ${j}` }));
  panel.append(
    el("p", {
      class: "small",
      text: `Pooling looks at a ${kh}×${kw} window of map ${c} of ${e.input_layer ? sourceName(e.input_layer) : "its input"} ` +
        `(rows ${r0}…${r0 + kh - 1}, columns ${c0}…${c0 + kw - 1}, outlined there) and keeps ${what} (notes ${section}). ` +
        `It has nothing to learn.`,
    }),
  );
  panel.append(el("div", { class: "grids" }, labelled(`window of map ${c}`, gridTable(e.window, { role: "window", win: e.winner }))));
  const flat = e.window.flat().filter((v) => v !== null);
  panel.append(
    el("div", { class: "sum-line" }, `${e.pool}(${flat.map((v) => fmt(v, 3)).join(", ")}) `,
      el("span", { class: "eq", text: "=" }),
      el("strong", { "data-role": "value", "data-value": String(e.value), text: fmt(e.value, 4) })),
  );
  outline(layer.name, c, i, j, 1, 1, "#000");
  if (e.input_layer) outline(e.input_layer, c, r0, c0, kh, kw, "#f59f00");
}

function renderRelu(panel, layer, e) {
  const [c, i, j] = e.position;
  panel.append(el("h2", { text: `One number, explained: layer ${e.layer} (ReLU), map ${c}, row ${i}, column ${j}` }));
  panel.append(el("p", { class: "small", text: "ReLU keeps positive numbers and turns negative ones into 0 (notes §6.1)." }));
  panel.append(
    el("div", { class: "sum-line" }, `max(0, `, el("strong", { "data-role": "input", "data-value": String(e.input), text: fmt(e.input, 4) }), `) `,
      el("span", { class: "eq", text: "=" }),
      el("strong", { "data-role": "value", "data-value": String(e.value), text: fmt(e.value, 4) })),
  );
  if (e.source) outline(e.source, c, i, j, 1, 1, "#f59f00");
}

// ------------------------------------------------------------------------------------------ drawing
function setupDrawing() {
  const canvas = $("#draw");
  const ctx = canvas.getContext("2d");
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  let drawing = false;
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [((ev.clientX - r.left) / r.width) * canvas.width, ((ev.clientY - r.top) / r.height) * canvas.height];
  };
  canvas.addEventListener("pointerdown", (ev) => {
    drawing = true;
    canvas.setPointerCapture(ev.pointerId);
    ctx.beginPath();
    ctx.moveTo(...at(ev));
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    ctx.lineTo(...at(ev));
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 14;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.stroke();
  });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  $("#draw-clear").addEventListener("click", clear);
  $("#draw-go").addEventListener("click", () => canvas.toBlob((blob) => classify(blob, "your drawing"), "image/png"));
}

window.addEventListener("DOMContentLoaded", () => {
  $("#file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) classify(file, file.name);
  });
  setupDrawing();
  loadModel().catch((err) => showError(err.message));
});
