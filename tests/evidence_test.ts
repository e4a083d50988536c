/**
 * Evidence of equivocation (SPECIFICATION.md 16): verification and its refusals, the encoding,
 * the bounded stores (the Deno KV one across a reopen), the simulator's Byzantine double-voter
 * and equivocator turning into verified records at honest replicas, and the bounded HTTP route.
 */
import assert from "node:assert/strict";
import { genesisQC, nodeHash, signedBytes } from "../src/codec.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier, type Signer } from "../src/crypto.ts";
import {
  decodeEvidence,
  DenoKvEvidenceStore,
  encodeEvidence,
  type EquivocationEvidence,
  evidenceOffender,
  type EvidenceStore,
  MemoryEvidenceStore,
  verifyEvidence,
} from "../src/evidence.ts";
import { EVIDENCE_PAGE_MAX, NodeTreeHttpApi, type NodeTreeView } from "../src/net/http.ts";
import { quietFaults } from "../src/testing/scenario.ts";
import { runSimulation } from "../src/testing/sim.ts";
import type { Node, ProposeMessage, VoteMessage } from "../src/types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";

const CHAIN = "evidence-test";
const SIGNERS = [0, 1, 2, 3].map((i) => ed25519Signer(deriveSecretKey(`evidence-${i}`)));
const SET = new ValidatorSet(SIGNERS.map((s) => ({ publicKey: s.publicKey, power: 1 })));
const CONTEXT = { chainId: CHAIN, validators: SET, verifier: ed25519Verifier() };

async function vote(s: Signer, view: number, fill: number, chain = CHAIN): Promise<VoteMessage> {
  const hash = new Uint8Array(32).fill(fill);
  const signature = await s.sign(signedBytes(SignatureDomain.vote, chain, view, hash));
  return { type: "vote", view, nodeHash: hash, signer: s.publicKey, signature };
}

async function proposal(s: Signer, view: number, command: number): Promise<ProposeMessage> {
  const node: Node = {
    view,
    height: 1,
    parent: new Uint8Array(32),
    justify: genesisQC(CHAIN),
    command: new Uint8Array([command]),
    configHash: new Uint8Array(32),
    proposer: s.publicKey,
    stateRoot: new Uint8Array(0),
  };
  const sig = await s.sign(signedBytes(SignatureDomain.propose, CHAIN, view, nodeHash(node)));
  return { type: "propose", node, tc: null, signature: sig };
}

type DoubleVote = Extract<EquivocationEvidence, { kind: "double-vote" }>;

async function doubleVote(s = SIGNERS[2]!, view = 7): Promise<DoubleVote> {
  return { kind: "double-vote", first: await vote(s, view, 1), second: await vote(s, view, 2) };
}

async function refusal(e: EquivocationEvidence): Promise<string> {
  const v = await verifyEvidence(e, CONTEXT);
  return v.ok ? "accepted" : v.reason;
}

Deno.test("16.1: a double vote and a double proposal verify and name the offender", async () => {
  const dv = await verifyEvidence(await doubleVote(), CONTEXT);
  assert.ok(dv.ok && bytesEqual(dv.offender, SIGNERS[2]!.publicKey) && dv.view === 7);
  const dp: EquivocationEvidence = {
    kind: "double-proposal",
    first: await proposal(SIGNERS[1]!, 4, 1),
    second: await proposal(SIGNERS[1]!, 4, 2),
  };
  const v = await verifyEvidence(dp, CONTEXT);
  assert.ok(v.ok && bytesEqual(v.offender, SIGNERS[1]!.publicKey) && v.view === 4);
});

Deno.test("16.1: forged records are refused: bad signatures, the same message twice, different views, signers, kinds, chains, non-members", async () => {
  const good = await doubleVote();
  const flipped = new Uint8Array(good.second.signature);
  flipped[0]! ^= 1;
  assert.equal(
    await refusal({ ...good, second: { ...good.second, signature: flipped } }),
    "bad-signature",
  );
  assert.equal(await refusal({ ...good, second: good.first }), "not-conflicting");
  assert.equal(
    await refusal({ ...good, second: await vote(SIGNERS[2]!, 8, 2) }),
    "different-view",
  );
  assert.equal(
    await refusal({ ...good, second: await vote(SIGNERS[3]!, 7, 2) }),
    "different-signer",
  );
  const p = await proposal(SIGNERS[2]!, 7, 1);
  assert.equal(
    await refusal({ kind: "double-vote", first: good.first, second: p as never }),
    "bad-kind",
  );
  const other = { ...good, second: await vote(SIGNERS[2]!, 7, 2, "another-chain") };
  assert.equal(await refusal(other), "bad-signature");
  const stranger = ed25519Signer(deriveSecretKey("not-a-validator"));
  assert.equal(await refusal(await doubleVote(stranger)), "unknown-signer");
  // A record whose second vote carries the first one's signature (same signer, view).
  const reused = { ...good, second: { ...good.second, signature: good.first.signature } };
  assert.equal(await refusal(reused), "bad-signature");
});

Deno.test("16: records encode canonically and decode to the same record; garbage decodes to null", async () => {
  const e = await doubleVote();
  const back = decodeEvidence(encodeEvidence(e))!;
  assert.deepEqual(encodeEvidence(back), encodeEvidence(e));
  assert.ok((await verifyEvidence(back, CONTEXT)).ok);
  assert.equal(decodeEvidence(new Uint8Array([0x80])), null);
  assert.equal(decodeEvidence(new Uint8Array([0xff, 0x00])), null);
});

async function fillAndCheck(store: EvidenceStore): Promise<void> {
  const a = await doubleVote(SIGNERS[2]!, 7);
  assert.equal(await store.add(a), true);
  assert.equal(await store.add(a), false, "one record per kind, offender and view");
  for (let v = 8; v < 20; v++) await store.add(await doubleVote(SIGNERS[2]!, v));
  assert.equal(await store.add(await doubleVote(SIGNERS[1]!, 3)), true);
  // perOffenderMax 4, recordsMax 6 (below): the offender has 4, the other 1.
  assert.equal(await store.count(), 5);
  const page = await store.list(2, 2);
  assert.deepEqual(page.map((e) => e.seq), [3, 4]);
  assert.equal((await store.list(5, 10)).length, 0);
}

Deno.test("16.2 step 2: stores keep one record per offender and view, bounded per offender and in all", async () => {
  await fillAndCheck(new MemoryEvidenceStore({ perOffenderMax: 4, recordsMax: 6 }));
  const dir = await Deno.makeTempDir();
  try {
    const kv = await DenoKvEvidenceStore.open(`${dir}/e.kv`, { perOffenderMax: 4, recordsMax: 6 });
    await fillAndCheck(kv);
    kv.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("16.2 step 2: evidence in the Deno KV store survives a reopen, verifiable", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await DenoKvEvidenceStore.open(`${dir}/evidence.kv`);
    const e = await doubleVote();
    assert.equal(await first.add(e), true);
    first.close();
    const again = await DenoKvEvidenceStore.open(`${dir}/evidence.kv`);
    const [entry] = await again.list(0, 10);
    assert.equal(await again.count(), 1);
    assert.equal(await again.add(e), false, "still known after the reopen");
    assert.ok(entry !== undefined && (await verifyEvidence(entry.evidence, CONTEXT)).ok);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sim: a Byzantine double-voter and an equivocator become verified evidence at honest replicas", async () => {
  for (const behaviour of ["double-voter", "equivocator"] as const) {
    const r = await runSimulation({
      seed: 3,
      powers: [1, 1, 1, 1],
      behaviours: ["honest", "honest", "honest", behaviour],
      faults: quietFaults(4000),
      signatures: "ed25519",
    });
    assert.deepEqual(r.safetyViolations, []);
    assert.deepEqual(r.livenessFailures, []);
    const offender = ed25519Signer(deriveSecretKey("sim-validator-3")).publicKey;
    const records = r.evidence.flat();
    const holders = r.evidence.filter((list) => list.length > 0).length;
    assert.ok(holders >= 1, `${behaviour}: no honest replica stored evidence`);
    const kind = behaviour === "double-voter" ? "double-vote" : "double-proposal";
    const context = { chainId: "sim", validators: SET, verifier: ed25519Verifier() };
    const simSet = new ValidatorSet(
      [0, 1, 2, 3].map((i) => ({
        publicKey: ed25519Signer(deriveSecretKey(`sim-validator-${i}`)).publicKey,
        power: 1,
      })),
    );
    for (const e of records) {
      assert.equal(e.kind, kind);
      assert.ok(bytesEqual(evidenceOffender(e), offender), toHex(evidenceOffender(e)));
      assert.ok((await verifyEvidence(e, { ...context, validators: simSet })).ok);
    }
  }
});

class EvidenceView implements NodeTreeView {
  readonly store = new MemoryEvidenceStore({ perOffenderMax: 100, recordsMax: 100 });
  status(): Record<string, unknown> {
    return {};
  }
  nodeByHash(): Promise<null> {
    return Promise.resolve(null);
  }
  committedRange(): Promise<[]> {
    return Promise.resolve([]);
  }
  chainFrom(): Promise<Node[]> {
    return Promise.resolve([]);
  }
  evidence(after: number, limit: number) {
    return this.store.list(after, limit);
  }
}

Deno.test("16.3: GET /evidence pages are bounded, paginated, and their records verify", async () => {
  const view = new EvidenceView();
  for (let v = 1; v <= 40; v++) await view.store.add(await doubleVote(SIGNERS[v % 4]!, v));
  const api = new NodeTreeHttpApi({ hostname: "127.0.0.1", port: 0, view, log: () => {} });
  await api.start();
  const get = async (q: string) => {
    const r = await fetch(`http://127.0.0.1:${api.port}/evidence${q}`);
    return { status: r.status, body: await r.json() };
  };
  try {
    const first = await get("");
    assert.equal(first.status, 200);
    assert.equal(first.body.records.length, EVIDENCE_PAGE_MAX);
    assert.equal(first.body.next, EVIDENCE_PAGE_MAX);
    const rest = await get(`?after=${first.body.next}&limit=32`);
    assert.equal(rest.body.records.length, 40 - EVIDENCE_PAGE_MAX);
    assert.equal(rest.body.next, null);
    const rec = first.body.records[0];
    assert.equal(rec.kind, "double-vote");
    assert.equal(rec.offender, toHex(SIGNERS[1]!.publicKey));
    const decoded = decodeEvidence(Uint8Array.from(
      (rec.record as string).match(/../g)!.map((h) => parseInt(h, 16)),
    ))!;
    assert.ok((await verifyEvidence(decoded, CONTEXT)).ok);
    assert.equal((await get(`?limit=${EVIDENCE_PAGE_MAX + 1}`)).status, 400);
    assert.equal((await get("?limit=0")).body.reason, "bad-limit");
    assert.equal((await get("?after=-1")).body.reason, "bad-range");
    assert.equal((await get("?page=2")).body.reason, "unknown-parameter");
  } finally {
    await api.close();
  }
});

Deno.test("16.1 with validator-set changes: the offender must be a member of one of the sets given (the sets certifying its Nodes)", async () => {
  const joiner = ed25519Signer(deriveSecretKey("evidence-joiner"));
  const next = new ValidatorSet(
    [...SIGNERS.slice(1), joiner].map((s) => ({ publicKey: s.publicKey, power: 1 })),
  );
  const byJoiner = await doubleVote(joiner, 9);
  const context = (validators: ValidatorSet | ValidatorSet[]) => ({ ...CONTEXT, validators });
  // A validator that joined later is accountable under the sets of a handover (old and new)...
  assert.ok((await verifyEvidence(byJoiner, context([SET, next]))).ok);
  // ... but not under the old set alone.
  const old = await verifyEvidence(byJoiner, context(SET));
  assert.ok(!old.ok && old.reason === "unknown-signer");
  // A validator removed by the change is not a member of the new set.
  const byRemoved = await doubleVote(SIGNERS[0]!, 9);
  const after = await verifyEvidence(byRemoved, context([next]));
  assert.ok(!after.ok && after.reason === "unknown-signer");
  assert.ok((await verifyEvidence(byRemoved, context([SET, next]))).ok);
});
