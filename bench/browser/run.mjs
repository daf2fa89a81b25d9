// harmaug's web guard vs transformers.js on the same model in the same headless Chromium.
//
//   node bench/browser/run.mjs --dist dist --harmaug BUNDLE_DIR --onnx ONNX_DIR
//
// BUNDLE_DIR: `harmaug export` of a checkpoint; ONNX_DIR: bench/browser/export_onnx.py of the
// same checkpoint. Prints a markdown table (time to first score, median latency at 32/128/512
// tokens, batch 1, per backend) and the ratio transformers.js / harmaug (> 1: harmaug faster).
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../tests/browser/serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    dist: { type: "string", default: "dist" },
    harmaug: { type: "string" },
    onnx: { type: "string" },
    backends: { type: "string", default: "cpu,webgpu" },
    runs: { type: "string", default: "10" },
    lengths: { type: "string", default: "32,128,512" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
  },
});
const modules = join(here, "node_modules");
const server = await serve({
  "/": args.dist,
  "/bench/": here,
  "/tjs/": join(modules, "@huggingface/transformers/dist"),
  "/ort/": join(modules, "onnxruntime-web/dist"),
  "/models/harmaug/": args.harmaug,
  "/models/onnx/": args.onnx,
});
const browser = await chromium.launch({
  executablePath: args.chromium,
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-dev-shm-usage"],
});
const results = [];
try {
  for (const backend of args.backends.split(",")) {
    for (const engine of ["harmaug", "transformers.js"]) {
      const page = await browser.newPage();
      page.on("console", (m) => m.type() === "error" && console.error(`  [${engine}/${backend}] ${m.text()}`));
      await page.goto(`${server.url}bench/bench.html?engine=${engine}&backend=${backend}&runs=${args.runs}&lengths=${args.lengths}`);
      try {
        const result = await page.evaluate(() => window.benchResults);
        results.push(result);
        console.error(JSON.stringify(result));
      } catch (error) {
        console.error(`${engine} on ${backend} failed: ${error.message.split("\n")[0]}`);
        results.push({ engine, backend, failed: error.message.split("\n")[0] });
      }
      await page.close();
    }
  }
} finally {
  await browser.close();
  server.close();
}

const ms = (x) => (x == null ? "–" : x.toFixed(1));
console.log("| backend | engine (ran on) | first score ms | 32 tok ms | 128 tok ms | 512 tok ms |");
console.log("| --- | --- | ---: | ---: | ---: | ---: |");
for (const r of results) {
  if (r.failed) {
    console.log(`| ${r.backend} | ${r.engine} | failed: ${r.failed} | | | |`);
    continue;
  }
  const l = r.latencyMs;
  console.log(`| ${r.backend} | ${r.engine} (${r.ran}) | ${ms(r.firstScoreMs)} | ${ms(l[32])} | ${ms(l[128])} | ${ms(l[512])} |`);
}
for (const backend of args.backends.split(",")) {
  const [ours, theirs] = ["harmaug", "transformers.js"].map((e) => results.find((r) => r.engine === e && r.backend === backend && !r.failed));
  if (!ours || !theirs) continue;
  const lengths = args.lengths.split(",").map(Number);
  const ratios = lengths.map((n) => (theirs.latencyMs[n] / ours.latencyMs[n]).toFixed(2));
  const agree = lengths.map((n) => Math.abs(theirs.scores[n] - ours.scores[n]).toExponential(1));
  console.log(`\n${backend}: transformers.js latency / harmaug latency at ${lengths.join("/")} tokens = ${ratios.join(" / ")} (> 1: harmaug faster); |Δscore| ${agree.join(" / ")}`);
}
