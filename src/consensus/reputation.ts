/**
 * Leader reputation: the leader of a view, derived from the committed chain so that validators
 * that neither propose nor vote (crashed, cut off, silent) stop being scheduled, while every
 * validator keeps probation views that no history can take away. See SPECIFICATION.md 3.5.
 *
 * Everything here is a pure function of `(view, validator set, committed history)`: the same
 * inputs give the same leader on every replica. Disagreement between replicas (a replica whose
 * committed history is still short of the window) costs liveness only: the leader decides who
 * proposes and who collects votes, never what is safe to vote for or commit (Spec 5).
 *
 * @module
 */
import { assert } from "../errors.ts";
import type { Node, PublicKey } from "../types.ts";
import { toHex } from "../types.ts";
import type { Validator, ValidatorSet } from "../validators.ts";

/**
 * Options of the reputation rule. Every replica of a chain must use the same.
 *
 * @example
 * ```ts
 * import { DEFAULT_REPUTATION_OPTIONS, type ReputationOptions } from "./reputation.ts";
 * const longerWindow: ReputationOptions = { ...DEFAULT_REPUTATION_OPTIONS, windowNodes: 32 };
 * ```
 */
export interface ReputationOptions {
  /** Committed Nodes whose proposers and justify signers count as active. Default 16. */
  readonly windowNodes: number;
  /**
   * The window ends at the last committed Node of view `<= v - lagViews` (so replicas that are a
   * few commits apart agree on it). Default 12.
   */
  readonly lagViews: number;
  /** Every `probationViews`-th view is led by the plain weighted schedule's turn. Default 256. */
  readonly probationViews: number;
}

/**
 * The default {@link ReputationOptions}.
 *
 * @example
 * ```ts
 * import { DEFAULT_REPUTATION_OPTIONS } from "./reputation.ts";
 * console.log(DEFAULT_REPUTATION_OPTIONS.lagViews); // 12
 * ```
 */
export const DEFAULT_REPUTATION_OPTIONS: ReputationOptions = {
  windowNodes: 16,
  lagViews: 12,
  probationViews: 256,
};

/** Committed Nodes kept beyond the window and the lag (a restart or catch-up margin). */
const HISTORY_SLACK = 8;

/**
 * How many committed Nodes below the head a replica keeps for the rule (0 without reputation).
 *
 * @example
 * ```ts
 * import { DEFAULT_REPUTATION_OPTIONS, historyNodesMax } from "./reputation.ts";
 * historyNodesMax(DEFAULT_REPUTATION_OPTIONS); // 36
 * ```
 */
export function historyNodesMax(options: ReputationOptions | null): number {
  return options === null ? 0 : options.windowNodes + options.lagViews + HISTORY_SLACK;
}

/**
 * What the rule needs of one committed Node.
 *
 * @example
 * ```ts
 * import type { CommittedSummary } from "./reputation.ts";
 * const key = new Uint8Array(32).fill(1);
 * const s: CommittedSummary = { height: 5, view: 7, proposer: key, signers: [key] };
 * ```
 */
export interface CommittedSummary {
  /** Its height. */
  readonly height: number;
  /** Its view. */
  readonly view: number;
  /** Its proposer. */
  readonly proposer: PublicKey;
  /** The signers of its justify QC. */
  readonly signers: readonly PublicKey[];
}

/**
 * The summary of a committed Node.
 *
 * @example
 * ```ts
 * import { summarize } from "./reputation.ts";
 * import { genesisNode } from "../codec.ts";
 * console.log(summarize(genesisNode("c")).height); // 0
 * ```
 */
export function summarize(node: Node): CommittedSummary {
  return {
    height: node.height,
    view: node.view,
    proposer: node.proposer,
    signers: node.justify.signatures.map((s) => s.signer),
  };
}

/**
 * Spec 3.5: the leader of `view` given the committed history (ascending heights, consecutive,
 * ending at the replica's committed head; only its last `windowNodes + lagViews` entries matter).
 *
 * @example
 * ```ts
 * import { DEFAULT_REPUTATION_OPTIONS, reputationLeader } from "./reputation.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([1, 2, 3, 4].map((i) => ({ publicKey: new Uint8Array(32).fill(i), power: 1 })));
 * reputationLeader(5, set, [], DEFAULT_REPUTATION_OPTIONS); // set.leader(5): no history yet
 * ```
 */
export function reputationLeader(
  view: number,
  validators: ValidatorSet,
  history: readonly CommittedSummary[],
  options: ReputationOptions,
): Validator {
  const custom = validators.customLeader(view);
  if (custom !== undefined) return custom;
  // Spec 3.5 step 1: probation views follow the plain schedule, one turn per probation view.
  if (view % options.probationViews === 0) {
    return validators.leader(Math.floor(view / options.probationViews));
  }
  const base = validators.leader(view);
  // Spec 3.5 step 2: the window: the last `windowNodes` committed Nodes of view <= v - lag.
  const window = windowOf(view, history, options);
  // Spec 3.5 step 3: active validators: proposers and justify signers in the window.
  const active = activeValidators(validators, window);
  // Spec 3.5 step 4: unless the active power is a quorum, the plain schedule.
  const power = active.reduce((s, v) => s + v.power, 0);
  if (!validators.isQuorum(power)) return base;
  // Spec 3.5 step 5: an active scheduled leader keeps its view; otherwise the active validators
  // take turns by power.
  if (active.includes(base)) return base;
  return weightedTurn(active, power, view);
}

/** The last `windowNodes` summaries of view <= `view - lagViews`. */
function windowOf(
  view: number,
  history: readonly CommittedSummary[],
  options: ReputationOptions,
): readonly CommittedSummary[] {
  let end = history.length;
  while (end > 0 && history[end - 1]!.view > view - options.lagViews) end--;
  return history.slice(Math.max(0, end - options.windowNodes), end);
}

/** Members of `validators` that proposed or signed a justify QC in `window`, in set order. */
function activeValidators(
  validators: ValidatorSet,
  window: readonly CommittedSummary[],
): Validator[] {
  const all = validators.validators;
  const mark = new Uint8Array(all.length);
  for (const s of window) for (const i of membersOf(s, validators)) mark[i] = 1;
  return all.filter((_, i) => mark[i] === 1);
}

/** Index (in `validators.validators`) by key hex, per set. */
const indexCache = new WeakMap<ValidatorSet, Map<string, number>>();
/** Indices of a summary's proposer and signers in a set, computed once per (summary, set). */
const memberCache = new WeakMap<
  CommittedSummary,
  { readonly set: ValidatorSet; readonly members: readonly number[] }
>();

/** The indices of `s`'s proposer and signers in `validators` (non-members left out). */
function membersOf(s: CommittedSummary, validators: ValidatorSet): readonly number[] {
  const cached = memberCache.get(s);
  if (cached !== undefined && cached.set === validators) return cached.members;
  let index = indexCache.get(validators);
  if (index === undefined) {
    index = new Map(validators.validators.map((v, i) => [toHex(v.publicKey), i]));
    indexCache.set(validators, index);
  }
  const members: number[] = [];
  for (const k of [s.proposer, ...s.signers]) {
    const i = index.get(toHex(k));
    if (i !== undefined) members.push(i);
  }
  memberCache.set(s, { set: validators, members });
  return members;
}

/** Slot `view mod power` of a weighted round robin over `active` (interleaved by cumulative power). */
function weightedTurn(active: readonly Validator[], power: number, view: number): Validator {
  assert(active.length > 0 && power > 0, "a quorum of active validators is not empty");
  // Equal powers: plain rotation; otherwise each validator holds `power` consecutive slots.
  if (active.every((v) => v.power === active[0]!.power)) {
    return active[view % active.length]!;
  }
  let slot = view % power;
  for (const v of active) {
    if (slot < v.power) return v;
    slot -= v.power;
  }
  return active[active.length - 1]!;
}
