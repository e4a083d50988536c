/**
 * The storage interface the replica persists through. Implementations: {@link MemoryStorage}
 * (tests, the simulator) and the Deno KV store (the default). See SPECIFICATION.md section 6.
 *
 * Every {@link Storage.write} is durable: when its promise resolves, all of the batch is on disk.
 * After a crash during a write the store holds a prefix of the batch (see {@link WriteBatch}):
 * MemoryStorage all of it or none, the Deno KV store possibly a part, when the batch needs more
 * than one Deno KV atomic operation.
 *
 * @module
 */
import type { Hash, Node, QuorumCertificate, TimeoutCertificate } from "../types.ts";

/**
 * The state a replica must never lose: it is what keeps an honest replica from voting twice in
 * one view or against its lock. Persisted before any vote that depends on it is sent.
 *
 * @example
 * ```ts
 * import type { SafetyState } from "./storage.ts";
 * import { genesisQC } from "../codec.ts";
 * const qc = genesisQC("my-chain");
 * const fresh: SafetyState = { currentView: 0, lastVotedView: 0, lockedQC: qc, highQC: qc, highTC: null };
 * ```
 */
export interface SafetyState {
  /** The view the replica is in (liveness only: where to resume). */
  readonly currentView: number;
  /** The highest view in which this replica has voted. It never votes at or below it again. */
  readonly lastVotedView: number;
  /** The lock: QC of the highest 2-chain head seen. */
  readonly lockedQC: QuorumCertificate;
  /** The highest QC seen. */
  readonly highQC: QuorumCertificate;
  /** The highest TC seen, if any. */
  readonly highTC: TimeoutCertificate | null;
}

/**
 * One application state change: set `key` to `value`, or delete it when `value` is null.
 *
 * @example
 * ```ts
 * import type { StateUpdate } from "./storage.ts";
 * const set: StateUpdate = [new TextEncoder().encode("k"), new TextEncoder().encode("v")];
 * const del: StateUpdate = [new TextEncoder().encode("old"), null];
 * ```
 */
export type StateUpdate = readonly [key: Uint8Array, value: Uint8Array | null];

/**
 * A Node as stored: with its hash and the state updates the Application computed for it.
 *
 * @example
 * ```ts
 * import type { StoredNode } from "./storage.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * const g = genesisNode("my-chain");
 * const stored: StoredNode = { node: g, hash: nodeHash(g), updates: [] };
 * ```
 */
export interface StoredNode {
  /** The Node. */
  readonly node: Node;
  /** Its hash (SHA-256 of its canonical encoding). */
  readonly hash: Hash;
  /** State updates returned by the Application when it validated the Node. */
  readonly updates: readonly StateUpdate[];
}

/**
 * One durable write. When {@link Storage.write} resolves, all of it is on disk. A crash during the
 * write leaves a prefix of it, in this order:
 *
 * 1. `nodes`, each whole (in batch order);
 * 2. `commits`, in height order, each whole: its record, its height and all of its `updates`,
 *    with the committed head on the last whole one. The updates of the next commit may have
 *    landed in part: that Node is then stored uncommitted (with its updates), and the head is
 *    below it;
 * 3. `safety`, whole;
 * 4. `prune`.
 *
 * So readers of committed state ({@link Storage.getState}) may see some updates of a Node that
 * is above the committed head, during a write and after a crash in one. A commit is only ever
 * written for a Node the commit rule has decided, so none of it is rolled back: after a restart
 * the Node is one of {@link Storage.uncommittedNodes}, attaches to the head, and a later write
 * commits it again with the same updates (setting or deleting whole values: idempotent).
 * Implementations that can apply a batch at once (MemoryStorage) do; the Deno KV store splits
 * only batches larger than one of its atomic operations (see SPECIFICATION.md section 6.3).
 *
 * @example
 * ```ts
 * import type { WriteBatch } from "./storage.ts";
 * import { MemoryStorage } from "./memory.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * const g = genesisNode("my-chain");
 * const batch: WriteBatch = { nodes: [{ node: g, hash: nodeHash(g), updates: [] }] };
 * await new MemoryStorage().write(batch); // all or nothing
 * ```
 */
export interface WriteBatch {
  /** New safety state, if it changed. */
  readonly safety?: SafetyState;
  /** Nodes inserted into the NodeTree (not yet committed). */
  readonly nodes?: readonly StoredNode[];
  /**
   * Nodes committed by this step, in height order, each the child of the previous one (the first
   * is the child of the current committed head). Their updates are applied to the application
   * state and the committed head moves to the last one.
   */
  readonly commits?: readonly StoredNode[];
  /**
   * Uncommitted Nodes to delete: branches that a commit in this step (or earlier) abandoned.
   * Deleting a Node that is not stored is not an error.
   */
  readonly prune?: readonly Hash[];
}

/**
 * The highest committed Node's position.
 *
 * @example
 * ```ts
 * import type { CommittedHead } from "./storage.ts";
 * import { MemoryStorage } from "./memory.ts";
 * const head: CommittedHead | null = await new MemoryStorage().committedHead();
 * console.log(head); // null: nothing committed yet
 * ```
 */
export interface CommittedHead {
  /** Its height. */
  readonly height: number;
  /** Its hash. */
  readonly hash: Hash;
}

/**
 * Persistence for one replica.
 *
 * @example
 * ```ts
 * import type { Storage } from "./storage.ts";
 * import { MemoryStorage } from "./memory.ts";
 * const storage: Storage = new MemoryStorage(); // or await DenoKvStorage.open(path)
 * console.log(await storage.loadSafety()); // null on a fresh store
 * await storage.close();
 * ```
 */
export interface Storage {
  /** The safety state, or null on a store that has never been written. */
  loadSafety(): Promise<SafetyState | null>;
  /**
   * Applies `batch` durably: all of it when the promise resolves, a prefix of it after a crash
   * (see {@link WriteBatch}).
   */
  write(batch: WriteBatch): Promise<void>;
  /** A stored Node (committed or not) by hash, or null. */
  getNode(hash: Hash): Promise<StoredNode | null>;
  /** The hash of the committed Node at `height`, or null. */
  committedHash(height: number): Promise<Hash | null>;
  /** The committed head, or null when nothing beyond genesis is committed. */
  committedHead(): Promise<CommittedHead | null>;
  /**
   * Committed application state for `key`, or null. May already hold the update of a Node whose
   * commit is being written, or was cut by a crash (see {@link WriteBatch}).
   */
  getState(key: Uint8Array): Promise<Uint8Array | null>;
  /** Uncommitted stored Nodes (to rebuild the NodeTree after a restart). */
  uncommittedNodes(): Promise<StoredNode[]>;
  /**
   * Every committed application state entry, `[key, value]`, in any order (optional: the state
   * tree of state proofs and snapshots is built from it at start, see `src/state/`).
   */
  stateEntries?(): AsyncIterable<readonly [Uint8Array, Uint8Array]>;
  /** Releases resources. */
  close(): Promise<void>;
}

/**
 * `inner` with its methods replaced by `overrides` (e.g. a `write` that counts, delays or fails):
 * the one way tests, the simulator and the benchmarks wrap a store.
 *
 * @example
 * ```ts
 * import { MemoryStorage } from "./memory.ts";
 * import { wrapStorage } from "./storage.ts";
 * let writes = 0;
 * const inner = new MemoryStorage();
 * const counted = wrapStorage(inner, { write: (b) => (writes++, inner.write(b)) });
 * ```
 */
export function wrapStorage(inner: Storage, overrides: Partial<Storage>): Storage {
  return {
    loadSafety: () => inner.loadSafety(),
    write: (batch) => inner.write(batch),
    getNode: (hash) => inner.getNode(hash),
    committedHash: (height) => inner.committedHash(height),
    committedHead: () => inner.committedHead(),
    getState: (key) => inner.getState(key),
    uncommittedNodes: () => inner.uncommittedNodes(),
    close: () => inner.close(),
    ...(inner.stateEntries === undefined ? {} : { stateEntries: () => inner.stateEntries!() }),
    ...overrides,
  };
}

/** Committed Nodes read from storage at once by {@link readCommitted}. */
const COMMITTED_READS_AT_ONCE = 64;

/**
 * The committed Nodes of heights `from` to `to`, ascending, read `COMMITTED_READS_AT_ONCE` at a
 * time; stops before the first height the store does not hold (above the head, or missing).
 *
 * @example
 * ```ts
 * import { MemoryStorage } from "./memory.ts";
 * import { readCommitted } from "./storage.ts";
 * await readCommitted(new MemoryStorage(), 1, 10); // [] on an empty store
 * ```
 */
export async function readCommitted(
  storage: Storage,
  from: number,
  to: number,
): Promise<StoredNode[]> {
  const out: StoredNode[] = [];
  for (let start = Math.max(1, from); start <= to; start += COMMITTED_READS_AT_ONCE) {
    const end = Math.min(to, start + COMMITTED_READS_AT_ONCE - 1);
    const heights = Array.from({ length: end - start + 1 }, (_, i) => start + i);
    const found = await Promise.all(heights.map(async (h) => {
      const hash = await storage.committedHash(h);
      return hash === null ? null : await storage.getNode(hash);
    }));
    for (const f of found) {
      if (f === null) return out;
      out.push(f);
    }
  }
  return out;
}
