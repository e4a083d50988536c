/**
 * The Engine: the runtime shell around the sans-I/O core. It verifies incoming messages, feeds
 * the core one input at a time, and carries out the core's output in the order the core
 * prescribes (persist, then sign and send, then notify, then call the Application). The Progress
 * flow is the core's message handling; the CatchUp flow is the core's fetch requests, served by a
 * {@link NodeSource}. See SPECIFICATION.md section 10.
 *
 * Everything here is serial: one input is fully handled before the next starts, so the same
 * inputs in the same order give the same outputs (the simulator relies on it).
 *
 * @module
 */
import { genesisNode, nodeHash, signedBytes } from "./codec.ts";
import type { Application, StateView } from "./app.ts";
import { checkValidateResult, DEFAULT_APP_LIMITS } from "./app.ts";
import type { AppLimits } from "./app.ts";
import type {
  CoreInput,
  CoreLimits,
  CoreOutput,
  FetchRequest,
  Outbound,
} from "./consensus/core.ts";
import { Core } from "./consensus/core.ts";
import type { PacemakerOptions } from "./consensus/pacemaker.ts";
import { MessageVerifier, type Verdict } from "./consensus/verify.ts";
import type { Signer, Verifier } from "./crypto.ts";
import type { ConsensusEvent } from "./events.ts";
import type {
  SafetyState,
  StateUpdate,
  Storage,
  StoredNode,
  WriteBatch,
} from "./storage/storage.ts";
import type { ConsensusMessage, Hash, Node, PublicKey } from "./types.ts";
import { bytesEqual, SignatureDomain, toHex } from "./types.ts";
import type { ValidatorSet } from "./validators.ts";

/** Where the Engine sends consensus messages. */
export interface Network {
  /** Sends to one validator (never called with this replica's own key). */
  send(to: PublicKey, message: ConsensusMessage): void;
  /** Sends to every other validator. */
  broadcast(message: ConsensusMessage): void;
}

/**
 * Where the CatchUp flow gets Nodes. `fetch` starts a request and returns at once; the answer
 * comes back through {@link Engine.receiveNodes} or {@link Engine.receiveFetchFailure}.
 */
export interface NodeSource {
  /** Asks `from` (or any peer when null) for its chain from `fromHeight`, at most `limit`. */
  fetch(request: FetchRequest): void;
}

/** The Engine's clock: milliseconds, and one timer. */
export interface Clock {
  /** Current time, ms. */
  now(): number;
  /** Calls `callback` at time `at` (or soon after). A later call replaces the earlier timer. */
  setTimer(at: number, callback: () => void): void;
  /** Cancels the timer. */
  clearTimer(): void;
}

/** Options of {@link Engine.open}. */
export interface EngineOptions {
  /** Chain id. */
  readonly chainId: string;
  /** Validator set. */
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
  /** Bounds on Application results. */
  readonly appLimits?: AppLimits;
  /** Observer of every event. */
  readonly onEvent?: (event: ConsensusEvent) => void;
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
  | { readonly kind: "nodes"; readonly from: PublicKey; readonly nodes: readonly Node[] };

/** Queued messages whose signatures are checked ahead of their turn. */
const VERIFY_AHEAD = 32;

/** A pending group-commit write is flushed once it holds this many Nodes and commits. */
const GROUP_COMMIT_NODES_MAX = 64;

/** Most jobs queued; beyond it incoming peer messages are dropped (and counted). */
const QUEUE_MAX = 100_000;

/**
 * One replica's Engine.
 *
 * @example
 * ```ts
 * // const engine = await Engine.open({ chainId, validators, signer, verifier, storage, app,
 * //   network, nodeSource, clock });
 * // engine.start(); network.onMessage((from, m) => engine.receive(from, m));
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
  #pending: {
    safety?: SafetyState;
    nodes: StoredNode[];
    commits: StoredNode[];
    prune: Hash[];
  } | null = null;
  /** Commit notifications and `node:commit` events waiting for the pending write. */
  #pendingCommitted: StoredNode[] = [];
  #pendingCommitEvents: ConsensusEvent[] = [];

  private constructor(options: EngineOptions, core: Core) {
    this.#o = options;
    this.core = core;
    this.#verifier = new MessageVerifier(options.chainId, options.validators, options.verifier);
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
    const core = new Core({
      chainId: options.chainId,
      validators: options.validators,
      me: options.signer.publicKey,
      pacemaker: options.pacemaker,
      limits: options.limits,
    }, { safety, root, uncommitted });
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
    this.#push({ kind: "nodes", from, nodes });
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
    this.#pending = null;
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
    const out: Node[] = [];
    const root = this.core.tree.root;
    for (let h = Math.max(1, fromHeight); h <= root.node.height && out.length < limit; h++) {
      const hash = await this.#o.storage.committedHash(h);
      const stored = hash === null ? null : await this.#o.storage.getNode(hash);
      if (stored === null) return out;
      out.push(stored.node);
    }
    const tip = this.core.safety.highQC.nodeHash;
    if (!this.core.tree.has(tip)) return out;
    for (const e of this.core.tree.pathFromRoot(tip)) {
      if (out.length >= limit) break;
      if (e.node.height >= fromHeight) out.push(e.node);
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
        const job = this.#queue.shift();
        this.#prefetch();
        if (job === undefined) {
          // Drained: make the merged writes durable; jobs pushed meanwhile are seen above.
          if (this.#pending === null) break;
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
          this.#emit({
            type: "message:reject",
            from: job.from,
            message: job.message.type,
            reason: v.reason,
            detail: v.detail,
          });
          return null;
        }
        return { type: "message", from: job.from, message: job.message, now };
      }
      case "nodes":
        return { type: "fetched", from: job.from, nodes: await this.#checkFetched(job), now };
    }
  }

  /** Spec 4.4 step 0: a fetched chain must be hash-linked, ascending, with valid QCs. */
  async #checkFetched(job: { from: PublicKey; nodes: readonly Node[] }): Promise<Node[]> {
    // The hash-linked prefix first (cheap), then every QC of it verified at once (Web Crypto
    // works in parallel); the answer is cut at the first Node whose QC fails.
    const linked: Node[] = [];
    for (const n of job.nodes) {
      const prev = linked[linked.length - 1];
      if (prev !== undefined && !bytesEqual(n.parent, nodeHash(prev))) break;
      linked.push(n);
    }
    const verdicts = await Promise.all(linked.map((n) => this.#verifier.verifyNode(n)));
    const bad = verdicts.findIndex((v) => !v.ok);
    if (bad < 0) return linked;
    const v = verdicts[bad]!;
    if (!v.ok) {
      this.#emit({
        type: "message:reject",
        from: job.from,
        message: "fetched-node",
        reason: v.reason,
        detail: v.detail,
      });
    }
    return linked.slice(0, bad);
  }

  async #carryOut(out: CoreOutput): Promise<void> {
    // Spec 10.1 step 1: durable before anything leaves. The write joins the pending group
    // commit, which is flushed before any send (and before commits are announced).
    if (out.write !== null) this.#merge(out.write);
    this.#pendingCommitted.push(...out.committed);
    const large = this.#pending !== null &&
      this.#pending.nodes.length + this.#pending.commits.length >= GROUP_COMMIT_NODES_MAX;
    if (out.sends.length > 0 || large) await this.#flush();
    // Spec 10.1 step 2: sign and send.
    for (const s of out.sends) await this.#send(s);
    // Spec 10.1 step 4: Application calls; results come back as inputs.
    for (const x of out.execute) await this.#execute(x.node, x.hash);
    if (out.produce !== null) await this.#produce(out.produce);
    // Spec 10.1 step 5: catch-up.
    if (out.fetch !== null) this.#o.nodeSource.fetch(out.fetch);
    // Spec 10.1 step 6: timer.
    if (out.timerAt !== null) {
      this.#o.clock.setTimer(out.timerAt, () => {
        this.#push({ kind: "input", input: { type: "tick", now: this.#o.clock.now() } });
      });
    }
    // Spec 10.1 step 7: events (a commit's only once it is durable).
    for (const e of out.events) {
      if (e.type === "node:commit" && this.#pending !== null) this.#pendingCommitEvents.push(e);
      else this.#emit(e);
    }
  }

  #merge(write: WriteBatch): void {
    const p = this.#pending ?? { nodes: [], commits: [], prune: [] };
    const gone = new Set((write.prune ?? []).map(toHex));
    const all = [...p.nodes, ...(write.nodes ?? [])];
    // A Node inserted and abandoned before the write lands is simply never written (nor deleted).
    const unwritten = new Set(all.map((n) => toHex(n.hash)).filter((id) => gone.has(id)));
    this.#pending = {
      safety: write.safety ?? p.safety,
      nodes: all.filter((n) => !unwritten.has(toHex(n.hash))),
      commits: [...p.commits, ...(write.commits ?? [])],
      prune: [...p.prune, ...(write.prune ?? []).filter((h) => !unwritten.has(toHex(h)))],
    };
  }

  /** One durable write of the merged batch, then the commit notifications, in order. */
  async #flush(): Promise<void> {
    // Spec 10.1 step 1: the merged write, durable before anything below.
    const p = this.#pending;
    if (p !== null) {
      this.#pending = null;
      await this.#o.storage.write({
        ...(p.safety === undefined ? {} : { safety: p.safety }),
        ...(p.nodes.length > 0 ? { nodes: p.nodes } : {}),
        ...(p.commits.length > 0 ? { commits: p.commits } : {}),
        ...(p.prune.length > 0 ? { prune: p.prune } : {}),
      });
    }
    const committed = this.#pendingCommitted;
    const events = this.#pendingCommitEvents;
    this.#pendingCommitted = [];
    this.#pendingCommitEvents = [];
    // Spec 10.1 step 3: commit notifications, in order, once durable.
    for (const c of committed) {
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
    for (const e of events) this.#emit(e);
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

  #stateView(parent: Hash): StateView {
    // Newest first: uncommitted ancestors, then committed Nodes whose write is still pending.
    const unflushed = (this.#pending?.commits ?? []).map((c) => c.updates).reverse();
    const layers = [...this.core.tree.pendingUpdates(parent), ...unflushed];
    const storage = this.#o.storage;
    return {
      get(key: Uint8Array): Promise<Uint8Array | null> {
        const id = toHex(key);
        for (const updates of layers) {
          const index = updatesIndex(updates);
          if (index.has(id)) return Promise.resolve(index.get(id)!);
        }
        return storage.getState(key);
      },
    };
  }

  async #execute(node: Node, hash: Hash): Promise<void> {
    let result: { ok: true; updates: readonly [Uint8Array, Uint8Array | null][] } | {
      ok: false;
      reason: string;
    };
    try {
      const r = await this.#o.app.validateNode({ node, hash, state: this.#stateView(node.parent) });
      const problem = checkValidateResult(r, this.#appLimits);
      if (problem !== null) result = { ok: false, reason: `bad application result: ${problem}` };
      else if (r.ok) result = { ok: true, updates: r.updates.map(([k, v]) => [k, v]) };
      else result = { ok: false, reason: String(r.reason) };
    } catch (e) {
      result = { ok: false, reason: `validateNode threw: ${String(e)}` };
    }
    this.#push({
      kind: "input",
      input: { type: "executed", hash, result, now: this.#o.clock.now() },
    });
  }

  async #produce(req: { view: number; parent: Hash; height: number }): Promise<void> {
    let command: Uint8Array | null = null;
    try {
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
      input: { type: "produced", view: req.view, command, now: this.#o.clock.now() },
    });
  }

  #emit(e: ConsensusEvent): void {
    this.#o.onEvent?.(e);
  }
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
