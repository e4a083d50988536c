/**
 * The Application: the user's state machine, behind three typed hooks (and optional ones:
 * `stateRoot`, the state root each Node commits to, and `onEvidence`, for evidence of
 * equivocation). See SPECIFICATION.md section 7.
 *
 * ## Determinism rules
 *
 * Every honest replica must compute the same result for the same Node, so `validateNode` must be
 * a pure function of `(node, state)`: no clocks, no randomness, no I/O other than `state.get`,
 * and no dependence on which replica runs it. `produceCommand` runs only on the leader and may
 * use anything (a mempool, the clock), because its output is checked by every replica through
 * `validateNode`.
 *
 * @module
 */
import type { EquivocationEvidence } from "./events.ts";
import type { Hash, Node, PublicKey } from "./types.ts";
import type { StateUpdate } from "./storage/storage.ts";
import type { ValidatorUpdate } from "./consensus/reconfig.ts";
import { isReservedKey, VALIDATOR_UPDATES_MAX } from "./consensus/reconfig.ts";

export type { StateUpdate } from "./storage/storage.ts";

/**
 * Read access to application state as of a Node's parent: committed state overlaid with the
 * pending updates of every uncommitted ancestor (newest wins). Lets the app execute
 * speculatively before commit.
 *
 * @example
 * ```ts
 * import type { StateView } from "./app.ts";
 * const empty: StateView = { get: () => Promise.resolve(null) };
 * console.log(await empty.get(new Uint8Array([1]))); // null
 * ```
 */
export interface StateView {
  /** The value of `key`, or null if absent. */
  get(key: Uint8Array): Promise<Uint8Array | null>;
}

/**
 * Input of {@link Application.produceCommand}.
 *
 * @example
 * ```ts
 * import type { ProduceRequest, ProduceResult } from "./app.ts";
 * function produce({ height }: ProduceRequest): ProduceResult {
 *   return { command: new TextEncoder().encode(`node ${height}`) };
 * }
 * ```
 */
export interface ProduceRequest {
  /** The view being proposed in. */
  readonly view: number;
  /** Height of the new Node. */
  readonly height: number;
  /** Hash of the parent the new Node extends. */
  readonly parent: Hash;
  /** State as of the parent. */
  readonly state: StateView;
}

/**
 * Output of {@link Application.produceCommand}.
 *
 * @example
 * ```ts
 * import type { ProduceResult } from "./app.ts";
 * const empty: ProduceResult = { command: new Uint8Array() };
 * ```
 */
export interface ProduceResult {
  /** The command bytes of the new Node (may be empty). */
  readonly command: Uint8Array;
}

/**
 * Input of {@link Application.validateNode}.
 *
 * @example
 * ```ts
 * import type { ValidateRequest, ValidateResult } from "./app.ts";
 * function validate({ node }: ValidateRequest): ValidateResult {
 *   return node.command.length <= 100 ? { ok: true, updates: [] } : { ok: false, reason: "too long" };
 * }
 * ```
 */
export interface ValidateRequest {
  /** The proposed Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
  /** State as of `node.parent`. */
  readonly state: StateView;
}

/**
 * Output of {@link Application.validateNode}: the Node's state updates, or a rejection.
 * `validatorUpdates` changes the validator set (SPECIFICATION.md 3.4): new powers by key, 0
 * removes. Only one change is handed over at a time: while one is in progress (see
 * `readValidatorConfig`), a Node that returns another is rejected, so an Application should
 * defer or refuse the request that asks for it.
 *
 * @example
 * ```ts
 * import type { ValidateResult } from "./app.ts";
 * const accept: ValidateResult = { ok: true, updates: [[new TextEncoder().encode("k"), null]] };
 * const reject: ValidateResult = { ok: false, reason: "unknown operation" };
 * ```
 */
export type ValidateResult =
  | {
    readonly ok: true;
    readonly updates: readonly StateUpdate[];
    readonly validatorUpdates?: readonly ValidatorUpdate[];
  }
  | { readonly ok: false; readonly reason: string };

/**
 * Input of {@link Application.onCommit}.
 *
 * @example
 * ```ts
 * import type { CommitNotice } from "./app.ts";
 * function onCommit({ node, updates }: CommitNotice): void {
 *   console.log(`height ${node.height}: ${updates.length} updates durable`);
 * }
 * ```
 */
export interface CommitNotice {
  /** The committed Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
  /** The updates that became durable with it. */
  readonly updates: readonly StateUpdate[];
}

/**
 * One Node whose updates are not in the Application's committed state yet (or may not be): an
 * entry of {@link StateRootRequest.pending}.
 *
 * @example
 * ```ts
 * import type { PendingNode } from "./app.ts";
 * const layer: PendingNode = { hash: new Uint8Array(32), height: 7, updates: [] };
 * ```
 */
export interface PendingNode {
  /** The Node's hash. */
  readonly hash: Hash;
  /** Its height. */
  readonly height: number;
  /** Its state updates (each sets or deletes a whole value). */
  readonly updates: readonly StateUpdate[];
}

/**
 * Input of {@link Application.stateRoot}: the state whose root is asked for is the state after
 * executing `parent`, that is the Application's committed state with `pending` applied in order.
 *
 * `pending` starts at or before the first Node whose `onCommit` has not returned, so it may repeat
 * Nodes whose updates the committed state already holds; every update sets or deletes a whole
 * value, so applying such a prefix again changes nothing. It ends with `parent`, unless the parent
 * is itself committed and delivered (then it is empty or repeats delivered Nodes only).
 *
 * @example
 * ```ts
 * import type { StateRootRequest } from "./app.ts";
 * const request: StateRootRequest = { parent: new Uint8Array(32), height: 0, pending: [] };
 * ```
 */
export interface StateRootRequest {
  /** The Node whose resulting state is asked for: the parent of a Node being proposed or checked. */
  readonly parent: Hash;
  /** The parent's height. */
  readonly height: number;
  /** The Nodes between the committed state and `parent` (inclusive), oldest first. */
  readonly pending: readonly PendingNode[];
}

/**
 * Input of {@link Application.onEvidence}.
 *
 * @example
 * ```ts
 * import type { EvidenceNotice } from "./app.ts";
 * function onEvidence({ evidence, view }: EvidenceNotice): void {
 *   console.log(`${evidence.kind} in view ${view}`); // submit a command to act on it
 * }
 * ```
 */
export interface EvidenceNotice {
  /** The two conflicting signed messages (check them anywhere with `verifyEvidence`). */
  readonly evidence: EquivocationEvidence;
  /** The validator that signed both. */
  readonly offender: PublicKey;
  /** The view of both. */
  readonly view: number;
}

/**
 * The hooks a replicated application implements. Hooks may be async.
 *
 * @example
 * ```ts
 * import type { Application } from "./app.ts";
 * const counter: Application = {
 *   produceCommand: () => ({ command: new Uint8Array([1]) }),
 *   async validateNode({ node, state }) {
 *     if (node.command.length !== 1) return { ok: false, reason: "one byte please" };
 *     const key = new TextEncoder().encode("count");
 *     const old = await state.get(key);
 *     const next = (old?.[0] ?? 0) + node.command[0]!;
 *     return { ok: true, updates: [[key, new Uint8Array([next % 256])]] };
 *   },
 *   onCommit: ({ node }) => console.log("committed height", node.height),
 * };
 * ```
 */
export interface Application {
  /** Leader only: the command for a new Node on top of `parent`. */
  produceCommand(request: ProduceRequest): Promise<ProduceResult> | ProduceResult;
  /**
   * Every replica: check a proposed Node and return its state updates, or reject it (the replica
   * then does not vote for it). Must be deterministic (see the module docs).
   */
  validateNode(request: ValidateRequest): Promise<ValidateResult> | ValidateResult;
  /** Called after a Node and its updates are durably committed, in height order. */
  onCommit?(notice: CommitNotice): Promise<void> | void;
  /**
   * Optional: the 32-byte root of the application state after executing `parent` (see
   * {@link StateRootRequest}). With it, every Node carries the root as of its parent: the leader
   * puts it in the Node it proposes, and every replica recomputes it before `validateNode` and
   * does not vote for a Node whose root differs (`state-root-mismatch`). Without it, Nodes carry
   * an empty root. Every replica of a chain must make the same choice, and the root must be a
   * deterministic function of the state (SPECIFICATION.md 7). `withStateRoots` in
   * `src/state/roots.ts` implements it with the state tree.
   */
  stateRoot?(request: StateRootRequest): Promise<Hash> | Hash;
  /**
   * Called once per verified evidence record this replica stores (SPECIFICATION.md 16.2), after
   * it is durable. Replicas learn of equivocation at different times, or not at all, so this hook
   * must not change replicated state: to act on it (e.g. remove the offender), submit a command
   * carrying the record, which every replica checks with `verifyEvidence` in `validateNode`.
   */
  onEvidence?(notice: EvidenceNotice): Promise<void> | void;
}

/** Every hook of {@link Application}: the compiler fails here when a hook is added but not listed. */
const APPLICATION_HOOKS = [
  "produceCommand",
  "validateNode",
  "onCommit",
  "stateRoot",
  "onEvidence",
] as const satisfies readonly (keyof Application)[];
const everyHookListed: Exclude<keyof Application, (typeof APPLICATION_HOOKS)[number]> extends never
  ? true
  : never = true;
void everyHookListed;

/**
 * `app` with some hooks replaced by `overrides`; every other hook `app` has is passed through
 * (bound to `app`), so a wrapper never drops an optional hook it does not know of.
 *
 * @example
 * ```ts
 * import { type Application, wrapApplication } from "./app.ts";
 * declare const app: Application;
 * const counted = wrapApplication(app, {
 *   onCommit: async (notice) => {
 *     await app.onCommit?.(notice);
 *     console.log("committed", notice.node.height);
 *   },
 * }); // produceCommand, validateNode, stateRoot and onEvidence are app's own
 * ```
 */
export function wrapApplication(app: Application, overrides: Partial<Application>): Application {
  const passed: Record<string, unknown> = {};
  for (const name of APPLICATION_HOOKS) {
    const hook = app[name];
    if (typeof hook === "function") passed[name] = hook.bind(app);
  }
  return { ...passed, ...overrides } as Application;
}

/**
 * Bounds on what an Application may return; exceeding them is a typed rejection.
 *
 * @example
 * ```ts
 * import { type AppLimits, DEFAULT_APP_LIMITS } from "./app.ts";
 * const small: AppLimits = { ...DEFAULT_APP_LIMITS, commandBytesMax: 64 * 1024 };
 * ```
 */
export interface AppLimits {
  /** Largest command, bytes. Default 1 MiB. */
  readonly commandBytesMax: number;
  /** Most updates per Node. Default 512. */
  readonly updatesMax: number;
  /** Largest key, bytes. Default 512. */
  readonly updateKeyBytesMax: number;
  /** Largest sum of the keys of one Node's updates, bytes. Default 32 KiB. */
  readonly updateKeysBytesMax: number;
  /** Largest value, bytes. Default 60 KiB (fits one Deno KV value). */
  readonly updateValueBytesMax: number;
  /** Largest sum of keys and values of one Node's updates. Default 512 KiB. */
  readonly updatesBytesMax: number;
}

/**
 * The default {@link AppLimits}. They keep one Node's updates inside one Deno KV atomic operation
 * in the worst case (a key part costs up to twice its length once zero bytes are escaped; keys of
 * one operation may total 80 KiB, keys and values 800 KiB), so that storage never refuses a Node
 * that every replica has accepted. Every replica of a chain must use the same limits.
 *
 * @example
 * ```ts
 * import { DEFAULT_APP_LIMITS } from "./app.ts";
 * console.log(DEFAULT_APP_LIMITS.updatesMax); // 512
 * ```
 */
export const DEFAULT_APP_LIMITS: AppLimits = {
  commandBytesMax: 1024 * 1024,
  updatesMax: 512,
  updateKeyBytesMax: 512,
  updateKeysBytesMax: 32 * 1024,
  updateValueBytesMax: 60 * 1024,
  updatesBytesMax: 512 * 1024,
};

/**
 * Checks an Application's validate result against the limits. Returns a reason string when it
 * is malformed or too large, or null when it is acceptable.
 *
 * @example
 * ```ts
 * import { checkValidateResult, DEFAULT_APP_LIMITS } from "./app.ts";
 * checkValidateResult({ ok: true, updates: [] }, DEFAULT_APP_LIMITS); // null
 * ```
 */
export function checkValidateResult(result: unknown, limits: AppLimits): string | null {
  if (typeof result !== "object" || result === null) return "result is not an object";
  const r = result as {
    ok?: unknown;
    updates?: unknown;
    reason?: unknown;
    validatorUpdates?: unknown;
  };
  if (r.ok === false) return null;
  if (r.ok !== true) return "result.ok must be true or false";
  if (!Array.isArray(r.updates)) return "result.updates must be an array";
  if (r.updates.length > limits.updatesMax) {
    return `${r.updates.length} updates exceed the limit ${limits.updatesMax}`;
  }
  let bytes = 0;
  let keyBytes = 0;
  for (const u of r.updates) {
    if (!Array.isArray(u) || u.length !== 2) return "each update must be [key, value]";
    const [k, v] = u as unknown[];
    if (!(k instanceof Uint8Array)) return "update key must be a Uint8Array";
    if (isReservedKey(k)) return "update key is reserved (\\0hotstuff/)";
    if (v !== null && !(v instanceof Uint8Array)) return "update value must be bytes or null";
    if (k.length > limits.updateKeyBytesMax) return `update key of ${k.length} bytes too large`;
    if (v !== null && v.length > limits.updateValueBytesMax) {
      return `update value of ${v.length} bytes too large`;
    }
    bytes += k.length + (v?.length ?? 0);
    keyBytes += k.length;
  }
  if (keyBytes > limits.updateKeysBytesMax) {
    return `update keys total ${keyBytes} bytes exceed the limit`;
  }
  if (bytes > limits.updatesBytesMax) return `updates total ${bytes} bytes exceed the limit`;
  return checkValidatorUpdates(r.validatorUpdates);
}

/** The shape of `validatorUpdates` (SPECIFICATION.md 3.4); null when acceptable or absent. */
function checkValidatorUpdates(updates: unknown): string | null {
  if (updates === undefined) return null;
  if (!Array.isArray(updates)) return "validatorUpdates must be an array";
  if (updates.length > VALIDATOR_UPDATES_MAX) {
    return `${updates.length} validator updates exceed the limit ${VALIDATOR_UPDATES_MAX}`;
  }
  for (const u of updates) {
    const x = u as { publicKey?: unknown; power?: unknown } | null;
    if (typeof x !== "object" || x === null) return "each validator update must be an object";
    if (!(x.publicKey instanceof Uint8Array) || x.publicKey.length !== 32) {
      return "validator update key must be 32 bytes";
    }
    if (typeof x.power !== "number" || !Number.isSafeInteger(x.power) || x.power < 0) {
      return "validator update power must be a non-negative integer";
    }
  }
  return null;
}
