/**
 * What a replica checks and reads before its Engine starts: the planted-bug switches, the pool's
 * restore from the store, and the Engine's Application limits for batches.
 *
 * @module
 */
import type { AppLimits } from "../app.ts";
import { DEFAULT_APP_LIMITS } from "../app.ts";
import { plantedSafetyBugs } from "../consensus/safety.ts";
import { ConfigError } from "../errors.ts";
import { readCommitted, type Storage, type StoredNode } from "../storage/storage.ts";
import { bytesEqual } from "../types.ts";
import { plantedBugs } from "../validators.ts";
import { plantedReconfigBugs } from "../consensus/reconfig.ts";
import type { BatchLimits, MempoolRestore } from "./mempool.ts";

/**
 * Throws unless every planted-bug switch (test-only) is off.
 *
 * @throws {ConfigError} `planted-bug` naming the switches that are on
 * @example
 * ```ts
 * import { refusePlantedBugs } from "./startup.ts";
 * refusePlantedBugs(); // fine: all switches are off
 * ```
 */
export function refusePlantedBugs(): void {
  const on = [
    ...Object.entries(plantedSafetyBugs).filter(([, v]) => v).map(([k]) => `safety.${k}`),
    ...Object.entries(plantedBugs).filter(([, v]) => v).map(([k]) => `validators.${k}`),
    ...Object.entries(plantedReconfigBugs).filter(([, v]) => v).map(([k]) => `reconfig.${k}`),
  ];
  if (on.length > 0) {
    throw new ConfigError("planted-bug", `refusing to start: planted bug switch on: ${on}`);
  }
}

/** Committed heights read per step while restoring (progress is reported between steps). */
const RESTORE_STEP_HEIGHTS = 256;

/**
 * What the pool needs from the store before the Engine starts (see {@link Mempool.restore}): the
 * committed Nodes of the last `horizon` heights and the uncommitted Nodes. `onProgress` hears
 * the heights read so far and the heights to read, after each step. `written`: the committed
 * Nodes a snapshot install just wrote (ascending, ending at the head), taken instead of reading
 * them back.
 *
 * @example
 * ```ts
 * import { restoreOf } from "./startup.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * const r = await restoreOf(new MemoryStorage(), 1024, (read, total) => console.log(read, total));
 * console.log(r.committedHeight); // 0: an empty store
 * ```
 */
export async function restoreOf(
  storage: Storage,
  horizon: number,
  onProgress?: (read: number, total: number) => void,
  written?: readonly StoredNode[],
): Promise<MempoolRestore> {
  const head = await storage.committedHead();
  const top = head?.height ?? 0;
  const from = Math.max(1, top - horizon + 1);
  const last = written?.at(-1);
  if (last !== undefined && head !== null && bytesEqual(last.hash, head.hash)) {
    const committed = written!.filter((s) => s.node.height >= from);
    return { committedHeight: top, committed, uncommitted: await storage.uncommittedNodes() };
  }
  const committed = [];
  for (let start = from; start <= top; start += RESTORE_STEP_HEIGHTS) {
    const end = Math.min(top, start + RESTORE_STEP_HEIGHTS - 1);
    const part = await readCommitted(storage, start, end);
    committed.push(...part);
    onProgress?.(end - from + 1, top - from + 1);
    if (part.length < end - start + 1) break;
  }
  const uncommitted = await storage.uncommittedNodes();
  return { committedHeight: top, committed, uncommitted };
}

/**
 * Engine Application limits that accept every batch the mempool accepts: a batch within its
 * {@link BatchLimits} is never refused by the Engine after the replicas validated it.
 */
export function appLimitsFor(batch: BatchLimits): AppLimits {
  const d = DEFAULT_APP_LIMITS;
  return {
    ...d,
    commandBytesMax: Math.max(d.commandBytesMax, batch.batchBytesMax),
    updatesMax: Math.max(d.updatesMax, batch.batchUpdatesMax),
    // Keys total at most half of the batch's key budget (2 * key.length + 16 each).
    updateKeysBytesMax: Math.max(d.updateKeysBytesMax, batch.batchUpdateKeyBytesMax),
    updatesBytesMax: Math.max(d.updatesBytesMax, batch.batchUpdateBytesMax),
  };
}
