/**
 * Commit proofs across validator-set changes (SPECIFICATION.md 3.4 step 8, 15.1, 15.2): a light
 * client trusting only the genesis set follows a handover from proofs alone, and a proof that
 * hides or forges a change, or is not cut where the trusted set still certifies, is refused.
 */
import assert from "node:assert/strict";
import {
  decodeValue,
  encodeValue,
  genesisNode,
  genesisQC,
  nodeHash,
  signedBytes,
} from "../src/codec.ts";
import {
  nextConfig,
  type NodeConfig,
  plantedReconfigBugs,
  sameConfig,
  stableConfig,
  type ValidatorConfig,
  validatorConfigHash,
} from "../src/consensus/reconfig.ts";
import { deriveSecretKey, ed25519Signer, type Signer } from "../src/crypto.ts";
import {
  buildCommitProof,
  type CommitProof,
  decodeCommitProof,
  encodeCommitProof,
  verifyCommitProof,
} from "../src/light/commit_proof.ts";
import { runSimulation } from "../src/testing/sim.ts";
import { mixedScenario } from "../src/testing/scenario.ts";
import type { Node, QuorumCertificate } from "../src/types.ts";
import { bytesCompare, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";

const CHAIN = "light-sets";
const keys = [0, 1, 2, 3, 4].map((i) => ed25519Signer(deriveSecretKey(`${CHAIN}-${i}`)));
const setOf = (signers: readonly Signer[]) =>
  new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
/** The genesis set: keys 0-3. The change at height 2 swaps key 0 for key 4. */
const S = setOf(keys.slice(0, 4));
const S2 = setOf(keys.slice(1, 5));
const CHANGE_HEIGHT = 2;
const idOf = (set: ValidatorSet) => set.validators.map((v) => toHex(v.publicKey)).join(",");
const HEIGHTS = 12;

async function sign(node: Node, by: readonly Signer[]): Promise<QuorumCertificate> {
  const hash = nodeHash(node);
  const bytes = signedBytes(SignatureDomain.vote, CHAIN, node.view, hash);
  const signatures = await Promise.all(
    by.map(async (s) => ({ signer: s.publicKey, signature: await s.sign(bytes) })),
  );
  signatures.sort((a, b) => bytesCompare(a.signer, b.signer));
  return { chainId: CHAIN, view: node.view, nodeHash: hash, signatures };
}

/** Who signs a QC under the rule of `config` (the certified Node's parent's configuration). */
function votersFor(config: ValidatorConfig): Signer[] {
  // Stable S: keys 0-2. Handing over: keys 1-4 (a quorum of S and of S2). Stable S2: keys 2-4,
  // which is not a quorum of S (only keys 2 and 3 are in it).
  if (config.next !== null) return keys.slice(1, 5);
  return config.set === S ? keys.slice(0, 3) : keys.slice(2, 5);
}

/**
 * Heights 1..12 in views 1..12, each justified by its parent's QC (direct links): the change
 * Node at height 2 starts a handover that completes at height 5 (Spec 3.4 step 4). Returns the
 * Nodes, each one's configuration record (as a replica's store holds them) and the QCs.
 */
async function handoverChain(): Promise<
  {
    nodes: Node[];
    records: (NodeConfig | null)[];
    qcs: QuorumCertificate[];
    after: ValidatorConfig[];
  }
> {
  const nodes: Node[] = [];
  const records: (NodeConfig | null)[] = [];
  const qcs: QuorumCertificate[] = [];
  const after: ValidatorConfig[] = [stableConfig(S)];
  let parent = genesisNode(CHAIN);
  let justify = genesisQC(CHAIN);
  for (let h = 1; h <= HEIGHTS; h++) {
    const config = after[h - 1]!;
    const node: Node = {
      view: h,
      height: h,
      parent: nodeHash(parent),
      justify,
      command: new TextEncoder().encode(`height ${h}`),
      configHash: validatorConfigHash(config),
      proposer: (config.next ?? config.set).leader(h).publicKey,
      stateRoot: new Uint8Array(0),
    };
    const updates = h === CHANGE_HEIGHT
      ? [{ publicKey: keys[0]!.publicKey, power: 0 }, {
        publicKey: keys[4]!.publicKey,
        power: 1,
      }]
      : [];
    const next = nextConfig(config, node, parent.view, updates);
    assert.ok(next.ok);
    after.push(next.config);
    const changed = !sameConfig(config, next.config) ||
      (h > 1 && !sameConfig(after[h - 2]!, config));
    records.push(changed ? { parent: config, after: next.config } : null);
    nodes.push(node);
    justify = await sign(node, votersFor(config));
    qcs.push(justify);
    parent = node;
  }
  assert.equal(idOf(after[CHANGE_HEIGHT]!.next!), idOf(S2), "the change Node starts the handover");
  assert.equal(after[5]!.next, null, "the handover completes at height 5");
  assert.equal(idOf(after[5]!.set), idOf(S2));
  return { nodes, records, qcs, after };
}

const chain = await handoverChain();
const certificateOf = (hash: Uint8Array) =>
  Promise.resolve(chain.qcs.find((q) => bytesCompare(q.nodeHash, hash) === 0) ?? null);
const build = (from: number, to: number, records = chain.records) =>
  buildCommitProof(
    chain.nodes.slice(from - 1),
    from,
    to,
    certificateOf,
    records.slice(from - 1),
  );

Deno.test("15.1-15.2: a client trusting the genesis set follows a handover from proofs alone", async () => {
  let config = stableConfig(S);
  let from = 1;
  const seen: string[] = [];
  while (from <= HEIGHTS - 3) {
    const built = await build(from, HEIGHTS - 3);
    assert.ok(built !== null, `a proof from ${from}`);
    const verdict = await verifyCommitProof(decodeCommitProof(encodeCommitProof(built)), {
      chainId: CHAIN,
      validators: S,
      config,
    });
    assert.ok(verdict.ok, verdict.ok ? "" : `${verdict.reason}: ${verdict.detail}`);
    const head = verdict.committed.at(-1)!.node.height;
    assert.equal(verdict.committed[0]!.node.height, from);
    assert.ok(sameConfig(verdict.config, chain.after[head]!), `the configuration after ${head}`);
    config = verdict.config;
    seen.push(`${head}:${config.next === null ? "stable" : "handover"}`);
    from = head + 1;
  }
  // The first proof stops at the change Node; each handover Node records a new run, so the
  // proofs are short there; then one proof reaches the end.
  assert.equal(seen[0], `${CHANGE_HEIGHT}:handover`);
  assert.equal(from - 1, HEIGHTS - 3, "every provable height verified");
  assert.equal(idOf(config.set), idOf(S2), "the client ends trusting the new set");
  assert.equal(config.next, null);
});

Deno.test("15.1: proofs that hide or forge a change, or are not cut at it, are refused", async (t) => {
  const trust = { chainId: CHAIN, validators: S };
  const refuse = async (
    proof: CommitProof,
    reason: string,
    trusted: typeof trust & { config?: ValidatorConfig } = trust,
  ) => {
    const verdict = await verifyCommitProof(proof, trusted);
    assert.equal(verdict.ok, false, `accepted a proof that should fail with ${reason}`);
    if (!verdict.ok) assert.equal(verdict.reason, reason, verdict.detail);
  };
  const first = (await build(1, HEIGHTS - 3))!; // cut at the change Node
  assert.ok(first.config != null, "the proof across the change carries the configuration");
  await t.step(
    "the configuration left out",
    () => refuse({ ...first, config: null }, "config-mismatch"),
  );
  await t.step(
    "another configuration carried",
    () => refuse({ ...first, config: stableConfig(setOf(keys.slice(1, 5))) }, "config-mismatch"),
  );
  await t.step(
    "the old set claimed to stay",
    () => refuse({ ...first, config: stableConfig(S) }, "config-mismatch"),
  );
  await t.step(
    "a proof not cut at the change, past the handover, for a client of the old set",
    async () => {
      const uncut = (await build(1, 8, chain.records.map(() => null)))!;
      assert.ok(uncut.nodes.length >= 10);
      await refuse(uncut, "no-quorum");
    },
  );
  await t.step("a client that missed the change, asked from the middle", async () => {
    const late = (await build(9, 9))!;
    await refuse(late, "no-quorum");
    // Given the configuration it would have learned, the same proof verifies.
    const verdict = await verifyCommitProof(late, { ...trust, config: chain.after[8]! });
    assert.ok(verdict.ok);
  });
  await t.step("a tampered config hash in a Node breaks its QC", async () => {
    const nodes = [...first.nodes];
    // b' (height 3) names the configuration after b; claim the old set stays.
    nodes[2] = { ...nodes[2]!, configHash: validatorConfigHash(stableConfig(S)) };
    await refuse({ ...first, nodes }, "not-linked");
  });
  await t.step("configuration bytes that are not one are a decode error", () => {
    const [nodes, qc, config] = decodeValue(encodeCommitProof(first)) as Uint8Array[];
    assert.ok(config instanceof Uint8Array);
    // The proof around them is whole: only the configuration item is bad.
    const badItems = [
      new Uint8Array([0x80]), // an empty array
      config.slice(0, config.length - 1), // cut short
      encodeValue([[], null, 0, 0]), // an empty set
      encodeValue([[[new Uint8Array(32).fill(1), 1]], null, 5, 0]), // stable, but a change height
    ];
    for (const bad of badItems) {
      assert.throws(() => decodeCommitProof(encodeValue([nodes, qc, bad])), (e: unknown) => {
        assert.equal((e as { reason?: string }).reason, "bad-config", String(e));
        return true;
      });
    }
    assert.equal(
      decodeCommitProof(encodeValue([nodes, qc, config])).config?.next?.validators
        .length,
      4,
    );
  });
});

Deno.test("sim: a light client trusting the genesis set follows every change of the longest honest chain; a planted bug misleads it and is caught", async () => {
  let handovers = 0;
  for (const seed of [3, 7, 11]) {
    const r = await runSimulation(mixedScenario(seed, { reconfigure: true }));
    assert.deepEqual(r.safetyViolations, [], `seed ${seed}`);
    assert.ok(r.lightClientHeight > 0, `seed ${seed}: the light client verified nothing`);
    handovers += r.handovers.completed;
  }
  assert.ok(handovers > 0, "the runs changed the set");
  plantedReconfigBugs.uncheckedConfigHash = true;
  try {
    const caught: string[] = [];
    for (const seed of [3, 7, 11]) {
      const r = await runSimulation(mixedScenario(seed, { reconfigure: true }));
      caught.push(...r.safetyViolations.filter((v) => v.includes("config-mismatch")));
    }
    assert.ok(caught.length > 0, "Nodes naming the wrong configuration mislead no light client?");
  } finally {
    plantedReconfigBugs.uncheckedConfigHash = false;
  }
});
