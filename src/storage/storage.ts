/**
 * The storage interface the replica persists through. Implementations: {@link MemoryStorage}
 * (tests, the simulator) and the Deno KV store (the default). See SPECIFICATION.md section 6.
 *
 * Every {@link Storage.write} is one atomic, durable step: when its promise resolves, all of the
 * batch is on disk, and after a crash either all of it or none of it is there.
 *
 * @module
 */
import type { Hash, Node, QuorumCertificate, TimeoutCertificate } from "../types.ts";

/**
 * The state a replica must never lose: it is what keeps an honest replica from voting twice in
 * one view or against its lock. Persisted before any vote that depends on it is sent.
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

/** One application state change: set `key` to `value`, or delete it when `value` is null. */
export type StateUpdate = readonly [key: Uint8Array, value: Uint8Array | null];

/** A Node as stored: with its hash and the state updates the Application computed for it. */
export interface StoredNode {
  /** The Node. */
  readonly node: Node;
  /** Its hash (SHA-256 of its canonical encoding). */
  readonly hash: Hash;
  /** State updates returned by the Application when it validated the Node. */
  readonly updates: readonly StateUpdate[];
}

/**
 * One atomic write. Order of application inside the step does not matter: it is all or nothing.
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

/** The highest committed Node's position. */
export interface CommittedHead {
  /** Its height. */
  readonly height: number;
  /** Its hash. */
  readonly hash: Hash;
}

/** Persistence for one replica. */
export interface Storage {
  /** The safety state, or null on a store that has never been written. */
  loadSafety(): Promise<SafetyState | null>;
  /** Applies `batch` atomically and durably. */
  write(batch: WriteBatch): Promise<void>;
  /** A stored Node (committed or not) by hash, or null. */
  getNode(hash: Hash): Promise<StoredNode | null>;
  /** The hash of the committed Node at `height`, or null. */
  committedHash(height: number): Promise<Hash | null>;
  /** The committed head, or null when nothing beyond genesis is committed. */
  committedHead(): Promise<CommittedHead | null>;
  /** Committed application state for `key`, or null. */
  getState(key: Uint8Array): Promise<Uint8Array | null>;
  /** Uncommitted stored Nodes (to rebuild the NodeTree after a restart). */
  uncommittedNodes(): Promise<StoredNode[]>;
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
    ...overrides,
  };
}
