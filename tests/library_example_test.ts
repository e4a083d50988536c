/**
 * The README's library example (a user's own Application as a networked replica), run exactly as
 * printed: the README's code block is `examples/counter/replica.ts` with only the import
 * specifier changed, and four processes of that file form a cluster over real TCP, HTTP and
 * Deno KV.
 *
 * @module
 */
import { assert, assertEquals } from "./support/assert.ts";
import { getStatus, HOST, waitUntil } from "./support/cluster.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const EXAMPLE = `${ROOT}examples/counter/replica.ts`;
const README = `${ROOT}README.md`;

/** The first TypeScript block of README.md that imports the package. */
function readmeLibraryExample(): string {
  const readme = Deno.readTextFileSync(README);
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const block = blocks.find((b) => b.includes("startReplica({"));
  if (block === undefined) throw new Error("README.md has no startReplica example");
  return block;
}

/** Eight consecutive free ports on loopback (the example derives its ports from a base). */
function freeBase(): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const held: Deno.Listener[] = [];
    try {
      for (let i = 0; i < 8; i++) held.push(Deno.listen({ hostname: HOST, port: base + i }));
      return base;
    } catch {
      // taken: try another base
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error("no 8 consecutive free ports");
}

Deno.test("README library example: the code block is examples/counter/replica.ts, import aside", () => {
  const file = Deno.readTextFileSync(EXAMPLE).replace(
    'from "../../mod.ts"',
    'from "jsr:@hotstuff/deno"',
  );
  assertEquals(readmeLibraryExample(), file, "README block vs examples/counter/replica.ts");
  const lines = file.trimEnd().split("\n").length;
  assert(lines <= 50, `the example has ${lines} lines`);
});

Deno.test({
  name: "README library example: 4 processes of it commit over TCP, HTTP and Deno KV and agree",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "hotstuff-counter-" });
    const base = freeBase();
    const children = [0, 1, 2, 3].map((i) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--quiet",
          `--config=${ROOT}deno.json`,
          "--allow-net",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--unstable-kv",
          EXAMPLE,
          String(i),
          String(base),
        ],
        cwd: dir,
        stdout: "piped",
        stderr: "null",
      }).spawn()
    );
    const outputs = children.map((c) => new Response(c.stdout).text());
    try {
      const urls = [0, 1, 2, 3].map((i) => `http://${HOST}:${base + 4 + i}`);
      await waitUntil("every replica commits height 120", async () => {
        const s = await Promise.all(urls.map((u) => getStatus(u)));
        return s.every((x) => x !== null && x.committed.height >= 120);
      }, 60_000);
      const hashes = await Promise.all(urls.map(async (u) => {
        const r = await fetch(`${u}/committed?from=100&to=100`);
        const body = await r.json() as { hash: string }[];
        return body[0]!.hash;
      }));
      assertEquals(new Set(hashes).size, 1, `replicas disagree at height 100: ${hashes}`);
      const metrics = await (await fetch(`${urls[0]}/metrics`)).text();
      assert(/^hotstuff_consensus_height \d+/m.test(metrics), "no height metric");
    } finally {
      for (const c of children) {
        try {
          c.kill("SIGINT");
        } catch {
          // already gone
        }
      }
    }
    const statuses = await Promise.all(children.map((c) => c.status));
    const texts = await Promise.all(outputs);
    await Deno.remove(dir, { recursive: true });
    for (const [i, text] of texts.entries()) {
      assert(text.includes(`replica ${i}: NodeTree page at http://127.0.0.1:`), text);
      assert(text.includes("committed height 100"), `replica ${i} printed: ${text}`);
      assertEquals(statuses[i]!.code, 0, `replica ${i} exit code`);
    }
  },
});
