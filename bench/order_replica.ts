/**
 * The ordering-only replica of the benchmark: the replica runtime of `deno task replica` with a
 * command machine that executes nothing. Commands are still admitted, disseminated, ordered,
 * stored durably in Deno KV with the Nodes that carry them and delivered in order (the pool
 * answers `?wait=commit` on commit); no application state is written. This is the figure that
 * compares with ordering-only HotStuff implementations.
 *
 * ```
 * deno run --allow-read --allow-write --allow-net bench/order_replica.ts --config DIR/cluster.json \
 *   --key KEYFILE --data DATADIR
 * ```
 *
 * @module
 */
import { replicaMain, runMain } from "../src/cli/mod.ts";
import type { CommandMachine } from "../src/runtime/mempool.ts";

/** Accepts every command and writes nothing. */
export const orderingMachine: CommandMachine = {
  apply: () => ({ ok: true, updates: [] }),
};

if (import.meta.main) {
  await runMain(
    () => replicaMain(Deno.args, { program: "order-replica", machine: orderingMachine }),
    "order-replica",
  );
}
