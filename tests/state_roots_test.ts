/**
 * State roots in Nodes (SPECIFICATION.md 7): the copy-on-write overlay gives the same root as the
 * whole tree, kept overlays stay right as their ancestors commit and are dropped for forks, and
 * an Engine with the hook puts roots into its Nodes, refuses a Node whose root differs, and
 * refuses a root on a chain without roots.
 */
import assert from "node:assert/strict";
import type { Application, PendingNode } from "../src/app.ts";
import { plantedSafetyBugs } from "../src/consensus/safety.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import type { ConsensusEvent } from "../src/events.ts";
import { Engine } from "../src/runtime/engine.ts";
import { systemClock } from "../src/runtime/clock.ts";
import { STATE_ROOT_OVERLAYS_MAX, StateRoots, withStateRoots } from "../src/state/roots.ts";
import { EMPTY_STATE_ROOT, StateTree } from "../src/state/tree.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { StateUpdate } from "../src/storage/storage.ts";
import { Random } from "../src/testing/random.ts";
import { ValidatorSet } from "../src/validators.ts";

const enc = new TextEncoder();

/** A Node-like layer with random updates over a small key space (sets, deletes, repeats). */
function layer(rng: Random, height: number, tag: number): PendingNode {
  const updates: StateUpdate[] = [];
  const n = 1 + rng.int(40);
  for (let i = 0; i < n; i++) {
    const key = enc.encode(`k/${rng.int(300)}`);
    updates.push([key, rng.chance(0.2) ? null : enc.encode(`v${height}.${tag}.${i}`)]);
  }
  const hash = new Uint8Array(32);
  new DataView(hash.buffer).setUint32(0, height);
  new DataView(hash.buffer).setUint32(4, tag);
  return { hash, height, updates };
}

/** The root of `base` with `layers` applied, by a whole new tree. */
function fullRoot(base: readonly StateUpdate[], layers: readonly PendingNode[]): Uint8Array {
  const t = new StateTree();
  t.apply(base);
  for (const l of layers) t.apply(l.updates);
  return t.root();
}

Deno.test("state roots: the overlay root of committed state and pending Nodes equals the whole tree's, as Nodes commit", () => {
  for (let seed = 1; seed <= 10; seed++) {
    const rng = new Random(seed);
    const base = layer(rng, 0, 0).updates;
    const tree = new StateTree();
    tree.apply(base);
    const roots = new StateRoots(() => tree);
    const chain: PendingNode[] = [];
    let committed = 0;
    for (let h = 1; h <= 12; h++) {
      chain.push(layer(rng, h, 0));
      // The parent's root, asked with the Nodes from the committed state (sometimes repeating
      // the last committed ones: idempotent), then once more (kept).
      const repeat = Math.min(committed, rng.int(3));
      const pending = chain.slice(committed - repeat);
      const want = fullRoot(base, chain);
      const request = { parent: chain[h - 1]!.hash, height: h, pending };
      assert.deepEqual(roots.root(request), want, `seed ${seed} height ${h}`);
      assert.deepEqual(roots.root(request), want);
      // Commit a Node now and then (two or three behind the tip, as the 3-chain rule does).
      while (committed < h - 2 - rng.int(2)) {
        const c = chain[committed++]!;
        tree.apply(c.updates);
        roots.committed(c.hash, c.height);
        // Told twice (the runtime's state service and withStateRoots both may): nothing more.
        const kept = roots.size;
        roots.committed(c.hash, c.height);
        assert.equal(roots.size, kept);
        assert.deepEqual(tree.root(), fullRoot(base, chain.slice(0, committed)));
      }
    }
    assert.ok(roots.size <= 3, `${roots.size} overlays kept`);
  }
});

Deno.test("state roots: a fork's overlays are dropped when the other branch commits; the root of genesis is the empty tree's", () => {
  const rng = new Random(7);
  const tree = new StateTree();
  const roots = new StateRoots(() => tree);
  assert.deepEqual(
    roots.root({ parent: new Uint8Array(32), height: 0, pending: [] }),
    EMPTY_STATE_ROOT,
  );
  const a1 = layer(rng, 1, 1);
  const a2 = layer(rng, 2, 1);
  const b1 = layer(rng, 1, 2);
  const b2 = layer(rng, 2, 2);
  roots.root({ parent: a2.hash, height: 2, pending: [a1, a2] });
  roots.root({ parent: b2.hash, height: 2, pending: [b1, b2] });
  assert.equal(roots.size, 2);
  tree.apply(b1.updates);
  roots.committed(b1.hash, 1);
  assert.equal(roots.size, 1, "the a-branch overlay is gone");
  const b3 = layer(rng, 3, 2);
  assert.deepEqual(
    roots.root({ parent: b3.hash, height: 3, pending: [b2, b3] }),
    fullRoot([], [b1, b2, b3]),
  );
});

Deno.test("state roots: beyond STATE_ROOT_OVERLAYS_MAX uncommitted Nodes (a long catch-up) roots stay right, and so does the tree as they commit", () => {
  const rng = new Random(11);
  const tree = new StateTree();
  const roots = new StateRoots(() => tree);
  const chain: PendingNode[] = [];
  const n = STATE_ROOT_OVERLAYS_MAX + 16;
  for (let h = 1; h <= n; h++) {
    chain.push(layer(rng, h, 0));
    const root = roots.root({ parent: chain[h - 1]!.hash, height: h, pending: chain.slice() });
    if (h % 20 === 0 || h === n) assert.deepEqual(root, fullRoot([], chain), `height ${h}`);
  }
  assert.equal(roots.size, STATE_ROOT_OVERLAYS_MAX);
  for (const c of chain) {
    tree.apply(c.updates);
    roots.committed(c.hash, c.height);
  }
  assert.deepEqual(tree.root(), fullRoot([], chain));
  assert.equal(roots.size, 0);
});

/** A one-validator Engine whose counter app is wrapped with state roots over a tree. */
async function engineWith(
  wrap: (app: Application) => Application,
): Promise<{ engine: Engine; events: ConsensusEvent[]; storage: MemoryStorage }> {
  const signer = ed25519Signer(deriveSecretKey("state-roots-test"));
  const key = enc.encode("count");
  const tree = new StateTree();
  const counter: Application = {
    produceCommand: () => ({ command: new Uint8Array([1]) }),
    async validateNode({ node, state }) {
      const old = await state.get(key);
      const next = (old?.[0] ?? 0) + 1;
      return {
        ok: true,
        updates: [[key, new Uint8Array([next % 256])], [
          enc.encode(`h/${node.height}`),
          node.command,
        ]],
      };
    },
    // Slow and async: roots must not depend on when the Application has absorbed a commit.
    onCommit: () => new Promise((r) => setTimeout(r, 1)),
  };
  const events: ConsensusEvent[] = [];
  const storage = new MemoryStorage();
  const engine = await Engine.open({
    chainId: "roots",
    validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
    signer,
    verifier: ed25519Verifier(),
    storage,
    app: wrap(withStateRoots(counter, new StateRoots(() => tree), (n) => tree.apply(n.updates))),
    network: { send: () => {}, broadcast: () => {} },
    nodeSource: { fetch: () => {} },
    clock: systemClock(),
    onEvent: (e) => events.push(e),
  });
  return { engine, events, storage };
}

async function runFor(engine: Engine, ms: number): Promise<void> {
  engine.start();
  await new Promise((r) => setTimeout(r, ms));
  await engine.stop();
}

Deno.test("state roots: an Engine commits Nodes whose roots are the state of their committed ancestors", async () => {
  const { engine, events, storage } = await engineWith((app) => app);
  await runFor(engine, 400);
  const commits = events.filter((e) => e.type === "node:commit");
  assert.ok(commits.length >= 5, `${commits.length} commits`);
  assert.deepEqual(events.filter((e) => e.type === "message:reject"), []);
  // The chain's roots, recomputed from its Nodes' updates.
  const check = new StateTree();
  let parent = 0;
  for (let h = 1; h <= engine.core.tree.root.node.height; h++) {
    const stored = await storage.getNode((await storage.committedHash(h))!);
    assert.deepEqual(stored!.node.stateRoot, check.root(), `height ${h}`);
    check.apply(stored!.updates);
    parent = h;
  }
  assert.ok(parent >= 5);
});

Deno.test("state roots: a Node with a wrong root is refused (state-root-mismatch), and so is a root on a chain without roots", async () => {
  plantedSafetyBugs.proposeWrongStateRoot = true;
  try {
    const { engine, events } = await engineWith((app) => app);
    await runFor(engine, 200);
    assert.equal(events.filter((e) => e.type === "node:commit").length, 0);
    assert.ok(
      events.some((e) => e.type === "message:reject" && e.reason === "state-root-mismatch"),
    );
  } finally {
    plantedSafetyBugs.proposeWrongStateRoot = false;
  }
  // The leader computes a root; then the replica (the same Engine) has no hook: refused.
  const { engine, events } = await engineWith((app) => {
    const changing: { -readonly [K in keyof Application]: Application[K] } = { ...app };
    changing.produceCommand = (r) => {
      delete changing.stateRoot;
      return app.produceCommand(r);
    };
    return changing;
  });
  await runFor(engine, 200);
  assert.equal(events.filter((e) => e.type === "node:commit").length, 0);
  assert.ok(events.some((e) => e.type === "message:reject" && e.reason === "state-root-mismatch"));
});
