/**
 * Client commands: the pool of commands each replica keeps until they are committed, and the
 * batching {@link Application} that turns a per-command state machine into Node commands.
 *
 * ## How a command travels
 *
 * 1. A client submits a command to any replica (`POST /commands`, see `replica.ts`). Its id is
 *    the SHA-256 of its bytes ({@link commandId}). The replica adds it to its pool and forwards
 *    it to every peer, which adds it to its own pool. Every pool dedupes by id and is bounded
 *    (`poolCommandsMax`, `poolBytesMax`); a full pool refuses with reason `pool-full`.
 * 2. A leader batches pool commands into its Node's command: the canonical CBOR array of the
 *    commands, at most `batchBytesMax` bytes and `batchCommandsMax` commands, skipping the ones
 *    already in an uncommitted ancestor of the Node it extends.
 * 3. Every replica validates the batch (deterministically, from the Node and the state view
 *    only): well formed, within the batch limits, no command twice in the batch, no command
 *    already committed or in an uncommitted ancestor (each command leaves the state key
 *    `"c/" + id` = CBOR `[height, nodeHash]`, so the state view sees it), and each command
 *    accepted by the {@link CommandMachine}.
 * 4. On commit, every pool drops the committed ids and answers the clients waiting for them.
 *
 * A command stays in every pool until it is committed, so the next leader proposes it again when
 * a leader fails: it is not lost, and the dedupe rule makes sure it is committed at most once.
 *
 * ## Batch limits are part of the protocol
 *
 * {@link BatchLimits} decide whether a Node is valid, so every replica must use the same ones
 * (like the validator set). The defaults keep one Node's state updates inside the Application
 * limits of the Engine and inside one Deno KV atomic operation.
 *
 * @module
 */
import type { Application, StateUpdate, StateView } from "./app.ts";
import { DEFAULT_APP_LIMITS } from "./app.ts";
import { decodeValue, encodeValue } from "./codec.ts";
import { sha256Bytes } from "./crypto.ts";
import { assert, ConfigError, HotStuffError } from "./errors.ts";
import type { Hash, Node } from "./types.ts";
import { toHex } from "./types.ts";

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
 * {@link Application.validateNode} apply to both hooks. State keys starting with `"c/"` are
 * reserved for command ids; a result that writes one is refused (`reserved-key`).
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
   * Most state updates of one batch (one per command for its id included). Default 500 (the
   * Engine's default `updatesMax` is 512). At most 990: a commit's updates and the Node's own
   * bookkeeping must fit one Deno KV atomic operation (1,000 mutations).
   */
  readonly batchUpdatesMax: number;
  /**
   * Largest sum over the batch's updates of `2 * key.length + 16` (a bound on their Deno KV
   * encoded key size). Default 64,000, which keeps a commit inside one Deno KV atomic operation.
   */
  readonly batchUpdateKeyBytesMax: number;
  /** Largest sum of keys and values of the batch's updates, bytes. Default 400 KiB. */
  readonly batchUpdateBytesMax: number;
  /** Largest state key a command may write, bytes. Default 512. */
  readonly updateKeyBytesMax: number;
  /** Largest state value a command may write, bytes. Default 60 KiB. */
  readonly updateValueBytesMax: number;
}

/**
 * The default {@link BatchLimits}. A larger `batchUpdatesMax` needs Engine `appLimits` with
 * `updatesMax` at least as large (the replica runtime passes them).
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
  batchUpdatesMax: 500,
  batchUpdateKeyBytesMax: 64_000,
  batchUpdateBytesMax: 400 * 1024,
  updateKeyBytesMax: 512,
  updateValueBytesMax: DEFAULT_APP_LIMITS.updateValueBytesMax,
};

/** Options of {@link Mempool}: batch limits and the pool's own limits. */
export interface MempoolOptions extends Partial<BatchLimits> {
  /** Most commands in the pool. Default 100,000. */
  readonly poolCommandsMax?: number;
  /** Most command bytes in the pool. Default 256 MiB. */
  readonly poolBytesMax?: number;
  /** Committed ids remembered in memory, to refuse late copies without a read. Default 100,000. */
  readonly recentCommittedMax?: number;
  /** Most clients waiting for commits at once. Default 100,000. */
  readonly waitersMax?: number;
  /** Uncommitted Nodes whose command ids are remembered, for the leader. Default 1024. */
  readonly proposedNodesMax?: number;
  /**
   * When a leader has nothing to propose and nothing waits to commit, it waits up to this long
   * for a command before proposing an empty batch (a command ends the wait at once), so an idle
   * cluster does not spin. Default 20 ms; 0 disables it.
   */
  readonly idleProposeDelayMs?: number;
  /** Reads the committed record of a command id (its `"c/"` key), for submissions. */
  readonly lookupCommitted?: (id: Uint8Array) => Promise<CommittedCommand | null>;
  /** Told about every committed batch (for metrics and logs). */
  readonly onCommitted?: (notice: { height: number; commands: number }) => void;
  /** Told about a pool command that the leader dropped because the machine refused it. */
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

/** What {@link Mempool.submit} did. */
export interface SubmitResult {
  /** The id of every submitted command, hex, in order. */
  readonly ids: string[];
  /** The commands that were new to the pool (to forward to the peers). */
  readonly added: Uint8Array[];
  /** Their ids, hex, in the same order. */
  readonly addedIds: string[];
  /** The commands among them already known to be committed, by index. */
  readonly committed: Map<number, CommittedCommand>;
}

/**
 * A refused submission or wait. Reasons: `bad-command`, `command-too-large`, `pool-full`,
 * `too-many-waiters`, `wait-timeout`, `command-rejected`, `closed`.
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

const encoder = new TextEncoder();
const ID_PREFIX = encoder.encode("c/");
const EMPTY_BATCH = encodeValue([]);
/** Deno KV's 1,000 mutations per atomic operation, less a commit's own bookkeeping. */
const BATCH_UPDATES_LIMIT = 990;
/** Pool commands looked up at once while a leader builds a batch. */
const CANDIDATE_WINDOW_MAX = 512;

/**
 * The id of a command: SHA-256 of its bytes.
 *
 * @example
 * ```ts
 * import { commandId } from "./mempool.ts";
 * commandId(new Uint8Array([1])).length; // 32
 * ```
 */
export function commandId(command: Uint8Array): Uint8Array {
  return sha256Bytes(command);
}

/**
 * The state key that records a committed (or pending) command: `"c/"` followed by the 32-byte id.
 *
 * @example
 * ```ts
 * import { commandId, commandIdKey } from "./mempool.ts";
 * commandIdKey(commandId(new Uint8Array([1]))).length; // 34
 * ```
 */
export function commandIdKey(id: Uint8Array): Uint8Array {
  const key = new Uint8Array(ID_PREFIX.length + id.length);
  key.set(ID_PREFIX);
  key.set(id, ID_PREFIX.length);
  return key;
}

/**
 * Decodes the value of a `"c/"` key (CBOR `[height, nodeHash]`), or null if malformed.
 *
 * @example
 * ```ts
 * import { decodeCommittedRecord } from "./mempool.ts";
 * decodeCommittedRecord("ab", new Uint8Array([0x80])); // null: not [height, hash]
 * ```
 */
export function decodeCommittedRecord(id: string, value: Uint8Array): CommittedCommand | null {
  let v: unknown;
  try {
    v = decodeValue(value);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 2) return null;
  const [height, hash] = v as unknown[];
  if (!Number.isSafeInteger(height) || !(hash instanceof Uint8Array) || hash.length !== 32) {
    return null;
  }
  return { id, height: height as number, node: toHex(hash) };
}

/**
 * Encodes commands as a batch: the canonical CBOR array of byte strings (a Node's command).
 *
 * @example
 * ```ts
 * import { decodeBatch, encodeBatch } from "./mempool.ts";
 * decodeBatch(encodeBatch([new Uint8Array([1])])); // { ok: true, commands: [Uint8Array [1]] }
 * ```
 */
export function encodeBatch(commands: readonly Uint8Array[]): Uint8Array {
  return commands.length === 0 ? EMPTY_BATCH : encodeValue(commands);
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
): { ok: true; commands: Uint8Array[] } | { ok: false; reason: string } {
  if (bytes.length > limits.batchBytesMax) {
    return { ok: false, reason: `batch of ${bytes.length} bytes exceeds ${limits.batchBytesMax}` };
  }
  let value: unknown;
  try {
    value = decodeValue(bytes);
  } catch (e) {
    return { ok: false, reason: `batch is not CBOR: ${(e as Error).message}` };
  }
  if (!Array.isArray(value)) return { ok: false, reason: "batch must be a CBOR array" };
  if (value.length > limits.batchCommandsMax) {
    return {
      ok: false,
      reason: `batch of ${value.length} commands exceeds ${limits.batchCommandsMax}`,
    };
  }
  for (const [i, c] of value.entries()) {
    if (!(c instanceof Uint8Array)) return { ok: false, reason: `command ${i} is not bytes` };
    if (c.length === 0) return { ok: false, reason: `command ${i} is empty` };
    if (c.length > limits.commandBytesMax) {
      return { ok: false, reason: `command ${i} of ${c.length} bytes is too large` };
    }
  }
  return { ok: true, commands: value as Uint8Array[] };
}

/** Size of a CBOR byte string of `n` bytes. */
function cborBytesSize(n: number): number {
  return n + (n < 24 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
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

  /** Whether one more command of this size fits the batch's size and count limits. */
  fitsCommand(command: Uint8Array): boolean {
    return this.#commands + 1 <= this.#limits.batchCommandsMax &&
      this.#bytes + cborBytesSize(command.length) <= this.#limits.batchBytesMax;
  }

  addCommand(command: Uint8Array): void {
    this.#commands++;
    this.#bytes += cborBytesSize(command.length);
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

/** True iff `key` starts with the reserved `"c/"` prefix. */
function isReservedKey(key: Uint8Array): boolean {
  return key.length >= ID_PREFIX.length && key[0] === ID_PREFIX[0] && key[1] === ID_PREFIX[1];
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

interface PoolEntry {
  readonly command: Uint8Array;
  readonly id: Uint8Array;
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

/**
 * One replica's pool of client commands, and the batching {@link Application} built on it
 * ({@link Mempool.application}).
 *
 * @example
 * ```ts
 * import { Mempool } from "./mempool.ts";
 * const pool = new Mempool({ apply: () => ({ ok: true, updates: [] }) });
 * const r = await pool.submit([new Uint8Array([1, 2, 3])]);
 * console.log(r.ids.length, pool.size); // 1 1
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
  readonly #recentMax: number;
  readonly #waitersMax: number;
  readonly #proposedMax: number;
  readonly #idleDelayMs: number;
  /** id hex -> command and id bytes, oldest first. */
  readonly #pool = new Map<string, PoolEntry>();
  #poolBytes = 0;
  /** id hex -> where it committed, oldest first, bounded. */
  readonly #recent = new Map<string, CommittedCommand>();
  readonly #waiters = new Map<string, Set<Waiter>>();
  #waiterCount = 0;
  /** Node hash hex -> its parent and command ids, for the Nodes this replica validated. */
  readonly #proposed = new Map<string, Proposed>();
  #wake: (() => void) | null = null;
  #closed = false;
  /** Commands committed since start. */
  committedCommands = 0;
  /** Height of the last commit seen (0 until one is seen, e.g. after a restart). */
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
    const limits: BatchLimits = {
      commandBytesMax: options.commandBytesMax ?? DEFAULT_BATCH_LIMITS.commandBytesMax,
      batchBytesMax: options.batchBytesMax ?? DEFAULT_BATCH_LIMITS.batchBytesMax,
      batchCommandsMax: options.batchCommandsMax ?? DEFAULT_BATCH_LIMITS.batchCommandsMax,
      batchUpdatesMax: options.batchUpdatesMax ?? DEFAULT_BATCH_LIMITS.batchUpdatesMax,
      batchUpdateKeyBytesMax: options.batchUpdateKeyBytesMax ??
        DEFAULT_BATCH_LIMITS.batchUpdateKeyBytesMax,
      batchUpdateBytesMax: options.batchUpdateBytesMax ?? DEFAULT_BATCH_LIMITS.batchUpdateBytesMax,
      updateKeyBytesMax: options.updateKeyBytesMax ?? DEFAULT_BATCH_LIMITS.updateKeyBytesMax,
      updateValueBytesMax: options.updateValueBytesMax ?? DEFAULT_BATCH_LIMITS.updateValueBytesMax,
    };
    for (const [name, value] of Object.entries(limits)) positive(name, value);
    if (limits.batchUpdatesMax > BATCH_UPDATES_LIMIT) {
      throw new ConfigError(
        "bad-option",
        `batchUpdatesMax must be at most ${BATCH_UPDATES_LIMIT}: ${limits.batchUpdatesMax}`,
      );
    }
    this.limits = limits;
    this.#poolCommandsMax = positive("poolCommandsMax", options.poolCommandsMax ?? 100_000);
    this.#poolBytesMax = positive("poolBytesMax", options.poolBytesMax ?? 256 * 1024 * 1024);
    this.#recentMax = positive("recentCommittedMax", options.recentCommittedMax ?? 100_000);
    this.#waitersMax = positive("waitersMax", options.waitersMax ?? 100_000);
    this.#proposedMax = positive("proposedNodesMax", options.proposedNodesMax ?? 1024);
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
   * Adds commands to the pool. All or nothing: a malformed or too large command, or too little
   * room for the new ones, refuses the whole submission. Commands already in the pool, or known
   * to be committed, are not added again (their ids are still returned).
   *
   * @param commands the commands, each 1 to `commandBytesMax` bytes
   * @param options `lookupCommitted`: also look each new command up in committed state (for
   *   client submissions; forwarded ones skip the read)
   * @throws {MempoolError} `bad-command`, `command-too-large`, `pool-full`, `closed`
   */
  async submit(
    commands: readonly Uint8Array[],
    options: { lookupCommitted?: boolean } = {},
  ): Promise<SubmitResult> {
    if (this.#closed) throw new MempoolError("closed", "the replica is shutting down");
    const idBytes = commands.map((c, i) => this.#checkCommand(c, i));
    const ids = idBytes.map(toHex);
    const committed = new Map<number, CommittedCommand>();
    const lookup = this.#o.lookupCommitted;
    if (options.lookupCommitted === true && lookup !== undefined) {
      const found = await Promise.all(ids.map((id, i) => {
        if (this.#pool.has(id) || this.#recent.has(id)) return null;
        return lookup(idBytes[i]!);
      }));
      for (const [i, f] of found.entries()) if (f !== null) committed.set(i, f);
    }
    return this.#add(commands, idBytes, ids, committed);
  }

  #checkCommand(command: Uint8Array, index: number): Uint8Array {
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
    return commandId(command);
  }

  #add(
    commands: readonly Uint8Array[],
    idBytes: readonly Uint8Array[],
    ids: string[],
    committed: Map<number, CommittedCommand>,
  ): SubmitResult {
    const fresh = new Map<string, PoolEntry>();
    for (const [i, id] of ids.entries()) {
      const recent = this.#recent.get(id);
      if (recent !== undefined) committed.set(i, recent);
      if (committed.has(i) || this.#pool.has(id)) continue;
      fresh.set(id, { command: commands[i]!, id: idBytes[i]! });
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
    for (const [id, c] of fresh) this.#pool.set(id, c);
    this.#poolBytes += bytes;
    if (fresh.size > 0) this.#wakeProducer();
    const added = [...fresh.values()].map((e) => e.command);
    return { ids, added, addedIds: [...fresh.keys()], committed };
  }

  /**
   * Resolves when the command with this id (hex) is committed.
   *
   * @param id command id, hex
   * @param options `timeoutMs` (default 30 s), `signal` to stop waiting
   * @throws {MempoolError} `wait-timeout`, `too-many-waiters`, `command-rejected`, `closed`
   */
  waitForCommit(
    id: string,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<CommittedCommand> {
    const recent = this.#recent.get(id);
    if (recent !== undefined) return Promise.resolve(recent);
    if (this.#closed) return Promise.reject(new MempoolError("closed", "shutting down"));
    if (this.#waiterCount >= this.#waitersMax) {
      return Promise.reject(
        new MempoolError("too-many-waiters", `${this.#waiterCount} clients already wait`),
      );
    }
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise<CommittedCommand>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        this.#removeWaiter(id, waiter);
      };
      const waiter: Waiter = {
        resolve: (c) => {
          done();
          resolve(c);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const onAbort = (): void => waiter.reject(new MempoolError("closed", "wait aborted"));
      const timer = setTimeout(() => {
        waiter.reject(
          new MempoolError("wait-timeout", `command ${id} not committed within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      let set = this.#waiters.get(id);
      if (set === undefined) this.#waiters.set(id, set = new Set());
      set.add(waiter);
      this.#waiterCount++;
    });
  }

  #removeWaiter(id: string, waiter: Waiter): void {
    const set = this.#waiters.get(id);
    if (set === undefined || !set.delete(waiter)) return;
    this.#waiterCount--;
    if (set.size === 0) this.#waiters.delete(id);
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

  // -------------------------------------------------------------------------------------------
  // Leader: produce a batch.

  async #produce(parent: Hash, height: number, state: StateView): Promise<{ command: Uint8Array }> {
    let batch = await this.#buildBatch(parent, height, state);
    if (batch.commands.length === 0 && batch.idle && this.#idleDelayMs > 0 && !this.#closed) {
      await this.#waitForCommands(this.#idleDelayMs);
      batch = await this.#buildBatch(parent, height, state);
    }
    return { command: encodeBatch(batch.commands) };
  }

  /** Pool commands (oldest first) that fit one batch on top of `parent`. */
  async #buildBatch(
    parent: Hash,
    height: number,
    state: StateView,
  ): Promise<{ commands: Uint8Array[]; idle: boolean }> {
    const pending = this.#pendingIds(toHex(parent));
    const budget = new BatchBudget(this.limits);
    const local = new Map<string, Uint8Array | null>();
    const view = overlay(state, local);
    const commands: Uint8Array[] = [];
    // Same size as the real record (the Node's hash is not known yet), so budgets agree.
    const record = encodeValue([height, new Uint8Array(32)]);
    let full = false;
    for (const window of this.#candidates(pending)) {
      // Committed, or in an ancestor this replica did not validate (it restarted): skip it.
      // One read per candidate, all at once: Deno KV reads are slow one by one.
      const known = await Promise.all(window.map((c) => state.get(c.idKey)));
      for (const [i, { id, command, idKey }] of window.entries()) {
        if (!this.#pool.has(id)) continue;
        if (known[i] !== null) {
          this.#settleKnown(id, known[i]!);
          continue;
        }
        if (!budget.fitsCommand(command)) {
          full = true;
          break;
        }
        const result = await this.#applyOne(command, view, height, { key: idKey, record });
        if (!result.ok) {
          this.#drop(id, result.reason);
          continue;
        }
        const problem = budget.addUpdates(result.updates);
        if (problem !== null) {
          if (commands.length === 0) this.#drop(id, `alone in a batch: ${problem}`);
          full = true;
          break;
        }
        budget.addCommand(command);
        commands.push(command);
        for (const [k, v] of result.updates) local.set(toHex(k), v);
      }
      if (full) break;
    }
    return { commands, idle: pending.size === 0 };
  }

  /** Pool commands not in `pending`, oldest first, in windows of `batchCommandsMax` at most. */
  *#candidates(
    pending: Set<string>,
  ): Generator<Array<{ id: string; command: Uint8Array; idKey: Uint8Array }>> {
    const windowMax = Math.min(this.limits.batchCommandsMax, CANDIDATE_WINDOW_MAX);
    let window: Array<{ id: string; command: Uint8Array; idKey: Uint8Array }> = [];
    // Map iteration tolerates the deletes and additions that happen while the caller awaits.
    for (const [id, entry] of this.#pool) {
      if (pending.has(id)) continue;
      window.push({ id, command: entry.command, idKey: commandIdKey(entry.id) });
      if (window.length >= windowMax) {
        yield window;
        window = [];
      }
    }
    if (window.length > 0) yield window;
  }

  /**
   * A pool command whose id record the state already holds: committed (then it leaves the pool
   * and its waiters get their answer) or in an ancestor this replica did not validate (it stays).
   * Copies forwarded after a restart, when the commit happened before, end here.
   */
  #settleKnown(id: string, value: Uint8Array): void {
    const record = decodeCommittedRecord(id, value);
    if (record === null || record.height > this.#committedHeight) return;
    this.#remove(id);
    this.#rememberCommitted(record);
    for (const w of [...(this.#waiters.get(id) ?? [])]) w.resolve(record);
  }

  /** Ids in the uncommitted ancestors of `parent` (inclusive) that this replica validated. */
  #pendingIds(parent: string): Set<string> {
    const out = new Set<string>();
    let cur = this.#proposed.get(parent);
    for (let steps = 0; cur !== undefined && steps <= this.#proposedMax; steps++) {
      for (const id of cur.ids) out.add(id);
      cur = this.#proposed.get(cur.parent);
    }
    return out;
  }

  /** A command refused by the machine leaves the pool; its waiters learn why. */
  #drop(id: string, reason: string): void {
    const entry = this.#pool.get(id);
    if (entry === undefined) return;
    this.#pool.delete(id);
    this.#poolBytes -= entry.command.length;
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

  /** The machine's updates for `command`, then its id record `[idKey, record]`. */
  async #applyOne(
    command: Uint8Array,
    state: StateView,
    height: number,
    id: { key: Uint8Array; record: Uint8Array },
  ): Promise<ApplyResult> {
    const { key: idKey, record } = id;
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
      if (isReservedKey(u[0])) return { ok: false, reason: "reserved-key: c/ is for command ids" };
    }
    // The id record rides with the command's own updates, so budgets count it.
    return { ok: true, updates: [...r.updates, [idKey, record]] };
  }

  async #validate(
    node: Node,
    hash: Hash,
    state: StateView,
  ): Promise<{ ok: true; updates: StateUpdate[] } | { ok: false; reason: string }> {
    const decoded = decodeBatch(node.command, this.limits);
    if (!decoded.ok) return decoded;
    const commands = decoded.commands;
    const idBytes = commands.map(commandId);
    const ids = idBytes.map(toHex);
    // Step 1: at most once: not twice in this batch, not committed, not in an ancestor.
    const unique = new Set(ids);
    if (unique.size !== ids.length) {
      const i = ids.findIndex((id, j) => ids.indexOf(id) !== j);
      return { ok: false, reason: `command ${i} repeats an earlier command of the batch` };
    }
    const idKeys = idBytes.map(commandIdKey);
    // One read per command, all at once: Deno KV reads are slow one by one.
    const known = await Promise.all(idKeys.map((k) => state.get(k)));
    const seen = known.findIndex((v) => v !== null);
    if (seen >= 0) {
      return {
        ok: false,
        reason: `command ${seen} (${ids[seen]}) is already committed or pending`,
      };
    }
    // Step 2: the machine accepts each command, and the batch stays within its limits.
    const record = encodeValue([node.height, hash]);
    const budget = new BatchBudget(this.limits);
    const local = new Map<string, Uint8Array | null>();
    const view = overlay(state, local);
    const updates = new Map<string, StateUpdate>();
    for (const [i, command] of commands.entries()) {
      const r = await this.#applyOne(command, view, node.height, { key: idKeys[i]!, record });
      if (!r.ok) return { ok: false, reason: `command ${i} rejected: ${r.reason}` };
      const problem = budget.addUpdates(r.updates);
      if (problem !== null) return { ok: false, reason: `batch over its limits: ${problem}` };
      budget.addCommand(command);
      for (const [k, v] of r.updates) {
        const key = toHex(k);
        local.set(key, v);
        updates.delete(key);
        updates.set(key, [k, v]);
      }
    }
    this.#remember(toHex(hash), { parent: toHex(node.parent), height: node.height, ids });
    return { ok: true, updates: [...updates.values()] };
  }

  #remember(hash: string, p: Proposed): void {
    if (this.#proposed.size >= this.#proposedMax && !this.#proposed.has(hash)) {
      const oldest = this.#proposed.keys().next().value!;
      this.#proposed.delete(oldest);
    }
    this.#proposed.set(hash, p);
  }

  // -------------------------------------------------------------------------------------------
  // Commit: drop committed ids, answer waiting clients.

  #onCommit(node: Node, hash: Hash): void {
    const nodeHex = toHex(hash);
    const ids = this.#proposed.get(nodeHex)?.ids ?? this.#idsOf(node);
    for (const id of ids) {
      const c: CommittedCommand = { id, height: node.height, node: nodeHex };
      this.#remove(id);
      this.#rememberCommitted(c);
      for (const w of [...(this.#waiters.get(id) ?? [])]) w.resolve(c);
    }
    this.committedCommands += ids.length;
    this.#committedHeight = Math.max(this.#committedHeight, node.height);
    for (const [h, p] of [...this.#proposed]) if (p.height <= node.height) this.#proposed.delete(h);
    this.#o.onCommitted?.({ height: node.height, commands: ids.length });
  }

  /** The command ids of a committed Node this replica did not validate (e.g. before a restart). */
  #idsOf(node: Node): string[] {
    const decoded = decodeBatch(node.command, this.limits);
    // Only validated batches commit, so this holds; stay quiet if it ever does not.
    if (!decoded.ok) return [];
    return decoded.commands.map((c) => toHex(commandId(c)));
  }

  #remove(id: string): void {
    const entry = this.#pool.get(id);
    if (entry === undefined) return;
    this.#pool.delete(id);
    this.#poolBytes -= entry.command.length;
    assert(this.#poolBytes >= 0, "pool bytes never go negative");
  }

  #rememberCommitted(c: CommittedCommand): void {
    this.#recent.delete(c.id);
    this.#recent.set(c.id, c);
    if (this.#recent.size > this.#recentMax) {
      this.#recent.delete(this.#recent.keys().next().value!);
    }
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError("bad-option", `${name} must be a positive integer: ${value}`);
  }
  return value;
}
