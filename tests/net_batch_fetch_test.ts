/**
 * Tests of fetching a missing batch from peers (src/net/batch_fetch.ts): the proposer is asked
 * first, a peer that withholds its answer costs only the per-peer timeout, a wrong answer is not
 * taken, and no peer having it gives null. Real HTTP servers on loopback, ports chosen by the OS.
 */
import assert from "node:assert/strict";
import { batchDigest, encodeBatch } from "../src/runtime/mempool.ts";
import { fetchBatchFromPeers } from "../src/net/batch_fetch.ts";

const BATCH = encodeBatch([{ command: new Uint8Array([1, 2, 3]), expires: 9 }]);
const DIGEST = batchDigest(BATCH);

type Behaviour = "serve" | "hang" | "wrong" | "missing";

async function withPeers(
  behaviours: readonly Behaviour[],
  body: (peers: Array<{ publicKey: Uint8Array; url: string }>, asked: number[]) => Promise<void>,
): Promise<void> {
  const asked: number[] = [];
  const release = new AbortController();
  const servers = behaviours.map((b, i) =>
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async () => {
      asked.push(i);
      if (b === "hang") {
        await new Promise((r) => release.signal.addEventListener("abort", r, { once: true }));
        return new Response("late");
      }
      if (b === "missing") return new Response("no", { status: 404 });
      return new Response(
        (b === "serve" ? BATCH : new Uint8Array([0x80])) as Uint8Array<ArrayBuffer>,
      );
    })
  );
  try {
    const peers = servers.map((s, i) => ({
      publicKey: new Uint8Array(32).fill(i + 1),
      url: `http://127.0.0.1:${s.addr.port}`,
    }));
    await body(peers, asked);
  } finally {
    release.abort();
    await Promise.all(servers.map((s) => s.shutdown()));
  }
}

const options = (from: Uint8Array | null, failures: string[] = []) => ({
  signal: AbortSignal.timeout(5_000),
  from,
  peerTimeoutMs: 200,
  bytesMax: 64_000,
  onFailure: (_peer: string, reason: string) => void failures.push(reason),
});

Deno.test("batch fetch: the proposer is asked first; withholding and wrong peers are passed over", async () => {
  await withPeers(["hang", "wrong", "serve", "serve"], async (peers, asked) => {
    const failures: string[] = [];
    const t0 = performance.now();
    const got = await fetchBatchFromPeers(peers, DIGEST, options(null, failures));
    assert.deepEqual(got, BATCH);
    assert.deepEqual(asked, [0, 1, 2], "in order until one serves it");
    assert.equal(failures.length, 2);
    assert.equal(failures[1], "wrong-digest");
    assert.ok(performance.now() - t0 < 2_000, "the withholding peer cost about its timeout");
    asked.length = 0;
    assert.deepEqual(await fetchBatchFromPeers(peers, DIGEST, options(peers[3]!.publicKey)), BATCH);
    assert.deepEqual(asked, [3], "the proposer alone");
  });
});

Deno.test("batch fetch: nobody has it, or the caller's deadline passes: null", async () => {
  await withPeers(["missing", "wrong"], async (peers) => {
    assert.equal(await fetchBatchFromPeers(peers, DIGEST, options(null)), null);
  });
  await withPeers(["hang", "serve"], async (peers) => {
    const o = { ...options(null), signal: AbortSignal.timeout(50), peerTimeoutMs: 1_000 };
    assert.equal(await fetchBatchFromPeers(peers, DIGEST, o), null, "stopped by the deadline");
  });
});
