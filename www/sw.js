// The demo's service worker: it keeps the page, its scripts and the wasm in the Cache API so that
// the demo opens and scores offline once it has been loaded. Network first: online visits get the
// current build, offline ones the copy from the last visit. Model bundles are not its business:
// the guard's worker keeps those itself, checked against their sha256 ("harmaug-bundles-v1").
const CACHE_NAME = "harmaug-demo-v1";
// The module graph behind index.html (trunk keeps these names; the stylesheet's is hashed and
// read from the page).
const SHELL = ["./", "app.js", "harmguard.js", "worker.js", "harmaug-web.js", "harmaug-web_bg.wasm"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const page = await (await fetch("./", { cache: "no-cache" })).text();
      const stylesheets = [...page.matchAll(/<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"/g)].map((m) => m[1]);
      const cache = await caches.open(CACHE_NAME);
      await cache.addAll([...SHELL, ...stylesheets]);
      await self.skipWaiting();
    })(),
  );
});

// Take over the page that registered us, so its first visit is already served (and kept).
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  const shell =
    request.mode === "navigate" || ["script", "style", "worker"].includes(request.destination) || url.pathname.endsWith(".wasm");
  if (request.method !== "GET" || url.origin !== self.location.origin || !shell) return;
  event.respondWith(networkFirst(request));
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE_NAME);
  // A page is kept once, whatever its query (?bundle=…&backend=…).
  const key = request.mode === "navigate" ? new URL("./", request.url).href : request;
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const kept = await cache.match(key, { ignoreSearch: true });
    if (kept) return kept;
    throw error;
  }
}
