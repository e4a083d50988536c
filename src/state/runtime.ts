/**
 * The state service in a replica runtime: what `src/runtime/replica.ts` calls, kept here so that the
 * runtime needs only a few lines (the Application wrapper that feeds commits to the tree, the
 * snapshot join before the Engine opens, and retention after checkpoints). See SPECIFICATION.md
 * 15.3-15.5.
 *
 * @module
 */
import type { Application } from "../app.ts";
import type { Verifier } from "../crypto.ts";
import type { DenoKvStorage } from "../storage/deno_kv.ts";
import type { Storage, StoredNode } from "../storage/storage.ts";
import type { PublicKey } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";
import { withStateRoots } from "./roots.ts";
import { StateService } from "./service.ts";
import {
  isSnapshotStore,
  recoverSnapshotInstall,
  SnapshotSyncError,
  syncSnapshot,
} from "./sync.ts";

/**
 * Default of `stateSyncLagHeights`: a replica this far behind replays ~4,096 Nodes otherwise (about
 * 14 s at the ~300 Nodes/s replay rate measured in docs/PERFORMANCE.md).
 */
export const STATE_SYNC_LAG_HEIGHTS = 4096;

/** What the runtime gives the state service. */
export interface StateRuntimeOptions {
  /** Chain id. */
  readonly chainId: string;
  /** The validator set. */
  readonly validators: ValidatorSet;
  /** Signature checks (of the commit proofs of snapshots). */
  readonly verifier?: Verifier;
  /** The store (the state tree is built from it; snapshots install into it). */
  readonly storage: Storage;
  /** The other validators' HTTP APIs. */
  readonly peers: readonly { readonly publicKey: PublicKey; readonly url: string }[];
  /** Request headers for a peer request (admission). */
  readonly authorize: (method: string, url: URL) => Promise<Record<string, string>>;
  /** Checkpoint interval, heights; 0 turns the service off. Default 64. */
  readonly checkpointInterval?: number;
  /** Delete committed Nodes older than the kept snapshots need. Default false. */
  readonly pruneCommitted?: boolean;
  /** Committed Nodes below a snapshot that joiners fetch and retention keeps. Default 1024. */
  readonly historyHeights?: number;
  /**
   * With state sync: a store whose committed head is more than this many heights below the newest
   * provable snapshot a peer offers is replaced by it at start. Default
   * {@link STATE_SYNC_LAG_HEIGHTS}; 0: only an empty store syncs.
   */
  readonly stateSyncLagHeights?: number;
  /** Log sink. */
  readonly log: (level: "info" | "warn", event: string, fields: Record<string, unknown>) => void;
}

/**
 * A state service for a replica, or null when off (interval 0, or a store that cannot list its
 * state).
 */
export function createStateService(o: StateRuntimeOptions): StateService | null {
  const interval = o.checkpointInterval ?? 64;
  if (interval === 0 || o.storage.stateEntries === undefined) return null;
  let pruning = false;
  const prune = (keepFrom: number): void => {
    const storage = o.storage as Partial<DenoKvStorage>;
    if (o.pruneCommitted !== true || storage.pruneCommittedBelow === undefined || pruning) return;
    pruning = true;
    storage.pruneCommittedBelow(keepFrom).then(
      (deleted) => {
        if (deleted > 0) o.log("info", "state:pruned", { below: keepFrom, deleted });
      },
      (e) => o.log("warn", "state:prune-failed", { reason: String(e) }),
    ).finally(() => pruning = false);
  };
  return new StateService({
    checkpointInterval: interval,
    log: (event, fields) => o.log("info", event, fields),
    onCheckpoint: prune,
    historyHeights: o.historyHeights,
  });
}

/**
 * Before the Engine opens: finishes or undoes an install cut by a crash, joins by snapshot when
 * asked and the store has no committed Node (falling back to replay when no peer offers a
 * verifiable snapshot), and builds the state tree from the store otherwise. Resolves to the
 * committed Nodes a snapshot install wrote (ascending, the head last), or null without one.
 */
export async function prepareState(
  state: StateService | null,
  o: StateRuntimeOptions & { readonly stateSync: boolean; readonly signal?: AbortSignal },
): Promise<readonly StoredNode[] | null> {
  await recoverSnapshotInstall(o.storage);
  if (state === null) return null;
  let installed: readonly StoredNode[] | null = null;
  const storage = o.storage;
  const head = await storage.committedHead();
  const lag = o.stateSyncLagHeights ?? STATE_SYNC_LAG_HEIGHTS;
  // Spec 15.4: an empty store joins by snapshot; one far behind (by more than `lag` heights) too.
  const above = head === null ? undefined : lag > 0 ? head.height + lag : null;
  if (o.stateSync && isSnapshotStore(storage) && above !== null) {
    const t0 = performance.now();
    try {
      const r = await syncSnapshot({
        aboveHeight: above,
        chainId: o.chainId,
        validators: o.validators,
        verifier: o.verifier,
        peers: o.peers.map((p) => p.url),
        storage,
        authorize: o.authorize,
        log: (event, fields) => o.log("info", event, fields),
        signal: o.signal,
        historyHeights: o.historyHeights,
      });
      state.adopt(r.tree);
      installed = r.chain;
      o.log("info", "sync:installed", {
        height: r.height,
        keys: r.keys,
        ms: Math.round(performance.now() - t0),
        dropped: r.dropped,
        replaced: head?.height ?? null,
      });
    } catch (e) {
      if (!(e instanceof SnapshotSyncError)) throw e;
      const level = e.reason === "not-behind" ? "info" : "warn";
      o.log(level, "sync:skipped", { reason: e.message });
    }
  }
  if (!state.loaded) await state.load(storage.stateEntries!());
  return installed;
}

/**
 * `app` with state roots (SPECIFICATION.md 7): its Nodes commit to the root of the state tree,
 * and its commits also go to the tree. Without a state service, `app` as is (no roots).
 */
export function withStateTree(app: Application, state: StateService | null): Application {
  if (state === null) return app;
  return withStateRoots(app, state.roots, (notice) => state.onCommit(notice));
}
