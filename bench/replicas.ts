/**
 * Replica processes for sections (a), (b) and (f): a key-value cluster set up by
 * `examples/kv_store/cluster.ts` ({@link ProcessCluster.create}: temporary directory, free ports,
 * cluster and key files, durable Deno KV data directories), whose processes this module spawns
 * itself, with the same command line as {@link ProcessCluster.start}, because the bench needs
 * two things that class does not give: each replica's process id (to sample its RSS) and extra
 * `deno` flags for one replica (`--cpu-prof`).
 *
 * Only processes spawned here are ever signalled, by their own `Deno.ChildProcess`.
 *
 * @module
 */
import { ProcessCluster, sleep, tryStatus } from "../examples/kv_store/cluster.ts";
import type { ReplicaStatus } from "../examples/kv_store/cluster.ts";

export type { ReplicaStatus } from "../examples/kv_store/cluster.ts";

const REPLICA_ENTRY = new URL("../examples/kv_store/replica.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;

/** Options of {@link BenchCluster.create}. */
export interface BenchClusterOptions {
  /** Number of replicas. Default 4. */
  readonly replicas?: number;
  /** Replica log level. Default `"warn"` (logging is not what is measured). */
  readonly logLevel?: string;
  /** Run replica `index` under the V8 profiler, writing its profile into `dir` when it exits. */
  readonly profile?: { readonly index: number; readonly dir: string };
  /** Run replica `index` from another entry point with the same flags (bench/timed_replica.ts). */
  readonly entry?: { readonly index: number; readonly path: string };
  /** The entry point of every other replica. Default the key-value replica. */
  readonly program?: string;
  /** Plaintext consensus links. Default: encrypted, as `deno task init` writes. */
  readonly plaintext?: boolean;
}

/** A replica's log lines, counted by level and event. */
export interface LogCounts {
  /** Lines per level. */
  readonly levels: Record<string, number>;
  /** Lines per `event/reason` at level warn and above. */
  readonly events: Record<string, number>;
  /** The first few `error`/`fatal` lines, verbatim. */
  readonly samples: string[];
}

interface Child {
  readonly process: Deno.ChildProcess;
  readonly done: Promise<Deno.CommandStatus>;
}

/**
 * A cluster of key-value replica processes in a temporary directory.
 *
 * @example
 * ```ts
 * import { BenchCluster } from "./replicas.ts";
 * const c = await BenchCluster.create({ replicas: 4 });
 * try {
 *   c.startAll();
 *   await c.waitReady();
 *   console.log(c.pids);
 * } finally {
 *   await c.close();
 * }
 * ```
 */
export class BenchCluster {
  /** The cluster files and directories (`dir`, `urls`, `dataDir(i)`, `logPath(i)`). */
  readonly files: ProcessCluster;
  readonly #o: BenchClusterOptions;
  readonly #children: Array<Child | null>;
  readonly #onSignal = (): void => this.#killNowAndExit();
  #closed = false;

  private constructor(files: ProcessCluster, o: BenchClusterOptions) {
    this.files = files;
    this.#o = o;
    this.#children = files.urls.map(() => null);
    // The replicas share the bench's process group: a Ctrl-C reaches them too. This listener
    // keeps the bench alive long enough to remove the temporary directory.
    Deno.addSignalListener("SIGINT", this.#onSignal);
    Deno.addSignalListener("SIGTERM", this.#onSignal);
  }

  /** Writes the cluster (no process started yet). */
  static async create(o: BenchClusterOptions = {}): Promise<BenchCluster> {
    const files = await ProcessCluster.create({
      replicas: o.replicas ?? 4,
      prefix: "hotstuff-bench-",
      plaintext: o.plaintext,
    });
    return new BenchCluster(files, o);
  }

  /** Base URL of each replica's HTTP API. */
  get urls(): readonly string[] {
    return this.files.urls;
  }

  /** Process id of each replica (null when not running). */
  get pids(): Array<number | null> {
    return this.#children.map((c) => c?.process.pid ?? null);
  }

  /** Starts replica `i`. */
  start(i: number): void {
    if (this.#closed || this.#children[i] !== null) return;
    const v = this.files.config.validators[i]!;
    const profile = this.#o.profile?.index === i
      ? ["--cpu-prof", `--cpu-prof-dir=${this.#o.profile.dir}`]
      : [];
    // The same command line as ProcessCluster.start (examples/kv_store/cluster.ts).
    const args = [
      "run",
      ...profile,
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--config",
      DENO_JSON,
      this.#o.entry?.index === i ? this.#o.entry.path : this.#o.program ?? REPLICA_ENTRY,
      "--config",
      this.files.configPath,
      "--key",
      `${this.files.dir}/${v.name}.key`,
      "--data",
      this.files.dataDir(i),
      "--log-level",
      this.#o.logLevel ?? "warn",
    ];
    const process = new Deno.Command(Deno.execPath(), {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const logged = appendToFile(process.stderr, this.files.logPath(i));
    const done = Promise.all([process.status, logged]).then(([status]) => {
      if (this.#children[i]?.process === process) this.#children[i] = null;
      return status;
    });
    this.#children[i] = { process, done };
  }

  /** Starts every replica. */
  startAll(): void {
    for (let i = 0; i < this.urls.length; i++) this.start(i);
  }

  /**
   * Waits until every replica answers `GET /status`.
   *
   * @throws {Error} when a replica exits or `timeoutMs` passes (with the end of its log)
   */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (const [i, url] of this.urls.entries()) {
      for (;;) {
        if (this.#children[i] === null) {
          throw new Error(`replica ${i} exited:\n${await this.files.logTail(i, 5)}`);
        }
        if ((await tryStatus(url)) !== null) break;
        if (performance.now() > deadline) {
          throw new Error(`replica ${i} did not answer:\n${await this.files.logTail(i, 5)}`);
        }
        await sleep(100);
      }
    }
  }

  /** `GET /status` of every replica (null for one that does not answer). */
  statuses(timeoutMs = 2_000): Promise<Array<ReplicaStatus | null>> {
    return Promise.all(this.urls.map((u) => tryStatus(u, timeoutMs)));
  }

  /**
   * Waits until no replica holds commands in its pool (what earlier clients left in flight is
   * committed), at most `timeoutMs`. Returns the commands still pooled (0 when drained).
   */
  async drain(timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const s = await this.statuses();
      const pooled = s.reduce((n, x) => n + (x?.mempool.commands ?? 0), 0);
      if (pooled === 0 || performance.now() > deadline) return pooled;
      await sleep(200);
    }
  }

  /** Stops replica `i` (SIGTERM, then SIGKILL after `timeoutMs`); resolves with its exit code. */
  async stop(i: number, timeoutMs = 5_000): Promise<number | null> {
    const child = this.#children[i];
    if (child === null || child === undefined) return null;
    signal(child.process, "SIGTERM");
    const timer = setTimeout(() => signal(child.process, "SIGKILL"), timeoutMs);
    const status = await child.done;
    clearTimeout(timer);
    return status.code;
  }

  /** Counts replica `i`'s log lines by level and event. */
  async logCounts(i: number): Promise<LogCounts> {
    const text = await Deno.readTextFile(this.files.logPath(i)).catch(() => "");
    const levels: Record<string, number> = {};
    const events: Record<string, number> = {};
    const samples: string[] = [];
    for (const line of text.split("\n")) {
      if (line === "") continue;
      let entry: { level?: unknown; event?: unknown; reason?: unknown };
      try {
        entry = JSON.parse(line);
      } catch {
        entry = { level: "text", event: line.slice(0, 80) };
      }
      const level = String(entry.level ?? "none");
      levels[level] = (levels[level] ?? 0) + 1;
      if (level === "debug" || level === "info" || entry.event === "bench:timing") continue;
      const key = `${String(entry.event)}/${String(entry.reason ?? "")}`;
      events[key] = (events[key] ?? 0) + 1;
      if ((level === "error" || level === "fatal" || level === "text") && samples.length < 5) {
        samples.push(line.slice(0, 400));
      }
    }
    return { levels, events, samples };
  }

  /** Stops every replica and removes the directory. Idempotent. */
  async close(): Promise<Array<number | null>> {
    if (this.#closed) return [];
    this.#closed = true;
    const profiled = this.#o.profile?.index;
    // A profiled replica writes its profile as it exits: give it time.
    const codes = await Promise.all(
      this.#children.map((_, i) => this.stop(i, i === profiled ? 30_000 : 5_000)),
    );
    Deno.removeSignalListener("SIGINT", this.#onSignal);
    Deno.removeSignalListener("SIGTERM", this.#onSignal);
    await this.files.close();
    return codes;
  }

  #killNowAndExit(): void {
    for (const child of this.#children) if (child !== null) signal(child.process, "SIGKILL");
    try {
      Deno.removeSync(this.files.dir, { recursive: true });
    } catch {
      // Already gone.
    }
    Deno.exit(130);
  }
}

function signal(process: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    process.kill(sig);
  } catch {
    // Already gone.
  }
}

/** Appends a stream to a file as it comes. */
async function appendToFile(stream: ReadableStream<Uint8Array>, path: string): Promise<void> {
  using file = await Deno.open(path, { create: true, append: true });
  try {
    for await (const chunk of stream) {
      for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
    }
  } catch {
    // The child is gone or the file cannot be written: nothing more to copy.
  }
}

/**
 * CPU time of process `pid` so far (user and system, all its threads), seconds; null when gone.
 *
 * @example
 * ```ts
 * import { cpuSeconds } from "./replicas.ts";
 * await cpuSeconds(Deno.pid); // e.g. 0.42
 * ```
 */
export async function cpuSeconds(pid: number): Promise<number | null> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** The machine's busy and total CPU seconds so far, all cores (`/proc/stat`). */
export async function machineCpuSeconds(): Promise<{ busy: number; total: number } | null> {
  try {
    const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0]!;
    const t = line.split(/\s+/).slice(1, 9).map(Number);
    const total = t.reduce((a, b) => a + b, 0);
    const idle = t[3]! + t[4]!;
    return { busy: (total - idle) / CLOCK_TICKS_PER_SECOND, total: total / CLOCK_TICKS_PER_SECOND };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Linux's `USER_HZ`, the unit of `/proc` CPU times (100 on every common build). */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * Resident set size of process `pid` (`VmRSS` of `/proc/PID/status`), bytes; null when gone.
 * Deno asks for `--allow-all` to read `/proc`.
 *
 * @example
 * ```ts
 * import { rssBytes } from "./replicas.ts";
 * await rssBytes(Deno.pid); // e.g. 52428800
 * ```
 */
export async function rssBytes(pid: number): Promise<number | null> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/status`);
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(text)?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}
