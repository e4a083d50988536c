/**
 * The live NodeTree page at `GET /` of every replica's HTTP API: the NodeTree as the original
 * hotstuff-rs README pictures it. Nodes are linked to their parents and coloured by
 * confirmations (none, one, two, committed at three); abandoned branches are drawn faded and
 * dashed until the next commit prunes them; the header shows the current view, its leader, the
 * highest QC and the lock. The page polls `GET /tree` twice a second (polling rather than
 * server-sent events: one bounded request at a time, nothing held open per viewer) and draws a
 * recent window (`?window=N` committed Nodes, at most {@link TREE_WINDOW_MAX}), so thousands of
 * committed Nodes stay readable. One HTML file with inline script and SVG: no build step.
 *
 * | route | answer |
 * |---|---|
 * | `GET /` | the page (`text/html`) |
 * | `GET /tree?window=N` | JSON {@link TreeSnapshot}; `N` in 1..256, default 48 |
 *
 * Refusals: `400 bad-parameter` (a bad `window`), `400 unknown-parameter`, `405
 * method-not-allowed`.
 *
 * @module
 */
import { jsonResponse, readQuery, RouteError } from "../net/http.ts";
import { TREE_WINDOW_MAX, type TreeSnapshot } from "./tree_snapshot.ts";

/** Committed Nodes drawn when `?window` is not given. */
export const TREE_WINDOW_DEFAULT = 48;

/**
 * Answers `GET /` and `GET /tree`, or null for other paths.
 *
 * @example
 * ```ts
 * import { pageRoutes } from "./page.ts";
 * import { RouteError } from "../net/http.ts";
 * const url = new URL("http://127.0.0.1/tree?window=0");
 * try {
 *   pageRoutes(new Request(url), url, () => {
 *     throw new Error("not reached: the parameter is refused first");
 *   });
 * } catch (e) {
 *   console.log(e instanceof RouteError && e.status); // 400
 * }
 * ```
 */
export function pageRoutes(
  request: Request,
  url: URL,
  snapshot: (window: number) => TreeSnapshot,
): Response | null {
  if (url.pathname !== "/" && url.pathname !== "/tree") return null;
  if (request.method !== "GET") {
    throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
  }
  if (url.pathname === "/") {
    readQuery(url.searchParams, ["window"]);
    return new Response(PAGE_HTML, { headers: { "content-type": "text/html; charset=utf-8" } });
  }
  const query = readQuery(url.searchParams, ["window"]);
  const raw = query.get("window");
  let window = TREE_WINDOW_DEFAULT;
  if (raw !== undefined) {
    window = /^[0-9]{1,4}$/.test(raw) ? Number(raw) : NaN;
    if (!(window >= 1 && window <= TREE_WINDOW_MAX)) {
      throw new RouteError(
        400,
        "bad-parameter",
        `window must be 1..${TREE_WINDOW_MAX}: ${JSON.stringify(raw)}`,
      );
    }
  }
  return jsonResponse(snapshot(window), 200);
}

const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>NodeTree</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 18px; margin: 0 0 8px; }
  #state { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-bottom: 8px; }
  #state b { font-weight: 600; }
  code { font: 12px ui-monospace, monospace; }
  .legend span { display: inline-block; margin-right: 14px; }
  .legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px;
    vertical-align: -2px; margin-right: 4px; border: 1px solid #555; }
  #tree { overflow-x: auto; background: #fff; border: 1px solid #ddd; border-radius: 6px; }
  #error { color: #b00020; min-height: 1.2em; }
  .node rect { stroke: #444; stroke-width: 1; }
  .node.abandoned { opacity: 0.45; }
  .node.abandoned rect { stroke: #b00020; stroke-dasharray: 3 2; }
  .node.lock rect { stroke-width: 3; }
  .node text { font: 10px ui-monospace, monospace; text-anchor: middle; pointer-events: none; }
  .edge { stroke: #888; stroke-width: 1.2; fill: none; }
</style>
</head>
<body>
<h1>NodeTree</h1>
<div id="state">loading…</div>
<div class="legend">
  <span><i style="background:#d9d9d9"></i>no confirmation</span>
  <span><i style="background:#f6d365"></i>one (certified)</span>
  <span><i style="background:#f39c4a"></i>two (locked level)</span>
  <span><i style="background:#4caf50"></i>committed (three)</span>
  <span><i style="background:#fff;border-style:dashed;border-color:#b00020"></i>abandoned</span>
  <span><i style="background:#fff;border-width:3px"></i>lock</span>
</div>
<div id="error"></div>
<div id="tree"><svg id="svg" xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg></div>
<script>
"use strict";
const COLORS = ["#d9d9d9", "#f6d365", "#f39c4a", "#4caf50"];
const W = 46, H = 26, GAP_X = 18, GAP_Y = 14, PAD = 10;
const params = new URLSearchParams(location.search);
const windowSize = params.get("window") || "48";
const short = (h) => h.slice(0, 8);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");

function lanes(nodes) {
  // The chain through the highest Node keeps lane 0; every other branch gets its own lane.
  const byHash = new Map(nodes.map((n) => [n.hash, n]));
  const lane = new Map();
  let top = null;
  for (const n of nodes) if (!n.abandoned && (top === null || n.height > top.height)) top = n;
  for (let n = top; n; n = byHash.get(n.parent)) lane.set(n.hash, 0);
  let next = 1;
  for (const n of nodes) {
    if (lane.has(n.hash)) continue;
    const p = byHash.get(n.parent);
    const parentLane = p ? lane.get(p.hash) : undefined;
    const taken = [...lane.entries()].some(([h, l]) => l === parentLane && byHash.get(h).height === n.height);
    lane.set(n.hash, parentLane !== undefined && !taken ? parentLane : next++);
  }
  return lane;
}

function draw(s) {
  document.getElementById("state").innerHTML =
    "<span>view <b id='view'>" + s.view + "</b></span>" +
    "<span>leader <code>" + esc(short(s.leader)) + "</code></span>" +
    "<span>committed height <b id='committed'>" + s.committed.height + "</b></span>" +
    "<span>highest QC: view " + s.highQC.view + " <code>" + esc(short(s.highQC.node)) + "</code></span>" +
    "<span>lock: view " + s.lock.view + " <code>" + esc(short(s.lock.node)) + "</code></span>";
  const nodes = s.nodes;
  if (nodes.length === 0) return;
  const minH = Math.min(...nodes.map((n) => n.height));
  const lane = lanes(nodes);
  const pos = new Map();
  let maxX = 0, maxY = 0;
  for (const n of nodes) {
    const x = PAD + (n.height - minH) * (W + GAP_X), y = PAD + lane.get(n.hash) * (H + GAP_Y);
    pos.set(n.hash, [x, y]);
    maxX = Math.max(maxX, x + W); maxY = Math.max(maxY, y + H);
  }
  let edges = "", boxes = "";
  for (const n of nodes) {
    const [x, y] = pos.get(n.hash);
    const p = n.parent === null ? undefined : pos.get(n.parent);
    if (p) edges += "<path class='edge' d='M" + (p[0] + W) + "," + (p[1] + H / 2) + " L" + x + "," + (y + H / 2) + "'/>";
    const cls = "node" + (n.abandoned ? " abandoned" : "") + (n.hash === s.lock.node ? " lock" : "");
    boxes += "<g class='" + cls + "' data-hash='" + esc(n.hash) + "' data-height='" + n.height +
      "' data-confirmations='" + n.confirmations + "'><title>height " + n.height + ", view " + n.view +
      ", " + n.confirmations + " confirmation(s)\\n" + esc(n.hash) + "</title>" +
      "<rect x='" + x + "' y='" + y + "' width='" + W + "' height='" + H + "' rx='4' fill='" +
      COLORS[n.confirmations] + "'/><text x='" + (x + W / 2) + "' y='" + (y + H / 2 + 3) + "'>" +
      n.height + "</text></g>";
  }
  const svg = document.getElementById("svg");
  svg.setAttribute("width", String(maxX + PAD));
  svg.setAttribute("height", String(maxY + PAD));
  svg.innerHTML = edges + boxes;
  const box = document.getElementById("tree");
  box.scrollLeft = box.scrollWidth;
}

async function poll() {
  try {
    const r = await fetch("/tree?window=" + encodeURIComponent(windowSize), { cache: "no-store" });
    if (!r.ok) throw new Error("GET /tree: " + r.status);
    draw(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "not updating: " + e.message;
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body>
</html>
`;
