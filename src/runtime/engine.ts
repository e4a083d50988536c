/**
 * The Engine: the runtime shell around the sans-I/O core. It verifies incoming messages, feeds
 * the core one input at a time, and carries out the core's output in the order the core
 * prescribes (persist, then sign and send, then notify, then call the Application). The Progress
 * flow is the core's message handling; the CatchUp flow is the core's fetch requests, served by a
 * {@link NodeSource}. See SPECIFICATION.md section 10.
 *
 * Everything here is serial: one input is fully handled before the next starts, so the same
 * inputs in the same order give the same outputs (the simulator relies on it). Only a large
 * group-commit write (a catch-up answer) runs in the background, while the next inputs are
 * handled; nothing is sent and no commit is announced before it is durable (Spec 10.1).
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { genesisNode, nodeHash, signedBytes } from "../codec.ts";
import type { Application, PendingNode, StateView } from "../app.ts";
import { checkValidateResult, DEFAULT_APP_LIMITS } from "../app.ts";
import type { AppLimits } from "../app.ts";
import type {
  CoreInput,
  CoreLimits,
  CoreOutput,
  ExecutedResult,
  FetchRequest,
  Outbound,
} from "../consensus/core.ts";
import { Core } from "../consensus/core.ts";
import type { PacemakerOptions } from "../consensus/pacemaker.ts";
import type { ReputationOptions } from "../consensus/reputation.ts";
import { DEFAULT_REPUTATION_OPTIONS, historyNodesMax } from "../consensus/reputation.ts";
import { MessageVerifier, type Verdict } from "../consensus/verify.ts";
import { plantedSafetyBugs } from "../consensus/safety.ts";
import type { QuorumRule } from "../consensus/reconfig.ts";
import {
  certifyingRule,
  decodeConfigRecord,
  rootConfig,
  VALIDATOR_CONFIG_KEY,
} from "../consensus/reconfig.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { assert } from "../errors.ts";
import type { ConsensusEvent, EquivocationEvidence } from "../events.ts";
import { type EvidenceStore, verifyEvidence } from "../evidence.ts";
import {
  readCommitted,
  type SafetyState,
  type StateUpdate,
  type Storage,
  type StoredNode,
  type WriteBatch,
} from "../storage/storage.ts";
import type { ConsensusMessage, Hash, Node, PublicKey } from "../types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";

/**
 * Where the Engine sends consensus messages.
 *
 * @example
 * ```ts
 * import type { Network } from "./engine.ts";
 * const sent: string[] = [];
 * const network: Network = {
 *   send: (_to, message) => sent.push(message.type),
 *   broadcast: (message) => sent.push(`all:${message.type}`),
 * }; // a replica passes its ConsensusTcp
 * ```
 */
export interface Network {
  /** Sends to one validator (never called with this replica's own key). */
  send(to: PublicKey, message: ConsensusMessage): void;
  /** Sends to every other validator. */
  broadcast(message: ConsensusMessage): void;
}

/**
 * Where the CatchUp flow gets Nodes. `fetch` starts a request and returns at once; the answer
 * comes back through {@link Engine.receiveNodes} or {@link Engine.receiveFetchFailure}.
 *
 * @example
 * ```ts
 * import type { NodeSource } from "./engine.ts";
 * const nowhere: NodeSource = { fetch: (request) => console.log("wanted from height", request.fromHeight) };
 * ```
 */
export interface NodeSource {
  /** Asks `from` (or any peer when null) for its chain from `fromHeight`, at most `limit`. */
  fetch(request: FetchRequest): void;
}

/**
 * The Engine's clock: milliseconds, and one timer.
 *
 * @example
 * ```ts
 * import type { Clock } from "./engine.ts";
 * let now = 0;
 * const manual: Clock = { now: () => now, setTimer: () => {}, clearTimer: () => {} }; // a test's clock
 * now += 1000;
 * ```
 */
export interface Clock {
  /** Current time, ms. */
  now(): number;
  /** Calls `callback` at time `at` (or soon after). A later call replaces the earlier timer. */
  setTimer(at: number, callback: () => void): void;
  /** Cancels the timer. */
  clearTimer(): void;
}

/**
 * Options of {@link Engine.open}.
 *
 * @example
 * ```ts
 * import { Engine, type EngineOptions } from "./engine.ts";
 * import { systemClock } from "./clock.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const signer = ed25519Signer(deriveSecretKey("engine-options"));
 * const options: EngineOptions = {
 *   chainId: "c",
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   signer,
 *   verifier: ed25519Verifier(),
 *   storage: new MemoryStorage(),
 *   app: { produceCommand: () => ({ command: new Uint8Array() }), validateNode: () => ({ ok: true, updates: [] }) },
 *   network: { send: () => {}, broadcast: () => {} },
 *   nodeSource: { fetch: () => {} },
 *   clock: systemClock(),
 * };
 * const engine = await Engine.open(options);
 * ```
 */
export interface EngineOptions {
  /** Chain id. */
  readonly chainId: string;
  /** The genesis validator set (later sets come from the chain, SPECIFICATION.md 3.4). */
  readonly validators: ValidatorSet;
  /** This replica's key. */
  readonly signer: Signer;
  /** Signature verification. */
  readonly verifier: Verifier;
  /** Persistence. */
  readonly storage: Storage;
  /** The user's state machine. */
  readonly app: Application;
  /** Consensus messages out. */
  readonly network: Network;
  /** Catch-up requests out. */
  readonly nodeSource: NodeSource;
  /** Time. */
  readonly clock: Clock;
  /** Pacemaker timing. */
  readonly pacemaker?: PacemakerOptions;
  /** Core memory bounds. */
  readonly limits?: CoreLimits;
  /** Leader reputation (Spec 3.5); default on; null: the plain schedule. Same on every replica. */
  readonly reputation?: ReputationOptions | null;
  /** Bounds on Application results. */
  readonly appLimits?: AppLimits;
  /** Observer of every event. */
  readonly onEvent?: (event: ConsensusEvent) => void;
  /** Where verified evidence of equivocation is kept (Spec 16.2); none: not kept. */
  readonly evidence?: EvidenceStore;
  /** Observer of every signed message this replica sends (for tests and the simulator). */
  readonly onSend?: (message: ConsensusMessage, to: PublicKey | "all") => void;
}

type Job =
  | { readonly kind: "input"; readonly input: CoreInput }
  | {
    readonly kind: "message";
    readonly from: PublicKey;
    readonly message: ConsensusMessage;
    /** Started ahead of its turn (see `#prefetch`); results are still used in arrival order. */
    verdict?: Promise<Verdict>;
  }
  | { readonly kind: "self"; readonly message: ConsensusMessage }
  | {
    readonly kind: "nodes";
    readonly from: PublicKey;
    /** The answer's checks (Spec 4.4 step 0), started when it arrives; used in arrival order. */
    readonly checked: Promise<CheckedNodes>;
  };

/** A group-commit write started in the background (Spec 10.1 step 1). */
interface InFlightWrite {
  readonly group: GroupCommit;
  /** Resolves when the write is durable; rejects if it failed. */
  readonly done: Promise<void>;
  /** The write has resolved or failed. */
  landed: boolean;
}

/** A fetched answer after Spec 4.4 step 0, and why its first bad Node failed, if any. */
interface CheckedNodes {
  readonly nodes: Node[];
  readonly reject: { readonly reason: string; readonly detail: string } | null;
}

/** Queued messages whose signatures are checked ahead of their turn. */
const VERIFY_AHEAD = 32;

/** Fetched Nodes whose QCs are verified at once (Spec 4.4 step 0). */
const VERIFY_SLICE = 32;

/**
 * A group-commit write is started once it holds this many distinct Nodes, inserted or committed
 * (Spec 10.1 step 1): a whole catch-up answer (`catchUpNodesMax`, 256) goes to storage at once.
 */
const GROUP_COMMIT_NODES_MAX = 256;

/** Most jobs queued; beyond it incoming peer messages are dropped (and counted). */
const QUEUE_MAX = 100_000;

/**
 * One replica's Engine.
 *
 * @example
 * ```ts
 * import { Engine } from "./engine.ts";
 * import { systemClock } from "./clock.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * import { ValidatorSet } from "../validators.ts";
 *
 * // One validator, no network: the Engine commits empty Nodes on its own.
 * const signer = ed25519Signer(deriveSecretKey("engine-example"));
 * const engine = await Engine.open({
 *   chainId: "example",
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   signer,
 *   verifier: ed25519Verifier(),
 *   storage: new MemoryStorage(),
 *   app: {
 *     produceCommand: () => ({ command: new Uint8Array() }),
 *     validateNode: () => ({ ok: true, updates: [] }),
 *   },
 *   network: { send: () => {}, broadcast: () => {} }, // a replica passes its ConsensusTcp here
 *   nodeSource: { fetch: () => {} },
 *   clock: systemClock(),
 *   onEvent: (e) => e.type === "node:commit" ? console.log("committed", e.height) : undefined,
 * });
 * engine.start();
 * await engine.stop();
 * ```
 */
export class Engine {
  /** The sans-I/O core (read its state; feed it only through the Engine). */
  readonly core: Core;
  readonly #o: EngineOptions;
  readonly #verifier: MessageVerifier;
  readonly #appLimits: AppLimits;
  readonly #queue: Job[] = [];
  /** The current pump; meaningful while `#pumping`. */
  #running: Promise<void> = Promise.resolve();
  /** True from a pump's start until its loop ends (cleared synchronously, so no push is lost). */
  #pumping = false;
  #stopped = false;
  #failure: unknown = null;
  /** Peer messages dropped because the queue was full. */
  dropped = 0;
  /**
   * Group commit (Spec 10.1 step 1): writes of consecutive inputs that send nothing are merged
   * and made durable together, before the next send, when the queue drains, or when large.
   */
  #pending: GroupCommit | null = null;
  /** The one group-commit write in flight: its commits are announced once it is durable. */
  #inFlight: InFlightWrite | null = null;
  /**
   * The durable group whose commits the Application is being told of (`onCommit`): it stays in
   * the overlay until every `onCommit` of it has returned, so the state and roots seen meanwhile
   * never miss a commit the Application has not absorbed yet (Spec 7).
   */
  #announcing: GroupCommit | null = null;
  /** Evidence being verified and stored, one record after another (Spec 16.2). */
  #evidenceWork: Promise<void> = Promise.resolve();

  private constructor(options: EngineOptions, core: Core) {
    this.#o = options;
    this.core = core;
    this.#verifier = new MessageVerifier(
      options.chainId,
      () => core.knownRules(),
      options.verifier,
    );
    this.#appLimits = options.appLimits ?? DEFAULT_APP_LIMITS;
  }

  /** Restores a replica from its storage (Spec 6.2). */
  static async open(options: EngineOptions): Promise<Engine> {
    const s = options.storage;
    const safety = await s.loadSafety();
    const head = await s.committedHead();
    const g = genesisNode(options.chainId);
    let root: StoredNode = { node: g, hash: nodeHash(g), updates: [] };
    if (head !== null) {
      const stored = await s.getNode(head.hash);
      if (stored === null) throw new Error("store has a committed head but not its Node");
      root = stored;
    }
    const uncommitted = await s.uncommittedNodes();
    // Spec 3.4 step 6: the committed head's validator configuration, from committed state.
    const record = await s.getState(VALIDATOR_CONFIG_KEY);
    const configs = rootConfig(
      options.validators,
      record === null ? null : decodeConfigRecord(record),
      root.node.height,
    );
    const reputation = options.reputation === undefined
      ? DEFAULT_REPUTATION_OPTIONS
      : options.reputation;
    // Spec 6.2 step 4: the committed Nodes below the head that the leader rule reads (3.5).
    const keep = historyNodesMax(reputation);
    const below = keep === 0 || root.node.height <= 1
      ? []
      : await readCommitted(s, root.node.height - keep, root.node.height - 1);
    const core = new Core({
      chainId: options.chainId,
      validators: options.validators,
      me: options.signer.publicKey,
      pacemaker: options.pacemaker,
      limits: options.limits,
      reputation,
    }, { safety, root, uncommitted, rootConfig: configs, history: below.map((e) => e.node) });
    return new Engine(options, core);
  }

  /** Starts the Progress flow. */
  start(): void {
    this.#push({ kind: "input", input: { type: "start", now: this.#o.clock.now() } });
  }

  /** A consensus message from an authenticated peer. */
  receive(from: PublicKey, message: ConsensusMessage): void {
    if (this.#queue.length >= QUEUE_MAX) {
      this.dropped++;
      return;
    }
    this.#push({ kind: "message", from, message });
  }

  /** The answer to a {@link NodeSource.fetch}. */
  receiveNodes(from: PublicKey, nodes: readonly Node[]): void {
    if (this.#stopped || this.#failure !== null) return;
    // Checked from now on, while the jobs before it run (Spec 4.4 step 0).
    this.#push({ kind: "nodes", from, checked: this.#checkFetched(nodes) });
  }

  /** A {@link NodeSource.fetch} that failed. */
  receiveFetchFailure(from: PublicKey | null): void {
    this.#push({
      kind: "input",
      input: { type: "fetch-failed", from, now: this.#o.clock.now() },
    });
  }

  /** Resolves when every queued job is done. Rejects if the Engine failed (a bug). */
  async idle(): Promise<void> {
    while (this.#pumping) await this.#running;
    if (this.#failure !== null) throw this.#failure;
  }

  /**
   * Stops: no more jobs run; the timer is cleared. Awaits the job in progress, then makes the
   * pending group-commit write durable (unless `flush` is false: a simulated crash).
   */
  async stop(options: { flush?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#queue.length = 0;
    this.#o.clock.clearTimer();
    while (this.#pumping) await this.#running.catch(() => {});
    if ((options.flush ?? true) && this.#failure === null) await this.#flush();
    // A crash: the write in flight lands or fails (either may happen to a crashed replica), and
    // its commits are never announced; nothing may write the store after stop resolves.
    await this.#inFlight?.done.catch(() => {});
    this.#pending = null;
    this.#inFlight = null;
  }

  /** The failure that stopped the Engine (an assertion: a bug), or null. */
  get failure(): unknown {
    return this.#failure;
  }

  /**
   * Nodes of this replica's chain from `fromHeight`: committed ones from storage, then the
   * uncommitted path to the highest QC's Node. For the NodeTree HTTP API and the simulator.
   */
  async serveNodes(fromHeight: number, limit: number): Promise<Node[]> {
    return (await this.serveChain(fromHeight, limit)).map((s) => s.node);
  }

  /**
   * {@link serveNodes} with each Node's state updates (committed ones from storage, the others
   * from the NodeTree), for readers that need a Node's configuration record (Spec 3.4 step 6).
   */
  async serveChain(fromHeight: number, limit: number): Promise<StoredNode[]> {
    const root = this.core.tree.root;
    const last = Math.min(root.node.height, Math.max(1, fromHeight) + limit - 1);
    const out: StoredNode[] = await readCommitted(this.#o.storage, fromHeight, last);
    if (out.length < last - Math.max(1, fromHeight) + 1) return out;
    // A commit while storage was read moved the root: the tree's path now starts above the
    // Nodes read, so stop here rather than answer a chain with a gap (a short answer is fine).
    if (this.core.tree.root !== root) return out;
    const tip = this.core.safety.highQC.nodeHash;
    if (!this.core.tree.has(tip)) return out;
    for (const e of this.core.tree.pathFromRoot(tip)) {
      if (out.length >= limit) break;
      if (e.node.height >= fromHeight) out.push(e);
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------

  /**
   * Starts verifying the first `VERIFY_AHEAD` queued messages, so that signature checks of
   * several messages overlap; the core still gets them one at a time, in arrival order.
   */
  #prefetch(): void {
    const n = Math.min(this.#queue.length, VERIFY_AHEAD);
    for (let i = 0; i < n; i++) {
      const j = this.#queue[i]!;
      if (j.kind === "message" && j.verdict === undefined) {
        j.verdict = this.#verifier.verifyMessage(j.message);
      }
    }
  }

  #push(job: Job): void {
    if (this.#stopped || this.#failure !== null) return;
    this.#queue.push(job);
    if (this.#queue.length <= VERIFY_AHEAD) this.#prefetch();
    if (!this.#pumping) {
      this.#pumping = true;
      this.#running = this.#pump();
    }
  }

  async #pump(): Promise<void> {
    try {
      while (!this.#stopped) {
        // A write in flight progresses only when the event loop turns (Deno KV completes its
        // operations there), and the jobs below may chain microtasks for a long time: let it.
        if (this.#inFlight?.landed === false) await turnEventLoop();
        const job = this.#queue.shift();
        this.#prefetch();
        if (job === undefined) {
          // Drained: make the merged writes durable; jobs pushed meanwhile are seen above.
          if (this.#pending === null && this.#inFlight === null) break;
          await this.#flush();
          continue;
        }
        const input = await this.#toInput(job);
        if (input === null) continue;
        await this.#carryOut(this.core.step(input));
      }
    } catch (e) {
      // A thrown error here is a bug in our code (assertion) or in storage: stop loudly.
      this.#failure = e;
      this.#stopped = true;
      this.#o.clock.clearTimer();
    } finally {
      // Cleared in the same turn as the loop's last check of the queue: a job pushed after this
      // starts a new pump; one pushed before was seen by the loop.
      this.#pumping = false;
    }
  }

  async #toInput(job: Job): Promise<CoreInput | null> {
    const now = this.#o.clock.now();
    switch (job.kind) {
      case "input":
        // The time it is handled, not queued: a job queued behind a slow one must not carry a
        // time earlier than the job before it (Core asserts that time never goes back).
        return { ...job.input, now: Math.max(job.input.now, now) };
      case "self":
        return { type: "message", from: this.#o.signer.publicKey, message: job.message, now };
      case "message": {
        const v = await (job.verdict ?? this.#verifier.verifyMessage(job.message));
        if (!v.ok) {
          this.#maybeBehind(job.from, job.message, v.reason);
          this.#emit({
            type: "message:reject",
            from: job.from,
            message: job.message.type,
            reason: v.reason,
            detail: v.detail,
          });
          return null;
        }
        return { type: "message", from: job.from, message: v.message ?? job.message, now };
      }
      case "nodes": {
        const { nodes, reject } = await job.checked;
        if (reject !== null) {
          this.#emit({
            type: "message:reject",
            from: job.from,
            message: "fetched-node",
            ...reject,
          });
        }
        return { type: "fetched", from: job.from, nodes, now };
      }
    }
  }

  /**
   * A message whose certificate or signer belongs to a set this replica does not know, from a
   * peer that claims a higher view than its highest QC's: it is behind a validator-set change
   * (Spec 3.4 step 7). Catch up from that peer.
   */
  #maybeBehind(from: PublicKey, m: ConsensusMessage, reason: string): void {
    if (reason !== "unknown-signer" && reason !== "no-quorum") return;
    const view = m.type === "propose"
      ? m.node.justify.view
      : m.type === "vote"
      ? m.view
      : m.highQC.view;
    if (view <= this.core.safety.highQC.view) return;
    this.#push({ kind: "input", input: { type: "behind", from, now: this.#o.clock.now() } });
  }

  /** Spec 4.4 step 0: a fetched chain must be hash-linked, ascending, with valid QCs. */
  async #checkFetched(nodes: readonly Node[]): Promise<CheckedNodes> {
    // The hash-linked prefix first (cheap), then its QCs; the answer is cut at the first Node
    // whose QC fails.
    const linked: Node[] = [];
    let prevHash: Hash | null = null;
    for (const n of nodes) {
      if (prevHash !== null && !bytesEqual(n.parent, prevHash)) break;
      linked.push(n);
      prevHash = nodeHash(n);
    }
    // A slice at a time (the calls of a slice together save event-loop round trips): Deno's Web
    // Crypto Ed25519 runs on this thread, so between slices a write in flight gets its turn; and
    // a bad slice spares the rest.
    for (let i = 0; i < linked.length; i += VERIFY_SLICE) {
      if (i > 0 && this.#inFlight?.landed === false) await turnEventLoop();
      const slice = linked.slice(i, i + VERIFY_SLICE);
      const verdicts = await Promise.all(slice.map((n) => this.#verifier.verifyNode(n)));
      const bad = verdicts.findIndex((v) => !v.ok);
      const v = verdicts[bad];
      if (v !== undefined && !v.ok) {
        // Signers of a set not known yet (a validator-set change in the answer): these Nodes
        // are checked against their own rule just before they execute (Spec 3.4 step 7).
        if (v.reason === "unknown-signer" || v.reason === "no-quorum") break;
        return { nodes: linked.slice(0, i + bad), reject: { reason: v.reason, detail: v.detail } };
      }
    }
    return { nodes: linked, reject: null };
  }

  async #carryOut(out: CoreOutput): Promise<void> {
    // Spec 10.1 step 1: durable before anything leaves. The write joins the pending group
    // commit, with its commits' events; that is made durable before any send, and started on
    // its own (while the next inputs are handled) once it holds a catch-up answer.
    assert(out.committed.length === 0 || out.write !== null, "commits come with their write");
    if (out.write !== null) {
      this.#pending ??= new GroupCommit();
      this.#pending.merge(out.write, out.events);
    }
    if (out.sends.length > 0) await this.#flush();
    else if ((this.#pending?.size ?? 0) >= GROUP_COMMIT_NODES_MAX) await this.#startWrite();
    // Spec 10.1 step 2: sign and send.
    for (const s of out.sends) await this.#send(s);
    // Spec 10.1 step 4: Application calls; results come back as inputs. First the state roots of
    // the Nodes inserted now (Spec 7), while the votes for them travel: the proposal of a child
    // and every replica's check of it then find the root ready, off the path of a view.
    for (const n of out.write?.nodes ?? []) await this.#warmStateRoot(n.hash);
    for (const x of out.execute) await this.#execute(x.node, x.hash, x.justifyRule);
    if (out.produce !== null) await this.#produce(out.produce);
    // Spec 10.1 step 5: catch-up.
    if (out.fetch !== null) this.#o.nodeSource.fetch(out.fetch);
    // Spec 10.1 step 6: timer.
    if (out.timerAt !== null) {
      this.#o.clock.setTimer(out.timerAt, () => {
        this.#push({ kind: "input", input: { type: "tick", now: this.#o.clock.now() } });
      });
    }
    // Spec 10.1 step 7: events; a commit's wait for its write (see #settle).
    for (const e of out.events) if (e.type !== "node:commit") this.#emit(e);
  }

  /**
   * Starts the pending write in the background, once the write in flight is settled: at most one
   * is in flight, so writes land in order.
   */
  async #startWrite(): Promise<void> {
    await this.#settle();
    const group = this.#pending;
    if (group === null) return;
    this.#pending = null;
    const f: InFlightWrite = { group, done: this.#o.storage.write(group.batch()), landed: false };
    // Awaited (and its failure thrown) by #settle; until then it must not count as unhandled.
    const land = (): void => {
      f.landed = true;
    };
    f.done.then(land, land);
    this.#inFlight = f;
  }

  /** Waits until the write in flight is durable, then announces its commits. */
  async #settle(): Promise<void> {
    const f = this.#inFlight;
    if (f === null) return;
    await f.done;
    // Moved, not dropped: the group leaves the overlay only once it is announced (Spec 7).
    this.#announcing = f.group;
    this.#inFlight = null;
    try {
      await this.#announce(f.group);
    } finally {
      this.#announcing = null;
    }
    for (const e of f.group.events) this.#emit(e);
  }

  /** Spec 10.1 step 3: commit notifications, in order, once durable. */
  async #announce(group: GroupCommit): Promise<void> {
    for (const c of group.commits) {
      try {
        await this.#o.app.onCommit?.({ node: c.node, hash: c.hash, updates: c.updates });
      } catch (e) {
        this.#emit({
          type: "message:reject",
          from: null,
          message: "app-on-commit",
          reason: "app-threw",
          detail: String(e),
        });
      }
    }
  }

  /** Makes every merged write durable and announces its commits, in order. */
  async #flush(): Promise<void> {
    // Spec 10.1 step 1: the merged writes, durable before anything below.
    await this.#startWrite();
    await this.#settle();
  }

  async #send(s: Outbound): Promise<void> {
    const message = await this.#sign(s);
    this.#o.onSend?.(message, s.to);
    const me = this.#o.signer.publicKey;
    if (s.to === "all") {
      this.#o.network.broadcast(message);
      this.#push({ kind: "self", message });
    } else if (bytesEqual(s.to, me)) {
      this.#push({ kind: "self", message });
    } else {
      this.#o.network.send(s.to, message);
    }
  }

  async #sign(s: Outbound): Promise<ConsensusMessage> {
    const { chainId, signer } = this.#o;
    const m = s.message;
    switch (m.type) {
      case "propose": {
        const bytes = signedBytes(SignatureDomain.propose, chainId, m.node.view, nodeHash(m.node));
        return { type: "propose", node: m.node, tc: m.tc, signature: await signer.sign(bytes) };
      }
      case "vote": {
        const bytes = signedBytes(SignatureDomain.vote, chainId, m.view, m.nodeHash);
        return { ...m, signer: signer.publicKey, signature: await signer.sign(bytes) };
      }
      case "new-view": {
        const bytes = signedBytes(SignatureDomain.newView, chainId, m.view);
        let vote = null;
        if (m.vote !== null) {
          const voteBytes = signedBytes(SignatureDomain.vote, chainId, m.view, m.vote.nodeHash);
          vote = { nodeHash: m.vote.nodeHash, signature: await signer.sign(voteBytes) };
        }
        return { ...m, vote, signer: signer.publicKey, signature: await signer.sign(bytes) };
      }
    }
  }

  /** Groups of committed Nodes not yet absorbed by storage and the Application, newest first. */
  #unabsorbed(): GroupCommit[] {
    const groups: GroupCommit[] = [];
    if (this.#pending !== null) groups.push(this.#pending);
    if (this.#inFlight !== null) groups.push(this.#inFlight.group);
    if (this.#announcing !== null) groups.push(this.#announcing);
    return groups;
  }

  #stateView(parent: Hash): StateView {
    // Newest first: uncommitted ancestors, then committed Nodes whose writes are not durable yet
    // (the pending write, then the one in flight, then the one being announced), then storage.
    const layers = this.core.tree.pendingUpdates(parent);
    const groups = this.#unabsorbed();
    const storage = this.#o.storage;
    return {
      get(key: Uint8Array): Promise<Uint8Array | null> {
        const id = toHex(key);
        for (const updates of layers) {
          const index = updatesIndex(updates);
          if (index.has(id)) return Promise.resolve(index.get(id)!);
        }
        for (const g of groups) {
          const value = g.lookup(id);
          if (value !== undefined) return Promise.resolve(value);
        }
        return storage.getState(key);
      },
    };
  }

  async #execute(node: Node, hash: Hash, justifyRule: QuorumRule | null): Promise<void> {
    let result: ExecutedResult;
    // Spec 4.4 step 0 (Spec 3.4 step 7): a fetched Node's justify QC, signatures included, by
    // the rule of the Node it certifies (mostly a cache hit: checked when the answer came).
    const justify = justifyRule === null
      ? null
      : await this.#verifier.verifyQC(node.justify, justifyRule);
    if (justify !== null && !justify.ok) {
      result = { ok: false, reason: `justify ${justify.reason}: ${justify.detail}` };
    } else {
      result = await this.#validate(node, hash);
    }
    this.#push({
      kind: "input",
      input: { type: "executed", hash, result, now: this.#o.clock.now() },
    });
  }

  /**
   * Spec 7: the Nodes between the Application's committed state and `parent` (inclusive), oldest
   * first: the groups not yet announced, then the uncommitted ancestors.
   */
  #pendingNodes(parent: Hash): PendingNode[] {
    const out: PendingNode[] = [];
    for (const g of this.#unabsorbed().reverse()) {
      for (const c of g.commits) {
        out.push({ hash: c.hash, height: c.node.height, updates: c.updates });
      }
    }
    for (const e of this.core.tree.pathFromRoot(parent)) {
      out.push({ hash: e.hash, height: e.node.height, updates: e.updates });
    }
    return out;
  }

  /**
   * Spec 7: the state root as of `parent` from the Application's `stateRoot` hook, or the empty
   * root on a chain without state roots. Throws what the hook throws, or on a malformed root.
   */
  async #stateRoot(parent: Hash): Promise<Uint8Array> {
    const app = this.#o.app;
    if (app.stateRoot === undefined) return EMPTY_ROOT;
    const entry = this.core.tree.get(parent);
    assert(entry !== undefined, "a state root is asked for a Node in the tree");
    const pending = this.#pendingNodes(parent);
    const root = await app.stateRoot({ parent, height: entry.node.height, pending });
    if (!(root instanceof Uint8Array) || root.length !== 32) {
      throw new Error("stateRoot must return 32 bytes");
    }
    return root;
  }

  /** Spec 7: computes (and so keeps, in the hook) the state root as of a Node in the tree. */
  async #warmStateRoot(hash: Hash): Promise<void> {
    if (this.#o.app.stateRoot === undefined || !this.core.tree.has(hash)) return;
    try {
      await this.#stateRoot(hash);
    } catch {
      // Asked again, and reported, when a child of the Node is checked.
    }
  }

  /** Spec 7: a Node must carry the state root as of its parent; null when it does. */
  async #checkStateRoot(node: Node): Promise<string | null> {
    let expected: Uint8Array;
    try {
      expected = await this.#stateRoot(node.parent);
    } catch (e) {
      return `stateRoot threw: ${String(e)}`;
    }
    if (plantedSafetyBugs.skipStateRootCheck || bytesEqual(node.stateRoot, expected)) return null;
    const detail = `height ${node.height}: carries ${toHex(node.stateRoot) || "no root"}, ` +
      `the state as of its parent has ${toHex(expected) || "no root"}`;
    this.#emit({
      type: "message:reject",
      from: null,
      message: "node",
      reason: "state-root-mismatch",
      detail,
    });
    return `state-root-mismatch: ${detail}`;
  }

  /** Asks the Application to validate and execute a Node; checks its result (SPECIFICATION.md 7). */
  async #validate(node: Node, hash: Hash): Promise<ExecutedResult> {
    const mismatch = await this.#checkStateRoot(node);
    if (mismatch !== null) return { ok: false, reason: mismatch };
    try {
      const r = await this.#o.app.validateNode({ node, hash, state: this.#stateView(node.parent) });
      const problem = checkValidateResult(r, this.#appLimits);
      if (problem !== null) return { ok: false, reason: `bad application result: ${problem}` };
      if (!r.ok) return { ok: false, reason: String(r.reason) };
      const updates = r.updates.map(([k, v]) => [k, v] as const);
      if (r.validatorUpdates === undefined || r.validatorUpdates.length === 0) {
        return { ok: true, updates };
      }
      const validatorUpdates = r.validatorUpdates.map((u) => ({
        publicKey: u.publicKey,
        power: u.power,
      }));
      return { ok: true, updates, validatorUpdates };
    } catch (e) {
      return { ok: false, reason: `validateNode threw: ${String(e)}` };
    }
  }

  async #produce(req: { view: number; parent: Hash; height: number }): Promise<void> {
    let command: Uint8Array | null = null;
    let stateRoot: Uint8Array = EMPTY_ROOT;
    try {
      stateRoot = await this.#stateRoot(req.parent);
      if (plantedSafetyBugs.proposeWrongStateRoot && stateRoot.length === 32) {
        stateRoot = stateRoot.map((b, i) => i === 0 ? b ^ 1 : b);
      }
      const r = await this.#o.app.produceCommand({ ...req, state: this.#stateView(req.parent) });
      if (!(r?.command instanceof Uint8Array)) throw new Error("command must be a Uint8Array");
      if (r.command.length > this.#appLimits.commandBytesMax) {
        throw new Error(`command of ${r.command.length} bytes exceeds the limit`);
      }
      command = r.command;
    } catch (e) {
      this.#emit({
        type: "message:reject",
        from: null,
        message: "app-produce",
        reason: "bad-command",
        detail: String(e),
      });
    }
    this.#push({
      kind: "input",
      input: { type: "produced", view: req.view, command, stateRoot, now: this.#o.clock.now() },
    });
  }

  #emit(e: ConsensusEvent): void {
    this.#o.onEvent?.(e);
    if (e.type === "equivocation:detect") this.#onEquivocation(e.evidence);
  }

  /** Resolves when the evidence detected so far is verified, stored and handed on (Spec 16.2). */
  evidenceIdle(): Promise<void> {
    return this.#evidenceWork;
  }

  /**
   * Spec 16.2 step 1: the sets an offender must belong to. A message about a known Node is
   * checked against the sets whose rule certifies that Node (Spec 3.4 step 3: during a handover,
   * both); when neither Node is known any more, against the rules this replica knows (the recent
   * configurations).
   */
  #evidenceSets(evidence: EquivocationEvidence): ValidatorSet[] {
    const hashes = evidence.kind === "double-vote"
      ? [evidence.first.nodeHash, evidence.second.nodeHash]
      : [nodeHash(evidence.first.node), nodeHash(evidence.second.node)];
    const core = this.core;
    const rules = hashes.map((h) => core.configOf(h)).filter((c) => c !== undefined)
      .map((c) => certifyingRule(c.parent));
    const from = rules.length > 0 ? rules : core.knownRules();
    return [...new Set(from.flatMap((r) => r.sets))];
  }

  /** Spec 16.2: detected equivocation becomes a verified, stored record; off the consensus path. */
  #onEquivocation(evidence: EquivocationEvidence): void {
    const store = this.#o.evidence;
    if (store === undefined) return;
    this.#evidenceWork = this.#evidenceWork.then(async () => {
      // Spec 16.2 step 1: verify (as anyone would who is handed the record).
      const verdict = await verifyEvidence(evidence, {
        chainId: this.#o.chainId,
        validators: this.#evidenceSets(evidence),
        verifier: this.#o.verifier,
      });
      if (!verdict.ok) {
        return this.#o.onEvent?.({
          type: "message:reject",
          from: null,
          message: "evidence",
          reason: verdict.reason,
          detail: verdict.detail,
        });
      }
      // Spec 16.2 step 2: store durably; a record already held (or beyond a limit) stops here.
      if (!await store.add(evidence)) return;
      const { offender, view } = verdict;
      // Spec 16.2 step 3: publish, naming the offender; then hand it to the Application.
      this.#o.onEvent?.({ type: "evidence:record", kind: evidence.kind, offender, view });
      await this.#o.app.onEvidence?.({ evidence, offender, view });
    }).catch((err) => {
      this.#o.onEvent?.({
        type: "message:reject",
        from: null,
        message: "evidence",
        reason: "store-failed",
        detail: String(err),
      });
    });
  }
}

/** The state root of a Node on a chain without state roots (and of genesis). */
const EMPTY_ROOT: Uint8Array = new Uint8Array(0);

/** Resolves after one turn of the event loop (a microtask chain never lets I/O complete). */
function turnEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Per-Node update indexes (key hex -> value, last update wins), built once per Node. */
const UPDATE_INDEXES = new WeakMap<readonly StateUpdate[], Map<string, Uint8Array | null>>();

/** A lookup table for one Node's updates, so a state read costs O(layers), not O(updates). */
function updatesIndex(updates: readonly StateUpdate[]): Map<string, Uint8Array | null> {
  let index = UPDATE_INDEXES.get(updates);
  if (index === undefined) {
    index = new Map();
    for (const [k, v] of updates) index.set(toHex(k), v);
    UPDATE_INDEXES.set(updates, index);
  }
  return index;
}

/**
 * One group-commit write (Spec 10.1 step 1): the merged writes of consecutive inputs, and the
 * `node:commit` events that wait for it. Merging costs O(1) per Node, so a catch-up answer of
 * 256 Nodes is collected in linear time.
 */
class GroupCommit {
  #safety: SafetyState | undefined = undefined;
  /** Inserted Nodes not committed in this write, by hash (hex), in insertion order. */
  readonly #nodes = new Map<string, StoredNode>();
  /** Committed Nodes, in height order. */
  readonly commits: StoredNode[] = [];
  readonly #prune: Hash[] = [];
  /** `node:commit` events, in order. */
  readonly events: ConsensusEvent[] = [];
  /** The commits' state updates, latest per key (hex); built on the first read. */
  #state: Map<string, Uint8Array | null> | null = null;

  /** Distinct Nodes written (inserted or committed). */
  get size(): number {
    return this.#nodes.size + this.commits.length;
  }

  /** Adds one input's write and its commit events. */
  merge(write: WriteBatch, events: readonly ConsensusEvent[]): void {
    if (write.safety !== undefined) this.#safety = write.safety;
    for (const n of write.nodes ?? []) this.#nodes.set(toHex(n.hash), n);
    for (const c of write.commits ?? []) {
      // Inserted and committed before the write lands: written once, as a commit.
      this.#nodes.delete(toHex(c.hash));
      this.commits.push(c);
      if (this.#state !== null) addUpdates(this.#state, c.updates);
    }
    for (const h of write.prune ?? []) {
      // Inserted and abandoned before the write lands: never written (nor deleted).
      if (!this.#nodes.delete(toHex(h))) this.#prune.push(h);
    }
    for (const e of events) if (e.type === "node:commit") this.events.push(e);
    assert(this.events.length === this.commits.length, "one node:commit event per commit");
  }

  /** The committed value of `id` (a key's hex) after this write, or undefined if untouched. */
  lookup(id: string): Uint8Array | null | undefined {
    if (this.#state === null) {
      this.#state = new Map();
      for (const c of this.commits) addUpdates(this.#state, c.updates);
    }
    return this.#state.get(id);
  }

  /** The storage batch. */
  batch(): WriteBatch {
    return {
      ...(this.#safety === undefined ? {} : { safety: this.#safety }),
      ...(this.#nodes.size > 0 ? { nodes: [...this.#nodes.values()] } : {}),
      ...(this.commits.length > 0 ? { commits: this.commits } : {}),
      ...(this.#prune.length > 0 ? { prune: this.#prune } : {}),
    };
  }
}

function addUpdates(state: Map<string, Uint8Array | null>, updates: readonly StateUpdate[]): void {
  for (const [k, v] of updates) state.set(toHex(k), v);
}
