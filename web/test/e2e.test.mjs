// End-to-end test of the browser demo (node --test): serves web/dist with `dace web serve`, opens
// the page in Debian's Chromium through playwright-core with WebGPU enabled (SwiftShader, a
// software adapter, on machines without a GPU), asserts a WebGPU adapter was found, regenerates
// the (patch, seed) that `dace web data` regenerated natively on the CPU, and compares the pixels.
// Writes a screenshot and web-e2e.json (adapter, error, timing) to $WEB_E2E_OUT (default
// ../target). Environment: DACE (the dace binary), CHROMIUM (default /usr/bin/chromium).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "..");
const dist = join(web, "dist");
const out = process.env.WEB_E2E_OUT ?? resolve(web, "..", "target");
const dace = process.env.DACE ?? resolve(web, "..", "target", "release", "dace");
const port = 18000 + Math.floor(Math.random() * 1000);

function startServer() {
  const server = spawn(dace, ["web", "serve", "--dir", dist, "--port", String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((ok, fail) => {
    server.stdout.on("data", (d) => { if (String(d).includes("serving")) ok(server); });
    server.on("exit", (code) => fail(new Error(`dace web serve exited with ${code}`)));
  });
}

async function withPage(query, body) {
  const server = await startServer();
  let context;
  try {
    context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "dace-chromium-")), {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"],
    });
    const page = context.pages()[0] ?? await context.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    await page.goto(`http://127.0.0.1:${port}/${query}`);
    await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 540_000 });
    const ready = await page.evaluate(() => document.body.dataset.ready);
    assert.equal(ready, "1", `the page failed: ${await page.textContent("#backend")}\n${logs.join("\n")}`);
    return await body(page);
  } finally {
    await context?.close();
    server.kill();
  }
}

/// Regenerates the expected (patch, seed) three times with the package's settings; returns the
/// last pixels, each time and the max abs error against the native CPU pixels.
async function regenerate(page, expected) {
  const m = JSON.parse(await page.evaluate(() => window.dace.manifest()));
  const runs = [];
  let result;
  for (let i = 0; i < 3; i++) {
    result = await page.evaluate(async ([item, seed, rho, steps, mixup]) => {
      const r = await window.dace.regenerate(item, BigInt(seed), rho, steps, mixup);
      return { pixels: Array.from(r.pixels), ms: r.ms };
    }, [expected.item, expected.seed, m.expansion.rho, m.expansion.steps, m.expansion.mixup !== null]);
    runs.push(result.ms);
  }
  assert.equal(result.pixels.length, expected.pixels.length);
  let maxErr = 0;
  result.pixels.forEach((v, i) => { maxErr = Math.max(maxErr, Math.abs(v - expected.pixels[i])); });
  return { runs, maxErr, pixels: result.pixels.length };
}

const expected = () => JSON.parse(readFileSync(join(dist, "data", "expected.json"), "utf8"));

test("the page regenerates the native CPU expansion on WebGPU", { timeout: 600_000 }, async () => {
  const want = expected();
  await withPage("", async (page) => {
    const backend = await page.evaluate(() => window.dace.backend());
    assert.ok(backend.startsWith("webgpu"), `no WebGPU adapter: ${backend}`);
    const adapter = await page.evaluate(() => window.daceAdapter);
    assert.ok(adapter, "navigator.gpu.requestAdapter() gave no adapter");
    const first = await page.evaluate(() => Number(document.getElementById("timing").textContent.match(/([0-9.]+) ms/)?.[1]));
    const { runs, maxErr, pixels } = await regenerate(page, want);
    mkdirSync(out, { recursive: true });
    await page.screenshot({ path: join(out, "web-e2e.png"), fullPage: true });
    const report = { adapter, backend, max_abs_err: maxErr, ms_first_regeneration: first, ms_per_regeneration: runs,
      pixels, item: want.item, seed: want.seed };
    writeFileSync(join(out, "web-e2e.json"), JSON.stringify(report, null, 1));
    console.log(JSON.stringify(report));
    assert.ok(maxErr <= 1e-3, `max abs error ${maxErr} against the native CPU result`);
  });
});

test("without WebGPU the page says so and computes the same pixels on the CPU", { timeout: 600_000 }, async () => {
  const want = expected();
  await withPage("?cpu", async (page) => {
    const backend = await page.evaluate(() => window.dace.backend());
    assert.ok(backend.startsWith("cpu"), backend);
    const shown = await page.textContent("#backend");
    assert.match(shown, /WebGPU is not available here, so this page computes on the CPU/);
    const { runs, maxErr } = await regenerate(page, want);
    const report = { backend, max_abs_err: maxErr, ms_per_regeneration: runs };
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, "web-e2e-cpu.json"), JSON.stringify(report, null, 1));
    console.log(JSON.stringify(report));
    assert.ok(maxErr <= 1e-3, `max abs error ${maxErr} against the native CPU result`);
  });
});
