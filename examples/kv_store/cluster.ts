/**
 * A local cluster of key-value replicas as real processes (for the demo and the integration
 * tests), and small HTTP client helpers for the replicas' APIs.
 *
 * Each replica runs `examples/kv_store/replica.ts` under `deno run` with the permissions it
 * needs, in a process group of its own (so a Ctrl-C at the terminal reaches only the parent,
 * which then stops the replicas itself). Its stderr (JSON log lines) goes to
 * `DIR/logs/replica-i.log`.
 *
 * @module
 */
import {
  type ClusterConfig,
  encodeValue,
  formatHostPort,
  initCluster,
  readClusterConfig,
} from "../../mod.ts";
import { encodeKvCommand } from "./app.ts";

/** `GET /status`, the fields the demo and the tests read. */
export interface ReplicaStatus {
  /** Validator name. */
  readonly name: string | null;
  /** Current view. */
  readonly view: number;
  /** Leader of the current view, hex key. */
  readonly leader: string;
  /** Committed head. */
  readonly committed: { readonly height: number; readonly hash: string };
  /** The committed validator set, and the set being handed over to (SPECIFICATION.md 3.4). */
  readonly validators?: {
    readonly set: ReadonlyArray<{ readonly publicKey: string; readonly power: number }>;
    readonly next: ReadonlyArray<{ readonly publicKey: string; readonly power: number }> | null;
  };
  /** The highest view this replica voted in. */
  readonly lastVotedView?: number;
  /** Mempool counters. */
  readonly mempool: { readonly commands: number; readonly committedCommands: number };
  /** Process memory, bytes (`rss`, `heapUsed`, `heapTotal`, `external`). */
  readonly memory?: { readonly rss: number; readonly heapUsed: number };
}

/** Options of {@link ProcessCluster.create}. */
export interface ProcessClusterOptions {
  /** Number of replicas. */
  readonly replicas: number;
  /**
   * More replicas, after those, that are members but not validators until a validator-set
   * change adds them (`"joins": true`). Default 0.
   */
  readonly joining?: number;
  /** Replica log level. Default `"info"`. */
  readonly logLevel?: string;
  /** Minimum view timeout, ms. Default: the replica's (500). */
  readonly viewTimeoutMs?: number;
  /** Directory prefix for the temporary directory. */
  readonly prefix?: string;
  /** Plaintext consensus links (`"links": "plaintext"`). Default: encrypted, as `init` writes. */
  readonly plaintext?: boolean;
  /**
   * Words put before `deno run ...` when replica `i` is started, e.g.
   * `["ip", "netns", "exec", "host-i"]` to run it on a host made as a network namespace (the
   * wrapper must exec the command, so that signals reach the replica). Default: none.
   */
  readonly command?: (i: number) => readonly string[];
}

const HOST = "127.0.0.1";
const REPLICA_ENTRY = new URL("./replica.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;

/**
 * Ports that are free right now (all bound at once, then released).
 *
 * @example
 * ```ts
 * import { freePorts } from "./cluster.ts";
 * const [a, b] = await freePorts(2);
 * ```
 */
export function freePorts(n: number): Promise<number[]> {
  const listeners = Array.from({ length: n }, () => Deno.listen({ hostname: HOST, port: 0 }));
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return Promise.resolve(ports);
}

/**
 * A cluster of replica processes in a temporary directory.
 *
 * @example
 * ```ts
 * import { ProcessCluster } from "./cluster.ts";
 * const cluster = await ProcessCluster.create({ replicas: 4 });
 * try {
 *   for (let i = 0; i < 4; i++) cluster.start(i);
 *   await cluster.waitReady();
 * } finally {
 *   await cluster.close();
 * }
 * ```
 */
export class ProcessCluster {
  /** The temporary directory (cluster file, keys, data, logs). */
  readonly dir: string;
  /** The cluster file's path. */
  readonly configPath: string;
  /** The cluster. */
  readonly config: ClusterConfig;
  /** Base URL of each replica's HTTP API. */
  readonly urls: readonly string[];
  readonly #keyPaths: readonly string[];
  readonly #o: ProcessClusterOptions;
  readonly #children: Array<{ process: Deno.ChildProcess; done: Promise<void> } | null>;
  #closed = false;

  private constructor(
    o: ProcessClusterOptions,
    dir: string,
    init: { configPath: string; keyPaths: string[]; config: ClusterConfig },
  ) {
    this.#o = o;
    this.dir = dir;
    this.configPath = init.configPath;
    this.config = init.config;
    this.#keyPaths = init.keyPaths;
    this.urls = init.config.validators.map((v) => `http://${formatHostPort(v.http)}`);
    this.#children = init.config.validators.map(() => null);
  }

  /** Creates the directory, chooses free ports and writes the cluster and key files. */
  static async create(o: ProcessClusterOptions): Promise<ProcessCluster> {
    const dir = await Deno.makeTempDir({ prefix: o.prefix ?? "hotstuff-kv-" });
    try {
      const n = o.replicas + (o.joining ?? 0);
      const p = await freePorts(2 * n);
      const ports = Array.from({ length: n }, (_, i) => ({
        consensus: p[2 * i]!,
        http: p[2 * i + 1]!,
      }));
      const init = await initCluster({
        replicas: o.replicas,
        joining: o.joining,
        dir,
        ports,
        host: HOST,
        plaintext: o.plaintext,
      });
      await Deno.mkdir(`${dir}/logs`);
      return new ProcessCluster(o, dir, init);
    } catch (e) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /**
   * A cluster already written by `deno task init` into `dir` (`cluster.json`, `replica-i.key`),
   * whose data and logs go there too. {@link ProcessCluster.close} removes `dir`.
   */
  static async fromDir(
    o: Omit<ProcessClusterOptions, "replicas">,
    dir: string,
  ): Promise<ProcessCluster> {
    const configPath = `${dir}/cluster.json`;
    const config = await readClusterConfig(configPath);
    const keyPaths = config.validators.map((v) => `${dir}/${v.name}.key`);
    await Deno.mkdir(`${dir}/logs`, { recursive: true });
    const options = { ...o, replicas: config.validators.length };
    return new ProcessCluster(options, dir, { configPath, keyPaths, config });
  }

  /** The data directory of replica `i`. */
  dataDir(i: number): string {
    return `${this.dir}/data/replica-${i}`;
  }

  /** The log file of replica `i`. */
  logPath(i: number): string {
    return `${this.dir}/logs/replica-${i}.log`;
  }

  /** True while replica `i`'s process runs. */
  running(i: number): boolean {
    return this.#children[i] !== null;
  }

  /**
   * Starts replica `i`'s process (its data directory is kept across restarts), with `extraArgs`
   * appended to its flags.
   */
  start(i: number, extraArgs: readonly string[] = []): void {
    if (this.#closed || this.#children[i] !== null) return;
    const args = [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--config",
      DENO_JSON,
      REPLICA_ENTRY,
      "--config",
      this.configPath,
      "--key",
      this.#keyPaths[i]!,
      "--data",
      this.dataDir(i),
      "--log-level",
      this.#o.logLevel ?? "info",
    ];
    if (this.#o.viewTimeoutMs !== undefined) {
      args.push("--view-timeout-ms", String(this.#o.viewTimeoutMs));
    }
    args.push(...extraArgs);
    const prefix = this.#o.command?.(i) ?? [];
    const process = new Deno.Command(prefix[0] ?? Deno.execPath(), {
      args: prefix.length === 0 ? args : [...prefix.slice(1), Deno.execPath(), ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      detached: true,
    }).spawn();
    const logged = copyToFile(process.stderr, this.logPath(i));
    const done = Promise.all([process.status, logged]).then(() => {
      if (this.#children[i]?.process === process) this.#children[i] = null;
    });
    this.#children[i] = { process, done };
  }

  /** Sends `signal` to replica `i` and waits for its exit. */
  async kill(i: number, signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#children[i];
    if (child === null || child === undefined) return;
    try {
      child.process.kill(signal);
    } catch {
      // Already gone.
    }
    await child.done;
  }

  /** Stops replica `i` cleanly (SIGTERM), or kills it after `timeoutMs`. */
  async stop(i: number, timeoutMs = 5_000): Promise<void> {
    const child = this.#children[i];
    if (child === null || child === undefined) return;
    const timer = setTimeout(() => {
      try {
        child.process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, timeoutMs);
    await this.kill(i, "SIGTERM");
    clearTimeout(timer);
  }

  /** Deletes replica `i`'s data directory (stop it first). */
  async wipe(i: number): Promise<void> {
    await Deno.remove(this.dataDir(i), { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }

  /**
   * Waits until replicas `which` (default: every running one) answer `/status`.
   *
   * @throws {Error} when one exits or `timeoutMs` passes (with the end of its log)
   */
  async waitReady(timeoutMs = 30_000, which?: readonly number[]): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const indexes = which ?? this.urls.map((_, i) => i).filter((i) => this.running(i));
    for (const i of indexes) {
      for (;;) {
        if (!this.running(i)) {
          throw new Error(`replica ${i} exited:\n${await this.logTail(i, 5)}`);
        }
        if ((await tryStatus(this.urls[i]!)) !== null) break;
        if (performance.now() > deadline) {
          throw new Error(`replica ${i} did not answer:\n${await this.logTail(i, 5)}`);
        }
        await sleep(100);
      }
    }
  }

  /** The last `lines` lines of replica `i`'s log. */
  async logTail(i: number, lines = 20): Promise<string> {
    const text = await Deno.readTextFile(this.logPath(i)).catch(() => "");
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /** Stops every replica (SIGTERM, then SIGKILL) and removes the directory. Idempotent. */
  async close(options: { keepDir?: boolean } = {}): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#children.map((_, i) => this.stop(i, 3_000)));
    if (options.keepDir !== true) {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
  }

  /** Kills every replica at once (SIGKILL), without waiting for anything else. */
  killAllNow(): void {
    for (const child of this.#children) {
      try {
        child?.process.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}

/** Appends a stream to a file as it comes (FsFile.writable holds data back until the end). */
async function copyToFile(stream: ReadableStream<Uint8Array>, path: string): Promise<void> {
  using file = await Deno.open(path, { create: true, append: true });
  try {
    for await (const chunk of stream) {
      for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
    }
  } catch {
    // The child is gone or the file cannot be written: nothing more to copy.
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP client helpers

/**
 * `fetch`, retried while the replica answers `429` or `503` (its admission control: too many
 * requests), after the `Retry-After` it gives (at most 2 s), until `deadlineMs` has passed.
 *
 * @example
 * ```ts
 * import { fetchPolitely } from "./cluster.ts";
 * async function firstNodes(url: string): Promise<unknown> {
 *   const r = await fetchPolitely(`${url}/committed?from=1&to=256`);
 *   return await r.json();
 * }
 * ```
 */
export async function fetchPolitely(
  url: string,
  init: RequestInit = {},
  deadlineMs = 30_000,
): Promise<Response> {
  const deadline = performance.now() + deadlineMs;
  for (;;) {
    const r = await fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(10_000) });
    if ((r.status !== 429 && r.status !== 503) || performance.now() > deadline) return r;
    await r.body?.cancel();
    const after = Number(r.headers.get("retry-after"));
    await sleep(Number.isFinite(after) && after > 0 ? Math.min(after * 1000, 2_000) : 200);
  }
}

/**
 * `GET /status`, or null when the replica does not answer.
 *
 * @example
 * ```ts
 * import { tryStatus } from "./cluster.ts";
 * await tryStatus("http://127.0.0.1:1"); // null
 * ```
 */
export async function tryStatus(url: string, timeoutMs = 2_000): Promise<ReplicaStatus | null> {
  try {
    const r = await fetch(`${url}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) {
      await r.body?.cancel();
      return null;
    }
    return await r.json() as ReplicaStatus;
  } catch {
    return null;
  }
}

/**
 * `PUT /kv/{key}`: resolves to where the write committed.
 *
 * @throws {Error} on a non-200 answer (with its body)
 * @example
 * ```ts
 * import { putKv } from "./cluster.ts";
 * async function put(url: string): Promise<number> {
 *   const { height } = await putKv(url, "k", new TextEncoder().encode("v"));
 *   return height;
 * }
 * ```
 */
export async function putKv(
  url: string,
  key: string,
  value: Uint8Array,
  timeoutMs = 30_000,
): Promise<{ id: string; height: number; node: string }> {
  const r = await fetch(`${url}/kv/${encodeURIComponent(key)}`, {
    method: "PUT",
    body: value as Uint8Array<ArrayBuffer>,
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (r.status !== 200) throw new Error(`PUT ${key}: ${r.status} ${await r.text()}`);
  return await r.json();
}

/**
 * `GET /kv/{key}`: the committed value, or null (404).
 *
 * @example
 * ```ts
 * import { getKv } from "./cluster.ts";
 * async function get(url: string): Promise<unknown> {
 *   return await getKv(url, "k");
 * }
 * ```
 */
export async function getKv(url: string, key: string): Promise<Uint8Array | null> {
  const r = await fetchPolitely(`${url}/kv/${encodeURIComponent(key)}`);
  if (r.status === 404) {
    await r.body?.cancel();
    return null;
  }
  if (r.status !== 200) throw new Error(`GET ${key}: ${r.status} ${await r.text()}`);
  return new Uint8Array(await r.arrayBuffer());
}

/**
 * `POST /commands?wait=commit` with a CBOR batch of key-value `set` commands: resolves to the
 * number of commands committed.
 *
 * @throws {Error} on a non-200 answer
 * @example
 * ```ts
 * import { setBatch } from "./cluster.ts";
 * async function setTwo(url: string, value: Uint8Array): Promise<void> {
 *   await setBatch(url, [["k1", value], ["k2", value]]);
 * }
 * ```
 */
export async function setBatch(
  url: string,
  entries: ReadonlyArray<readonly [string, Uint8Array]>,
  timeoutMs = 35_000,
): Promise<Array<{ id: string; height: number; node: string }>> {
  const enc = new TextEncoder();
  const commands = entries.map(([k, v]) =>
    encodeKvCommand({ op: "set", key: enc.encode(k), value: v }, randomNonce())
  );
  const r = await fetch(`${url}/commands?wait=commit`, {
    method: "POST",
    headers: { "content-type": "application/cbor" },
    body: encodeValue(commands) as Uint8Array<ArrayBuffer>,
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (r.status !== 200) throw new Error(`POST /commands: ${r.status} ${await r.text()}`);
  return await r.json();
}

/**
 * Committed Node hashes of heights `from..to` (hex), fewer if the replica has fewer.
 *
 * @example
 * ```ts
 * import { committedHashes } from "./cluster.ts";
 * async function count(url: string): Promise<number> {
 *   const hashes = await committedHashes(url, 1, 1000);
 *   return hashes.length;
 * }
 * ```
 */
export async function committedHashes(url: string, from: number, to: number): Promise<string[]> {
  const out: string[] = [];
  for (let h = from; h <= to;) {
    const end = Math.min(to, h + 255);
    const r = await fetchPolitely(`${url}/committed?from=${h}&to=${end}`);
    if (r.status !== 200) throw new Error(`GET /committed: ${r.status} ${await r.text()}`);
    const nodes = await r.json() as Array<{ node: { hash: string; height: number } }>;
    if (nodes.length === 0) break;
    for (const n of nodes) out.push(n.node.hash);
    h += nodes.length;
  }
  return out;
}

/**
 * Whether every replica has the same committed Node at the highest height all of them have
 * committed: one request per replica. A Node's hash covers its parent's hash, so equal hashes at
 * that height mean equal committed chains below it too (each replica checked the links when it
 * committed). {@link compareChains} compares every height instead.
 *
 * @example
 * ```ts
 * import { compareHeads } from "./cluster.ts";
 * async function check(urls: string[]): Promise<boolean> {
 *   return (await compareHeads(urls)).agree;
 * }
 * ```
 */
export async function compareHeads(
  urls: readonly string[],
): Promise<{ agree: boolean; commonHeight: number; hashes: (string | null)[] }> {
  const statuses = await Promise.all(urls.map((u) => tryStatus(u)));
  if (statuses.some((s) => s === null)) return { agree: false, commonHeight: 0, hashes: [] };
  const common = Math.min(...statuses.map((s) => s!.committed.height));
  if (common === 0) return { agree: true, commonHeight: 0, hashes: [] };
  const hashes = await Promise.all(urls.map((u) => committedHashAt(u, common)));
  const agree = hashes.every((h) => h !== null && h === hashes[0]);
  return { agree, commonHeight: common, hashes };
}

/**
 * The hash of the Node a replica committed at `height`, or null if it does not serve one within
 * `timeoutMs`. `GET /status` reports a commit as soon as the replica decides it, a moment before
 * the Node is durable and served by `GET /committed`: hence the wait.
 */
async function committedHashAt(
  url: string,
  height: number,
  timeoutMs = 5_000,
): Promise<string | null> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const r = await fetchPolitely(`${url}/committed?from=${height}&to=${height}`);
    if (r.status === 200) {
      const nodes = await r.json() as Array<{ node: { hash: string } }>;
      if (nodes[0] !== undefined) return nodes[0].node.hash;
    } else {
      await r.body?.cancel();
    }
    if (performance.now() > deadline) return null;
    await sleep(50);
  }
}

/**
 * Compares the committed chains of replicas at their common heights.
 *
 * @example
 * ```ts
 * import { compareChains } from "./cluster.ts";
 * async function check(urls: string[]): Promise<boolean> {
 *   const { agree, commonHeight } = await compareChains(urls);
 *   return agree && commonHeight > 0;
 * }
 * ```
 */
export async function compareChains(
  urls: readonly string[],
): Promise<{ agree: boolean; commonHeight: number; firstDifference: number | null }> {
  const statuses = await Promise.all(urls.map((u) => tryStatus(u)));
  if (statuses.some((s) => s === null)) {
    return { agree: false, commonHeight: 0, firstDifference: null };
  }
  const common = Math.min(...statuses.map((s) => s!.committed.height));
  const chains = await Promise.all(urls.map((u) => committedHashes(u, 1, common)));
  const height = Math.min(...chains.map((c) => c.length));
  for (let i = 0; i < height; i++) {
    if (chains.some((c) => c[i] !== chains[0]![i])) {
      return { agree: false, commonHeight: height, firstDifference: i + 1 };
    }
  }
  return { agree: height === common, commonHeight: height, firstDifference: null };
}

function randomNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(16));
}

/**
 * Resolves after `ms` milliseconds.
 *
 * @example
 * ```ts
 * import { sleep } from "./cluster.ts";
 * await sleep(1);
 * ```
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
