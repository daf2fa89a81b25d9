// End-to-end test of the built demo page in headless Chromium: loads a bundle through the page,
// scores rows through the page's JS API and its form, and compares with native `harmaug score`.
//
//   node tests/browser/e2e.mjs --dist dist --bundle default/ --expected scored.jsonl
//
// `--expected`: `harmaug score --input rows.jsonl` output on the same bundle (rows + `score`).
// Runs on the CPU backend, on WebGPU (headless Chromium offers SwiftShader's adapter with
// --enable-unsafe-webgpu), and with "auto" in a browser with and without a WebGPU adapter (it must
// pick WebGPU, then fall back to the CPU); fails on a wrong backend, any |Δscore| > 1e-3, a
// console error or a page error. Then: a download whose sha256 or size differs from the manifest is
// refused, and the demo reloads and scores with the server gone (offline once loaded).
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";

const { values: args } = parseArgs({
  options: {
    dist: { type: "string", default: "dist" },
    bundle: { type: "string", default: "default/" },
    expected: { type: "string" },
    backends: { type: "string", default: "cpu,webgpu,auto,auto-without-webgpu" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    tolerance: { type: "string", default: "1e-3" },
  },
});
const tolerance = Number(args.tolerance);
const expected = readFileSync(args.expected, "utf8").trim().split("\n").map((line) => JSON.parse(line));
const rows = expected.map(({ prompt, response }) => (response == null ? { prompt } : { prompt, response }));
if (rows.length < 20) throw new Error(`${args.expected}: ${rows.length} rows; the test wants at least 20`);

const server = await serve(args.dist);
const launch = (webgpu) =>
  chromium.launch({
    executablePath: args.chromium,
    args: [...(webgpu ? ["--enable-unsafe-webgpu"] : []), "--no-sandbox", "--disable-dev-shm-usage"],
  });
const browsers = { webgpu: await launch(true), plain: await launch(false) };
// What each case asks the page for, in which browser, which backend must run, and what it
// scores: "all" = every row through the JS API, one through the form, all through the batch
// table; "api" = no batch table (WebGPU here is a software adapter: slow); "form" = one prompt.
const CASES = {
  cpu: ["cpu", "webgpu", "cpu", "all"],
  webgpu: ["webgpu", "webgpu", "webgpu", "api"],
  auto: ["auto", "webgpu", "webgpu", "form"],
  "auto-without-webgpu": ["auto", "plain", "cpu", "form"],
};
let failed = false;
// A new page (its own context: storage, caches, service workers) whose console errors and page
// errors are collected, and the demo's address for a backend.
async function watchedPage(browser) {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  return { page, problems };
}
const demoUrl = (backend) => `${server.url}?bundle=${encodeURIComponent(args.bundle)}&backend=${backend}`;
try {
  for (const name of args.backends.split(",")) {
    const [backend, browserName, want, scope] = CASES[name];
    const { page, problems } = await watchedPage(browsers[browserName]);
    const started = Date.now();
    await page.goto(demoUrl(backend));
    await page.waitForSelector(`body[data-ready]`, { timeout: 300_000 });
    const ran = await page.evaluate(() => document.body.dataset.ready);
    const adapter = await page.evaluate(async () => {
      const info = (await navigator.gpu?.requestAdapter())?.info;
      return info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unnamed" : "none";
    });
    const loadSeconds = (Date.now() - started) / 1000;
    // The bundle's files are kept in the Cache API for the next visit.
    const cached = await page.evaluate(async () => (await (await caches.open("harmaug-bundles-v1")).keys()).length);

    // The JS API, as a web developer calls it.
    const results = scope === "form" ? [] : await page.evaluate(async (rows) => window.harmaug.guard.scoreBatch(rows), rows);
    const scores = results.map((r) => r.score);
    const diffs = scores.map((score, i) => Math.abs(score - expected[i].score));
    // Verdicts at the bundle's threshold, as native gives them.
    const verdictsDiffer = results.filter((r, i) => r.unsafe !== expected[i].unsafe).length;
    const worst = Math.max(0, ...diffs);

    // The form: a prompt typed into the page shows its score.
    const pick = expected.findIndex((row) => row.response == null && row.prompt.length > 10);
    await page.fill("#prompt", expected[pick].prompt);
    await page.fill("#response", "");
    await page.waitForFunction((want) => Math.abs(Number(document.getElementById("score").textContent) - want) < 1e-3, expected[pick].score, { timeout: 300_000 });
    const verdict = await page.textContent("#verdict");
    // The verdict at the bundle's calibrated threshold, which native `harmaug score` uses too.
    const wantVerdict = expected[pick].unsafe ? "unsafe" : "safe";
    const threshold = await page.evaluate(() => window.harmaug.guard.threshold);
    const manifestThreshold = await page.evaluate(() => window.harmaug.guard.manifest?.threshold?.value ?? 0.5);
    const sliderStart = Number(await page.inputValue("#threshold"));
    const thresholdOk = threshold === manifestThreshold && Math.abs(sliderStart - threshold) <= 0.0005;
    // The threshold slider moves the verdict without rescoring.
    const slide = async (value) => {
      await page.evaluate((v) => {
        const slider = document.getElementById("threshold");
        slider.value = String(v);
        slider.dispatchEvent(new Event("input"));
      }, value);
      return page.textContent("#verdict");
    };
    // The slider moves in steps of 0.001: go a few steps past the score either way.
    const sliderOk = (await slide(expected[pick].score + 0.005)) === "safe" && (await slide(expected[pick].score - 0.005)) === "unsafe";
    await slide(threshold);

    // Many rows pasted as JSONL come back as a table.
    if (scope === "all") {
      await page.fill("#batch-input", rows.map((row) => JSON.stringify(row)).join("\n"));
      await page.click("#batch-run");
      await page.waitForFunction((n) => document.querySelectorAll("#batch-table tbody tr").length === n, rows.length, { timeout: 300_000 });
    }

    const ok = ran === want && sliderOk && thresholdOk && verdictsDiffer === 0 && cached >= 3 && worst <= tolerance && verdict === wantVerdict && problems.length === 0;
    failed ||= !ok;
    console.log(
      `${ok ? "ok  " : "FAIL"} ${name}: ran on ${ran} (want ${want}; WebGPU adapter: ${adapter}), loaded in ${loadSeconds.toFixed(1)} s, ${cached} files cached, ` +
        `${scores.length} rows via the API, max |Δscore| vs native ${worst.toExponential(2)} (≤ ${tolerance}), ${verdictsDiffer} verdicts differ, form verdict ${verdict} (want ${wantVerdict}; threshold ${threshold}, manifest ${manifestThreshold}, slider at ${sliderStart}), slider ${sliderOk ? "ok" : "WRONG"}, ` +
        `${((Date.now() - started) / 1000).toFixed(0)} s in all`,
    );
    for (const problem of problems) console.log(`     ${problem}`);
    diffs.forEach((d, i) => d > tolerance && console.log(`     row ${i}: browser ${scores[i]} vs native ${expected[i].score}`));
    await page.close();
  }

  // A download that does not match the manifest (its sha256, its size) is refused with the file
  // named, by core's check (Manifest::check_file, the native CLI's), through wasm.
  const lies = [
    ["sha256", "model.safetensors", (file) => (file.sha256 = "0".repeat(64)),
      /model\.safetensors: sha256 [0-9a-f]{64} where the manifest lists 0{64}: the bundle is damaged or was altered/],
    ["size", "tokenizer.json", (file) => (file.bytes += 1),
      /tokenizer\.json: (\d+) bytes where the manifest lists (\d+): the bundle is damaged or was altered/],
  ];
  for (const [what, name, lie, expected] of lies) {
    const page = await browsers.plain.newPage();
    await page.route("**/manifest.json", async (route) => {
      const manifest = await (await route.fetch()).json();
      for (const file of manifest.files) if (file.name === name) lie(file);
      await route.fulfill({ json: manifest });
    });
    await page.goto(demoUrl("cpu"));
    await page.waitForFunction(() => document.getElementById("load-status").textContent.startsWith("failed"), null, { timeout: 120_000 });
    const status = await page.textContent("#load-status");
    const ok = expected.test(status);
    failed ||= !ok;
    console.log(`${ok ? "ok  " : "FAIL"} a download whose ${what} differs from the manifest refused: ${status}`);
    await page.close();
  }

  // A manifest that breaks core's rules (a threshold no verdict can use) is refused by the same
  // check the native CLI runs (core's Manifest::parse, called from the worker through wasm).
  {
    const page = await browsers.plain.newPage();
    await page.route("**/manifest.json", async (route) => {
      const manifest = await (await route.fetch()).json();
      manifest.threshold = { value: 1.5, chosen_by: "e2e test" };
      await route.fulfill({ json: manifest });
    });
    await page.goto(demoUrl("cpu"));
    await page.waitForFunction(() => document.getElementById("load-status").textContent.startsWith("failed"), null, { timeout: 120_000 });
    const status = await page.textContent("#load-status");
    const ok = /manifest\.json: .*threshold 1\.5 is not strictly between 0 and 1/.test(status);
    failed ||= !ok;
    console.log(`${ok ? "ok  " : "FAIL"} manifest with threshold 1.5 refused: ${status}`);
    await page.close();
  }

  // Offline once loaded: a first visit online; then the server goes away, and a reload still opens
  // the demo and scores (page, scripts and wasm from the service worker, the bundle from the
  // guard's cache). Last, because the server does not come back.
  {
    const { page, problems } = await watchedPage(browsers.plain);
    try {
      await page.goto(demoUrl("cpu"));
      await page.waitForSelector("body[data-ready]", { timeout: 300_000 });
      await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 60_000 });
      server.close();
      const refused = await page.evaluate(async (url) => fetch(url).then(() => "reachable", () => "unreachable"), `${server.url}manifest-probe`);
      await page.reload();
      await page.waitForSelector("body[data-ready]", { timeout: 300_000 });
      const results = await page.evaluate(async (rows) => window.harmaug.guard.scoreBatch(rows), rows);
      const worst = Math.max(...results.map((r, i) => Math.abs(r.score - expected[i].score)));
      // The reload's own failed requests to the server are expected; nothing else may complain.
      const unexpected = problems.filter((p) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(p));
      const ok = refused === "unreachable" && worst <= tolerance && unexpected.length === 0;
      failed ||= !ok;
      console.log(`${ok ? "ok  " : "FAIL"} offline after a first visit: server ${refused}, reload scored ${results.length} rows, max |Δscore| vs native ${worst.toExponential(2)}`);
      for (const problem of unexpected) console.log(`     ${problem}`);
    } catch (error) {
      failed = true;
      console.log(`FAIL offline after a first visit: ${error.message.split("\n")[0]}`);
      for (const problem of problems) console.log(`     ${problem}`);
    }
    await page.close();
  }
} finally {
  await Promise.all(Object.values(browsers).map((b) => b.close()));
  server.close();
}
process.exit(failed ? 1 : 0);
