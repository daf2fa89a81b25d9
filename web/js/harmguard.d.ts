// Types of harmaug-web's JavaScript API (harmguard.js).

export type Backend = "webgpu" | "cpu";

export interface LoadProgress {
  /** The bundle file being fetched: config.json, tokenizer.json, model.safetensors, … */
  file: string;
  loaded: number;
  total: number;
}

/** The files of a bundle, as text, bytes, Blobs or Files (e.g. from an <input type="file">). */
export interface BundleFiles {
  "config.json": string | ArrayBuffer | Uint8Array | Blob;
  "tokenizer.json": string | ArrayBuffer | Uint8Array | Blob;
  "model.safetensors": ArrayBuffer | Uint8Array | Blob;
  /** Optional, as in the model's folder: decides whether the model gets segment ids. */
  "tokenizer_config.json"?: string | ArrayBuffer | Uint8Array | Blob;
}

export interface LoadOptions {
  /** The bundle's folder (holding manifest.json), as written by `harmaug export`. */
  url?: string;
  /** Instead of `url`: the files themselves (no download, no sha256 check). */
  files?: BundleFiles;
  /** "auto" (default): WebGPU when the browser offers an adapter, else the CPU. */
  backend?: "auto" | Backend;
  onProgress?: (progress: LoadProgress) => void;
  /** Scores at or above it are unsafe. Default: the bundle's calibrated threshold
   * (`manifest.threshold.value`), else 0.5. */
  threshold?: number;
  /** Truncation length in tokens; default the model's (at most 512). */
  maxLength?: number;
  /** Inputs past maxLength: "truncate" (default, as transformers) or "chunk" (overlapping
   * windows of maxLength; the score is the highest window's). */
  longInput?: "truncate" | "chunk";
  /** Keep downloaded files in the Cache API for the next visit. Default true. */
  cache?: boolean;
  /** Where worker.js is served; default beside harmguard.js. */
  workerUrl?: string | URL;
}

export interface Row {
  prompt: string;
  response?: string | null;
}

export interface Score {
  /** P(unsafe). */
  score: number;
  /** score >= threshold. */
  unsafe: boolean;
  /** Every label's probability, when the model reports them (see HarmGuard.labels). */
  scores?: Record<string, number>;
}

export interface Manifest {
  format: "harmaug-bundle";
  format_version: number;
  harmaug_version: string;
  dtype: "f32" | "f16" | "int8";
  max_length: number;
  unsafe_index: number;
  labels: string[];
  files: { name: string; bytes: number; sha256: string }[];
  /** The operating threshold chosen at export (e.g. best F1 on validation data). */
  threshold?: { value: number; chosen_by: string };
}

export class HarmGuard {
  static load(options: LoadOptions): Promise<HarmGuard>;
  /** The backend the model runs on. */
  readonly backend: Backend;
  threshold: number;
  readonly manifest: Manifest | null;
  readonly maxLength: number;
  /** The labels in each Score's `scores`; empty for a binary guard. */
  readonly labels: string[];
  score(prompt: string, response?: string | null): Promise<Score>;
  scoreBatch(rows: Row[]): Promise<Score[]>;
  /** Stops the worker and releases the model. */
  free(): void;
}
