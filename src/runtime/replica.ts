/**
 * The replica runtime: one process's replica, wiring the {@link Engine} (the sans-I/O core and
 * its shell) to real I/O: the Consensus TCP API, the NodeTree HTTP API, catch-up over HTTP, a
 * {@link Storage} (Deno KV by default), a `setTimeout` clock, Prometheus metrics, and the
 * Application: either the user's Node-level {@link Application} (`app`), run as is, or a
 * per-command {@link CommandMachine} (`machine`) served by the {@link Mempool} of client
 * commands with its batching Application.
 *
 * `GET /metrics` serves the replica's Prometheus metrics (`metrics.ts`) and `GET /` the live
 * NodeTree page (`page.ts`, with its data at `GET /tree`) in every mode; the command routes
 * below exist only with a `machine`.
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
 * Through LogTape (`log.ts`): records of category `["hotstuff", "replica"]` with an `event`
 * property and the event's fields (byte fields in hex, a `reason` on every rejection), to the
 * sinks the application configures; nothing is written until it does. The replica programs
 * configure one JSON object per line on stderr (`configureJsonLogging`). With `logSink`, those
 * JSON lines go to it instead. `logLevel` keeps them quiet.
 *
 * @module
 */
import { type Application, type CommitNotice, wrapApplication } from "../app.ts";
import type { CoreLimits } from "../consensus/core.ts";
import type { PacemakerOptions } from "../consensus/pacemaker.ts";
import type { ReputationOptions } from "../consensus/reputation.ts";
import { type EvidenceEntry, type EvidenceStore, MemoryEvidenceStore } from "../evidence.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { ed25519Verifier } from "../crypto.ts";
import { ConfigError, HotStuffError } from "../errors.ts";
import type { ConsensusEvent } from "../events.ts";
import { type AdmissionOptions, AUTH_HEADER, signRequest } from "../net/admission.ts";
import { type BatchPeer, fetchBatchFromPeers } from "../net/batch_fetch.ts";
import { HttpNodeSource } from "../net/catchup.ts";
import type { ConnectionLimits, ListenAddress } from "../net/connections.ts";
import type {
  ChainWithConfigs,
  HttpApiLimits,
  NodeTreeView,
  NodeWithCertificate,
} from "../net/http.ts";
import {
  DEFAULT_HTTP_API_LIMITS,
  errorResponse,
  NodeTreeHttpApi,
  readQuery,
  RouteError,
} from "../net/http.ts";
import { ConsensusTcp } from "../net/tcp.ts";
import { readCommitted, type Storage } from "../storage/storage.ts";
import type { Hash, Node, PublicKey, QuorumCertificate } from "../types.ts";
import { bytesEqual, fromHex, toHex } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";
import { nodeConfigOf, type ValidatorConfig } from "../consensus/reconfig.ts";
import { systemClock } from "./clock.ts";
import {
  asRouteError,
  type CommandRouteContext,
  getBatch,
  postCommands,
} from "./command_routes.ts";
import type { Network } from "./engine.ts";
import { Engine } from "./engine.ts";
import { eventLog, type LogLevel, netLevel, ReplicaLog } from "./log.ts";
import {
  type BatchStore,
  type CommandMachine,
  Mempool,
  MempoolError,
  type MempoolOptions,
} from "./mempool.ts";
import { appLimitsFor, refusePlantedBugs, restoreOf } from "./startup.ts";
import { PROGRESS_INTERVAL_MS, ProgressTicker } from "./progress.ts";
import { CachedStateStorage } from "./state_cache.ts";
import { ReplicaMetrics } from "./metrics.ts";
import { pageRoutes } from "./page.ts";
import { CommittedWindow, type TreeSnapshot, treeSnapshot } from "./tree_snapshot.ts";
import type { StateService } from "../state/service.ts";
import { createStateService, prepareState, withStateTree } from "../state/runtime.ts";

/**
 * Another replica, as this one reaches it.
 *
 * @example
 * ```ts
 * import type { ReplicaPeer } from "./replica.ts";
 * const peer: ReplicaPeer = {
 *   publicKey: new Uint8Array(32),
 *   consensus: { hostname: "10.0.0.2", port: 9000 },
 *   httpUrl: "http://10.0.0.2:9001",
 * };
 * ```
 */
export interface ReplicaPeer {
  /** The peer's validator key. */
  readonly publicKey: PublicKey;
  /** Where its Consensus TCP API listens. */
  readonly consensus: { readonly hostname: string; readonly port: number };
  /** Base URL of its HTTP API, e.g. `http://127.0.0.1:9001`. */
  readonly httpUrl: string;
}

/**
 * One submitted command: its id and expiry, and where it committed (null when not waited for).
 *
 * @example
 * ```ts
 * import type { SubmittedCommand } from "./replica.ts";
 * function show(c: SubmittedCommand): string {
 *   return c.height === null ? `${c.id} queued` : `${c.id} committed at height ${c.height}`;
 * }
 * ```
 */
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

/**
 * Options of {@link startReplica}.
 *
 * @example
 * ```ts
 * import { deriveSecretKey, ed25519Signer } from "../crypto.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const signer = ed25519Signer(deriveSecretKey("example-0"));
 * import type { ReplicaOptions } from "./replica.ts";
 * const options: ReplicaOptions = {
 *   chainId: "example",
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   signer,
 *   storage: new MemoryStorage(),
 *   app: { produceCommand: () => ({ command: new Uint8Array() }), validateNode: () => ({ ok: true, updates: [] }) },
 *   listenConsensus: { hostname: "127.0.0.1", port: 0 },
 *   listenHttp: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 *   pacemaker: { viewTimeoutMinMs: 500, viewTimeoutMaxMs: 8_000 },
 * };
 * ```
 */
export interface ReplicaOptions {
  /** Chain id. */
  readonly chainId: string;
  /**
   * Every member of the cluster: who may connect over Consensus TCP and sign catch-up requests.
   * Also the genesis validator set, unless `genesisValidators` is given.
   */
  readonly validators: ValidatorSet;
  /**
   * The genesis validator set, when it differs from the members: members outside it follow the
   * chain and may join through a validator-set change (SPECIFICATION.md 3.4).
   */
  readonly genesisValidators?: ValidatorSet;
  /** This replica's key (a member's). */
  readonly signer: Signer;
  /** Signature verification. Default {@link ed25519Verifier}. */
  readonly verifier?: Verifier;
  /** Persistence; the replica closes it on {@link Replica.close}. */
  readonly storage: Storage;
  /**
   * A per-command state machine, served by the mempool: clients `POST /commands`, the replica
   * batches them, and every Node's command names batches. Give this or `app`, not both.
   */
  readonly machine?: CommandMachine;
  /**
   * A Node-level {@link Application} (its own `produceCommand`, `validateNode`, `onCommit`): the
   * replica runs it as is, with no mempool and no `/commands` route. Give this or `machine`.
   */
  readonly app?: Application;
  /**
   * Called after each Node is durably committed, in height order (after the Application's own
   * `onCommit`). An exception is logged, never fatal.
   */
  readonly onCommit?: (notice: CommitNotice) => void | Promise<void>;
  /**
   * Observer of the replica's typed `noun:verb` events (commits, views, timeouts, catch-up,
   * peers, equivocation), called after the fact. An exception is logged, never fatal.
   */
  readonly onEvent?: (event: ReplicaEvent) => void;
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
  /** Leader reputation (SPECIFICATION.md 3.5): default on; null: the plain schedule. */
  readonly reputation?: ReputationOptions | null;
  /**
   * Where verified evidence of equivocation is kept and served (`GET /evidence`). Default in
   * memory; the replica CLI uses `DenoKvEvidenceStore` in the data directory.
   */
  readonly evidence?: EvidenceStore;
  /** Called with each evidence record stored (see `Application.onEvidence`). */
  readonly onEvidence?: Application["onEvidence"];
  /** Mempool and batch limits (batch limits must match on every replica). */
  readonly mempool?: ReplicaMempoolOptions;
  /**
   * Where batches of client commands are kept durably (a Node is voted for only once its batches
   * are stored). Default in memory; the replica CLI uses `DenoKvBatchStore` in the data
   * directory. The replica closes it on {@link Replica.close} if it has a `close` method.
   */
  readonly batchStore?: BatchStore & { close?(): Promise<void> | void };
  /** Consensus TCP limits, and whether links are encrypted (default true). */
  readonly network?: ReplicaNetworkOptions;
  /**
   * HTTP API limits and admission limits (`net/admission.ts`; validators' signed catch-up
   * requests are served first). Default request timeout 60 s (to let `?wait=commit` wait).
   */
  readonly http?: ReplicaHttpOptions;
  /**
   * Application state values cached in memory (exact: every write goes through the cache), for
   * the machine's reads and `committedState`. Default 20,000.
   */
  readonly stateCacheEntriesMax?: number;
  /** Longest `?wait=commit` wait, ms. Default 30,000. */
  readonly commitWaitTimeoutMs?: number;
  /**
   * The state tree (`src/state/`; needs a storage with `stateEntries`): every Node commits to its
   * parent's state root (SPECIFICATION.md 7), and every this many committed heights the tree is
   * frozen as a checkpoint for key proofs and snapshots. Default 64; 0 turns the tree, and state
   * roots, off. Every replica of a chain must have roots or not alike.
   */
  readonly stateCheckpointInterval?: number;
  /**
   * Join by snapshot state sync (`src/state/sync.ts`) when the store has no committed Node: the
   * newest provable snapshot a peer offers is installed before the Engine starts; without one
   * the replica replays from genesis. Default false.
   */
  readonly stateSync?: boolean;
  /**
   * With `stateSync`, a replica whose store's committed head is more than this many heights below
   * the newest provable snapshot a peer offers (e.g. restarted after a long outage) replaces its
   * state and Nodes by that snapshot at start; its safety state (votes, lock) is kept
   * (SPECIFICATION.md 15.4, "Far behind"). Default 4096; 0: only an empty store syncs.
   */
  readonly stateSyncLagHeights?: number;
  /**
   * Retention: delete committed Nodes older than the kept snapshots need (the oldest of the last
   * 4 checkpoints minus the 1024 heights below it that joiners fetch, SPECIFICATION.md 15.5).
   * Needs a store with `pruneCommittedBelow` (Deno KV). Default false: every Node is kept.
   */
  readonly pruneCommitted?: boolean;
  /**
   * Committed Nodes below a snapshot that a joiner fetches and that retention keeps. Default 1024
   * (the mempool's default `commandHorizon`; set it at least as high as `commandHorizon`).
   */
  readonly stateHistoryHeights?: number;
  /** Application routes tried before the replica's own (e.g. the key-value API). */
  readonly routes?: ReplicaRoutes;
  /** Least level logged. Default `"info"`. */
  readonly logLevel?: LogLevel;
  /**
   * Where this replica's JSON log lines go instead of LogTape. Default: none, records go to
   * LogTape (category `["hotstuff", "replica"]`), whose sinks the application configures.
   */
  readonly logSink?: (line: string) => void;
  /** A name for logs and status (e.g. `"replica-0"`). */
  readonly name?: string;
  /** Aborting it closes the replica. */
  readonly signal?: AbortSignal;
  /** Called once if the Engine fails (a bug); the replica then closes itself. */
  readonly onFailure?: (error: unknown) => void;
}

/**
 * Mempool and batch limits of {@link ReplicaOptions} (the replica wires the callbacks).
 *
 * @example
 * ```ts
 * import type { ReplicaMempoolOptions } from "./replica.ts";
 * const mempool: ReplicaMempoolOptions = { poolCommandsMax: 50_000, commandHorizon: 2_048 };
 * ```
 */
export type ReplicaMempoolOptions = Omit<
  MempoolOptions,
  "onCommitted" | "onDropped" | "onBatch" | "fetchBatch" | "batchStore"
>;

/**
 * Consensus TCP limits of {@link ReplicaOptions}, and whether links are encrypted (default true).
 *
 * @example
 * ```ts
 * import type { ReplicaNetworkOptions } from "./replica.ts";
 * const network: ReplicaNetworkOptions = { encryptLinks: true, sendQueueMax: 2_048 };
 * ```
 */
export type ReplicaNetworkOptions = ConnectionLimits & { readonly encryptLinks?: boolean };

/**
 * HTTP API and admission limits of {@link ReplicaOptions}.
 *
 * @example
 * ```ts
 * import type { ReplicaHttpOptions } from "./replica.ts";
 * const http: ReplicaHttpOptions = { bodyBytesMax: 4 * 1024 * 1024, admission: { clientReadRate: 100 } };
 * ```
 */
export type ReplicaHttpOptions = Partial<HttpApiLimits> & {
  readonly admission?: AdmissionOptions;
};

/**
 * Application routes: a Response, or null to let the replica's own routes answer.
 *
 * @example
 * ```ts
 * import type { ReplicaRoutes } from "./replica.ts";
 * const hello: ReplicaRoutes = (request, url) =>
 *   Promise.resolve(url.pathname === "/hello" && request.method === "GET" ? new Response("hi") : null);
 * ```
 */
export type ReplicaRoutes = (
  request: Request,
  url: URL,
  replica: Replica,
) => Promise<Response | null>;

/**
 * Every event a replica emits: the Engine's {@link ConsensusEvent}s (`view:enter`,
 * `view:timeout`, `node:insert`, `node:commit`, `qc:form`, `tc:form`, `lock:update`,
 * `equivocation:detect`, `message:reject`, `catchup:request`, `catchup:receive`, ...) and the
 * Connection Manager's `peer:connect` and `peer:disconnect` (peer keys in hex).
 *
 * @example
 * ```ts
 * import type { ReplicaEvent } from "./replica.ts";
 * function onEvent(e: ReplicaEvent): void {
 *   if (e.type === "peer:disconnect") console.log(`lost ${e.peer.slice(0, 8)}: ${e.reason}`);
 *   if (e.type === "equivocation:detect") console.log(`equivocation: ${e.evidence.kind}`);
 * }
 * ```
 */
export type ReplicaEvent =
  | ConsensusEvent
  | { readonly type: "peer:connect"; readonly peer: string; readonly direction: string }
  | { readonly type: "peer:disconnect"; readonly peer: string; readonly reason: string };

/**
 * Starts a replica. Resolves once it listens on both ports and its Engine runs.
 *
 * @param options identity, cluster, storage, application, addresses, limits, logging
 * @throws {ConfigError} `planted-bug` when a test-only bug switch is on; on bad options
 * @example
 * ```ts
 * import { startReplica } from "./replica.ts";
 * import { deriveSecretKey, ed25519Signer } from "../crypto.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * import { ValidatorSet } from "../validators.ts";
 *
 * // A one-validator chain of empty Nodes (a real cluster lists every validator in `peers`).
 * const signer = ed25519Signer(deriveSecretKey("example-0"));
 * const replica = await startReplica({
 *   chainId: "example",
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   signer,
 *   storage: new MemoryStorage(),
 *   app: {
 *     produceCommand: () => ({ command: new Uint8Array() }),
 *     validateNode: () => ({ ok: true, updates: [] }),
 *   },
 *   listenConsensus: { hostname: "127.0.0.1", port: 0 },
 *   listenHttp: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 *   onCommit: ({ node }) => console.log("committed", node.height),
 *   onEvent: (e) => e.type === "view:timeout" ? console.log("timeout", e.view) : undefined,
 * });
 * console.log(`status at http://127.0.0.1:${replica.httpPort}/status`);
 * await replica.close();
 * ```
 */
export async function startReplica(options: ReplicaOptions): Promise<Replica> {
  refusePlantedBugs();
  if ((options.machine === undefined) === (options.app === undefined)) {
    throw new ConfigError("bad-option", "give exactly one of `machine` and `app`");
  }
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
 * import { startReplica } from "./replica.ts";
 * import type { CommandMachine } from "./mempool.ts";
 * import { deriveSecretKey, ed25519Signer } from "../crypto.ts";
 * import { MemoryStorage } from "../storage/memory.ts";
 * import { ValidatorSet } from "../validators.ts";
 *
 * // A per-command machine served by the mempool: every command is appended to a log.
 * const log: CommandMachine = {
 *   apply: ({ command, height }) => ({
 *     ok: true,
 *     updates: [[new TextEncoder().encode(`log/${height}`), command]],
 *   }),
 * };
 * const signer = ed25519Signer(deriveSecretKey("example-0"));
 * const replica = await startReplica({
 *   chainId: "example",
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   signer,
 *   storage: new MemoryStorage(),
 *   machine: log,
 *   listenConsensus: { hostname: "127.0.0.1", port: 0 },
 *   listenHttp: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 * });
 * const [done] = await replica.submit([new TextEncoder().encode("hello")], { wait: true });
 * console.log(done!.height, replica.status().committed);
 * await replica.close();
 * ```
 */
export class Replica implements NodeTreeView {
  /** The pool of client commands; null when the replica runs a Node-level `app`. */
  readonly mempool: Mempool | null;
  /** State tree, checkpoints and snapshots (null when off, see `stateCheckpointInterval`). */
  readonly state: StateService | null;
  readonly #o: ReplicaOptions;
  readonly #log: ReplicaLog;
  readonly #tcp: ConsensusTcp;
  readonly #http: NodeTreeHttpApi;
  readonly #source: HttpNodeSource;
  /** The other validators' keys and HTTP APIs (where missing batches are fetched). */
  readonly #peers: readonly BatchPeer[];
  readonly #storage: CachedStateStorage;
  readonly #metrics: ReplicaMetrics;
  /** Recent committed Nodes, for the NodeTree page. */
  readonly #committedWindow = new CommittedWindow();
  readonly #started = performance.now();
  #engine: Engine | null = null;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | null = null;
  #failure: unknown = null;
  #lastProgressLog = performance.now();
  /** The CatchUp flow's progress since its last line, or null when it is not running. */
  #catchUp: { since: number; nodes: number; lastEvent: number; fromHeight: number } | null = null;
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
      (ms) => this.#metrics.onStorageWrite(ms),
    );
    this.#metrics = new ReplicaMetrics({
      chain: () => this.#chain(),
      pool: () => ({ commands: this.mempool?.size ?? 0, bytes: this.mempool?.bytes ?? 0 }),
      peers: () => this.#peerTotals(),
    });
    const me = options.signer.publicKey;
    const peers = options.peers.filter((p) => !bytesEqual(p.publicKey, me));
    this.#peers = peers.map((p) => ({ publicKey: p.publicKey, url: p.httpUrl }));
    this.state = createStateService(this.#stateOptions());
    this.mempool = options.machine === undefined ? null : new Mempool(options.machine, {
      ...options.mempool,
      batchStore: options.batchStore,
      onBatch: (bytes) => this.#tcp.broadcastBatch(bytes),
      fetchBatch: (digest, signal, from) => this.#fetchBatch(digest, signal, from),
      onDropped: (id, reason) => this.#log.write("warn", "mempool:drop", { id, reason }),
    });
    const netLog = (event: string, fields: Record<string, unknown>): void => {
      this.#log.write(netLevel(event), event, fields);
      const peerEvent = peerEventOf(event, fields);
      if (peerEvent !== null) this.#notify(peerEvent);
    };
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
    const pool = this.mempool;
    // Spec 15.4 step 5: the Engine opens on the installed head and catches up from there.
    const stateSync = o.stateSync === true;
    const installed = await prepareState(this.state, {
      ...this.#stateOptions(),
      stateSync,
      signal: o.signal,
    });
    const base = o.app ?? pool!.application;
    const app = withStateTree(
      this.#withCommitCallback(
        o.onEvidence === undefined ? base : { ...base, onEvidence: o.onEvidence },
      ),
      this.state,
    );
    const t0 = performance.now();
    if (pool !== null) {
      const ticker = new ProgressTicker((p: { read: number; total: number }) =>
        this.#log.write("info", "replica:restore-progress", p)
      );
      const restore = await restoreOf(
        this.#o.storage,
        pool.limits.commandHorizon,
        (read, total) => ticker.tick({ read, total }),
        installed ?? undefined,
      );
      await pool.restore(restore);
    }
    const restoreMs = Math.round(performance.now() - t0);
    const engine = await Engine.open({
      chainId: o.chainId,
      validators: o.genesisValidators ?? o.validators,
      signer: o.signer,
      verifier: o.verifier ?? ed25519Verifier(),
      storage: this.#storage,
      app,
      network,
      nodeSource: this.#source,
      clock: systemClock(),
      // Batches may carry more updates than the Engine's default allows (see BatchLimits).
      appLimits: pool === null ? undefined : appLimitsFor(pool.limits),
      pacemaker: o.pacemaker,
      limits: o.coreLimits,
      reputation: o.reputation,
      evidence: this.#evidence,
      onEvent: (e) => this.#onEvent(e),
      onSend: (message) => this.#metrics.onSend(message),
    });
    this.#engine = engine;
    this.#source.attach(engine);
    tcp.onMessage((from, message) => {
      this.#metrics.onReceive(message);
      engine.receive(from, message);
    });
    if (pool !== null) tcp.onBatch((from, bytes) => this.#onBatch(pool, from, bytes));
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
      rememberedIds: pool?.rememberedIds ?? 0,
    });
  }

  #stateOptions(): Parameters<typeof createStateService>[0] {
    const o = this.#o;
    return {
      chainId: o.chainId,
      // Snapshots are checked from the genesis set (members that join later are not trusted).
      validators: o.genesisValidators ?? o.validators,
      verifier: o.verifier,
      storage: o.storage,
      peers: this.#peers,
      authorize: (method, url) => this.#authorize(method, url),
      checkpointInterval: o.stateCheckpointInterval,
      pruneCommitted: o.pruneCommitted,
      historyHeights: o.stateHistoryHeights,
      stateSyncLagHeights: o.stateSyncLagHeights,
      log: (level, event, fields) => this.#log.write(level, event, fields),
    };
  }

  async #authorize(method: string, url: URL): Promise<Record<string, string>> {
    const o = this.#o;
    return { [AUTH_HEADER]: await signRequest(o.signer, { chainId: o.chainId, method, url }) };
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
    this.mempool?.close();
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
   * @throws {ConfigError} `no-mempool` when the replica runs a Node-level `app`
   */
  async submit(
    commands: readonly Uint8Array[],
    options: { wait?: boolean; signal?: AbortSignal; expires?: number } = {},
  ): Promise<SubmittedCommand[]> {
    const pool = this.mempool;
    if (pool === null) {
      throw new ConfigError("no-mempool", "this replica runs a Node-level app: no command pool");
    }
    const r = pool.submit(commands, { expires: options.expires });
    const expires = r.expires;
    if (options.wait !== true) {
      return r.ids.map((id) => ({ id, expires, height: null, node: null }));
    }
    const timeoutMs = this.#o.commitWaitTimeoutMs ?? 30_000;
    const done = await pool.waitForCommits(r.ids, expires, {
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
      // The committed head's validator set, and the set being handed over to (SPECIFICATION.md 3.4).
      validators: validatorsStatus(core.committedConfig),
      lock: { view: s.lockedQC.view, node: toHex(s.lockedQC.nodeHash) },
      highQC: { view: s.highQC.view, node: toHex(s.highQC.nodeHash) },
      highTC: s.highTC === null ? null : { view: s.highTC.view },
      lastVotedView: s.lastVotedView,
      peers: this.#tcp.status(),
      mempool: poolStatus(this.mempool),
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

  /** The QC this replica holds for a Node, or null (for commit proofs, `ChainAccess`). */
  async certificateOf(hash: Hash): Promise<QuorumCertificate | null> {
    return (await this.nodeByHash(hash))?.certificate ?? null;
  }

  /** See {@link NodeTreeView.chainFrom}. */
  chainFrom(fromHeight: number, limit: number): Promise<Node[]> {
    return this.engine.serveNodes(fromHeight, limit);
  }

  /** See {@link NodeTreeView.chainWithConfigs}. */
  async chainWithConfigs(fromHeight: number, limit: number): Promise<ChainWithConfigs> {
    const chain = await this.engine.serveChain(fromHeight, limit);
    return {
      nodes: chain.map((s) => s.node),
      configs: chain.map((s) => nodeConfigOf(s.updates)),
    };
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
      if (url.pathname === "/metrics") return await this.#getMetrics(request, url);
      const page = pageRoutes(request, url, (window) => this.#treeSnapshot(window));
      if (page !== null) return page;
      const state = await this.state?.route(request, url, this) ?? null;
      if (state !== null) return state;
      const pool = this.mempool;
      if (pool === null) return null;
      const ctx: CommandRouteContext = {
        mempool: pool,
        bodyBytesMax: this.#bodyBytesMax(),
        submit: (commands, options) => this.submit(commands, options),
      };
      if (url.pathname === "/commands") return await postCommands(ctx, request, url);
      if (url.pathname.startsWith("/batches/")) return await getBatch(ctx, request, url);
      return null;
    } catch (e) {
      const refusal = asRouteError(e);
      if (refusal === null) throw e;
      return errorResponse(refusal.status, refusal.reason, refusal.message, refusal.allow);
    }
  }

  /** `GET /metrics`: the Prometheus exposition. */
  async #getMetrics(request: Request, url: URL): Promise<Response> {
    if (request.method !== "GET") {
      throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
    }
    readQuery(url.searchParams, []);
    const text = await this.#metrics.text();
    return new Response(text, { headers: { "content-type": this.#metrics.contentType } });
  }

  /** A batch a peer sent over Consensus TCP. */
  #onBatch(pool: Mempool, from: Uint8Array, bytes: Uint8Array): void {
    try {
      pool.addBatch(bytes);
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
      bytesMax: this.mempool!.limits.batchBytesMax,
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
    this.#metrics.onEvent(e, performance.now());
    if (e.type === "node:commit") this.#committedWindow.add(e.hash, e.height, e.view);
    if (e.type === "catchup:request" || e.type === "catchup:receive") this.#onCatchUp(e);
    this.#notify(e);
  }

  /** Hands an event to the `onEvent` observer; its exceptions are logged, never fatal. */
  #notify(e: ReplicaEvent): void {
    const observer = this.#o.onEvent;
    if (observer === undefined) return;
    try {
      observer(e);
    } catch (error) {
      this.#log.write("error", "replica:observer-failed", { event: e.type, error });
    }
  }

  /** The Application with the `onCommit` option called after its own `onCommit`. */
  #withCommitCallback(app: Application): Application {
    const callback = this.#o.onCommit;
    if (callback === undefined) return app;
    return wrapApplication(app, {
      onCommit: async (notice) => {
        await app.onCommit?.(notice);
        try {
          await callback(notice);
        } catch (error) {
          this.#log.write("error", "replica:observer-failed", { event: "commit", error });
        }
      },
    });
  }

  #treeSnapshot(window: number): TreeSnapshot {
    const core = this.engine.core;
    return treeSnapshot({
      tree: core.tree,
      safety: core.safety,
      view: core.view,
      leader: core.leader(core.view),
      committed: this.#committedWindow.last(window + 1),
      window,
    });
  }

  #chain(): { view: number; height: number } {
    const core = this.#engine?.core;
    return { view: core?.view ?? 0, height: core?.tree.root.node.height ?? 0 };
  }

  #peerTotals(): {
    connected: number;
    connectedPower: number;
    totalPower: number;
    droppedFrames: number;
  } {
    // Powers in the committed validator set (SPECIFICATION.md 3.4), not the cluster's members.
    const set = this.#engine?.core.committedConfig.set ??
      this.#o.genesisValidators ?? this.#o.validators;
    let connected = 0, connectedPower = 0, droppedFrames = 0;
    for (const p of this.#tcp.status()) {
      droppedFrames += p.droppedFrames;
      if (!p.connected) continue;
      connected++;
      const key = fromHex(p.publicKey);
      connectedPower += key === null ? 0 : set.get(key)?.power ?? 0;
    }
    return { connected, connectedPower, totalPower: set.totalPower, droppedFrames };
  }

  #onCatchUp(e: ConsensusEvent): void {
    const now = performance.now();
    const height = this.#engine?.core.tree.root.node.height ?? 0;
    this.#catchUp ??= { since: now, nodes: 0, lastEvent: now, fromHeight: height };
    this.#catchUp.lastEvent = now;
    if (e.type === "catchup:receive") this.#catchUp.nodes += e.nodes;
  }

  /** A `catchup:progress` line every few seconds while the CatchUp flow runs. */
  #reportCatchUp(now: number, committedHeight: number): void {
    const c = this.#catchUp;
    if (c === null || now - c.since < PROGRESS_INTERVAL_MS) return;
    const seconds = (now - c.since) / 1000;
    this.#log.write("info", "catchup:progress", {
      committedHeight,
      committedSince: committedHeight - c.fromHeight,
      nodesReceived: c.nodes,
      nodesPerSecond: Math.round(c.nodes / seconds),
    });
    // Quiet for an interval: the flow has ended (it asks again within one when behind).
    this.#catchUp = now - c.lastEvent > PROGRESS_INTERVAL_MS
      ? null
      : { since: now, nodes: 0, lastEvent: c.lastEvent, fromHeight: committedHeight };
  }

  #watch(): void {
    const engine = this.#engine;
    if (engine === null || this.#closing !== null) return;
    if (engine.failure !== null) return this.#fail(engine.failure);
    const now = performance.now();
    this.#reportCatchUp(now, engine.core.tree.root.node.height);
    if (now - this.#lastProgressLog >= 10_000) {
      this.#lastProgressLog = now;
      const core = engine.core;
      this.#log.write("info", "replica:progress", {
        view: core.view,
        committedHeight: core.tree.root.node.height,
        committedCommands: this.mempool?.committedCommands ?? 0,
        poolCommands: this.mempool?.size ?? 0,
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

/** The pool's part of `GET /status`, or null without a pool. */
function poolStatus(pool: Mempool | null): Record<string, number> | null {
  if (pool === null) return null;
  return {
    commands: pool.size,
    bytes: pool.bytes,
    batches: pool.batches,
    waiting: pool.waiting,
    committedCommands: pool.committedCommands,
    rememberedIds: pool.rememberedIds,
  };
}

/** The `peer:*` event of a Connection Manager log line, or null. */
function peerEventOf(event: string, fields: Record<string, unknown>): ReplicaEvent | null {
  const peer = String(fields.peer ?? "");
  if (event === "net:connected") {
    return { type: "peer:connect", peer, direction: String(fields.direction ?? "") };
  }
  if (event === "net:disconnected") {
    return { type: "peer:disconnect", peer, reason: String(fields.reason ?? "") };
  }
  return null;
}

/** The process's memory, bytes (`Deno.memoryUsage`). */
function memoryUsage(): Record<string, number> {
  const m = Deno.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
}

/** How long one peer may take to answer `GET /batches/{digest}`, ms, before the next is asked. */
const BATCH_FETCH_PEER_TIMEOUT_MS = 500;

/** A validator configuration for the status page (SPECIFICATION.md 3.4). */
function validatorsStatus(c: ValidatorConfig): Record<string, unknown> {
  const list = (set: ValidatorSet) =>
    set.validators.map((v) => ({ publicKey: toHex(v.publicKey), power: v.power }));
  return { set: list(c.set), next: c.next === null ? null : list(c.next) };
}
