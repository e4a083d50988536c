/**
 * CPU cost of the state roots Nodes carry (SPECIFICATION.md 7): a state of `--keys` keys (4-byte
 * keys, 40-byte values, as the key-value bench writes) in a {@link StateTree}, then a chain of
 * `--nodes` Nodes of `--updates` updates each (new keys), as one replica sees it: the root of each
 * Node's parent asked once (the check before voting; a leader's root for the same parent is the
 * same kept overlay), each Node committed two heights later (the tree takes its overlay's hashes).
 * Beside it, what the tree cost before Nodes carried roots: the same commits applied and the tree
 * rehashed once per checkpoint (`--interval` heights).
 *
 * Not a section of the bench.
 *
 * Usage: `deno run bench/state_roots.ts [--keys 100000] [--nodes 200] [--updates 700]
 * [--interval 64]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { PendingNode } from "../src/app.ts";
import { StateRoots } from "../src/state/roots.ts";
import { StateTree } from "../src/state/tree.ts";
import type { StateUpdate } from "../src/storage/storage.ts";

/** What one run measured, µs. */
export interface StateRootsCost {
  /** With roots: per Node (ask the parent's root once, commit two heights later). */
  readonly rootsPerNode: number;
  /** Before roots: per Node (apply at commit, rehash at each checkpoint). */
  readonly checkpointsPerNode: number;
}

function updatesOf(first: number, count: number): StateUpdate[] {
  const out: StateUpdate[] = [];
  for (let i = first; i < first + count; i++) {
    const key = new Uint8Array(6);
    key.set([0x6b, 0x2f]); // "k/"
    new DataView(key.buffer).setUint32(2, Math.imul(i, 2654435761) >>> 0);
    const value = new Uint8Array(40);
    new DataView(value.buffer).setUint32(0, i);
    out.push([key, value]);
  }
  return out;
}

function chainOf(keys: number, nodes: number, updates: number): PendingNode[] {
  return Array.from({ length: nodes }, (_, n) => {
    const hash = new Uint8Array(32);
    new DataView(hash.buffer).setUint32(0, n + 1);
    return { hash, height: n + 1, updates: updatesOf(keys + n * updates, updates) };
  });
}

function baseTree(keys: number): StateTree {
  const tree = new StateTree();
  for (let i = 0; i < keys; i += 4096) tree.apply(updatesOf(i, Math.min(4096, keys - i)));
  tree.root();
  return tree;
}

/**
 * Measures both ways on fresh trees of `keys` keys.
 *
 * @example
 * ```ts
 * import { measureStateRoots } from "./state_roots.ts";
 * const cost = measureStateRoots(1000, 20, 100, 64);
 * console.log(cost.rootsPerNode / cost.checkpointsPerNode);
 * ```
 */
export function measureStateRoots(
  keys: number,
  nodes: number,
  updates: number,
  interval: number,
): StateRootsCost {
  const chain = chainOf(keys, nodes, updates);
  // With roots: the parent's root, asked with the Nodes above the committed state.
  let tree = baseTree(keys);
  const live = tree;
  const roots = new StateRoots(() => live);
  let committed = 0;
  let t0 = performance.now();
  for (let h = 1; h <= nodes; h++) {
    roots.root({ parent: chain[h - 1]!.hash, height: h, pending: chain.slice(committed, h) });
    while (committed < h - 2) {
      const c = chain[committed++]!;
      live.apply(c.updates);
      roots.committed(c.hash, c.height);
    }
  }
  const rootsPerNode = (performance.now() - t0) * 1000 / nodes;
  // Before: commits applied, the tree rehashed (frozen) at each checkpoint.
  tree = baseTree(keys);
  t0 = performance.now();
  for (let h = 1; h <= nodes; h++) {
    tree.apply(chain[h - 1]!.updates);
    if (h % interval === 0) tree.freeze();
  }
  const checkpointsPerNode = (performance.now() - t0) * 1000 / nodes;
  return { rootsPerNode, checkpointsPerNode };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      keys: { type: "string", default: "100000" },
      nodes: { type: "string", default: "200" },
      updates: { type: "string", default: "700" },
      interval: { type: "string", default: "64" },
    },
  });
  const [keys, nodes, updates, interval] = [
    values.keys,
    values.nodes,
    values.updates,
    values.interval,
  ]
    .map(Number) as [number, number, number, number];
  const c = measureStateRoots(keys, nodes, updates, interval);
  const per = (us: number): string =>
    `${(us / 1000).toFixed(2)} ms/Node, ${(us / updates).toFixed(1)} µs/update`;
  console.log(`${keys} keys, ${nodes} Nodes of ${updates} updates`);
  console.log(`  roots in Nodes:             ${per(c.rootsPerNode)}`);
  console.log(`  checkpoints every ${interval}:     ${per(c.checkpointsPerNode)}`);
  console.log(
    `  extra per update:           ${
      ((c.rootsPerNode - c.checkpointsPerNode) / updates).toFixed(1)
    } µs`,
  );
}
