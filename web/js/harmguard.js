// harmaug's safety guard for web pages. The model runs in a Web Worker (worker.js) on WebGPU or
// the wasm CPU backend, so scoring never freezes the page.
//
//   import { HarmGuard } from "harmaug-web";
//   const guard = await HarmGuard.load({ url: "/models/default/", onProgress: console.log });
//   const { score, unsafe } = await guard.score("How do I pick a lock?");

export class HarmGuard {
  #worker;
  #pending = new Map();
  #nextId = 0;
  #onProgress;

  /** "webgpu" or "cpu": the backend the model runs on. */
  backend = null;
  /** Scores at or above it are `unsafe`: the bundle's calibrated threshold unless given. */
  threshold = 0.5;
  /** The bundle's manifest.json (null when loaded from `files`). */
  manifest = null;
  /** Truncation length in tokens. */
  maxLength = 0;
  /** The labels each Score's `scores` object reports (every label of a multi-label model or
   * one with more than two); empty for a binary guard. */
  labels = [];

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (event) => this.#receive(event.data);
    worker.onerror = (event) => this.#failAll(new Error(`harmaug worker: ${event.message}`));
  }

  /**
   * Loads a bundle written by `harmaug export`.
   * @param {object} options
   * @param {string} [options.url] the bundle's folder (holding manifest.json)
   * @param {object} [options.files] instead of `url`: `config.json`, `tokenizer.json`,
   *   `model.safetensors` (and `tokenizer_config.json` if the model has one) as strings,
   *   ArrayBuffers, Blobs or Files
   * @param {"auto"|"webgpu"|"cpu"} [options.backend] "auto": WebGPU when the browser offers an
   *   adapter, else (and on any WebGPU failure, with a console warning) the CPU
   * @param {(p: {file: string, loaded: number, total: number}) => void} [options.onProgress]
   * @param {number} [options.threshold] default: the bundle's calibrated threshold
   *   (manifest.json `threshold.value`), else 0.5
   * @param {number} [options.maxLength] truncation length; default the model's (≤ 512)
   * @param {"truncate"|"chunk"} [options.longInput] inputs past maxLength: "truncate" (the
   *   default, as transformers) or "chunk" (overlapping windows of maxLength, the highest score)
   * @param {boolean} [options.cache] keep downloaded files in the Cache API (default true)
   * @param {string|URL} [options.workerUrl] where worker.js is served (default: beside this file)
   */
  static async load(options = {}) {
    const { url, files, backend = "auto", onProgress, threshold, maxLength = 0, longInput, cache = true } = options;
    if (!url && !files) throw new Error("HarmGuard.load needs `url` or `files`");
    if (!["auto", "webgpu", "cpu"].includes(backend)) {
      throw new Error(`backend must be "auto", "webgpu" or "cpu", not ${JSON.stringify(backend)}`);
    }
    const workerUrl = options.workerUrl ?? new URL("./worker.js", import.meta.url);
    const guard = new HarmGuard(new Worker(workerUrl, { type: "module" }));
    guard.#onProgress = onProgress;
    const absolute = url ? new URL(url, globalThis.location?.href).href : undefined;
    try {
      const loaded = await guard.#call("load", { url: absolute, files, backend, maxLength, longInput, cache });
      guard.backend = loaded.backend;
      guard.maxLength = loaded.maxLength;
      guard.labels = loaded.labels;
      guard.manifest = loaded.manifest;
      // The worker asked core (the native CLI's rules) for the bundle's operating threshold.
      guard.threshold = threshold ?? loaded.threshold;
      for (const warning of loaded.warnings) console.warn(warning);
    } catch (error) {
      guard.free();
      throw error;
    }
    return guard;
  }

  /** P(unsafe) of a prompt, or of a prompt + response pair. */
  async score(prompt, response) {
    const [result] = await this.scoreBatch([{ prompt, response }]);
    return result;
  }

  /** Scores many rows at once (faster than one by one): [{prompt, response?}] → [{score, unsafe}]
   * (plus `scores`, {label: probability}, when the model reports every label). */
  async scoreBatch(rows) {
    rows.forEach((row, i) => {
      if (typeof row?.prompt !== "string") throw new Error(`row ${i}: prompt must be a string`);
      if (row.response != null && typeof row.response !== "string") {
        throw new Error(`row ${i}: response must be a string, null or absent`);
      }
    });
    const { scores, labelProbabilities } = await this.#call("score", {
      prompts: rows.map((row) => row.prompt),
      responses: rows.map((row) => row.response ?? ""),
    });
    const width = this.labels.length;
    return Array.from(scores, (score, i) => {
      const result = { score, unsafe: score >= this.threshold };
      if (labelProbabilities && width) {
        result.scores = Object.fromEntries(this.labels.map((label, j) => [label, labelProbabilities[i * width + j]]));
      }
      return result;
    });
  }

  /** Stops the worker and releases the model. */
  free() {
    this.#worker?.terminate();
    this.#worker = null;
    this.#failAll(new Error("HarmGuard was freed"));
  }

  #call(op, args) {
    if (!this.#worker) return Promise.reject(new Error("HarmGuard was freed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, op, args });
    });
  }

  #receive(message) {
    if (message.progress) {
      this.#onProgress?.(message.progress);
      return;
    }
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    if (message.ok) pending.resolve(message.result);
    else pending.reject(new Error(message.error));
  }

  #failAll(error) {
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }
}
