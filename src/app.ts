/**
 * The Application: the user's state machine, behind three typed hooks (and an optional fourth,
 * `onEvidence`, for evidence of equivocation). See SPECIFICATION.md section 7.
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

export type { StateUpdate } from "./storage/storage.ts";

/**
 * Read access to application state as of a Node's parent: committed state overlaid with the
 * pending updates of every uncommitted ancestor (newest wins). Lets the app execute
 * speculatively before commit.
 */
export interface StateView {
  /** The value of `key`, or null if absent. */
  get(key: Uint8Array): Promise<Uint8Array | null>;
}

/** Input of {@link Application.produceCommand}. */
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

/** Output of {@link Application.produceCommand}. */
export interface ProduceResult {
  /** The command bytes of the new Node (may be empty). */
  readonly command: Uint8Array;
}

/** Input of {@link Application.validateNode}. */
export interface ValidateRequest {
  /** The proposed Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
  /** State as of `node.parent`. */
  readonly state: StateView;
}

/** Output of {@link Application.validateNode}: the Node's state updates, or a rejection. */
export type ValidateResult =
  | { readonly ok: true; readonly updates: readonly StateUpdate[] }
  | { readonly ok: false; readonly reason: string };

/** Input of {@link Application.onCommit}. */
export interface CommitNotice {
  /** The committed Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
  /** The updates that became durable with it. */
  readonly updates: readonly StateUpdate[];
}

/** Input of {@link Application.onEvidence}. */
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
   * Called once per verified evidence record this replica stores (SPECIFICATION.md 15.2), after
   * it is durable. Replicas learn of equivocation at different times, or not at all, so this hook
   * must not change replicated state: to act on it (e.g. remove the offender), submit a command
   * carrying the record, which every replica checks with `verifyEvidence` in `validateNode`.
   */
  onEvidence?(notice: EvidenceNotice): Promise<void> | void;
}

/** Bounds on what an Application may return; exceeding them is a typed rejection. */
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
  const r = result as { ok?: unknown; updates?: unknown; reason?: unknown };
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
  return null;
}
