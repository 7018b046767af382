// decaf serve's page: plain JS, no build step. It talks only to the JSON API next to it.
// Text from the server or the user (labels, file names) goes in with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, files: [], selected: -1 };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bar(fraction) {
  const outer = el("div", "bar");
  const inner = el("div");
  inner.style.width = (100 * Math.max(0, Math.min(1, fraction))).toFixed(1) + "%";
  outer.appendChild(inner);
  return outer;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.code + ": " + body.error.message : response.statusText;
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

async function loadModel() {
  const response = await fetch("/v1/model");
  if (!response.ok) { $("model-line").textContent = "model: " + (await errorText(response)); return; }
  const m = await response.json();
  state.model = m;
  const shape = m.input.shape.join("×");
  $("model-line").textContent = m.name + " · input " + shape + " · " + m.params.toLocaleString() +
    " parameters · " + (m.num_classes || "?") + " classes";
  const L = m.limits;
  $("limits-line").textContent = "up to " + L.max_images + " images and " +
    (L.max_upload_bytes / 1048576).toFixed(0) + " MB per request; the images stay in memory only";
  const select = $("layer-select");
  select.textContent = "";
  for (const layer of m.layers) {
    if (!layer.maps) continue;
    const option = el("option", null, layer.layers.join(" + ") + "  (" + layer.shape.join("×") + ")");
    option.value = layer.blob;
    select.appendChild(option);
  }
  $("filters-title").textContent = m.filters ? "Filters of " + m.filters + ", the first layer" : "";
  $("filters").hidden = !m.filters;
}

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

async function classifyFiles(files) {
  files = Array.from(files).filter((f) => f.type === "" || f.type.startsWith("image/"));
  if (!files.length) { $("status").textContent = "no image among the dropped files"; return; }
  const perRequest = state.model ? state.model.limits.max_images : 8;
  $("status").textContent = "classifying " + files.length + " image" + (files.length > 1 ? "s" : "") + "…";
  for (const group of chunks(files, perRequest)) {
    const form = new FormData();
    for (const f of group) form.append("image", f, f.name);
    let response;
    try {
      response = await fetch("/v1/classify?top=5", { method: "POST", body: form });
    } catch (e) {
      $("status").textContent = "the server did not answer: " + e;
      return;
    }
    if (!response.ok) { $("status").textContent = "refused: " + (await errorText(response)); return; }
    const body = await response.json();
    body.results.forEach((r, i) => addCard(group[i], r));
    showTiming(body.timing, group.length);
  }
  $("status").textContent = "";
  $("layers-panel").hidden = false;
}

function addCard(file, result) {
  const index = state.files.length;
  state.files.push(file);
  const card = el("article", "card result");
  card.dataset.index = String(index);
  const img = el("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  card.appendChild(img);
  card.appendChild(el("div", "name", file.name));
  if (result.error) {
    card.appendChild(el("p", "error", result.error.code + ": " + result.error.message));
  } else {
    for (const t of result.top) {
      const row = el("div", "pred");
      const label = el("div", "label");
      label.appendChild(el("span", "class-name", t.name));
      label.appendChild(el("span", "prob", (100 * t.prob).toFixed(1) + " %"));
      row.appendChild(label);
      row.appendChild(bar(t.prob));
      card.appendChild(row);
    }
    card.addEventListener("click", () => select(index));
    if (state.selected < 0) select(index, card);
  }
  $("results").prepend(card);
  if (state.selected === index) card.classList.add("selected");
}

function select(index) {
  state.selected = index;
  for (const card of document.querySelectorAll(".card")) {
    card.classList.toggle("selected", Number(card.dataset.index) === index);
  }
  if (!$("layer-maps").hidden) showLayer();
}

function showTiming(timing, images) {
  $("timing-panel").hidden = false;
  $("timing-line").textContent = images + " image" + (images > 1 ? "s" : "") + " in " +
    timing.total_ms.toFixed(0) + " ms: decoding " + timing.decode_ms.toFixed(0) + " ms, waiting " +
    timing.queue_ms.toFixed(0) + " ms, forward " + timing.forward_ms.toFixed(0) + " ms (this request's share " +
    "of its minibatches, split by layer type as in the DeCAF paper's Figure 3)";
  const chart = $("timing-chart");
  chart.textContent = "";
  const rows = Object.entries(timing.by_group).map(([g, ms]) => [g, ms, false]);
  rows.push(["decode", timing.decode_ms, true], ["queue", timing.queue_ms, true]);
  const max = Math.max(...rows.map((r) => r[1]), 1e-9);
  for (const [name, ms, extra] of rows) {
    const item = el("div", "item" + (extra ? " extra" : ""));
    item.appendChild(el("span", "group", name));
    item.appendChild(bar(ms / max));
    const share = extra ? "" : "  " + (100 * ms / Math.max(timing.forward_ms, 1e-9)).toFixed(0) + " %";
    item.appendChild(el("span", "num", ms.toFixed(1) + " ms" + share));
    chart.appendChild(item);
  }
}

async function showLayer() {
  const file = state.files[state.selected];
  const blob = $("layer-select").value;
  if (!file || !blob) { $("layer-line").textContent = "classify an image first"; return; }
  const form = new FormData();
  form.append("image", file, file.name);
  $("layer-line").textContent = "computing " + blob + "…";
  const response = await fetch("/v1/activations?blob=" + encodeURIComponent(blob), { method: "POST", body: form });
  if (!response.ok) { $("layer-line").textContent = await errorText(response); return; }
  const shape = JSON.parse(response.headers.get("X-Decaf-Shape") || "[]");
  const shown = response.headers.get("X-Decaf-Maps-Shown");
  const img = $("layer-maps");
  const old = img.src;
  img.src = URL.createObjectURL(await response.blob());
  if (old) URL.revokeObjectURL(old);
  img.hidden = false;
  $("layer-line").textContent = blob + " for " + file.name + ": " + shape.join("×") + ", " + shown +
    " of " + shape[0] + " maps shown";
}

function setUpDrop() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => classifyFiles(e.dataTransfer.files));
  $("file-input").addEventListener("change", (e) => { classifyFiles(e.target.files); e.target.value = ""; });
  $("layer-show").addEventListener("click", showLayer);
  $("layer-select").addEventListener("change", () => { if (!$("layer-maps").hidden) showLayer(); });
}

setUpDrop();
loadModel();
