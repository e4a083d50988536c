/**
 * Polling a {@link ProcessCluster} (replicas as child processes) in tests: wait for a condition,
 * and on a time-out say what each replica logged last; read the replicas' committed heights.
 *
 * @module
 */
import { type ProcessCluster, sleep, tryStatus } from "../../examples/kv_store/cluster.ts";
import { logTails } from "../../src/testing/kill_loop.ts";

/** How often {@link pollUntil} asks (each ask is HTTP to child processes). */
const POLL_INTERVAL_MS = 100;

/** Options of {@link pollUntil}. */
export interface PollOptions {
  /** Give up after this long, ms. */
  readonly timeoutMs: number;
  /** The cluster whose replicas' log tails the time-out error carries, if any. */
  readonly cluster?: ProcessCluster;
}

/**
 * Waits until `condition` holds, asking every {@link POLL_INTERVAL_MS}.
 *
 * @throws {Error} after `timeoutMs`, naming `what`, with each replica's last log lines when a
 * cluster is given
 *
 * @example
 * ```ts
 * import { pollUntil } from "./process_cluster.ts";
 * await pollUntil("always", () => Promise.resolve(true), { timeoutMs: 10 });
 * ```
 */
export async function pollUntil(
  what: string,
  condition: () => Promise<boolean>,
  options: PollOptions,
): Promise<void> {
  const deadline = performance.now() + options.timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) {
      const logs = options.cluster === undefined ? "" : await logTails(options.cluster);
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for: ${what}${logs}`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

/**
 * The committed height of each replica in `which` (-1 for one that does not answer).
 *
 * @example
 * ```ts
 * import { committedHeights } from "./process_cluster.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function lowest(cluster: ProcessCluster): Promise<number> {
 *   return Math.min(...await committedHeights(cluster, [0, 1, 2]));
 * }
 * ```
 */
export async function committedHeights(
  cluster: ProcessCluster,
  which: readonly number[],
): Promise<number[]> {
  const s = await Promise.all(which.map((i) => tryStatus(cluster.urls[i]!)));
  return s.map((x) => x?.committed.height ?? -1);
}
