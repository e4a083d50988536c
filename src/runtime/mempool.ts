/**
 * Client commands: batches of commands disseminated by digest, the pool each replica keeps of
 * them, and the batching {@link Application} that turns a per-command state machine into Node
 * commands. See SPECIFICATION.md section 13.
 *
 * ## How a command travels
 *
 * 1. A client submits a command to any replica (`POST /commands`, see `replica.ts`). The replica
 *    gives it an expiry height `expires` (the client may choose it); its id is the SHA-256 of
 *    `expires` (8 bytes, big-endian) followed by the command ({@link commandId}).
 * 2. The replica packs the commands its clients give it into **batches**: the canonical CBOR
 *    array of `[expires, command]` entries, at most `batchBytesMax` bytes and `batchCommandsMax`
 *    entries, named by their **digest** (SHA-256 of the bytes). It stores each batch durably
 *    ({@link BatchStore}) and sends it once to every peer over the Consensus TCP connections
 *    (`onBatch`); every peer decodes it once, computes each command's id once, and stores it.
 * 3. A leader's Node command is the canonical CBOR array of the digests of up to `nodeBatchesMax`
 *    batches it holds and that no uncommitted ancestor names.
 * 4. A replica validates a Node only once it holds every batch the Node names, durably (fetching
 *    a missing one from its peers, `fetchBatch`, within `batchFetchTimeoutMs`): so a committed
 *    Node's batches are on disk at every replica that voted for it. It then **executes** the
 *    Node: the entries of its batches, in order, each **delivered** to the {@link CommandMachine}
 *    if it is live at the Node's height `h` (`h <= expires < h + commandHorizon`) and its id was
 *    not consumed before: not earlier in this Node, not in an uncommitted ancestor, not in a
 *    committed Node of the last `commandHorizon` heights. Other entries are skipped. A delivered
 *    command the machine refuses is consumed without effect (its clients get `command-rejected`).
 *    The Node is invalid only if it is malformed, names a batch that cannot be had, or its
 *    updates exceed the limits.
 * 5. On commit, every pool answers the clients waiting for the consumed ids; commands whose
 *    `expires` is at or below the committed height can never commit any more, so their clients
 *    get the definite answer `expired`, and batches that can deliver nothing more leave.
 *
 * ## Why at most once needs no reads
 *
 * A command can only be delivered by a Node of height `h` with `expires - commandHorizon < h <=
 * expires`. Two copies of one id have the same `expires`, so they would be less than
 * `commandHorizon` heights apart: the ids consumed by the Node's ancestors of the last
 * `commandHorizon` heights decide "delivered before?", and they depend only on the chain (the
 * batches' bytes), not on state. Every replica keeps those ids in memory, rebuilds them from its
 * store on restart ({@link Mempool.restore}), and never reads application state to dedupe. A
 * client that resubmits the same command with the same `expires` (after a lost answer, to any
 * replica) gets it committed at most once, forever; after an `expired` answer it may safely
 * submit it again with a new expiry.
 *
 * ## Limits are part of the protocol
 *
 * {@link BatchLimits} (the horizon included) decide whether a Node is valid and what it delivers,
 * so every replica must use the same ones (like the validator set). The replica runtime gives
 * the Engine Application limits at least as large as the batch limits.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Application, StateUpdate, StateView, ValidateResult } from "../app.ts";
import { DEFAULT_APP_LIMITS } from "../app.ts";
import { cborArrayLength, decodeValue, encodeValue } from "../codec.ts";
import { sha256Bytes } from "../crypto.ts";
import { assert, ConfigError, HotStuffError } from "../errors.ts";
import type { Hash, Node } from "../types.ts";
import { bytesEqual, fromHex, toHex } from "../types.ts";
import type { ValidatorUpdate } from "../consensus/reconfig.ts";
import { readValidatorConfig } from "../consensus/reconfig.ts";

/**
 * Input of {@link CommandMachine.apply}.
 *
 * @example
 * ```ts
 * import type { ApplyRequest, ApplyResult } from "./mempool.ts";
 * function apply({ command, height }: ApplyRequest): ApplyResult {
 *   return { ok: true, updates: [[new TextEncoder().encode(`log/${height}`), command]] };
 * }
 * ```
 */
export interface ApplyRequest {
  /** The command bytes. */
  readonly command: Uint8Array;
  /** State as of the previous command of the Node (ancestors and earlier commands included). */
  readonly state: StateView;
  /** Height of the Node the command is in. */
  readonly height: number;
}

/**
 * Output of {@link CommandMachine.apply}: the command's state updates, or a rejection. A command
 * may change the validator set (`validatorUpdates`, SPECIFICATION.md 3.4): the first such command
 * of a Node does, when no change is being handed over; any other is refused (consumed without
 * effect, `validator change in progress`).
 *
 * @example
 * ```ts
 * import type { ApplyResult } from "./mempool.ts";
 * const refused: ApplyResult = { ok: false, reason: "balance too low" }; // the command is skipped
 * ```
 */
export type ApplyResult =
  | {
    readonly ok: true;
    readonly updates: readonly StateUpdate[];
    readonly validatorUpdates?: readonly ValidatorUpdate[];
  }
  | { readonly ok: false; readonly reason: string };

/**
 * A replicated state machine that executes one command at a time. The same determinism rules as
 * {@link Application.validateNode} apply to both hooks.
 *
 * @example
 * ```ts
 * import type { CommandMachine } from "./mempool.ts";
 * const log: CommandMachine = {
 *   check: (command) => command.length <= 100 ? null : "too long",
 *   apply: ({ command, height }) => ({
 *     ok: true,
 *     updates: [[new TextEncoder().encode(`log/${height}`), command]],
 *   }),
 * };
 * ```
 */
export interface CommandMachine {
  /**
   * A quick check of a command on its own (no state), at submission: returns null if it may be
   * valid, or why it never is, so malformed commands never enter a batch. Optional; `apply`
   * must still refuse every invalid command itself (a peer's batch is not checked with it).
   */
  check?(command: Uint8Array): string | null;
  /**
   * Validates and executes one command against the state; must be deterministic. A refusal
   * consumes the command without effect.
   */
  apply(request: ApplyRequest): Promise<ApplyResult> | ApplyResult;
}

/**
 * Limits on batches and on one Node. Part of the protocol: every replica must use the same.
 *
 * @example
 * ```ts
 * import { type BatchLimits, DEFAULT_BATCH_LIMITS } from "./mempool.ts";
 * const limits: BatchLimits = { ...DEFAULT_BATCH_LIMITS, batchCommandsMax: 500 }; // same on every replica
 * ```
 */
export interface BatchLimits {
  /** Largest command, bytes. Default 63,000 (it must fit a batch). */
  readonly commandBytesMax: number;
  /** Largest encoded batch, bytes. Default 64,000 (one Deno KV value). */
  readonly batchBytesMax: number;
  /** Most commands in one batch. Default 4096. */
  readonly batchCommandsMax: number;
  /** Most batches one Node names. Default 64. */
  readonly nodeBatchesMax: number;
  /**
   * Most state updates of one Node. Default 4096. At most 65,536. The replica runtime raises
   * the Engine's `appLimits` to match; storage splits a large commit over several Deno KV atomic
   * operations (SPECIFICATION.md 6.3).
   */
  readonly batchUpdatesMax: number;
  /**
   * Largest sum over one Node's updates of `2 * key.length + 16` (a bound on their Deno KV
   * encoded key size). Default 512 KiB.
   */
  readonly batchUpdateKeyBytesMax: number;
  /** Largest sum of keys and values of one Node's updates, bytes. Default 2 MiB. */
  readonly batchUpdateBytesMax: number;
  /** Largest state key a command may write, bytes. Default 512. */
  readonly updateKeyBytesMax: number;
  /** Largest state value a command may write, bytes. Default 60 KiB. */
  readonly updateValueBytesMax: number;
  /**
   * How many heights a command stays live: a Node of height `h` delivers a command only if
   * `h <= expires < h + commandHorizon`. Replicas keep the ids consumed in the last
   * `commandHorizon` heights in memory. Default 1024.
   */
  readonly commandHorizon: number;
}

/**
 * The default {@link BatchLimits}. An Engine used without the replica runtime needs `appLimits`
 * at least as large as the batch limits (`updatesMax`, `updateKeysBytesMax`, `updatesBytesMax`);
 * the replica runtime passes them.
 *
 * @example
 * ```ts
 * import { DEFAULT_BATCH_LIMITS } from "./mempool.ts";
 * DEFAULT_BATCH_LIMITS.batchBytesMax; // 64000
 * ```
 */
export const DEFAULT_BATCH_LIMITS: BatchLimits = {
  commandBytesMax: 63_000,
  batchBytesMax: 64_000,
  batchCommandsMax: 4096,
  nodeBatchesMax: 64,
  batchUpdatesMax: 4096,
  batchUpdateKeyBytesMax: 512 * 1024,
  batchUpdateBytesMax: 2 * 1024 * 1024,
  updateKeyBytesMax: 512,
  updateValueBytesMax: DEFAULT_APP_LIMITS.updateValueBytesMax,
  commandHorizon: 1024,
};

/**
 * Where a replica keeps batches durably: every batch it holds is put before any Node naming it is
 * voted for. Implementations: {@link MemoryBatchStore}, and `DenoKvBatchStore`
 * (storage/batches.ts), the default of the replica CLI.
 *
 * @example
 * ```ts
 * import { type BatchStore, MemoryBatchStore } from "./mempool.ts";
 * const store: BatchStore = new MemoryBatchStore(); // the replica CLI uses DenoKvBatchStore
 * await store.put(new Uint8Array(32), new Uint8Array([1]));
 * console.log(await store.get(new Uint8Array(32))); // Uint8Array [1]
 * ```
 */
export interface BatchStore {
  /** Stores a batch under its digest; durable when the promise resolves. */
  put(digest: Uint8Array, bytes: Uint8Array): Promise<void>;
  /** The batch with this digest, or null. */
  get(digest: Uint8Array): Promise<Uint8Array | null>;
  /** Deletes a batch that no Node can deliver from any more (not durable at once). */
  delete(digest: Uint8Array): Promise<void>;
}

/**
 * A {@link BatchStore} in memory: for tests and the simulator (a process's batches die with it).
 *
 * @example
 * ```ts
 * import { MemoryBatchStore } from "./mempool.ts";
 * const store = new MemoryBatchStore();
 * await store.put(new Uint8Array(32), new Uint8Array([0x80]));
 * (await store.get(new Uint8Array(32)))?.length; // 1
 * ```
 */
export class MemoryBatchStore implements BatchStore {
  /** Digest hex -> bytes. */
  readonly batches: Map<string, Uint8Array> = new Map();

  /** See {@link BatchStore.put}. */
  put(digest: Uint8Array, bytes: Uint8Array): Promise<void> {
    this.batches.set(toHex(digest), bytes);
    return Promise.resolve();
  }

  /** See {@link BatchStore.get}. */
  get(digest: Uint8Array): Promise<Uint8Array | null> {
    return Promise.resolve(this.batches.get(toHex(digest)) ?? null);
  }

  /** See {@link BatchStore.delete}. */
  delete(digest: Uint8Array): Promise<void> {
    this.batches.delete(toHex(digest));
    return Promise.resolve();
  }
}

/**
 * Options of {@link Mempool}: batch limits, the pool's own limits, and its I/O.
 *
 * @example
 * ```ts
 * import { Mempool, type MempoolOptions } from "./mempool.ts";
 * const options: MempoolOptions = { poolCommandsMax: 10_000, batchDelayMs: 2 };
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) }, options);
 * pool.close();
 * ```
 */
export interface MempoolOptions extends Partial<BatchLimits> {
  /** Most commands in the batches held in memory (own and peers'). Default 400,000. */
  readonly poolCommandsMax?: number;
  /** Most bytes of the batches held in memory. Default 256 MiB. */
  readonly poolBytesMax?: number;
  /** Most clients waiting for commits at once. Default 100,000. */
  readonly waitersMax?: number;
  /**
   * Uncommitted Nodes whose consumed ids are remembered. Default 8192 (the core's
   * `treeNodesMax`): every Node of the NodeTree must be remembered, or Nodes built on one that
   * was forgotten are refused (`ancestors-unknown`) until it commits.
   */
  readonly proposedNodesMax?: number;
  /**
   * When a leader has nothing to propose and nothing waits to commit, it waits up to this long
   * for a batch before proposing an empty Node (a batch ends the wait at once), so an idle
   * cluster does not spin. Default 20 ms; 0 disables it.
   */
  readonly idleProposeDelayMs?: number;
  /**
   * How long a replica's own clients' commands wait to fill a batch, ms (a full batch is sent at
   * once; so is every waiting command when this replica proposes). Default 1.
   */
  readonly batchDelayMs?: number;
  /** How long validating a Node waits for the batches it must fetch, ms. Default 2,000. */
  readonly batchFetchTimeoutMs?: number;
  /** Durable batches. Default a {@link MemoryBatchStore}. */
  readonly batchStore?: BatchStore;
  /** Sends a batch this replica made to every peer (the replica: a BATCH frame each). */
  readonly onBatch?: (bytes: Uint8Array, digest: Uint8Array) => void;
  /**
   * Fetches a batch by digest from the peers, or null when none has it; `from` is the key of the
   * validator that proposed the Node naming it (it should hold it: ask it first). The pool checks
   * the digest of what it gets.
   */
  readonly fetchBatch?: (
    digest: Uint8Array,
    signal: AbortSignal,
    from: Uint8Array | null,
  ) => Promise<Uint8Array | null>;
  /** Told about every committed Node's commands (for metrics and logs). */
  readonly onCommitted?: (notice: { height: number; commands: number }) => void;
  /** Told about a command or batch that left uncommitted: refused, expired, dropped. */
  readonly onDropped?: (id: string, reason: string) => void;
}

/**
 * Where a command was committed.
 *
 * @example
 * ```ts
 * import type { CommittedCommand } from "./mempool.ts";
 * function where(c: CommittedCommand): string {
 *   return `${c.id.slice(0, 8)} committed at height ${c.height} in Node ${c.node.slice(0, 8)}`;
 * }
 * ```
 */
export interface CommittedCommand {
  /** The command id, hex. */
  readonly id: string;
  /** Height of the Node that committed it. */
  readonly height: number;
  /** Hash of that Node, hex. */
  readonly node: string;
}

/**
 * A command with its expiry height: one entry of a batch.
 *
 * @example
 * ```ts
 * import type { PoolCommand } from "./mempool.ts";
 * const c: PoolCommand = { command: new Uint8Array([1, 2]), expires: 1_024 };
 * ```
 */
export interface PoolCommand {
  /** The command bytes. */
  readonly command: Uint8Array;
  /** The last height at which it may be committed. */
  readonly expires: number;
}

/**
 * What {@link Mempool.submit} did.
 *
 * @example
 * ```ts
 * import { Mempool, type SubmitResult } from "./mempool.ts";
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) });
 * const r: SubmitResult = pool.submit([new Uint8Array([1])]);
 * console.log(r.ids.length, r.added); // 1 1
 * pool.close();
 * ```
 */
export interface SubmitResult {
  /** The id of every submitted command, hex, in order. */
  readonly ids: string[];
  /** The expiry height the commands were given. */
  readonly expires: number;
  /** How many were new here (not already waiting for a batch, nor committed). */
  readonly added: number;
  /** Where the ones already committed (within the horizon) were, by index. */
  readonly committed: Map<number, CommittedCommand>;
}

/**
 * What a new pool needs from the replica's store (see {@link Mempool.restore}).
 *
 * @example
 * ```ts
 * import { Mempool, type MempoolRestore } from "./mempool.ts";
 * const empty: MempoolRestore = { committedHeight: 0, committed: [], uncommitted: [] };
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) });
 * await pool.restore(empty);
 * pool.close();
 * ```
 */
export interface MempoolRestore {
  /** The committed height. */
  readonly committedHeight: number;
  /** Committed Nodes of (at least) the last `commandHorizon` heights. */
  readonly committed: readonly { readonly node: Node; readonly hash: Hash }[];
  /** Uncommitted stored Nodes. */
  readonly uncommitted: readonly { readonly node: Node; readonly hash: Hash }[];
}

/**
 * A pool refusal (client-facing): `reason` is machine-readable: `bad-command`,
 * `command-too-large`, `bad-expiry`, `expired`, `pool-full`, `too-many-waiters`,
 * `command-rejected`, `wait-timeout`, `bad-batch`, `closed`.
 *
 * @example
 * ```ts
 * import { MempoolError } from "./mempool.ts";
 * const e = new MempoolError("pool-full", "the pool holds 400000 commands");
 * console.log(e.reason);
 * ```
 */
export class MempoolError extends HotStuffError {
  /**
   * A refusal with this reason and message.
   *
   * @param reason machine-readable reason
   * @param message what was wrong
   */
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "MempoolError";
  }
}

const EMPTY_LIST = encodeValue([]);
/** A sanity bound on `batchUpdatesMax`. */
const BATCH_UPDATES_LIMIT = 65_536;
/** Largest expiry height: a CBOR unsigned integer that is a safe integer. */
const EXPIRES_MAX = Number.MAX_SAFE_INTEGER;
/** Bytes of a digest. */
const DIGEST_BYTES = 32;

/**
 * The id of a command with its expiry: SHA-256 of `expires` (8 bytes, big-endian) followed by
 * the command bytes.
 *
 * @example
 * ```ts
 * import { commandId } from "./mempool.ts";
 * commandId(new Uint8Array([1]), 100).length; // 32
 * ```
 */
export function commandId(command: Uint8Array, expires: number): Uint8Array {
  return fromHex(commandIdHex(command, expires))!;
}

/** {@link commandId} as hex, with the native SHA-256 (faster on short inputs than @noble). */
function commandIdHex(command: Uint8Array, expires: number): string {
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(expires));
  return createHash("sha256").update(prefix).update(command).digest("hex");
}

/**
 * The digest of a batch: SHA-256 of its bytes.
 *
 * @example
 * ```ts
 * import { batchDigest, encodeBatch } from "./mempool.ts";
 * batchDigest(encodeBatch([])).length; // 32
 * ```
 */
export function batchDigest(bytes: Uint8Array): Uint8Array {
  return sha256Bytes(bytes);
}

/**
 * Encodes commands as a batch: the canonical CBOR array of `[expires, command]`.
 *
 * @example
 * ```ts
 * import { decodeBatch, encodeBatch } from "./mempool.ts";
 * decodeBatch(encodeBatch([{ command: new Uint8Array([1]), expires: 9 }]));
 * // { ok: true, entries: [{ command: Uint8Array [1], expires: 9 }] }
 * ```
 */
export function encodeBatch(entries: readonly PoolCommand[]): Uint8Array {
  return entries.length === 0 ? EMPTY_LIST : encodeValue(entries.map(entryValue));
}

function entryValue(e: PoolCommand): [number, Uint8Array] {
  return [e.expires, e.command];
}

/**
 * Decodes a batch, checking its shape and the limits (command count and sizes, batch size);
 * never throws.
 *
 * @example
 * ```ts
 * import { decodeBatch } from "./mempool.ts";
 * decodeBatch(new Uint8Array([0xff])).ok; // false
 * ```
 */
export function decodeBatch(
  bytes: Uint8Array,
  limits: BatchLimits = DEFAULT_BATCH_LIMITS,
): { ok: true; entries: PoolCommand[] } | { ok: false; reason: string } {
  if (bytes.length > limits.batchBytesMax) {
    return { ok: false, reason: `batch of ${bytes.length} bytes exceeds ${limits.batchBytesMax}` };
  }
  return decodeEntryList(bytes, limits.batchCommandsMax, limits.commandBytesMax);
}

/**
 * Decodes a CBOR array of `[expires, command]` entries of at most `countMax` entries of 1 to
 * `commandBytesMax` bytes each; never throws.
 *
 * @example
 * ```ts
 * import { decodeEntryList } from "./mempool.ts";
 * decodeEntryList(new Uint8Array([0x80]), 10, 10); // { ok: true, entries: [] }
 * ```
 */
export function decodeEntryList(
  bytes: Uint8Array,
  countMax: number,
  commandBytesMax: number,
): { ok: true; entries: PoolCommand[] } | { ok: false; reason: string } {
  // The count first: decoding allocates every item.
  const count = cborArrayLength(bytes);
  if (count !== null && count > countMax) {
    return { ok: false, reason: `batch of ${count} commands exceeds ${countMax}` };
  }
  let value: unknown;
  try {
    value = decodeValue(bytes);
  } catch (e) {
    return { ok: false, reason: `batch is not CBOR: ${(e as Error).message}` };
  }
  if (!Array.isArray(value)) return { ok: false, reason: "batch must be a CBOR array" };
  const entries: PoolCommand[] = [];
  for (const [i, e] of value.entries()) {
    if (!Array.isArray(e) || e.length !== 2) {
      return { ok: false, reason: `entry ${i} is not [expires, command]` };
    }
    const [expires, c] = e as unknown[];
    if (!Number.isSafeInteger(expires) || (expires as number) < 1) {
      return { ok: false, reason: `entry ${i}: expires must be a height >= 1` };
    }
    if (!(c instanceof Uint8Array)) return { ok: false, reason: `command ${i} is not bytes` };
    if (c.length === 0) return { ok: false, reason: `command ${i} is empty` };
    if (c.length > commandBytesMax) {
      return { ok: false, reason: `command ${i} of ${c.length} bytes is too large` };
    }
    entries.push({ command: c, expires: expires as number });
  }
  return { ok: true, entries };
}

/**
 * Encodes a Node command of the batching Application: the canonical CBOR array of batch digests.
 *
 * @example
 * ```ts
 * import { decodeDigests, encodeDigests } from "./mempool.ts";
 * decodeDigests(encodeDigests([new Uint8Array(32)]), 64).ok; // true
 * ```
 */
export function encodeDigests(digests: readonly Uint8Array[]): Uint8Array {
  return digests.length === 0 ? EMPTY_LIST : encodeValue([...digests]);
}

/**
 * Decodes a Node command of the batching Application: at most `countMax` distinct 32-byte
 * digests; never throws.
 *
 * @example
 * ```ts
 * import { decodeDigests } from "./mempool.ts";
 * decodeDigests(new Uint8Array([0x80]), 64); // { ok: true, digests: [] }
 * ```
 */
export function decodeDigests(
  bytes: Uint8Array,
  countMax: number,
): { ok: true; digests: Uint8Array[] } | { ok: false; reason: string } {
  const count = cborArrayLength(bytes);
  if (count !== null && count > countMax) {
    return { ok: false, reason: `a Node naming ${count} batches exceeds ${countMax}` };
  }
  let value: unknown;
  try {
    value = decodeValue(bytes);
  } catch (e) {
    return { ok: false, reason: `command is not CBOR: ${(e as Error).message}` };
  }
  if (!Array.isArray(value)) return { ok: false, reason: "command must be a CBOR array" };
  const seen = new Set<string>();
  for (const [i, d] of value.entries()) {
    if (!(d instanceof Uint8Array) || d.length !== DIGEST_BYTES) {
      return { ok: false, reason: `digest ${i} is not ${DIGEST_BYTES} bytes` };
    }
    const hex = toHex(d);
    if (seen.has(hex)) return { ok: false, reason: `digest ${i} repeats an earlier one` };
    seen.add(hex);
  }
  return { ok: true, digests: value as Uint8Array[] };
}

/** Size of a CBOR byte string of `n` bytes, or of the head of an unsigned integer `n`. */
function cborHeadSize(n: number): number {
  return n < 24 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9;
}

/** Encoded size of one batch entry `[expires, command]`. */
function entrySize(e: PoolCommand): number {
  return 1 + cborHeadSize(e.expires) + cborHeadSize(e.command.length) + e.command.length;
}

/** The running totals of one Node's updates, checked against {@link BatchLimits}. */
class BatchBudget {
  readonly #limits: BatchLimits;
  #updates = 0;
  #keyBytes = 0;
  #updateBytes = 0;

  constructor(limits: BatchLimits) {
    this.#limits = limits;
  }

  /** Adds the updates if all fit (returns null), else changes nothing and returns why not. */
  addUpdates(updates: readonly StateUpdate[]): string | null {
    const l = this.#limits;
    let keyBytes = this.#keyBytes;
    let updateBytes = this.#updateBytes;
    for (const [k, v] of updates) {
      if (k.length > l.updateKeyBytesMax) return `state key of ${k.length} bytes is too large`;
      if (v !== null && v.length > l.updateValueBytesMax) {
        return `state value of ${v.length} bytes is too large`;
      }
      keyBytes += 2 * k.length + 16;
      updateBytes += k.length + (v?.length ?? 0);
    }
    if (this.#updates + updates.length > l.batchUpdatesMax) return "too many state updates";
    if (keyBytes > l.batchUpdateKeyBytesMax) return "state keys too large in total";
    if (updateBytes > l.batchUpdateBytesMax) return "state updates too large in total";
    this.#updates += updates.length;
    this.#keyBytes = keyBytes;
    this.#updateBytes = updateBytes;
    return null;
  }
}

/**
 * Adds one command's updates to a batch's: `local` (key hex -> value, what later commands read)
 * and `updates` (the batch's result: the last write of each key, in the order of last writes).
 */
function addUpdates(
  local: Map<string, Uint8Array | null>,
  updates: Map<string, StateUpdate>,
  add: readonly StateUpdate[],
): void {
  for (const [k, v] of add) {
    const key = toHex(k);
    local.set(key, v);
    updates.delete(key);
    updates.set(key, [k, v]);
  }
}

/** A state view with the batch's own earlier updates on top. */
function overlay(base: StateView, local: Map<string, Uint8Array | null>): StateView {
  return {
    get(key: Uint8Array): Promise<Uint8Array | null> {
      const hit = local.get(toHex(key));
      return hit !== undefined ? Promise.resolve(hit) : base.get(key);
    },
  };
}

/** A batch held in memory: its bytes, entries and ids, decoded and hashed once. */
interface Batch {
  /** Digest, hex. */
  readonly digest: string;
  readonly digestBytes: Uint8Array;
  readonly bytes: Uint8Array;
  readonly entries: readonly PoolCommand[];
  /** The id (hex) of each entry. */
  readonly ids: readonly string[];
  /** The largest expiry of its entries: above the committed height it may still deliver. */
  readonly expiresMax: number;
  /** Resolves when the batch is in the {@link BatchStore}. */
  readonly durable: Promise<void>;
}

interface Waiter {
  readonly resolve: (c: CommittedCommand) => void;
  readonly reject: (e: MempoolError) => void;
}

/** What a validated (or restored) uncommitted Node consumed. */
interface Proposed {
  readonly parent: string;
  readonly height: number;
  /** Digests (hex) of the batches it names. */
  readonly digests: readonly string[];
  /** Ids it consumed (delivered or refused by the machine). */
  readonly ids: readonly string[];
  /** Of those, the ids the machine refused (empty for a restored Node). */
  readonly refused: ReadonlyMap<string, string>;
}

/** The ids and batches of a committed Node. */
interface CommittedAt {
  readonly node: string;
  readonly ids: readonly string[];
  readonly digests: readonly string[];
}

/** The outcome of executing a Node's batches (Spec 13.2). */
interface Execution {
  readonly ids: string[];
  readonly refused: Map<string, string>;
  readonly updates: StateUpdate[];
  /** The validator-set change one of its commands made, if any. */
  readonly validatorUpdates?: readonly ValidatorUpdate[];
}

/**
 * One replica's pool of client commands in batches, and the batching {@link Application} built
 * on it ({@link Mempool.application}).
 *
 * @example
 * ```ts
 * import { Mempool } from "./mempool.ts";
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) });
 * const r = pool.submit([new Uint8Array([1, 2, 3])]);
 * console.log(r.ids.length, r.expires); // 1 1024
 * // pool.application is the Application to give the Engine.
 * pool.close();
 * ```
 */
export class Mempool {
  /** The batch limits in force. */
  readonly limits: BatchLimits;
  readonly #machine: CommandMachine;
  readonly #o: MempoolOptions;
  readonly #store: BatchStore;
  readonly #poolCommandsMax: number;
  readonly #poolBytesMax: number;
  readonly #waitersMax: number;
  readonly #proposedMax: number;
  readonly #idleDelayMs: number;
  readonly #batchDelayMs: number;
  readonly #fetchTimeoutMs: number;
  /** Batches held in memory by digest (hex), in arrival order: candidates for proposals. */
  readonly #batches = new Map<string, Batch>();
  #poolCommands = 0;
  #poolBytes = 0;
  /** Own clients' commands not yet in a batch. */
  #unsealed: Array<PoolCommand & { readonly id: string }> = [];
  #unsealedBytes = 0;
  #sealTimer: ReturnType<typeof setTimeout> | undefined;
  /** Ids this replica's clients submitted that are not consumed yet (dedupe of submissions). */
  readonly #own = new Set<string>();
  /** Expiry height -> own or waited-for ids with that expiry (swept on commit). */
  readonly #expiring = new Map<number, Set<string>>();
  /** Committed height -> its Node, ids and digests, for the last `commandHorizon` heights. */
  readonly #committed = new Map<number, CommittedAt>();
  /** id hex -> committed height, for every id of {@link Mempool.#committed}. */
  readonly #committedIds = new Map<string, number>();
  /** digest hex -> committed height, for every batch of {@link Mempool.#committed}. */
  readonly #committedDigests = new Map<string, number>();
  readonly #waiters = new Map<string, Set<Waiter>>();
  #waiterCount = 0;
  /** The Node this replica built last, with its execution, until it validates it. */
  #produced: { parent: string; height: number; command: Uint8Array; run: Execution } | null = null;
  /** Node hash hex -> what it consumed, for uncommitted Nodes validated or restored. */
  readonly #proposed = new Map<string, Proposed>();
  #wake: (() => void) | null = null;
  #closed = false;
  readonly #abort = new AbortController();
  /** Commands committed since start. */
  committedCommands = 0;
  /** Height of the last commit seen (or restored). */
  #committedHeight = 0;

  /**
   * An empty pool for `machine`.
   *
   * @param machine the per-command state machine
   * @param options batch and pool limits, hooks
   * @throws {ConfigError} `bad-option` on a limit that is not a positive integer
   */
  constructor(machine: CommandMachine, options: MempoolOptions = {}) {
    this.#machine = machine;
    this.#o = options;
    const d = DEFAULT_BATCH_LIMITS;
    const limits: BatchLimits = {
      commandBytesMax: options.commandBytesMax ?? d.commandBytesMax,
      batchBytesMax: options.batchBytesMax ?? d.batchBytesMax,
      batchCommandsMax: options.batchCommandsMax ?? d.batchCommandsMax,
      nodeBatchesMax: options.nodeBatchesMax ?? d.nodeBatchesMax,
      batchUpdatesMax: options.batchUpdatesMax ?? d.batchUpdatesMax,
      batchUpdateKeyBytesMax: options.batchUpdateKeyBytesMax ?? d.batchUpdateKeyBytesMax,
      batchUpdateBytesMax: options.batchUpdateBytesMax ?? d.batchUpdateBytesMax,
      updateKeyBytesMax: options.updateKeyBytesMax ?? d.updateKeyBytesMax,
      updateValueBytesMax: options.updateValueBytesMax ?? d.updateValueBytesMax,
      commandHorizon: options.commandHorizon ?? d.commandHorizon,
    };
    for (const [name, value] of Object.entries(limits)) positive(name, value);
    if (limits.batchUpdatesMax > BATCH_UPDATES_LIMIT) {
      throw new ConfigError(
        "bad-option",
        `batchUpdatesMax must be at most ${BATCH_UPDATES_LIMIT}: ${limits.batchUpdatesMax}`,
      );
    }
    if (limits.commandBytesMax + 16 > limits.batchBytesMax) {
      throw new ConfigError(
        "bad-option",
        `commandBytesMax (${limits.commandBytesMax}) must leave room for its batch entry in ` +
          `batchBytesMax (${limits.batchBytesMax})`,
      );
    }
    for (const name of ["updateKeyBytesMax", "updateValueBytesMax"] as const) {
      // Storage keeps one state key and value in one Deno KV entry.
      if (limits[name] > DEFAULT_APP_LIMITS[name]) {
        throw new ConfigError(
          "bad-option",
          `${name} must be at most ${DEFAULT_APP_LIMITS[name]}: ${limits[name]}`,
        );
      }
    }
    this.limits = limits;
    this.#store = options.batchStore ?? new MemoryBatchStore();
    this.#poolCommandsMax = positive("poolCommandsMax", options.poolCommandsMax ?? 400_000);
    this.#poolBytesMax = positive("poolBytesMax", options.poolBytesMax ?? 256 * 1024 * 1024);
    this.#waitersMax = positive("waitersMax", options.waitersMax ?? 100_000);
    this.#proposedMax = positive("proposedNodesMax", options.proposedNodesMax ?? 8192);
    this.#idleDelayMs = nonNegative("idleProposeDelayMs", options.idleProposeDelayMs ?? 20);
    this.#batchDelayMs = nonNegative("batchDelayMs", options.batchDelayMs ?? 1);
    this.#fetchTimeoutMs = positive("batchFetchTimeoutMs", options.batchFetchTimeoutMs ?? 2_000);
  }

  /** Commands in the batches held in memory, and not yet in a batch. */
  get size(): number {
    return this.#poolCommands + this.#unsealed.length;
  }

  /** Bytes of the batches held in memory, and of the commands not yet in a batch. */
  get bytes(): number {
    return this.#poolBytes + this.#unsealedBytes;
  }

  /** Batches held in memory. */
  get batches(): number {
    return this.#batches.size;
  }

  /** Clients waiting for commits. */
  get waiting(): number {
    return this.#waiterCount;
  }

  /** Height of the last commit seen (or restored). */
  get committedHeight(): number {
    return this.#committedHeight;
  }

  /** Command ids remembered as committed (those of the last `commandHorizon` heights). */
  get rememberedIds(): number {
    return this.#committedIds.size;
  }

  /** True iff a command with this id (hex) was submitted here and is not consumed yet. */
  has(id: string): boolean {
    return this.#own.has(id);
  }

  /** The Application to give the Engine: proposes batch digests and executes their commands. */
  get application(): Application {
    return {
      produceCommand: (r) => this.#produce(r.parent, r.height, r.state),
      validateNode: (r) => this.#validate(r.node, r.hash, r.state),
      onCommit: (r) => this.#onCommit(r.node, r.hash),
    };
  }

  /**
   * Tells a new pool what the replica's store holds, before the Engine starts: the committed
   * height, the Nodes of the last `commandHorizon` committed heights (the ids their batches
   * consumed decide "already committed?") and the uncommitted Nodes (their ids are pending).
   * Reads their batches from the {@link BatchStore}. Without it, after a restart, Nodes built on
   * restored uncommitted Nodes are refused (`ancestors-unknown`) until those commit, and late
   * copies of commands committed before the restart are not recognised.
   *
   * @param restored what the store holds
   */
  async restore(restored: MempoolRestore): Promise<void> {
    const top = restored.committedHeight;
    this.#committedHeight = Math.max(this.#committedHeight, top);
    const committed = [...restored.committed]
      .filter((c) => c.node.height <= top && c.node.height > top - this.limits.commandHorizon)
      .sort((a, b) => a.node.height - b.node.height);
    for (const c of committed) {
      const digests = this.#digestsOf(c.node);
      // Ancestors are committed and already added: their ids are in #committedIds.
      const ids = await this.#consumedOf(digests, c.node.height, new Set());
      this.#addCommitted(c.node.height, toHex(c.hash), ids ?? [], digests);
    }
    const uncommitted = [...restored.uncommitted]
      .filter((u) => u.node.height > top)
      .sort((a, b) => a.node.height - b.node.height);
    for (const u of uncommitted) {
      const parent = toHex(u.node.parent);
      const pending = this.#ancestorIds(parent, u.node.height);
      if (pending === null) continue;
      const digests = this.#digestsOf(u.node);
      const ids = await this.#consumedOf(digests, u.node.height, pending);
      if (ids === null) continue;
      this.#remember(toHex(u.hash), {
        parent,
        height: u.node.height,
        digests,
        ids,
        refused: new Map(),
      });
    }
  }

  /**
   * Adds client commands, all with one expiry height, to this replica's next batch. All or
   * nothing: a malformed or too large command, a bad expiry, or too little room refuses the
   * whole submission. Commands already submitted here and not consumed, or known to be
   * committed, are not added again (their ids are still returned).
   *
   * @param commands the commands, each 1 to `commandBytesMax` bytes
   * @param options `expires`: the last height at which they may commit; default the committed
   *   height plus `commandHorizon` (the latest allowed)
   * @throws {MempoolError} `bad-command`, `command-too-large`, `bad-expiry`, `expired`,
   *   `pool-full`, `closed`
   */
  submit(commands: readonly Uint8Array[], options: { expires?: number } = {}): SubmitResult {
    if (this.#closed) throw new MempoolError("closed", "the replica is shutting down");
    const top = this.#committedHeight;
    const expires = options.expires ?? top + this.limits.commandHorizon;
    if (!Number.isSafeInteger(expires) || expires < 1 || expires > EXPIRES_MAX) {
      throw new MempoolError("bad-expiry", `expires must be a height >= 1: ${expires}`);
    }
    if (expires <= top) {
      throw new MempoolError(
        "expired",
        `expires ${expires} is at or below the committed height ${top}: it could never commit`,
      );
    }
    if (expires > top + this.limits.commandHorizon) {
      throw new MempoolError(
        "bad-expiry",
        `expires ${expires} is more than commandHorizon (${this.limits.commandHorizon}) heights ` +
          `above the committed height ${top}`,
      );
    }
    let bytes = 0;
    for (const [i, command] of commands.entries()) {
      this.#checkCommand(command, i);
      bytes += command.length;
    }
    const ids = commands.map((c) => commandIdHex(c, expires));
    const committed = new Map<number, CommittedCommand>();
    const fresh: Array<PoolCommand & { id: string }> = [];
    const seen = new Set<string>();
    for (const [i, id] of ids.entries()) {
      const known = this.#committedAs(id);
      if (known !== null) committed.set(i, known);
      else if (!this.#own.has(id) && !seen.has(id)) {
        seen.add(id);
        fresh.push({ command: commands[i]!, expires, id });
      }
    }
    this.#admit(fresh.length, bytes);
    for (const e of fresh) {
      this.#own.add(e.id);
      this.#index(e.id, e.expires);
      this.#unsealed.push(e);
      this.#unsealedBytes += e.command.length;
    }
    if (fresh.length > 0) this.#scheduleSeal();
    return { ids, expires, added: fresh.length, committed };
  }

  /**
   * Adds a batch a peer sent: decoded and hashed once, stored durably (in the background), held
   * in memory as a candidate for proposals. A batch already held or committed within the
   * horizon, or whose every entry has expired, is ignored.
   *
   * @param bytes the batch
   * @returns its digest, hex
   * @throws {MempoolError} `bad-batch` (malformed, or an entry expiring more than two horizons
   *   above the committed height), `pool-full`, `closed`
   */
  addBatch(bytes: Uint8Array): string {
    if (this.#closed) throw new MempoolError("closed", "the replica is shutting down");
    const digestBytes = batchDigest(bytes);
    const digest = toHex(digestBytes);
    if (this.#batches.has(digest) || this.#committedDigests.has(digest)) return digest;
    const decoded = decodeBatch(bytes, this.limits);
    if (!decoded.ok) throw new MempoolError("bad-batch", decoded.reason);
    const far = this.#committedHeight + 2 * this.limits.commandHorizon;
    const bad = decoded.entries.findIndex((e) => e.expires > far);
    if (bad >= 0) {
      throw new MempoolError(
        "bad-batch",
        `entry ${bad} expires at ${decoded.entries[bad]!.expires}, too far above the committed ` +
          `height ${this.#committedHeight}`,
      );
    }
    // A batch that can deliver nothing any more is not held (nor stored): holding it again
    // would let the sweep (Spec 13.2 step 6) delete the stored copy a committed Node names.
    if (decoded.entries.every((e) => e.expires <= this.#committedHeight)) return digest;
    this.#admit(decoded.entries.length, bytes.length);
    this.#hold(this.#batchOf(digestBytes, digest, bytes, decoded.entries));
    return digest;
  }

  /**
   * The bytes of a batch this replica holds or stored, by digest (for peers that miss it), or
   * null.
   *
   * @param digest the batch digest
   */
  async batchBytes(digest: Uint8Array): Promise<Uint8Array | null> {
    return this.#batches.get(toHex(digest))?.bytes ?? await this.#store.get(digest);
  }

  #checkCommand(command: Uint8Array, index: number): void {
    if (!(command instanceof Uint8Array) || command.length === 0) {
      throw new MempoolError("bad-command", `command ${index} is empty`);
    }
    if (command.length > this.limits.commandBytesMax) {
      throw new MempoolError(
        "command-too-large",
        `command ${index} of ${command.length} bytes exceeds ${this.limits.commandBytesMax}`,
      );
    }
    const problem = this.#machine.check?.(command) ?? null;
    if (problem !== null) {
      throw new MempoolError("bad-command", `command ${index} is invalid: ${problem}`);
    }
  }

  /** Refuses with `pool-full` unless `commands` and `bytes` more fit. */
  #admit(commands: number, bytes: number): void {
    if (this.size + commands > this.#poolCommandsMax) {
      throw new MempoolError(
        "pool-full",
        `the pool holds ${this.size} of at most ${this.#poolCommandsMax} commands; ` +
          `${commands} more do not fit, retry later`,
      );
    }
    if (this.bytes + bytes > this.#poolBytesMax) {
      throw new MempoolError(
        "pool-full",
        `the pool holds ${this.bytes} of at most ${this.#poolBytesMax} bytes; ` +
          `${bytes} more do not fit, retry later`,
      );
    }
  }

  /** A batch with its ids (one hash per command), being stored (unless `persist` is false). */
  #batchOf(
    digestBytes: Uint8Array,
    digest: string,
    bytes: Uint8Array,
    entries: readonly PoolCommand[],
    ids: readonly string[] = entries.map((e) => commandIdHex(e.command, e.expires)),
    persist = true,
  ): Batch {
    let expiresMax = 0;
    for (const e of entries) if (e.expires > expiresMax) expiresMax = e.expires;
    const durable = persist ? this.#store.put(digestBytes, bytes) : Promise.resolve();
    // Awaited by validation; a failed put must not count as unhandled meanwhile.
    durable.catch(() => {});
    return { digest, digestBytes, bytes, entries, ids, expiresMax, durable };
  }

  /** Holds a batch in memory as a proposal candidate and wakes an idle leader. */
  #hold(b: Batch): void {
    if (this.#batches.has(b.digest)) return;
    this.#batches.set(b.digest, b);
    this.#poolCommands += b.entries.length;
    this.#poolBytes += b.bytes.length;
    this.#wake?.();
  }

  /** Forgets a batch held in memory (its bytes stay in the store). */
  #release(digest: string): void {
    const b = this.#batches.get(digest);
    if (b === undefined) return;
    this.#batches.delete(digest);
    this.#poolCommands -= b.entries.length;
    this.#poolBytes -= b.bytes.length;
    assert(this.#poolCommands >= 0 && this.#poolBytes >= 0, "pool totals never go negative");
  }

  #scheduleSeal(): void {
    const l = this.limits;
    const full = this.#unsealed.length >= l.batchCommandsMax ||
      this.#unsealedBytes + 16 * this.#unsealed.length >= l.batchBytesMax;
    if (full) return this.#seal();
    if (this.#sealTimer !== undefined) return;
    this.#sealTimer = setTimeout(() => this.#seal(), this.#batchDelayMs);
  }

  /** Packs every unsealed command into batches, holds, stores and sends each. */
  #seal(): void {
    clearTimeout(this.#sealTimer);
    this.#sealTimer = undefined;
    const l = this.limits;
    while (this.#unsealed.length > 0) {
      let bytes = 5;
      let n = 0;
      for (const e of this.#unsealed) {
        const size = entrySize(e);
        if (n === l.batchCommandsMax || bytes + size > l.batchBytesMax) break;
        bytes += size;
        n++;
      }
      const taken = this.#unsealed.splice(0, n);
      for (const e of taken) this.#unsealedBytes -= e.command.length;
      const encoded = encodeBatch(taken);
      assert(encoded.length <= l.batchBytesMax, "a sealed batch fits batchBytesMax");
      const digestBytes = batchDigest(encoded);
      const b = this.#batchOf(
        digestBytes,
        toHex(digestBytes),
        encoded,
        taken.map((e) => ({ command: e.command, expires: e.expires })),
        taken.map((e) => e.id),
      );
      this.#hold(b);
      this.#o.onBatch?.(encoded, digestBytes);
    }
  }

  /** Where the command with this id committed, if within the last `commandHorizon` heights. */
  #committedAs(id: string): CommittedCommand | null {
    const height = this.#committedIds.get(id);
    if (height === undefined) return null;
    return { id, height, node: this.#committed.get(height)!.node };
  }

  /**
   * Resolves when the command with this id (hex) and expiry is committed; fails with `expired`
   * once the committed height reaches `expires` without it (then it can never commit).
   *
   * @param id command id, hex
   * @param expires its expiry height
   * @param options `timeoutMs` (default 30 s), `signal` to stop waiting
   * @throws {MempoolError} `wait-timeout`, `too-many-waiters`, `command-rejected`, `expired`,
   *   `closed`
   */
  async waitForCommit(
    id: string,
    expires: number,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<CommittedCommand> {
    return (await this.waitForCommits([id], expires, options))[0]!;
  }

  /**
   * Resolves when every command with these ids (hex) and this expiry is committed, in order:
   * {@link Mempool.waitForCommit} for a whole submission, with one timer. Fails as soon as one
   * of them fails.
   *
   * @param ids command ids, hex
   * @param expires their expiry height
   * @param options `timeoutMs` (default 30 s), `signal` to stop waiting
   * @throws {MempoolError} `wait-timeout`, `too-many-waiters`, `command-rejected`, `expired`,
   *   `closed`
   */
  waitForCommits(
    ids: readonly string[],
    expires: number,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<CommittedCommand[]> {
    const results: Array<CommittedCommand | undefined> = ids.map((id) =>
      this.#committedAs(id) ?? undefined
    );
    const missing = results.reduce((n, r) => r === undefined ? n + 1 : n, 0);
    if (missing === 0) return Promise.resolve(results as CommittedCommand[]);
    if (this.#closed) return Promise.reject(new MempoolError("closed", "shutting down"));
    if (expires <= this.#committedHeight) {
      const i = results.indexOf(undefined);
      return Promise.reject(expiredError(ids[i]!, expires));
    }
    if (options.signal?.aborted) {
      return Promise.reject(new MempoolError("closed", "wait aborted"));
    }
    if (this.#waiterCount + missing > this.#waitersMax) {
      return Promise.reject(
        new MempoolError("too-many-waiters", `${this.#waiterCount} clients already wait`),
      );
    }
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise<CommittedCommand[]>((resolve, reject) => {
      const registered: Array<[string, Waiter]> = [];
      let left = missing;
      let settled = false;
      const finish = (error: MempoolError | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        for (const [id, w] of registered) this.#removeWaiter(id, expires, w);
        if (error === null) resolve(results as CommittedCommand[]);
        else reject(error);
      };
      for (const [i, id] of ids.entries()) {
        if (results[i] !== undefined) continue;
        const waiter: Waiter = {
          resolve: (c) => {
            if (results[i] !== undefined) return;
            results[i] = c;
            this.#removeWaiter(id, expires, waiter);
            if (--left === 0) finish(null);
          },
          reject: (e) => finish(e),
        };
        let set = this.#waiters.get(id);
        if (set === undefined) this.#waiters.set(id, set = new Set());
        set.add(waiter);
        this.#waiterCount++;
        this.#index(id, expires);
        registered.push([id, waiter]);
      }
      const onAbort = (): void => finish(new MempoolError("closed", "wait aborted"));
      const timer = setTimeout(() => {
        const id = ids[results.indexOf(undefined)];
        finish(
          new MempoolError("wait-timeout", `command ${id} not committed within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #removeWaiter(id: string, expires: number, waiter: Waiter): void {
    const set = this.#waiters.get(id);
    if (set === undefined || !set.delete(waiter)) return;
    this.#waiterCount--;
    if (set.size > 0) return;
    this.#waiters.delete(id);
    if (!this.#own.has(id)) this.#unindex(id, expires);
  }

  /** Refuses further submissions and fails every waiting client with `closed`. Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#sealTimer);
    this.#abort.abort();
    for (const set of [...this.#waiters.values()]) {
      for (const w of [...set]) {
        w.reject(new MempoolError("closed", "the replica is shutting down"));
      }
    }
    this.#wakeProducer();
  }

  #index(id: string, expires: number): void {
    let set = this.#expiring.get(expires);
    if (set === undefined) this.#expiring.set(expires, set = new Set());
    set.add(id);
  }

  #unindex(id: string, expires: number): void {
    const set = this.#expiring.get(expires);
    if (set === undefined) return;
    set.delete(id);
    if (set.size === 0) this.#expiring.delete(expires);
  }

  // -------------------------------------------------------------------------------------------
  // Leader: name batches.

  async #produce(parent: Hash, height: number, state: StateView): Promise<{ command: Uint8Array }> {
    // Own clients' commands go into batches now, so that this proposal can name them.
    this.#seal();
    let built = await this.#build(parent, height, state);
    if (built.batches.length === 0 && built.idle && this.#idleDelayMs > 0 && !this.#closed) {
      await this.#waitForBatches(this.#idleDelayMs);
      this.#seal();
      built = await this.#build(parent, height, state);
    }
    const command = encodeDigests(built.batches.map((b) => b.digestBytes));
    this.#produced = { parent: toHex(parent), height, command, run: built.run };
    return { command };
  }

  /**
   * Held batches (oldest first) that no uncommitted ancestor of the new Node names and that can
   * still deliver at `height`, as many as fit one Node, with their execution on `state`.
   */
  async #build(
    parent: Hash,
    height: number,
    state: StateView,
  ): Promise<{ batches: Batch[]; idle: boolean; run: Execution }> {
    const parentHex = toHex(parent);
    const pending = this.#ancestorIds(parentHex, height);
    const none: Execution = { ids: [], refused: new Map(), updates: [] };
    // An ancestor this replica never validated: it cannot tell which commands it holds.
    if (pending === null) return { batches: [], idle: false, run: none };
    const named = this.#ancestorDigests(parentHex, height);
    const chosen: Batch[] = [];
    for (const b of this.#batches.values()) {
      if (chosen.length >= this.limits.nodeBatchesMax) break;
      if (named.has(b.digest) || this.#committedDigests.has(b.digest)) continue;
      if (b.expiresMax < height) continue;
      chosen.push(b);
    }
    // Execute; batches whose updates would exceed the Node's limits wait for a later Node.
    while (chosen.length > 0) {
      const run = await this.#execute(chosen, height, pending, state);
      if (run.ok) return { batches: chosen, idle: false, run: run.execution };
      if (run.batch === 0) {
        // Alone in a Node it is over the limits: no Node can ever name it.
        this.#drop(chosen[0]!, `alone in a Node: ${run.reason}`);
        chosen.shift();
      } else chosen.length = run.batch;
    }
    return { batches: [], idle: pending.size === 0, run: none };
  }

  /**
   * Ids consumed by the uncommitted ancestors of a Node of height `height` whose parent is
   * `parent`, or null when one of them is not known here (then nothing can be decided).
   */
  #ancestorIds(parent: string, height: number): Set<string> | null {
    const out = new Set<string>();
    let cur = parent;
    for (let h = height - 1; h > this.#committedHeight; h--) {
      const p = this.#proposed.get(cur);
      if (p === undefined || p.height !== h) return null;
      for (const id of p.ids) out.add(id);
      cur = p.parent;
    }
    return out;
  }

  /** Digests named by the (known) uncommitted ancestors of a Node. */
  #ancestorDigests(parent: string, height: number): Set<string> {
    const out = new Set<string>();
    let cur = parent;
    for (let h = height - 1; h > this.#committedHeight; h--) {
      const p = this.#proposed.get(cur);
      if (p === undefined) break;
      for (const d of p.digests) out.add(d);
      cur = p.parent;
    }
    return out;
  }

  /** A batch that can never be proposed leaves; the clients waiting for its commands learn why. */
  #drop(b: Batch, reason: string): void {
    this.#release(b.digest);
    this.#o.onDropped?.(b.digest, reason);
    for (const id of b.ids) {
      if (this.#own.delete(id)) this.#o.onDropped?.(id, reason);
      for (const w of [...(this.#waiters.get(id) ?? [])]) {
        w.reject(new MempoolError("command-rejected", `command ${id} was rejected: ${reason}`));
      }
    }
  }

  #waitForBatches(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }

  #wakeProducer(): void {
    this.#wake?.();
  }

  // -------------------------------------------------------------------------------------------
  // Every replica: execute a Node (deterministic; Spec 13.2).

  /** The machine's updates for `command`, checked for shape. */
  async #applyOne(command: Uint8Array, state: StateView, height: number): Promise<ApplyResult> {
    let r: ApplyResult;
    try {
      r = await this.#machine.apply({ command, state, height });
    } catch (e) {
      return { ok: false, reason: `apply threw: ${String(e)}` };
    }
    if (typeof r !== "object" || r === null) return { ok: false, reason: "bad apply result" };
    if (!r.ok) return { ok: false, reason: String(r.reason) };
    if (!Array.isArray(r.updates)) return { ok: false, reason: "bad apply result" };
    for (const u of r.updates) {
      if (!Array.isArray(u) || !(u[0] instanceof Uint8Array)) {
        return { ok: false, reason: "bad apply result: update key must be bytes" };
      }
      if (u[1] !== null && !(u[1] instanceof Uint8Array)) {
        return { ok: false, reason: "bad apply result: update value must be bytes or null" };
      }
    }
    return r;
  }

  /**
   * Spec 13.2 steps 3-4: the batches' entries in order; each live, not yet consumed entry is
   * consumed and delivered to the machine. Fails, naming the batch, when the updates exceed the
   * Node's limits.
   */
  async #execute(
    batches: readonly Batch[],
    height: number,
    pending: ReadonlySet<string>,
    state: StateView,
  ): Promise<
    { ok: true; execution: Execution } | { ok: false; batch: number; reason: string }
  > {
    const budget = new BatchBudget(this.limits);
    const local = new Map<string, Uint8Array | null>();
    const updates = new Map<string, StateUpdate>();
    const view = overlay(state, local);
    const horizon = this.limits.commandHorizon;
    const ids: string[] = [];
    const consumed = new Set<string>();
    const refused = new Map<string, string>();
    let change: readonly ValidatorUpdate[] | undefined;
    // SPECIFICATION.md 3.4 step 2: one change at a time (read once: only this Node may start one).
    let handingOver: boolean | null = null;
    for (const [bi, b] of batches.entries()) {
      for (let i = 0; i < b.entries.length; i++) {
        const e = b.entries[i]!;
        if (e.expires < height || e.expires >= height + horizon) continue;
        const id = b.ids[i]!;
        if (consumed.has(id) || pending.has(id) || this.#committedIds.has(id)) continue;
        consumed.add(id);
        ids.push(id);
        const r = await this.#applyOne(e.command, view, height);
        if (!r.ok) {
          refused.set(id, r.reason);
          continue;
        }
        if (r.validatorUpdates !== undefined && r.validatorUpdates.length > 0) {
          handingOver ??= (await readValidatorConfig(state))?.next != null;
          if (change !== undefined || handingOver) {
            refused.set(id, "validator change in progress");
            continue;
          }
          change = r.validatorUpdates;
        }
        if (r.updates.length === 0) continue;
        const problem = budget.addUpdates(r.updates);
        if (problem !== null) return { ok: false, batch: bi, reason: problem };
        addUpdates(local, updates, r.updates);
      }
    }
    const execution: Execution = { ids, refused, updates: [...updates.values()] };
    return {
      ok: true,
      execution: change === undefined ? execution : { ...execution, validatorUpdates: change },
    };
  }

  /** Spec 13.2 step 3 without the machine: the ids a Node consumes (state plays no part). */
  async #consumedOf(
    digests: readonly string[],
    height: number,
    pending: ReadonlySet<string>,
  ): Promise<string[] | null> {
    const batches = await this.#obtain(digests);
    if (!Array.isArray(batches)) return null;
    const horizon = this.limits.commandHorizon;
    const consumed = new Set<string>();
    for (const b of batches) {
      for (let i = 0; i < b.entries.length; i++) {
        const e = b.entries[i]!;
        if (e.expires < height || e.expires >= height + horizon) continue;
        const id = b.ids[i]!;
        if (pending.has(id) || this.#committedIds.has(id)) continue;
        consumed.add(id);
      }
    }
    return [...consumed];
  }

  /**
   * The batches with these digests (hex): held, stored, or fetched from the peers within
   * `batchFetchTimeoutMs`; or the first digest that cannot be had.
   */
  async #obtain(
    digests: readonly string[],
    from: Uint8Array | null = null,
  ): Promise<Batch[] | { missing: string }> {
    // One deadline for the Node's fetches, made on the first one; the batches are had at once.
    let deadline: AbortSignal | null = null;
    const signal = (): AbortSignal =>
      deadline ??= AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#fetchTimeoutMs)]);
    const found = await Promise.all(digests.map((d) => this.#obtainOne(d, signal, from)));
    const missing = found.indexOf(null);
    return missing >= 0 ? { missing: digests[missing]! } : found as Batch[];
  }

  /** One batch of {@link Mempool.#obtain}, or null when it cannot be had. */
  async #obtainOne(
    d: string,
    signal: () => AbortSignal,
    from: Uint8Array | null,
  ): Promise<Batch | null> {
    const held = this.#batches.get(d);
    if (held !== undefined) return held;
    const digestBytes = fromHex(d)!;
    let bytes = await this.#store.get(digestBytes);
    const stored = bytes !== null;
    if (bytes === null && this.#o.fetchBatch !== undefined && !this.#closed) {
      bytes = await this.#o.fetchBatch(digestBytes, signal(), from).catch(() => null);
    }
    if (bytes === null || !bytesEqual(batchDigest(bytes), digestBytes)) return null;
    const decoded = decodeBatch(bytes, this.limits);
    if (!decoded.ok) return null;
    // A fetched batch is stored like any other; a stored one is not written again.
    return this.#batchOf(digestBytes, d, bytes, decoded.entries, undefined, !stored);
  }

  async #validate(
    node: Node,
    hash: Hash,
    state: StateView,
  ): Promise<ValidateResult> {
    // Spec 13.2 step 1: a list of distinct digests, within the limit.
    const decoded = decodeDigests(node.command, this.limits.nodeBatchesMax);
    if (!decoded.ok) return decoded;
    const digests = decoded.digests.map(toHex);
    const h = node.height;
    const parentHex = toHex(node.parent);
    const pending = this.#ancestorIds(parentHex, h);
    if (pending === null) {
      return { ok: false, reason: "ancestors-unknown: an uncommitted ancestor was not validated" };
    }
    // Spec 13.2 step 2: every batch is here, durably (persisted before the vote it allows).
    const batches = await this.#obtain(digests, node.proposer);
    if (!Array.isArray(batches)) {
      return { ok: false, reason: `batch-unavailable: ${batches.missing}` };
    }
    try {
      await Promise.all(batches.map((b) => b.durable));
    } catch (e) {
      // The store failed: not the Node's fault, but this replica cannot vote for it.
      return { ok: false, reason: `batch-store-failed: ${String(e)}` };
    }
    // Steps 3-4: execute. The leader validating the Node it just built on the same parent knows
    // the outcome: building it ran these very steps on the same batches, state and limits.
    const own = this.#produced;
    this.#produced = null;
    let run: Execution;
    if (
      own !== null && own.parent === parentHex && own.height === h &&
      bytesEqual(own.command, node.command)
    ) {
      run = own.run;
    } else {
      const r = await this.#execute(batches, h, pending, state);
      if (!r.ok) return { ok: false, reason: `Node over its limits: ${r.reason}` };
      run = r.execution;
    }
    this.#remember(toHex(hash), {
      parent: parentHex,
      height: h,
      digests,
      ids: run.ids,
      refused: run.refused,
    });
    if (run.validatorUpdates === undefined) return { ok: true, updates: run.updates };
    return { ok: true, updates: run.updates, validatorUpdates: run.validatorUpdates };
  }

  #remember(hash: string, p: Proposed): void {
    if (this.#proposed.size >= this.#proposedMax && !this.#proposed.has(hash)) {
      const oldest = this.#proposed.keys().next().value!;
      this.#proposed.delete(oldest);
    }
    this.#proposed.set(hash, p);
  }

  // -------------------------------------------------------------------------------------------
  // Commit: remember consumed ids, answer waiting clients, expire what can no longer commit.

  async #onCommit(node: Node, hash: Hash): Promise<void> {
    const nodeHex = toHex(hash);
    const h = node.height;
    let p = this.#proposed.get(nodeHex);
    if (p === undefined) {
      // Not validated here (e.g. before a restart): what it consumed follows from its batches.
      const digests = this.#digestsOf(node);
      const pending = this.#ancestorIds(toHex(node.parent), h) ?? new Set<string>();
      const ids = await this.#consumedOf(digests, h, pending) ?? [];
      p = { parent: toHex(node.parent), height: h, digests, ids, refused: new Map() };
    }
    // Spec 13.2 step 5: the ids are committed; the batches leave memory (not the store).
    this.#addCommitted(h, nodeHex, p.ids, p.digests);
    for (const d of p.digests) this.#release(d);
    for (const id of p.ids) {
      this.#own.delete(id);
      const set = this.#waiters.get(id);
      if (set === undefined) continue;
      const why = p.refused.get(id);
      for (const w of [...set]) {
        if (why === undefined) w.resolve({ id, height: h, node: nodeHex });
        else w.reject(new MempoolError("command-rejected", `command ${id} was rejected: ${why}`));
      }
    }
    this.committedCommands += p.ids.length - p.refused.size;
    const before = this.#committedHeight;
    this.#committedHeight = Math.max(before, h);
    for (let e = before + 1; e <= this.#committedHeight; e++) this.#expire(e);
    for (const [key, q] of this.#proposed) if (q.height <= h) this.#proposed.delete(key);
    this.#sweep();
    this.#o.onCommitted?.({ height: h, commands: p.ids.length - p.refused.size });
  }

  /** Remembers a committed Node's ids and batches and forgets those older than the horizon. */
  #addCommitted(
    height: number,
    node: string,
    ids: readonly string[],
    digests: readonly string[],
  ): void {
    this.#committed.set(height, { node, ids, digests });
    for (const id of ids) this.#committedIds.set(id, height);
    for (const d of digests) this.#committedDigests.set(d, height);
    for (const [old, at] of this.#committed) {
      if (old > height - this.limits.commandHorizon) break;
      this.#committed.delete(old);
      for (const id of at.ids) {
        if (this.#committedIds.get(id) === old) this.#committedIds.delete(id);
      }
      for (const d of at.digests) {
        if (this.#committedDigests.get(d) === old) this.#committedDigests.delete(d);
      }
    }
  }

  /** Own commands that expire at `height` (now committed) can never commit: their clients learn. */
  #expire(height: number): void {
    const set = this.#expiring.get(height);
    if (set === undefined) return;
    this.#expiring.delete(height);
    for (const id of set) {
      if (this.#own.delete(id)) this.#o.onDropped?.(id, "expired");
      for (const w of [...(this.#waiters.get(id) ?? [])]) w.reject(expiredError(id, height));
    }
  }

  /**
   * Batches that can deliver nothing any more (every entry expired at the committed height) and
   * that no uncommitted Node names leave memory and the store (Spec 13.2 step 6).
   */
  #sweep(): void {
    const top = this.#committedHeight;
    let named: Set<string> | null = null;
    for (const b of [...this.#batches.values()]) {
      if (b.expiresMax > top) continue;
      named ??= new Set([...this.#proposed.values()].flatMap((p) => p.digests));
      if (named.has(b.digest)) continue;
      this.#release(b.digest);
      this.#store.delete(b.digestBytes).catch(() => {});
    }
  }

  /** The digests (hex) a Node names; empty for a malformed command (never committed). */
  #digestsOf(node: Node): string[] {
    const decoded = decodeDigests(node.command, this.limits.nodeBatchesMax);
    return decoded.ok ? decoded.digests.map(toHex) : [];
  }
}

function expiredError(id: string, expires: number): MempoolError {
  return new MempoolError(
    "expired",
    `command ${id} was not committed by its expiry height ${expires}; it never will be`,
  );
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError("bad-option", `${name} must be a positive integer: ${value}`);
  }
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ConfigError("bad-option", `${name} must be an integer >= 0: ${value}`);
  }
  return value;
}
