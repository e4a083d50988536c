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
 * | `["app", key]` | committed application state |
 *
 * A record is CBOR `[encodeNode(node), [[key, value or null], ...]]`. QCs in the safety state are
 * {@link encodeQC} bytes; the TC is stored in the same QC tuple form with a zero node hash, so the
 * strict QC decoder checks it too.
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
 * ## How one write stays one atomic step
 *
 * A record larger than {@link DENO_KV_LIMITS}`.inlineRecordBytesMax` is written first as chunks,
 * in atomic operations of their own. Chunk keys contain the record's SHA-256, so chunks are
 * immutable: nothing reads them until a marker that names their digest lands, and chunks left
 * by a crash are invisible (a later write of the same record writes the same keys again).
 *
 * Then one final atomic operation writes the markers, the uncommitted index, the commits (height
 * index, head, application updates) and the safety state, checking that the head did not change
 * since it was read. When these do not fit in one atomic operation, records are moved to chunks
 * first; if it still does not fit, the batch is split into several operations, in this order:
 * inserted Nodes (in batch order), commits (in height order), the safety state. Each operation
 * holds whole units, so after a crash the store holds a prefix of that sequence: some inserted
 * Nodes, or all of them and a prefix of the commits with all of their updates and the head on
 * the last of them. The safety state comes last so that it never refers to a Node that is not
 * stored; a lost safety state only means the previous one, which no sent vote depends on. A
 * single Node whose commit (its updates) cannot fit in one atomic operation is refused with
 * reason `"batch-too-large"`, when it is inserted as well as when it is committed.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
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

// Re-exported so that this module's public API names every type it uses (`deno doc --lint`).

/** Limits of Deno KV that {@link DenoKvStorage} plans around, and its own record sizes. */
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

/** Room kept free in every atomic operation for the head check and rounding. */
const ATOMIC_BYTES_SLACK = 1_024;
const MARKER_INLINE = 1;
const MARKER_CHUNKED = 2;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** Where one atomic operation of the final sequence stands, for {@link DenoKvOptions}. */
export interface FinalCommitStep {
  /** Index of the operation about to be committed, from 0. */
  readonly index: number;
  /** Number of operations of the final sequence (1 unless the batch had to be split). */
  readonly count: number;
}

/** Options of {@link DenoKvStorage.open} and {@link DenoKvStorage.wrap}. */
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
 * {@link Storage} on Deno KV. Writes are serialized; reads may run alongside them.
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
   * store expects the whole KV to itself.
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
   *   command: new Uint8Array(100), proposer: new Uint8Array(32),
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
    if (keyBytes(["app", key]) > DENO_KV_LIMITS.keyBytesMax) return null;
    const entry = await this.#kv.get(["app", key]);
    if (entry.value === null) return null;
    return bytes(entry.value, `state ${toHex(key)}`, null);
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
    const headEntry = await this.#kv.get(["head"]);
    validateCommits(decodeHead(headEntry.value), batch.commits ?? []);
    const records = collectRecords(batch, this.#limits);
    const prune = pruneUnits(batch, records);
    if (records.length === 0 && batch.safety === undefined && prune.length === 0) return;
    await this.#readPrevious(records);
    const safety = batch.safety === undefined ? null : safetyUnit(batch.safety);
    const ops = planFinal(records, safety, prune);
    await this.#writeChunks(records);
    await this.#commitFinal(ops, headEntry.versionstamp);
  }

  /** Reads each record's previous marker and whether its Node is already committed. */
  async #readPrevious(records: RecordPlan[]): Promise<void> {
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
    const units = records.filter(needsChunks).flatMap(chunkUnits);
    for (const op of packUnits(units)) {
      const result = await atomicOf(this.#kv, op).commit();
      assert(result.ok, "chunk writes have no checks");
    }
  }

  async #commitFinal(ops: AtomicBudget[], headVersion: string | null): Promise<void> {
    let version = headVersion;
    for (const [index, op] of ops.entries()) {
      await this.#beforeFinalCommit?.({ index, count: ops.length });
      const result = await atomicOf(this.#kv, op).check({ key: ["head"], versionstamp: version })
        .commit();
      if (!result.ok) {
        throw new HotStuffError(
          "concurrent-write",
          "the committed head changed during a write: another writer is using this Deno KV",
        );
      }
      if (op.mutations.has(keyId(["head"]))) version = result.versionstamp;
    }
  }

  /** Values of `keys`, in order, `getManyKeysMax` keys per read. */
  async #getAll(keys: Deno.KvKey[]): Promise<unknown[]> {
    const out: unknown[] = [];
    for (let i = 0; i < keys.length; i += DENO_KV_LIMITS.getManyKeysMax) {
      const group = keys.slice(i, i + DENO_KV_LIMITS.getManyKeysMax);
      for (const entry of await this.#kv.getMany(group)) out.push(entry.value);
    }
    return out;
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

// ---------------------------------------------------------------------------------------------
// Validation

/** Same rules as MemoryStorage: consecutive heights from the head, each extending the last. */
function validateCommits(head: CommittedHead | null, commits: readonly StoredNode[]): void {
  let hash = head === null ? null : head.hash;
  let height = head === null ? 0 : head.height;
  for (const c of commits) {
    assert(c.node.height === height + 1, `commit height ${c.node.height} after ${height}`);
    assert(hash === null || bytesEqual(c.node.parent, hash), "commit must extend the head");
    hash = c.hash;
    height++;
  }
}

/** A StoredNode to write, with what the plan decided about it. */
interface RecordPlan {
  readonly stored: StoredNode;
  readonly record: Uint8Array;
  readonly isCommit: boolean;
  digest: Uint8Array | null;
  chunked: boolean;
  previous: PreviousMarker | null;
  committed: boolean;
}

/** One record per distinct Node: inserted Nodes in batch order, then commits (which win). */
function collectRecords(batch: WriteBatch, limits: CodecLimits): RecordPlan[] {
  const byId = new Map<string, RecordPlan>();
  for (
    const [stored, isCommit] of [
      ...(batch.nodes ?? []).map((s) => [s, false] as const),
      ...(batch.commits ?? []).map((s) => [s, true] as const),
    ]
  ) {
    checkStored(stored, limits);
    const record = encodeRecord(stored);
    const plan: RecordPlan = {
      stored,
      record,
      isCommit,
      digest: null,
      chunked: record.length > DENO_KV_LIMITS.inlineRecordBytesMax,
      previous: null,
      committed: false,
    };
    const id = toHex(stored.hash);
    byId.delete(id); // keep the order of the last occurrence
    byId.set(id, plan);
  }
  const records = [...byId.values()];
  for (const r of records) checkCommittable(r);
  return records;
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
  for (const [key, value] of stored.updates) {
    const size = keyBytes(["app", key]);
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
  }
}

/** Refuses a Node whose commit could never fit in one atomic operation. */
function checkCommittable(r: RecordPlan): void {
  // The digest only matters by its size here: a placeholder saves hashing inline records.
  const probe: RecordPlan = { ...r, chunked: true, previous: null, digest: ZERO_HASH };
  if (fitsAlone(commitUnit(probe))) return;
  throw new HotStuffError(
    "batch-too-large",
    `node ${toHex(r.stored.hash)} has ${r.stored.updates.length} state updates that do not fit ` +
      `in one Deno KV atomic operation`,
  );
}

// ---------------------------------------------------------------------------------------------
// Planning

type Mutation = { readonly key: Deno.KvKey; readonly value: Uint8Array | null };
type Unit = Map<string, Mutation>;

/** Mutations of one atomic operation, later ones for a key replacing earlier ones. */
class AtomicBudget {
  readonly mutations: Unit = new Map();
  #bytes = 0;
  #keyBytes = 0;

  /** Adds all of `unit` if the operation stays within Deno KV's limits; else changes nothing. */
  tryAdd(unit: Unit): boolean {
    let count = this.mutations.size;
    let total = this.#bytes;
    let keys = this.#keyBytes;
    for (const [id, m] of unit) {
      const previous = this.mutations.get(id);
      if (previous === undefined) {
        count++;
        keys += keyBytes(m.key);
      } else {
        total -= mutationBytes(previous);
      }
      total += mutationBytes(m);
    }
    if (count > DENO_KV_LIMITS.atomicMutationsMax) return false;
    if (total > DENO_KV_LIMITS.atomicBytesMax - ATOMIC_BYTES_SLACK) return false;
    if (keys > DENO_KV_LIMITS.atomicKeyBytesMax - ATOMIC_BYTES_SLACK) return false;
    for (const [id, m] of unit) this.mutations.set(id, m);
    this.#bytes = total;
    this.#keyBytes = keys;
    return true;
  }
}

/** Packs units in order into atomic operations; a unit never spans two. */
function packUnits(units: Unit[]): AtomicBudget[] {
  const ops: AtomicBudget[] = [];
  for (const unit of units) {
    if (ops.length > 0 && ops[ops.length - 1]!.tryAdd(unit)) continue;
    const op = new AtomicBudget();
    assert(op.tryAdd(unit), "every unit was checked to fit one atomic operation");
    ops.push(op);
  }
  return ops;
}

/**
 * The final sequence. Records are chunked until every unit fits one operation, then (largest
 * first) until the whole batch fits one, or no inline record is left.
 */
function planFinal(
  records: RecordPlan[],
  safety: Unit | null,
  prune: readonly Unit[] = [],
): AtomicBudget[] {
  for (const r of records) {
    if (!r.chunked && !fitsAlone(recordUnit(r))) r.chunked = true;
    // checkCommittable already refused most of these; here the deletes of replaced chunks count.
    if (!fitsAlone(recordUnit(r))) {
      throw new HotStuffError("batch-too-large", `node ${toHex(r.stored.hash)} does not fit`);
    }
  }
  if (safety !== null && !fitsAlone(safety)) {
    throw new HotStuffError("batch-too-large", "the safety state does not fit one operation");
  }
  const inline = records.filter((r) => !r.chunked).sort((a, b) =>
    b.record.length - a.record.length
  );
  for (;;) {
    const units = records.map(recordUnit);
    if (safety !== null) units.push(safety);
    units.push(...prune);
    const ops = packUnits(units);
    const next = inline.shift();
    if (ops.length <= 1 || next === undefined) return ops;
    next.chunked = true;
  }
}

function fitsAlone(unit: Unit): boolean {
  return new AtomicBudget().tryAdd(unit);
}

function recordUnit(r: RecordPlan): Unit {
  return r.isCommit ? commitUnit(r) : nodeUnit(r);
}

/** An inserted Node: its marker, and its place in the uncommitted index unless committed. */
function nodeUnit(r: RecordPlan): Unit {
  const unit = markerUnit(r);
  if (!r.committed) put(unit, ["uncommitted", r.stored.hash], EMPTY);
  return unit;
}

/** A commit: marker, height index, head, and the Node's state updates in order. */
function commitUnit(r: RecordPlan): Unit {
  const { node, hash, updates } = r.stored;
  const unit = markerUnit(r);
  put(unit, ["uncommitted", hash], null);
  put(unit, ["committed", node.height], hash);
  put(unit, ["head"], encodeValue([node.height, hash]));
  for (const [key, value] of updates) put(unit, ["app", key], value);
  return unit;
}

/** The Node's marker, and deletes of chunks of a different record it replaces. */
function markerUnit(r: RecordPlan): Unit {
  const unit: Unit = new Map();
  const hash = r.stored.hash;
  if (r.previous !== null && r.previous.kind === "chunked") {
    const old = r.previous;
    if (!r.chunked || !bytesEqual(old.digest, digestOf(r))) {
      for (let i = 0; i < old.count; i++) put(unit, ["chunk", hash, old.digest, i], null);
    }
  }
  const marker = r.chunked
    ? encodeValue([MARKER_CHUNKED, digestOf(r), chunkCount(r), r.record.length])
    : encodeValue([MARKER_INLINE, r.record]);
  put(unit, ["node", hash], marker);
  return unit;
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
    const unit: Unit = new Map();
    put(
      unit,
      ["chunk", r.stored.hash, digestOf(r), i],
      r.record.subarray(i * size, (i + 1) * size),
    );
    return unit;
  });
}

function chunkCount(r: RecordPlan): number {
  return Math.ceil(r.record.length / DENO_KV_LIMITS.chunkBytes);
}

function partsFor(byteLength: number): number {
  return Math.ceil(byteLength / DENO_KV_LIMITS.valueBytesMax);
}

function digestOf(r: RecordPlan): Uint8Array {
  if (r.digest === null) r.digest = sha256(r.record);
  return r.digest;
}

/**
 * Deletes of abandoned uncommitted Nodes: their marker and index entry (a chunked record's
 * chunks stay behind, invisible without the marker). Nodes written by this same batch are not
 * deleted: the caller never prunes what it inserts in the same step.
 */
function pruneUnits(batch: WriteBatch, records: RecordPlan[]): Unit[] {
  const written = new Set(records.map((r) => toHex(r.stored.hash)));
  return (batch.prune ?? []).filter((h) => !written.has(toHex(h))).map((hash) => {
    const unit: Unit = new Map();
    put(unit, ["node", hash], null);
    put(unit, ["uncommitted", hash], null);
    return unit;
  });
}

/** The safety state, split in values of at most `valueBytesMax`, with its header. */
function safetyUnit(safety: SafetyState): Unit {
  const state = encodeSafety(safety);
  const size = DENO_KV_LIMITS.valueBytesMax;
  const partCount = partsFor(state.length);
  const unit: Unit = new Map();
  put(unit, ["safety"], encodeValue([partCount, state.length]));
  for (let i = 0; i < partCount; i++) {
    put(unit, ["safety", i], state.subarray(i * size, (i + 1) * size));
  }
  return unit;
}

function put(unit: Unit, key: Deno.KvKey, value: Uint8Array | null): void {
  unit.set(keyId(key), { key, value });
}

function atomicOf(kv: Deno.Kv, op: AtomicBudget): Deno.AtomicOperation {
  const atomic = kv.atomic();
  for (const { key, value } of op.mutations.values()) {
    if (value === null) atomic.delete(key);
    else atomic.set(key, value);
  }
  return atomic;
}

/** Size as Deno KV counts it (a delete is over-counted like a set without value). */
function mutationBytes(m: Mutation): number {
  return 2 * keyBytes(m.key) + (m.value === null ? 0 : m.value.length);
}

/** Encoded size of a key, as Deno KV measures it against `keyBytesMax`. */
function keyBytes(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) {
    if (typeof part === "number") n += 9;
    else if (typeof part === "string") n += escapedBytes(encoder.encode(part));
    else if (part instanceof Uint8Array) n += escapedBytes(part);
    else assert(false, `unexpected key part type ${typeof part}`);
  }
  return n;
}

/** A tag and a terminator byte, plus one escape byte per zero byte. */
function escapedBytes(b: Uint8Array): number {
  let zeros = 0;
  for (let i = 0; i < b.length; i++) if (b[i] === 0) zeros++;
  return 2 + b.length + zeros;
}

function keyId(key: Deno.KvKey): string {
  return key.map((p) => p instanceof Uint8Array ? `b${toHex(p)}` : `${typeof p}:${String(p)}`)
    .join("/");
}

// ---------------------------------------------------------------------------------------------
// Encoding and strict decoding of stored values

function encodeRecord(stored: StoredNode): Uint8Array {
  return encodeValue([encodeNode(stored.node), stored.updates.map(([k, v]) => [k, v])]);
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
