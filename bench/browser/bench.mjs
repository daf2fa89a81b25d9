// Runs in the page (bench/browser/run.mjs opens it): the same model, the same texts, one
// backend at a time — harmaug's web guard (/harmguard.js from trunk's dist) and transformers.js
// (ONNX Runtime Web). Results land in window.benchResults.
const params = new URLSearchParams(location.search);
const engine = params.get("engine");      // "harmaug" | "transformers.js"
const backend = params.get("backend");    // "cpu" | "webgpu"
const lengths = (params.get("lengths") ?? "32,128,512").split(",").map(Number);
const runs = Number(params.get("runs") ?? 10);

// A text of exactly n tokens with [CLS] and [SEP] for the BERT WordPiece vocabulary: n − 2
// copies of a one-token word.
const textOf = (n) => Array(n - 2).fill("hello").join(" ");
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function harmaug() {
  const { HarmGuard } = await import("/harmguard.js");
  const started = performance.now();
  const guard = await HarmGuard.load({ url: "/models/harmaug/", backend, cache: false });
  await guard.score("first score");
  const firstScore = performance.now() - started;
  return { ran: guard.backend, firstScore, score: async (text) => (await guard.score(text)).score };
}

async function transformersJs() {
  const { env, AutoTokenizer, AutoModelForSequenceClassification } = await import("/tjs/transformers.js");
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = "/models/";
  env.backends.onnx.wasm.wasmPaths = "/ort/";
  const started = performance.now();
  const tokenizer = await AutoTokenizer.from_pretrained("onnx");
  const device = backend === "cpu" ? "wasm" : "webgpu";
  const model = await AutoModelForSequenceClassification.from_pretrained("onnx", { device, dtype: "fp32" });
  const unsafeIndex = Number(Object.entries(model.config.id2label).find(([, l]) => l === "unsafe")?.[0] ?? 1);
  const score = async (text) => {
    const inputs = await tokenizer(text, { truncation: true, max_length: 512 });
    const { logits } = await model(inputs);
    const [a, b] = logits.data;
    const p = 1 / (1 + Math.exp((unsafeIndex ? a - b : b - a)));
    return p;
  };
  await score("first score");
  return { ran: device, firstScore: performance.now() - started, score };
}

window.benchResults = (async () => {
  const guard = engine === "harmaug" ? await harmaug() : await transformersJs();
  const latency = {};
  const scores = {};
  for (const n of lengths) {
    const text = textOf(n);
    await guard.score(text); // warm-up: shapes of this length
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      scores[n] = await guard.score(text);
      times.push(performance.now() - t);
    }
    latency[n] = median(times);
  }
  return { engine, backend, ran: guard.ran, firstScoreMs: guard.firstScore, latencyMs: latency, scores };
})();
