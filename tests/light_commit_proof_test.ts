/**
 * Commit proofs (src/light/commit_proof.ts, SPECIFICATION.md 15.1): a valid proof is accepted,
 * and every way of forging, truncating, reordering or weakening one is refused with its reason;
 * a running replica serves proofs that verify.
 */
import assert from "node:assert/strict";
import { genesisNode, genesisQC, nodeHash, signedBytes } from "../src/codec.ts";
import { deriveSecretKey, ed25519Signer, type Signer } from "../src/crypto.ts";
import {
  buildCommitProof,
  type CommitProof,
  decodeCommitProof,
  encodeCommitProof,
  verifyCommitProof,
} from "../src/light/commit_proof.ts";
import type { Node, QuorumCertificate } from "../src/types.ts";
import { bytesCompare, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";
import { startInProcessCluster, waitUntil } from "./support/cluster.ts";

const CHAIN = "proof-test";
const signers = [0, 1, 2, 3].map((i) => ed25519Signer(deriveSecretKey(`${CHAIN}-${i}`)));
const outsiders = [0, 1, 2].map((i) => ed25519Signer(deriveSecretKey(`outsider-${i}`)));
const validators = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
const trust = { chainId: CHAIN, validators };

async function sign(
  node: Node,
  by: readonly Signer[] = signers.slice(0, 3),
  chainId = CHAIN,
): Promise<QuorumCertificate> {
  const hash = nodeHash(node);
  const bytes = signedBytes(SignatureDomain.vote, chainId, node.view, hash);
  const signatures = await Promise.all(
    by.map(async (s) => ({ signer: s.publicKey, signature: await s.sign(bytes) })),
  );
  signatures.sort((a, b) => bytesCompare(a.signer, b.signer));
  return { chainId, view: node.view, nodeHash: hash, signatures };
}

/** A chain from genesis with the given views, each Node justified by its parent's QC. */
async function chainOfViews(
  views: readonly number[],
): Promise<{ nodes: Node[]; qcs: QuorumCertificate[] }> {
  const nodes: Node[] = [];
  const qcs: QuorumCertificate[] = [];
  let parent = genesisNode(CHAIN);
  let justify = genesisQC(CHAIN);
  for (const view of views) {
    const node: Node = {
      view,
      height: parent.height + 1,
      parent: nodeHash(parent),
      justify,
      command: new TextEncoder().encode(`command at view ${view}`),
      configHash: validatorConfigHash(stableConfig(validators)),
      proposer: signers[view % 4]!.publicKey,
      stateRoot: new Uint8Array(0),
    };
    nodes.push(node);
    justify = await sign(node);
    qcs.push(justify);
    parent = node;
  }
  return { nodes, qcs };
}

const base = await chainOfViews([1, 2, 3, 4, 5]);
/** Heights 1..5 in views 1..5 with the QC of height 5: proves heights 1..3. */
const good: CommitProof = { nodes: base.nodes, certificate: base.qcs[4]! };

Deno.test("a valid proof is accepted and names every Node it proves committed", async () => {
  const verdict = await verifyCommitProof(good, trust);
  assert.ok(verdict.ok, JSON.stringify(verdict));
  assert.deepEqual(verdict.committed.map((c) => c.node.height), [1, 2, 3]);
  // It round-trips through its encoding.
  const again = await verifyCommitProof(decodeCommitProof(encodeCommitProof(good)), trust);
  assert.ok(again.ok);
  // The shortest proof: three Nodes.
  const short = await verifyCommitProof(
    { nodes: base.nodes.slice(2), certificate: base.qcs[4]! },
    trust,
  );
  assert.ok(short.ok);
  assert.deepEqual(short.committed.map((c) => c.node.height), [3]);
});

Deno.test("hostile proofs are refused with their reason", async (t) => {
  const expectRefusal = async (proof: CommitProof, reason: string, trusted = trust) => {
    const verdict = await verifyCommitProof(proof, trusted);
    assert.equal(verdict.ok, false, `accepted a proof that should fail with ${reason}`);
    if (!verdict.ok) assert.equal(verdict.reason, reason, verdict.detail);
  };
  await t.step(
    "truncated: fewer than three Nodes",
    () => expectRefusal({ nodes: base.nodes.slice(3), certificate: base.qcs[4]! }, "too-short"),
  );
  await t.step(
    "truncated: the certificate of another Node",
    () =>
      expectRefusal(
        { nodes: base.nodes.slice(0, 4), certificate: base.qcs[4]! },
        "certificate-mismatch",
      ),
  );
  await t.step("reordered Nodes", () => {
    const n = [...base.nodes];
    [n[1], n[2]] = [n[2]!, n[1]!];
    return expectRefusal({ nodes: n, certificate: base.qcs[4]! }, "bad-height");
  });
  await t.step("a Node replaced by a different one at the same height", () => {
    const n = [...base.nodes];
    n[1] = { ...n[1]!, command: new TextEncoder().encode("forged") };
    return expectRefusal({ nodes: n, certificate: base.qcs[4]! }, "not-linked");
  });
  await t.step("a forged signature", () => {
    const qc = base.qcs[4]!;
    const s0 = qc.signatures[0]!;
    const bad = new Uint8Array(s0.signature);
    bad[0]! ^= 1;
    const forged = { ...qc, signatures: [{ ...s0, signature: bad }, ...qc.signatures.slice(1)] };
    return expectRefusal({ nodes: base.nodes, certificate: forged }, "bad-signature");
  });
  await t.step("below quorum: two of four", async () =>
    expectRefusal(
      { nodes: base.nodes, certificate: await sign(base.nodes[4]!, signers.slice(0, 2)) },
      "no-quorum",
    ));
  await t.step("a signer counted twice", async () => {
    const qc = await sign(base.nodes[4]!, signers.slice(0, 2));
    const doubled = { ...qc, signatures: [...qc.signatures, qc.signatures[0]!] };
    return expectRefusal({ nodes: base.nodes, certificate: doubled }, "duplicate-signer");
  });
  await t.step("signers outside the trusted set", async () =>
    expectRefusal(
      { nodes: base.nodes, certificate: await sign(base.nodes[4]!, outsiders) },
      "unknown-signer",
    ));
  await t.step(
    "another chain's proof",
    () => expectRefusal(good, "wrong-chain", { chainId: "another-chain", validators }),
  );
  await t.step("a chain whose last three views are not consecutive", async () => {
    const gap = await chainOfViews([1, 2, 3, 5, 6]);
    return expectRefusal({ nodes: gap.nodes, certificate: gap.qcs[4]! }, "not-consecutive");
  });
  await t.step("a Node whose justify does not certify its parent", async () => {
    const n = base.nodes.slice(0, 3);
    // Height 4 justified by the QC of height 2, not of height 3.
    const n4: Node = { ...base.nodes[3]!, justify: base.qcs[1]! };
    const n5: Node = { ...base.nodes[4]!, parent: nodeHash(n4), justify: await sign(n4) };
    return expectRefusal(
      { nodes: [...n, n4, n5], certificate: await sign(n5) },
      "justify-mismatch",
    );
  });
  await t.step(
    "a different trusted set (the same keys are not the validators)",
    () =>
      expectRefusal(good, "unknown-signer", {
        chainId: CHAIN,
        validators: new ValidatorSet(outsiders.map((s) => ({ publicKey: s.publicKey, power: 1 }))),
      }),
  );
  await t.step(
    "weights count: the same three signers are below 2/3 when one holds most power",
    () =>
      expectRefusal(good, "no-quorum", {
        chainId: CHAIN,
        validators: new ValidatorSet(
          signers.map((s, i) => ({ publicKey: s.publicKey, power: i === 3 ? 10 : 1 })),
        ),
      }),
  );
  await t.step("malformed bytes are a decode error, not a crash", () => {
    for (const bytes of [new Uint8Array([0x80]), new Uint8Array([0xff]), new Uint8Array(0)]) {
      assert.throws(() => decodeCommitProof(bytes), { name: "CommitProofDecodeError" });
    }
    assert.throws(() => decodeCommitProof(encodeCommitProof(good), 2), {
      name: "CommitProofDecodeError",
    });
  });
});

Deno.test("buildCommitProof cuts after the first direct chain in consecutive views", async () => {
  // Views 1, 2, 4, 5, 6, 7: heights 1-2 are committed only as ancestors of height 3 (views 4-5-6).
  const { nodes, qcs } = await chainOfViews([1, 2, 4, 5, 6, 7]);
  const byHash = (h: Uint8Array) =>
    Promise.resolve(qcs.find((q) => bytesCompare(q.nodeHash, h) === 0) ?? null);
  const proof = await buildCommitProof(nodes, 1, 1, byHash);
  assert.ok(proof !== null);
  assert.equal(proof.nodes.length, 5); // heights 1..5, committing 1..3
  const verdict = await verifyCommitProof(proof, trust);
  assert.ok(verdict.ok);
  assert.deepEqual(verdict.committed.map((c) => c.node.height), [1, 2, 3]);
  // Asking for height 4: the chain 4-5-6 with the QC of height 6 (looked up: no Node carries it).
  const later = await buildCommitProof(nodes, 1, 4, byHash);
  assert.ok(later !== null && later.nodes.length === 6);
  assert.ok((await verifyCommitProof(later, trust)).ok);
  // Nothing at height 5 or above is provable from this chain.
  assert.equal(await buildCommitProof(nodes, 1, 5, byHash), null);
});

Deno.test("a running cluster serves commit proofs that verify against its validator set", async () => {
  const cluster = await startInProcessCluster({ chainId: "proof-cluster", validators: 4 });
  try {
    const url = cluster.peers[0]!.httpUrl;
    const replica = cluster.replicas[0]!;
    const height = () => (replica.status().committed as { height: number }).height;
    await waitUntil("10 commits", () => height() >= 10, 30_000);
    const clusterTrust = { chainId: cluster.chainId, validators: cluster.validators };
    const answer = await fetch(`${url}/proof?from=2&to=8`);
    assert.equal(answer.status, 200);
    assert.equal(answer.headers.get("content-type"), "application/cbor");
    const proof = decodeCommitProof(new Uint8Array(await answer.arrayBuffer()));
    const verdict = await verifyCommitProof(proof, clusterTrust);
    assert.ok(verdict.ok, JSON.stringify(verdict));
    assert.equal(verdict.committed[0]!.node.height, 2);
    assert.ok(verdict.committed.at(-1)!.node.height >= 8);
    // The proven Nodes are the ones the replica committed.
    const committed = await (await fetch(`${url}/committed?from=2&to=8`)).json() as Array<
      { node: { hash: string } }
    >;
    if (!verdict.ok) return;
    assert.deepEqual(
      committed.map((c) => c.node.hash),
      verdict.committed.slice(0, committed.length).map((c) => toHex(c.hash)),
    );
    // Bad parameters are typed refusals; a height far ahead has no proof yet.
    for (
      const [query, status, reason] of [
        ["from=0", 400, "bad-range"],
        ["from=5&to=4", 400, "bad-range"],
        ["from=1&to=300", 400, "range-too-large"],
        ["from=x", 400, "bad-range"],
        ["from=1&limit=2", 400, "unknown-parameter"],
        ["from=99999999", 404, "no-proof"],
      ] as const
    ) {
      const r = await fetch(`${url}/proof?${query}`);
      assert.equal(r.status, status, query);
      assert.equal((await r.json()).reason, reason, query);
    }
  } finally {
    await cluster.close();
  }
});
