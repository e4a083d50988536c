/**
 * The sans-I/O core, driven input by input: safety rules, the pacemaker, views advancing only on
 * signed evidence, persist-before-send, equivocation evidence. Signatures are not checked by the
 * core (the Engine verifies before), so messages here carry dummy signatures.
 */
import assert from "node:assert/strict";
import { genesisNode, genesisQC, nodeHash } from "../src/codec.ts";
import { Core, type CoreOutput, DEFAULT_CORE_LIMITS } from "../src/consensus/core.ts";
import { NodeTree } from "../src/consensus/node_tree.ts";
import { viewTimeout } from "../src/consensus/pacemaker.ts";
import { commitCandidate, safeToVote } from "../src/consensus/safety.ts";
import { deriveSecretKey, publicKeyOf } from "../src/crypto.ts";
import type { StoredNode } from "../src/storage/storage.ts";
import type {
  ConsensusMessage,
  NewViewMessage,
  Node,
  PublicKey,
  QuorumCertificate,
  TimeoutCertificate,
  VoteMessage,
} from "../src/types.ts";
import { bytesEqual } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { NewViewCollector, VoteCollector } from "../src/consensus/votes.ts";
import { QuorumRule, stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

const CHAIN = "core-test";
const KEYS: PublicKey[] = [0, 1, 2, 3].map((i) => publicKeyOf(deriveSecretKey(`core-${i}`)));
const SET = new ValidatorSet(KEYS.map((publicKey) => ({ publicKey, power: 1 })));
const SIG = new Uint8Array(64);
const PACE = { viewTimeoutMinMs: 100, viewTimeoutMaxMs: 1600 };
const G = genesisNode(CHAIN);
const GQC = genesisQC(CHAIN);

function qcFor(node: Node, signers = 3): QuorumCertificate {
  return {
    chainId: CHAIN,
    view: node.view,
    nodeHash: nodeHash(node),
    signatures: SET.validators.slice(0, signers).map((v) => ({
      signer: v.publicKey,
      signature: SIG,
    })),
  };
}

function tcFor(view: number): TimeoutCertificate {
  return {
    chainId: CHAIN,
    view,
    signatures: SET.validators.slice(0, 3).map((v) => ({ signer: v.publicKey, signature: SIG })),
  };
}

function child(parent: Node, view: number, justify: QuorumCertificate, tag = 0): Node {
  return {
    view,
    height: parent.height + 1,
    parent: nodeHash(parent),
    justify,
    command: new Uint8Array([tag]),
    configHash: validatorConfigHash(stableConfig(SET)),
    proposer: SET.leader(view).publicKey,
    stateRoot: new Uint8Array(0),
  };
}

function stored(n: Node): StoredNode {
  return { node: n, hash: nodeHash(n), updates: [] };
}

/** A core for validator `me` on a fresh store, started at time 0. */
function freshCore(me = SET.validators[0]!.publicKey): Core {
  const core = new Core({ chainId: CHAIN, validators: SET, me, pacemaker: PACE }, {
    safety: null,
    root: stored(G),
    uncommitted: [],
  });
  core.step({ type: "start", now: 0 });
  return core;
}

/** Feeds a proposal and answers the Application's execution with "ok". */
function propose(core: Core, node: Node, now: number, tc: TimeoutCertificate | null = null) {
  const msg: ConsensusMessage = { type: "propose", node, tc, signature: SIG };
  const outs: CoreOutput[] = [
    core.step({ type: "message", from: node.proposer, message: msg, now }),
  ];
  for (const x of outs[0]!.execute) {
    outs.push(
      core.step({ type: "executed", hash: x.hash, result: { ok: true, updates: [] }, now }),
    );
  }
  return outs;
}

const votesIn = (outs: CoreOutput[]) =>
  outs.flatMap((o) => o.sends).filter((s) => s.message.type === "vote");
const rejects = (outs: CoreOutput[]) =>
  outs.flatMap((o) => o.events).filter((e) => e.type === "message:reject").map((e) =>
    e.type === "message:reject" ? e.reason : ""
  );

Deno.test("safety rule 5.1: vote only above the last voted view, and only on the lock or a newer QC", () => {
  const a = child(G, 1, GQC, 1);
  const b = child(a, 2, qcFor(a), 2);
  const fork = child(G, 3, GQC, 3); // conflicts with a, justify older than a lock on a
  const tree = new NodeTree(stored(G));
  for (const n of [a, b, fork]) tree.insert(stored(n));
  assert.equal(safeToVote(tree, stored(b), 0, qcFor(a)), true, "extends the lock");
  assert.equal(safeToVote(tree, stored(b), 2, qcFor(a)), false, "already voted in view 2");
  assert.equal(safeToVote(tree, stored(fork), 2, qcFor(a)), false, "conflicts, older QC");
  // A Node whose justify is newer than the lock is voted for even if it conflicts with it.
  const x = child(G, 4, GQC, 4);
  const z = child(x, 5, qcFor(x), 5);
  tree.insert(stored(x));
  tree.insert(stored(z));
  assert.equal(safeToVote(tree, stored(z), 2, qcFor(a)), true, "newer QC than the lock");
});

Deno.test("commit rule 5.3: a 3-chain of direct parents in consecutive views commits, a gap does not", () => {
  const b = child(G, 1, GQC);
  const b1 = child(b, 2, qcFor(b));
  const b2 = child(b1, 3, qcFor(b1));
  const gap = child(b, 4, qcFor(b)); // direct parent, but view 4 after view 1
  const gap2 = child(gap, 5, qcFor(gap));
  const tree = new NodeTree(stored(G));
  for (const n of [b, b1, b2, gap, gap2]) tree.insert(stored(n));
  const chain = (x: Node, y: Node, z: Node) => ({
    b2: tree.get(nodeHash(x))!,
    b1: tree.get(nodeHash(y)),
    b0: tree.get(nodeHash(z)),
  });
  assert.ok(bytesEqual(commitCandidate(chain(b2, b1, b))!.hash, nodeHash(b)));
  assert.equal(commitCandidate(chain(gap2, gap, b)), undefined);
});

Deno.test("4.1: proposals from a non-leader, or for a view without QC or TC of the previous view, are rejected", () => {
  const core = freshCore();
  const a = child(G, 1, GQC);
  const wrongLeader = { ...a, proposer: SET.leader(2).publicKey };
  assert.deepEqual(rejects(propose(core, wrongLeader, 1)), ["not-leader"]);
  const jump = child(G, 5, GQC); // view 5 on the genesis QC, no TC
  assert.deepEqual(rejects(propose(core, jump, 2)), ["view-not-justified"]);
  assert.equal(core.view, 1, "an unjustified proposal moves no view");
  const withTC = propose(core, jump, 3, tcFor(4));
  assert.deepEqual(rejects(withTC), []);
  assert.equal(core.view, 5, "a TC of view 4 justifies view 5");
});

Deno.test("3.4 step 8: a Node naming another configuration than its parent's gets no vote", () => {
  const core = freshCore(KEYS[1]!);
  const a = child(G, 1, GQC);
  const other = new ValidatorSet(KEYS.slice(0, 3).map((publicKey) => ({ publicKey, power: 1 })));
  const wrong = { ...a, configHash: validatorConfigHash(stableConfig(other)) };
  const outs = propose(core, wrong, 1);
  assert.equal(votesIn(outs).length, 0);
  assert.deepEqual(rejects(outs), ["config-hash-mismatch"]);
  const right = propose(core, a, 2);
  assert.equal(votesIn(right).length, 1, "the same Node naming its parent's configuration");
});

Deno.test("5.1 + 10.1: a vote is sent once per view, after a write that records it", () => {
  const me = SET.validators[1]!.publicKey;
  const core = freshCore(me);
  const a = child(G, 1, GQC);
  const outs = propose(core, a, 1);
  const voting = outs.find((o) => o.sends.some((s) => s.message.type === "vote"))!;
  assert.equal(voting.write?.safety?.lastVotedView, 1, "the same output persists the vote");
  assert.ok(bytesEqual(voting.sends[0]!.to as Uint8Array, SET.leader(2).publicKey));
  // Re-delivery of the same proposal, or an equivocating second one, gets no second vote.
  assert.equal(votesIn(propose(core, a, 2)).length, 0);
  const other = child(G, 1, GQC, 9);
  const second = propose(core, other, 3);
  assert.equal(votesIn(second).length, 0);
  assert.ok(second[0]!.events.some((e) => e.type === "equivocation:detect"));
});

Deno.test("8.4: a far-future NEW-VIEW without a certificate does not move the view; a TC does", () => {
  const core = freshCore();
  const nv = (view: number, signer: PublicKey): ConsensusMessage => ({
    type: "new-view",
    view,
    highQC: GQC,
    highTC: null,
    vote: null,
    signer,
    signature: SIG,
  });
  core.step({ type: "message", from: KEYS[1]!, message: nv(500, KEYS[1]!), now: 1 });
  assert.equal(core.view, 1);
  const far = core.step({ type: "message", from: KEYS[1]!, message: nv(5000, KEYS[1]!), now: 2 });
  assert.deepEqual(rejects([far]), ["far-future-view"]);
  // Three NEW-VIEWs of view 1 (a quorum) form a TC: enter view 2.
  for (const k of KEYS.slice(0, 3)) {
    core.step({ type: "message", from: k, message: nv(1, k), now: 3 });
  }
  assert.equal(core.view, 2);
  // A NEW-VIEW carrying a TC of view 9 brings a lagging replica to view 10.
  const carrying: ConsensusMessage = { ...nv(9, KEYS[2]!), highTC: tcFor(9) } as ConsensusMessage;
  core.step({ type: "message", from: KEYS[2]!, message: carrying, now: 4 });
  assert.equal(core.view, 10);
});

Deno.test("8.1-8.3: timeouts back off exponentially, re-send NEW-VIEW, and reset on a QC", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((f) => viewTimeout(PACE, f)), [
    100,
    200,
    400,
    800,
    1600,
    1600,
  ]);
  const core = freshCore(SET.validators[1]!.publicKey);
  let now = 0;
  const deadlines: number[] = [];
  for (let i = 0; i < 3; i++) {
    const out = core.step({ type: "tick", now: now += 10_000 });
    assert.ok(out.sends.some((s) => s.to === "all" && s.message.type === "new-view"));
    deadlines.push(out.timerAt! - now);
  }
  assert.deepEqual(deadlines, [200, 400, 800], "each expiry doubles the timeout");
  // A proposal carrying a QC of view 1 is progress: the next view's timeout is the minimum.
  const a = child(G, 1, GQC);
  const b = child(a, 2, qcFor(a));
  propose(core, a, now + 1);
  const outs = propose(core, b, now + 2);
  assert.equal(core.view, 2);
  assert.equal(outs[0]!.timerAt! - (now + 2), 100);
});

Deno.test("the next leader forms a QC from a quorum of votes and proposes at once", () => {
  const leader2 = SET.leader(2).publicKey;
  const core = freshCore(leader2);
  const a = child(G, 1, GQC);
  propose(core, a, 1);
  let produced = null;
  for (const k of SET.validators.slice(0, 3).map((v) => v.publicKey)) {
    const vote: ConsensusMessage = {
      type: "vote",
      view: 1,
      nodeHash: nodeHash(a),
      signer: k,
      signature: SIG,
    };
    const out = core.step({ type: "message", from: k, message: vote, now: 2 });
    produced ??= out.produce;
  }
  assert.equal(core.view, 2);
  assert.ok(produced !== null, "asked the Application for a command");
  const out = core.step({
    type: "produced",
    view: 2,
    command: new Uint8Array([7]),
    stateRoot: new Uint8Array(0),
    now: 3,
  });
  const p = out.sends[0]!;
  assert.equal(p.to, "all");
  assert.equal(p.message.type, "propose");
  if (p.message.type === "propose") {
    assert.equal(p.message.node.view, 2);
    assert.equal(p.message.node.justify.view, 1);
    assert.ok(bytesEqual(p.message.node.parent, nodeHash(a)));
    // Spec 3.4 step 8: it names the configuration of the Node it extends.
    assert.ok(bytesEqual(p.message.node.configHash, validatorConfigHash(stableConfig(SET))));
  }
});

Deno.test("6.2: a restarted core keeps its last voted view and never proposes again in its view", () => {
  const me = SET.leader(3).publicKey;
  const core = new Core({ chainId: CHAIN, validators: SET, me, pacemaker: PACE }, {
    safety: { currentView: 3, lastVotedView: 3, lockedQC: GQC, highQC: GQC, highTC: tcFor(2) },
    root: stored(G),
    uncommitted: [],
  });
  const out = core.step({ type: "start", now: 0 });
  assert.equal(core.view, 3);
  assert.equal(out.produce, null, "no second proposal in view 3");
  const again = child(G, 3, GQC, 5);
  assert.equal(votesIn(propose(core, again, 1, tcFor(2))).length, 0, "no second vote in view 3");
});

// ---------------------------------------------------------------------------------------------
// Spec 4.4: the CatchUp flow.

/** Nodes of heights 1..n in views 1..n, each justified by its parent's QC. */
function chainOf(n: number): Node[] {
  const nodes: Node[] = [];
  let parent = G;
  let justify = GQC;
  for (let k = 1; k <= n; k++) {
    const node = child(parent, k, justify, k);
    nodes.push(node);
    parent = node;
    justify = qcFor(node);
  }
  return nodes;
}

/** A started core for validator 1 that asks for `catchUpNodesMax` = `limit` Nodes at once. */
function catchUpCore(limit: number): Core {
  const limits = { ...DEFAULT_CORE_LIMITS, catchUpNodesMax: limit };
  const me = SET.validators[1]!.publicKey;
  const core = new Core({ chainId: CHAIN, validators: SET, me, pacemaker: PACE, limits }, {
    safety: null,
    root: stored(G),
    uncommitted: [],
  });
  core.step({ type: "start", now: 0 });
  return core;
}

const fetched = (core: Core, nodes: readonly Node[], now: number): CoreOutput =>
  core.step({ type: "fetched", from: KEYS[2]!, nodes, now });

/** Answers the one execution `out` asks for (if any) with "ok"; returns the next output. */
function executeNext(core: Core, out: CoreOutput, now: number): CoreOutput | null {
  assert.ok(out.execute.length <= 1, "fetched Nodes execute one at a time");
  const x = out.execute[0];
  if (x === undefined) return null;
  return core.step({ type: "executed", hash: x.hash, result: { ok: true, updates: [] }, now });
}

/** Executes until nothing is asked; every output, in order. */
function executeAll(core: Core, first: CoreOutput, now: number): CoreOutput[] {
  const outs = [first];
  for (let o: CoreOutput | null = first; o !== null;) {
    o = executeNext(core, o, now);
    if (o !== null) outs.push(o);
  }
  return outs;
}

const insertedHeights = (outs: CoreOutput[]) =>
  outs.flatMap((o) => o.events).flatMap((e) => e.type === "node:insert" ? [e.height] : []);

Deno.test("4.4: a full answer asks for the next one once its first Node is inserted, from the height after it", () => {
  const core = catchUpCore(4);
  const chain = chainOf(10);
  const first = fetched(core, chain.slice(0, 4), 1);
  assert.equal(first.fetch, null, "nothing asked before progress");
  assert.equal(first.execute.length, 1);
  // Inserting height 1 is progress: the next answer is asked for at once, from height 5.
  const afterFirst = executeNext(core, first, 2)!;
  assert.deepEqual(afterFirst.fetch, { from: KEYS[2], fromHeight: 5, limit: 4 });
  // The next answer arrives while height 2 executes: it waits in the queue.
  const second = fetched(core, chain.slice(4, 8), 3);
  assert.equal(second.execute.length, 0, "one fetched Node at a time");
  assert.equal(second.fetch, null, "at most one request in flight, asked once per answer");
  const outs = [...executeAll(core, afterFirst, 4)];
  const asks = outs.flatMap((o) => o.fetch === null ? [] : [o.fetch.fromHeight]);
  assert.deepEqual(asks, [5, 9], "answer 2 was asked at height 1, answer 3 at height 5");
  assert.deepEqual(insertedHeights(outs), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(rejects(outs), []);
  assert.equal(core.tree.root.node.height, 5, "8 inserted: 5 committed");
});

Deno.test("4.4: after an answer that is not full, ask again only once its Nodes are done, and only if still needed", () => {
  const core = catchUpCore(8);
  const chain = chainOf(10);
  // A proposal of view 10 whose parent is unknown: buffered, and catch-up starts.
  const p10 = chain[9]!;
  const message: ConsensusMessage = { type: "propose", node: p10, tc: null, signature: SIG };
  const start = core.step({ type: "message", from: p10.proposer, message, now: 1 });
  assert.deepEqual(start.fetch, { from: p10.proposer, fromHeight: 1, limit: 8 });
  // The peer cuts its answer short (6 Nodes): the proposal still waits, so once the 6 are done
  // the same peer is asked again, from above the committed head.
  const outs = executeAll(core, fetched(core, chain.slice(0, 6), 2), 3);
  const asks = outs.map((o) => o.fetch);
  assert.deepEqual(asks.slice(0, -1).filter((f) => f !== null), [], "nothing asked meanwhile");
  assert.deepEqual(asks[asks.length - 1], { from: KEYS[2], fromHeight: 4, limit: 8 });
  // A useless answer (nothing new) is not followed by another request.
  const again = executeAll(core, fetched(core, chain.slice(0, 6), 4), 4);
  assert.deepEqual(again.flatMap((o) => o.fetch === null ? [] : [o.fetch]), []);
  // The rest arrives: the proposal's parent is inserted, then the proposal itself.
  const rest = executeAll(core, fetched(core, chain.slice(3, 9), 5), 6);
  assert.deepEqual(insertedHeights(rest), [7, 8, 9, 10]);
  assert.deepEqual(rejects([start, ...outs, ...again, ...rest]), []);
});

Deno.test("4.4 step 3: queued Nodes that a commit passed (an overlapping answer) are skipped without a rejection", () => {
  const core = catchUpCore(8);
  const chain = chainOf(6).slice(0, 6);
  const first = fetched(core, chain, 1);
  // The same Nodes again (a late answer to an expired request) before any is inserted.
  const second = fetched(core, chain, 2);
  const outs = [first, second, ...executeAll(core, first, 3).slice(1)];
  assert.deepEqual(insertedHeights(outs), [1, 2, 3, 4, 5, 6]);
  assert.equal(core.tree.root.node.height, 3, "6 inserted: 3 committed, 1-2 pruned from the tree");
  assert.deepEqual(rejects(outs), [], "no unknown-parent for the copies of committed Nodes");
});

Deno.test("4.4 step 4: progress catching up holds the view timer back; without progress it fires", () => {
  const core = catchUpCore(8); // view 1, timeout 100 ms: the timer is due at 100
  const chain = chainOf(6);
  const newViews = (o: CoreOutput) => o.sends.filter((s) => s.message.type === "new-view").length;
  let out = fetched(core, chain, 10);
  // One Node inserted every 60 ms; the timer fires at each old deadline and is re-armed.
  const ticks: CoreOutput[] = [];
  for (let now = 60, i = 0; i < 6; now += 60, i++) {
    out = executeNext(core, out, now)!;
    ticks.push(core.step({ type: "tick", now: now + 50 }));
  }
  assert.deepEqual(ticks.map(newViews), [0, 0, 0, 0, 0, 0], "no NEW-VIEW while catching up");
  assert.deepEqual(ticks.map((t) => t.timerAt), [160, 220, 280, 340, 400, 460]);
  // Height 6 was inserted at 360: no progress since, so the view times out at 460.
  assert.equal(newViews(core.step({ type: "tick", now: 460 })), 1);
});

Deno.test("9.1/9.2: messages for many views ahead never push the view being decided out of the collectors", () => {
  const votes = new VoteCollector("c", 4);
  const newViews = new NewViewCollector("c", 4);
  const rule = new QuorumRule([SET]);
  const hash = new Uint8Array(32).fill(3);
  const vote = (signer: number, view: number): VoteMessage => ({
    type: "vote",
    view,
    nodeHash: hash,
    signer: KEYS[signer]!,
    signature: new Uint8Array(64).fill(signer),
  });
  const newView = (signer: number, view: number): NewViewMessage => ({
    type: "new-view",
    view,
    highQC: genesisQC("c"),
    highTC: null,
    vote: null,
    signer: KEYS[signer]!,
    signature: new Uint8Array(64).fill(signer),
  });
  // One signer fills every slot with views far ahead, then keeps going.
  for (let v = 100; v < 110; v++) {
    votes.add(vote(3, v), rule);
    newViews.add(newView(3, v), rule);
  }
  // The current view (5) still gets its slot, and three honest messages certify it.
  let qc: QuorumCertificate | undefined;
  let tc: TimeoutCertificate | undefined;
  for (const signer of [0, 1, 2]) {
    qc ??= votes.add(vote(signer, 5), rule).certificate;
    tc ??= newViews.add(newView(signer, 5), rule).certificate;
  }
  assert.equal(qc?.view, 5);
  assert.equal(tc?.view, 5);
});

Deno.test("4.1 step 8: a buffered proposal is dropped once its view is stale, not woken when its parent comes", () => {
  const core = freshCore();
  const ghost = child(G, 1, GQC, 9); // not delivered yet
  const orphan = child(ghost, 2, qcFor(ghost), 1);
  propose(core, orphan, 1); // buffered: its parent is unknown
  // A proposal for view 4 with the TC of view 3 moves the replica to view 4: view 2 is stale.
  propose(core, child(G, 4, GQC, 4), 2, tcFor(3));
  assert.equal(core.view, 4);
  // The parent arrives: nothing wakes (before, the orphan was re-checked and refused as stale).
  const outs = executeAll(core, fetched(core, [ghost], 3), 3);
  assert.ok(core.tree.has(nodeHash(ghost)), "the parent is inserted");
  assert.deepEqual(rejects(outs), []);
});
