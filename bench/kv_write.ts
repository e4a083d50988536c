/**
 * Bulk commit rate of {@link DenoKvStorage.write} by batch size: the bench chain's Nodes (32-byte
 * commands, QCs of 3 signatures, 2 counter updates each) written as `write({ commits })` of
 * `size` Nodes each, durable, in a temp dir. Shows where a batch stops fitting one Deno KV atomic
 * operation (see docs/PERFORMANCE.md, finding 3). Then two write shapes of a replica:
 *
 * - `insert+commit`: the steady state, one write per Node that inserts it and commits an earlier
 *   one it stored before, with the safety state (the Engine's write per view);
 * - `wide commit`: Nodes whose commit carries `--updates` small state updates (keys of 10 bytes,
 *   values of 30), each inserted and then committed in writes of their own (more than one Deno KV
 *   atomic operation holds from about 950 updates on).
 *
 * Not a section of the bench.
 *
 * Usage: `deno run --allow-read --allow-write bench/kv_write.ts
 * [--sizes 50,100,200,250,300,500,1000] [--nodes 1000] [--updates 4000] [--wide 20]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { genesisQC, nodeHash } from "../src/codec.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import type { SafetyState, StateUpdate, StoredNode } from "../src/storage/storage.ts";
import type { Hash, Node } from "../src/types.ts";
import { benchValidators, buildChain } from "./chain.ts";

/**
 * Nodes per second committed by writes of `size` commits, over `nodes` Nodes.
 *
 * @example
 * ```ts
 * import { kvCommitRate } from "./kv_write.ts";
 * // await kvCommitRate(chain.nodes, 250)
 * ```
 */
export async function kvCommitRate(
  nodes: readonly StoredNode[],
  size: number,
): Promise<number> {
  return await withStore(async (storage) => {
    const started = performance.now();
    for (let i = 0; i < nodes.length; i += size) {
      await storage.write({ commits: nodes.slice(i, i + size) });
    }
    return nodes.length / ((performance.now() - started) / 1000);
  });
}

/**
 * Mean milliseconds of a replica's steady-state write: insert Node `k` and commit Node `k - 3`
 * (stored by an earlier write), with a safety state.
 *
 * @example
 * ```ts
 * import { kvSteadyWriteMs } from "./kv_write.ts";
 * // await kvSteadyWriteMs(chain.nodes, safety)
 * ```
 */
export async function kvSteadyWriteMs(
  nodes: readonly StoredNode[],
  safety: SafetyState,
): Promise<number> {
  return await withStore(async (storage) => {
    const started = performance.now();
    for (const [k, stored] of nodes.entries()) {
      const commit = k >= 3 ? [nodes[k - 3]!] : [];
      await storage.write({ nodes: [stored], commits: commit, safety });
    }
    return (performance.now() - started) / nodes.length;
  });
}

/**
 * Mean milliseconds of a write that commits one Node carrying `updates` state updates (inserted
 * by a write of its own before, not timed), over `count` such Nodes; or the error it fails with.
 *
 * @example
 * ```ts
 * import { kvWideCommitMs } from "./kv_write.ts";
 * // await kvWideCommitMs(4000, 20)
 * ```
 */
export async function kvWideCommitMs(updates: number, count: number): Promise<number | string> {
  const nodes = wideChain(updates, count);
  return await withStore(async (storage) => {
    let ms = 0;
    for (const stored of nodes) {
      try {
        await storage.write({ nodes: [stored] });
        const started = performance.now();
        await storage.write({ commits: [stored] });
        ms += performance.now() - started;
      } catch (e) {
        return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      }
    }
    return ms / nodes.length;
  });
}

async function withStore<T>(f: (storage: DenoKvStorage) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-kv-" });
  try {
    const storage = await DenoKvStorage.open(`${dir}/write.kv`);
    try {
      return await f(storage);
    } finally {
      await storage.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `count` chained Nodes (placeholder certificates: storage never verifies) of `updates` each. */
function wideChain(updates: number, count: number): StoredNode[] {
  const out: StoredNode[] = [];
  let parent: Hash = new Uint8Array(32);
  for (let k = 1; k <= count; k++) {
    const node: Node = {
      view: k,
      height: k,
      parent,
      justify: genesisQC("bench"),
      command: new Uint8Array(32).fill(k % 256),
      configHash: new Uint8Array(32),
      proposer: new Uint8Array(32),
      stateRoot: new Uint8Array(0),
    };
    const list = Array.from({ length: updates }, (_, i): StateUpdate => [
      new TextEncoder().encode(`k${String(i).padStart(9, "0")}`),
      new Uint8Array(30).fill((k + i) % 256),
    ]);
    const hash = nodeHash(node);
    out.push({ node, hash, updates: list });
    parent = hash;
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      sizes: { type: "string", default: "50,100,200,250,300,500,1000" },
      nodes: { type: "string", default: "1000" },
      updates: { type: "string", default: "4000" },
      wide: { type: "string", default: "20" },
      steady: { type: "string", default: "300" },
    },
  });
  const count = Number(values.nodes);
  const chain = await buildChain(benchValidators(4), {
    length: Math.max(count, Number(values.steady)),
    absent: 0,
    realSignaturesFrom: count + 1,
  });
  for (const size of values.sizes.split(",").filter((s) => s !== "").map(Number)) {
    const rate = await kvCommitRate(chain.nodes.slice(0, count), size);
    console.log(`${String(size).padStart(5)} commits per write: ${rate.toFixed(0)} Nodes/s`);
  }
  const steady = Number(values.steady);
  if (steady > 0) {
    const last = chain.nodes[steady - 1]!.node;
    const safety: SafetyState = {
      currentView: last.view,
      lastVotedView: last.view,
      lockedQC: last.justify,
      highQC: last.justify,
      highTC: null,
    };
    const ms = await kvSteadyWriteMs(chain.nodes.slice(0, steady), safety);
    console.log(`insert+commit (${steady} writes): ${ms.toFixed(2)} ms per write`);
  }
  const wide = Number(values.wide);
  if (wide > 0) {
    const updates = Number(values.updates);
    const ms = await kvWideCommitMs(updates, wide);
    const shown = typeof ms === "number" ? `${ms.toFixed(2)} ms per commit` : `failed: ${ms}`;
    console.log(`wide commit (${updates} updates, ${wide} Nodes): ${shown}`);
  }
}

if (import.meta.main) await main();
