/**
 * Client commands: the pool of commands each replica keeps until they are committed, and the
 * batching {@link Application} that turns a per-command state machine into Node commands.
 *
 * ## How a command travels
 *
 * 1. A client submits a command to any replica (`POST /commands`, see `replica.ts`). The replica
 *    gives it an expiry height `expires` (the client may choose it) and its id is the SHA-256 of
 *    `expires` (8 bytes, big-endian) followed by the command ({@link commandId}). The replica
 *    adds it to its pool and forwards `[expires, command]` to every peer, which adds it to its
 *    own pool. Every pool dedupes by id and is bounded (`poolCommandsMax`, `poolBytesMax`); a
 *    full pool refuses with reason `pool-full`.
 * 2. A leader batches pool commands into its Node's command: the canonical CBOR array of
 *    `[expires, command]` entries, at most `batchBytesMax` bytes and `batchCommandsMax` entries,
 *    skipping the ones already in an uncommitted ancestor or committed recently.
 * 3. Every replica validates the batch (deterministically, from the Node and its ancestors
 *    only): well formed, within the batch limits, every entry live at the Node's height `h`
 *    (`h <= expires < h + commandHorizon`), no id twice in the batch, no id in an ancestor of
 *    the last `commandHorizon` heights, and each command accepted by the {@link CommandMachine}.
 * 4. On commit, every pool drops the committed ids and answers the clients waiting for them;
 *    commands whose `expires` is at or below the committed height can never commit any more, so
 *    they leave the pool and their clients get the definite answer `expired`.
 *
 * ## Why at most once needs no reads
 *
 * A command entry can only be in a Node of height `h` with `expires - commandHorizon < h <=
 * expires`. Two copies of one id have the same `expires`, so they would be less than
 * `commandHorizon` heights apart: the ids of the Node's ancestors of the last `commandHorizon`
 * heights decide "committed before?". Every replica keeps those ids in memory (committed ones by
 * height, uncommitted ones per validated Node), rebuilds them from its store on restart
 * ({@link Mempool.restore}), and never reads application state to dedupe. A client that resubmits
 * the same command with the same `expires` (after a lost answer) gets it committed at most once,
 * forever; after an `expired` answer it may safely submit it again with a new expiry.
 *
 * A command stays in every pool until it is committed or expires, so the next leader proposes
 * it again when a leader fails: it is not lost before its expiry.
 *
 * ## Batch limits are part of the protocol
 *
 * {@link BatchLimits} (the horizon included) decide whether a Node is valid, so every replica
 * must use the same ones (like the validator set). The replica runtime gives the Engine
 * Application limits at least as large as the batch limits.
 *
 * @module
 */
import type { Application, StateUpdate, StateView } from "./app.ts";
import { DEFAULT_APP_LIMITS } from "./app.ts";
import { cborArrayLength, decodeValue, encodeValue } from "./codec.ts";
import { sha256Bytes } from "./crypto.ts";
import { assert, ConfigError, HotStuffError } from "./errors.ts";
import type { Hash, Node } from "./types.ts";
import { bytesEqual, toHex } from "./types.ts";

/** Input of {@link CommandMachine.apply}. */
export interface ApplyRequest {
  /** The command bytes. */
  readonly command: Uint8Array;
  /** State as of the previous command of the batch (ancestors and earlier commands included). */
  readonly state: StateView;
  /** Height of the Node the command is in. */
  readonly height: number;
}

/** Output of {@link CommandMachine.apply}: the command's state updates, or a rejection. */
export type ApplyResult =
  | { readonly ok: true; readonly updates: readonly StateUpdate[] }
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
   * valid, or why it never is, so malformed commands never enter the pool. Optional; `apply`
   * must still refuse every invalid command itself (it is what runs on proposed batches).
   */
  check?(command: Uint8Array): string | null;
  /** Validates and executes one command against the state; must be deterministic. */
  apply(request: ApplyRequest): Promise<ApplyResult> | ApplyResult;
}

/** Limits on one Node's batch. Part of the protocol: every replica must use the same. */
export interface BatchLimits {
  /** Largest command, bytes. Default 64 KiB. */
  readonly commandBytesMax: number;
  /** Largest encoded batch (the Node's command), bytes. Default 256 KiB. */
  readonly batchBytesMax: number;
  /** Most commands in one batch. Default 4096. */
  readonly batchCommandsMax: number;
  /**
   * Most state updates of one batch. Default 4096. At most 65,536. The replica runtime raises
   * the Engine's `appLimits` to match the batch limits; storage splits a large commit over
   * several Deno KV atomic operations (SPECIFICATION.md 6.3).
   */
  readonly batchUpdatesMax: number;
  /**
   * Largest sum over the batch's updates of `2 * key.length + 16` (a bound on their Deno KV
   * encoded key size). Default 512 KiB.
   */
  readonly batchUpdateKeyBytesMax: number;
  /** Largest sum of keys and values of the batch's updates, bytes. Default 2 MiB. */
  readonly batchUpdateBytesMax: number;
  /** Largest state key a command may write, bytes. Default 512. */
  readonly updateKeyBytesMax: number;
  /** Largest state value a command may write, bytes. Default 60 KiB. */
  readonly updateValueBytesMax: number;
  /**
   * How many heights a command stays live: a Node of height `h` may hold a command only if
   * `h <= expires < h + commandHorizon`. Replicas keep the ids committed in the last
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
 * DEFAULT_BATCH_LIMITS.batchBytesMax; // 262144
 * ```
 */
export const DEFAULT_BATCH_LIMITS: BatchLimits = {
  commandBytesMax: 64 * 1024,
  batchBytesMax: 256 * 1024,
  batchCommandsMax: 4096,
  batchUpdatesMax: 4096,
  batchUpdateKeyBytesMax: 512 * 1024,
  batchUpdateBytesMax: 2 * 1024 * 1024,
  updateKeyBytesMax: 512,
  updateValueBytesMax: DEFAULT_APP_LIMITS.updateValueBytesMax,
  commandHorizon: 1024,
};

/** Options of {@link Mempool}: batch limits and the pool's own limits. */
export interface MempoolOptions extends Partial<BatchLimits> {
  /** Most commands in the pool. Default 100,000. */
  readonly poolCommandsMax?: number;
  /** Most command bytes in the pool. Default 256 MiB. */
  readonly poolBytesMax?: number;
  /** Most clients waiting for commits at once. Default 100,000. */
  readonly waitersMax?: number;
  /**
   * Uncommitted Nodes whose command ids are remembered. Default 8192 (the core's
   * `treeNodesMax`): every Node of the NodeTree must be remembered, or Nodes built on one that
   * was forgotten are refused (`ancestors-unknown`) until it commits.
   */
  readonly proposedNodesMax?: number;
  /**
   * When a leader has nothing to propose and nothing waits to commit, it waits up to this long
   * for a command before proposing an empty batch (a command ends the wait at once), so an idle
   * cluster does not spin. Default 20 ms; 0 disables it.
   */
  readonly idleProposeDelayMs?: number;
  /** Told about every committed batch (for metrics and logs). */
  readonly onCommitted?: (notice: { height: number; commands: number }) => void;
  /** Told about a pool command that left the pool uncommitted: refused by the machine, expired. */
  readonly onDropped?: (id: string, reason: string) => void;
}

/** Where a command was committed. */
export interface CommittedCommand {
  /** The command id, hex. */
  readonly id: string;
  /** Height of the Node that committed it. */
  readonly height: number;
  /** Hash of that Node, hex. */
  readonly node: string;
}

/** A command with its expiry height: one entry of a batch, and what replicas forward. */
export interface PoolCommand {
  /** The command bytes. */
  readonly command: Uint8Array;
  /** The last height at which it may be committed. */
  readonly expires: number;
}

/** What {@link Mempool.submit} did. */
export interface SubmitResult {
  /** The id of every submitted command, hex, in order. */
  readonly ids: string[];
  /** The expiry height the commands were given. */
  readonly expires: number;
  /** The commands that were new to the pool (to forward to the peers). */
  readonly added: PoolCommand[];
  /** The commands among them already known to be committed, by index. */
  readonly committed: Map<number, CommittedCommand>;
}

/** What a replica's store holds that the pool must know after a restart: see {@link Mempool.restore}. */
export interface MempoolRestore {
  /** The committed Nodes of the last `commandHorizon` heights (or fewer), any order. */
  readonly committed: ReadonlyArray<{ readonly node: Node; readonly hash: Hash }>;
  /** The committed height (0 on a new chain). */
  readonly committedHeight: number;
  /** The stored uncommitted Nodes. */
  readonly uncommitted: ReadonlyArray<{ readonly node: Node; readonly hash: Hash }>;
}

/**
 * A refused submission or wait. Reasons: `bad-command`, `command-too-large`, `bad-expiry`,
 * `pool-full`, `too-many-waiters`, `wait-timeout`, `command-rejected`, `expired`, `closed`.
 *
 * @example
 * ```ts
 * import { MempoolError } from "./mempool.ts";
 * const e = new MempoolError("pool-full", "the pool holds 100000 commands");
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

const EMPTY_BATCH = encodeValue([]);
/** A sanity bound on `batchUpdatesMax`. */
const BATCH_UPDATES_LIMIT = 65_536;
/** Largest expiry height: a CBOR unsigned integer that is a safe integer. */
const EXPIRES_MAX = Number.MAX_SAFE_INTEGER;

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
  const bytes = new Uint8Array(8 + command.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(expires));
  bytes.set(command, 8);
  return sha256Bytes(bytes);
}

/**
 * Encodes commands as a batch: the canonical CBOR array of `[expires, command]` (a Node's
 * command).
 *
 * @example
 * ```ts
 * import { decodeBatch, encodeBatch } from "./mempool.ts";
 * decodeBatch(encodeBatch([{ command: new Uint8Array([1]), expires: 9 }]));
 * // { ok: true, entries: [{ command: Uint8Array [1], expires: 9 }] }
 * ```
 */
export function encodeBatch(entries: readonly PoolCommand[]): Uint8Array {
  return entries.length === 0 ? EMPTY_BATCH : encodeValue(entries.map(entryValue));
}

/**
 * Encodes commands for forwarding (`POST /mempool`): the same CBOR array as a batch.
 *
 * @example
 * ```ts
 * import { encodeEntries } from "./mempool.ts";
 * encodeEntries([{ command: new Uint8Array([1]), expires: 9 }]).length; // 5
 * ```
 */
export function encodeEntries(entries: readonly PoolCommand[]): Uint8Array {
  return encodeValue(entries.map(entryValue));
}

function entryValue(e: PoolCommand): [number, Uint8Array] {
  return [e.expires, e.command];
}

/**
 * Decodes a batch, checking its shape and the limits (command count and sizes, batch size).
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
 * Decodes a CBOR array of `[expires, command]` entries (a batch, or a forwarded body) of at most
 * `countMax` entries of 1 to `commandBytesMax` bytes each; never throws.
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

/** Size of a CBOR byte string of `n` bytes, or of the head of an unsigned integer `n`. */
function cborHeadSize(n: number): number {
  return n < 24 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : n < 2 ** 32 ? 5 : 9;
}

/** Encoded size of one batch entry `[expires, command]`. */
function entrySize(e: PoolCommand): number {
  return 1 + cborHeadSize(e.expires) + cborHeadSize(e.command.length) + e.command.length;
}

/** The running totals of one batch, checked against {@link BatchLimits}. */
class BatchBudget {
  readonly #limits: BatchLimits;
  /** Worst-case array header. */
  #bytes = 5;
  #commands = 0;
  #updates = 0;
  #keyBytes = 0;
  #updateBytes = 0;

  constructor(limits: BatchLimits) {
    this.#limits = limits;
  }

  /** Whether one more entry fits the batch's size and count limits. */
  fitsEntry(entry: PoolCommand): boolean {
    return this.#commands + 1 <= this.#limits.batchCommandsMax &&
      this.#bytes + entrySize(entry) <= this.#limits.batchBytesMax;
  }

  addEntry(entry: PoolCommand): void {
    this.#commands++;
    this.#bytes += entrySize(entry);
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

interface PoolEntry extends PoolCommand {
  readonly id: string;
  /** Its {@link entryKey}, or null for a long command. */
  readonly key: string | null;
}

/** Commands up to this size have their pool ids found by their bytes, without hashing. */
const ID_BY_BYTES_MAX = 256;

/**
 * The exact expiry and bytes of a short entry as a string (one char per byte), or null for a long
 * one: a Map key that finds a pool entry's id without computing SHA-256 again.
 */
function entryKey(e: PoolCommand): string | null {
  if (e.command.length > ID_BY_BYTES_MAX) return null;
  return `${e.expires}:${String.fromCharCode.apply(null, e.command as unknown as number[])}`;
}

interface Waiter {
  readonly resolve: (c: CommittedCommand) => void;
  readonly reject: (e: MempoolError) => void;
}

interface Proposed {
  readonly parent: string;
  readonly height: number;
  readonly ids: readonly string[];
}

/** The command ids a committed Node holds. */
interface CommittedAt {
  readonly node: string;
  readonly ids: readonly string[];
}

/**
 * One replica's pool of client commands, and the batching {@link Application} built on it
 * ({@link Mempool.application}).
 *
 * @example
 * ```ts
 * import { Mempool } from "./mempool.ts";
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) });
 * const r = pool.submit([new Uint8Array([1, 2, 3])]);
 * console.log(r.ids.length, r.expires, pool.size); // 1 1024 1
 * // pool.application is the Application to give the Engine.
 * pool.close();
 * ```
 */
export class Mempool {
  /** The batch limits in force. */
  readonly limits: BatchLimits;
  readonly #machine: CommandMachine;
  readonly #o: MempoolOptions;
  readonly #poolCommandsMax: number;
  readonly #poolBytesMax: number;
  readonly #waitersMax: number;
  readonly #proposedMax: number;
  readonly #idleDelayMs: number;
  /** id hex -> command and expiry, oldest first. */
  readonly #pool = new Map<string, PoolEntry>();
  /** {@link entryKey} -> id hex, for the short commands of the pool. */
  readonly #idsByKey = new Map<string, string>();
  #poolBytes = 0;
  /** Expiry height -> ids in the pool or waited for with that expiry (swept on commit). */
  readonly #expiring = new Map<number, Set<string>>();
  /** Committed height -> its Node and ids, for the last `commandHorizon` heights, ascending. */
  readonly #committed = new Map<number, CommittedAt>();
  /** id hex -> committed height, for every id of {@link Mempool.#committed}. */
  readonly #committedIds = new Map<string, number>();
  readonly #waiters = new Map<string, Set<Waiter>>();
  #waiterCount = 0;
  /** The batch this replica built last, with its updates, until it validates it. */
  #produced:
    | { parent: string; height: number; command: Uint8Array; updates: StateUpdate[] }
    | null = null;
  /** Node hash hex -> its parent and command ids, for uncommitted Nodes validated or restored. */
  readonly #proposed = new Map<string, Proposed>();
  #wake: (() => void) | null = null;
  #closed = false;
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
    this.#poolCommandsMax = positive("poolCommandsMax", options.poolCommandsMax ?? 100_000);
    this.#poolBytesMax = positive("poolBytesMax", options.poolBytesMax ?? 256 * 1024 * 1024);
    this.#waitersMax = positive("waitersMax", options.waitersMax ?? 100_000);
    this.#proposedMax = positive("proposedNodesMax", options.proposedNodesMax ?? 8192);
    this.#idleDelayMs = options.idleProposeDelayMs ?? 20;
    if (!Number.isSafeInteger(this.#idleDelayMs) || this.#idleDelayMs < 0) {
      throw new ConfigError("bad-option", `idleProposeDelayMs must be >= 0: ${this.#idleDelayMs}`);
    }
  }

  /** Commands in the pool. */
  get size(): number {
    return this.#pool.size;
  }

  /** Command bytes in the pool. */
  get bytes(): number {
    return this.#poolBytes;
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

  /** True iff the command with this id (hex) is in the pool. */
  has(id: string): boolean {
    return this.#pool.has(id);
  }

  /** The Application to give the Engine: batches pool commands and validates batches. */
  get application(): Application {
    return {
      produceCommand: (r) => this.#produce(r.parent, r.height, r.state),
      validateNode: (r) => this.#validate(r.node, r.hash, r.state),
      onCommit: (r) => this.#onCommit(r.node, r.hash),
    };
  }

  /**
   * Tells a new pool what the replica's store holds, before the Engine starts: the committed
   * height, the Nodes of the last `commandHorizon` committed heights (their ids decide "already
   * committed?") and the uncommitted Nodes (their ids are pending). Without it, after a restart,
   * Nodes built on restored uncommitted Nodes are refused (`ancestors-unknown`) until those
   * commit, and late copies of commands committed before the restart are not recognised.
   *
   * @param restored what the store holds
   */
  restore(restored: MempoolRestore): void {
    const top = restored.committedHeight;
    this.#committedHeight = Math.max(this.#committedHeight, top);
    const committed = [...restored.committed]
      .filter((c) => c.node.height <= top && c.node.height > top - this.limits.commandHorizon)
      .sort((a, b) => a.node.height - b.node.height);
    for (const c of committed) {
      this.#addCommitted(c.node.height, toHex(c.hash), this.#idsOf(c.node));
    }
    for (const u of restored.uncommitted) {
      if (u.node.height <= top) continue;
      const ids = this.#idsOf(u.node);
      this.#remember(toHex(u.hash), { parent: toHex(u.node.parent), height: u.node.height, ids });
    }
  }

  /**
   * Adds client commands to the pool, all with one expiry height. All or nothing: a malformed
   * or too large command, a bad expiry, or too little room for the new ones refuses the whole
   * submission. Commands already in the pool, or known to be committed, are not added again
   * (their ids are still returned).
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
    const entries = commands.map((command, i) => {
      this.#checkCommand(command, i);
      return { command, expires };
    });
    const { ids, added, committed } = this.#add(entries);
    return { ids, expires, added, committed };
  }

  /**
   * Adds commands forwarded by a peer (`POST /mempool`). Entries whose expiry this replica has
   * passed are skipped; one too far ahead (more than two horizons above the committed height) or
   * malformed refuses the whole call.
   *
   * @param entries the forwarded `[expires, command]` entries
   * @returns how many were new to the pool
   * @throws {MempoolError} `bad-command`, `command-too-large`, `bad-expiry`, `pool-full`, `closed`
   */
  addForwarded(entries: readonly PoolCommand[]): number {
    if (this.#closed) throw new MempoolError("closed", "the replica is shutting down");
    const top = this.#committedHeight;
    const live: PoolCommand[] = [];
    for (const [i, e] of entries.entries()) {
      this.#checkCommand(e.command, i);
      if (e.expires > top + 2 * this.limits.commandHorizon) {
        throw new MempoolError(
          "bad-expiry",
          `entry ${i} expires at ${e.expires}, too far above the committed height ${top}`,
        );
      }
      if (e.expires > top) live.push(e);
    }
    return this.#add(live).added.length;
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

  #add(entries: readonly PoolCommand[]): {
    ids: string[];
    added: PoolCommand[];
    committed: Map<number, CommittedCommand>;
  } {
    const keys = entries.map(entryKey);
    const ids = entries.map((e, i) => this.#idOf(e, keys[i]!));
    const committed = new Map<number, CommittedCommand>();
    const fresh = new Map<string, PoolEntry>();
    for (const [i, id] of ids.entries()) {
      const known = this.#committedAs(id);
      if (known !== null) committed.set(i, known);
      else if (!this.#pool.has(id)) fresh.set(id, { ...entries[i]!, id, key: keys[i]! });
    }
    let bytes = 0;
    for (const e of fresh.values()) bytes += e.command.length;
    if (this.#pool.size + fresh.size > this.#poolCommandsMax) {
      throw new MempoolError(
        "pool-full",
        `the pool holds ${this.#pool.size} of at most ${this.#poolCommandsMax} commands; ` +
          `${fresh.size} more do not fit, retry later`,
      );
    }
    if (this.#poolBytes + bytes > this.#poolBytesMax) {
      throw new MempoolError(
        "pool-full",
        `the pool holds ${this.#poolBytes} of at most ${this.#poolBytesMax} bytes; ` +
          `${bytes} more do not fit, retry later`,
      );
    }
    for (const [id, e] of fresh) {
      this.#pool.set(id, e);
      if (e.key !== null) this.#idsByKey.set(e.key, id);
      this.#index(id, e.expires);
    }
    this.#poolBytes += bytes;
    if (fresh.size > 0) this.#wakeProducer();
    const added = [...fresh.values()].map((e) => ({ command: e.command, expires: e.expires }));
    return { ids, added, committed };
  }

  /** The hex id of an entry: found by its bytes if it is in the pool, else computed. */
  #idOf(e: PoolCommand, key: string | null = entryKey(e)): string {
    const known = key === null ? undefined : this.#idsByKey.get(key);
    return known ?? toHex(commandId(e.command, e.expires));
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
    if (!this.#pool.has(id)) this.#unindex(id, expires);
  }

  /** Refuses further submissions and fails every waiting client with `closed`. Idempotent. */
  close(): void {
    this.#closed = true;
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
  // Leader: produce a batch.

  async #produce(parent: Hash, height: number, state: StateView): Promise<{ command: Uint8Array }> {
    let batch = await this.#buildBatch(parent, height, state);
    if (batch.entries.length === 0 && batch.idle && this.#idleDelayMs > 0 && !this.#closed) {
      await this.#waitForCommands(this.#idleDelayMs);
      batch = await this.#buildBatch(parent, height, state);
    }
    const command = encodeBatch(batch.entries);
    this.#produced = { parent: toHex(parent), height, command, updates: batch.updates };
    return { command };
  }

  /** Pool commands (oldest first) live at `height` that fit one batch on top of `parent`. */
  async #buildBatch(
    parent: Hash,
    height: number,
    state: StateView,
  ): Promise<{ entries: PoolCommand[]; idle: boolean; updates: StateUpdate[] }> {
    const pending = this.#ancestorIds(toHex(parent), height);
    // An ancestor this replica never validated: it cannot tell which commands it holds.
    if (pending === null) return { entries: [], idle: false, updates: [] };
    const budget = new BatchBudget(this.limits);
    const local = new Map<string, Uint8Array | null>();
    const updates = new Map<string, StateUpdate>();
    const view = overlay(state, local);
    const entries: PoolCommand[] = [];
    const horizon = this.limits.commandHorizon;
    // Map iteration tolerates the deletes and additions that happen while apply is awaited.
    for (const e of this.#pool.values()) {
      if (pending.has(e.id) || this.#committedIds.has(e.id)) continue;
      if (e.expires < height || e.expires >= height + horizon) continue;
      if (!budget.fitsEntry(e)) break;
      const result = await this.#applyOne(e.command, view, height);
      if (!result.ok) {
        this.#drop(e.id, result.reason);
        continue;
      }
      const problem = budget.addUpdates(result.updates);
      if (problem !== null) {
        if (entries.length === 0) this.#drop(e.id, `alone in a batch: ${problem}`);
        break;
      }
      budget.addEntry(e);
      entries.push({ command: e.command, expires: e.expires });
      addUpdates(local, updates, result.updates);
    }
    return { entries, idle: pending.size === 0, updates: [...updates.values()] };
  }

  /**
   * Ids in the uncommitted ancestors of a Node of height `height` whose parent is `parent`, or
   * null when one of them is not known here (then nothing can be decided about its commands).
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

  /** A command refused by the machine leaves the pool; its waiters learn why. */
  #drop(id: string, reason: string): void {
    const entry = this.#pool.get(id);
    if (entry === undefined) return;
    this.#remove(id);
    this.#o.onDropped?.(id, reason);
    for (const w of [...(this.#waiters.get(id) ?? [])]) {
      w.reject(new MempoolError("command-rejected", `command ${id} was rejected: ${reason}`));
    }
  }

  #waitForCommands(ms: number): Promise<void> {
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
  // Every replica: validate a batch (deterministic).

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

  async #validate(
    node: Node,
    hash: Hash,
    state: StateView,
  ): Promise<{ ok: true; updates: StateUpdate[] } | { ok: false; reason: string }> {
    const decoded = decodeBatch(node.command, this.limits);
    if (!decoded.ok) return decoded;
    const entries = decoded.entries;
    const h = node.height;
    const horizon = this.limits.commandHorizon;
    // Step 1: every command is live at this height.
    for (const [i, e] of entries.entries()) {
      if (e.expires < h || e.expires >= h + horizon) {
        return {
          ok: false,
          reason: `command ${i} expires at ${e.expires}, outside [${h}, ${h + horizon - 1}]`,
        };
      }
    }
    // Step 2: at most once: not twice in this batch, not in an ancestor of the horizon.
    const ids = entries.map((e) => this.#idOf(e));
    const unique = new Set(ids);
    if (unique.size !== ids.length) {
      const i = ids.findIndex((id, j) => ids.indexOf(id) !== j);
      return { ok: false, reason: `command ${i} repeats an earlier command of the batch` };
    }
    const pending = this.#ancestorIds(toHex(node.parent), h);
    if (pending === null) {
      return { ok: false, reason: "ancestors-unknown: an uncommitted ancestor was not validated" };
    }
    const seen = ids.findIndex((id) => pending.has(id) || this.#committedIds.has(id));
    if (seen >= 0) {
      return {
        ok: false,
        reason: `command ${seen} (${ids[seen]}) is already committed or pending`,
      };
    }
    // Step 3: the machine accepts each command, and the batch stays within its limits. The
    // leader validating the batch it just built on the same parent knows the outcome: building it
    // ran these very steps (the same commands in order, on the same state, within the same
    // limits) and kept only commands that passed.
    const parentHex = toHex(node.parent);
    const own = this.#produced;
    this.#produced = null;
    let result: StateUpdate[];
    if (
      own !== null && own.parent === parentHex && own.height === h &&
      bytesEqual(own.command, node.command)
    ) {
      result = own.updates;
    } else {
      const budget = new BatchBudget(this.limits);
      const local = new Map<string, Uint8Array | null>();
      const view = overlay(state, local);
      const updates = new Map<string, StateUpdate>();
      for (const [i, e] of entries.entries()) {
        const r = await this.#applyOne(e.command, view, h);
        if (!r.ok) return { ok: false, reason: `command ${i} rejected: ${r.reason}` };
        const problem = budget.addUpdates(r.updates);
        if (problem !== null) return { ok: false, reason: `batch over its limits: ${problem}` };
        budget.addEntry(e);
        addUpdates(local, updates, r.updates);
      }
      result = [...updates.values()];
    }
    this.#remember(toHex(hash), { parent: parentHex, height: h, ids });
    return { ok: true, updates: result };
  }

  #remember(hash: string, p: Proposed): void {
    if (this.#proposed.size >= this.#proposedMax && !this.#proposed.has(hash)) {
      const oldest = this.#proposed.keys().next().value!;
      this.#proposed.delete(oldest);
    }
    this.#proposed.set(hash, p);
  }

  // -------------------------------------------------------------------------------------------
  // Commit: remember committed ids, answer waiting clients, expire what can no longer commit.

  #onCommit(node: Node, hash: Hash): void {
    const nodeHex = toHex(hash);
    const h = node.height;
    const ids = this.#proposed.get(nodeHex)?.ids ?? this.#idsOf(node);
    this.#addCommitted(h, nodeHex, ids);
    for (const id of ids) {
      const c: CommittedCommand = { id, height: h, node: nodeHex };
      this.#remove(id);
      for (const w of [...(this.#waiters.get(id) ?? [])]) w.resolve(c);
    }
    this.committedCommands += ids.length;
    const before = this.#committedHeight;
    this.#committedHeight = Math.max(before, h);
    for (let e = before + 1; e <= this.#committedHeight; e++) this.#expire(e);
    for (const [key, p] of this.#proposed) if (p.height <= h) this.#proposed.delete(key);
    this.#o.onCommitted?.({ height: h, commands: ids.length });
  }

  /** Remembers a committed Node's ids and forgets those older than the horizon. */
  #addCommitted(height: number, node: string, ids: readonly string[]): void {
    this.#committed.set(height, { node, ids });
    for (const id of ids) this.#committedIds.set(id, height);
    for (const [old, at] of this.#committed) {
      if (old > height - this.limits.commandHorizon) break;
      this.#committed.delete(old);
      for (const id of at.ids) {
        if (this.#committedIds.get(id) === old) this.#committedIds.delete(id);
      }
    }
  }

  /** Commands that expire at `height` (now committed) can never commit: they leave. */
  #expire(height: number): void {
    const set = this.#expiring.get(height);
    if (set === undefined) return;
    this.#expiring.delete(height);
    for (const id of set) {
      if (this.#pool.has(id)) {
        this.#remove(id);
        this.#o.onDropped?.(id, "expired");
      }
      for (const w of [...(this.#waiters.get(id) ?? [])]) w.reject(expiredError(id, height));
    }
  }

  /** The command ids of a committed Node this replica did not validate (e.g. before a restart). */
  #idsOf(node: Node): string[] {
    const decoded = decodeBatch(node.command, this.limits);
    // Only validated batches commit, so this holds; stay quiet if it ever does not.
    if (!decoded.ok) return [];
    return decoded.entries.map((e) => this.#idOf(e));
  }

  #remove(id: string): void {
    const entry = this.#pool.get(id);
    if (entry === undefined) return;
    this.#pool.delete(id);
    if (entry.key !== null) this.#idsByKey.delete(entry.key);
    this.#poolBytes -= entry.command.length;
    if (!this.#waiters.has(id)) this.#unindex(id, entry.expires);
    assert(this.#poolBytes >= 0, "pool bytes never go negative");
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
