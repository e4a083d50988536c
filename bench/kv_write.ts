/**
 * Bulk commit rate of {@link DenoKvStorage.write} by batch size: the bench chain's Nodes (32-byte
 * commands, QCs of 3 signatures, 2 counter updates each) written as `write({ commits })` of
 * `size` Nodes each, durable, in a temp dir. Shows where a batch stops fitting one Deno KV atomic
 * operation (see docs/PERFORMANCE.md, finding 3). Not a section of the bench.
 *
 * Usage: `deno run --allow-read --allow-write bench/kv_write.ts [--sizes 50,100,200,250,300,500]
 * [--nodes 1000]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import type { StoredNode } from "../src/storage/storage.ts";
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
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-kv-" });
  try {
    const storage = await DenoKvStorage.open(`${dir}/write.kv`);
    const started = performance.now();
    for (let i = 0; i < nodes.length; i += size) {
      await storage.write({ commits: nodes.slice(i, i + size) });
    }
    const ms = performance.now() - started;
    await storage.close();
    return nodes.length / (ms / 1000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      sizes: { type: "string", default: "50,100,200,250,300,500" },
      nodes: { type: "string", default: "1000" },
    },
  });
  const count = Number(values.nodes);
  const chain = await buildChain(benchValidators(4), {
    length: count,
    absent: 0,
    realSignaturesFrom: count + 1,
  });
  for (const size of values.sizes.split(",").map(Number)) {
    const rate = await kvCommitRate(chain.nodes, size);
    console.log(`${String(size).padStart(5)} commits per write: ${rate.toFixed(0)} Nodes/s`);
  }
}

if (import.meta.main) await main();
