// The demo page: fetches a distilled package and its prior (data/index.json lists the files),
// hands the bytes to dace's wasm module and draws what it regenerates. Every number comes from
// the wasm module; this file is only UI.
import init, { Demo } from "./pkg/dace_web.js";

const $ = (id) => document.getElementById(id);

async function fetchAll(base) {
  const index = await (await fetch(`${base}/index.json`)).json();
  const files = new Map();
  await Promise.all(index.files.map(async (name) => {
    const r = await fetch(`${base}/${name}`);
    if (!r.ok) throw new Error(`${name}: HTTP ${r.status}`);
    files.set(name, new Uint8Array(await r.arrayBuffer()));
  }));
  return { index, files };
}

function draw(canvas, rgba, w, h) {
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), w, h), 0, 0);
}

// What the browser says about its WebGPU adapter (wgpu cannot see the name on the web).
async function adapterInfo() {
  if (!navigator.gpu) return null;
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return null;
  const i = adapter.info ?? {};
  return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" / ") || "unnamed adapter";
}

async function main() {
  await init();
  window.daceAdapter = await adapterInfo();
  const params = new URLSearchParams(location.search);
  const useWebgpu = params.get("cpu") === null;
  const { files } = await fetchAll(params.get("data") ?? "data");
  const demo = await Demo.load(files, useWebgpu);
  window.dace = demo; // for the end-to-end test
  const backend = demo.backend();
  $("backend").textContent = backend.startsWith("webgpu")
    ? `Computed on WebGPU, adapter: ${window.daceAdapter ?? backend.slice(8)}`
    : `WebGPU is not available here, so this page computes on the CPU (slower): ${backend}`;
  if (!backend.startsWith("webgpu")) $("backend").classList.add("warn");

  const m = JSON.parse(demo.manifest());
  $("pkg-info").textContent = `${m.dataset}: ${m.classes.length} classes, ${m.items.length} patches of ` +
    `${m.patch_size.join("x")} expanding to ${m.image_size.join("x")}` +
    (m.prior_size ? ` (the prior works at ${m.prior_size.join("x")})` : "") + `, ${m.seeds.length} seeds, ` +
    `expansion ${m.expansion.mode} rho ${m.expansion.rho} steps ${m.expansion.steps}`;
  m.classes.forEach((c, k) => $("class").add(new Option(c, k)));
  $("seed").max = m.seeds.length - 1;
  $("rho").value = m.expansion.rho;
  $("steps").value = m.expansion.steps;
  $("mixup").checked = m.expansion.mixup !== null;

  const patchesOf = (k) => m.items.map((c, i) => [c, i]).filter(([c]) => c === k).map(([, i]) => i);
  const fillPatches = () => {
    $("patch").innerHTML = "";
    patchesOf(Number($("class").value)).forEach((i) => $("patch").add(new Option(`#${i}`, i)));
  };
  const showOutputs = () => {
    $("seed-out").textContent = m.seeds[Number($("seed").value)];
    $("rho-out").textContent = $("rho").value;
    $("steps-out").textContent = $("steps").value;
  };

  async function regenerate() {
    const item = Number($("patch").value);
    const s = Number($("seed").value);
    draw($("patch-canvas"), demo.patch(item), m.patch_size[1], m.patch_size[0]);
    const probs = demo.label(item, s);
    $("label").innerHTML = m.classes.map((c, k) =>
      `<tr><td>${c}</td><td class="bar"><div style="width:${(100 * probs[k]).toFixed(1)}%"></div></td>` +
      `<td>${(100 * probs[k]).toFixed(1)}%</td></tr>`).join("");
    $("timing").textContent = "regenerating…";
    try {
      const r = await demo.regenerate(item, BigInt(m.seeds[s]), Number($("rho").value),
        Number($("steps").value), $("mixup").checked);
      draw($("out-canvas"), r.rgba, r.width, r.height);
      $("timing").textContent = `expansion: ${r.ms.toFixed(1)} ms per regeneration`;
      return r;
    } catch (e) {
      $("timing").textContent = `error: ${e.message ?? e}`;
      throw e;
    }
  }
  window.daceRegenerate = regenerate;

  $("class").onchange = () => { fillPatches(); regenerate(); };
  for (const id of ["patch", "seed", "rho", "steps", "mixup"]) {
    $(id).oninput = () => { showOutputs(); };
    $(id).onchange = () => { regenerate(); };
  }
  $("go").onclick = () => regenerate();
  fillPatches();
  showOutputs();
  await regenerate();
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  $("backend").textContent = `failed: ${e.message ?? e}`;
  $("backend").classList.add("warn");
  document.body.dataset.ready = "error";
  console.error(e);
});
