// ganime style studio: plain JS, no build step. Every control maps to one query parameter of /api/generate;
// the page URL carries the same parameters, so it is a permalink.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SEED = 4294967295;
let info = null;
let timer = null;

function fmt(v) { return Number(v).toFixed(2); }

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

function fillLayerSelect(select, groups, extra) {
  select.innerHTML = "";
  for (const [name, layers] of Object.entries(groups)) {
    option(select, name, `${name} (${layers[0]}-${layers[layers.length - 1]})`);
  }
  for (const [value, text] of extra) option(select, value, text);
}

function directionSlider(d, value) {
  const label = document.createElement("label");
  label.className = "slider dir";
  const out = document.createElement("output");
  out.textContent = fmt(value);
  const input = document.createElement("input");
  input.type = "range";
  input.min = "-5";
  input.max = "5";
  input.step = "0.25";
  input.value = String(value);
  input.dataset.direction = d.name;
  input.id = "dir-" + d.name;
  label.appendChild(document.createTextNode(d.label + " "));
  if (d.kind === "classifier") {
    const hint = document.createElement("small");
    hint.textContent = `(← less ${d.name} · more ${d.name} →) `;
    label.appendChild(hint);
  }
  label.appendChild(out);
  label.appendChild(input);
  input.addEventListener("input", () => { out.textContent = fmt(input.value); schedule(); });
  return label;
}

// Query string of the current image; defaults are left out so URLs stay short.
function query() {
  const q = new URLSearchParams();
  q.set("seed", String(parseInt($("seed").value || "0", 10)));
  const t = Number($("truncation").value);
  if (t !== 1) q.set("truncation", String(t));
  if (info.supports.noise) {
    const n = Number($("noise").value);
    if (n !== 1) q.set("noise", String(n));
    if ($("noise_layers").value !== "all") q.set("noise_layers", $("noise_layers").value);
    if ($("noise_seed").value !== "") q.set("noise_seed", $("noise_seed").value);
  }
  if (info.supports.mixing && $("mix_seed").value !== "") {
    q.set("mix_seed", $("mix_seed").value);
    q.set("mix_layers", $("mix_layers").value);
  }
  const dirs = [];
  for (const input of document.querySelectorAll("input[data-direction]")) {
    if (Number(input.value) !== 0) dirs.push(`${input.dataset.direction}:${input.value}`);
  }
  if (dirs.length) q.set("directions", dirs.join(","));
  return q;
}

function update() {
  timer = null;
  const q = query();
  const src = "/api/generate?" + q.toString();
  const img = $("image");
  if (img.getAttribute("src") !== src) {
    img.dataset.state = "loading";
    img.setAttribute("src", src);
  }
  $("download").href = src;
  $("download").download = `ganime-seed${q.get("seed")}.png`;
  const page = location.pathname + "?" + q.toString();
  history.replaceState(null, "", page);
  $("permalink").href = page;
  const walk = new URLSearchParams(q);
  walk.delete("mix_seed");
  walk.delete("mix_layers");
  walk.set("seed2", $("mix_seed").value || String((Number(q.get("seed")) + 1) % (MAX_SEED + 1)));
  walk.set("frames", "16");
  walk.set("format", "gif");
  $("walk").href = "/api/interpolate?" + walk.toString();
  const grid = new URLSearchParams(q);
  const s = Number(q.get("seed"));
  grid.delete("seed");
  grid.set("seeds", `${s}-${Math.min(s + 15, MAX_SEED)}`);
  $("grid").href = "/api/grid?" + grid.toString();
}

function schedule() {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(update, 60);
}

async function showError(src) {
  try {
    const r = await fetch(src);
    const body = await r.json();
    const d = body.detail;
    $("error").textContent = `HTTP ${r.status}: ` + (typeof d === "string" ? d : JSON.stringify(d));
  } catch (e) {
    $("error").textContent = "could not load the image: " + e;
  }
  $("error").hidden = false;
}

async function init() {
  const r = await fetch("/api/info");
  info = await r.json();
  $("model").textContent =
    `${info.family} · ${info.resolution} px · edits in ${info.latent_space.toUpperCase()} · ${info.generator}`;
  const params = new URLSearchParams(location.search);
  const num = (k, d) => (params.has(k) && params.get(k) !== "" ? params.get(k) : d);
  $("seed").value = num("seed", "0");
  $("truncation").value = num("truncation", "1");
  $("truncation").disabled = !info.supports.truncation;
  $("noise").value = num("noise", "1");
  $("noise_seed").value = num("noise_seed", "");
  $("mix_seed").value = num("mix_seed", "");
  if (info.supports.noise) {
    fillLayerSelect($("noise_layers"), info.layer_groups, []);
    $("noise_layers").value = num("noise_layers", "all");
  } else {
    $("noise-box").hidden = true;
  }
  if (info.supports.mixing) {
    fillLayerSelect($("mix_layers"), info.layer_groups, []);
    const ml = num("mix_layers", "coarse");
    if (![...$("mix_layers").options].some((o) => o.value === ml)) option($("mix_layers"), ml, ml);
    $("mix_layers").value = ml;
  } else {
    $("mix-box").hidden = true;
  }
  const given = {};
  for (const part of (params.get("directions") || "").split(",")) {
    const [name, value] = part.split(":");
    if (name && value !== undefined) given[name] = Number(value);
  }
  const box = $("directions");
  for (const d of info.directions) box.appendChild(directionSlider(d, given[d.name] || 0));
  $("truncation-value").textContent = fmt($("truncation").value);
  $("noise-value").textContent = fmt($("noise").value);

  for (const id of ["truncation", "noise"]) {
    $(id).addEventListener("input", () => { $(id + "-value").textContent = fmt($(id).value); schedule(); });
  }
  for (const id of ["seed", "noise_seed", "mix_seed", "noise_layers", "mix_layers"]) {
    $(id).addEventListener("change", schedule);
  }
  $("seed").addEventListener("input", schedule);
  $("random").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 1000000));
    schedule();
  });
  $("reset-directions").addEventListener("click", () => {
    for (const input of document.querySelectorAll("input[data-direction]")) {
      input.value = "0";
      input.previousSibling.textContent = fmt(0);
    }
    schedule();
  });
  const img = $("image");
  img.addEventListener("load", () => { img.dataset.state = "loaded"; $("error").hidden = true; });
  img.addEventListener("error", () => { img.dataset.state = "error"; showError(img.getAttribute("src")); });
  update();
}

init().catch((e) => {
  $("error").textContent = "could not start: " + e;
  $("error").hidden = false;
});
