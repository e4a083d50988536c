/**
 * The default {@link Storage}: Deno KV (SQLite on local disk). Every atomic operation it issues is
 * durable when its promise resolves. See SPECIFICATION.md section 6.
 *
 * ## Layout
 *
 * | key | value |
 * |---|---|
 * | `["safety"]` | CBOR `[partCount, byteLength]` |
 * | `["safety", i]` | part `i` of CBOR `[currentView, lastVotedView, lockedQC, highQC, highTC or null]` |
 * | `["node", hash]` | marker: CBOR `[1, record]` (inline) or `[2, sha256(record), chunkCount, byteLength]` |
 * | `["chunk", hash, sha256(record), i]` | bytes `i * chunkBytes ...` of the record |
 * | `["uncommitted", hash]` | empty bytes: the Node is stored and not committed |
 * | `["committed", height]` | hash of the committed Node at `height` |
 * | `["head"]` | CBOR `[height, hash]` of the committed head |
 * | `["app", key]` | committed application state; `false`: deleted (hides a `["base"]` entry) |
 * | `["base", bucket, i]` | state installed from a snapshot: part `i` of bucket `bucket`'s entries |
 * | `["sync"]` | height of a snapshot install in progress (src/state/sync.ts) |
 * | `["pruned"]` | retention: committed Nodes below this height were deleted |
 *
 * A record is CBOR `[encodeNode(node), [[key, value or null], ...]]`. QCs in the safety state are
 * {@link encodeQC} bytes; the TC is stored in the same QC tuple form with a zero node hash, so the
 * strict QC decoder checks it too. A stored Node above the committed head always has its
 * `["uncommitted", hash]` entry: the two are written and deleted in the same atomic operation.
 *
 * ## Limits of Deno KV (measured on Deno 2.9.6, local SQLite backend)
 *
 * - a value is at most 65,536 bytes (a `Uint8Array` counts its length);
 * - a key is at most 2,048 encoded bytes for writes (2,049 for reads). A byte-string part costs
 *   2 bytes plus its length plus one per zero byte (zeros are escaped), a string part the same
 *   over its UTF-8 bytes, a number part 9 bytes;
 * - one atomic operation holds at most 1,000 mutations and 100 checks; its mutations total at
 *   most 819,200 bytes, where a set counts twice its key plus its value and a delete its key;
 *   the keys of its sets total at most 81,920 bytes;
 * - `getMany` reads at most 10 keys.
 *
 * ## One writer, one round trip
 *
 * The store is meant to be this process's alone. Between writes it keeps the committed head, the
 * head's versionstamp, and what it wrote of each stored uncommitted Node (inline, or the digest
 * of its chunks); the first write after opening reads the head and lists the uncommitted index.
 * Every atomic operation of a write checks that the head still has the versionstamp this store
 * last saw, so another writer that moved it is refused with reason `"concurrent-write"`. A write
 * of new Nodes, or of commits of Nodes this store wrote, is then one atomic operation and no read.
 * The previous marker of a Node is read (to delete chunks that the new record replaces, and to
 * keep a committed Node out of the uncommitted index) only for Nodes at or below the head, and
 * for Nodes stored before this store opened and not written since. It remembers at most
 * `KNOWN_NODES_MAX` (65,536) Nodes; beyond that it reads the marker of every Node it does not
 * remember. After a failed write it forgets all of it and reads it again. It also keeps the
 * encoded records of the inline Nodes it stored uncommitted (at most `RECORD_CACHE_BYTES_MAX`,
 * 8 MiB), so that a Node's commit, a few writes after its insert, does not encode it again.
 *
 * ## How a write is split, and what a crash leaves
 *
 * A record larger than {@link DENO_KV_LIMITS}`.inlineRecordBytesMax` is written first as chunks,
 * in atomic operations of their own. Chunk keys contain the record's SHA-256, so chunks are
 * immutable: nothing reads them until a marker that names their digest lands, and chunks left
 * by a crash are invisible (a later write of the same record writes the same keys again).
 *
 * The rest of the batch is a sequence of units, in this order: each inserted Node (in batch
 * order: its marker and its uncommitted index entry), each commit (in height order: marker,
 * index delete, height index, head and the Node's state updates), the safety state, the deletes
 * of pruned Nodes. The units are packed, in order, into as few atomic operations as hold them,
 * and a unit never spans two operations. A record is chunked when its unit does not fit one
 * operation inline (a commit first tries this).
 *
 * A commit whose updates do not fit one operation even so (more than about 990 updates, or more
 * than about 800 KiB of them) is split into several units: the first writes the Node's marker
 * and its uncommitted index entry (the Node is then stored, uncommitted, with its updates in its
 * record) and the first of its updates; the next ones more updates; the last one the index
 * delete, the height index and the head. The head moves to the Node only once all of its updates
 * are on disk.
 *
 * After a crash the store holds a prefix of the sequence, so a prefix of the batch: some inserted
 * Nodes; or all of them and a prefix of the commits, the head on the last whole one; possibly
 * followed by part of the next commit's updates, with that Node stored uncommitted. Readers of
 * committed state (`getState`) may therefore see some of a Node's updates before the head reaches
 * it, also while a split write is in progress. That Node is one the commit rule has already
 * decided, so no update they see is ever rolled back: after a restart the Node is in the
 * uncommitted set, attaches to the head, and is committed again by a later write, which writes
 * the same updates again (sets and deletes of whole values: idempotent). Validating a descendant
 * reads the Node's updates from its own record first (Spec 7), so it gives the same result. The
 * safety state comes after the Nodes so that it never refers to a Node that is not stored; a lost
 * safety state only means the previous one, which no sent vote depends on.
 *
 * A record larger than a marker may announce (the codec's `commandBytesMax` plus 2 MiB) is
 * refused with reason `"record-too-large"`.
 *
 * ## State installed from a snapshot
 *
 * A snapshot install (SPECIFICATION.md 15.4) writes the state packed: the entries of each bucket
 * of the state tree (`bucketOf`, src/state/tree.ts) as canonical CBOR `[[key, value], ...]` in
 * parts of at most {@link BASE_PART_BYTES_MAX} bytes under `["base", bucket, i]` (an entry too
 * large for a part is an `["app", key]` entry instead). Deno KV's cost is per mutation and per
 * atomic operation (each an fsync) far more than per byte: 100,000 small keys are 4,096
 * mutations in 8 operations this way, 100,000 in 102 as an entry per key (docs/PERFORMANCE.md
 * has the times). The base is never rewritten: committed updates go to
 * `["app", key]` as always, which hides the key's base entry; a delete of a key on a store with
 * a base writes `["app", key] = false` instead of deleting. So `getState` reads `["app", key]`,
 * then, only when it is absent and the store has a base, the key's bucket parts (one list of
 * usually one entry). The base and its overrides go only when a later install clears the store.
 *
 * @module
 */
import { sha256Bytes as sha256 } from "../crypto.ts";
import {
  decodeNode,
  decodeQC,
  decodeValue,
  DEFAULT_CODEC_LIMITS,
  encodeNode,
  encodeQC,
  encodeValue,
  nodeHash,
  ZERO_HASH,
} from "../codec.ts";
import type { CodecLimits } from "../codec.ts";
import { assert, HotStuffError } from "../errors.ts";
import { decodeChunk, encodeChunk } from "../state/chunk.ts";
import { bucketOf, type StateEntry } from "../state/tree.ts";
import { bytesEqual, toHex } from "../types.ts";
import type { Hash, QuorumCertificate, TimeoutCertificate } from "../types.ts";
import type {
  CommittedHead,
  SafetyState,
  StateUpdate,
  Storage,
  StoredNode,
  WriteBatch,
} from "./storage.ts";

/**
 * Limits of Deno KV that {@link DenoKvStorage} plans around, and its own record sizes.
 *
 * @example
 * ```ts
 * import { DENO_KV_LIMITS, type DenoKvLimits } from "./deno_kv.ts";
 * const limits: DenoKvLimits = DENO_KV_LIMITS;
 * console.log(limits.valueBytesMax); // 65536: larger values are chunked
 * ```
 */
export interface DenoKvLimits {
  /** Largest value: 65,536 bytes. Bounds application state values. */
  readonly valueBytesMax: number;
  /** Largest encoded key for a write: 2,048 bytes. Bounds application state keys. */
  readonly keyBytesMax: number;
  /** Most mutations in one atomic operation: 1,000. */
  readonly atomicMutationsMax: number;
  /** Largest total mutation size of one atomic operation: 819,200 bytes. */
  readonly atomicBytesMax: number;
  /** Largest total size of the keys set in one atomic operation: 81,920 bytes. */
  readonly atomicKeyBytesMax: number;
  /** Most keys in one `getMany`: 10. */
  readonly getManyKeysMax: number;
  /** Largest record written inline in its marker; larger ones are chunked: 61,440 bytes. */
  readonly inlineRecordBytesMax: number;
  /** Size of every chunk but the last: 65,536 bytes. */
  readonly chunkBytes: number;
}

/**
 * The {@link DenoKvLimits} in force (the Deno KV numbers were measured on Deno 2.9.6).
 *
 * @example
 * ```ts
 * import { DENO_KV_LIMITS } from "./deno_kv.ts";
 * console.log(DENO_KV_LIMITS.valueBytesMax); // 65536
 * ```
 */
export const DENO_KV_LIMITS: DenoKvLimits = {
  valueBytesMax: 65_536,
  keyBytesMax: 2_048,
  atomicMutationsMax: 1_000,
  atomicBytesMax: 819_200,
  atomicKeyBytesMax: 81_920,
  getManyKeysMax: 10,
  inlineRecordBytesMax: 60 * 1024,
  chunkBytes: 65_536,
};

/**
 * Largest part of a bucket of snapshot-installed state (`["base", bucket, i]`), bytes: a read of
 * a key absent from `["app"]` reads its bucket's parts, usually one.
 */
export const BASE_PART_BYTES_MAX = 16 * 1024;
/** The value of `["app", key]` for a key deleted while a base may hold it. */
const TOMBSTONE = false;
/** Size against `atomicBytesMax` counted for a {@link TOMBSTONE} (its V8 serialization). */
const TOMBSTONE_BYTES = 8;
/**
 * One bucket of snapshot state for {@link DenoKvStorage.putSnapshotState}: the bucket
 * (`bucketOf` of its keys, src/state/tree.ts) and its entries in key order.
 *
 * @example
 * ```ts
 * import type { SnapshotBucket } from "./deno_kv.ts";
 * import { bucketOf } from "../state/tree.ts";
 * const key = new TextEncoder().encode("k/a");
 * const b: SnapshotBucket = { bucket: bucketOf(key), entries: [{ key, value: new Uint8Array([1]) }] };
 * ```
 */
export interface SnapshotBucket {
  /** The bucket. */
  readonly bucket: number;
  /** Its entries, in key order. */
  readonly entries: readonly StateEntry[];
}

/** Room kept free in every atomic operation for the head check and rounding. */
const ATOMIC_BYTES_SLACK = 1_024;
/** Most stored uncommitted Nodes whose markers a store remembers between writes. */
const KNOWN_NODES_MAX = 65_536;
const MARKER_INLINE = 1;
const MARKER_CHUNKED = 2;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/**
 * Where one atomic operation of the final sequence stands, for {@link DenoKvOptions}.
 *
 * @example
 * ```ts
 * import type { FinalCommitStep } from "./deno_kv.ts";
 * // A crash test: fail before the second atomic operation of a commit.
 * const crashAt = (step: FinalCommitStep): void => {
 *   if (step.index === 1) throw new Error("simulated crash");
 * };
 * ```
 */
export interface FinalCommitStep {
  /** Index of the operation about to be committed, from 0. */
  readonly index: number;
  /** Number of operations of the final sequence (1 unless the batch had to be split). */
  readonly count: number;
  /** Height the committed head moves to in this operation, or null if it does not move. */
  readonly headHeight: number | null;
}

/**
 * Options of {@link DenoKvStorage.open} and {@link DenoKvStorage.wrap}.
 *
 * @example
 * ```ts
 * import { DenoKvStorage, type DenoKvOptions } from "./deno_kv.ts";
 * import { DEFAULT_CODEC_LIMITS } from "../codec.ts";
 * const options: DenoKvOptions = { codecLimits: { ...DEFAULT_CODEC_LIMITS, commandBytesMax: 1 << 20 } };
 * const storage = await DenoKvStorage.open(":memory:", options); // run with --unstable-kv
 * await storage.close();
 * ```
 */
export interface DenoKvOptions {
  /** Limits for decoding stored Nodes and QCs. Default {@link DEFAULT_CODEC_LIMITS}. */
  readonly codecLimits?: CodecLimits;
  /**
   * Test hook: called (and awaited) after the chunk writes and before each atomic operation of
   * the final sequence. Throwing from it simulates a crash at that point.
   */
  readonly beforeFinalCommit?: (step: FinalCommitStep) => void | Promise<void>;
}

/**
 * {@link Storage} on Deno KV. Writes are serialized; reads may run alongside them. It must be
 * the only writer of its KV: it keeps the committed head in memory between writes, and refuses
 * to write (reason `"concurrent-write"`) once another writer has moved it.
 *
 * @example
 * ```ts
 * import { DenoKvStorage } from "./deno_kv.ts";
 * const dir = await Deno.makeTempDir();
 * const store = await DenoKvStorage.open(`${dir}/replica.kv`);
 * console.log(await store.committedHead()); // null
 * await store.close();
 * ```
 */
export class DenoKvStorage implements Storage {
  readonly #kv: Deno.Kv;
  readonly #owned: boolean;
  readonly #limits: CodecLimits;
  readonly #beforeFinalCommit: DenoKvOptions["beforeFinalCommit"];
  #queue: Promise<unknown> = Promise.resolve();
  /** What the writer knows of the store; null until the first write and after a failed one. */
  #writer: WriterState | null = null;
  readonly #records = new RecordCache();
  /** Whether `["base"]` holds state (read once, then kept: this store is the only writer). */
  #base: Promise<boolean> | null = null;
  /** Buckets of the base written by this install (a bucket is written once). */
  readonly #baseBuckets = new Set<number>();

  private constructor(kv: Deno.Kv, owned: boolean, options: DenoKvOptions) {
    this.#kv = kv;
    this.#owned = owned;
    this.#limits = options.codecLimits ?? DEFAULT_CODEC_LIMITS;
    this.#beforeFinalCommit = options.beforeFinalCommit;
  }

  /**
   * Opens (or creates) the store at `path`; without a path, Deno's default KV location.
   * {@link DenoKvStorage.close} closes the KV.
   *
   * @example
   * ```ts
   * import { DenoKvStorage } from "./deno_kv.ts";
   * const dir = await Deno.makeTempDir();
   * const store = await DenoKvStorage.open(`${dir}/replica.kv`);
   * await store.close();
   * ```
   */
  static async open(path?: string, options: DenoKvOptions = {}): Promise<DenoKvStorage> {
    const kv = await Deno.openKv(path);
    return new DenoKvStorage(kv, true, options);
  }

  /**
   * Uses an open Deno KV that the caller owns: {@link DenoKvStorage.close} leaves it open. The
   * store expects the whole KV to itself, and to be its only writer.
   *
   * @example
   * ```ts
   * import { DenoKvStorage } from "./deno_kv.ts";
   * const kv = await Deno.openKv(":memory:");
   * const store = DenoKvStorage.wrap(kv);
   * await store.close();
   * kv.close();
   * ```
   */
  static wrap(kv: Deno.Kv, options: DenoKvOptions = {}): DenoKvStorage {
    return new DenoKvStorage(kv, false, options);
  }

  /**
   * Size in bytes of the record this store keeps for `stored`: records above
   * {@link DENO_KV_LIMITS}`.inlineRecordBytesMax` are chunked.
   *
   * @example
   * ```ts
   * import { DenoKvStorage } from "./deno_kv.ts";
   * import { genesisQC, nodeHash } from "../codec.ts";
   * const node = {
   *   view: 1, height: 1, parent: new Uint8Array(32), justify: genesisQC("c"),
   *   command: new Uint8Array(100), proposer: new Uint8Array(32), stateRoot: new Uint8Array(32),
   *   configHash: new Uint8Array(32),
   * };
   * DenoKvStorage.recordBytes({ node, hash: nodeHash(node), updates: [] }); // about 200
   * ```
   */
  static recordBytes(stored: StoredNode): number {
    return encodeRecord(stored).length;
  }

  /** See {@link Storage.loadSafety}. */
  async loadSafety(): Promise<SafetyState | null> {
    const header = await this.#kv.get(["safety"]);
    if (header.value === null) return null;
    const h = tuple(decodeStored(header.value, "safety header"), "safety header", 2);
    const partCount = uint(h[0], "safety part count");
    const byteLength = uint(h[1], "safety length");
    // The safety state is written in one atomic operation, which bounds it.
    if (byteLength > DENO_KV_LIMITS.atomicBytesMax || partCount !== partsFor(byteLength)) {
      throw corrupt("safety header", `${partCount} parts of ${byteLength} bytes`);
    }
    const keys = Array.from({ length: partCount }, (_, i): Deno.KvKey => ["safety", i]);
    const parts = await this.#getAll(keys);
    const bytes = concatParts(parts, "safety", byteLength);
    return decodeSafety(decodeStored(bytes, "safety"), this.#limits);
  }

  /** See {@link Storage.write}. Writes run one at a time, in call order. */
  write(batch: WriteBatch): Promise<void> {
    const run = this.#queue.then(() => this.#write(batch));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** See {@link Storage.getNode}. */
  async getNode(hash: Hash): Promise<StoredNode | null> {
    // A concurrent write may replace a chunked record between our marker and chunk reads; the
    // second read then sees the new marker.
    let previousDigest: Uint8Array | null = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const entry = await this.#kv.get(["node", hash]);
      if (entry.value === null) return null;
      const marker = decodeMarker(entry.value, hash, this.#limits);
      if (marker.kind === "inline") return decodeRecord(marker.record, hash, this.#limits);
      if (previousDigest !== null && bytesEqual(previousDigest, marker.digest)) break;
      const record = await this.#readChunks(hash, marker);
      if (record !== null) return decodeRecord(record, hash, this.#limits);
      previousDigest = marker.digest;
    }
    throw corrupt(`node ${toHex(hash)}`, "chunks missing or damaged");
  }

  /** See {@link Storage.committedHash}. */
  async committedHash(height: number): Promise<Hash | null> {
    if (!Number.isSafeInteger(height) || height < 1) return null;
    const entry = await this.#kv.get(["committed", height]);
    if (entry.value === null) return null;
    return bytes(entry.value, `committed hash at height ${height}`, 32);
  }

  /** See {@link Storage.committedHead}. */
  async committedHead(): Promise<CommittedHead | null> {
    return decodeHead((await this.#kv.get(["head"])).value);
  }

  /** See {@link Storage.getState}. */
  async getState(key: Uint8Array): Promise<Uint8Array | null> {
    // A key too long to store cannot be there (and Deno KV refuses to read it).
    if (APP_PART_BYTES + escapedBytes(key) > DENO_KV_LIMITS.keyBytesMax) return null;
    const entry = await this.#kv.get(["app", key]);
    if (entry.versionstamp !== null) return stateValue(entry.value, key);
    if (!await this.#hasBase()) return null;
    // The base is never rewritten: read after the miss above, it is as recent as that read.
    for await (const part of this.#kv.list({ prefix: ["base", bucketOf(key)] })) {
      for (const e of basePart(part)) if (bytesEqual(e.key, key)) return e.value;
    }
    return null;
  }

  /** See {@link Storage.stateEntries}. */
  async *stateEntries(): AsyncIterable<readonly [Uint8Array, Uint8Array]> {
    // With a base, its entries whose key has an `["app"]` entry are hidden by it.
    const hidden = await this.#hasBase() ? new Set<string>() : null;
    for await (const e of this.#kv.list({ prefix: ["app"] }, { batchSize: 500 })) {
      const key = e.key[1];
      if (!(key instanceof Uint8Array)) continue;
      hidden?.add(bytesId(key));
      const value = stateValue(e.value, key);
      if (value !== null) yield [key, value];
    }
    if (hidden === null) return;
    for await (const part of this.#kv.list({ prefix: ["base"] }, { batchSize: 100 })) {
      for (const e of basePart(part)) if (!hidden.has(bytesId(e.key))) yield [e.key, e.value];
    }
  }

  /** Whether the store holds snapshot-installed state under `["base"]`. */
  #hasBase(): Promise<boolean> {
    this.#base ??= (async () => {
      for await (const _ of this.#kv.list({ prefix: ["base"] }, { limit: 1 })) return true;
      return false;
    })();
    return this.#base;
  }

  // -------------------------------------------------------------------------------------------
  // Snapshot install (src/state/sync.ts): state entries written before the head reaches the
  // snapshot's Node, under a marker, so that a crash mid-install is recognised at the next start.

  /** The height of an unfinished snapshot install (its marker), or null. */
  async snapshotMarker(): Promise<number | null> {
    const v = (await this.#kv.get(["sync"])).value;
    return typeof v === "number" ? v : null;
  }

  /** Sets the marker of a snapshot install at `height`. */
  async beginSnapshot(height: number): Promise<void> {
    await this.#kv.set(["sync"], height);
  }

  /**
   * Writes state of a snapshot install packed by bucket (see the module docs), in as few atomic
   * operations as hold them: each bucket's entries all in one call, in key order (a checked
   * chunk's are), and no bucket in two calls.
   */
  async putSnapshotState(buckets: readonly SnapshotBucket[]): Promise<void> {
    this.#base = Promise.resolve(true);
    const rows: (readonly [Uint8Array, Uint8Array])[] = [];
    const units: Unit[] = [];
    for (const { bucket, entries } of buckets) {
      assert(!this.#baseBuckets.has(bucket), `bucket ${bucket} of the base is written once`);
      assert(entries.length === 0 || bucketOf(entries[0]!.key) === bucket, "entries of the bucket");
      this.#baseBuckets.add(bucket);
      const packed: StateEntry[] = [];
      for (const e of entries) {
        const size = APP_PART_BYTES + escapedBytes(e.key);
        if (size > DENO_KV_LIMITS.keyBytesMax || e.value.length > DENO_KV_LIMITS.valueBytesMax) {
          throw new HotStuffError(
            "snapshot-entry-too-large",
            `state key ${toHex(e.key)} does not fit`,
          );
        }
        // An entry that would fill a part by itself is an ordinary row.
        if (e.key.length + e.value.length + 16 > BASE_PART_BYTES_MAX) rows.push([e.key, e.value]);
        else packed.push(e);
      }
      baseParts(packed).forEach((part, i) => {
        const unit = new Unit();
        unit.push(mutation(`b${bucket}/${i}`, ["base", bucket, i], part));
        units.push(unit);
      });
    }
    for (const op of packUnits(units)) await commitOrThrow(atomicOf(this.#kv, op));
    if (rows.length > 0) await this.putStateEntries(rows);
  }

  /** Writes committed state entries of a snapshot, in as few atomic operations as hold them. */
  async putStateEntries(entries: readonly (readonly [Uint8Array, Uint8Array])[]): Promise<void> {
    let op = this.#kv.atomic();
    let count = 0;
    let bytesSum = 0;
    let keysSum = 0;
    for (const [key, value] of entries) {
      const keySize = APP_PART_BYTES + escapedBytes(key);
      if (keySize > DENO_KV_LIMITS.keyBytesMax || value.length > DENO_KV_LIMITS.valueBytesMax) {
        throw new HotStuffError("snapshot-entry-too-large", `state key ${toHex(key)} does not fit`);
      }
      if (
        count >= 990 || bytesSum + 2 * keySize + value.length > 780_000 ||
        keysSum + keySize > 78_000
      ) {
        await commitOrThrow(op);
        op = this.#kv.atomic();
        count = bytesSum = keysSum = 0;
      }
      op.set(["app", key], value);
      count++;
      bytesSum += 2 * keySize + value.length;
      keysSum += keySize;
    }
    if (count > 0) await commitOrThrow(op);
  }

  /**
   * Deletes everything but the safety state, then the marker: an unfinished install (into a
   * store with no committed Node) starts over from an empty store.
   */
  async clearSnapshot(): Promise<void> {
    await this.#deleteAllButSafety((op) => op.delete(["sync"]));
  }

  /**
   * A store with committed Nodes that is about to take a snapshot instead (far behind its peers,
   * SPECIFICATION.md 15.4): deletes everything but the safety state and the install marker, which
   * must be set first, so that a crash part way is undone at the next start like any cut install.
   */
  async dropForSnapshot(): Promise<void> {
    assert(
      await this.snapshotMarker() !== null,
      "dropForSnapshot: the install marker is set first",
    );
    await this.#deleteAllButSafety(() => {});
  }

  /** Deletes every entry but the safety state and the marker, then does `last` in the last op. */
  async #deleteAllButSafety(last: (op: Deno.AtomicOperation) => void): Promise<void> {
    this.#writer = null;
    let op = this.#kv.atomic();
    let count = 0;
    for await (const e of this.#kv.list({ prefix: [] }, { batchSize: 500 })) {
      if (e.key[0] === "safety" || e.key[0] === "sync") continue;
      op.delete(e.key);
      if (++count >= 900) {
        await commitOrThrow(op);
        op = this.#kv.atomic();
        count = 0;
      }
    }
    last(op);
    await commitOrThrow(op);
    this.#base = null;
    this.#baseBuckets.clear();
  }

  /**
   * Writes `chain` (consecutive committed Nodes ending with the snapshot's, their updates already
   * in the snapshot's state) as committed into a store with no committed Node, in the ordinary
   * write path; the Nodes below the first are not stored.
   */
  async installSnapshotChain(chain: readonly StoredNode[]): Promise<void> {
    const writer = await this.#writerState();
    if (writer.head !== null) {
      throw new HotStuffError("not-empty", "a snapshot installs only into an empty store");
    }
    const first = chain[0];
    if (first === undefined) return;
    // The write checks that its commits extend the head: the first's parent stands in for it.
    writer.head = { height: first.node.height - 1, hash: first.node.parent };
    await this.write({ commits: chain });
  }

  /**
   * Retention: deletes the committed Nodes of heights below `height` (their records, chunks and
   * height index), from the lowest still stored; the head and state are untouched. Runs in the
   * write queue. Resolves to the number of Nodes deleted.
   */
  pruneCommittedBelow(height: number): Promise<number> {
    const run = this.#queue.then(() => this.#pruneBelow(height));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #pruneBelow(height: number): Promise<number> {
    const start = (await this.#kv.get<number>(["pruned"])).value ?? 1;
    const head = await this.committedHead();
    const end = Math.min(height, head?.height ?? 0);
    let deleted = 0;
    for (let h = start; h < end; h += 100) {
      const top = Math.min(end, h + 100);
      let op = this.#kv.atomic();
      let count = 0;
      for (let k = h; k < top; k++) {
        const hash = await this.committedHash(k);
        if (hash === null) continue;
        const keys: Deno.KvKey[] = [["committed", k], ["node", hash]];
        for await (const c of this.#kv.list({ prefix: ["chunk", hash] })) keys.push(c.key);
        if (count + keys.length > 900) {
          await commitOrThrow(op);
          op = this.#kv.atomic();
          count = 0;
        }
        for (const key of keys) op.delete(key);
        count += keys.length;
        deleted++;
      }
      op.set(["pruned"], top);
      await commitOrThrow(op);
    }
    return deleted;
  }

  /** Removes the marker once the head is the snapshot's Node. */
  async endSnapshot(): Promise<void> {
    await this.#kv.delete(["sync"]);
  }

  /** See {@link Storage.uncommittedNodes}. Sorted by height, then hash. */
  async uncommittedNodes(): Promise<StoredNode[]> {
    const out: StoredNode[] = [];
    for await (const entry of this.#kv.list({ prefix: ["uncommitted"] })) {
      const hash = bytes(entry.key[1], "uncommitted index key", 32);
      const stored = await this.getNode(hash);
      if (stored === null) throw corrupt("uncommitted index", `no node ${toHex(hash)}`);
      out.push(stored);
    }
    return out.sort((a, b) => a.node.height - b.node.height);
  }

  /** See {@link Storage.close}. Waits for queued writes; closes the KV if it opened it. */
  async close(): Promise<void> {
    await this.#queue;
    if (this.#owned) this.#kv.close();
  }

  // -------------------------------------------------------------------------------------------
  // Writing

  async #write(batch: WriteBatch): Promise<void> {
    const writer = await this.#writerState();
    await this.#checkHead(writer, batch.commits ?? []);
    const tombstones = await this.#hasBase();
    const records = collectRecords(batch, this.#limits, this.#records, tombstones);
    const pruned = prunedHashes(batch, records);
    if (records.length === 0 && batch.safety === undefined && pruned.length === 0) return;
    await this.#readPrevious(records.filter((r) => !previousFromMemory(r, writer)));
    const safety = batch.safety === undefined ? null : safetyUnit(batch.safety);
    const ops = planFinal(records, safety, pruned.map(pruneUnit));
    await this.#writeChunks(records);
    await this.#commitFinal(ops, writer);
    remember(writer, records, pruned);
    this.#records.update(records, pruned);
  }

  /** The writer's state, read from the store on the first write and after a failed one. */
  async #writerState(): Promise<WriterState> {
    if (this.#writer !== null) return this.#writer;
    const head = await this.#kv.get(["head"]);
    const writer: WriterState = {
      head: decodeHead(head.value),
      headVersion: head.versionstamp,
      nodes: new Map(),
      complete: true,
    };
    for await (const entry of this.#kv.list({ prefix: ["uncommitted"] })) {
      if (writer.nodes.size >= KNOWN_NODES_MAX) {
        writer.complete = false;
        break;
      }
      writer.nodes.set(bytesId(bytes(entry.key[1], "uncommitted index key", 32)), UNREAD);
    }
    this.#writer = writer;
    return writer;
  }

  /**
   * Commits must extend the head. When they do not extend the head this store remembers, a
   * second writer that moved it is told apart from a caller's bug by reading it.
   */
  async #checkHead(writer: WriterState, commits: readonly StoredNode[]): Promise<void> {
    const problem = commitsProblem(writer.head, commits);
    if (problem === null) return;
    const entry = await this.#kv.get(["head"]);
    if (entry.versionstamp !== writer.headVersion) {
      this.#writer = null;
      throw concurrentWrite();
    }
    assert(false, problem);
  }

  /** Reads each record's previous marker and whether its Node is already committed. */
  async #readPrevious(records: RecordPlan[]): Promise<void> {
    if (records.length === 0) return;
    const keys = records.flatMap((r): Deno.KvKey[] => [
      ["node", r.stored.hash],
      ["committed", r.stored.node.height],
    ]);
    const values = await this.#getAll(keys);
    records.forEach((r, i) => {
      r.previous = previousMarker(values[2 * i], r.stored.hash, this.#limits);
      const committed = values[2 * i + 1];
      r.committed = committed instanceof Uint8Array && bytesEqual(committed, r.stored.hash);
    });
  }

  async #writeChunks(records: RecordPlan[]): Promise<void> {
    // Spec 6.3 step 1: chunks first, invisible until a marker names their digest.
    const units = records.filter(needsChunks).flatMap(chunkUnits);
    for (const op of packUnits(units)) {
      const result = await atomicOf(this.#kv, op).commit();
      assert(result.ok, "chunk writes have no checks");
    }
  }

  async #commitFinal(ops: AtomicBudget[], writer: WriterState): Promise<void> {
    try {
      for (const [index, op] of ops.entries()) {
        const headHeight = op.head === null ? null : op.head.height;
        // Spec 6.3 step 4: refused if another writer moved the head since this one last did.
        await this.#beforeFinalCommit?.({ index, count: ops.length, headHeight });
        const result = await atomicOf(this.#kv, op)
          .check({ key: ["head"], versionstamp: writer.headVersion })
          .commit();
        if (!result.ok) throw concurrentWrite();
        if (op.head !== null) {
          writer.head = op.head;
          writer.headVersion = result.versionstamp;
        }
      }
    } catch (e) {
      // Part of the batch may have landed: read the store again before the next write.
      this.#writer = null;
      throw e;
    }
  }

  /** Values of `keys`, in order, `getManyKeysMax` keys per read, the reads at once. */
  async #getAll(keys: Deno.KvKey[]): Promise<unknown[]> {
    const groups: Deno.KvKey[][] = [];
    for (let i = 0; i < keys.length; i += DENO_KV_LIMITS.getManyKeysMax) {
      groups.push(keys.slice(i, i + DENO_KV_LIMITS.getManyKeysMax));
    }
    const entries = await Promise.all(groups.map((group) => this.#kv.getMany(group)));
    return entries.flat().map((entry) => entry.value);
  }

  /** The record behind a chunked marker, or null when a chunk is missing or does not match. */
  async #readChunks(hash: Hash, marker: ChunkedMarker): Promise<Uint8Array | null> {
    const keys = Array.from({ length: marker.count }, (_, i): Deno.KvKey => [
      "chunk",
      hash,
      marker.digest,
      i,
    ]);
    const parts = await this.#getAll(keys);
    if (parts.some((p) => !(p instanceof Uint8Array))) return null;
    const record = concat(parts as Uint8Array[]);
    if (record.length !== marker.byteLength) return null;
    return bytesEqual(sha256(record), marker.digest) ? record : null;
  }
}

function concurrentWrite(): HotStuffError {
  return new HotStuffError(
    "concurrent-write",
    "the committed head changed during a write: another writer is using this Deno KV",
  );
}

// ---------------------------------------------------------------------------------------------
// What the writer remembers between writes

/** A stored uncommitted Node whose marker this store has not read nor written. */
const UNREAD = "unread";
const INLINE_KNOWN: KnownMarker = { kind: "inline" };

/** What a write replaces: enough of a marker to tell its chunks. */
type KnownMarker = { readonly kind: "inline" } | ChunkedMarker;

interface WriterState {
  head: CommittedHead | null;
  /** Versionstamp of `["head"]` (null: no head), checked by every atomic operation. */
  headVersion: string | null;
  /** Stored uncommitted Nodes by {@link bytesId} of their hash; at most `KNOWN_NODES_MAX`. */
  readonly nodes: Map<string, KnownMarker | typeof UNREAD>;
  /** Whether `nodes` holds every stored uncommitted Node (then a Node not in it is new). */
  complete: boolean;
}

/**
 * Fills in `r.previous` and `r.committed` from memory, if the writer knows them: a Node above
 * the head is not committed, and one that is not stored uncommitted is not stored at all.
 */
function previousFromMemory(r: RecordPlan, writer: WriterState): boolean {
  if (r.stored.node.height <= (writer.head?.height ?? 0)) return false;
  const known = writer.nodes.get(r.id);
  if (known === UNREAD || (known === undefined && !writer.complete)) return false;
  r.previous = known ?? null;
  r.committed = false;
  return true;
}

/** After a write that landed whole: the uncommitted Nodes it stored, committed or pruned. */
function remember(writer: WriterState, records: RecordPlan[], pruned: readonly Hash[]): void {
  for (const r of records) {
    if (r.isCommit || r.committed) {
      writer.nodes.delete(r.id);
    } else if (writer.nodes.size < KNOWN_NODES_MAX || writer.nodes.has(r.id)) {
      writer.nodes.set(r.id, r.chunked ? chunkedMarker(r) : INLINE_KNOWN);
    } else {
      writer.nodes.delete(r.id);
      writer.complete = false;
    }
  }
  for (const hash of pruned) writer.nodes.delete(bytesId(hash));
}

/** Most bytes of records a store keeps between a Node's insert and its commit. */
const RECORD_CACHE_BYTES_MAX = 8 * 1024 * 1024;

/**
 * Inline records of the Nodes this store wrote uncommitted, so that their commit (usually the
 * same StoredNode object, a few writes later) does not encode them again. A record is reused for
 * the very object it was encoded from only. The oldest go first beyond `RECORD_CACHE_BYTES_MAX`.
 */
class RecordCache {
  readonly #entries = new Map<string, { stored: StoredNode; record: Uint8Array }>();
  #bytes = 0;

  get(id: string, stored: StoredNode): Uint8Array | null {
    const entry = this.#entries.get(id);
    return entry !== undefined && entry.stored === stored ? entry.record : null;
  }

  /** After a write that landed whole: keeps inserted inline records, drops committed and pruned. */
  update(records: readonly RecordPlan[], pruned: readonly Hash[]): void {
    for (const r of records) {
      this.#delete(r.id);
      if (r.isCommit || r.committed || r.chunked) continue;
      this.#entries.set(r.id, { stored: r.stored, record: r.record });
      this.#bytes += r.record.length;
    }
    for (const hash of pruned) this.#delete(bytesId(hash));
    for (const id of this.#entries.keys()) {
      if (this.#bytes <= RECORD_CACHE_BYTES_MAX) break;
      this.#delete(id);
    }
  }

  #delete(id: string): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    this.#entries.delete(id);
    this.#bytes -= entry.record.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation

/** Same rules as MemoryStorage: consecutive heights from the head, each extending the last. */
function commitsProblem(head: CommittedHead | null, commits: readonly StoredNode[]): string | null {
  let hash = head === null ? null : head.hash;
  let height = head === null ? 0 : head.height;
  for (const c of commits) {
    if (c.node.height !== height + 1) return `commit height ${c.node.height} after ${height}`;
    if (hash !== null && !bytesEqual(c.node.parent, hash)) return "commit must extend the head";
    hash = c.hash;
    height++;
  }
  return null;
}

/** A StoredNode to write, with what the plan decided about it. */
interface RecordPlan {
  readonly stored: StoredNode;
  /** {@link bytesId} of the hash. */
  readonly id: string;
  readonly record: Uint8Array;
  readonly isCommit: boolean;
  /** A commit's state updates as mutations, one per key (the last update of a key wins). */
  readonly updates: readonly Mutation[];
  digest: Uint8Array | null;
  chunked: boolean;
  previous: KnownMarker | null;
  committed: boolean;
}

/**
 * One record per distinct Node: inserted Nodes in batch order, then commits (which win). With
 * `tombstones` (the store has a base), a commit's deletes write {@link TOMBSTONE}.
 */
function collectRecords(
  batch: WriteBatch,
  limits: CodecLimits,
  cache: RecordCache,
  tombstones: boolean,
): RecordPlan[] {
  const byId = new Map<string, RecordPlan>();
  for (
    const [stored, isCommit] of [
      ...(batch.nodes ?? []).map((s) => [s, false] as const),
      ...(batch.commits ?? []).map((s) => [s, true] as const),
    ]
  ) {
    checkStored(stored, limits);
    const updates = updateMutations(stored, isCommit, tombstones);
    const id = bytesId(stored.hash);
    const earlier = byId.get(id);
    const record = earlier?.stored === stored
      ? earlier.record
      : cache.get(id, stored) ?? encodeRecord(stored);
    checkRecordSize(stored, record, limits);
    byId.delete(id); // keep the order of the last occurrence
    byId.set(id, {
      stored,
      id,
      record,
      isCommit,
      updates,
      digest: null,
      chunked: record.length > DENO_KV_LIMITS.inlineRecordBytesMax,
      previous: null,
      committed: false,
    });
  }
  return [...byId.values()];
}

function checkStored(stored: StoredNode, limits: CodecLimits): void {
  assert(stored.node.height >= 1, "genesis is implicit and never stored");
  assert(bytesEqual(stored.hash, nodeHash(stored.node)), "stored hash must be the node's hash");
  // A Node that the strict decoder would refuse could be written but never read back.
  if (stored.node.command.length > limits.commandBytesMax) {
    throw new HotStuffError(
      "command-too-large",
      `command of ${stored.node.command.length} bytes exceeds ${limits.commandBytesMax}`,
    );
  }
}

/**
 * Checks every update's key and value against Deno KV's limits, and sizes it once; for a commit
 * (`build`), returns them as mutations, the last update of a key replacing earlier ones (a
 * delete as a {@link TOMBSTONE} with `tombstones`).
 */
function updateMutations(stored: StoredNode, build: boolean, tombstones: boolean): Mutation[] {
  const byId = new Map<string, Mutation>();
  for (const [key, value] of stored.updates) {
    const size = APP_PART_BYTES + escapedBytes(key);
    if (size > DENO_KV_LIMITS.keyBytesMax) {
      throw new HotStuffError(
        "key-too-large",
        `state key of ${key.length} bytes encodes to ${size} > ${DENO_KV_LIMITS.keyBytesMax}`,
      );
    }
    if (value !== null && value.length > DENO_KV_LIMITS.valueBytesMax) {
      throw new HotStuffError(
        "value-too-large",
        `state value of ${value.length} bytes exceeds ${DENO_KV_LIMITS.valueBytesMax}`,
      );
    }
    if (!build) continue;
    const id = `a${bytesId(key)}`;
    byId.set(
      id,
      mutation(id, ["app", key], value === null && tombstones ? TOMBSTONE : value, size),
    );
  }
  return [...byId.values()];
}

/** Refuses a record that the strict decoder would refuse to read back. */
function checkRecordSize(stored: StoredNode, record: Uint8Array, limits: CodecLimits): void {
  if (record.length <= recordBytesMax(limits)) return;
  throw new HotStuffError(
    "record-too-large",
    `node ${toHex(stored.hash)} with ${stored.updates.length} state updates has a record of ` +
      `${record.length} bytes, over ${recordBytesMax(limits)}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Planning

/** One set (or delete, when `value` is null), sized once as Deno KV counts it. */
interface Mutation {
  /** Tells keys apart within an atomic operation (see {@link mutation}). */
  readonly id: string;
  readonly key: Deno.KvKey;
  /** The value set; null deletes. */
  readonly value: Uint8Array | typeof TOMBSTONE | null;
  /** Encoded key size. */
  readonly keyBytes: number;
  /** Size against `atomicBytesMax` (a delete is over-counted like a set without value). */
  readonly bytes: number;
}

/**
 * `id` must name `key` alone among the keys of one write: a letter for the key's kind, then the
 * rest of the key in a fixed-width or final position.
 */
function mutation(
  id: string,
  key: Deno.KvKey,
  value: Uint8Array | typeof TOMBSTONE | null,
  size: number = keyBytes(key),
): Mutation {
  const valueBytes = value === null ? 0 : value === TOMBSTONE ? TOMBSTONE_BYTES : value.length;
  return { id, key, value, keyBytes: size, bytes: 2 * size + valueBytes };
}

/** Mutations that land in the same atomic operation, with distinct keys, and their total size. */
class Unit {
  readonly mutations: Mutation[] = [];
  bytes = 0;
  keyBytes = 0;
  /** The head this unit moves the committed head to, if any. */
  head: CommittedHead | null = null;

  push(m: Mutation): void {
    this.mutations.push(m);
    this.bytes += m.bytes;
    this.keyBytes += m.keyBytes;
  }

  /** Whether the unit with `m` added would still fit one atomic operation by itself. */
  fitsWith(m: Mutation): boolean {
    return fits(this.mutations.length + 1, this.bytes + m.bytes, this.keyBytes + m.keyBytes);
  }

  fitsAlone(): boolean {
    return fits(this.mutations.length, this.bytes, this.keyBytes);
  }
}

function fits(count: number, bytes: number, keyBytes: number): boolean {
  return count <= DENO_KV_LIMITS.atomicMutationsMax &&
    bytes <= DENO_KV_LIMITS.atomicBytesMax - ATOMIC_BYTES_SLACK &&
    keyBytes <= DENO_KV_LIMITS.atomicKeyBytesMax - ATOMIC_BYTES_SLACK;
}

/** Mutations of one atomic operation, later ones for a key replacing earlier ones. */
class AtomicBudget {
  readonly mutations: Map<string, Mutation> = new Map();
  /** The head the last unit that moves it moves it to. */
  head: CommittedHead | null = null;
  #bytes = 0;
  #keyBytes = 0;

  /** Adds all of `unit` if the operation stays within Deno KV's limits; else changes nothing. */
  tryAdd(unit: Unit): boolean {
    let count = this.mutations.size;
    let total = this.#bytes;
    let keys = this.#keyBytes;
    for (const m of unit.mutations) {
      const previous = this.mutations.get(m.id);
      if (previous === undefined) {
        count++;
        keys += m.keyBytes;
        total += m.bytes;
      } else {
        total += m.bytes - previous.bytes;
      }
    }
    if (!fits(count, total, keys)) return false;
    for (const m of unit.mutations) this.mutations.set(m.id, m);
    this.#bytes = total;
    this.#keyBytes = keys;
    if (unit.head !== null) this.head = unit.head;
    return true;
  }
}

/** Packs units in order into atomic operations; a unit never spans two. */
function packUnits(units: Unit[]): AtomicBudget[] {
  const ops: AtomicBudget[] = [];
  for (const unit of units) {
    if (ops.length > 0 && ops[ops.length - 1]!.tryAdd(unit)) continue;
    const op = new AtomicBudget();
    assert(op.tryAdd(unit), "every unit fits one atomic operation");
    ops.push(op);
  }
  return ops;
}

/**
 * The final sequence: the records' units (each record chunked only if its unit does not fit one
 * operation inline, a commit split if it does not fit even so), the safety state, the prunes,
 * packed in that order.
 */
function planFinal(
  records: RecordPlan[],
  safety: Unit | null,
  prune: readonly Unit[],
): AtomicBudget[] {
  // Spec 6.3 step 2: Nodes, commits, safety state, prunes; packed in order, never split.
  const units = records.flatMap((r) => r.isCommit ? commitUnits(r) : [insertUnit(r)]);
  if (safety !== null) {
    if (!safety.fitsAlone()) {
      throw new HotStuffError("batch-too-large", "the safety state does not fit one operation");
    }
    units.push(safety);
  }
  units.push(...prune);
  return packUnits(units);
}

/** An inserted Node's unit, its record chunked if it does not fit one operation inline. */
function insertUnit(r: RecordPlan): Unit {
  const unit = nodeUnit(r);
  if (unit.fitsAlone() || r.chunked) return unit;
  r.chunked = true;
  return nodeUnit(r);
}

/**
 * A commit's units: one if it fits (its record chunked if that is what makes it fit); else its
 * marker, index entry and updates over as many units as they need, then the commit record and
 * the head in a last one.
 */
function commitUnits(r: RecordPlan): Unit[] {
  const whole = commitUnit(r);
  if (whole.fitsAlone()) return [whole];
  if (!r.chunked) {
    r.chunked = true;
    const chunked = commitUnit(r);
    if (chunked.fitsAlone()) return [chunked];
    r.chunked = false; // split anyway: the marker may stay inline
  }
  // Spec 6.3 step 3: the Node stored uncommitted with its first updates, then the other
  // updates, the head last.
  const parts = [new Unit()];
  const before = [...markerMutations(r), uncommittedMutation(r, EMPTY), ...r.updates];
  for (const m of before) {
    if (!parts[parts.length - 1]!.fitsWith(m)) parts.push(new Unit());
    parts[parts.length - 1]!.push(m);
  }
  const last = new Unit();
  commitRecord(last, r);
  return [...parts, last];
}

/** An inserted Node: its marker, and its place in the uncommitted index unless committed. */
function nodeUnit(r: RecordPlan): Unit {
  const unit = new Unit();
  for (const m of markerMutations(r)) unit.push(m);
  if (!r.committed) unit.push(uncommittedMutation(r, EMPTY));
  return unit;
}

/** A commit: marker, index delete, height index, head, and the Node's state updates. */
function commitUnit(r: RecordPlan): Unit {
  const unit = new Unit();
  for (const m of markerMutations(r)) unit.push(m);
  commitRecord(unit, r);
  for (const m of r.updates) unit.push(m);
  return unit;
}

/** The mutations that make `r` committed: index delete, height index, head. */
function commitRecord(unit: Unit, r: RecordPlan): void {
  const { node, hash } = r.stored;
  unit.push(uncommittedMutation(r, null));
  unit.push(mutation(`c${node.height}`, ["committed", node.height], hash));
  unit.push(mutation("h", ["head"], encodeHeadValue(node.height, hash)));
  unit.head = { height: node.height, hash };
}

/** The Node's marker, after deletes of chunks of a different record it replaces. */
function markerMutations(r: RecordPlan): Mutation[] {
  const out: Mutation[] = [];
  const hash = r.stored.hash;
  if (r.previous !== null && r.previous.kind === "chunked") {
    const old = r.previous;
    if (!r.chunked || !bytesEqual(old.digest, digestOf(r))) {
      for (let i = 0; i < old.count; i++) out.push(chunkMutation(r, old.digest, i, null));
    }
  }
  const marker = r.chunked
    ? encodeValue([MARKER_CHUNKED, digestOf(r), chunkCount(r), r.record.length])
    : encodeInlineMarker(r.record);
  out.push(mutation(`n${r.id}`, ["node", hash], marker));
  return out;
}

function uncommittedMutation(r: RecordPlan, value: Uint8Array | null): Mutation {
  return mutation(`u${r.id}`, ["uncommitted", r.stored.hash], value);
}

function chunkMutation(
  r: RecordPlan,
  digest: Uint8Array,
  i: number,
  value: Uint8Array | null,
): Mutation {
  return mutation(`k${r.id}${bytesId(digest)}${i}`, ["chunk", r.stored.hash, digest, i], value);
}

/** Chunks are skipped when the previous marker already names the same record. */
function needsChunks(r: RecordPlan): boolean {
  if (!r.chunked) return false;
  const p = r.previous;
  return p === null || p.kind !== "chunked" || !bytesEqual(p.digest, digestOf(r));
}

function chunkUnits(r: RecordPlan): Unit[] {
  const size = DENO_KV_LIMITS.chunkBytes;
  return Array.from({ length: chunkCount(r) }, (_, i) => {
    const unit = new Unit();
    unit.push(chunkMutation(r, digestOf(r), i, r.record.subarray(i * size, (i + 1) * size)));
    return unit;
  });
}

function chunkCount(r: RecordPlan): number {
  return Math.ceil(r.record.length / DENO_KV_LIMITS.chunkBytes);
}

function chunkedMarker(r: RecordPlan): ChunkedMarker {
  return {
    kind: "chunked",
    digest: digestOf(r),
    count: chunkCount(r),
    byteLength: r.record.length,
  };
}

function partsFor(byteLength: number): number {
  return Math.ceil(byteLength / DENO_KV_LIMITS.valueBytesMax);
}

function digestOf(r: RecordPlan): Uint8Array {
  if (r.digest === null) r.digest = sha256(r.record);
  return r.digest;
}

/**
 * Abandoned uncommitted Nodes to delete. Nodes written by this same batch are not deleted: the
 * caller never prunes what it inserts in the same step.
 */
function prunedHashes(batch: WriteBatch, records: RecordPlan[]): Hash[] {
  const written = new Set(records.map((r) => r.id));
  return (batch.prune ?? []).filter((h) => !written.has(bytesId(h)));
}

/** A pruned Node's marker and index entry (a chunked record's chunks stay behind, invisible). */
function pruneUnit(hash: Hash): Unit {
  const unit = new Unit();
  const id = bytesId(hash);
  unit.push(mutation(`n${id}`, ["node", hash], null));
  unit.push(mutation(`u${id}`, ["uncommitted", hash], null));
  return unit;
}

/** The safety state, split in values of at most `valueBytesMax`, with its header. */
function safetyUnit(safety: SafetyState): Unit {
  const state = encodeSafety(safety);
  const size = DENO_KV_LIMITS.valueBytesMax;
  const partCount = partsFor(state.length);
  const unit = new Unit();
  unit.push(mutation("s", ["safety"], encodeValue([partCount, state.length])));
  for (let i = 0; i < partCount; i++) {
    unit.push(mutation(`s${i}`, ["safety", i], state.subarray(i * size, (i + 1) * size)));
  }
  return unit;
}

function atomicOf(kv: Deno.Kv, op: AtomicBudget): Deno.AtomicOperation {
  const atomic = kv.atomic();
  for (const { key, value } of op.mutations.values()) {
    if (value === null) atomic.delete(key);
    else atomic.set(key, value);
  }
  return atomic;
}

/** Encoded size of the key part `"app"`. */
const APP_PART_BYTES = 5;

/** Encoded size of a key, as Deno KV measures it against `keyBytesMax`. */
function keyBytes(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) {
    if (typeof part === "number") n += 9;
    else if (typeof part === "string") n += stringPartBytes(part);
    else if (part instanceof Uint8Array) n += escapedBytes(part);
    else assert(false, `unexpected key part type ${typeof part}`);
  }
  return n;
}

/** Our key names are ASCII without zeros: one byte a character, no escapes. */
function stringPartBytes(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) return escapedBytes(encoder.encode(s));
  }
  return 2 + s.length;
}

/** A stored state value: bytes, or null for a {@link TOMBSTONE} (anything else is corrupt). */
function stateValue(value: unknown, key: Uint8Array): Uint8Array | null {
  return value === TOMBSTONE ? null : bytes(value, `state ${toHex(key)}`, null);
}

/** The entries of one part of the base (canonical CBOR, as written by {@link baseParts}). */
function basePart(entry: Deno.KvEntry<unknown>): StateEntry[] {
  const entries = decodeChunk(bytes(entry.value, "state base part", null));
  if (entries === null) throw corrupt("state base part", `${entry.key.join("/")} does not decode`);
  return entries;
}

/** A bucket's entries as parts of at most {@link BASE_PART_BYTES_MAX} bytes, in order. */
function baseParts(entries: readonly StateEntry[]): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let start = 0;
  let size = 5;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const entrySize = 1 + 5 + e.key.length + 5 + e.value.length; // heads of at most 5 bytes
    if (i > start && size + entrySize > BASE_PART_BYTES_MAX) {
      parts.push(encodeChunk(entries.slice(start, i)));
      start = i;
      size = 5;
    }
    size += entrySize;
  }
  if (entries.length > start) parts.push(encodeChunk(entries.slice(start)));
  return parts;
}

/** Commits `op`, refused only by a store failure (snapshot writes carry no checks). */
async function commitOrThrow(op: Deno.AtomicOperation): Promise<void> {
  const r = await op.commit();
  if (!r.ok) throw new HotStuffError("write-failed", "a snapshot write was refused");
}

/** A tag and a terminator byte, plus one escape byte per zero byte. */
function escapedBytes(b: Uint8Array): number {
  let zeros = 0;
  for (let i = 0; i < b.length; i++) if (b[i] === 0) zeros++;
  return 2 + b.length + zeros;
}

/** The bytes as a string of char codes 0-255: a cheap map key (keys are at most 2,048 bytes). */
function bytesId(b: Uint8Array): string {
  return String.fromCharCode.apply(null, b as unknown as number[]);
}

// ---------------------------------------------------------------------------------------------
// Encoding and strict decoding of stored values

/** CBOR `[encodeNode(node), [[key, value or null], ...]]`. */
function encodeRecord(stored: StoredNode): Uint8Array {
  return encodeValue([encodeNode(stored.node), stored.updates]);
}

/** CBOR `[MARKER_INLINE, record]`. */
function encodeInlineMarker(record: Uint8Array): Uint8Array {
  return encodeValue([MARKER_INLINE, record]);
}

/** CBOR `[height, hash]`. */
function encodeHeadValue(height: number, hash: Hash): Uint8Array {
  return encodeValue([height, hash]);
}

function encodeSafety(s: SafetyState): Uint8Array {
  // Never write what the strict decoder would refuse to read back.
  for (const view of [s.currentView, s.lastVotedView, s.lockedQC.view, s.highQC.view]) {
    assert(Number.isSafeInteger(view) && view >= 0, `safety view ${view}`);
  }
  assert(s.highTC === null || Number.isSafeInteger(s.highTC.view) && s.highTC.view >= 0, "tc");
  const tc = s.highTC === null ? null : encodeQC(tcAsQC(s.highTC));
  return encodeValue([
    s.currentView,
    s.lastVotedView,
    encodeQC(s.lockedQC),
    encodeQC(s.highQC),
    tc,
  ]);
}

function tcAsQC(tc: TimeoutCertificate): QuorumCertificate {
  return { chainId: tc.chainId, view: tc.view, nodeHash: ZERO_HASH, signatures: tc.signatures };
}

function corrupt(what: string, detail: string): HotStuffError {
  return new HotStuffError("corrupt-store", `${what}: ${detail}`);
}

function decodeStored(value: unknown, what: string): unknown {
  const b = bytes(value, what, null);
  try {
    return decodeValue(b);
  } catch (e) {
    throw corrupt(what, e instanceof Error ? e.message : String(e));
  }
}

function bytes(v: unknown, what: string, length: number | null): Uint8Array {
  if (!(v instanceof Uint8Array)) throw corrupt(what, `expected bytes, got ${typeof v}`);
  if (length !== null && v.length !== length) {
    throw corrupt(what, `expected ${length} bytes, got ${v.length}`);
  }
  return v;
}

function tuple(v: unknown, what: string, length: number): unknown[] {
  if (!Array.isArray(v) || v.length !== length) {
    throw corrupt(what, `expected an array of ${length}`);
  }
  return v;
}

function uint(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw corrupt(what, `expected a non-negative integer, got ${String(v)}`);
  }
  return v;
}

function qc(v: unknown, what: string, limits: CodecLimits): QuorumCertificate {
  const r = decodeQC(bytes(v, what, null), limits);
  if (!r.ok) throw corrupt(what, `${r.error.reason}: ${r.error.message}`);
  return r.value;
}

function decodeSafety(v: unknown, limits: CodecLimits): SafetyState {
  const a = tuple(v, "safety", 5);
  let highTC: TimeoutCertificate | null = null;
  if (a[4] !== null) {
    const t = qc(a[4], "safety high tc", limits);
    if (!bytesEqual(t.nodeHash, ZERO_HASH)) throw corrupt("safety high tc", "non-zero node hash");
    highTC = { chainId: t.chainId, view: t.view, signatures: t.signatures };
  }
  return {
    currentView: uint(a[0], "safety current view"),
    lastVotedView: uint(a[1], "safety last voted view"),
    lockedQC: qc(a[2], "safety locked qc", limits),
    highQC: qc(a[3], "safety high qc", limits),
    highTC,
  };
}

function decodeHead(value: unknown): CommittedHead | null {
  if (value === null) return null;
  const a = tuple(decodeStored(value, "head"), "head", 2);
  const height = uint(a[0], "head height");
  if (height < 1) throw corrupt("head", "height 0");
  return { height, hash: bytes(a[1], "head hash", 32) };
}

type InlineMarker = { readonly kind: "inline"; readonly record: Uint8Array };
type ChunkedMarker = {
  readonly kind: "chunked";
  readonly digest: Uint8Array;
  readonly count: number;
  readonly byteLength: number;
};
type PreviousMarker = InlineMarker | ChunkedMarker;

/** Largest record a marker may announce: the Node (command and certificate) and its updates. */
function recordBytesMax(limits: CodecLimits): number {
  return limits.commandBytesMax + 2 * 1024 * 1024;
}

function decodeMarker(value: unknown, hash: Hash, limits: CodecLimits): PreviousMarker {
  const what = `node ${toHex(hash)} marker`;
  const v = decodeStored(value, what);
  if (!Array.isArray(v)) throw corrupt(what, "expected an array");
  if (v[0] === MARKER_INLINE) {
    return { kind: "inline", record: bytes(tuple(v, what, 2)[1], what, null) };
  }
  if (v[0] !== MARKER_CHUNKED) throw corrupt(what, `unknown kind ${String(v[0])}`);
  const a = tuple(v, what, 4);
  const byteLength = uint(a[3], `${what} length`);
  const count = uint(a[2], `${what} chunk count`);
  if (byteLength > recordBytesMax(limits)) throw corrupt(what, `record of ${byteLength} bytes`);
  if (count !== Math.ceil(byteLength / DENO_KV_LIMITS.chunkBytes) || count === 0) {
    throw corrupt(what, `${count} chunks cannot hold ${byteLength} bytes`);
  }
  return { kind: "chunked", digest: bytes(a[1], `${what} digest`, 32), count, byteLength };
}

/** The marker a write replaces; an unreadable one is overwritten, its chunks left behind. */
function previousMarker(value: unknown, hash: Hash, limits: CodecLimits): PreviousMarker | null {
  if (value === null || value === undefined) return null;
  try {
    return decodeMarker(value, hash, limits);
  } catch (e) {
    if (e instanceof HotStuffError) return null;
    throw e;
  }
}

function decodeRecord(record: Uint8Array, hash: Hash, limits: CodecLimits): StoredNode {
  const what = `node ${toHex(hash)}`;
  const a = tuple(decodeStored(record, what), what, 2);
  const r = decodeNode(bytes(a[0], what, null), limits);
  if (!r.ok) throw corrupt(what, `${r.error.reason}: ${r.error.message}`);
  if (!bytesEqual(nodeHash(r.value), hash)) throw corrupt(what, "stored node has another hash");
  if (!Array.isArray(a[1])) throw corrupt(what, "updates: expected an array");
  const updates = a[1].map((u, i): StateUpdate => {
    const pair = tuple(u, `${what} update ${i}`, 2);
    const value = pair[1] === null ? null : bytes(pair[1], `${what} update ${i} value`, null);
    return [bytes(pair[0], `${what} update ${i} key`, null), value];
  });
  return { node: r.value, hash, updates };
}

function concatParts(parts: unknown[], what: string, byteLength: number): Uint8Array {
  const out = concat(parts.map((p, i) => bytes(p, `${what} part ${i}`, null)));
  if (out.length !== byteLength) {
    throw corrupt(what, `expected ${byteLength} bytes, parts hold ${out.length}`);
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
