/**
 * The replica runtime: one process's replica, wiring the {@link Engine} (the sans-I/O core and
 * its shell) to real I/O: the Consensus TCP API, the NodeTree HTTP API, catch-up over HTTP, a
 * {@link Storage} (Deno KV by default), a `setTimeout` clock, and the {@link Mempool} of client
 * commands with its batching Application.
 *
 * ## HTTP routes it adds to the NodeTree HTTP API
 *
 * | method and path | body | answer |
 * |---|---|---|
 * | `POST /commands` | one raw command (`Content-Type: application/octet-stream`) | `202 {"id", "expires"}`; with `?wait=commit`, `200 {"id", "expires", "height", "node"}` once committed |
 * | `POST /commands` | CBOR array of commands (`Content-Type: application/cbor`): the batched path | `202 {"ids": [...], "expires"}`; with `?wait=commit`, `200 [{"id", "expires", "height", "node"}, ...]` |
 * | `GET /batches/{digest}` | | the batch with this digest (64 hex digits), `application/cbor`: for peers that miss one |
 *
 * Every command has an expiry height: `?expires=H` (for all commands of the request), or the
 * committed height plus `commandHorizon`. A command id is the SHA-256 of the expiry and the bytes
 * (hex in answers; see `commandId` in `mempool.ts`): a command with a given expiry commits at most
 * once, at or below that height. `node` is the hash of the Node that committed the command.
 * Refusals are JSON `{"error": message, "reason": reason}`: `400 bad-command | bad-body |
 * bad-expiry | bad-parameter | unknown-parameter | duplicate-parameter`, `410 expired`, `413
 * command-too-large | body-too-large`, `415 unsupported-media-type`, `422 command-rejected`, `503
 * pool-full | too-many-waiters | closed` (with `Retry-After`), `504 wait-timeout`.
 *
 * A replica packs the commands its clients give it into batches and sends each batch once to every
 * peer over the Consensus TCP connections (a BATCH frame); proposals name batches by digest. A
 * replica that misses a batch a Node names fetches it from its peers' `GET /batches/{digest}`
 * (see `mempool.ts` and SPECIFICATION.md 13).
 *
 * ## Lifecycle
 *
 * {@link startReplica} refuses to start when a planted-bug switch is on, then gives the pool the
 * command ids of the stored Nodes ({@link Mempool.restore}), opens the Engine from storage, starts the Consensus TCP API and the HTTP API and starts the Engine.
 * {@link Replica.close} (or the `signal`) stops the Engine, the network, the HTTP server and the
 * storage, in that order, awaiting each. An Engine failure (a failed assertion: a bug, or a
 * storage error) is logged at level `fatal`, reported to `onFailure`, and closes the replica.
 *
 * ## Logs
 *
 * One JSON object per line (to stderr by default): `{"time", "level", "event", ...fields}`, with
 * byte fields in hex and a `reason` field on every rejection. `logLevel` keeps them quiet.
 *
 * @module
 */
import type { Application, AppLimits } from "./app.ts";
import { DEFAULT_APP_LIMITS } from "./app.ts";
import { cborArrayLength, decodeValue } from "./codec.ts";
import type { CoreLimits } from "./consensus/core.ts";
import type { PacemakerOptions } from "./consensus/pacemaker.ts";
import { plantedSafetyBugs } from "./consensus/safety.ts";
import type { ReputationOptions } from "./consensus/reputation.ts";
import {
  type EvidenceEntry,
  evidenceOffender,
  type EvidenceStore,
  evidenceView,
  MemoryEvidenceStore,
} from "./evidence.ts";
import type { Signer, Verifier } from "./crypto.ts";
import { ed25519Verifier } from "./crypto.ts";
import type { Clock, Network } from "./engine.ts";
import { Engine } from "./engine.ts";
import { ConfigError, HotStuffError } from "./errors.ts";
import type { ConsensusEvent } from "./events.ts";
import {
  type BatchLimits,
  type BatchStore,
  type CommandMachine,
  Mempool,
  MempoolError,
  type MempoolOptions,
  type MempoolRestore,
} from "./mempool.ts";
import { HttpNodeSource } from "./net/catchup.ts";
import type { ConnectionLimits, ListenAddress } from "./net/connections.ts";
import type { HttpApiLimits, NodeTreeView, NodeWithCertificate } from "./net/http.ts";
import {
  DEFAULT_HTTP_API_LIMITS,
  errorResponse,
  jsonResponse,
  NodeTreeHttpApi,
  readBodyLimited,
  readQuery,
  RouteError,
} from "./net/http.ts";
import { ConsensusTcp } from "./net/tcp.ts";
import { type AdmissionOptions, AUTH_HEADER, signRequest } from "./net/admission.ts";
import { type BatchPeer, fetchBatchFromPeers } from "./net/batch_fetch.ts";
import {
  readCommitted,
  type Storage,
  type StoredNode,
  type WriteBatch,
} from "./storage/storage.ts";
import type { Hash, Node, PublicKey, QuorumCertificate } from "./types.ts";
import { bytesEqual, fromHex, toHex } from "./types.ts";
import type { ValidatorSet } from "./validators.ts";
import { plantedBugs } from "./validators.ts";

/** Log levels, quietest last. `fatal` lines (an Engine failure) are written unless `silent`. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const LEVELS: Record<LogLevel | "fatal", number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
  fatal: 50,
  silent: 100,
};

/**
 * Whether `value` names a {@link LogLevel}.
 *
 * @example
 * ```ts
 * import { isLogLevel } from "./replica.ts";
 * isLogLevel("warn"); // true
 * ```
 */
export function isLogLevel(value: string): value is LogLevel {
  return value !== "fatal" && Object.hasOwn(LEVELS, value);
}

/** Another replica, as this one reaches it. */
export interface ReplicaPeer {
  /** The peer's validator key. */
  readonly publicKey: PublicKey;
  /** Where its Consensus TCP API listens. */
  readonly consensus: { readonly hostname: string; readonly port: number };
  /** Base URL of its HTTP API, e.g. `http://127.0.0.1:9001`. */
  readonly httpUrl: string;
}

/** One submitted command: its id and expiry, and where it committed (null when not waited for). */
export interface SubmittedCommand {
  /** The command id, hex (`commandId` of its bytes and expiry). */
  readonly id: string;
  /** Its expiry height: it commits at or below this height, or never. */
  readonly expires: number;
  /** Height of the Node that committed it, or null. */
  readonly height: number | null;
  /** Hash of that Node, hex, or null. */
  readonly node: string | null;
}

/** Options of {@link startReplica}. */
export interface ReplicaOptions {
  /** Chain id. */
  readonly chainId: string;
  /** The validator set. */
  readonly validators: ValidatorSet;
  /** This replica's key (a validator's). */
  readonly signer: Signer;
  /** Signature verification. Default {@link ed25519Verifier}. */
  readonly verifier?: Verifier;
  /** Persistence; the replica closes it on {@link Replica.close}. */
  readonly storage: Storage;
  /** The application: a per-command state machine, batched through the mempool. */
  readonly machine: CommandMachine;
  /** Where the Consensus TCP API listens (port 0: the OS chooses). */
  readonly listenConsensus: ListenAddress;
  /** Where the HTTP API listens (port 0: the OS chooses). */
  readonly listenHttp: ListenAddress;
  /** The other validators (an entry with this replica's key is skipped). */
  readonly peers: readonly ReplicaPeer[];
  /** Pacemaker timing. Default: 1000 ms minimum view timeout, 30 s maximum. */
  readonly pacemaker?: PacemakerOptions;
  /** Core memory bounds. */
  readonly coreLimits?: CoreLimits;
  /** Leader reputation (SPECIFICATION.md 3.4): default on; null: the plain schedule. */
  readonly reputation?: ReputationOptions | null;
  /**
   * Where verified evidence of equivocation is kept and served (`GET /evidence`). Default in
   * memory; the replica CLI uses `DenoKvEvidenceStore` in the data directory.
   */
  readonly evidence?: EvidenceStore;
  /** Called with each evidence record stored (see `Application.onEvidence`). */
  readonly onEvidence?: Application["onEvidence"];
  /** Mempool and batch limits (batch limits must match on every replica). */
  readonly mempool?: Omit<
    MempoolOptions,
    "onCommitted" | "onDropped" | "onBatch" | "fetchBatch" | "batchStore"
  >;
  /**
   * Where batches of client commands are kept durably (a Node is voted for only once its batches
   * are stored). Default in memory; the replica CLI uses `DenoKvBatchStore` in the data
   * directory. The replica closes it on {@link Replica.close} if it has a `close` method.
   */
  readonly batchStore?: BatchStore & { close?(): Promise<void> | void };
  /** Consensus TCP limits, and whether links are encrypted (default true). */
  readonly network?: ConnectionLimits & { readonly encryptLinks?: boolean };
  /**
   * HTTP API limits and admission limits (`net/admission.ts`; validators' signed catch-up
   * requests are served first). Default request timeout 60 s (to let `?wait=commit` wait).
   */
  readonly http?: Partial<HttpApiLimits> & { readonly admission?: AdmissionOptions };
  /**
   * Application state values cached in memory (exact: every write goes through the cache), for
   * the machine's reads and `committedState`. Default 20,000.
   */
  readonly stateCacheEntriesMax?: number;
  /** Longest `?wait=commit` wait, ms. Default 30,000. */
  readonly commitWaitTimeoutMs?: number;
  /** Application routes tried before the replica's own (e.g. the key-value API). */
  readonly routes?: (request: Request, url: URL, replica: Replica) => Promise<Response | null>;
  /** Least level logged. Default `"info"`. */
  readonly logLevel?: LogLevel;
  /** Where log lines go. Default: stderr. */
  readonly logSink?: (line: string) => void;
  /** A name for logs and status (e.g. `"replica-0"`). */
  readonly name?: string;
  /** Aborting it closes the replica. */
  readonly signal?: AbortSignal;
  /** Called once if the Engine fails (a bug); the replica then closes itself. */
  readonly onFailure?: (error: unknown) => void;
}

/**
 * A `setTimeout` clock with one timer: monotonic milliseconds (`performance.now`).
 *
 * @example
 * ```ts
 * import { systemClock } from "./replica.ts";
 * const clock = systemClock();
 * clock.setTimer(clock.now() + 10, () => console.log("tick"));
 * clock.clearTimer();
 * ```
 */
export function systemClock(): Clock {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return {
    now: () => performance.now(),
    setTimer(at: number, callback: () => void): void {
      clearTimeout(timer);
      // Never early: setTimeout truncates fractional delays and may fire a little before `at`,
      // and the core ignores a tick before its deadline (without arming a new timer).
      const delay = (): number => Math.max(0, Math.ceil(at - performance.now()));
      const fire = (): void => {
        if (performance.now() < at) {
          timer = setTimeout(fire, delay());
          return;
        }
        timer = undefined;
        callback();
      };
      timer = setTimeout(fire, delay());
    },
    clearTimer(): void {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

/**
 * Throws unless every planted-bug switch (test-only) is off.
 *
 * @throws {ConfigError} `planted-bug` naming the switches that are on
 * @example
 * ```ts
 * import { refusePlantedBugs } from "./replica.ts";
 * refusePlantedBugs(); // fine: all switches are off
 * ```
 */
export function refusePlantedBugs(): void {
  const on = [
    ...Object.entries(plantedSafetyBugs).filter(([, v]) => v).map(([k]) => `safety.${k}`),
    ...Object.entries(plantedBugs).filter(([, v]) => v).map(([k]) => `validators.${k}`),
  ];
  if (on.length > 0) {
    throw new ConfigError("planted-bug", `refusing to start: planted bug switch on: ${on}`);
  }
}

/**
 * Starts a replica. Resolves once it listens on both ports and its Engine runs.
 *
 * @param options identity, cluster, storage, application, addresses, limits, logging
 * @throws {ConfigError} `planted-bug` when a test-only bug switch is on; on bad options
 * @example
 * ```ts
 * // const replica = await startReplica({ chainId, validators, signer, storage, machine,
 * //   listenConsensus, listenHttp, peers });
 * // console.log(replica.status()); await replica.close();
 * ```
 */
export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  refusePlantedBugs();
  if (options.validators.get(options.signer.publicKey) === undefined) {
    throw new ConfigError("not-a-validator", "the signer's key is not in the validator set");
  }
  const replica = new Replica(options);
  try {
    await replica.start();
  } catch (e) {
    await replica.close();
    throw e;
  }
  return replica;
}

/**
 * A running replica. Implements the {@link NodeTreeView} its HTTP API serves.
 *
 * @example
 * ```ts
 * // const replica = await startReplica(options);
 * // const [done] = await replica.submit([command], { wait: true });
 * // console.log(done.height, replica.status());
 * // await replica.close();
 * ```
 */
export class Replica implements NodeTreeView {
  /** The pool of client commands. */
  readonly mempool: Mempool;
  readonly #o: ReplicaOptions;
  readonly #log: ReplicaLog;
  readonly #tcp: ConsensusTcp;
  readonly #http: NodeTreeHttpApi;
  readonly #source: HttpNodeSource;
  /** The other validators' keys and HTTP APIs (where missing batches are fetched). */
  readonly #peers: readonly BatchPeer[];
  readonly #storage: CachedStateStorage;
  readonly #started = performance.now();
  #engine: Engine | null = null;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | null = null;
  #failure: unknown = null;
  #lastProgressLog = performance.now();
  readonly #evidence: EvidenceStore;
  /** Evidence records this process stored. */
  #evidenceRecorded = 0;

  /** Use {@link startReplica}. */
  constructor(options: ReplicaOptions) {
    this.#o = options;
    this.#evidence = options.evidence ?? new MemoryEvidenceStore();
    this.#log = new ReplicaLog(options.logLevel ?? "info", options.logSink, options.name);
    this.#storage = new CachedStateStorage(
      options.storage,
      options.stateCacheEntriesMax ?? 20_000,
    );
    const me = options.signer.publicKey;
    const peers = options.peers.filter((p) => !bytesEqual(p.publicKey, me));
    this.#peers = peers.map((p) => ({ publicKey: p.publicKey, url: p.httpUrl }));
    this.mempool = new Mempool(options.machine, {
      ...options.mempool,
      batchStore: options.batchStore,
      onBatch: (bytes) => this.#tcp.broadcastBatch(bytes),
      fetchBatch: (digest, signal, from) => this.#fetchBatch(digest, signal, from),
      onDropped: (id, reason) => this.#log.write("warn", "mempool:drop", { id, reason }),
    });
    const netLog = (event: string, fields: Record<string, unknown>): void =>
      this.#log.write(netLevel(event), event, fields);
    this.#tcp = new ConsensusTcp({
      ...options.network,
      chainId: options.chainId,
      signer: options.signer,
      verifier: options.verifier ?? ed25519Verifier(),
      validators: options.validators,
      listen: options.listenConsensus,
      peers: peers.map((p) => ({ publicKey: p.publicKey, ...p.consensus })),
      log: netLog,
    });
    this.#source = new HttpNodeSource({
      peers: peers.map((p) => ({ publicKey: p.publicKey, url: p.httpUrl })),
      log: netLog,
      sign: (method, url) => signRequest(options.signer, { chainId: options.chainId, method, url }),
    });
    this.#http = new NodeTreeHttpApi({
      requestTimeoutMs: 60_000,
      ...options.http,
      hostname: options.listenHttp.hostname,
      port: options.listenHttp.port,
      view: this,
      extraRoutes: (request, url) => this.#routes(request, url),
      log: netLog,
      admission: {
        ...options.http?.admission,
        auth: {
          chainId: options.chainId,
          validators: options.validators,
          verifier: options.verifier ?? ed25519Verifier(),
        },
      },
    });
  }

  /** Opens the Engine and starts the network, the HTTP API and the Engine. Called once. */
  async start(): Promise<void> {
    const o = this.#o;
    const tcp = this.#tcp;
    const network: Network = {
      send: (to, message) => void tcp.send(to, message),
      broadcast: (message) => tcp.broadcast(message),
    };
    const app: Application = { ...this.mempool.application, onEvidence: o.onEvidence };
    const t0 = performance.now();
    await this.mempool.restore(
      await restoreOf(this.#o.storage, this.mempool.limits.commandHorizon),
    );
    const restoreMs = Math.round(performance.now() - t0);
    const engine = await Engine.open({
      chainId: o.chainId,
      validators: o.validators,
      signer: o.signer,
      verifier: o.verifier ?? ed25519Verifier(),
      storage: this.#storage,
      app,
      network,
      nodeSource: this.#source,
      clock: systemClock(),
      // Batches may carry more updates than the Engine's default allows (see BatchLimits).
      appLimits: appLimitsFor(this.mempool.limits),
      pacemaker: o.pacemaker,
      limits: o.coreLimits,
      reputation: o.reputation,
      evidence: this.#evidence,
      onEvent: (e) => this.#onEvent(e),
    });
    this.#engine = engine;
    this.#source.attach(engine);
    tcp.onMessage((from, message) => engine.receive(from, message));
    tcp.onBatch((from, bytes) => this.#onBatch(from, bytes));
    if (this.#closing !== null) return;
    await tcp.start();
    await this.#http.start();
    engine.start();
    this.#watchdog = setInterval(() => this.#watch(), 100);
    o.signal?.addEventListener("abort", () => void this.close(), { once: true });
    if (o.signal?.aborted) void this.close();
    this.#log.write("info", "replica:start", {
      publicKey: toHex(o.signer.publicKey),
      consensus: `${o.listenConsensus.hostname}:${tcp.port}`,
      http: `${o.listenHttp.hostname}:${this.#http.port}`,
      view: engine.core.view,
      committedHeight: engine.core.tree.root.node.height,
      // The pool's ids of the last commandHorizon committed heights, read from the store.
      poolRestoreMs: restoreMs,
      rememberedIds: this.mempool.rememberedIds,
    });
  }

  /** The Engine (for tests and observers). */
  get engine(): Engine {
    if (this.#engine === null) throw new HotStuffError("not-started", "the replica is not started");
    return this.#engine;
  }

  /** The port of the Consensus TCP API. */
  get consensusPort(): number {
    return this.#tcp.port;
  }

  /** The port of the HTTP API. */
  get httpPort(): number {
    return this.#http.port;
  }

  /** The Engine's failure (a bug, or a storage error), or null. */
  get failure(): unknown {
    return this.#failure;
  }

  /** True once {@link Replica.close} has been called (or the replica failed). */
  get closed(): boolean {
    return this.#closing !== null;
  }

  /**
   * Stops the Engine, the network, the HTTP server and the storage, in that order, awaiting each.
   * Clients still waiting for commits are answered `503 closed`. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#watchdog);
    await this.#engine?.stop();
    await this.#tcp.close();
    this.mempool.close();
    await this.#http.close();
    await this.#source.close();
    await this.#storage.close();
    await this.#o.batchStore?.close?.();
    this.#log.write("info", "replica:closed", {});
    this.#log.flush();
  }

  /**
   * Submits commands as a client would: adds them to this replica's next batch (sent to every
   * peer). With `wait`, resolves when every one is committed.
   *
   * @throws {MempoolError} see {@link Mempool.submit} and {@link Mempool.waitForCommit}
   */
  async submit(
    commands: readonly Uint8Array[],
    options: { wait?: boolean; signal?: AbortSignal; expires?: number } = {},
  ): Promise<SubmittedCommand[]> {
    const r = this.mempool.submit(commands, { expires: options.expires });
    const expires = r.expires;
    if (options.wait !== true) {
      return r.ids.map((id) => ({ id, expires, height: null, node: null }));
    }
    const timeoutMs = this.#o.commitWaitTimeoutMs ?? 30_000;
    const done = await this.mempool.waitForCommits(r.ids, expires, {
      timeoutMs,
      signal: options.signal,
    });
    return done.map((c) => ({ id: c.id, expires, height: c.height, node: c.node }));
  }

  /** Committed application state for `key`, or null. */
  committedState(key: Uint8Array): Promise<Uint8Array | null> {
    return this.#storage.getState(key);
  }

  // -------------------------------------------------------------------------------------------
  // NodeTreeView

  /** See {@link NodeTreeView.evidence}. */
  evidence(after: number, limit: number): Promise<EvidenceEntry[]> {
    return this.#evidence.list(after, limit);
  }

  /** See {@link NodeTreeView.status}. */
  status(): Record<string, unknown> {
    const core = this.engine.core;
    const s = core.safety;
    const root = core.tree.root;
    return {
      name: this.#o.name ?? null,
      chainId: this.#o.chainId,
      publicKey: toHex(this.#o.signer.publicKey),
      view: core.view,
      leader: toHex(core.leader(core.view)),
      committed: { height: root.node.height, hash: toHex(root.hash) },
      lock: { view: s.lockedQC.view, node: toHex(s.lockedQC.nodeHash) },
      highQC: { view: s.highQC.view, node: toHex(s.highQC.nodeHash) },
      highTC: s.highTC === null ? null : { view: s.highTC.view },
      lastVotedView: s.lastVotedView,
      peers: this.#tcp.status(),
      mempool: {
        commands: this.mempool.size,
        bytes: this.mempool.bytes,
        batches: this.mempool.batches,
        waiting: this.mempool.waiting,
        committedCommands: this.mempool.committedCommands,
        rememberedIds: this.mempool.rememberedIds,
      },
      engine: { droppedMessages: this.engine.dropped, failed: this.#failure !== null },
      evidence: { recorded: this.#evidenceRecorded },
      // Bytes: resident set, V8 heap in use and reserved, memory held outside the heap.
      memory: memoryUsage(),
      uptimeMs: Math.round(performance.now() - this.#started),
    };
  }

  /** See {@link NodeTreeView.nodeByHash}. */
  async nodeByHash(hash: Uint8Array): Promise<NodeWithCertificate | null> {
    const storage = this.#o.storage;
    const node = (await storage.getNode(hash))?.node ?? this.engine.core.tree.get(hash)?.node;
    if (node === undefined) return null;
    const atHeight = await storage.committedHash(node.height);
    const committed = atHeight !== null && bytesEqual(atHeight, hash);
    let certificate: QuorumCertificate | null = null;
    if (committed) {
      const nextHash = await storage.committedHash(node.height + 1);
      const next = nextHash === null ? null : await storage.getNode(nextHash);
      if (next !== null) certificate = certifies(next.node, hash);
    }
    return { node, hash, certificate: certificate ?? this.#certificateInTree(hash), committed };
  }

  /** See {@link NodeTreeView.committedRange}. */
  async committedRange(fromHeight: number, toHeight: number): Promise<NodeWithCertificate[]> {
    // One Node beyond the range: its justify certifies the last one.
    const nodes = await readCommitted(this.#o.storage, fromHeight, toHeight + 1);
    const out: NodeWithCertificate[] = [];
    for (const [i, n] of nodes.entries()) {
      if (n.node.height > toHeight) break;
      const next = nodes[i + 1];
      const certificate = next === undefined
        ? this.#certificateInTree(n.hash)
        : certifies(next.node, n.hash);
      out.push({ node: n.node, hash: n.hash, certificate, committed: true });
    }
    return out;
  }

  /** See {@link NodeTreeView.chainFrom}. */
  chainFrom(fromHeight: number, limit: number): Promise<Node[]> {
    return this.engine.serveNodes(fromHeight, limit);
  }

  /** A QC for `hash` known to the NodeTree: a child's justify, or the highest QC. */
  #certificateInTree(hash: Hash): QuorumCertificate | null {
    const core = this.engine.core;
    if (bytesEqual(core.safety.highQC.nodeHash, hash)) return core.safety.highQC;
    for (const e of core.tree.entries()) {
      if (bytesEqual(e.node.justify.nodeHash, hash)) return e.node.justify;
    }
    return null;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP routes: commands and batches

  async #routes(request: Request, url: URL): Promise<Response | null> {
    try {
      const own = this.#o.routes === undefined ? null : await this.#o.routes(request, url, this);
      if (own !== null) return own;
      if (url.pathname === "/commands") return await this.#postCommands(request, url);
      if (url.pathname.startsWith("/batches/")) return await this.#getBatch(request, url);
      return null;
    } catch (e) {
      const refusal = asRouteError(e);
      if (refusal === null) throw e;
      return errorResponse(refusal.status, refusal.reason, refusal.message, refusal.allow);
    }
  }

  async #postCommands(request: Request, url: URL): Promise<Response> {
    requirePost(request);
    const { wait, expires } = readCommandParams(url);
    const type = mediaType(request);
    const body = await readBodyLimited(request, this.#bodyBytesMax());
    let commands: Uint8Array[];
    let single = false;
    if (type === "application/cbor") commands = decodeCommandArray(body);
    else if (type === "application/octet-stream" || type === null) {
      commands = [body];
      single = true;
    } else {
      throw new RouteError(415, "unsupported-media-type", `Content-Type ${type} is not supported`);
    }
    if (commands.length === 0) throw new RouteError(400, "bad-command", "no commands given");
    // An abandoned request stops waiting: its waiters do not outlive the client.
    const results = await this.submit(commands, { wait, expires, signal: request.signal });
    if (!wait) {
      const ids = results.map((r) => r.id);
      const exp = results[0]!.expires;
      return jsonResponse(single ? { id: ids[0], expires: exp } : { ids, expires: exp }, 202);
    }
    return jsonResponse(single ? results[0] : results, 200);
  }

  async #getBatch(request: Request, url: URL): Promise<Response> {
    if (request.method !== "GET") {
      throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
    }
    readQuery(url.searchParams, []);
    const hex = url.pathname.slice("/batches/".length);
    const digest = /^[0-9a-f]{64}$/.test(hex) ? fromHex(hex) : null;
    if (digest === null) {
      throw new RouteError(400, "bad-digest", "a batch digest is 64 lowercase hex digits");
    }
    const bytes = await this.mempool.batchBytes(digest);
    if (bytes === null) throw new RouteError(404, "not-found", `no batch ${hex} here`);
    return new Response(bytes as Uint8Array<ArrayBuffer>, {
      headers: { "content-type": "application/cbor" },
    });
  }

  /** A batch a peer sent over Consensus TCP. */
  #onBatch(from: Uint8Array, bytes: Uint8Array): void {
    try {
      this.mempool.addBatch(bytes);
    } catch (e) {
      if (!(e instanceof MempoolError) || e.reason === "closed") return;
      this.#log.write("warn", "mempool:batch-refused", {
        from: toHex(from),
        reason: e.reason,
        detail: e.message,
      });
    }
  }

  /** Asks each peer's `GET /batches/{digest}` in turn until one has it (checked by the pool). */
  /** A missing batch from the peers (proposer first), signed as this validator for priority. */
  #fetchBatch(
    digest: Uint8Array,
    signal: AbortSignal,
    from: Uint8Array | null,
  ): Promise<Uint8Array | null> {
    const o = this.#o;
    return fetchBatchFromPeers(this.#peers, digest, {
      signal,
      from,
      peerTimeoutMs: BATCH_FETCH_PEER_TIMEOUT_MS,
      bytesMax: this.mempool.limits.batchBytesMax,
      // Signed as this validator: peers serve it before the public (`net/admission.ts`).
      headers: async (url) => ({
        [AUTH_HEADER]: await signRequest(o.signer, { chainId: o.chainId, method: "GET", url }),
      }),
      onFailure: (peer, reason) =>
        this.#log.write(
          reason === "wrong-digest" ? "warn" : "debug",
          "mempool:batch-fetch",
          { peer, reason },
        ),
    });
  }

  #bodyBytesMax(): number {
    return this.#o.http?.bodyBytesMax ?? DEFAULT_HTTP_API_LIMITS.bodyBytesMax;
  }

  // -------------------------------------------------------------------------------------------
  // Events, failure, logs

  #onEvent(e: ConsensusEvent): void {
    if (e.type === "evidence:record") this.#evidenceRecorded++;
    const { level, fields } = eventLog(e);
    this.#log.write(level, e.type, fields);
  }

  #watch(): void {
    const engine = this.#engine;
    if (engine === null || this.#closing !== null) return;
    if (engine.failure !== null) return this.#fail(engine.failure);
    const now = performance.now();
    if (now - this.#lastProgressLog >= 10_000) {
      this.#lastProgressLog = now;
      const core = engine.core;
      this.#log.write("info", "replica:progress", {
        view: core.view,
        committedHeight: core.tree.root.node.height,
        committedCommands: this.mempool.committedCommands,
        poolCommands: this.mempool.size,
      });
    }
  }

  #fail(error: unknown): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#log.write("fatal", "engine:failure", {
      reason: error instanceof HotStuffError ? error.reason : "assertion",
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      stack: error instanceof Error ? error.stack ?? null : null,
    });
    try {
      this.#o.onFailure?.(error);
    } finally {
      void this.close();
    }
  }
}

/** The certificate `child` carries for `hash`, if it certifies it. */
function certifies(child: Node, hash: Hash): QuorumCertificate | null {
  return bytesEqual(child.justify.nodeHash, hash) ? child.justify : null;
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function requirePost(request: Request): void {
  if (request.method !== "POST") {
    throw new RouteError(
      405,
      "method-not-allowed",
      `${request.method} is not allowed; use POST`,
      "POST",
    );
  }
}

/** `?wait=commit` and `?expires=H` of `POST /commands`. */
function readCommandParams(url: URL): { wait: boolean; expires: number | undefined } {
  const query = readQuery(url.searchParams, ["wait", "expires"]);
  const wait = query.get("wait");
  if (wait !== undefined && wait !== "commit") {
    throw new RouteError(400, "bad-parameter", `wait must be "commit": ${JSON.stringify(wait)}`);
  }
  const expires = query.get("expires");
  if (expires !== undefined && !/^[0-9]{1,15}$/.test(expires)) {
    throw new RouteError(400, "bad-expiry", `expires must be a height: ${JSON.stringify(expires)}`);
  }
  return { wait: wait !== undefined, expires: expires === undefined ? undefined : Number(expires) };
}

/**
 * What the pool needs from the store before the Engine starts (see {@link Mempool.restore}): the
 * committed Nodes of the last `horizon` heights and the uncommitted Nodes.
 */
async function restoreOf(storage: Storage, horizon: number): Promise<MempoolRestore> {
  const head = await storage.committedHead();
  const top = head?.height ?? 0;
  const committed = await readCommitted(storage, top - horizon + 1, top);
  const uncommitted = await storage.uncommittedNodes();
  return { committedHeight: top, committed, uncommitted };
}

/**
 * Engine Application limits that accept every batch the mempool accepts: a batch within its
 * {@link BatchLimits} is never refused by the Engine after the replicas validated it.
 */
function appLimitsFor(batch: BatchLimits): AppLimits {
  const d = DEFAULT_APP_LIMITS;
  return {
    ...d,
    commandBytesMax: Math.max(d.commandBytesMax, batch.batchBytesMax),
    updatesMax: Math.max(d.updatesMax, batch.batchUpdatesMax),
    // Keys total at most half of the batch's key budget (2 * key.length + 16 each).
    updateKeysBytesMax: Math.max(d.updateKeysBytesMax, batch.batchUpdateKeyBytesMax),
    updatesBytesMax: Math.max(d.updatesBytesMax, batch.batchUpdateBytesMax),
  };
}

/** The process's memory, bytes (`Deno.memoryUsage`). */
function memoryUsage(): Record<string, number> {
  const m = Deno.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
}

function mediaType(request: Request): string | null {
  const header = request.headers.get("content-type");
  if (header === null) return null;
  return header.split(";")[0]!.trim().toLowerCase();
}

/** How long one peer may take to answer `GET /batches/{digest}`, ms, before the next is asked. */
const BATCH_FETCH_PEER_TIMEOUT_MS = 500;

/** Most commands in one CBOR array body. */
const SUBMIT_COMMANDS_MAX = 65_536;

function decodeCommandArray(body: Uint8Array): Uint8Array[] {
  // The count first: decoding allocates every item.
  const count = cborArrayLength(body);
  if (count !== null && count > SUBMIT_COMMANDS_MAX) {
    throw new RouteError(400, "bad-body", `${count} commands exceed ${SUBMIT_COMMANDS_MAX}`);
  }
  let value: unknown;
  try {
    value = decodeValue(body);
  } catch (e) {
    throw new RouteError(400, "bad-body", `body is not CBOR: ${(e as Error).message}`);
  }
  if (!Array.isArray(value) || !value.every((c) => c instanceof Uint8Array)) {
    throw new RouteError(400, "bad-body", "body must be a CBOR array of byte strings");
  }
  return value as Uint8Array[];
}

const MEMPOOL_STATUS: Record<string, number> = {
  "bad-command": 400,
  "command-too-large": 413,
  "command-rejected": 422,
  "bad-expiry": 400,
  "expired": 410,
  "pool-full": 503,
  "too-many-waiters": 503,
  "closed": 503,
  "wait-timeout": 504,
};

function asRouteError(e: unknown): RouteError | null {
  if (e instanceof RouteError) return e;
  if (e instanceof MempoolError) {
    return new RouteError(MEMPOOL_STATUS[e.reason] ?? 500, e.reason, e.message);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// An exact read cache of application state

/**
 * A {@link Storage} that caches application state values. Exact, because every write goes
 * through it: a committed update replaces the cached value of its key, and a read that a write
 * overtook is not cached. Bounded: the oldest entries are dropped.
 */
class CachedStateStorage implements Storage {
  readonly #inner: Storage;
  readonly #max: number;
  readonly #cache = new Map<string, Uint8Array | null>();
  /** Writes finished so far. */
  #seq = 0;

  constructor(inner: Storage, max: number) {
    if (!Number.isSafeInteger(max) || max < 0) {
      throw new ConfigError("bad-option", `stateCacheEntriesMax must be >= 0: ${max}`);
    }
    this.#inner = inner;
    this.#max = max;
  }

  loadSafety(): ReturnType<Storage["loadSafety"]> {
    return this.#inner.loadSafety();
  }

  async write(batch: WriteBatch): Promise<void> {
    await this.#inner.write(batch);
    this.#seq++;
    // Only cached keys are updated: most written keys are never read back.
    if (this.#cache.size === 0) return;
    for (const c of batch.commits ?? []) {
      for (const [k, v] of c.updates) {
        const id = toHex(k);
        if (this.#cache.has(id)) this.#set(id, v);
      }
    }
  }

  getNode(hash: Hash): Promise<StoredNode | null> {
    return this.#inner.getNode(hash);
  }

  committedHash(height: number): Promise<Hash | null> {
    return this.#inner.committedHash(height);
  }

  committedHead(): ReturnType<Storage["committedHead"]> {
    return this.#inner.committedHead();
  }

  async getState(key: Uint8Array): Promise<Uint8Array | null> {
    const id = toHex(key);
    const hit = this.#cache.get(id);
    if (hit !== undefined) return hit;
    const start = this.#seq;
    const value = await this.#inner.getState(key);
    // After a write finished meanwhile, the value read may be older than the store's: not cached.
    if (this.#seq === start) this.#set(id, value);
    return value;
  }

  uncommittedNodes(): Promise<StoredNode[]> {
    return this.#inner.uncommittedNodes();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #set(id: string, value: Uint8Array | null): void {
    if (this.#max === 0) return;
    this.#cache.delete(id);
    this.#cache.set(id, value);
    if (this.#cache.size > this.#max) this.#cache.delete(this.#cache.keys().next().value!);
  }
}

/**
 * Resolves after `ms` milliseconds, or as soon as `signal` aborts (at once if it already has).
 *
 * @example
 * ```ts
 * import { sleep } from "./replica.ts";
 * await sleep(1, new AbortController().signal);
 * ```
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Logging

/** Events that come in floods (one per view) log at debug; rejections are rate limited. */
function eventLog(
  e: ConsensusEvent,
): { level: LogLevel | "fatal"; fields: Record<string, unknown> } {
  const { type: _type, ...rest } = e;
  switch (e.type) {
    case "message:reject":
      return { level: "warn", fields: rest };
    case "equivocation:detect":
      return {
        level: "error",
        fields: {
          reason: e.evidence.kind,
          offender: toHex(evidenceOffender(e.evidence)),
          view: evidenceView(e.evidence),
        },
      };
    case "evidence:record":
      return {
        level: "error",
        fields: { reason: e.kind, offender: toHex(e.offender), view: e.view },
      };
    case "view:timeout":
    case "tc:form":
    case "catchup:request":
    case "catchup:receive":
      return { level: "info", fields: rest };
    default:
      return { level: "debug", fields: rest };
  }
}

function netLevel(event: string): LogLevel {
  switch (event) {
    case "net:dial-failed":
    case "catchup:peer-skipped":
      return "debug";
    case "net:handshake-failed":
    case "net:bad-frame":
    case "net:queue-full":
    case "net:disconnected":
    case "net:handler-error":
    case "http:timeout":
      return "warn";
    case "net:task-failed":
    case "http:handler-error":
      return "error";
    default:
      return "info";
  }
}

/** Lines per event and reason in one window before the rest are counted instead. */
const LOG_BURST_MAX = 20;
const LOG_WINDOW_MS = 10_000;

/** One JSON object per line; warnings rate limited per event and reason. */
class ReplicaLog {
  readonly #min: number;
  readonly #sink: (line: string) => void;
  readonly #name: string | undefined;
  readonly #bursts = new Map<string, { start: number; count: number }>();

  constructor(level: LogLevel, sink: ((line: string) => void) | undefined, name?: string) {
    if (!isLogLevel(level)) throw new ConfigError("bad-option", `unknown log level ${level}`);
    this.#min = LEVELS[level];
    this.#sink = sink ?? stderrSink;
    this.#name = name;
  }

  write(level: LogLevel | "fatal", event: string, fields: Record<string, unknown>): void {
    if (LEVELS[level] < this.#min || level === "silent") return;
    if (level === "warn" && !this.#admit(event, fields)) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, event };
    if (this.#name !== undefined) line.replica = this.#name;
    for (const [k, v] of Object.entries(fields)) line[k] = jsonSafe(v);
    try {
      this.#sink(JSON.stringify(line));
    } catch {
      // A broken log sink must not stop the replica.
    }
  }

  #admit(event: string, fields: Record<string, unknown>): boolean {
    const key = `${event}/${String(fields.reason ?? "")}`;
    const now = performance.now();
    let b = this.#bursts.get(key);
    if (b === undefined || now - b.start > LOG_WINDOW_MS) {
      if (b !== undefined && b.count > LOG_BURST_MAX) {
        this.#emitSuppressed(key, b.count - LOG_BURST_MAX);
      }
      if (this.#bursts.size > 1000) this.#bursts.clear();
      this.#bursts.set(key, b = { start: now, count: 0 });
    }
    b.count++;
    return b.count <= LOG_BURST_MAX;
  }

  #emitSuppressed(key: string, count: number): void {
    const line = {
      time: new Date().toISOString(),
      level: "warn",
      event: "log:suppressed",
      key,
      count,
    };
    try {
      this.#sink(JSON.stringify(line));
    } catch {
      // ignore
    }
  }

  flush(): void {
    for (const [key, b] of this.#bursts) {
      if (b.count > LOG_BURST_MAX) this.#emitSuppressed(key, b.count - LOG_BURST_MAX);
    }
    this.#bursts.clear();
  }
}

const lineEncoder = new TextEncoder();

function stderrSink(line: string): void {
  const bytes = lineEncoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

function jsonSafe(v: unknown): unknown {
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  return v;
}
