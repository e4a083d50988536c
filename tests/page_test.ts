/**
 * The live NodeTree page (`GET /`), in real headless Chromium (Debian's `chromium`, driven by
 * `playwright-core`): on a 4-replica cluster, new Nodes appear and turn committed without a
 * reload; a screenshot is written to a temporary directory (kept in `HOTSTUFF_SCREENSHOT_DIR`
 * when that is set, else removed with the test's other files). Skipped, saying so, where
 * `/usr/bin/chromium` is missing (`.ci/run` installs it). Also the `/tree` data's own rules.
 *
 * @module
 */
import { chromium } from "playwright-core";
import { assert, assertEquals } from "./support/assert.ts";
import { startInProcessCluster, waitUntil } from "./support/cluster.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

interface DrawnNode {
  hash: string;
  height: number;
  confirmations: number;
}

Deno.test({
  name: "NodeTree page in headless Chromium: 4 replicas; new Nodes appear and turn committed live",
  ignore: !HAS_CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startInProcessCluster({ chainId: "page-test", validators: 4 });
    const profile = await Deno.makeTempDir({ prefix: "hotstuff-chromium-" });
    const keepIn = Deno.env.get("HOTSTUFF_SCREENSHOT_DIR");
    const shots = keepIn ?? await Deno.makeTempDir({ prefix: "hotstuff-page-" });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const url = `${cluster.peers[0]!.httpUrl}/`;
      await page.goto(url);
      await page.waitForSelector("g.node", { timeout: 20_000 });
      const drawn = (): Promise<DrawnNode[]> =>
        page.$$eval("g.node", (els) =>
          els.map((e) => ({
            hash: e.getAttribute("data-hash")!,
            height: Number(e.getAttribute("data-height")),
            confirmations: Number(e.getAttribute("data-confirmations")),
          })));
      // Wait for Nodes that are not committed yet, then watch them turn committed.
      let pending: DrawnNode[] = [];
      await waitUntil("uncommitted Nodes on the page", async () => {
        pending = (await drawn()).filter((n) => n.confirmations < 3);
        return pending.length > 0;
      });
      const before = new Set((await drawn()).map((n) => n.hash));
      const watched = new Set(pending.map((n) => n.hash));
      await waitUntil("a watched Node turns committed on the page", async () => {
        const now = await drawn();
        return now.some((n) => watched.has(n.hash) && n.confirmations === 3);
      });
      await waitUntil("new Nodes appear on the page", async () => {
        return (await drawn()).some((n) => !before.has(n.hash));
      });
      // The page never reloaded: the header's view is text it redrew.
      const view = Number(await page.textContent("#view"));
      assert(view > 0, `view ${view}`);
      const colours = await page.$$eval(
        "g.node rect",
        (els) => [...new Set(els.map((e) => e.getAttribute("fill")))],
      );
      assert(colours.includes("#4caf50"), `committed colour among ${colours}`);
      const shot = `${shots}/nodetree.png`;
      await page.screenshot({ path: shot, fullPage: true });
      const size = (await Deno.stat(shot)).size;
      assert(size > 1000, `screenshot of ${size} bytes`);
      console.log(`screenshot: ${shot}`);
    } finally {
      await context.close();
      await cluster.close();
      await Deno.remove(profile, { recursive: true });
      if (keepIn === undefined) await Deno.remove(shots, { recursive: true });
    }
  },
});

Deno.test("NodeTree data: GET /tree is bounded and typed; committed Nodes chain to their parents", async () => {
  const cluster = await startInProcessCluster({ chainId: "tree-test", validators: 4 });
  try {
    const base = cluster.peers[1]!.httpUrl;
    await waitUntil("commits", async () => {
      const r = await fetch(`${base}/tree?window=8`);
      const s = await r.json() as { committed: { height: number } };
      return s.committed.height > 12;
    });
    const r = await fetch(`${base}/tree?window=8`);
    const s = await r.json() as {
      nodes: { hash: string; parent: string | null; height: number; confirmations: number }[];
      committed: { height: number; hash: string };
      lock: { node: string };
    };
    const committed = s.nodes.filter((n) => n.confirmations === 3);
    assertEquals(committed.length, 8, "window of 8 committed Nodes");
    for (let i = 1; i < committed.length; i++) {
      assertEquals(committed[i]!.parent, committed[i - 1]!.hash, "linked to its parent");
      assertEquals(committed[i]!.height, committed[i - 1]!.height + 1, "consecutive heights");
    }
    assertEquals(committed.at(-1)!.hash, s.committed.hash, "ends at the committed head");
    for (
      const [query, status, reason] of [
        ["/tree?window=0", 400, "bad-parameter"],
        ["/tree?window=257", 400, "bad-parameter"],
        ["/tree?window=abc", 400, "bad-parameter"],
        ["/tree?x=1", 400, "unknown-parameter"],
        ["/tree?window=1&window=2", 400, "duplicate-parameter"],
      ] as const
    ) {
      const bad = await fetch(`${base}${query}`);
      assertEquals(bad.status, status, query);
      assertEquals((await bad.json() as { reason: string }).reason, reason, query);
    }
    const post = await fetch(`${base}/`, { method: "POST", body: "x" });
    assertEquals(post.status, 405, "POST /");
    await post.body?.cancel();
    const html = await fetch(`${base}/`);
    assertEquals(html.headers.get("content-type"), "text/html; charset=utf-8", "page type");
    assert((await html.text()).includes("<svg"), "the page draws SVG");
  } finally {
    await cluster.close();
  }
});
