/**
 * An in-memory {@link Storage}: for tests and the simulator. Each write is atomic. "Crashing" a
 * replica that uses it keeps the store (it models the disk) and discards everything else.
 *
 * @module
 */
import { assert } from "../errors.ts";
import { bytesEqual, fromHex, toHex } from "../types.ts";
import type { Hash } from "../types.ts";
import type { CommittedHead, SafetyState, Storage, StoredNode, WriteBatch } from "./storage.ts";

/**
 * In-memory storage.
 *
 * @example
 * ```ts
 * import { MemoryStorage } from "./memory.ts";
 * const store = new MemoryStorage();
 * console.log(await store.loadSafety()); // null
 * ```
 */
export class MemoryStorage implements Storage {
  #safety: SafetyState | null = null;
  readonly #nodes = new Map<string, StoredNode>();
  readonly #committed: Hash[] = [];
  readonly #uncommitted = new Set<string>();
  readonly #state = new Map<string, Uint8Array>();
  /** Number of atomic writes applied (for tests and crash injection). */
  writes = 0;

  /** See {@link Storage.loadSafety}. */
  loadSafety(): Promise<SafetyState | null> {
    return Promise.resolve(this.#safety);
  }

  /** See {@link Storage.write}. */
  write(batch: WriteBatch): Promise<void> {
    // Validate the whole batch before changing anything, so the step is all or nothing.
    let head = this.#committed.length === 0 ? null : this.#committed[this.#committed.length - 1]!;
    let height = this.#committed.length;
    for (const c of batch.commits ?? []) {
      assert(c.node.height === height + 1, `commit height ${c.node.height} after ${height}`);
      assert(head === null || bytesEqual(c.node.parent, head), "commit must extend the head");
      head = c.hash;
      height++;
    }
    if (batch.safety !== undefined) this.#safety = batch.safety;
    for (const n of batch.nodes ?? []) {
      const id = toHex(n.hash);
      if (!this.#nodes.has(id)) this.#uncommitted.add(id);
      this.#nodes.set(id, n);
    }
    for (const h of batch.prune ?? []) {
      const id = toHex(h);
      if (!this.#uncommitted.has(id)) continue;
      this.#uncommitted.delete(id);
      this.#nodes.delete(id);
    }
    for (const c of batch.commits ?? []) {
      const id = toHex(c.hash);
      this.#nodes.set(id, c);
      this.#uncommitted.delete(id);
      this.#committed.push(c.hash);
      for (const [k, v] of c.updates) {
        if (v === null) this.#state.delete(toHex(k));
        else this.#state.set(toHex(k), v);
      }
    }
    this.writes++;
    return Promise.resolve();
  }

  /** See {@link Storage.getNode}. */
  getNode(hash: Hash): Promise<StoredNode | null> {
    return Promise.resolve(this.#nodes.get(toHex(hash)) ?? null);
  }

  /** See {@link Storage.committedHash}. */
  committedHash(height: number): Promise<Hash | null> {
    return Promise.resolve(this.#committed[height - 1] ?? null);
  }

  /** See {@link Storage.committedHead}. */
  committedHead(): Promise<CommittedHead | null> {
    const n = this.#committed.length;
    return Promise.resolve(n === 0 ? null : { height: n, hash: this.#committed[n - 1]! });
  }

  /** See {@link Storage.stateEntries}. */
  async *stateEntries(): AsyncIterable<readonly [Uint8Array, Uint8Array]> {
    for (const [k, v] of [...this.#state]) yield [fromHex(k)!, v];
  }

  /** See {@link Storage.getState}. */
  getState(key: Uint8Array): Promise<Uint8Array | null> {
    return Promise.resolve(this.#state.get(toHex(key)) ?? null);
  }

  /** See {@link Storage.uncommittedNodes}. */
  uncommittedNodes(): Promise<StoredNode[]> {
    return Promise.resolve([...this.#uncommitted].map((id) => this.#nodes.get(id)!));
  }

  /** See {@link Storage.close}. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
