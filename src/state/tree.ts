/**
 * The state tree: an authenticated index of committed application state, for state proofs and
 * snapshot state sync. See SPECIFICATION.md 15.3.
 *
 * Shape: a fixed binary Merkle tree over {@link STATE_BUCKETS} (4,096) buckets. A state key goes
 * to the bucket {@link bucketOf} names; a bucket holds its entries sorted by
 * key. Hashes (SHA-256, each with a one-byte domain prefix so no hash can pose as another kind):
 *
 * - bucket: `H(0x01 ‖ (u16 key length ‖ key ‖ H(value))...)` over its entries in key order (an
 *   empty bucket is `H(0x01)`);
 * - inner: `H(0x02 ‖ left ‖ right)`; the root is the top inner hash.
 *
 * Hashing is lazy: updates mark buckets dirty, {@link StateTree.root} rehashes what changed. A
 * {@link StateOverlay} gives the root of the tree with further (uncommitted) updates by hashing
 * only the buckets they change and their paths.
 * The tree keeps keys and values in memory (it is the state a snapshot is served from).
 *
 * @module
 */
import { sha256Bytes } from "../crypto.ts";
import { assert } from "../errors.ts";
import { bytesCompare, bytesEqual, type Hash } from "../types.ts";

/** Depth of the tree: 12 levels above the buckets. */
export const STATE_TREE_DEPTH = 12;
/** Number of buckets: 2^12. */
export const STATE_BUCKETS: number = 1 << STATE_TREE_DEPTH;
/** Snapshot chunks: each holds 16 consecutive buckets (a subtree of depth 4). */
export const SNAPSHOT_CHUNKS = 256;
/** Buckets per snapshot chunk. */
export const BUCKETS_PER_CHUNK: number = STATE_BUCKETS / SNAPSHOT_CHUNKS;
/** Most entries a state proof may reveal for its bucket (bounds what a verifier reads). */
export const STATE_PROOF_ENTRIES_MAX = 4096;
/** Longest state key the tree accepts, bytes. */
export const STATE_KEY_BYTES_MAX = 2048;

/**
 * One state entry.
 *
 * @example
 * ```ts
 * import type { StateEntry } from "./tree.ts";
 * const entry: StateEntry = { key: new TextEncoder().encode("k/a"), value: new Uint8Array([1]) };
 * ```
 */
export interface StateEntry {
  /** The state key. */
  readonly key: Uint8Array;
  /** Its value. */
  readonly value: Uint8Array;
}

interface Entry extends StateEntry {
  /** `H(value)`, computed when its bucket is first rehashed (then never changes). */
  valueHash: Hash | null;
}

type Bucket = readonly Entry[];

const EMPTY_BUCKET: Bucket = [];

/**
 * A proof that a key has a value (or none) in the state with a given root: all entries of the
 * key's bucket (key and value hash) and the 12 sibling hashes from the bucket to the root.
 *
 * @example
 * ```ts
 * import { type StateProof, StateTree } from "./tree.ts";
 * const k = new TextEncoder().encode("k/a");
 * const proof: StateProof = new StateTree().freeze().prove(k);
 * console.log(proof.bucket, proof.entries.length, proof.siblings.length); // bucket, 0, 12
 * ```
 */
export interface StateProof {
  /** The bucket index of the key. */
  readonly bucket: number;
  /** Every entry of the bucket, sorted by key: `[key, H(value)]`. */
  readonly entries: readonly (readonly [Uint8Array, Hash])[];
  /** Sibling hashes, bucket level first. */
  readonly siblings: readonly Hash[];
}

/**
 * The verdict of {@link verifyStateProof}.
 *
 * @example
 * ```ts
 * import { EMPTY_STATE_ROOT, type StateProofVerdict, StateTree, verifyStateProof } from "./tree.ts";
 * const k = new Uint8Array([1]);
 * const proof = new StateTree().freeze().prove(k);
 * const verdict: StateProofVerdict = verifyStateProof(EMPTY_STATE_ROOT, k, new Uint8Array([2]), proof);
 * if (!verdict.ok) console.log(verdict.reason); // the key is absent, a value was claimed
 * ```
 */
export type StateProofVerdict =
  | { readonly ok: true; readonly value: Uint8Array | null }
  | { readonly ok: false; readonly reason: string };

/**
 * The bucket of a state key: the top 12 bits of its 32-bit FNV-1a hash. Not cryptographic on
 * purpose: 12 bits can be ground with any hash, so a bucket's size is bounded by
 * {@link STATE_PROOF_ENTRIES_MAX} for proofs, not by the hash; FNV costs far less per update.
 */
export function bucketOf(key: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i]!, 0x01000193);
  return h >>> (32 - STATE_TREE_DEPTH);
}

/**
 * The hash of a bucket: `H(0x01 ‖ (u16 len(key) ‖ key ‖ H(value))...)` over its entries in
 * byte order of keys.
 */
export function bucketHash(entries: readonly (readonly [Uint8Array, Hash])[]): Hash {
  const list = entries.map(([key, valueHash]) => ({ key, value: EMPTY_VALUE, valueHash }));
  return entriesHash(list, 0, list.length);
}

const EMPTY_VALUE = new Uint8Array(0);

/**
 * {@link bucketHash} of `entries[start..end)`, each value hashed only when its hash is not
 * known yet (and then kept in the entry).
 */
function entriesHash(
  entries: readonly Entry[],
  start: number,
  end: number,
  hashValue: (value: Uint8Array) => Hash = valueHash,
): Hash {
  let size = 1;
  for (let i = start; i < end; i++) size += 2 + entries[i]!.key.length + 32;
  const b = new Uint8Array(size);
  b[0] = 0x01;
  let at = 1;
  for (let i = start; i < end; i++) {
    const e = entries[i]!;
    const k = e.key;
    b[at] = k.length >> 8;
    b[at + 1] = k.length & 0xff;
    b.set(k, at + 2);
    b.set(e.valueHash ??= hashValue(e.value), at + 2 + k.length);
    at += 2 + k.length + 32;
  }
  return sha256Bytes(b);
}

/** `H(value)` by value object: the same bytes reach an overlay and then the committed tree. */
const VALUE_HASHES = new WeakMap<Uint8Array, Hash>();

function valueHash(value: Uint8Array): Hash {
  let h = VALUE_HASHES.get(value);
  if (h === undefined) {
    h = sha256Bytes(value);
    VALUE_HASHES.set(value, h);
  }
  return h;
}

/** The hash of a bucket's entries, each value hashed once. */
function hashBucket(bucket: Bucket): Hash {
  return entriesHash(bucket, 0, bucket.length);
}

/** The hash of an inner node. */
export function innerHash(left: Hash, right: Hash): Hash {
  const b = new Uint8Array(65);
  b[0] = 0x02;
  b.set(left, 1);
  b.set(right, 33);
  return sha256Bytes(b);
}

/** The hash of an empty bucket. */
export const EMPTY_BUCKET_HASH: Hash = bucketHash([]);

/** `levels[d]`: the hash of an empty subtree with `d` levels above its buckets. */
const EMPTY_SUBTREE: Hash[] = (() => {
  const out = [EMPTY_BUCKET_HASH];
  for (let d = 1; d <= STATE_TREE_DEPTH; d++) out.push(innerHash(out[d - 1]!, out[d - 1]!));
  return out;
})();

/**
 * The root of an empty state.
 *
 * @example
 * ```ts
 * import { EMPTY_STATE_ROOT, StateTree } from "./tree.ts";
 * import { bytesEqual } from "../types.ts";
 * bytesEqual(new StateTree().freeze().root, EMPTY_STATE_ROOT); // true
 * ```
 */
export const EMPTY_STATE_ROOT: Hash = EMPTY_SUBTREE[STATE_TREE_DEPTH]!;

/**
 * A frozen version of the tree (see {@link StateTree.freeze}): reads and proofs of the state at
 * one height while the live tree moves on. Shares entries with the tree (they are immutable).
 *
 * @example
 * ```ts
 * import { StateTree } from "./tree.ts";
 * const tree = new StateTree();
 * const k = new TextEncoder().encode("k/a");
 * tree.apply([[k, new Uint8Array([1])]]);
 * const version = tree.freeze(); // the state now
 * tree.apply([[k, null]]);
 * console.log(version.get(k), version.size); // [1], 1: the version did not move
 * ```
 */
export class StateVersion {
  readonly #buckets: readonly (Bucket | undefined)[];
  readonly #hashes: Uint8Array;
  readonly #keys: number;

  /** Use {@link StateTree.freeze}. */
  constructor(buckets: readonly (Bucket | undefined)[], hashes: Uint8Array, keys: number) {
    this.#buckets = buckets;
    this.#hashes = hashes;
    this.#keys = keys;
  }

  /** The root hash. */
  get root(): Hash {
    return this.#hashes.slice(32, 64);
  }

  /** Number of keys. */
  get size(): number {
    return this.#keys;
  }

  /** The value of `key`, or null. */
  get(key: Uint8Array): Uint8Array | null {
    const b = this.#buckets[bucketOf(key)] ?? EMPTY_BUCKET;
    const i = findEntry(b, key);
    return i >= 0 ? b[i]!.value : null;
  }

  /** A proof for `key` (present or absent) against {@link StateVersion.root}. */
  prove(key: Uint8Array): StateProof {
    const bucket = bucketOf(key);
    const entries = (this.#buckets[bucket] ?? EMPTY_BUCKET).map((e) =>
      [e.key, e.valueHash ?? sha256Bytes(e.value)] as const
    );
    const siblings: Hash[] = [];
    for (let i = STATE_BUCKETS + bucket; i > 1; i >>= 1) {
      const s = i ^ 1;
      siblings.push(this.#hashes.slice(32 * s, 32 * s + 32));
    }
    return { bucket, entries, siblings };
  }

  /** The subtree roots of the {@link SNAPSHOT_CHUNKS} chunks (heap nodes 256..511). */
  chunkHashes(): Hash[] {
    const out: Hash[] = [];
    for (let c = 0; c < SNAPSHOT_CHUNKS; c++) {
      const i = SNAPSHOT_CHUNKS + c;
      out.push(this.#hashes.slice(32 * i, 32 * i + 32));
    }
    return out;
  }

  /** The entries of chunk `index`, by bucket then key. */
  chunk(index: number): StateEntry[] {
    const out: StateEntry[] = [];
    const first = index * BUCKETS_PER_CHUNK;
    for (let b = first; b < first + BUCKETS_PER_CHUNK; b++) {
      for (const e of this.#buckets[b] ?? EMPTY_BUCKET) out.push({ key: e.key, value: e.value });
    }
    return out;
  }
}

/**
 * The live tree of committed state.
 *
 * @example
 * ```ts
 * import { StateTree, verifyStateProof } from "./tree.ts";
 * const tree = new StateTree();
 * const k = new TextEncoder().encode("k/a");
 * tree.apply([[k, new Uint8Array([1])]]);
 * const v = tree.freeze();
 * verifyStateProof(v.root, k, new Uint8Array([1]), v.prove(k)); // { ok: true, value: [1] }
 * ```
 */
export class StateTree {
  readonly #buckets: (Bucket | undefined)[] = new Array(STATE_BUCKETS);
  /** Heap of hashes: node `i` at bytes `32 i`; node 1 is the root, buckets at 4096 + b. */
  #hashes = new Uint8Array(32 * 2 * STATE_BUCKETS);
  #dirty = new Set<number>();
  /** Inner nodes to rehash whose children are up to date (above adopted chunks). */
  #innerDirty = new Set<number>();
  #keys = 0;

  constructor() {
    // Fill every level with the empty subtree hash of its depth.
    for (let d = 0; d <= STATE_TREE_DEPTH; d++) {
      const first = STATE_BUCKETS >> d;
      const h = EMPTY_SUBTREE[d]!;
      for (let i = first; i < 2 * first; i++) this.#hashes.set(h, 32 * i);
    }
  }

  /** Number of keys. */
  get size(): number {
    return this.#keys;
  }

  /** Applies committed updates (a null value deletes). */
  apply(updates: readonly (readonly [Uint8Array, Uint8Array | null])[]): void {
    for (const [key, value] of updates) this.#set(key, value);
  }

  /** Inserts entries known to be absent and sorted within each bucket (a verified chunk). */
  insertChunk(entries: readonly StateEntry[]): void {
    for (const e of entries) this.#set(e.key, e.value);
  }

  /**
   * Takes a chunk {@link verifyChunk} accepted into a tree whose buckets of that chunk are empty
   * (a snapshot install): its buckets and their hashes as they are, so nothing of it is hashed
   * again; only the inner nodes above it are, at the next {@link StateTree.root}.
   */
  adoptChunk(chunk: CheckedChunk): void {
    const first = chunk.index * BUCKETS_PER_CHUNK;
    for (let i = 0; i < BUCKETS_PER_CHUNK; i++) {
      const b = first + i;
      assert(this.#buckets[b] === undefined && !this.#dirty.has(b), "adoptChunk: bucket in use");
      const entries = chunk.entries.slice(chunk.bucketStarts[i]!, chunk.bucketStarts[i + 1]!);
      if (entries.length > 0) this.#buckets[b] = entries;
      this.#hashes.set(chunk.bucketHashes[i]!, 32 * (STATE_BUCKETS + b));
      this.#innerDirty.add((STATE_BUCKETS + b) >> 1);
    }
    this.#keys += chunk.entries.length;
  }

  #set(key: Uint8Array, value: Uint8Array | null): void {
    const b = bucketOf(key);
    const next = withEntry(this.#buckets[b] ?? EMPTY_BUCKET, key, value);
    if (next === null) return;
    this.#keys += next.keys;
    this.#buckets[b] = next.bucket.length === 0 ? undefined : next.bucket;
    this.#dirty.add(b);
  }

  /**
   * The state after `base` (null: this tree) and then further updates, as a copy-on-write
   * overlay: see {@link StateOverlay}. `applied` is the height of the last Node whose updates this
   * tree holds: what `base` changed at or below it is read from the tree again. This tree's hashes
   * are brought up to date first.
   */
  overlay(base: StateOverlay | null, applied = 0): StateOverlay {
    this.root();
    return new StateOverlay(
      (b) => this.#buckets[b] ?? EMPTY_BUCKET,
      (i) => this.#hashes.subarray(32 * i, 32 * i + 32),
      base,
      applied,
    );
  }

  /**
   * Takes the hashes of `overlay` instead of rehashing: call it only when this tree's state now
   * equals the overlay's (the overlay of a Node whose updates, and its ancestors', the tree has
   * just applied). What else changed is rehashed as usual.
   */
  absorb(overlay: StateOverlay): void {
    const { buckets, hashes } = overlay.changes();
    for (const [b, bucket] of buckets) {
      if (!this.#dirty.delete(b)) continue;
      this.#buckets[b] = bucket.length === 0 ? undefined : bucket as Bucket;
    }
    for (const [i, h] of hashes) this.#hashes.set(h, 32 * i);
  }

  /** The root hash (rehashes what changed since the last call). */
  root(): Hash {
    rehash(this.#buckets, this.#hashes, this.#dirty, this.#innerDirty);
    return this.#hashes.slice(32, 64);
  }

  /** A frozen version of the current state (copies the hash heap, shares the entries). */
  freeze(): StateVersion {
    rehash(this.#buckets, this.#hashes, this.#dirty, this.#innerDirty);
    return new StateVersion(this.#buckets.slice(), this.#hashes.slice(), this.#keys);
  }
}

/**
 * The tree's state with further updates applied, without touching the tree: the changed buckets
 * (copied on write) and the hashes on their paths to the root; everything else is read from the
 * tree. Built by {@link StateTree.overlay}, for the state roots of uncommitted Nodes
 * (SPECIFICATION.md 7). It stays correct while the tree applies only updates the overlay holds
 * (the commits of the Nodes it was built from): those change only buckets the overlay has copied.
 *
 * @example
 * ```ts
 * import { StateTree } from "./tree.ts";
 * const tree = new StateTree();
 * const k = new TextEncoder().encode("k/a");
 * const overlay = tree.overlay(null);
 * overlay.apply([[k, new Uint8Array([1])]]);
 * const root = overlay.seal(); // the root with k set; the tree itself is unchanged
 * tree.apply([[k, new Uint8Array([1])]]);
 * console.log(root.join() === tree.root().join()); // true
 * ```
 */
export class StateOverlay {
  readonly #bucketOf: (b: number) => Bucket;
  readonly #hashOf: (i: number) => Hash;
  readonly #buckets = new Map<number, Bucket>();
  /** The height of the newest Node whose updates changed each bucket here. */
  readonly #changedAt = new Map<number, number>();
  readonly #hashes = new Map<number, Hash>();
  readonly #dirty = new Set<number>();
  #root: Hash | null = null;

  /** Use {@link StateTree.overlay}. */
  constructor(
    bucketOf: (b: number) => Bucket,
    hashOf: (i: number) => Hash,
    base: StateOverlay | null,
    applied: number,
  ) {
    this.#bucketOf = bucketOf;
    this.#hashOf = hashOf;
    if (base !== null) this.#inherit(base, applied);
  }

  /**
   * Takes from `base` the buckets that Nodes above `applied` changed, and the hashes on their
   * paths: a bucket changed only at or below it now equals the tree's, and so does every hash
   * above only such buckets; a hash on a kept path covers kept buckets and ones equal to the tree's,
   * so it stays right. The copy stays as small as the Nodes not yet in the tree.
   */
  #inherit(base: StateOverlay, applied: number): void {
    for (const [b, height] of base.#changedAt) {
      if (height <= applied) continue;
      this.#buckets.set(b, base.#buckets.get(b)!);
      this.#changedAt.set(b, height);
      for (let i = STATE_BUCKETS + b; i >= 1 && !this.#hashes.has(i); i >>= 1) {
        const h = base.#hashes.get(i);
        if (h !== undefined) this.#hashes.set(i, h);
      }
    }
  }

  /**
   * Applies the updates of the Node at `height` (a null value deletes). Not after
   * {@link StateOverlay.seal}.
   */
  apply(updates: readonly (readonly [Uint8Array, Uint8Array | null])[], height = 0): void {
    if (this.#root !== null) throw new Error("StateOverlay: sealed");
    for (const [key, value] of updates) {
      const b = bucketOf(key);
      const next = withEntry(this.#bucket(b), key, value);
      if (next === null) continue;
      this.#buckets.set(b, next.bucket);
      this.#changedAt.set(b, Math.max(height, this.#changedAt.get(b) ?? 0));
      this.#dirty.add(b);
    }
  }

  /** Hashes the changed buckets and their paths; returns the root. Further calls return it. */
  seal(): Hash {
    if (this.#root !== null) return this.#root;
    let level = new Set<number>();
    for (const b of this.#dirty) {
      this.#hashes.set(STATE_BUCKETS + b, hashBucket(this.#bucket(b)));
      level.add((STATE_BUCKETS + b) >> 1);
    }
    while (level.size > 0) {
      const up = new Set<number>();
      for (const i of level) {
        this.#hashes.set(i, innerHash(this.#hash(2 * i), this.#hash(2 * i + 1)));
        if (i > 1) up.add(i >> 1);
      }
      level = up;
    }
    this.#root = this.#hash(1).slice();
    return this.#root;
  }

  /** The changed buckets and the hashes on their paths, by heap index (after sealing). */
  changes(): {
    buckets: ReadonlyMap<number, readonly StateEntry[]>;
    hashes: ReadonlyMap<number, Hash>;
  } {
    if (this.#root === null) throw new Error("StateOverlay: not sealed");
    return { buckets: this.#buckets, hashes: this.#hashes };
  }

  /** The root; null before {@link StateOverlay.seal}. */
  get root(): Hash | null {
    return this.#root;
  }

  #bucket(b: number): Bucket {
    return this.#buckets.get(b) ?? this.#bucketOf(b);
  }

  #hash(i: number): Hash {
    return this.#hashes.get(i) ?? this.#hashOf(i);
  }
}

/**
 * `bucket` with `key` set to `value` (null deletes), as a new array, and the change in its number
 * of keys; null when nothing changes (deleting an absent key).
 */
function withEntry(
  bucket: Bucket,
  key: Uint8Array,
  value: Uint8Array | null,
): { bucket: Entry[]; keys: number } | null {
  const i = findEntry(bucket, key);
  if (value === null) {
    if (i < 0) return null;
    const next = bucket.slice();
    next.splice(i, 1);
    return { bucket: next, keys: -1 };
  }
  const e: Entry = { key, value, valueHash: null };
  const next = bucket.slice();
  if (i >= 0) {
    next[i] = e;
    return { bucket: next, keys: 0 };
  }
  next.splice(-i - 1, 0, e);
  return { bucket: next, keys: 1 };
}

/**
 * Rehashes the `dirty` buckets and the `inner` nodes right above buckets whose hashes are already
 * set (adopted chunks), and every inner node above them; empties both sets.
 */
function rehash(
  buckets: readonly (Bucket | undefined)[],
  hashes: Uint8Array,
  dirty: Set<number>,
  inner: Set<number>,
): void {
  let level = new Set<number>(inner);
  inner.clear();
  for (const b of dirty) {
    hashes.set(hashBucket(buckets[b] ?? EMPTY_BUCKET), 32 * (STATE_BUCKETS + b));
    level.add((STATE_BUCKETS + b) >> 1);
  }
  dirty.clear();
  while (level.size > 0) {
    const up = new Set<number>();
    for (const i of level) {
      const left = hashes.subarray(64 * i, 64 * i + 32);
      const right = hashes.subarray(64 * i + 32, 64 * i + 64);
      hashes.set(innerHash(left, right), 32 * i);
      if (i > 1) up.add(i >> 1);
    }
    level = up;
  }
}

/** Binary search: the index of `key`, or `-(insertion point) - 1`. */
function findEntry(bucket: Bucket, key: Uint8Array): number {
  let lo = 0;
  let hi = bucket.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = bytesCompare(bucket[mid]!.key, key);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

/**
 * Checks a {@link StateProof} that `key` has `value` (null: absent) in the state of `root`.
 * Never throws on a malformed proof.
 *
 * @example
 * ```ts
 * import { EMPTY_STATE_ROOT, StateTree, verifyStateProof } from "./tree.ts";
 * const k = new Uint8Array([1]);
 * verifyStateProof(EMPTY_STATE_ROOT, k, null, new StateTree().freeze().prove(k)).ok; // true
 * ```
 */
export function verifyStateProof(
  root: Hash,
  key: Uint8Array,
  value: Uint8Array | null,
  proof: StateProof,
): StateProofVerdict {
  if (proof.bucket !== bucketOf(key)) return { ok: false, reason: "wrong bucket for the key" };
  if (proof.siblings.length !== STATE_TREE_DEPTH) return { ok: false, reason: "bad sibling count" };
  if (proof.entries.length > STATE_PROOF_ENTRIES_MAX) {
    return { ok: false, reason: "too many entries" };
  }
  let found: Hash | null = null;
  for (let i = 0; i < proof.entries.length; i++) {
    const [k, vh] = proof.entries[i]!;
    if (k.length > STATE_KEY_BYTES_MAX || vh.length !== 32) {
      return { ok: false, reason: "malformed entry" };
    }
    if (i > 0 && bytesCompare(proof.entries[i - 1]![0], k) >= 0) {
      return { ok: false, reason: "entries not strictly sorted" };
    }
    if (bytesEqual(k, key)) found = vh;
  }
  let h = bucketHash(proof.entries);
  let index = STATE_BUCKETS + proof.bucket;
  for (const s of proof.siblings) {
    if (s.length !== 32) return { ok: false, reason: "malformed sibling" };
    h = (index & 1) === 0 ? innerHash(h, s) : innerHash(s, h);
    index >>= 1;
  }
  if (!bytesEqual(h, root)) return { ok: false, reason: "root mismatch" };
  if (found === null) {
    return value === null
      ? { ok: true, value: null }
      : { ok: false, reason: "the key is absent, a value was claimed" };
  }
  if (value === null) return { ok: false, reason: "the key is present, absence was claimed" };
  if (!bytesEqual(sha256Bytes(value), found)) return { ok: false, reason: "value mismatch" };
  return { ok: true, value };
}

/** Folds the {@link SNAPSHOT_CHUNKS} chunk hashes of a manifest to the root they make. */
export function rootOfChunkHashes(chunkHashes: readonly Hash[]): Hash | null {
  if (chunkHashes.length !== SNAPSHOT_CHUNKS) return null;
  let level = chunkHashes.slice();
  while (level.length > 1) {
    const up: Hash[] = [];
    for (let i = 0; i < level.length; i += 2) up.push(innerHash(level[i]!, level[i + 1]!));
    level = up;
  }
  return level[0]!;
}

/**
 * A snapshot chunk that {@link verifyChunk} accepted: its entries with their value hashes, and
 * its buckets' hashes, ready for {@link StateTree.adoptChunk} (nothing is hashed twice).
 *
 * @example
 * ```ts
 * import { StateTree, verifyChunk } from "./tree.ts";
 * const tree = new StateTree();
 * tree.apply([[new TextEncoder().encode("k/a"), new Uint8Array([1])]]);
 * const v = tree.freeze();
 * const r = verifyChunk(0, v.chunk(0), v.chunkHashes()[0]!);
 * if (r.ok) console.log(r.chunk.entries.length, r.chunk.bucketHashes.length); // n, 16
 * ```
 */
export interface CheckedChunk {
  /** The chunk's index. */
  readonly index: number;
  /** Its entries, by bucket then key. */
  readonly entries: readonly CheckedEntry[];
  /** Where bucket `i` of the chunk starts in `entries` (17 offsets, the last is the count). */
  readonly bucketStarts: readonly number[];
  /** The hashes of its {@link BUCKETS_PER_CHUNK} buckets. */
  readonly bucketHashes: readonly Hash[];
}

/**
 * A state entry with the hash of its value.
 *
 * @example
 * ```ts
 * import type { CheckedEntry } from "./tree.ts";
 * declare const e: CheckedEntry;
 * console.log(e.key, e.value, e.valueHash.length); // 32
 * ```
 */
export interface CheckedEntry extends StateEntry {
  /** `H(value)`. */
  readonly valueHash: Hash;
}

/**
 * Checks that `entries` are exactly chunk `index` of a state whose chunk hash is `expected`:
 * every key in the chunk's buckets, ascending by bucket then strictly by key, and the subtree
 * they make hashes to `expected`. Each value is hashed once; the result keeps the hashes.
 *
 * @example
 * ```ts
 * import { StateTree, verifyChunk } from "./tree.ts";
 * const tree = new StateTree();
 * tree.apply([[new TextEncoder().encode("k/a"), new Uint8Array([1])]]);
 * const v = tree.freeze();
 * verifyChunk(0, v.chunk(0), v.chunkHashes()[0]!).ok; // true: chunk 0 is intact
 * ```
 */
export function verifyChunk(
  index: number,
  entries: readonly StateEntry[],
  expected: Hash,
): { readonly ok: true; readonly chunk: CheckedChunk } | {
  readonly ok: false;
  readonly reason: string;
} {
  const fail = (reason: string) => ({ ok: false, reason }) as const;
  if (!Number.isInteger(index) || index < 0 || index >= SNAPSHOT_CHUNKS) {
    return fail("bad chunk index");
  }
  const first = index * BUCKETS_PER_CHUNK;
  const checked: Entry[] = [];
  const bucketStarts: number[] = [0];
  let prevBucket = first;
  let prevKey: Uint8Array | null = null;
  for (const e of entries) {
    if (e.key.length === 0 || e.key.length > STATE_KEY_BYTES_MAX) return fail("bad key length");
    const b = bucketOf(e.key);
    if (b < first || b >= first + BUCKETS_PER_CHUNK) return fail("a key outside the chunk");
    if (b < prevBucket) return fail("entries not in bucket order");
    if (b === prevBucket && prevKey !== null && bytesCompare(prevKey, e.key) >= 0) {
      return fail("entries not strictly sorted");
    }
    // Buckets between the previous entry's and this one's are empty.
    for (; prevBucket < b; prevBucket++) bucketStarts.push(checked.length);
    prevKey = e.key;
    checked.push({ key: e.key, value: e.value, valueHash: null });
  }
  while (bucketStarts.length <= BUCKETS_PER_CHUNK) bucketStarts.push(checked.length);
  // Each value is hashed here, once, and its hash kept for the tree.
  const bucketHashes: Hash[] = [];
  for (let i = 0; i < BUCKETS_PER_CHUNK; i++) {
    const start = bucketStarts[i]!;
    const end = bucketStarts[i + 1]!;
    bucketHashes.push(
      start === end ? EMPTY_BUCKET_HASH : entriesHash(checked, start, end, sha256Bytes),
    );
  }
  let level = bucketHashes;
  while (level.length > 1) {
    const up: Hash[] = [];
    for (let i = 0; i < level.length; i += 2) up.push(innerHash(level[i]!, level[i + 1]!));
    level = up;
  }
  if (!bytesEqual(level[0]!, expected)) return fail("chunk hash mismatch");
  // Every entry's valueHash is set now.
  const entriesOut = checked as CheckedEntry[];
  return { ok: true, chunk: { index, entries: entriesOut, bucketStarts, bucketHashes } };
}

/**
 * Checks that `entries` are exactly chunk `index` of a state whose chunk hash is `expected`
 * ({@link verifyChunk}, keeping only the verdict). Returns null when they do, or the reason they
 * do not.
 *
 * @example
 * ```ts
 * import { checkChunk, StateTree } from "./tree.ts";
 * const tree = new StateTree();
 * tree.apply([[new TextEncoder().encode("k/a"), new Uint8Array([1])]]);
 * const v = tree.freeze();
 * checkChunk(0, v.chunk(0), v.chunkHashes()[0]!); // null: chunk 0 is intact
 * ```
 */
export function checkChunk(
  index: number,
  entries: readonly StateEntry[],
  expected: Hash,
): string | null {
  const r = verifyChunk(index, entries, expected);
  return r.ok ? null : r.reason;
}
