/**
 * The state tree's cost (src/state/tree.ts), alone: `deno run bench/state_tree.ts [--keys N]`.
 *
 * Applies updates as the key-value replicas' commits do (keys `"k/" + 16 random bytes`, 32-byte
 * values, 400 updates per Node), then a checkpoint (root, freeze) every 64 Nodes, over a state
 * that grows to `--keys` keys (default 100,000), and prints the cost per update: apply, the
 * checkpoint's rehash and copy amortized over the updates since the last one, and the building
 * of a tree from N stored entries (what a replica does at start). Beside it, the same Nodes with
 * state roots (SPECIFICATION.md 7) as one replica computes them: the root of each Node's parent
 * asked once (the check before voting), each Node committed two heights later (the tree takes its
 * overlay's hashes), a checkpoint freeze every 64 Nodes.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { PendingNode } from "../src/app.ts";
import { StateRoots } from "../src/state/roots.ts";
import { StateTree } from "../src/state/tree.ts";

const { values } = parseArgs({ args: Deno.args, options: { keys: { type: "string" } } });
const keys = Number(values.keys ?? 100_000);
const perNode = 400;
const nodesPerCheckpoint = 64;

function randomKey(): Uint8Array {
  const k = new Uint8Array(18);
  k[0] = 0x6b; // "k/"
  k[1] = 0x2f;
  crypto.getRandomValues(k.subarray(2));
  return k;
}

const tree = new StateTree();
const rooted = new StateTree();
const roots = new StateRoots(() => rooted);
const pending: PendingNode[] = [];
const pool: Uint8Array[] = [];
let applyMs = 0;
let checkpointMs = 0;
let rootsMs = 0;
let updates = 0;
let nodes = 0;
const t0 = performance.now();
while (updates < 2 * keys) {
  const batch: [Uint8Array, Uint8Array][] = [];
  for (let i = 0; i < perNode; i++) {
    // New keys until the state holds `keys`, then overwrites of existing ones.
    const key = pool.length < keys ? randomKey() : pool[(Math.random() * pool.length) | 0]!;
    if (pool.length < keys) pool.push(key);
    batch.push([key, crypto.getRandomValues(new Uint8Array(32))]);
  }
  const a = performance.now();
  tree.apply(batch);
  applyMs += performance.now() - a;
  updates += batch.length;
  if (++nodes % nodesPerCheckpoint === 0) {
    const c = performance.now();
    tree.freeze();
    checkpointMs += performance.now() - c;
  }
  const hash = new Uint8Array(32);
  new DataView(hash.buffer).setUint32(0, nodes);
  pending.push({ hash, height: nodes, updates: batch });
  const r = performance.now();
  roots.root({ parent: hash, height: nodes, pending });
  while (pending.length > 2) {
    const c = pending.shift()!;
    rooted.apply(c.updates);
    roots.committed(c.hash, c.height);
    if (c.height % nodesPerCheckpoint === 0) rooted.freeze();
  }
  rootsMs += performance.now() - r;
}
const totalMs = performance.now() - t0;
const entries = pool.map((k) => [k, new Uint8Array(32)] as [Uint8Array, Uint8Array]);
const b = performance.now();
const built = new StateTree();
built.apply(entries);
built.root();
const buildMs = performance.now() - b;
const us = (ms: number): string => (1000 * ms / updates).toFixed(2);
console.log(
  `${updates} updates over ${tree.size} keys (${nodes} Nodes of ${perNode}, a checkpoint every ` +
    `${nodesPerCheckpoint}): apply ${us(applyMs)} µs/update, checkpoint ${us(checkpointMs)} ` +
    `µs/update (${(checkpointMs / Math.floor(nodes / nodesPerCheckpoint)).toFixed(0)} ms each), ` +
    `total with key generation ${(totalMs / 1000).toFixed(1)} s; ` +
    `with state roots in Nodes (apply and checkpoints included) ${us(rootsMs)} µs/update ` +
    `(${(rootsMs / nodes).toFixed(1)} ms per Node); ` +
    `building a tree of ${entries.length} entries: ${buildMs.toFixed(0)} ms`,
);
