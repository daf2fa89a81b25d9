// The Web Worker that owns the model: downloads and checks the bundle, loads the wasm guard on
// WebGPU or the CPU, and scores. `harmguard.js` talks to it with messages, so a page never
// blocks while a model loads or scores.
import init, { BundleManifest, WasmGuard, defaultThreshold } from "./harmaug-web.js";

const CACHE_NAME = "harmaug-bundles-v1";
let guard = null;

self.onmessage = async (event) => {
  const { id, op, args } = event.data;
  try {
    const result = await OPS[op](args);
    self.postMessage({ id, ok: true, result });
  } catch (error) {
    self.postMessage({ id, ok: false, error: String(error && error.message ? error.message : error) });
  }
};

const OPS = {
  async load({ url, files, backend, maxLength, longInput, cache }) {
    await init();
    const bundle = files ? await fromFiles(files) : await download(url, cache);
    const warnings = [];
    const order = backend === "auto" ? ((await hasWebGpuAdapter()) ? ["webgpu", "cpu"] : ["cpu"]) : [backend];
    for (const candidate of order) {
      try {
        guard = await WasmGuard.load(
          bundle.config, bundle.tokenizer, bundle.tokenizerConfig, bundle.weights, candidate, maxLength || 0,
          longInput);
        // A first call compiles WebGPU's shaders; fail over now rather than on the user's first score.
        await guard.scoreBatch(["warm-up"], [""]);
        break;
      } catch (error) {
        if (candidate === order[order.length - 1]) throw error;
        // HarmGuard.load prints it on the page's console.
        warnings.push(`harmaug: the ${candidate} backend failed (${error.message || error}); falling back to the CPU`);
        guard = null;
      }
    }
    return {
      backend: guard.backend,
      maxLength: guard.maxLength,
      labels: guard.labels,
      manifest: bundle.manifest,
      threshold: bundle.threshold,
      warnings,
    };
  },

  async score({ prompts, responses }) {
    if (!guard) throw new Error("no model loaded");
    return await guard.scoreBatch(prompts, responses);
  },

  async free() {
    if (guard) guard.free();
    guard = null;
  },
};

async function hasWebGpuAdapter() {
  try {
    return Boolean(self.navigator.gpu && (await self.navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

function progress(file, loaded, total) {
  self.postMessage({ progress: { file, loaded, total } });
}

async function fromFiles(files) {
  const bytes = async (value) =>
    typeof value === "string" ? new TextEncoder().encode(value) : new Uint8Array(await new Response(value).arrayBuffer());
  const weights = files["model.safetensors"] ?? files.weights;
  const config = files["config.json"] ?? files.config;
  const tokenizer = files["tokenizer.json"] ?? files.tokenizer;
  const tokenizerConfig = files["tokenizer_config.json"];
  if (!weights || !config || !tokenizer) {
    throw new Error("files must hold config.json, tokenizer.json and model.safetensors");
  }
  return {
    config: new TextDecoder().decode(await bytes(config)),
    tokenizer: await bytes(tokenizer),
    // Optional: decides whether the model gets segment ids, as in transformers.
    tokenizerConfig: tokenizerConfig ? new TextDecoder().decode(await bytes(tokenizerConfig)) : undefined,
    weights: await bytes(weights),
    manifest: null,
    threshold: defaultThreshold(),
  };
}

// A bundle written by `harmaug export`: manifest.json names every file with its size and sha256;
// core (through wasm) checks the manifest and each file, as the native CLI does.
async function download(url, useCache) {
  const base = new URL(url.endsWith("/") ? url : url + "/", self.location.href);
  const manifestUrl = new URL("manifest.json", base);
  const cache = useCache && self.caches ? await self.caches.open(CACHE_NAME) : null;
  const { manifest, checked } = await fetchManifest(manifestUrl, cache);
  const fetched = {};
  for (const name of checked.fileNames) {
    fetched[name] = await fetchChecked(new URL(name, base), name, checked, cache);
  }
  const threshold = checked.threshold;
  checked.free();
  return {
    config: new TextDecoder().decode(fetched["config.json"]),
    tokenizer: fetched["tokenizer.json"],
    tokenizerConfig: fetched["tokenizer_config.json"] && new TextDecoder().decode(fetched["tokenizer_config.json"]),
    weights: fetched["model.safetensors"],
    manifest,
    threshold,
  };
}

// The manifest, always asked of the server (a new bundle must win), and kept in the cache so
// that without a network (offline, server down) the last one seen still loads the bundle.
async function fetchManifest(manifestUrl, cache) {
  let response;
  try {
    response = await fetch(manifestUrl, { cache: "no-cache" });
  } catch (networkError) {
    const kept = await cache?.match(manifestUrl);
    if (!kept) throw new Error(`${manifestUrl}: ${networkError.message} (and no copy from an earlier visit)`);
    return checkedManifest(manifestUrl, await kept.text());
  }
  if (!response.ok) throw new Error(`${manifestUrl}: HTTP ${response.status}`);
  const text = await response.text();
  const checked = checkedManifest(manifestUrl, text);
  await cache?.put(manifestUrl, new Response(text, { headers: { "content-type": "application/json" } }));
  return checked;
}

// The manifest checked by core (the native CLI's rules), and as plain JSON for the page.
function checkedManifest(manifestUrl, text) {
  try {
    // The page gets the manifest as JSON (dtype, drift) to show; the rules are core's.
    return { checked: new BundleManifest(text), manifest: JSON.parse(text) };
  } catch (error) {
    throw new Error(`${manifestUrl}: ${error.message}`);
  }
}

// One file, from the Cache API when a copy with the manifest's sha256 is there, otherwise
// downloaded with progress, checked against the manifest, then cached.
async function fetchChecked(url, name, checked, cache) {
  const key = `${url.href}#sha256=${checked.fileSha256(name)}`;
  if (cache) {
    const hit = await cache.match(key);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      try {
        checked.check(name, bytes);
        progress(name, bytes.length, bytes.length);
        return bytes;
      } catch {
        await cache.delete(key);
      }
    }
  }
  const response = await fetch(url);
  if (!response.ok || !response.body) throw new Error(`${url}: HTTP ${response.status}`);
  const total = checked.fileBytes(name);
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    progress(name, loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    checked.check(name, bytes);
  } catch (error) {
    throw new Error(`${url}: ${error.message}`);
  }
  if (cache) await cache.put(key, new Response(bytes));
  return bytes;
}
