// A static file server for the built demo (trunk's dist/) and, for benchmarks, more folders
// mounted under URL prefixes: `serve("dist")` or `serve({"/": "dist", "/ort/": "…"})`. Started
// in-process on a free port.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
  ".json": "application/json", ".wasm": "application/wasm", ".svg": "image/svg+xml",
};

export async function serve(roots) {
  // Longest prefix first, so "/models/x/" wins over "/".
  const mounts = Object.entries(typeof roots === "string" ? { "/": roots } : roots).sort(([a], [b]) => b.length - a.length);
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
    const [prefix, root] = mounts.find(([prefix]) => path.startsWith(prefix)) ?? [];
    if (!root) return response.writeHead(404).end();
    let file = normalize(join(root, path.slice(prefix.length)));
    if (!file.startsWith(normalize(root))) return response.writeHead(403).end();
    try {
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const body = await readFile(file);
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "content-length": body.length });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  // close() also drops kept-alive connections, so the server is really gone (offline tests).
  const close = () => {
    if (!server.listening) return;
    server.close();
    server.closeAllConnections();
  };
  return { url: `http://127.0.0.1:${server.address().port}/`, close };
}
