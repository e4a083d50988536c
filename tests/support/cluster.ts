/**
 * Shared helpers for tests that attack or kill whole replicas: an in-process cluster of real
 * replicas (`startReplica`, Deno KV in a temporary directory, real TCP and HTTP on loopback) whose
 * JSON log lines are captured and parsed, a record of every vote a replica logs (`vote:send`),
 * and small probes (`GET /status`, open file descriptors, polling with a deadline).
 *
 * The cluster may leave some validators' keys out (`run`): their seats are then empty, or held
 * by a test that plays a Byzantine validator with that key over raw sockets.
 *
 * @module
 */
import type { ReputationOptions } from "../../src/consensus/reputation.ts";
import { deriveSecretKey, ed25519Signer, type Signer } from "../../src/crypto.ts";
import type { ConnectionLimits } from "../../src/net/connections.ts";
import type { PacemakerOptions } from "../../src/consensus/pacemaker.ts";
import {
  type Replica,
  type ReplicaOptions,
  type ReplicaPeer,
  startReplica,
} from "../../src/runtime/replica.ts";
import { DenoKvStorage } from "../../src/storage/deno_kv.ts";
import { ValidatorSet } from "../../src/validators.ts";
import { kvMachine } from "../../examples/kv_store/app.ts";
import { kvRoutes } from "../../examples/kv_store/routes.ts";
import { sleep } from "../../examples/kv_store/cluster.ts";

/** Loopback only. */
export const HOST = "127.0.0.1";

export { sleep };

/**
 * Ports the OS just handed out (bound all at once, then released).
 *
 * @example
 * ```ts
 * import { freePorts } from "./cluster.ts";
 * const [a, b] = freePorts(2);
 * ```
 */
export function freePorts(n: number): number[] {
  const listeners = Array.from({ length: n }, () => Deno.listen({ hostname: HOST, port: 0 }));
  const ports = listeners.map((l) => l.addr.port);
  for (const l of listeners) l.close();
  return ports;
}

/**
 * Polls `condition` every 20 ms until it holds.
 *
 * @throws {Error} naming `what` after `timeoutMs` (default 20 s)
 * @example
 * ```ts
 * import { waitUntil } from "./cluster.ts";
 * await waitUntil("always", () => true, 10);
 * ```
 */
export async function waitUntil(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

/**
 * TCP connections in state ESTABLISHED or CLOSE-WAIT whose local port is `port` (the server side
 * of connections to a listener in this process), counted with `ss`; null where `ss` is missing.
 *
 * @example
 * ```ts
 * import { connectionsTo } from "./cluster.ts";
 * console.log(await connectionsTo(9000));
 * ```
 */
export async function connectionsTo(port: number): Promise<number | null> {
  try {
    const out = await new Deno.Command("ss", {
      args: ["-Htn", "state", "established", "state", "close-wait", `( sport = :${port} )`],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return null;
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.trim() !== "").length;
  } catch {
    return null;
  }
}

/** `GET /status` fields the tests read. */
export interface StatusSnapshot {
  /** Current view. */
  readonly view: number;
  /** Committed head. */
  readonly committed: { readonly height: number; readonly hash: string };
  /** One entry per peer. */
  readonly peers: ReadonlyArray<{ readonly publicKey: string; readonly connected: boolean }>;
  /** Engine health. */
  readonly engine: { readonly failed: boolean };
}

/**
 * `GET /status`, or null when the replica does not answer within `timeoutMs`.
 *
 * @example
 * ```ts
 * import { getStatus } from "./cluster.ts";
 * await getStatus("http://127.0.0.1:1"); // null
 * ```
 */
export async function getStatus(url: string, timeoutMs = 2_000): Promise<StatusSnapshot | null> {
  try {
    const r = await fetch(`${url}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) {
      await r.body?.cancel();
      return null;
    }
    return await r.json() as StatusSnapshot;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Logs

/** One parsed log line, numbered in arrival order. */
export interface LogLine {
  /** Arrival number, from 1, per replica. */
  readonly seq: number;
  /** Level. */
  readonly level: string;
  /** Event name, `noun:verb`. */
  readonly event: string;
  /** Machine-readable reason, on rejections. */
  readonly reason?: string;
  /** Every other field. */
  readonly [field: string]: unknown;
}

/** A validator that signed two different votes in one view, as its own log shows. */
export interface DoubleVote {
  /** The view. */
  readonly view: number;
  /** The first Node voted for (hex). */
  readonly first: string;
  /** The other Node voted for (hex). */
  readonly second: string;
}

/** What {@link LogBook.waitFor} waits for. */
export interface LogQuery {
  /** The event. */
  readonly event: string;
  /** Its reason. */
  readonly reason: string;
  /** Only lines after this one (a {@link LogBook.seq}). */
  readonly since: number;
  /** A further condition. */
  readonly where?: (line: LogLine) => boolean;
}

/** Most log lines kept per replica; the oldest go first. `vote:send` lines are kept apart. */
const LOG_LINES_MAX = 50_000;

/**
 * The log of one replica: every line but the `debug` ones (kept: `vote:send`, as votes), parsed.
 *
 * @example
 * ```ts
 * import { LogBook } from "./cluster.ts";
 * const log = new LogBook();
 * log.push(JSON.stringify({ level: "warn", event: "net:bad-frame", reason: "bad-cbor" }));
 * log.find((l) => l.reason === "bad-cbor", 0); // the line
 * ```
 */
export class LogBook {
  /** Votes this replica logged sending: view to Node hash (hex). */
  readonly votes: Map<number, string> = new Map();
  /** Views in which it logged two different votes. */
  readonly doubleVotes: DoubleVote[] = [];
  #lines: LogLine[] = [];
  #seq = 0;

  /** Number of the last line received (0 before any). */
  get seq(): number {
    return this.#seq;
  }

  /** The lines kept. */
  get lines(): readonly LogLine[] {
    return this.#lines;
  }

  /** Takes one JSON line (a `logSink`). Lines that are not JSON objects are kept as `raw`. */
  push(text: string): void {
    const seq = ++this.#seq;
    let line: LogLine;
    try {
      line = { ...JSON.parse(text), seq };
    } catch {
      line = { seq, level: "raw", event: "raw", text };
    }
    if (line.event === "vote:send") return this.#vote(line);
    if (line.level === "debug") return;
    this.#lines.push(line);
    if (this.#lines.length > LOG_LINES_MAX) this.#lines = this.#lines.slice(LOG_LINES_MAX / 10);
  }

  /** The first line after `sinceSeq` that matches, or undefined. */
  find(match: (line: LogLine) => boolean, sinceSeq: number): LogLine | undefined {
    return this.#lines.find((l) => l.seq > sinceSeq && match(l));
  }

  /** Every line after `sinceSeq` that matches. */
  filter(match: (line: LogLine) => boolean, sinceSeq: number): LogLine[] {
    return this.#lines.filter((l) => l.seq > sinceSeq && match(l));
  }

  /**
   * Waits for a line with `event` and `reason` after line `since` (and matching `where`).
   *
   * @throws {Error} with the lines logged since then, after `timeoutMs`
   */
  async waitFor(query: LogQuery, timeoutMs = 10_000): Promise<LogLine> {
    const where = query.where ?? (() => true);
    const match = (l: LogLine): boolean =>
      l.event === query.event && l.reason === query.reason && where(l);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.find(match, query.since);
      if (found !== undefined) return found;
      if (performance.now() > deadline) {
        const recent = this.filter(() => true, query.since).slice(-15).map((l) =>
          JSON.stringify(l)
        );
        throw new Error(
          `no log line ${query.event} with reason ${query.reason} within ${timeoutMs} ms; ` +
            `since then:\n${recent.join("\n")}`,
        );
      }
      await sleep(20);
    }
  }

  #vote(line: LogLine): void {
    const view = line.view as number;
    const hash = line.nodeHash as string;
    const earlier = this.votes.get(view);
    if (earlier === undefined) this.votes.set(view, hash);
    else if (earlier !== hash) this.doubleVotes.push({ view, first: earlier, second: hash });
  }
}

// ---------------------------------------------------------------------------------------------
// An in-process cluster

/** Options of {@link startInProcessCluster}. */
export interface InProcessClusterOptions {
  /** Chain id; also seeds the validators' keys. */
  readonly chainId: string;
  /** Validators (power 1 each). */
  readonly validators: number;
  /** Indices of the validators that run here as replicas. Default: all. */
  readonly run?: readonly number[];
  /** Pacemaker timing. Default 250 ms minimum, 2 s maximum. */
  readonly pacemaker?: PacemakerOptions;
  /** Consensus TCP limits of every replica, and whether links are encrypted (default true). */
  readonly network?: ConnectionLimits & { readonly encryptLinks?: boolean };
  /** Log through LogTape (level `info`) instead of into the {@link LogBook}s. */
  readonly logSinkless?: boolean;
  /** State checkpoint interval of every replica (default the replica's). */
  readonly stateCheckpointInterval?: number;
  /** More options for every replica. */
  readonly replica?: Partial<ReplicaOptions>;
  /** Leader reputation (SPECIFICATION.md 3.5): default on; null for the plain schedule. */
  readonly reputation?: ReputationOptions | null;
}

/** A running in-process cluster. */
export interface InProcessCluster {
  /** The chain id. */
  readonly chainId: string;
  /** Every validator's signer, in validator index order (not sorted by key). */
  readonly signers: readonly Signer[];
  /** The validator set. */
  readonly validators: ValidatorSet;
  /** Every validator as a peer: its consensus address and HTTP URL. */
  readonly peers: readonly ReplicaPeer[];
  /** The running replicas, by validator index (undefined for a seat left empty). */
  readonly replicas: ReadonlyArray<Replica | undefined>;
  /** The log of each running replica, by validator index. */
  readonly logs: ReadonlyArray<LogBook>;
  /** Indices of the running replicas. */
  readonly running: readonly number[];
  /** The Deno KV file of replica `i`. */
  kvPath(i: number): string;
  /** Closes every replica and removes the temporary directory. */
  close(): Promise<void>;
}

/**
 * Starts replicas of the key-value store in this process, each with Deno KV in a temporary
 * directory, on OS-chosen loopback ports, logging at `debug` into a {@link LogBook}.
 *
 * @example
 * ```ts
 * import { startInProcessCluster } from "./cluster.ts";
 * const cluster = await startInProcessCluster({ chainId: "c", validators: 4, run: [0, 1, 2] });
 * await cluster.close();
 * ```
 */
export async function startInProcessCluster(
  options: InProcessClusterOptions,
): Promise<InProcessCluster> {
  const n = options.validators;
  const run = options.run ?? Array.from({ length: n }, (_, i) => i);
  const signers = Array.from(
    { length: n },
    (_, i) => ed25519Signer(deriveSecretKey(`${options.chainId}-${i}`)),
  );
  const validators = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
  const ports = freePorts(2 * n);
  const peers: ReplicaPeer[] = signers.map((s, i) => ({
    publicKey: s.publicKey,
    consensus: { hostname: HOST, port: ports[2 * i]! },
    httpUrl: `http://${HOST}:${ports[2 * i + 1]!}`,
  }));
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-cluster-" });
  const replicas: Array<Replica | undefined> = Array(n).fill(undefined);
  const logs = signers.map(() => new LogBook());
  const close = async (): Promise<void> => {
    await Promise.all(replicas.map((r) => r?.close()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const i of run) {
      replicas[i] = await startReplica({
        chainId: options.chainId,
        validators,
        signer: signers[i]!,
        storage: await DenoKvStorage.open(`${dir}/replica-${i}.kv`),

        machine: kvMachine,
        routes: kvRoutes,
        listenConsensus: peers[i]!.consensus,
        listenHttp: { hostname: HOST, port: ports[2 * i + 1]! },
        peers,
        pacemaker: options.pacemaker ?? { viewTimeoutMinMs: 250, viewTimeoutMaxMs: 2_000 },
        network: options.network,
        reputation: options.reputation,
        stateCheckpointInterval: options.stateCheckpointInterval,
        ...options.replica,
        logLevel: options.logSinkless === true ? "info" : "debug",
        logSink: options.logSinkless === true ? undefined : (line) => logs[i]!.push(line),
        name: `replica-${i}`,
      });
    }
  } catch (e) {
    await close();
    throw e;
  }
  return {
    chainId: options.chainId,
    signers,
    validators,
    peers,
    replicas,
    logs,
    running: run,
    kvPath: (i) => `${dir}/replica-${i}.kv`,
    close,
  };
}
