/**
 * `DenoKvBatchStore`: the durable {@link BatchStore} of the replica CLI, a Deno KV database of its
 * own in the data directory (`batches.kv`), one value per batch under `["b", digest]`.
 *
 * Writes are grouped: the batches put while a Deno KV commit is in flight go together in the next
 * one (each atomic operation holds at most `WRITE_BATCHES_MAX` batches and
 * `WRITE_BYTES_MAX` bytes, under Deno KV's 800 KiB and 1,000-mutation limits), so the cost of an
 * fsync is shared by every batch that arrived meanwhile. A put resolves when its operation is
 * durable. Deletes ride along in the same operations (they need not be durable at once: a batch
 * left behind by a crash is only wasted space).
 *
 * @module
 */
import type { BatchStore } from "../runtime/mempool.ts";
import { assert } from "../errors.ts";

/** Most batches in one atomic operation. */
const WRITE_BATCHES_MAX = 10;
/** Most value bytes in one atomic operation (Deno KV allows 800 KiB in all). */
const WRITE_BYTES_MAX = 700 * 1024;
/** Largest batch, bytes: one Deno KV value (64 KiB) less room for nothing else. */
const BATCH_BYTES_MAX = 65_536;

interface Pending {
  readonly key: Deno.KvKey;
  readonly value: Uint8Array | null;
  readonly done: PromiseWithResolvers<void>;
}

/**
 * Batches in Deno KV, written in groups.
 *
 * @example
 * ```ts
 * import { DenoKvBatchStore } from "./batches.ts";
 * const store = await DenoKvBatchStore.open(":memory:");
 * await store.put(new Uint8Array(32), new Uint8Array([0x80]));
 * (await store.get(new Uint8Array(32)))?.length; // 1
 * await store.close();
 * ```
 */
export class DenoKvBatchStore implements BatchStore {
  readonly #kv: Deno.Kv;
  #queue: Pending[] = [];
  /** The drain in progress; meaningful while `#draining`. */
  #writing: Promise<void> = Promise.resolve();
  /**
   * True from a drain's start until its loop ends, cleared in the same turn as its last look at
   * the queue: a put queued after that starts a new drain (none is left waiting).
   */
  #draining = false;
  #closed = false;
  /** Atomic operations committed (for tests and the bench). */
  writes = 0;

  private constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /**
   * Opens (or creates) the store at `path`.
   *
   * @param path a Deno KV path, or `:memory:`
   */
  static async open(path: string): Promise<DenoKvBatchStore> {
    return new DenoKvBatchStore(await Deno.openKv(path));
  }

  /** See {@link BatchStore.put}. Refuses a batch larger than one Deno KV value. */
  put(digest: Uint8Array, bytes: Uint8Array): Promise<void> {
    if (bytes.length > BATCH_BYTES_MAX) {
      return Promise.reject(new RangeError(`a batch of ${bytes.length} bytes is too large`));
    }
    return this.#enqueue(["b", digest], bytes);
  }

  /** See {@link BatchStore.get}. */
  async get(digest: Uint8Array): Promise<Uint8Array | null> {
    const r = await this.#kv.get<Uint8Array>(["b", digest]);
    return r.value instanceof Uint8Array ? r.value : null;
  }

  /** See {@link BatchStore.delete}. */
  delete(digest: Uint8Array): Promise<void> {
    return this.#enqueue(["b", digest], null);
  }

  /** Waits for the writes queued so far, then closes the database. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#draining) await this.#writing;
    this.#kv.close();
  }

  #enqueue(key: Deno.KvKey, value: Uint8Array | null): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("the batch store is closed"));
    const done = Promise.withResolvers<void>();
    this.#queue.push({ key, value, done });
    if (!this.#draining) {
      this.#draining = true;
      this.#writing = this.#drain();
    }
    return done.promise;
  }

  /**
   * Commits the queue in operations of bounded size, one at a time, until it is empty. The flag
   * is cleared in the same turn as the loop's last look at the queue (no await between them), so
   * a put queued later, even from a callback of this drain's own puts, starts a new drain.
   */
  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) await this.#commitSome();
    } finally {
      this.#draining = false;
    }
  }

  /** One atomic operation of the queue's first batches (and deletes). */
  async #commitSome(): Promise<void> {
    let bytes = 0;
    let n = 0;
    while (n < this.#queue.length && n < WRITE_BATCHES_MAX) {
      const size = this.#queue[n]!.value?.length ?? 0;
      if (n > 0 && bytes + size > WRITE_BYTES_MAX) break;
      bytes += size;
      n++;
    }
    const group = this.#queue.splice(0, n);
    assert(group.length > 0, "a write takes at least one batch");
    const op = this.#kv.atomic();
    for (const p of group) {
      if (p.value === null) op.delete(p.key);
      else op.set(p.key, p.value);
    }
    try {
      const r = await op.commit();
      if (!r.ok) throw new Error("batch store write refused");
      this.writes++;
      for (const p of group) p.done.resolve();
    } catch (e) {
      for (const p of group) p.done.reject(e);
    }
  }
}
