/**
 * An exact, bounded read cache of application state in front of a {@link Storage}.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { Storage, StoredNode, WriteBatch } from "../storage/storage.ts";
import type { Hash } from "../types.ts";
import { toHex } from "../types.ts";

/**
 * A {@link Storage} that caches application state values. Exact, because every write goes
 * through it: a committed update replaces the cached value of its key, and a read that a write
 * overtook is not cached. Bounded: the oldest entries are dropped.
 */
export class CachedStateStorage implements Storage {
  readonly #inner: Storage;
  readonly #max: number;
  readonly #cache = new Map<string, Uint8Array | null>();
  /** Writes finished so far. */
  #seq = 0;

  readonly #onWrite: ((ms: number) => void) | undefined;

  /** `onWrite` hears each write's duration, ms. */
  constructor(inner: Storage, max: number, onWrite?: (ms: number) => void) {
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new ConfigError("bad-option", `stateCacheEntriesMax must be >= 0: ${max}`);
    }
    this.#inner = inner;
    this.#max = max;
    this.#onWrite = onWrite;
  }

  loadSafety(): ReturnType<Storage["loadSafety"]> {
    return this.#inner.loadSafety();
  }

  async write(batch: WriteBatch): Promise<void> {
    const t0 = performance.now();
    await this.#inner.write(batch);
    this.#onWrite?.(performance.now() - t0);
    this.#seq++;
    // Only cached keys are updated: most written keys are never read back.
    if (this.#cache.size === 0) return;
    for (const c of batch.commits ?? []) {
      for (const [k, v] of c.updates) {
        const id = toHex(k);
        if (this.#cache.has(id)) this.#set(id, v);
      }
    }
  }

  getNode(hash: Hash): Promise<StoredNode | null> {
    return this.#inner.getNode(hash);
  }

  committedHash(height: number): Promise<Hash | null> {
    return this.#inner.committedHash(height);
  }

  committedHead(): ReturnType<Storage["committedHead"]> {
    return this.#inner.committedHead();
  }

  async getState(key: Uint8Array): Promise<Uint8Array | null> {
    const id = toHex(key);
    const hit = this.#cache.get(id);
    if (hit !== undefined) return hit;
    const start = this.#seq;
    const value = await this.#inner.getState(key);
    // After a write finished meanwhile, the value read may be older than the store's: not cached.
    if (this.#seq === start) this.#set(id, value);
    return value;
  }

  uncommittedNodes(): Promise<StoredNode[]> {
    return this.#inner.uncommittedNodes();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #set(id: string, value: Uint8Array | null): void {
    if (this.#max === 0) return;
    this.#cache.delete(id);
    this.#cache.set(id, value);
    if (this.#cache.size > this.#max) this.#cache.delete(this.#cache.keys().next().value!);
  }
}
