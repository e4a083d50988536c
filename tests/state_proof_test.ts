/**
 * State proofs (src/state/tree.ts, src/light/state_proof.ts): the tree's proofs of presence and
 * absence, chunks checked against a manifest, and key proofs served by a running cluster
 * (`GET /kv/{key}?proof`) that verify from signatures alone against the state root a committed
 * Node carries, while tampered ones are refused with a reason.
 */
import assert from "node:assert/strict";
import {
  decodeKeyProof,
  encodeKeyProof,
  type KeyProof,
  verifyKeyProof,
} from "../src/light/state_proof.ts";
import { LightClient, type SourceRefusal } from "../src/light/client.ts";
import {
  checkChunk,
  EMPTY_STATE_ROOT,
  rootOfChunkHashes,
  SNAPSHOT_CHUNKS,
  StateTree,
  verifyChunk,
  verifyStateProof,
} from "../src/state/tree.ts";
import { decodeChunk, encodeChunk } from "../src/state/chunk.ts";
import { encodeValue } from "../src/codec.ts";
import { ed25519Signer } from "../src/crypto.ts";
import { deriveSecretKey } from "../src/crypto.ts";
import { bytesEqual } from "../src/types.ts";
import { kvStateKey } from "../examples/kv_store/app.ts";
import { startInProcessCluster, waitUntil } from "./support/cluster.ts";

const enc = new TextEncoder();
const k = (s: string): Uint8Array => enc.encode(s);

Deno.test("state tree: the root depends on the state only, not on the order of updates", () => {
  const a = new StateTree();
  const b = new StateTree();
  assert.deepEqual(a.root(), EMPTY_STATE_ROOT);
  for (let i = 0; i < 500; i++) a.apply([[k(`key-${i}`), k(`v${i}`)]]);
  for (let i = 499; i >= 0; i--) b.apply([[k(`key-${i}`), k(`old`)]]);
  for (let i = 0; i < 500; i++) b.apply([[k(`key-${i}`), k(`v${i}`)]]);
  b.apply([[k("gone"), k("x")]]);
  b.apply([[k("gone"), null]]);
  assert.deepEqual(a.root(), b.root());
  assert.equal(b.size, 500);
  b.apply([[k("key-7"), k("changed")]]);
  assert.notDeepEqual(a.root(), b.root());
});

Deno.test("state tree: proofs of presence and absence verify; wrong values, roots and entries are refused", () => {
  const t = new StateTree();
  for (let i = 0; i < 2000; i++) t.apply([[k(`key-${i}`), k(`value-${i}`)]]);
  const v = t.freeze();
  t.apply([[k("key-1"), k("later")]]); // the frozen version does not move
  const p = v.prove(k("key-1"));
  assert.deepEqual(verifyStateProof(v.root, k("key-1"), k("value-1"), p), {
    ok: true,
    value: k("value-1"),
  });
  assert.equal(verifyStateProof(v.root, k("key-1"), k("later"), p).ok, false);
  assert.equal(verifyStateProof(v.root, k("key-1"), null, p).ok, false);
  assert.equal(verifyStateProof(t.root(), k("key-1"), k("value-1"), p).ok, false);
  const absent = v.prove(k("nope"));
  assert.deepEqual(verifyStateProof(v.root, k("nope"), null, absent), { ok: true, value: null });
  assert.equal(verifyStateProof(v.root, k("nope"), k("x"), absent).ok, false);
  // Hiding the entry of a present key to claim its absence breaks the bucket hash.
  const hidden = { ...p, entries: p.entries.filter(([key]) => !bytesEqual(key, k("key-1"))) };
  assert.equal(verifyStateProof(v.root, k("key-1"), null, hidden).ok, false);
  const swapped = { ...p, siblings: [...p.siblings].reverse() };
  assert.equal(verifyStateProof(v.root, k("key-1"), k("value-1"), swapped).ok, false);
  assert.equal(verifyStateProof(v.root, k("key-1"), k("value-1"), { ...p, bucket: 0 }).ok, false);
});

Deno.test("state tree: chunks rebuild the state and each is checked against the manifest", () => {
  const t = new StateTree();
  for (let i = 0; i < 3000; i++) t.apply([[k(`key-${i}`), k(`value-${i}`)]]);
  const v = t.freeze();
  const hashes = v.chunkHashes();
  assert.deepEqual(rootOfChunkHashes(hashes), v.root);
  const rebuilt = new StateTree();
  for (let c = 0; c < SNAPSHOT_CHUNKS; c++) {
    const entries = v.chunk(c);
    assert.equal(checkChunk(c, entries, hashes[c]!), null);
    rebuilt.insertChunk(entries);
  }
  assert.deepEqual(rebuilt.root(), v.root);
  const c = v.chunk(5);
  assert.ok(c.length > 0);
  const changed = c.map((e, i) => (i === 0 ? { key: e.key, value: k("bad") } : e));
  assert.equal(checkChunk(5, changed, hashes[5]!), "chunk hash mismatch");
  assert.equal(checkChunk(5, c.slice(1), hashes[5]!), "chunk hash mismatch");
  assert.equal(checkChunk(6, c, hashes[6]!), "a key outside the chunk");
  assert.equal(checkChunk(5, [...c].reverse(), hashes[5]!) !== null || c.length === 1, true);
  assert.equal(checkChunk(5, [...c, c[0]!], hashes[5]!) !== null, true);
});

Deno.test("state tree: checked chunks are adopted whole, nothing hashed twice, and the tree then moves on", () => {
  const t = new StateTree();
  // Empty buckets, one-entry buckets, and values longer than the short-hash limit.
  for (let i = 0; i < 2000; i++) t.apply([[k(`key-${i}`), k(`value-${i}`.repeat(1 + (i % 40)))]]);
  const v = t.freeze();
  const hashes = v.chunkHashes();
  const adopted = new StateTree();
  for (let c = 0; c < SNAPSHOT_CHUNKS; c++) {
    const r = verifyChunk(c, v.chunk(c), hashes[c]!);
    assert.ok(r.ok, `chunk ${c}`);
    assert.equal(r.chunk.bucketStarts.length, 17);
    assert.equal(r.chunk.bucketStarts[16], r.chunk.entries.length);
    adopted.adoptChunk(r.chunk);
  }
  assert.equal(adopted.size, 2000);
  assert.deepEqual(adopted.root(), v.root);
  assert.deepEqual(adopted.freeze().get(k("key-7")), k("value-7".repeat(8)));
  // Later updates rehash from the adopted buckets as from any others.
  adopted.apply([[k("key-7"), null], [k("new"), k("1")]]);
  t.apply([[k("key-7"), null], [k("new"), k("1")]]);
  assert.deepEqual(adopted.root(), t.root());
  // A chunk whose bucket is already filled is a bug of the caller.
  const again = verifyChunk(0, v.chunk(0), hashes[0]!);
  assert.ok(again.ok);
  assert.throws(() => adopted.adoptChunk(again.chunk), /adoptChunk/);
  // Refusals carry the reason; a key of a later bucket before an earlier one is out of order.
  const c = v.chunk(9);
  const refusal = verifyChunk(9, [...c].reverse(), hashes[9]!);
  assert.ok(!refusal.ok && /order|sorted/.test(refusal.reason), JSON.stringify(refusal));
});

Deno.test("snapshot chunk codec: the same bytes as the general encoder, strict to read", () => {
  const entries = [
    { key: k(""), value: k("") },
    { key: k("a".repeat(23)), value: k("b".repeat(24)) },
    { key: k("c".repeat(255)), value: k("d".repeat(256)) },
    { key: k("e"), value: new Uint8Array(70_000).fill(7) },
  ];
  for (const list of [[], entries, Array.from({ length: 300 }, (_, i) => entries[i % 4]!)]) {
    const bytes = encodeChunk(list);
    assert.deepEqual(bytes, encodeValue(list.map((e) => [e.key, e.value])));
    assert.deepEqual(decodeChunk(bytes), list);
  }
  const one = encodeChunk([entries[1]!]);
  assert.equal(decodeChunk(one.subarray(0, one.length - 1)), null); // cut short
  assert.equal(decodeChunk(new Uint8Array([...one, 0])), null); // trailing byte
  assert.equal(decodeChunk(new Uint8Array([0x98, 1, ...one.subarray(1)])), null); // not shortest
  assert.equal(decodeChunk(new Uint8Array([0x9f, 0xff])), null); // indefinite length
  assert.equal(decodeChunk(new Uint8Array([0x9a, 0xff, 0xff, 0xff, 0xff])), null); // a lying count
  assert.equal(decodeChunk(encodeValue([[k("a"), "text"]])), null); // a value not bytes
  assert.equal(decodeChunk(encodeValue([[k("a"), k("b"), k("c")]])), null); // not a pair
  // Keys and values are views into the answer, not copies.
  const decoded = decodeChunk(one)!;
  assert.equal(decoded[0]!.value.buffer, one.buffer);
});

Deno.test("GET /kv/{key}?proof: a running cluster proves a value and an absence; tampered proofs are refused", async () => {
  const cluster = await startInProcessCluster({
    chainId: "state-proof",
    validators: 4,
    stateCheckpointInterval: 4,
  });
  try {
    const url = cluster.peers[0]!.httpUrl;
    const put = await fetch(`${url}/kv/color`, { method: "PUT", body: "blue" });
    assert.equal(put.status, 200);
    const { height } = await put.json() as { height: number };
    const trust = { chainId: cluster.chainId, validators: cluster.validators };
    let proof: KeyProof | null = null;
    await waitUntil("a provable checkpoint above the write", async () => {
      const r = await fetch(`${url}/kv/color?proof`);
      if (r.status !== 200) {
        await r.body?.cancel();
        return false;
      }
      proof = decodeKeyProof(new Uint8Array(await r.arrayBuffer()));
      return proof.commitProof.nodes[0]!.height >= height;
    }, 30_000);
    const p = proof! as KeyProof;
    const verdict = await verifyKeyProof(p, trust);
    assert.ok(verdict.ok, JSON.stringify(verdict));
    assert.deepEqual(verdict.value, k("blue"));
    assert.deepEqual(p.key, kvStateKey(k("color")));

    let body: Uint8Array | null = null;
    await waitUntil("replica 2 has a provable checkpoint", async () => {
      const r = await fetch(`${cluster.peers[2]!.httpUrl}/kv/nothing-here?proof`);
      if (r.status === 200) body = new Uint8Array(await r.arrayBuffer());
      else await r.body?.cancel();
      return body !== null;
    }, 30_000);
    const none = await verifyKeyProof(decodeKeyProof(body!), trust);
    assert.ok(none.ok && none.value === null);

    // Tampering: another value, another root in the anchoring Node, an anchor cut to one
    // committed Node, signatures under another validator set.
    const refused = async (q: KeyProof, reason: string): Promise<void> => {
      const v = await verifyKeyProof(q, trust);
      assert.equal(v.ok, false);
      assert.equal((v as { reason: string }).reason, reason);
    };
    await refused({ ...p, value: k("red") }, "bad-state-proof");
    await refused({ ...p, value: null }, "bad-state-proof");
    const [first, second, ...rest] = p.commitProof.nodes;
    const otherRoot = { ...second!, stateRoot: new Uint8Array(32) };
    await refused(
      { ...p, commitProof: { ...p.commitProof, nodes: [first!, otherRoot, ...rest] } },
      "not-committed",
    );
    await refused(
      { ...p, commitProof: { ...p.commitProof, nodes: p.commitProof.nodes.slice(1) } },
      "no-state-root",
    );
    await refused(
      { ...p, commitProof: { ...p.commitProof, nodes: p.commitProof.nodes.slice(0, 2) } },
      "not-committed",
    );
    // The light client: a source that rewrites the value is refused, the honest one is used.
    const tamper = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (req) => {
        const u = new URL(req.url);
        const answer = await fetch(`${url}${u.pathname}${u.search}`);
        const body = new Uint8Array(await answer.arrayBuffer());
        if (answer.status !== 200 || !u.pathname.startsWith("/kv/")) {
          return new Response(body, { status: answer.status });
        }
        const forged = encodeKeyProof({ ...decodeKeyProof(body), value: k("red") });
        return new Response(forged as Uint8Array<ArrayBuffer>);
      },
    );
    try {
      const refusals: SourceRefusal[] = [];
      const client = new LightClient({
        ...trust,
        sources: [`http://127.0.0.1:${tamper.addr.port}`, url],
        onRefusal: (r) => refusals.push(r),
      });
      assert.equal(await client.proveState("/kv/color?proof", kvStateKey(k("color"))), null);
      assert.equal(refusals[0]?.reason, "bad-state-proof");
      // A 404 (no commit proof buildable at this instant) is no refusal: asked again.
      let proven = null;
      for (let i = 0; i < 20 && proven === null; i++) {
        proven = await client.proveState("/kv/color?proof", kvStateKey(k("color")));
      }
      assert.deepEqual(proven?.value, k("blue"), JSON.stringify(refusals));
      // A proof of another key than asked is refused too.
      const honestOnly: SourceRefusal[] = [];
      const other = new LightClient({
        ...trust,
        sources: [url],
        onRefusal: (r) => honestOnly.push(r),
      });
      assert.equal(await other.proveState("/kv/color?proof", kvStateKey(k("other"))), null);
      assert.equal(honestOnly[0]?.reason, "bad-answer");
    } finally {
      await tamper.shutdown();
    }

    const { ValidatorSet } = await import("../src/validators.ts");
    const others = new ValidatorSet(
      [0, 1, 2, 3].map((i) => ({
        publicKey: ed25519Signer(deriveSecretKey(`x-${i}`)).publicKey,
        power: 1,
      })),
    );
    const v = await verifyKeyProof(p, { chainId: cluster.chainId, validators: others });
    assert.equal(v.ok, false);
  } finally {
    await cluster.close();
  }
});
