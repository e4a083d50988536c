/**
 * The deterministic simulator: the real Engine and core of n replicas in one process, a virtual
 * clock, a seeded network that delays, drops, duplicates, reorders and partitions, crashes and
 * restarts from storage, and Byzantine replicas. Checkers watch every run for safety and
 * liveness. The same options and seed give the same run; {@link SimReport.traceHash} shows it.
 * See SPECIFICATION.md section 11.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { type Application, wrapApplication } from "../app.ts";
import { nodeHash, signedBytes } from "../codec.ts";
import type { PacemakerOptions } from "../consensus/pacemaker.ts";
import type { ReputationOptions } from "../consensus/reputation.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
import { Engine } from "../runtime/engine.ts";
import type { Clock, Network, NodeSource } from "../runtime/engine.ts";
import { AssertionError } from "../errors.ts";
import type { ConsensusEvent, EquivocationEvidence } from "../events.ts";
import { MemoryEvidenceStore } from "../evidence.ts";
import { MemoryStorage } from "../storage/memory.ts";
import {
  type StateUpdate,
  type Storage,
  type StoredNode,
  wrapStorage,
  type WriteBatch,
} from "../storage/storage.ts";
import type { ConsensusMessage, Node, QuorumCertificate, TimeoutCertificate } from "../types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../types.ts";
import { ValidatorSet } from "../validators.ts";
import { FastSignatures } from "./fast_signatures.ts";
import { Random } from "./random.ts";
import { counterApp } from "./counter_app.ts";
import { StateRoots, withStateRoots } from "../state/roots.ts";
import { StateTree } from "../state/tree.ts";
import type { NodeConfig, ValidatorUpdate } from "../consensus/reconfig.ts";
import {
  applyUpdates,
  certifyingRule,
  nextConfig,
  nodeConfigOf,
  plantedReconfigBugs,
  sameConfig,
  stableConfig,
  validatorConfigHash,
} from "../consensus/reconfig.ts";
import {
  buildCommitProof,
  decodeCommitProof,
  encodeCommitProof,
  PROOF_LOOKAHEAD_NODES,
  verifyCommitProof,
} from "../light/commit_proof.ts";
import { genesisNode } from "../codec.ts";

/**
 * What a simulated validator does.
 * - `honest`: runs the real Engine.
 * - `silent`: never sends anything.
 * - `equivocator`: as leader, sends two different proposals to two halves, later both to all.
 * - `double-voter`: every vote it casts is followed by a conflicting one.
 * - `stale`: replays old messages it has seen and sends NEW-VIEWs for old views.
 * - `future`: also sends far-future NEW-VIEWs, votes and unjustified proposals.
 * - `forker`: as leader, sends the real proposal to one replica and a fork on an older QC to
 *   the others.
 * - `forger`: as leader, forges a 3-chain whose QCs repeat its own signature, a different one
 *   for each of two replicas.
 * - `twin`: two honest Engines share the validator's key (Twins, Bano et al. 2021).
 *
 * @example
 * ```ts
 * import { type Behaviour, runSimulation } from "./sim.ts";
 * import { quietFaults } from "./scenario.ts";
 * const behaviours: Behaviour[] = ["honest", "honest", "honest", "equivocator"];
 * const report = await runSimulation({ seed: 1, powers: [1, 1, 1, 1], behaviours, faults: quietFaults(0) });
 * console.log(report.equivocationsDetected > 0);
 * ```
 */
export type Behaviour =
  | "honest"
  | "silent"
  | "equivocator"
  | "double-voter"
  | "stale"
  | "future"
  | "forker"
  | "forger"
  | "twin"
  | "scripted";

/**
 * What a scripted Byzantine validator may do (see {@link SimOptions.adversaries}). It signs only
 * with its own key.
 *
 * @example
 * ```ts
 * import type { Adversary, AdversaryApi } from "./sim.ts";
 * // Replays every message this validator sends to validator 0 once more.
 * const echo: Adversary = {
 *   onSend: async (api: AdversaryApi, message) => {
 *     api.send(0, message);
 *   },
 * };
 * ```
 */
export interface AdversaryApi {
  /** Virtual time, ms. */
  readonly time: number;
  /** The validator set (leader schedule, quorum maths). */
  readonly validators: ValidatorSet;
  /** The adversary's own endpoint id. */
  readonly self: number;
  /** Its own honest Engine (read its core's state; it keeps running underneath). */
  readonly engine: Engine | null;
  /** Sends a message to one endpoint (subject to the network's faults). */
  send(to: number, message: ConsensusMessage): void;
  /** Sends a message to every other endpoint. */
  broadcast(message: ConsensusMessage): void;
  /** Signs a proposal of `node`. */
  propose(node: Node, tc: TimeoutCertificate | null): Promise<ConsensusMessage>;
  /** Signs a vote. */
  vote(view: number, nodeHash: Uint8Array): Promise<ConsensusMessage>;
  /** Endpoint ids of a validator's key. */
  endpointsOf(publicKey: Uint8Array): number[];
  /**
   * The state root as of `parent` (what a child of it must carry, SPECIFICATION.md 7), if an
   * honest replica executed `parent` (or it is genesis); empty when the run has no state roots.
   */
  stateRoot(parent: Uint8Array): Uint8Array | null;
}

/**
 * A scripted Byzantine validator: hooks the simulator calls instead of its Engine's sends.
 *
 * @example
 * ```ts
 * import { type Adversary, runSimulation } from "./sim.ts";
 * import { quietFaults } from "./scenario.ts";
 * // A validator that stays silent: it drops everything it would send.
 * const mute: Adversary = { onSend: async () => {} };
 * const report = await runSimulation({
 *   seed: 3,
 *   powers: [1, 1, 1, 1],
 *   behaviours: ["honest", "honest", "honest", "scripted"],
 *   adversaries: { 3: mute },
 *   faults: quietFaults(0),
 * });
 * ```
 */
export interface Adversary {
  /** Its Engine wants to send `message`; nothing is sent unless the hook sends it. */
  onSend?(api: AdversaryApi, message: ConsensusMessage, to: Uint8Array | "all"): Promise<void>;
  /** A message was delivered to it (after its Engine got it). */
  onDeliver?(api: AdversaryApi, from: number, message: ConsensusMessage): Promise<void>;
}

/**
 * A network partition during `[start, end)`: messages pass only inside a group.
 *
 * @example
 * ```ts
 * import type { PartitionWindow } from "./sim.ts";
 * // From 1 s to 3 s, replicas 0 and 1 cannot reach 2 and 3.
 * const split: PartitionWindow = { start: 1_000, end: 3_000, groups: [[0, 1], [2, 3]] };
 * ```
 */
export interface PartitionWindow {
  /** Start, virtual ms. */
  readonly start: number;
  /** End, virtual ms. */
  readonly end: number;
  /** Groups of endpoint ids; an endpoint in no group is isolated. */
  readonly groups: readonly (readonly number[])[];
}

/**
 * A crash of an endpoint at `at`, restarted from its storage at `restartAt` (or never).
 *
 * @example
 * ```ts
 * import type { CrashEvent } from "./sim.ts";
 * const crash: CrashEvent = { endpoint: 2, at: 500, restartAt: 1_500 }; // null: never restarts
 * ```
 */
export interface CrashEvent {
  /** Endpoint id. */
  readonly endpoint: number;
  /** When, virtual ms. */
  readonly at: number;
  /** When it restarts, or null for never. */
  readonly restartAt: number | null;
}

/**
 * The faults of one run. Every fault stops at `healAt`.
 *
 * @example
 * ```ts
 * import type { FaultPlan } from "./sim.ts";
 * const lossy: FaultPlan = {
 *   dropRate: 0.1,
 *   duplicateRate: 0.05,
 *   delayMinMs: 1,
 *   delayMaxMs: 100,
 *   partitions: [],
 *   crashes: [],
 *   crashOnWriteRate: 0.01,
 *   healAt: 3_000,
 * };
 * ```
 */
export interface FaultPlan {
  /** Probability a message is dropped. */
  readonly dropRate: number;
  /** Probability a message is delivered twice. */
  readonly duplicateRate: number;
  /** Smallest one-way delay, ms. */
  readonly delayMinMs: number;
  /** Largest one-way delay, ms (random delays reorder messages). */
  readonly delayMaxMs: number;
  /** Partitions. */
  readonly partitions: readonly PartitionWindow[];
  /** Crashes and restarts. */
  readonly crashes: readonly CrashEvent[];
  /** Probability that a storage write crashes its replica just before or after it lands. */
  readonly crashOnWriteRate: number;
  /** When faults stop: then delays are at most `healedDelayMaxMs`, nothing is lost. */
  readonly healAt: number;
  /** Largest delay after healing, ms. Default 20. */
  readonly healedDelayMaxMs?: number;
}

/**
 * Options of {@link runSimulation}.
 *
 * @example
 * ```ts
 * import { runSimulation, type SimOptions } from "./sim.ts";
 * import { quietFaults } from "./scenario.ts";
 * const options: SimOptions = { seed: 9, powers: [1, 1, 1, 1], faults: quietFaults(0), signatures: "fast" };
 * const report = await runSimulation(options);
 * ```
 */
export interface SimOptions {
  /** The seed: same seed and options, same run. */
  readonly seed: number;
  /** Voting power of each validator. */
  readonly powers: readonly number[];
  /** Behaviour of each validator (default: all honest). */
  readonly behaviours?: readonly Behaviour[];
  /** The faults. */
  readonly faults: FaultPlan;
  /** After healing, every honest replica must commit within this long. Default 30000. */
  readonly livenessWindowMs?: number;
  /** New commits each honest replica must make after healing. Default 3. */
  readonly livenessCommits?: number;
  /** Pacemaker timing. Default: 200 ms min, 3200 ms max. */
  readonly pacemaker?: PacemakerOptions;
  /** Leader reputation of every replica (Spec 3.5): default on; null for the plain schedule. */
  readonly reputation?: ReputationOptions | null;
  /** `fast` (default; simulation-only MAC) or `ed25519` (real signatures). */
  readonly signatures?: "fast" | "ed25519";
  /** The Application of each endpoint (default: a counter). */
  readonly app?: (endpoint: number) => Application;
  /**
   * Give every endpoint's Application state roots (SPECIFICATION.md 7) over a state tree built
   * from its storage at each boot, so every Node carries and every replica checks a root; the
   * checker then proves each committed Node's root is the state of the committed chain below it.
   * Default true.
   */
  readonly stateRoots?: boolean;
  /** Receives every trace line (for debugging a seed). */
  readonly trace?: (line: string) => void;
  /**
   * Twins-style partitions by view: entry `v - 1` gives the groups for messages of view `v`
   * (an endpoint in no group is cut off); null or absent means fully connected. Like every
   * fault, they stop at `faults.healAt`.
   */
  readonly viewPartitions?: readonly (readonly (readonly number[])[] | null)[];
  /** Leader (validator index, in input order) of views 1, 2, ...; then the default schedule. */
  readonly leaders?: readonly number[];
  /** Hard stop on processed events (guards against runaway runs). Default 2,000,000. */
  readonly eventsMax?: number;
  /** Scripted Byzantine validators (behaviour `scripted`), by validator index. */
  readonly adversaries?: Readonly<Record<number, Adversary>>;
  /**
   * How many of `powers` (the first ones) form the genesis validator set; the others start as
   * followers and may join through `changes`. Default: all.
   */
  readonly genesisValidators?: number;
  /**
   * Validator-set changes the default Application makes (SPECIFICATION.md 3.4): each by the first
   * Node at or above `atHeight` outside a handover, in order.
   */
  readonly changes?: readonly SimChange[];
}

/**
 * A planned validator-set change of a simulation, by validator index.
 *
 * @example
 * ```ts
 * import type { SimChange } from "./sim.ts";
 * const addFifth: SimChange = { atHeight: 20, updates: [{ validator: 4, power: 1 }] };
 * ```
 */
export interface SimChange {
  /** The lowest height of the Node that makes it. */
  readonly atHeight: number;
  /** New powers by validator index (0 removes). */
  readonly updates: readonly { readonly validator: number; readonly power: number }[];
}

/**
 * The outcome of one run.
 *
 * @example
 * ```ts
 * import { runSimulation, type SimReport } from "./sim.ts";
 * import { quietFaults } from "./scenario.ts";
 * const report: SimReport = await runSimulation({ seed: 9, powers: [1, 1, 1, 1], faults: quietFaults(0) });
 * console.log(report.traceHash); // the same seed gives the same hash
 * ```
 */
export interface SimReport {
  /** The seed. */
  readonly seed: number;
  /** Safety violations found (empty when safe). */
  readonly safetyViolations: string[];
  /** Liveness failures found (empty when live). */
  readonly livenessFailures: string[];
  /** SHA-256 over the trace: equal for equal runs. */
  readonly traceHash: string;
  /** Highest committed height of each honest endpoint at the end. */
  readonly committedHeights: number[];
  /** Highest view any honest endpoint reached. */
  readonly maxView: number;
  /** Messages delivered. */
  readonly delivered: number;
  /** Virtual time at the end, ms. */
  readonly endedAt: number;
  /** Equivocations reported by honest replicas. */
  readonly equivocationsDetected: number;
  /** Validator-set changes started and handed over on the longest honest committed chain. */
  readonly handovers: { readonly started: number; readonly completed: number };
  /** The verified evidence each honest endpoint stored (Spec 16.2), in endpoint order. */
  readonly evidence: readonly (readonly EquivocationEvidence[])[];
  /**
   * The height up to which a light client trusting only the genesis set verified the longest
   * honest committed chain, following its validator-set changes (SPECIFICATION.md 15.1).
   */
  readonly lightClientHeight: number;
}

/** Thrown by the crash-injecting storage wrapper: the replica "loses power" here. */
class SimulatedCrash extends Error {}

interface Endpoint {
  readonly id: number;
  readonly validator: number;
  readonly behaviour: Behaviour;
  readonly signer: Signer;
  readonly storage: MemoryStorage;
  /** Verified evidence this endpoint stored (kept over restarts, like its storage). */
  readonly evidence: MemoryEvidenceStore;
  engine: Engine | null;
  timerGen: number;
  /** Committed hashes (hex) by height - 1, across restarts. */
  readonly chain: string[];
  heightAtHeal: number | null;
  /** Messages seen (stale behaviour replays them). */
  readonly seen: ConsensusMessage[];
  /** Nodes a Byzantine endpoint has seen, by hash (bounded). */
  readonly known: Map<string, Node>;
  /** QCs a Byzantine endpoint has seen (bounded). */
  readonly qcs: QuorumCertificate[];
  /** Fake Nodes a forger serves, by the endpoint it forged them for. */
  readonly forged: Map<number, Node[]>;
}

interface Scheduled {
  readonly at: number;
  readonly seq: number;
  readonly run: () => Promise<void>;
}

/** A binary min-heap of scheduled actions ordered by (time, sequence). */
class Agenda {
  readonly #heap: Scheduled[] = [];
  #seq = 0;

  get size(): number {
    return this.#heap.length;
  }

  push(at: number, run: () => Promise<void>): void {
    const h = this.#heap;
    h.push({ at, seq: this.#seq++, run });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!Agenda.#less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): Scheduled | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && Agenda.#less(h[l]!, h[m]!)) m = l;
        if (r < h.length && Agenda.#less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }

  static #less(a: Scheduled, b: Scheduled): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
}

const DEFAULT_SIM_PACEMAKER: PacemakerOptions = { viewTimeoutMinMs: 200, viewTimeoutMaxMs: 3200 };
const CHAIN_ID = "sim";
/** Heights a light client asks per proof in the end-of-run check. */
const LIGHT_PROOF_HEIGHTS = 64;
/** States after Nodes the adversaries' oracle keeps (see `#states`); then it starts over. */
const STATES_KEPT_MAX = 8192;

/**
 * One simulation run. Use {@link runSimulation}.
 */
class Simulation {
  readonly o: SimOptions;
  readonly rng: Random;
  readonly agenda = new Agenda();
  readonly validators: ValidatorSet;
  readonly endpoints: Endpoint[] = [];
  readonly verifier: Verifier;
  readonly #hash = sha256.create();
  readonly safety: string[] = [];
  readonly liveness: string[] = [];
  /** height -> committed hash hex (first honest committer). */
  readonly #committedAt = new Map<number, string>();
  /** `${validator}:${view}` -> node hash hex, for honest voters. */
  readonly #votes = new Map<string, string>();
  /** Validator updates the Application returned, by Node hash hex (for the certificate check). */
  readonly #changes = new Map<string, readonly ValidatorUpdate[]>();
  /**
   * What Byzantine endpoints know of the state: the state after each Node an honest replica
   * executed (or the forger executed), by Node hash (hex). The state is public, so an adversary
   * can put the right root into a Node it makes. Validator-set records are not in it: exact in
   * runs without changes, which are the runs with Byzantine proposers.
   */
  readonly #states = new Map<string, ReadonlyMap<string, readonly [Uint8Array, Uint8Array]>>();
  readonly #plan: { atHeight: number; updates: ValidatorUpdate[] }[];
  /** The validator set once every planned change is made. */
  readonly #finalSet: ValidatorSet;
  handovers = { started: 0, completed: 0 };
  /** The configuration after each height of the longest honest chain (`#checkCertificates`). */
  #chainConfigs: NodeConfig[] = [];
  /** The height a light client following that chain reached (`#checkLightClient`). */
  #lightHeight = 0;
  time = 0;
  delivered = 0;
  equivocations = 0;
  maxView = 0;

  constructor(options: SimOptions) {
    this.o = options;
    this.rng = new Random(options.seed);
    const behaviours = options.behaviours ?? options.powers.map(() => "honest" as const);
    const fast = new FastSignatures();
    const useFast = (options.signatures ?? "fast") === "fast";
    this.verifier = useFast ? fast.verifier : ed25519Verifier();
    const signers = options.powers.map((_, i) => {
      const sk = deriveSecretKey(`sim-validator-${i}`);
      return useFast ? fast.signer(sk) : ed25519Signer(sk);
    });
    const members = signers.map((s, i) => ({ publicKey: s.publicKey, power: options.powers[i]! }))
      .slice(0, options.genesisValidators ?? signers.length);
    const sorted = new ValidatorSet(members).validators;
    const leaders = options.leaders ?? [];
    const sortedIndex = leaders.map((v) =>
      sorted.findIndex((m) => bytesEqual(m.publicKey, signers[v]!.publicKey))
    );
    this.#plan = (options.changes ?? []).map((c) => ({
      atHeight: c.atHeight,
      updates: c.updates.map((u) => ({
        publicKey: signers[u.validator]!.publicKey,
        power: u.power,
      })),
    }));
    this.validators = new ValidatorSet(members, {
      leaderSchedule: (view) =>
        view >= 1 && view <= leaders.length ? sortedIndex[view - 1] : undefined,
    });
    this.#finalSet = this.#plan.reduce((set, c) => applyUpdates(set, c.updates), this.validators);
    for (let v = 0; v < signers.length; v++) {
      const b = behaviours[v] ?? "honest";
      const copies = b === "twin" ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        this.endpoints.push({
          id: this.endpoints.length,
          validator: v,
          behaviour: b,
          signer: signers[v]!,
          storage: new MemoryStorage(),
          evidence: new MemoryEvidenceStore(),
          engine: null,
          timerGen: 0,
          chain: [],
          heightAtHeal: null,
          seen: [],
          known: new Map(),
          qcs: [],
          forged: new Map(),
        });
      }
    }
  }

  get healAt(): number {
    return this.o.faults.healAt;
  }

  get endAt(): number {
    return this.healAt + (this.o.livenessWindowMs ?? 30_000);
  }

  honest(e: Endpoint): boolean {
    return e.behaviour === "honest";
  }

  trace(line: string): void {
    const l = `${this.time} ${line}`;
    this.#hash.update(new TextEncoder().encode(l + "\n"));
    this.o.trace?.(l);
  }

  // -------------------------------------------------------------------------------------------
  // Running.

  async run(): Promise<SimReport> {
    for (const e of this.endpoints) {
      if (e.behaviour !== "silent") this.agenda.push(0, () => this.#boot(e));
    }
    for (const c of this.o.faults.crashes) {
      const e = this.endpoints[c.endpoint];
      if (e === undefined) continue;
      this.agenda.push(c.at, () => this.#crash(e, c.restartAt));
    }
    this.agenda.push(this.healAt, () => this.#heal());
    const eventsMax = this.o.eventsMax ?? 2_000_000;
    let events = 0;
    while (this.agenda.size > 0) {
      const next = this.agenda.pop()!;
      if (next.at > this.endAt) break;
      this.time = next.at;
      await next.run();
      if (++events >= eventsMax) {
        this.liveness.push(`event budget of ${eventsMax} exhausted at ${this.time} ms`);
        break;
      }
      if (this.time > this.healAt && this.#liveEnough()) break;
    }
    for (const e of this.endpoints) {
      await e.engine?.evidenceIdle();
      await e.engine?.stop();
    }
    this.#checkLiveness();
    await this.#checkCertificates();
    await this.#checkStateRoots();
    await this.#checkLightClient();
    const evidence = await Promise.all(
      this.endpoints.filter((e) => this.honest(e)).map((e) => e.evidence.list(0, 1024)),
    );
    return {
      seed: this.o.seed,
      safetyViolations: this.safety,
      livenessFailures: this.liveness,
      traceHash: toHex(this.#hash.digest()),
      committedHeights: this.endpoints.filter((e) => this.honest(e)).map((e) => e.chain.length),
      maxView: this.maxView,
      delivered: this.delivered,
      endedAt: this.time,
      equivocationsDetected: this.equivocations,
      handovers: this.handovers,
      evidence: evidence.map((list) => list.map((x) => x.evidence)),
      lightClientHeight: this.#lightHeight,
    };
  }

  #liveEnough(): boolean {
    const need = this.o.livenessCommits ?? 3;
    return this.endpoints.every((e) =>
      !this.honest(e) ||
      (e.heightAtHeal !== null && e.chain.length >= e.heightAtHeal + need && this.#handedOver(e))
    );
  }

  /** The endpoint has committed every planned validator-set change, each handed over. */
  #handedOver(e: Endpoint): boolean {
    if (this.#plan.length === 0 || e.engine === null) return true;
    const c = e.engine.core.committedConfig;
    return c.next === null && sameSet(c.set, this.#finalSet);
  }

  #checkLiveness(): void {
    const need = this.o.livenessCommits ?? 3;
    for (const e of this.endpoints) {
      if (!this.honest(e)) continue;
      if (e.engine === null && e.heightAtHeal === null) continue;
      const base = e.heightAtHeal ?? 0;
      if (!this.#handedOver(e)) {
        this.liveness.push(`endpoint ${e.id} did not commit every planned validator-set change`);
      }
      if (e.chain.length < base + need) {
        this.liveness.push(
          `endpoint ${e.id} committed ${e.chain.length - base} of ${need} Nodes within ` +
            `${this.endAt - this.healAt} ms after healing (height ${e.chain.length}, view ${
              e.engine?.core.view ?? "down"
            })`,
        );
      }
    }
  }

  #heal(): Promise<void> {
    this.trace("heal");
    for (const e of this.endpoints) {
      if (e.behaviour === "silent") continue;
      e.heightAtHeal = e.chain.length;
    }
    return Promise.resolve();
  }

  async #boot(e: Endpoint): Promise<void> {
    this.trace(`boot ${e.id}`);
    // Restart: the committed chain in storage must be exactly what it committed before, plus
    // whatever landed durably just before a power loss (its commit events were never emitted).
    const head = await e.storage.committedHead();
    for (let h = 1; h <= Math.max(e.chain.length, head?.height ?? 0); h++) {
      const stored = await e.storage.committedHash(h);
      if (h > e.chain.length && stored !== null) {
        this.#recordCommit(e, h, toHex(stored));
      } else if (stored === null || toHex(stored) !== e.chain[h - 1]) {
        this.safety.push(`endpoint ${e.id} lost or changed committed height ${h} over a restart`);
        break;
      }
    }
    const engine = await Engine.open({
      chainId: CHAIN_ID,
      validators: this.validators,
      signer: e.signer,
      verifier: this.verifier,
      storage: this.#storageFor(e),
      app: await this.#appFor(e),
      network: this.#networkFor(e),
      nodeSource: this.#nodeSourceFor(e),
      clock: this.#clockFor(e),
      pacemaker: this.o.pacemaker ?? DEFAULT_SIM_PACEMAKER,
      reputation: this.o.reputation,
      evidence: e.evidence,
      onEvent: (ev) => this.#onEvent(e, ev),
      onSend: (m) => this.#onSend(e, m),
    });
    e.engine = engine;
    engine.start();
    await this.#settle(e);
  }

  /** The endpoint's Application, with its validator updates recorded for the checker. */
  async #appFor(e: Endpoint): Promise<Application> {
    const app = await this.#withRoots(e, this.o.app?.(e.id) ?? counterApp(this.#plan));
    return wrapApplication(app, {
      validateNode: async (r) => {
        const result = await app.validateNode(r);
        if (result.ok && result.validatorUpdates !== undefined && this.honest(e)) {
          this.#changes.set(toHex(r.hash), result.validatorUpdates);
        }
        if (result.ok && this.honest(e)) this.#recordState(r.node, r.hash, result.updates);
        return result;
      },
    });
  }

  #recordState(node: Node, hash: Uint8Array, updates: readonly StateUpdate[]): void {
    const before = this.#stateAfter(node.parent);
    if (before === undefined) return;
    const after = new Map(before);
    for (const [k, v] of updates) {
      if (v === null) after.delete(toHex(k));
      else after.set(toHex(k), [k, v]);
    }
    if (this.#states.size >= STATES_KEPT_MAX) this.#states.clear();
    this.#states.set(toHex(hash), after);
  }

  #stateAfter(
    hash: Uint8Array,
  ): ReadonlyMap<string, readonly [Uint8Array, Uint8Array]> | undefined {
    if (bytesEqual(hash, nodeHash(genesisNode(CHAIN_ID)))) return new Map();
    return this.#states.get(toHex(hash));
  }

  /** See {@link AdversaryApi.stateRoot}. */
  stateRootAfter(parent: Uint8Array): Uint8Array | null {
    if (this.o.stateRoots === false) return new Uint8Array(0);
    const state = this.#stateAfter(parent);
    if (state === undefined) return null;
    const tree = new StateTree();
    tree.apply([...state.values()]);
    return tree.root();
  }

  /**
   * Executes a Node an adversary made with `e`'s Application, on the state after its parent, so
   * that the adversary knows the state after it (and the roots of its children). False when the
   * parent's state is unknown or the Application rejects the Node.
   */
  async adversaryExecute(e: Endpoint, node: Node): Promise<boolean> {
    if (this.o.stateRoots === false) return true;
    const before = this.#stateAfter(node.parent);
    if (before === undefined) return false;
    const app = this.o.app?.(e.id) ?? counterApp(this.#plan);
    const state = { get: (k: Uint8Array) => Promise.resolve(before.get(toHex(k))?.[1] ?? null) };
    const result = await app.validateNode({ node, hash: nodeHash(node), state });
    if (!result.ok) return false;
    this.#recordState(node, nodeHash(node), result.updates);
    return true;
  }

  /** `app` with state roots over a tree of the endpoint's stored state (see `stateRoots`). */
  async #withRoots(e: Endpoint, app: Application): Promise<Application> {
    if (this.o.stateRoots === false) return app;
    const tree = new StateTree();
    for await (const [k, v] of e.storage.stateEntries()) tree.apply([[k, v]]);
    return withStateRoots(app, new StateRoots(() => tree), (n) => tree.apply(n.updates));
  }

  /**
   * Every committed Node's state root is the root of the state its committed ancestors made
   * (SPECIFICATION.md 7), along the committed chain of the longest honest replica.
   */
  async #checkStateRoots(): Promise<void> {
    if (this.o.stateRoots === false) return;
    const e = this.endpoints.filter((x) => this.honest(x))
      .sort((a, b) => b.chain.length - a.chain.length)[0];
    if (e === undefined) return;
    const tree = new StateTree();
    for (let h = 1; h <= e.chain.length; h++) {
      const hash = await e.storage.committedHash(h);
      const stored = hash === null ? null : await e.storage.getNode(hash);
      if (stored === null) return;
      const root = tree.root();
      if (!bytesEqual(stored.node.stateRoot, root)) {
        this.safety.push(
          `committed height ${h} carries state root ${toHex(stored.node.stateRoot)}, ` +
            `the committed state below it has ${toHex(root)}`,
        );
        return;
      }
      tree.apply(stored.updates);
    }
  }

  async #crash(e: Endpoint, restartAt: number | null): Promise<void> {
    if (e.engine === null) return;
    this.trace(`crash ${e.id}`);
    const engine = e.engine;
    e.engine = null;
    e.timerGen++;
    await engine.stop({ flush: false });
    if (restartAt !== null) {
      this.agenda.push(Math.max(restartAt, this.time + 1), () => this.#boot(e));
    }
  }

  /** Waits for an endpoint's Engine to finish its work; classifies a failure. */
  async #settle(e: Endpoint): Promise<void> {
    const engine = e.engine;
    if (engine === null) return;
    try {
      await engine.idle();
    } catch (err) {
      if (err instanceof SimulatedCrash) {
        this.trace(`power-loss ${e.id}`);
        e.engine = null;
        e.timerGen++;
        await engine.stop({ flush: false });
        const restart = this.time + this.rng.range(10, 500);
        this.agenda.push(restart, () => this.#boot(e));
        return;
      }
      e.engine = null;
      e.timerGen++;
      if (this.honest(e)) {
        const what = err instanceof AssertionError ? err.message : String(err);
        this.safety.push(`honest endpoint ${e.id} halted: ${what}`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Checkers.

  #onEvent(e: Endpoint, ev: ConsensusEvent): void {
    switch (ev.type) {
      case "node:commit": {
        const hex = toHex(ev.hash);
        this.trace(`commit ${e.id} h${ev.height} v${ev.view} ${hex.slice(0, 12)}`);
        return this.#recordCommit(e, ev.height, hex);
      }
      case "view:enter":
        if (this.honest(e)) this.maxView = Math.max(this.maxView, ev.view);
        this.trace(`view ${e.id} ${ev.view} ${ev.reason}`);
        return;
      case "equivocation:detect":
        if (this.honest(e)) this.equivocations++;
        this.trace(`equivocation ${e.id} ${ev.evidence.kind}`);
        return;
      case "message:reject":
        this.trace(`reject ${e.id} ${ev.message} ${ev.reason} ${ev.detail}`);
        return;
      case "vote:send":
        this.trace(`vote ${e.id} v${ev.view} ${toHex(ev.nodeHash).slice(0, 8)}`);
        return;
      default:
        return;
    }
  }

  /**
   * Every QC that a committed Node carries is a quorum of the rule that certifies the Node it
   * names (SPECIFICATION.md 3.4 step 3), computed here along the committed chain of the longest
   * honest replica, from the validator updates the Application returned, with the handover rules
   * as specified (planted bugs off).
   */
  async #checkCertificates(): Promise<void> {
    const e =
      this.endpoints.filter((x) => this.honest(x)).sort((a, b) =>
        b.chain.length - a.chain.length
      )[0];
    if (e === undefined) return;
    const saved = { ...plantedReconfigBugs };
    plantedReconfigBugs.activateBeforeCommit = false;
    plantedReconfigBugs.countOldSetVotes = false;
    try {
      const genesis = stableConfig(this.validators);
      const configs: NodeConfig[] = [{ parent: genesis, after: genesis }];
      this.#chainConfigs = configs;
      const heightOf = new Map<string, number>([[toHex(nodeHash(genesisNode(CHAIN_ID))), 0]]);
      let parentView = 0;
      for (let h = 1; h <= e.chain.length; h++) {
        const hash = await e.storage.committedHash(h);
        const stored = hash === null ? null : await e.storage.getNode(hash);
        if (stored === null) return;
        const n = stored.node;
        const hex = toHex(stored.hash);
        const next = nextConfig(configs[h - 1]!.after, n, parentView, this.#changes.get(hex) ?? []);
        if (!next.ok) {
          this.safety.push(`committed height ${h} makes a change it may not: ${next.reason}`);
          return;
        }
        configs.push({ parent: configs[h - 1]!.after, after: next.config });
        if (configs[h - 1]!.after.next === null && next.config.next !== null) {
          this.handovers.started++;
        }
        if (configs[h - 1]!.after.next !== null && next.config.next === null) {
          this.handovers.completed++;
        }
        const m = heightOf.get(toHex(n.justify.nodeHash));
        if (n.justify.view > 0 && m !== undefined) {
          const count = certifyingRule(configs[m]!.parent).countQuorum(n.justify.signatures);
          if (!count.ok) {
            this.safety.push(
              `QC of committed height ${m} (view ${n.justify.view}) is not a quorum of its ` +
                `validator set: ${count.reason} ${count.detail}`,
            );
          }
        }
        heightOf.set(hex, h);
        parentView = n.view;
      }
    } finally {
      Object.assign(plantedReconfigBugs, saved);
    }
  }
  /**
   * SPECIFICATION.md 15.1-15.2: a light client that trusts only the genesis set follows the longest honest
   * committed chain from height 1, through every validator-set change, with the proofs a replica
   * would serve (`buildCommitProof` over the stored Nodes and their configuration records, encoded
   * and decoded); it must accept every one and end with the chain's configuration. A refusal, or
   * a configuration that is not the chain's, is a violation: a light client would be stuck or
   * misled.
   */
  async #checkLightClient(): Promise<void> {
    const e = this.endpoints.filter((x) => this.honest(x))
      .sort((a, b) => b.chain.length - a.chain.length)[0];
    if (e === undefined) return;
    const stored: StoredNode[] = [];
    for (let h = 1; h <= e.chain.length; h++) {
      const hash = await e.storage.committedHash(h);
      const s = hash === null ? null : await e.storage.getNode(hash);
      if (s === null) return;
      stored.push(s);
    }
    const nodes = stored.map((s) => s.node);
    const records = stored.map((s) => nodeConfigOf(s.updates));
    let config = stableConfig(this.validators);
    let from = 1;
    for (;;) {
      const to = Math.min(from + LIGHT_PROOF_HEIGHTS - 1, nodes.length - 3);
      if (to < from) break;
      const window = from - 1 + LIGHT_PROOF_HEIGHTS + PROOF_LOOKAHEAD_NODES;
      const build = (upTo: number) =>
        buildCommitProof(
          nodes.slice(from - 1, window),
          from,
          upTo,
          () => Promise.resolve(null),
          records.slice(from - 1, window),
        );
      // As a client does: a range whose end is not provable yet is asked again shorter.
      const built = await build(to) ?? await build(from);
      if (built === null) break;
      const proof = decodeCommitProof(encodeCommitProof(built));
      const verdict = await verifyCommitProof(proof, {
        chainId: CHAIN_ID,
        validators: this.validators,
        verifier: this.verifier,
        config,
      });
      if (!verdict.ok) {
        this.safety.push(
          `a light client refused the committed chain from height ${from}: ${verdict.reason} ` +
            verdict.detail,
        );
        return;
      }
      const head = verdict.committed.at(-1)!.node.height;
      const expected = this.#chainConfigs[head]?.after;
      if (expected !== undefined && !sameConfig(verdict.config, expected)) {
        this.safety.push(
          `a light client holds the wrong validator configuration at height ${head}`,
        );
        return;
      }
      config = verdict.config;
      from = head + 1;
    }
    this.#lightHeight = from - 1;
  }

  #recordCommit(e: Endpoint, height: number, hex: string): void {
    if (!this.honest(e)) return;
    // Committed heights are consecutive for one replica.
    if (height !== e.chain.length + 1) {
      this.safety.push(`endpoint ${e.id} committed height ${height} after ${e.chain.length}`);
    }
    e.chain[height - 1] = hex;
    // No two honest replicas commit different Nodes at one height.
    const prior = this.#committedAt.get(height);
    if (prior === undefined) this.#committedAt.set(height, hex);
    else if (prior !== hex) {
      this.safety.push(
        `conflicting commits at height ${height}: ${prior.slice(0, 16)} and ` +
          `${hex.slice(0, 16)} (endpoint ${e.id})`,
      );
    }
  }

  #onSend(e: Endpoint, m: ConsensusMessage): void {
    if (!this.honest(e)) return;
    if (m.type === "vote") this.#checkVote(e, m.view, m.nodeHash);
    if (m.type === "new-view" && m.vote !== null) this.#checkVote(e, m.view, m.vote.nodeHash);
  }

  #checkVote(e: Endpoint, view: number, nodeHash: Uint8Array): void {
    // An honest validator never signs two different votes in one view.
    const key = `${e.validator}:${view}`;
    const hex = toHex(nodeHash);
    const prior = this.#votes.get(key);
    if (prior === undefined) this.#votes.set(key, hex);
    else if (prior !== hex) {
      this.safety.push(`honest validator ${e.validator} voted twice in view ${view}`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // The shell around each endpoint.

  #clockFor(e: Endpoint): Clock {
    return {
      now: () => this.time,
      setTimer: (at, callback) => {
        const gen = ++e.timerGen;
        this.agenda.push(Math.max(at, this.time), async () => {
          if (e.timerGen !== gen || e.engine === null) return;
          callback();
          await this.#settle(e);
        });
      },
      clearTimer: () => {
        e.timerGen++;
      },
    };
  }

  #storageFor(e: Endpoint): Storage {
    const inner = e.storage;
    const faults = this.o.faults;
    return wrapStorage(inner, {
      write: async (batch: WriteBatch) => {
        const crash = this.time < faults.healAt && this.rng.chance(faults.crashOnWriteRate);
        // Power loss either before the write lands or right after (before anything is sent).
        if (crash && this.rng.chance(0.5)) throw new SimulatedCrash("before write");
        await inner.write(batch);
        if (crash) throw new SimulatedCrash("after write");
      },
    });
  }

  #reachable(a: Endpoint, b: Endpoint, m?: ConsensusMessage): boolean {
    if (this.time >= this.healAt) return true;
    if (m !== undefined && this.o.viewPartitions !== undefined) {
      const view = m.type === "propose" ? m.node.view : m.view;
      const groups = this.o.viewPartitions[view - 1];
      if (groups !== undefined && groups !== null) {
        const ga = groups.findIndex((g) => g.includes(a.id));
        if (ga < 0 || ga !== groups.findIndex((g) => g.includes(b.id))) return false;
      }
    }
    for (const p of this.o.faults.partitions) {
      if (this.time < p.start || this.time >= p.end) continue;
      const ga = p.groups.findIndex((g) => g.includes(a.id));
      const gb = p.groups.findIndex((g) => g.includes(b.id));
      if (ga < 0 || gb < 0 || ga !== gb) return false;
    }
    return true;
  }

  #delay(): number {
    const f = this.o.faults;
    if (this.time >= this.healAt) {
      return this.rng.range(f.delayMinMs, Math.max(f.delayMinMs, f.healedDelayMaxMs ?? 20));
    }
    return this.rng.range(f.delayMinMs, f.delayMaxMs);
  }

  /** Puts one message on the wire from `src` to `dst`, subject to the faults. */
  transmit(src: Endpoint, dst: Endpoint, m: ConsensusMessage): void {
    const f = this.o.faults;
    const faulty = this.time < this.healAt;
    if (!this.#reachable(src, dst, m)) return;
    if (faulty && this.rng.chance(f.dropRate)) return;
    const copies = faulty && this.rng.chance(f.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      this.agenda.push(this.time + this.#delay(), () => this.#deliver(src, dst, m));
    }
  }

  async #deliver(src: Endpoint, dst: Endpoint, m: ConsensusMessage): Promise<void> {
    if (dst.engine === null || !this.#reachable(src, dst)) return;
    this.delivered++;
    this.trace(`deliver ${src.id}->${dst.id} ${describe(m)}`);
    if (dst.behaviour === "stale" && dst.seen.length < 256) dst.seen.push(m);
    if (!this.honest(dst) && m.type === "propose") remember(dst, m.node);
    if (!this.honest(dst) && m.type === "new-view") rememberQC(dst, m.highQC);
    if (dst.behaviour === "scripted") {
      await this.o.adversaries?.[dst.validator]?.onDeliver?.(this.api(dst), src.id, m);
    }
    // A forker votes for every proposal it sees, whatever its locks say.
    if (dst.behaviour === "forker" && m.type === "propose") {
      const vote = await signVote(dst.signer, m.node.view, nodeHash(m.node));
      const leader = this.leaderAt(dst, m.node.view + 1);
      for (const d of this.endpoints) {
        if (d !== dst && bytesEqual(d.signer.publicKey, leader)) this.transmit(dst, d, vote);
      }
    }
    dst.engine.receive(src.signer.publicKey, m);
    await this.#settle(dst);
  }

  #networkFor(e: Endpoint): Network {
    const honestNet: Network = {
      send: (to, m) => {
        for (const d of this.endpoints) {
          if (d !== e && bytesEqual(d.signer.publicKey, to)) this.transmit(e, d, m);
        }
      },
      broadcast: (m) => {
        for (const d of this.endpoints) if (d !== e) this.transmit(e, d, m);
      },
    };
    if (e.behaviour === "honest" || e.behaviour === "twin") return honestNet;
    if (e.behaviour === "scripted") {
      const adversary = this.o.adversaries?.[e.validator];
      return {
        send: (to, m) =>
          this.agenda.push(this.time, () => adversary?.onSend?.(this.api(e), m, to) ?? noop()),
        broadcast: (m) =>
          this.agenda.push(this.time, () => adversary?.onSend?.(this.api(e), m, "all") ?? noop()),
      };
    }
    return byzantineNetwork(this, e, honestNet);
  }

  /** The leader of `view` as endpoint `e`'s own Engine sees it (Spec 3.5). */
  leaderAt(e: Endpoint, view: number): Uint8Array {
    return e.engine?.core.leader(view) ?? this.validators.leader(view).publicKey;
  }

  /** The {@link AdversaryApi} of a scripted endpoint. */
  api(e: Endpoint): AdversaryApi {
    return {
      time: this.time,
      validators: this.validators,
      self: e.id,
      engine: e.engine,
      send: (to, m) => {
        const d = this.endpoints[to];
        if (d !== undefined && d !== e) this.transmit(e, d, m);
      },
      broadcast: (m) => {
        for (const d of this.endpoints) if (d !== e) this.transmit(e, d, m);
      },
      propose: (node, tc) => signProposal(e.signer, node, tc),
      vote: (view, hash) => signVote(e.signer, view, hash),
      endpointsOf: (key) =>
        this.endpoints.filter((d) => bytesEqual(d.signer.publicKey, key)).map((d) => d.id),
      stateRoot: (parent) => this.stateRootAfter(parent),
    };
  }

  #nodeSourceFor(e: Endpoint): NodeSource {
    return {
      fetch: (req) => {
        const candidates = this.endpoints.filter((d) =>
          d !== e && (req.from === null || bytesEqual(d.signer.publicKey, req.from))
        );
        if (candidates.length === 0) {
          this.agenda.push(this.time + 1, async () => {
            e.engine?.receiveFetchFailure(req.from);
            await this.#settle(e);
          });
          return;
        }
        const peer = this.rng.pick(candidates);
        const there = this.time + this.#delay();
        this.agenda.push(there, async () => {
          let nodes: Node[] | null = null;
          if (peer.engine !== null && this.#reachable(e, peer)) {
            nodes = peer.forged.get(e.id) ??
              await peer.engine.serveNodes(req.fromHeight, req.limit);
          }
          const back = this.time + this.#delay();
          this.agenda.push(back, async () => {
            if (e.engine === null) return;
            if (nodes === null || !this.#reachable(e, peer)) {
              e.engine.receiveFetchFailure(req.from);
            } else {
              this.trace(`fetched ${peer.id}->${e.id} ${nodes.length}`);
              e.engine.receiveNodes(peer.signer.publicKey, nodes);
            }
            await this.#settle(e);
          });
        });
      },
    };
  }
}

function sameSet(a: ValidatorSet, b: ValidatorSet): boolean {
  return a.validators.length === b.validators.length &&
    a.validators.every((v, i) =>
      bytesEqual(v.publicKey, b.validators[i]!.publicKey) && v.power === b.validators[i]!.power
    );
}

function noop(): Promise<void> {
  return Promise.resolve();
}

function remember(e: Endpoint, node: Node): void {
  if (e.known.size >= 4096) e.known.clear();
  e.known.set(toHex(nodeHash(node)), node);
  rememberQC(e, node.justify);
}

function rememberQC(e: Endpoint, qc: QuorumCertificate): void {
  if (e.qcs.some((q) => q.view === qc.view && bytesEqual(q.nodeHash, qc.nodeHash))) return;
  if (e.qcs.length >= 256) e.qcs.shift();
  e.qcs.push(qc);
}

function describe(m: ConsensusMessage): string {
  switch (m.type) {
    case "propose":
      return `propose v${m.node.view} h${m.node.height} ${toHex(nodeHash(m.node)).slice(0, 8)}`;
    case "vote":
      return `vote v${m.view} ${toHex(m.nodeHash).slice(0, 8)}`;
    case "new-view":
      return `new-view v${m.view} qc${m.highQC.view}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Byzantine behaviours: wrappers around the honest Engine's network.

async function signVote(signer: Signer, view: number, hash: Uint8Array): Promise<ConsensusMessage> {
  const signature = await signer.sign(signedBytes(SignatureDomain.vote, CHAIN_ID, view, hash));
  return { type: "vote", view, nodeHash: hash, signer: signer.publicKey, signature };
}

async function signProposal(
  signer: Signer,
  node: Node,
  tc: TimeoutCertificate | null,
): Promise<ConsensusMessage> {
  const sig = await signer.sign(
    signedBytes(SignatureDomain.propose, CHAIN_ID, node.view, nodeHash(node)),
  );
  return { type: "propose", node, tc, signature: sig };
}

/** A QC made of the forger's own vote repeated to reach a quorum (valid only with a bug). */
async function forgeQC(
  sim: Simulation,
  e: Endpoint,
  view: number,
  hash: Uint8Array,
): Promise<QuorumCertificate> {
  const sig = await e.signer.sign(signedBytes(SignatureDomain.vote, CHAIN_ID, view, hash));
  const power = sim.validators.powerOf(e.signer.publicKey);
  const copies = Math.ceil(sim.validators.quorumPower / power);
  const signatures = Array.from({ length: copies }, () => ({
    signer: e.signer.publicKey,
    signature: sig,
  }));
  const qc: QuorumCertificate = { chainId: CHAIN_ID, view, nodeHash: hash, signatures };
  return qc;
}

function byzantineNetwork(sim: Simulation, e: Endpoint, net: Network): Network {
  const others = () => sim.endpoints.filter((d) => d !== e);
  // Async Byzantine work is scheduled as its own agenda item, so runs stay deterministic.
  const later = (work: () => Promise<void>) => sim.agenda.push(sim.time, work);
  switch (e.behaviour) {
    case "silent":
      return { send: () => {}, broadcast: () => {} };
    case "equivocator":
      return {
        send: net.send,
        broadcast: (m) => {
          if (m.type !== "propose") return net.broadcast(m);
          later(async () => {
            const alt: Node = { ...m.node, command: new Uint8Array([...m.node.command, 0xee]) };
            const altMsg = await signProposal(e.signer, alt, m.tc);
            const peers = sim.rng.shuffle(others());
            const half = Math.ceil(peers.length / 2);
            peers.forEach((d, i) => sim.transmit(e, d, i < half ? m : altMsg));
            // Later, everyone sees both versions.
            const again = sim.time + sim.rng.range(20, 400);
            sim.agenda.push(again, () => {
              peers.forEach((d, i) => sim.transmit(e, d, i < half ? altMsg : m));
              return Promise.resolve();
            });
          });
        },
      };
    case "double-voter":
      return {
        broadcast: net.broadcast,
        send: (to, m) => {
          net.send(to, m);
          if (m.type !== "vote") return;
          later(async () => {
            const fake = sha256(new Uint8Array([...m.nodeHash, 1]));
            net.send(to, await signVote(e.signer, m.view, fake));
          });
        },
      };
    case "stale":
      return {
        send: net.send,
        broadcast: (m) => {
          net.broadcast(m);
          if (e.seen.length === 0) return;
          const old = sim.rng.pick(e.seen);
          for (const d of others()) sim.transmit(e, d, old);
        },
      };
    case "future":
      return {
        send: net.send,
        broadcast: (m) => {
          net.broadcast(m);
          later(async () => {
            const ahead = (m.type === "propose" ? m.node.view : m.view) + sim.rng.range(2, 5000);
            net.broadcast(await signVote(e.signer, ahead, new Uint8Array(32).fill(7)));
            const nv = await e.signer.sign(signedBytes(SignatureDomain.newView, CHAIN_ID, ahead));
            const qc = e.engine?.core.safety.highQC;
            if (qc === undefined) return;
            net.broadcast({
              type: "new-view",
              view: ahead,
              highQC: qc,
              highTC: null,
              vote: null,
              signer: e.signer.publicKey,
              signature: nv,
            });
            if (m.type === "propose") {
              const node: Node = { ...m.node, view: ahead };
              net.broadcast(await signProposal(e.signer, node, null));
            }
          });
        },
      };
    case "forker":
      return {
        send: net.send,
        broadcast: (m) => {
          if (m.type !== "propose") return net.broadcast(m);
          later(async () => {
            // With a TC it may propose on any older QC: fork below the real parent.
            remember(e, m.node);
            const high = e.engine?.core.safety.highQC;
            if (high !== undefined) rememberQC(e, high);
            const fork = m.tc === null ? null : forkOf(sim, e, m.node);
            if (fork !== null) {
              net.broadcast(await signProposal(e.signer, fork, m.tc));
              const leader = sim.leaderAt(e, fork.view + 1);
              return net.send(leader, await signVote(e.signer, fork.view, nodeHash(fork)));
            }
            // Without one, show the real proposal to some replicas and withhold it from the rest.
            for (const d of others()) if (sim.rng.chance(0.5)) sim.transmit(e, d, m);
          });
        },
      };
    case "forger":
      return {
        send: net.send,
        broadcast: (m) => {
          if (m.type !== "propose") return net.broadcast(m);
          later(async () => {
            // Two victims each get their own forged chain on the same base, so they commit
            // different Nodes at one height; the others get the real proposal.
            const peers = sim.rng.shuffle(others());
            for (const [i, d] of peers.entries()) {
              const fake = i < 2 ? await forgeChain(sim, e, d, m.node.view) : null;
              sim.transmit(e, d, fake ?? m);
            }
          });
        },
      };
    default:
      return net;
  }
}

/**
 * A Node in `node.view` on an older QC than `node.justify` (legal only with a TC for the previous
 * view): either the Node that takes the place of what the real proposal's 3-chain commits (with
 * `b1 = node.parent`, `b2 = b1.parent`, `b3 = b2.parent`: same parent and justify as `b3`), or,
 * half of the time, a child of a random older certified Node this replica has seen.
 */
function forkOf(sim: Simulation, e: Endpoint, node: Node): Node | null {
  let target: { parent: Uint8Array; height: number; justify: QuorumCertificate } | null = null;
  if (sim.rng.chance(0.5)) {
    let cur = e.known.get(toHex(node.parent));
    for (let i = 0; i < 2 && cur !== undefined; i++) cur = e.known.get(toHex(cur.parent));
    if (cur !== undefined && cur.height > 0) {
      target = { parent: cur.parent, height: cur.height, justify: cur.justify };
    }
  } else {
    const older = e.qcs.filter((q) =>
      q.view < node.justify.view && (q.view === 0 || e.known.has(toHex(q.nodeHash)))
    );
    if (older.length > 0) {
      const q = sim.rng.pick(older);
      const height = q.view === 0 ? 0 : e.known.get(toHex(q.nodeHash))!.height;
      target = { parent: q.nodeHash, height: height + 1, justify: q };
    }
  }
  if (target === null) return null;
  // The configuration of the fork's parent, when this replica knows it (Spec 3.4 step 8), and
  // the right root when the state is known (it is public): the fork should fail only the rules
  // it breaks.
  const parentConfig = e.engine?.core.configOf(target.parent)?.after;
  const stateRoot = sim.stateRootAfter(target.parent);
  if (stateRoot === null) return null;
  return {
    ...node,
    parent: target.parent,
    height: target.height,
    justify: target.justify,
    command: new Uint8Array([...node.command, 0xf0]),
    configHash: parentConfig === undefined ? node.configHash : validatorConfigHash(parentConfig),
    stateRoot,
  };
}

/**
 * Forges `base <- f1 <- f2 <- f3 <- p` where `base` is the forger's highest QC's Node, `f1..f3`
 * sit in the three views before the next view `w` the forger leads, `p` is its proposal for `w`,
 * and every QC repeats the forger's own vote. Replicas that count a signer once reject them all.
 */
async function forgeChain(
  sim: Simulation,
  e: Endpoint,
  victim: Endpoint,
  view: number,
): Promise<ConsensusMessage | null> {
  const core = e.engine?.core;
  if (core === undefined) return null;
  const base = core.tree.get(core.safety.highQC.nodeHash);
  if (base === undefined) return null;
  let w = view + 4;
  while (!bytesEqual(core.leader(w), e.signer.publicKey)) {
    if (++w > view + 1000) return null;
  }
  let stateRoot = sim.stateRootAfter(base.hash);
  if (stateRoot === null) return null;
  const forged: Node[] = [];
  let parent = base;
  let qc = core.safety.highQC;
  // Each forged Node names its parent's configuration correctly (Spec 3.4 step 8), so that only
  // the repeated signer gives it away.
  let config = core.configOf(base.hash)?.after;
  if (config === undefined) return null;
  for (let v = w - 3; v < w; v++) {
    const n: Node = {
      view: v,
      height: parent.node.height + 1,
      parent: parent.hash,
      justify: qc,
      command: new Uint8Array([0xfa, victim.id, v & 0xff]),
      configHash: validatorConfigHash(config),
      proposer: core.leader(v),
      stateRoot,
    };
    const next = nextConfig(config, n, parent.node.view, []);
    if (!next.ok) return null;
    config = next.config;
    forged.push(n);
    if (!await sim.adversaryExecute(e, n)) return null;
    stateRoot = sim.stateRootAfter(nodeHash(n));
    if (stateRoot === null) return null;
    parent = { node: n, hash: nodeHash(n), updates: [] };
    qc = await forgeQC(sim, e, v, parent.hash);
  }
  e.forged.set(victim.id, forged);
  const p: Node = {
    view: w,
    height: parent.node.height + 1,
    parent: parent.hash,
    justify: qc,
    command: new Uint8Array([0xfb]),
    configHash: validatorConfigHash(config),
    proposer: e.signer.publicKey,
    stateRoot,
  };
  return signProposal(e.signer, p, null);
}

/**
 * Runs one simulation and checks it.
 *
 * @example
 * ```ts
 * import { runSimulation } from "./sim.ts";
 * const report = await runSimulation({
 *   seed: 1,
 *   powers: [1, 1, 1, 1],
 *   faults: {
 *     dropRate: 0.05, duplicateRate: 0.05, delayMinMs: 1, delayMaxMs: 50,
 *     partitions: [], crashes: [], crashOnWriteRate: 0, healAt: 2000,
 *   },
 * });
 * console.log(report.safetyViolations.length, report.traceHash);
 * ```
 */
export function runSimulation(options: SimOptions): Promise<SimReport> {
  return new Simulation(options).run();
}
