/**
 * The consensus core: chained HotStuff as a deterministic state machine with no I/O.
 * See SPECIFICATION.md sections 4-10; step numbers in comments cite it.
 *
 * The caller feeds {@link CoreInput}s (verified messages, ticks, Application results, fetched
 * Nodes) to {@link Core.step} and gets back one {@link CoreOutput}: what to persist, what to
 * sign and send, what to ask the Application, what to fetch, what committed. The output's field
 * docs state the order in which the caller must carry it out.
 *
 * @module
 */
import { genesisQC, nodeHash } from "../codec.ts";
import { assert } from "../errors.ts";
import type { ValidateResult } from "../app.ts";
import type { ConsensusEvent } from "../events.ts";
import type { SafetyState, StoredNode, WriteBatch } from "../storage/storage.ts";
import type {
  ConsensusMessage,
  Hash,
  NewViewMessage,
  Node,
  ProposeMessage,
  PublicKey,
  QuorumCertificate,
  TimeoutCertificate,
  VoteMessage,
} from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";
import { NodeTree } from "./node_tree.ts";
import type { PacemakerOptions } from "./pacemaker.ts";
import { DEFAULT_PACEMAKER_OPTIONS, viewTimeout } from "./pacemaker.ts";
import type { CommittedSummary, ReputationOptions } from "./reputation.ts";
import {
  DEFAULT_REPUTATION_OPTIONS,
  historyNodesMax,
  reputationLeader,
  summarize,
} from "./reputation.ts";
import { commitCandidate, lockCandidate, plantedSafetyBugs, safeToVote } from "./safety.ts";
import { NewViewCollector, VoteCollector } from "./votes.ts";
import type { NodeConfig, QuorumRule, ValidatorConfig } from "./reconfig.ts";
import {
  certifyingRule,
  encodeConfigRecord,
  leaderSet,
  nextConfig,
  plantedReconfigBugs,
  recordOf,
  sameConfig,
  stableConfig,
  VALIDATOR_CONFIG_KEY,
  validatorConfigHash,
} from "./reconfig.ts";

/** Leaders remembered between commits. */
const LEADER_CACHE_MAX = 64;

/**
 * Bounds of the core's memory.
 *
 * @example
 * ```ts
 * import { type CoreLimits, DEFAULT_CORE_LIMITS } from "./core.ts";
 * const tight: CoreLimits = { ...DEFAULT_CORE_LIMITS, treeNodesMax: 1024 };
 * ```
 */
export interface CoreLimits {
  /** Votes and NEW-VIEWs further than this many views ahead are refused. Default 1000. */
  readonly viewsAheadMax: number;
  /** Views tracked by the vote and NEW-VIEW collectors. Default 64. */
  readonly collectorViewsMax: number;
  /** Proposals buffered while their parent is fetched. Default 32. */
  readonly pendingProposalsMax: number;
  /** Nodes asked for in one catch-up request. Default 256. */
  readonly catchUpNodesMax: number;
  /** Uncommitted Nodes held in the NodeTree. Default 8192. */
  readonly treeNodesMax: number;
}

/**
 * The default {@link CoreLimits}.
 *
 * @example
 * ```ts
 * import { DEFAULT_CORE_LIMITS } from "./core.ts";
 * console.log(DEFAULT_CORE_LIMITS.catchUpNodesMax); // 256
 * ```
 */
export const DEFAULT_CORE_LIMITS: CoreLimits = {
  viewsAheadMax: 1000,
  collectorViewsMax: 64,
  pendingProposalsMax: 32,
  catchUpNodesMax: 256,
  treeNodesMax: 8192,
};

/** Distinct rules remembered for checking peers' certificates (see `Core.knownRules`). */
const RULES_KEPT = 8;

/** Committed Nodes whose configurations stay in memory (as NodeTree keeps their hashes). */
const COMMITTED_KEPT = 4096;

/**
 * Configuration of a {@link Core}.
 *
 * @example
 * ```ts
 * import type { CoreOptions } from "./core.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const options: CoreOptions = {
 *   chainId: "c",
 *   validators: new ValidatorSet([{ publicKey: me, power: 1 }]),
 *   me,
 *   pacemaker: { viewTimeoutMinMs: 500, viewTimeoutMaxMs: 8000 },
 * };
 * ```
 */
export interface CoreOptions {
  /** The chain id every certificate must carry. */
  readonly chainId: string;
  /** The genesis validator set (later sets come from the chain, Spec 3.4). */
  readonly validators: ValidatorSet;
  /** This replica's public key (need not be a validator: then it only follows). */
  readonly me: PublicKey;
  /** Timing. */
  readonly pacemaker?: PacemakerOptions;
  /** Memory bounds. */
  readonly limits?: CoreLimits;
  /**
   * Leader reputation (Spec 3.5); default {@link DEFAULT_REPUTATION_OPTIONS}; null: the plain
   * weighted schedule (Spec 3.3). Every replica of a chain must use the same.
   */
  readonly reputation?: ReputationOptions | null;
}

/**
 * What a replica restores from storage.
 *
 * @example
 * ```ts
 * import type { CoreRestore } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * const g = genesisNode("c");
 * const fresh: CoreRestore = { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] };
 * ```
 */
export interface CoreRestore {
  /** Persisted safety state, or null on a fresh store. */
  readonly safety: SafetyState | null;
  /** The committed head (the genesis Node on a fresh store). */
  readonly root: StoredNode;
  /** Stored uncommitted Nodes (any order; those that do not attach are dropped). */
  readonly uncommitted: readonly StoredNode[];
  /** The committed head's configurations (Spec 3.4 step 6); default: the genesis set. */
  readonly rootConfig?: NodeConfig;
  /**
   * The committed Nodes just below `root`, ascending (at most {@link Core.historyNodesMax} are
   * kept; `root` is added if missing). Leader reputation reads them (Spec 3.5); without them the
   * replica may disagree about leaders until it commits enough (liveness only).
   */
  readonly history?: readonly Node[];
}

/**
 * A message without its signature and signer: the caller signs it.
 *
 * @example
 * ```ts
 * import type { UnsignedMessage } from "./core.ts";
 * const vote: UnsignedMessage = { type: "vote", view: 3, nodeHash: new Uint8Array(32) }; // the Engine signs it
 * ```
 */
export type UnsignedMessage =
  | { readonly type: "propose"; readonly node: Node; readonly tc: TimeoutCertificate | null }
  | { readonly type: "vote"; readonly view: number; readonly nodeHash: Hash }
  | {
    readonly type: "new-view";
    readonly view: number;
    readonly highQC: QuorumCertificate;
    readonly highTC: TimeoutCertificate | null;
    /** Our vote in `view` to attach (the caller signs it), if we voted in it. */
    readonly vote: { readonly nodeHash: Hash } | null;
  };

/**
 * One message to sign and send. `"all"` means every validator, this replica included.
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const g = genesisNode("c");
 * const core = new Core(
 *   { chainId: "c", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] },
 * );
 * const out = core.step({ type: "start", now: 0 });
 * for (const o of out.sends) console.log(o.to === "all" ? "broadcast" : "to one", o.message.type);
 * ```
 */
export interface Outbound {
  /** Recipient key, or every validator including self. */
  readonly to: PublicKey | "all";
  /** The message to sign. */
  readonly message: UnsignedMessage;
}

/**
 * A Node for the Application to validate and execute.
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const g = genesisNode("c");
 * const core = new Core(
 *   { chainId: "c", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] },
 * );
 * const out = core.step({ type: "start", now: 0 });
 * for (const e of out.execute) console.log("validate Node at height", e.node.height);
 * ```
 */
export interface ExecuteRequest {
  /** The Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
  /**
   * For a fetched Node: the rule its justify QC must satisfy, signatures included (Spec 4.4
   * step 0); the caller checks it before executing. Null for proposals (checked on receipt).
   */
  readonly justifyRule: QuorumRule | null;
}

/**
 * A request for a new command from the Application (leader only).
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const g = genesisNode("c");
 * const core = new Core(
 *   { chainId: "c", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] },
 * );
 * const out = core.step({ type: "start", now: 0 });
 * if (out.produce !== null) console.log("propose at height", out.produce.height); // the sole leader
 * ```
 */
export interface ProduceCommandRequest {
  /** View of the new Node. */
  readonly view: number;
  /** Parent the new Node extends. */
  readonly parent: Hash;
  /** Height of the new Node. */
  readonly height: number;
}

/**
 * A catch-up request: Nodes of a peer's chain from `fromHeight` on.
 *
 * @example
 * ```ts
 * import type { FetchRequest } from "./core.ts";
 * const request: FetchRequest = { from: null, fromHeight: 101, limit: 256 }; // any peer
 * ```
 */
export interface FetchRequest {
  /** The peer to ask, or null for any. */
  readonly from: PublicKey | null;
  /** The first height wanted. */
  readonly fromHeight: number;
  /** At most this many Nodes. */
  readonly limit: number;
}

/**
 * Everything one step asks the caller to do, in this order (Spec 10.1):
 * 1. `write`: persist atomically and durably. **Nothing below may happen before it completes**:
 *    a vote in `sends` depends on the safety state in `write`.
 * 2. `sends`: sign and send.
 * 3. `committed`: notify the Application, in order (already durable by step 1).
 * 4. `execute`, `produce`: call the Application; feed results back as inputs.
 * 5. `fetch`: start a catch-up request; feed the answer back as an input.
 * 6. `timerAt`: arrange a `tick` input at that time (replaces any earlier timer).
 * 7. `events`: publish.
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const g = genesisNode("c");
 * const core = new Core(
 *   { chainId: "c", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] },
 * );
 * const out = core.step({ type: "start", now: 0 });
 * // In order: persist out.write, then send out.sends, then announce out.committed.
 * console.log(out.write !== null, out.sends.length, out.timerAt);
 * ```
 */
export interface CoreOutput {
  /** The atomic write, or null. */
  readonly write: WriteBatch | null;
  /** Messages to sign and send. */
  readonly sends: Outbound[];
  /** Newly committed Nodes, in height order. */
  readonly committed: StoredNode[];
  /** Nodes for the Application to validate. */
  readonly execute: ExecuteRequest[];
  /** A command to produce, or null. */
  readonly produce: ProduceCommandRequest | null;
  /** A catch-up request, or null. */
  readonly fetch: FetchRequest | null;
  /** When to tick next, or null for no change. */
  readonly timerAt: number | null;
  /** Events to publish. */
  readonly events: ConsensusEvent[];
}

/**
 * The Application's verdict on a Node, with the validator-set changes it decided (Spec 3.4).
 *
 * @example
 * ```ts
 * import type { ExecutedResult } from "./core.ts";
 * const ok: ExecutedResult = { ok: true, updates: [], validatorUpdates: [] };
 * ```
 */
export type ExecutedResult = ValidateResult;

/**
 * Inputs of {@link Core.step}. `now` is the caller's clock in milliseconds.
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const me = new Uint8Array(32).fill(7);
 * const g = genesisNode("c");
 * const core = new Core(
 *   { chainId: "c", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: g, hash: nodeHash(g), updates: [] }, uncommitted: [] },
 * );
 * core.step({ type: "start", now: 0 });
 * core.step({ type: "tick", now: 5_000 }); // time enters only as inputs
 * ```
 */
export type CoreInput =
  | { readonly type: "start"; readonly now: number }
  | { readonly type: "tick"; readonly now: number }
  | {
    /** A message whose signatures and certificates the caller has verified. */
    readonly type: "message";
    readonly from: PublicKey;
    readonly message: ConsensusMessage;
    readonly now: number;
  }
  | {
    readonly type: "executed";
    readonly hash: Hash;
    readonly result: ExecutedResult;
    readonly now: number;
  }
  | {
    readonly type: "produced";
    readonly view: number;
    readonly command: Uint8Array | null;
    /** The state root as of the parent (empty on a chain without state roots, Spec 7). */
    readonly stateRoot: Uint8Array;
    readonly now: number;
  }
  | {
    /** Nodes whose justify QCs the caller has verified, in ascending height. */
    readonly type: "fetched";
    readonly from: PublicKey;
    readonly nodes: readonly Node[];
    readonly now: number;
  }
  | { readonly type: "fetch-failed"; readonly from: PublicKey | null; readonly now: number }
  | {
    /** A peer's message named signers of a set this replica does not know yet: catch up. */
    readonly type: "behind";
    readonly from: PublicKey;
    readonly now: number;
  };

/** A queued fetched Node with its hash (computed once). */
interface Fetched {
  readonly node: Node;
  readonly hash: Hash;
}

/** What the next catch-up request depends on: one answer's peer, extent and progress. */
interface FetchAnswer {
  readonly from: PublicKey;
  /** Height of the answer's first queued Node: inserting it (or above) is progress. */
  readonly firstHeight: number;
  /** The height after the answer's last Node: where a request ahead starts. */
  readonly nextHeight: number;
  /** It held `catchUpNodesMax` Nodes: the peer has more. */
  readonly full: boolean;
  /** A Node of it has been inserted. */
  progress: boolean;
}

interface Executing {
  readonly node: Node;
  /** Set when the Node came in a PROPOSE of the current leader: vote after executing. */
  readonly proposal: boolean;
}

class Output {
  nodes: StoredNode[] = [];
  commits: StoredNode[] = [];
  prune: Hash[] = [];
  safetyDirty = false;
  sends: Outbound[] = [];
  execute: ExecuteRequest[] = [];
  produce: ProduceCommandRequest | null = null;
  fetch: FetchRequest | null = null;
  timerAt: number | null = null;
  events: ConsensusEvent[] = [];
}

/**
 * The sans-I/O chained HotStuff state machine of one replica.
 *
 * @example
 * ```ts
 * import { Core } from "./core.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 *
 * const me = new Uint8Array(32).fill(7);
 * const genesis = genesisNode("example");
 * const core = new Core(
 *   { chainId: "example", validators: new ValidatorSet([{ publicKey: me, power: 1 }]), me },
 *   { safety: null, root: { node: genesis, hash: nodeHash(genesis), updates: [] }, uncommitted: [] },
 * );
 * const out = core.step({ type: "start", now: 0 });
 * console.log(out.events.map((e) => e.type)); // what to persist, send and announce, in order
 * ```
 */
export class Core {
  /** The chain id. */
  readonly chainId: string;
  /** The validator set. */
  readonly validators: ValidatorSet;
  /** This replica's key. */
  readonly me: PublicKey;
  readonly #pacemaker: PacemakerOptions;
  readonly #limits: CoreLimits;
  readonly #tree: NodeTree;
  readonly #votes: VoteCollector;
  readonly #newViews: NewViewCollector;
  /** Configurations of the tree's Nodes and of recently committed ones (Spec 3.4). */
  readonly #configs = new Map<string, NodeConfig>();
  /** Committed hashes whose configurations are kept, oldest first (at most `COMMITTED_KEPT`). */
  readonly #committedConfigs: string[] = [];
  /** Rules recently in force, newest last: what a certificate from a peer may be checked by. */
  readonly #rules = new Map<string, QuorumRule>();

  // Safety state (Spec 6.1).
  #view: number;
  #lastVotedView: number;
  /** The Node we voted for in `#lastVotedView`, if voted since start (attached to NEW-VIEW). */
  #lastVoteHash: Hash | null = null;
  #lockedQC: QuorumCertificate;
  #highQC: QuorumCertificate;
  #highTC: TimeoutCertificate | null;
  /**
   * The highest QC absorbed, whether or not it certifies its Node by the Node's rule (Spec 8.4
   * step 3): the evidence of this replica's view that NEW-VIEW carries, so that replicas that
   * moved their view on it are followed (liveness only; proposals use `#highQC`).
   */
  #viewQC: QuorumCertificate;

  // Pacemaker state (Spec 8).
  #failures = 0;
  #deadline = 0;
  #now = 0;
  /** Highest view this replica proposed in (or asked the Application to produce for). */
  #proposedView: number;
  #produceFor: { view: number; qc: QuorumCertificate; tc: TimeoutCertificate | null } | null = null;

  // Bookkeeping with bounds.
  readonly #proposals = new Map<number, ProposeMessage[]>();
  readonly #executing = new Map<string, Executing>();
  readonly #pending = new Map<string, ProposeMessage[]>();
  /** Fetched Nodes to execute, in height order; at most `2 * catchUpNodesMax` (two answers). */
  #fetchQueue: Fetched[] = [];
  #fetchInFlight: { deadline: number } | null = null;
  /** The latest non-empty answer, until the request that follows it is decided (Spec 4.4). */
  #answer: FetchAnswer | null = null;
  #out = new Output();

  // Leader reputation (Spec 3.5).
  readonly #reputation: ReputationOptions | null;
  /** Summaries of the last committed Nodes, ascending, ending at the committed head. */
  #history: CommittedSummary[] = [];
  /** Leaders computed since the history last changed, by view (bounded). */
  readonly #leaders = new Map<ValidatorSet, Map<number, PublicKey>>();

  /**
   * Restores a core from what storage holds.
   *
   * @param options chain, validators, identity, timing, limits
   * @param restored what storage holds (see {@link CoreRestore})
   */
  constructor(options: CoreOptions, restored: CoreRestore) {
    this.chainId = options.chainId;
    this.validators = options.validators;
    this.me = options.me;
    this.#pacemaker = options.pacemaker ?? DEFAULT_PACEMAKER_OPTIONS;
    this.#limits = options.limits ?? DEFAULT_CORE_LIMITS;
    this.#reputation = options.reputation === undefined
      ? DEFAULT_REPUTATION_OPTIONS
      : options.reputation;
    this.#tree = new NodeTree(restored.root);
    const genesisConfig = stableConfig(options.validators);
    const rootConfig = restored.rootConfig ?? { parent: genesisConfig, after: genesisConfig };
    this.#setConfig(restored.root.hash, rootConfig);
    this.#restoreHistory(restored.history ?? [], restored.root.node);
    const pending = [...restored.uncommitted].sort((a, b) => a.node.height - b.node.height);
    for (const e of pending) {
      const parent = this.#configs.get(toHex(e.node.parent));
      if (!this.#tree.has(e.node.parent) || parent === undefined) continue;
      this.#tree.insert(e);
      // Spec 3.4 step 6: a stored Node's record, if it has one, is its configuration.
      this.#setConfig(e.hash, {
        parent: parent.after,
        after: recordOf(e.updates)?.after ?? parent.after,
      });
    }
    // Spec 6.2 step 3: stored Nodes that no longer attach (a crash between a commit and the
    // pruning of its abandoned branches) are deleted by the first write.
    this.#out.prune.push(...NodeTree.orphans(restored.root, restored.uncommitted));
    this.#votes = new VoteCollector(this.chainId, this.#limits.collectorViewsMax);
    this.#newViews = new NewViewCollector(this.chainId, this.#limits.collectorViewsMax);
    const genesis = genesisQC(this.chainId);
    const s = restored.safety;
    this.#view = s?.currentView ?? 0;
    // Spec 6.2 step 1: the last voted view survives restarts.
    this.#lastVotedView = plantedSafetyBugs.forgetLastVotedView ? 0 : s?.lastVotedView ?? 0;
    this.#lockedQC = s?.lockedQC ?? genesis;
    this.#highQC = s?.highQC ?? genesis;
    this.#highTC = s?.highTC ?? null;
    this.#viewQC = this.#highQC;
    // Spec 6.2 step 2: never propose again in the view we were in when we stopped.
    this.#proposedView = this.#view;
  }

  /** Current view. */
  get view(): number {
    return this.#view;
  }

  /** The NodeTree (read-only use: state overlays, serving Nodes, status). */
  get tree(): NodeTree {
    return this.#tree;
  }

  /** A copy of the safety state. */
  get safety(): SafetyState {
    return {
      currentView: this.#view,
      lastVotedView: this.#lastVotedView,
      lockedQC: this.#lockedQC,
      highQC: this.#highQC,
      highTC: this.#highTC,
    };
  }

  /** The leader of `view` for a proposal on this replica's highest certified Node. */
  leader(view: number): PublicKey {
    return this.#leaderAfter(this.#tipConfig(), view);
  }

  /** How many committed Nodes the reputation history keeps (Spec 3.5). */
  get historyNodesMax(): number {
    return historyNodesMax(this.#reputation);
  }

  /**
   * Spec 3.5: the leader of `view` for a proposal extending a Node whose configuration is
   * `config`: leader reputation over the set that schedules leaders for it (Spec 3.4 step 5),
   * reading this replica's committed history; without reputation, that set's plain schedule
   * (Spec 3.3).
   */
  #leaderAfter(config: ValidatorConfig, view: number): PublicKey {
    const set = leaderSet(config);
    const r = this.#reputation;
    if (r === null) return set.leader(view).publicKey;
    let bySet = this.#leaders.get(set);
    if (bySet === undefined) this.#leaders.set(set, bySet = new Map());
    const known = bySet.get(view);
    if (known !== undefined) return known;
    const key = reputationLeader(view, set, this.#history, r).publicKey;
    if (bySet.size >= LEADER_CACHE_MAX) bySet.clear();
    bySet.set(view, key);
    return key;
  }

  /** The configuration after this replica's highest certified Node (or the committed head). */
  #tipConfig(): ValidatorConfig {
    const tip = this.#configs.get(toHex(this.#highQC.nodeHash));
    return tip?.after ?? this.#configs.get(toHex(this.#tree.root.hash))!.after;
  }

  /** The configurations of a known Node (in the tree or recently committed), or undefined. */
  configOf(hash: Hash): NodeConfig | undefined {
    return this.#configs.get(toHex(hash));
  }

  /** The validator configuration after the committed head. */
  get committedConfig(): ValidatorConfig {
    return this.#configs.get(toHex(this.#tree.root.hash))!.after;
  }

  /**
   * The rules recently in force (newest last): a certificate from a peer must satisfy one of them
   * before it reaches the core, which then checks it against the rule of its Node (Spec 3.4
   * step 3).
   */
  knownRules(): QuorumRule[] {
    return [...this.#rules.values()];
  }

  #setConfig(hash: Hash, config: NodeConfig): void {
    this.#configs.set(toHex(hash), config);
    for (const c of [config.parent, config.after]) {
      const rule = certifyingRule(c);
      this.#rules.delete(rule.id);
      this.#rules.set(rule.id, rule);
      if (this.#rules.size > RULES_KEPT) this.#rules.delete(this.#rules.keys().next().value!);
    }
  }

  #restoreHistory(history: readonly Node[], root: Node): void {
    const nodes = [...history.filter((n) => n.height > 0 && n.height < root.height)];
    if (root.height > 0) nodes.push(root);
    // Only a consecutive run ending at the root counts.
    let start = nodes.length - 1;
    while (start > 0 && nodes[start - 1]!.height + 1 === nodes[start]!.height) start--;
    for (const n of nodes.slice(Math.max(0, start))) this.#remember(n);
  }

  /** Adds a newly committed Node to the reputation history (Spec 3.5). */
  #remember(node: Node): void {
    if (this.#reputation === null) return;
    const last = this.#history[this.#history.length - 1];
    assert(last === undefined || last.height + 1 === node.height, "history heights consecutive");
    this.#history.push(summarize(node));
    if (this.#history.length > this.historyNodesMax) this.#history.shift();
    this.#leaders.clear();
  }

  /** Feeds one input and returns what to do (see {@link CoreOutput} for the order). */
  step(input: CoreInput): CoreOutput {
    assert(input.now >= this.#now || input.type === "start", "time never goes back");
    this.#now = Math.max(this.#now, input.now);
    switch (input.type) {
      case "start":
        this.#onStart();
        break;
      case "tick":
        this.#onTick();
        break;
      case "message":
        this.#onMessage(input.from, input.message);
        break;
      case "executed":
        this.#onExecuted(input.hash, input.result);
        break;
      case "produced":
        this.#onProduced(input.view, input.command, input.stateRoot);
        break;
      case "fetched":
        this.#onFetched(input.from, input.nodes);
        break;
      case "fetch-failed":
        this.#fetchInFlight = null;
        break;
      case "behind":
        this.#requestFetch(input.from);
        break;
    }
    return this.#flush();
  }

  #flush(): CoreOutput {
    const o = this.#out;
    this.#out = new Output();
    const hasWrite = o.safetyDirty || o.nodes.length > 0 || o.commits.length > 0 ||
      o.prune.length > 0;
    const write: WriteBatch | null = hasWrite
      ? {
        ...(o.safetyDirty ? { safety: this.safety } : {}),
        ...(o.nodes.length > 0 ? { nodes: o.nodes } : {}),
        ...(o.commits.length > 0 ? { commits: o.commits } : {}),
        ...(o.prune.length > 0 ? { prune: o.prune } : {}),
      }
      : null;
    return {
      write,
      sends: o.sends,
      committed: o.commits,
      execute: o.execute,
      produce: o.produce,
      fetch: o.fetch,
      timerAt: o.timerAt,
      events: o.events,
    };
  }

  #reject(from: PublicKey | null, message: string, reason: string, detail = ""): void {
    this.#out.events.push({ type: "message:reject", from, message, reason, detail });
  }

  // -------------------------------------------------------------------------------------------
  // Spec 8.2: start.

  #onStart(): void {
    const target = Math.max(
      1,
      this.#view,
      this.#highQC.view + 1,
      this.#highTC === null ? 0 : this.#highTC.view + 1,
    );
    if (target > this.#view) {
      this.#enterView(target, "start");
    } else {
      this.#armTimer();
      this.#out.events.push({
        type: "view:enter",
        view: this.#view,
        leader: this.leader(this.#view),
        reason: "start",
      });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Spec 8.3: local timeout.

  #onTick(): void {
    if (this.#fetchInFlight !== null && this.#now >= this.#fetchInFlight.deadline) {
      this.#fetchInFlight = null;
    }
    // A timer may fire a little early (clocks round): keep it armed for the real deadline.
    if (this.#now < this.#deadline) {
      this.#out.timerAt = this.#deadline;
      return;
    }
    // Spec 8.3 step 1: give up on the view: NEW-VIEW with our highest QC and TC, and our vote in
    // this view if we cast one, to everyone.
    this.#out.events.push({ type: "view:timeout", view: this.#view });
    const voted = this.#lastVotedView === this.#view && this.#lastVoteHash !== null;
    this.#out.sends.push({
      to: "all",
      message: {
        type: "new-view",
        view: this.#view,
        highQC: this.#viewQC.view > this.#highQC.view ? this.#viewQC : this.#highQC,
        highTC: this.#highTC,
        vote: voted ? { nodeHash: this.#lastVoteHash! } : null,
      },
    });
    // Spec 8.3 step 2: back off and re-send later if the view still does not change.
    this.#failures++;
    this.#armTimer();
    // Spec 8.3 step 3: if we hold proposals waiting for Nodes, we may be behind: catch up.
    if (this.#pending.size > 0 || !this.#knows(this.#highQC.nodeHash)) this.#requestFetch(null);
  }

  #armTimer(): void {
    this.#deadline = this.#now + viewTimeout(this.#pacemaker, this.#failures);
    this.#out.timerAt = this.#deadline;
  }

  // -------------------------------------------------------------------------------------------
  // Spec 8.4: entering views on signed evidence only.

  #enterView(view: number, reason: "start" | "qc" | "tc"): void {
    assert(view > this.#view, "views only increase");
    this.#view = view;
    this.#out.safetyDirty = true;
    // Spec 8.4 step 1: progress (a QC for the previous view) resets the backoff.
    if (reason === "qc") this.#failures = 0;
    this.#armTimer();
    this.#votes.pruneBelow(view - 1);
    this.#newViews.pruneBelow(view);
    for (const v of [...this.#proposals.keys()]) if (v < view - 1) this.#proposals.delete(v);
    // Spec 4.1 step 8: a buffered proposal that would now be stale goes (it would be refused
    // when its parent came, and it would keep asking for catch-up meanwhile).
    for (const [key, list] of [...this.#pending]) {
      const live = list.filter((m) => m.node.view + 1 >= view);
      if (live.length === 0) this.#pending.delete(key);
      else if (live.length < list.length) this.#pending.set(key, live);
    }
    this.#out.events.push({ type: "view:enter", view, leader: this.leader(view), reason });
    // Spec 8.4 step 2: the leader of the new view proposes.
    this.#maybePropose();
  }

  /** Spec 8.4 step 3: absorb a verified QC and TC; enter the view they justify. */
  #absorb(qc: QuorumCertificate, tc: TimeoutCertificate | null, from: PublicKey | null): void {
    // Spec 3.4 step 3: a QC whose Node is known must be a quorum of that Node's rule to certify
    // it. One that is not (counted by another set where its Node was unknown, by a replica behind
    // a change) still shows that a quorum of a set recently in force left its view: it moves the
    // view (so replicas do not split over it), not the highest QC.
    if (qc.view > this.#viewQC.view) this.#viewQC = qc;
    if (qc.view > this.#highQC.view && this.#certifies(qc)) {
      this.#highQC = qc;
      this.#out.safetyDirty = true;
    }
    if (tc !== null && tc.view > (this.#highTC?.view ?? -1)) {
      this.#highTC = tc;
      this.#out.safetyDirty = true;
    }
    const byQC = qc.view + 1;
    const byTC = tc === null ? 0 : tc.view + 1;
    if (Math.max(byQC, byTC) > this.#view) {
      this.#enterView(Math.max(byQC, byTC), byQC >= byTC ? "qc" : "tc");
    }
    if (!this.#knows(qc.nodeHash) && qc.view > this.#tree.root.node.view) this.#requestFetch(from);
  }

  #knows(hash: Hash): boolean {
    return this.#tree.has(hash) || this.#tree.isCommitted(hash);
  }

  /** False iff `qc`'s Node is known and `qc` is not a quorum of the rule that certifies it. */
  #certifies(qc: QuorumCertificate): boolean {
    const config = this.#configs.get(toHex(qc.nodeHash));
    if (qc.view === 0 || config === undefined) return true;
    return certifyingRule(config.parent).countQuorum(qc.signatures).ok;
  }

  // -------------------------------------------------------------------------------------------
  // Spec 8.5: proposing.

  #maybePropose(): void {
    const view = this.#view;
    if (this.#proposedView >= view) return;
    const parent = this.#tree.get(this.#highQC.nodeHash);
    // Spec 8.5 step 1: the parent is the highest QC's Node; wait for it if we do not have it yet,
    // and never justify a Node with a QC of its own view or later.
    if (parent === undefined || this.#highQC.view >= view) return;
    // Spec 3.4 step 5: the leader by the parent's configuration.
    const config = this.#configs.get(toHex(parent.hash));
    if (config === undefined || !bytesEqual(this.#leaderAfter(config.after, view), this.me)) return;
    // Spec 8.5 step 2: a Node not in the view right after its QC carries the TC for its view.
    let tc: TimeoutCertificate | null = null;
    if (this.#highQC.view + 1 < view) {
      if (this.#highTC === null || this.#highTC.view + 1 !== view) return;
      tc = this.#highTC;
    }
    this.#proposedView = view;
    this.#produceFor = { view, qc: this.#highQC, tc };
    this.#out.produce = { view, parent: parent.hash, height: parent.node.height + 1 };
  }

  #onProduced(view: number, command: Uint8Array | null, stateRoot: Uint8Array): void {
    const req = this.#produceFor;
    // Spec 8.5 step 3: only for the request of the current view.
    if (req === null || req.view !== view || view !== this.#view) return;
    this.#produceFor = null;
    if (command === null) return;
    const parent = this.#tree.get(req.qc.nodeHash);
    const parentConfig = this.#configs.get(toHex(req.qc.nodeHash));
    if (parent === undefined || parentConfig === undefined) return;
    const node: Node = {
      view,
      height: parent.node.height + 1,
      parent: parent.hash,
      justify: req.qc,
      command,
      // Spec 3.4 step 8: the configuration that certifies the new Node.
      configHash: validatorConfigHash(
        plantedReconfigBugs.uncheckedConfigHash
          ? stableConfig(parentConfig.after.set)
          : parentConfig.after,
      ),
      proposer: this.me,
      stateRoot,
    };
    // Spec 8.5 step 4: broadcast to everyone, this replica included (it votes like any other).
    this.#out.sends.push({ to: "all", message: { type: "propose", node, tc: req.tc } });
  }

  // -------------------------------------------------------------------------------------------
  // Messages.

  #onMessage(from: PublicKey, msg: ConsensusMessage): void {
    switch (msg.type) {
      case "propose":
        return this.#onPropose(from, msg);
      case "vote":
        return this.#onVote(from, msg);
      case "new-view":
        return this.#onNewView(from, msg);
    }
  }

  /** Spec 4.1: on PROPOSE. */
  #onPropose(from: PublicKey, msg: ProposeMessage): void {
    const node = msg.node;
    const hash = nodeHash(node);
    // Spec 4.1 step 1: only the view's leader proposes (by the parent's configuration when the
    // parent is known, Spec 3.4 step 5, and leader reputation, 3.5; checked again when it
    // attaches, 4.2 step 5).
    const known = this.#configs.get(toHex(node.parent)) ??
      this.#configs.get(toHex(node.justify.nodeHash));
    const config = known?.after ?? this.#tipConfig();
    if (!bytesEqual(node.proposer, this.#leaderAfter(config, node.view))) {
      // The justify QC is signed evidence (verified) and still counts (8.4 step 3): the proposer
      // may be ahead of this replica by a validator-set change (3.4), or this replica's
      // committed history may be short of the reputation window (3.5); it must still learn
      // views and catch up.
      if (
        node.justify.view < node.view ||
        (known === undefined && leaderSet(config).get(node.proposer) === undefined)
      ) {
        this.#absorb(node.justify, null, from);
      }
      return this.#reject(from, "propose", "not-leader", `view ${node.view}`);
    }
    // Spec 4.1 step 2: a proposal for a view before the previous one can no longer be voted
    // for, nor certified by a vote of ours: it is stale (a Node of it that gets certified
    // is fetched by the CatchUp flow), and the justify QC is older than the Node.
    if (node.view + 1 < this.#view) {
      return this.#reject(from, "propose", "stale-view", `view ${node.view}`);
    }
    if (node.justify.view >= node.view) {
      return this.#reject(from, "propose", "justify-not-older", `view ${node.view}`);
    }
    // Spec 4.1 step 3: the view is justified by the QC of the previous view or by a TC for it.
    if (node.justify.view + 1 !== node.view && (msg.tc === null || msg.tc.view + 1 !== node.view)) {
      return this.#reject(from, "propose", "view-not-justified", `view ${node.view}`);
    }
    // Spec 4.1 step 4: detect equivocation; handle at most two proposals per view.
    if (!this.#recordProposal(msg, hash)) return;
    // Spec 4.1 step 5: absorb the certificates it carries (may enter node.view).
    this.#absorb(node.justify, msg.tc, from);
    // Spec 4.1 step 6: already known or in progress: just consider voting.
    const inTree = this.#tree.get(hash);
    if (inTree !== undefined) return this.#tryVote(inTree);
    if (this.#executing.has(toHex(hash))) return;
    // Spec 4.1 step 7: stale Nodes (at or below the committed head) are ignored.
    if (node.height <= this.#tree.root.node.height) {
      return this.#reject(from, "propose", "below-committed", `height ${node.height}`);
    }
    // Spec 4.1 step 8: unknown parent: buffer the proposal and catch up.
    if (!this.#tree.has(node.parent)) {
      this.#bufferPending(msg);
      return this.#requestFetch(from);
    }
    // Spec 4.1 step 9: structural checks against the parent; then ask the Application.
    const problem = this.#checkAttach(node, true);
    if (problem !== null) return this.#reject(from, "propose", problem, `view ${node.view}`);
    this.#startExecute(node, hash, true);
  }

  /** Returns false when the proposal must be dropped (a third one in a view). */
  #recordProposal(msg: ProposeMessage, hash: Hash): boolean {
    const seen = this.#proposals.get(msg.node.view) ?? [];
    if (seen.some((p) => bytesEqual(nodeHash(p.node), hash))) return true;
    if (seen.length > 0) {
      this.#out.events.push({
        type: "equivocation:detect",
        evidence: { kind: "double-proposal", first: seen[0]!, second: msg },
      });
    }
    if (seen.length >= 2) return false;
    if (msg.node.view + 1 >= this.#view) this.#proposals.set(msg.node.view, [...seen, msg]);
    return true;
  }

  /** Spec 4.2: can `node` attach under its parent? Returns a reject reason or null. */
  #checkAttach(node: Node, proposal: boolean): string | null {
    const parent = this.#tree.get(node.parent);
    if (parent === undefined) return "unknown-parent";
    // Spec 4.2 step 1: height is the parent's + 1.
    if (node.height !== parent.node.height + 1) return "bad-height";
    // Spec 4.2 step 2: views strictly increase along a branch.
    if (node.view <= parent.node.view) return "view-not-increasing";
    // Spec 4.2 step 3: the justify QC certifies an ancestor (paper, section 5: "the QC in a
    // valid node refers to its ancestor").
    const j = node.justify.nodeHash;
    if (this.#tree.has(j)) {
      if (!this.#tree.extends(node.parent, j)) return "justify-not-ancestor";
    } else if (!this.#tree.isCommitted(j)) {
      return "justify-unknown";
    }
    // Spec 4.2 step 4: bounded memory.
    if (this.#tree.size >= this.#limits.treeNodesMax) return "tree-full";
    // Spec 4.2 step 5: the justify QC is a quorum of the rule that certifies its Node (Spec 3.4
    // step 3), and a proposal comes from the leader of the parent's configuration.
    if (node.justify.view > 0) {
      const rule = this.#justifyRule(node);
      if (rule === null) return "justify-unknown";
      if (!rule.countQuorum(node.justify.signatures).ok) return "justify-not-quorum";
    }
    const config = this.#configs.get(toHex(node.parent));
    if (config === undefined) return "unknown-parent";
    if (
      proposal && !bytesEqual(node.proposer, this.#leaderAfter(config.after, node.view))
    ) {
      return "not-leader";
    }
    return null;
  }

  /** The rule that certifies the Node `node.justify` names, or null if unknown (Spec 3.4). */
  #justifyRule(node: Node): QuorumRule | null {
    const c = this.#configs.get(toHex(node.justify.nodeHash));
    return c === undefined ? null : certifyingRule(c.parent);
  }

  #startExecute(node: Node, hash: Hash, proposal: boolean): void {
    this.#executing.set(toHex(hash), { node, proposal });
    const justifyRule = proposal || node.justify.view === 0 ? null : this.#justifyRule(node);
    this.#out.execute.push({ node, hash, justifyRule });
  }

  #bufferPending(msg: ProposeMessage): void {
    const key = toHex(msg.node.parent);
    const list = this.#pending.get(key) ?? [];
    if (list.length === 0 && this.#pending.size >= this.#limits.pendingProposalsMax) {
      const oldest = this.#pending.keys().next().value!;
      this.#pending.delete(oldest);
    }
    if (list.length < 2) this.#pending.set(key, [...list, msg]);
  }

  /** Spec 4.3: the Application's verdict on a Node. */
  #onExecuted(hash: Hash, result: ExecutedResult): void {
    const id = toHex(hash);
    const ex = this.#executing.get(id);
    if (ex === undefined) return;
    this.#executing.delete(id);
    // Spec 4.3 step 1: a rejected Node is dropped; so are the fetched Nodes queued behind it.
    if (!result.ok) return this.#dropExecuted(ex, result.reason);
    // Spec 4.3 step 2: the parent may have been pruned by a commit meanwhile.
    const parent = this.#tree.get(ex.node.parent);
    const parentConfig = this.#configs.get(toHex(ex.node.parent));
    if (parent === undefined || parentConfig === undefined || this.#tree.has(hash)) {
      return this.#continueFetched();
    }
    // Spec 3.4 step 8: the Node names the configuration that certifies it.
    if (
      !plantedReconfigBugs.uncheckedConfigHash &&
      !bytesEqual(ex.node.configHash, validatorConfigHash(parentConfig.after))
    ) {
      return this.#dropExecuted(
        ex,
        `height ${ex.node.height} names another validator configuration than its parent's`,
        "config-hash-mismatch",
      );
    }
    // Spec 3.4 steps 1-4: the Node's configuration; a change it cannot make rejects it.
    const next = nextConfig(
      parentConfig.after,
      ex.node,
      parent.node.view,
      result.validatorUpdates ?? [],
    );
    if (!next.ok) return this.#dropExecuted(ex, next.reason);
    const config: NodeConfig = { parent: parentConfig.after, after: next.config };
    // Spec 4.3 step 3: insert and persist (Spec 3.4 step 6: with the configuration record when
    // the configuration changes here or changed at the parent).
    const changed = !sameConfig(config.after, config.parent) ||
      !sameConfig(parentConfig.after, parentConfig.parent);
    const updates = changed
      ? [
        ...result.updates,
        [
          VALIDATOR_CONFIG_KEY,
          encodeConfigRecord({
            height: ex.node.height,
            grandparent: parentConfig.parent,
            parent: config.parent,
            after: config.after,
          }),
        ] as const,
      ]
      : result.updates;
    const stored: StoredNode = { node: ex.node, hash, updates };
    this.#tree.insert(stored);
    this.#setConfig(hash, config);
    // Spec 8.4 step 3: a highest QC taken while its Node was unknown must be a quorum of the
    // Node's rule; if it is not, the Node's own justify (checked when it attached) replaces it.
    if (bytesEqual(this.#highQC.nodeHash, hash) && !this.#certifies(this.#highQC)) {
      this.#highQC = ex.node.justify;
      this.#out.safetyDirty = true;
    }
    this.#out.nodes.push(stored);
    this.#out.events.push({
      type: "node:insert",
      hash,
      height: ex.node.height,
      view: ex.node.view,
    });
    if (!ex.proposal) this.#onFetchedInserted(ex.node);
    // Spec 4.3 step 4: the chain rules (highest QC, lock, commit).
    this.#update(stored);
    // Spec 4.3 step 5: vote if it came as the current proposal.
    if (ex.proposal) this.#tryVote(stored);
    // Spec 9.1 step 4: votes that arrived before the Node count now that its rule is known.
    const qc = this.#votes.tryForm(ex.node.view, hash, certifyingRule(config.parent));
    if (qc !== null) this.#onQCFormed(qc, null);
    // Spec 4.3 step 6: proposals waiting for this Node; the next fetched Node; our proposal.
    this.#wakePending(hash);
    this.#continueFetched();
    this.#maybePropose();
  }

  /** Spec 4.3 step 1: drop a Node the Application (or the handover rules) refused. */
  #dropExecuted(ex: Executing, detail: string, reason = "app-rejected"): void {
    this.#reject(null, "node", reason, detail);
    if (!ex.proposal) this.#fetchQueue = [];
    this.#continueFetched();
  }

  /** Spec 5.2-5.3: `update(b*)` of the paper's Algorithm 4. */
  #update(bStar: StoredNode): void {
    const qc = bStar.node.justify;
    if (qc.view > this.#highQC.view) {
      this.#highQC = qc;
      this.#out.safetyDirty = true;
    }
    const b2 = this.#tree.get(qc.nodeHash);
    if (b2 === undefined || b2 === this.#tree.root && b2.node.height === 0) return;
    const b1 = this.#tree.get(b2.node.justify.nodeHash);
    const b0 = b1 === undefined ? undefined : this.#tree.get(b1.node.justify.nodeHash);
    const chain = { b2, b1, b0 };
    // Spec 5.2: lock on the head of the 2-chain if it is newer.
    const lock = lockCandidate(chain);
    if (lock.view > this.#lockedQC.view) {
      this.#lockedQC = lock;
      this.#out.safetyDirty = true;
      this.#out.events.push({ type: "lock:update", view: lock.view, nodeHash: lock.nodeHash });
    }
    // Spec 5.3: commit on the 3-chain with direct parents.
    const c = commitCandidate(chain);
    if (c !== undefined && c.node.height > this.#tree.root.node.height) this.#commit(c);
  }

  /** Spec 5.4: commit `b` and every uncommitted ancestor, in height order. */
  #commit(b: StoredNode): void {
    // Spec 5.4 step 1: `b` must extend the committed head. If it does not, two conflicting Nodes
    // would both be committed: HotStuff's safety theorem says this cannot happen below 1/3
    // Byzantine power, so it is a bug (or a broken assumption) and the replica stops.
    assert(
      this.#tree.extends(b.hash, this.#tree.root.hash),
      `safety violation: commit of ${toHex(b.hash)} conflicts with committed head`,
    );
    // Spec 5.4 step 2: every uncommitted ancestor first, in height order; the tree drops the
    // branches that do not descend from the new head.
    const { committed: path, pruned } = this.#tree.commit(b.hash);
    // Spec 5.4 step 3: abandoned branches leave storage too.
    this.#out.prune.push(...pruned);
    for (const h of pruned) this.#configs.delete(toHex(h));
    for (const e of path) {
      this.#committedConfigs.push(toHex(e.hash));
      if (this.#committedConfigs.length > COMMITTED_KEPT) {
        this.#configs.delete(this.#committedConfigs.shift()!);
      }
      this.#remember(e.node);
      this.#out.commits.push(e);
      this.#out.events.push({
        type: "node:commit",
        hash: e.hash,
        height: e.node.height,
        view: e.node.view,
      });
    }
  }

  /** Spec 5.1: vote for the current view's proposal if the safety rules allow it. */
  #tryVote(stored: StoredNode): void {
    if (stored.node.view !== this.#view) return;
    const config = this.#configs.get(toHex(stored.hash));
    assert(config !== undefined, "every Node in the tree has a configuration");
    // Spec 3.4 step 3: only members of the rule that certifies the Node vote for it.
    if (!certifyingRule(config.parent).isMember(this.me)) return;
    if (!safeToVote(this.#tree, stored, this.#lastVotedView, this.#lockedQC)) return;
    // Spec 5.1 step 3: remember the vote before it leaves (the write precedes the send, 10.1).
    this.#lastVotedView = stored.node.view;
    this.#lastVoteHash = stored.hash;
    this.#out.safetyDirty = true;
    // Spec 5.1 step 4: the vote goes to the next view's leader, which forms the QC (by the
    // voted Node's configuration, Spec 3.4 step 5: the next proposal extends it).
    this.#out.sends.push({
      to: this.#leaderAfter(config.after, stored.node.view + 1),
      message: { type: "vote", view: stored.node.view, nodeHash: stored.hash },
    });
    this.#out.events.push({ type: "vote:send", view: stored.node.view, nodeHash: stored.hash });
  }

  #wakePending(hash: Hash): void {
    const key = toHex(hash);
    const waiting = this.#pending.get(key);
    if (waiting === undefined) return;
    this.#pending.delete(key);
    for (const msg of waiting) this.#onPropose(msg.node.proposer, msg);
  }

  /** Spec 9.1: on VOTE (only the next view's leader collects). */
  #onVote(from: PublicKey, vote: VoteMessage): void {
    // Spec 9.1 step 1: addressed to the leader of the view after the vote's (by the voted Node's
    // configuration, or, while it is unknown, by this replica's highest certified Node's).
    const config = this.#configs.get(toHex(vote.nodeHash))?.after ?? this.#tipConfig();
    if (!bytesEqual(this.#leaderAfter(config, vote.view + 1), this.me)) {
      return this.#reject(from, "vote", "not-next-leader", `view ${vote.view}`);
    }
    // Spec 9.1 step 2: not stale, not too far ahead.
    if (vote.view + 1 < this.#view) {
      return this.#reject(from, "vote", "stale-view", `view ${vote.view}`);
    }
    if (vote.view > this.#view + this.#limits.viewsAheadMax) {
      return this.#reject(from, "vote", "far-future-view", `view ${vote.view}`);
    }
    this.#collectVote(from, vote);
  }

  /** Spec 9.1 steps 3-4: count a vote; on a quorum, form the QC and absorb it. */
  #collectVote(from: PublicKey, vote: VoteMessage): void {
    // Spec 3.4 step 3: counted by the rule that certifies the voted Node. While it is unknown:
    // by the one rule this replica knows, if it knows only one (no change seen); else kept, and
    // counted once the Node is inserted. (A QC counted by a rule that turns out not to be its
    // Node's is refused wherever the Node is known: 4.2 step 5, 8.4 step 3.)
    const config = this.#configs.get(toHex(vote.nodeHash));
    const rule = config !== undefined
      ? certifyingRule(config.parent)
      : this.#rules.size === 1
      ? certifyingRule(this.#tipConfig())
      : null;
    const r = this.#votes.add(vote, rule);
    if (r.equivocation !== undefined) {
      this.#out.events.push({ type: "equivocation:detect", evidence: r.equivocation });
    }
    if (r.certificate !== undefined) this.#onQCFormed(r.certificate, from);
  }

  /** Spec 9.1 step 4: a QC formed here: absorb it (enters the next view and proposes). */
  #onQCFormed(qc: QuorumCertificate, from: PublicKey | null): void {
    this.#out.events.push({ type: "qc:form", view: qc.view, nodeHash: qc.nodeHash });
    this.#absorb(qc, null, from);
    this.#maybePropose();
  }

  /** Spec 9.2: on NEW-VIEW. */
  #onNewView(from: PublicKey, msg: NewViewMessage): void {
    // Spec 9.2 step 1: the certificates it carries are signed evidence: absorb them.
    this.#absorb(msg.highQC, msg.highTC, from);
    // Spec 9.2 step 2: only the current and future views count towards a TC.
    if (msg.view < this.#view) {
      return this.#reject(from, "new-view", "stale-view", `view ${msg.view}`);
    }
    if (msg.view > this.#view + this.#limits.viewsAheadMax) {
      return this.#reject(from, "new-view", "far-future-view", `view ${msg.view}`);
    }
    // Spec 9.2 step 3: an attached vote counts towards the QC of its view at every replica, so
    // a QC forms even when the leader the vote was sent to is down.
    if (msg.vote !== null) {
      this.#collectVote(from, {
        type: "vote",
        view: msg.view,
        nodeHash: msg.vote.nodeHash,
        signer: msg.signer,
        signature: msg.vote.signature,
      });
    }
    // Spec 3.4 step 5: NEW-VIEWs count by the rule of this replica's highest certified Node.
    const r = this.#newViews.add(msg, certifyingRule(this.#tipConfig()));
    // Spec 9.2 step 4: a TC: enter the next view.
    if (r.certificate !== undefined) {
      this.#out.events.push({ type: "tc:form", view: r.certificate.view });
      this.#absorb(this.#highQC, r.certificate, null);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Spec 4.4: the CatchUp flow inside the core.

  /** True while fetched Nodes are queued or one of them is being executed. */
  #catchingUp(): boolean {
    if (this.#fetchQueue.length > 0) return true;
    for (const ex of this.#executing.values()) if (!ex.proposal) return true;
    return false;
  }

  /** Catches up from the committed head, unless a catch-up is under way. */
  #requestFetch(from: PublicKey | null): void {
    if (this.#catchingUp()) return;
    this.#ask(from, this.#tree.root.node.height + 1);
  }

  /** Sends a catch-up request unless one is in flight; returns whether it did. */
  #ask(from: PublicKey | null, fromHeight: number): boolean {
    if (this.#fetchInFlight !== null || this.#out.fetch !== null) return false;
    this.#fetchInFlight = { deadline: this.#now + this.#pacemaker.viewTimeoutMinMs };
    const peer = from !== null && bytesEqual(from, this.me) ? null : from;
    this.#out.fetch = { from: peer, fromHeight, limit: this.#limits.catchUpNodesMax };
    this.#out.events.push({ type: "catchup:request", from: peer, fromHeight });
    return true;
  }

  #onFetched(from: PublicKey, nodes: readonly Node[]): void {
    this.#fetchInFlight = null;
    this.#out.events.push({ type: "catchup:receive", from, nodes: nodes.length });
    // Spec 4.4 step 1: queue the Nodes we lack, in height order; at most two answers (a late
    // answer to an expired request could make three: its tail is dropped, and fetched again).
    const queueMax = 2 * this.#limits.catchUpNodesMax;
    let first: number | null = null;
    let taken = 0;
    for (const node of nodes) {
      if (this.#fetchQueue.length >= queueMax) break;
      taken++;
      if (node.height <= this.#tree.root.node.height) continue;
      const hash = nodeHash(node);
      if (this.#tree.has(hash) || this.#executing.has(toHex(hash))) continue;
      this.#fetchQueue.push({ node, hash });
      first ??= node.height;
    }
    assert(this.#fetchQueue.length <= queueMax, "the fetch queue holds at most two answers");
    // Spec 4.4 step 2: the next request is decided once this answer makes progress.
    const last = nodes[taken - 1];
    this.#answer = first === null || last === undefined ? null : {
      from,
      firstHeight: first,
      nextHeight: last.height + 1,
      full: taken < nodes.length || nodes.length >= this.#limits.catchUpNodesMax,
      progress: false,
    };
    this.#continueFetched();
  }

  /** A fetched Node was inserted: progress of the CatchUp flow. */
  #onFetchedInserted(node: Node): void {
    // Spec 4.4 step 4: progress pushes the view's timeout back (no NEW-VIEW while catching up);
    // an early tick re-arms for the new deadline (8.3).
    const timeout = viewTimeout(this.#pacemaker, this.#failures);
    this.#deadline = Math.max(this.#deadline, this.#now + timeout);
    const a = this.#answer;
    if (a === null || a.progress || node.height < a.firstHeight) return;
    a.progress = true;
    // Spec 4.4 step 2: after a full answer, ask for the next one now, so that it is fetched and
    // verified while this one executes (one request in flight, at most two answers queued).
    if (a.full && this.#ask(a.from, a.nextHeight)) this.#answer = null;
  }

  /** Spec 4.4 step 3: execute queued fetched Nodes one at a time, each after its parent. */
  #continueFetched(): void {
    for (const ex of this.#executing.values()) if (!ex.proposal) return;
    while (this.#fetchQueue.length > 0) {
      const { node, hash } = this.#fetchQueue.shift()!;
      // Spec 4.4 step 3: committed meanwhile (an overlapping answer) or known: nothing to do.
      if (node.height <= this.#tree.root.node.height || this.#tree.has(hash)) continue;
      const problem = this.#checkAttach(node, false);
      if (problem !== null) {
        this.#reject(null, "fetched-node", problem, `height ${node.height}`);
        continue;
      }
      return this.#startExecute(node, hash, false);
    }
    // Spec 4.4 step 2: the answer is done. Only a peer whose answer made progress is asked again:
    // a Byzantine peer that serves useless Nodes cannot keep the CatchUp flow busy forever.
    const a = this.#answer;
    this.#answer = null;
    if (a === null || !a.progress) return;
    const wanted = a.full || !this.#knows(this.#highQC.nodeHash) || this.#pending.size > 0;
    if (wanted) this.#requestFetch(a.from);
  }
}
