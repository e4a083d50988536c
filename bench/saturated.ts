/**
 * Sections (a) Saturated throughput and (b) Light-load latency: 4 key-value replica processes
 * (examples/kv_store/replica.ts, durable Deno KV, TCP between replicas, all on loopback) and
 * closed-loop client processes (bench/client.ts) that submit CBOR batches through
 * `POST /commands?wait=commit`.
 *
 * (a) runs each (command size, outstanding commands) case in turn on one cluster: clients keep
 * that many commands outstanding, spread over the replicas; after a warm-up, the commands
 * acknowledged in the window give commands/s, and their submission-to-acknowledgement times the
 * latency quantiles. Between cases the bench waits until every pool is empty, so a case does
 * not inherit the previous one's backlog. (b) is one client with one command outstanding.
 *
 * Needs network access and `--allow-all` (RSS sampling reads `/proc`), so the harness runs it
 * in a child process (bench/live_child.ts).
 *
 * @module
 */
import { summariseProfile } from "./cpu_profile.ts";
import type { Figure, SectionResult } from "./figures.ts";
import { withTarget } from "./figures.ts";
import type { LoadResult } from "./load.ts";
import { runLoad } from "./load.ts";
import { BenchCluster, type ReplicaStatus } from "./replicas.ts";
import { type TimingTotal, timingTotals } from "./timed_replica.ts";

const TIMED_ENTRY = new URL("./timed_replica.ts", import.meta.url).pathname;
const ORDER_ENTRY = new URL("./order_replica.ts", import.meta.url).pathname;

/** The Engine counters of `GET /status`. */
export interface EngineCounters {
  /** Peer messages dropped on a full queue. */
  readonly droppedMessages: number;
  /** Whether the Engine failed. */
  readonly failed: boolean;
}

/**
 * The (a) targets with 32-byte commands: the ordering-only replicas' commands/s, p50 latency
 * and CPU per command per replica; the key-value replicas' commands/s.
 */
export const SATURATED_TARGET = {
  orderingPerSecond: 50_000,
  orderingP50Ms: 100,
  cpuUsPerCommand: 8,
  kvPerSecond: 30_000,
} as const;
/** The (b) targets, ms. */
export const LIGHT_TARGET = { p50Ms: 8, p99Ms: 15 } as const;

/**
 * Which replica a case runs: the key-value store (`examples/kv_store/replica.ts`) or the
 * ordering-only replica (`bench/order_replica.ts`: the same runtime, a machine that executes
 * nothing).
 */
export type BenchApp = "kv" | "order";

/** One load case of section (a). */
export interface LoadCase {
  /** Command size, bytes. */
  readonly size: number;
  /** Commands outstanding over all clients. */
  readonly outstanding: number;
  /** The replicas' application. Default `"kv"`. */
  readonly app?: BenchApp;
}

/** How section (a) or (b) runs. */
export interface LiveOptions {
  /** The cases, in order. */
  readonly cases: readonly LoadCase[];
  /** Client processes. */
  readonly clients: number;
  /** Commands per request. */
  readonly batch: number;
  /** Warm-up, ms. */
  readonly warmupMs: number;
  /** Window, ms. */
  readonly windowMs: number;
  /** Run replica 0 under the V8 profiler, profile written into this directory. */
  readonly cpuProfDir?: string;
  /** Run replica 1 as bench/timed_replica.ts and report where it waits. */
  readonly timed?: boolean;
  /** Plaintext consensus links (default: encrypted, as `deno task init` writes). */
  readonly plaintext?: boolean;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/**
 * Section (a) cases of a full run: the key-value store's 32-byte curve and other sizes, then the
 * ordering-only replicas' 32-byte curve.
 */
export const SATURATED_FULL_CASES: readonly LoadCase[] = [
  { size: 32, outstanding: 200 },
  { size: 32, outstanding: 1000 },
  { size: 32, outstanding: 4000 },
  { size: 128, outstanding: 1000 },
  { size: 1024, outstanding: 1000 },
  { size: 32, outstanding: 1000, app: "order" },
  { size: 32, outstanding: 4000, app: "order" },
  { size: 32, outstanding: 8000, app: "order" },
];

/** Section (a) cases of a quick run: one saturated case of each application. */
export const SATURATED_QUICK_CASES: readonly LoadCase[] = [
  { size: 32, outstanding: 4000 },
  { size: 32, outstanding: 4000, app: "order" },
];

/** Longest wait for the pools to empty between cases, ms. */
const DRAIN_TIMEOUT_MS = 20_000;

/**
 * The options of section (a) for a mode.
 *
 * @example
 * ```ts
 * import { saturatedOptions } from "./saturated.ts";
 * saturatedOptions({ quick: true, log: console.error }).windowMs; // 5000
 * ```
 */
export function saturatedOptions(
  o: { quick: boolean; log: (line: string) => void; cpuProfDir?: string },
): LiveOptions {
  return {
    cases: o.quick ? SATURATED_QUICK_CASES : SATURATED_FULL_CASES,
    clients: 2,
    batch: 100,
    warmupMs: 3_000,
    windowMs: o.quick ? 5_000 : 10_000,
    cpuProfDir: o.cpuProfDir,
    log: o.log,
  };
}

/**
 * The options of section (b) for a mode: one client, one command outstanding.
 *
 * @example
 * ```ts
 * import { lightLoadOptions } from "./saturated.ts";
 * lightLoadOptions({ quick: false, log: console.error }).cases; // [{ size: 32, outstanding: 1 }]
 * ```
 */
export function lightLoadOptions(o: { quick: boolean; log: (line: string) => void }): LiveOptions {
  return {
    cases: [{ size: 32, outstanding: 1 }],
    clients: 1,
    batch: 1,
    warmupMs: o.quick ? 1_000 : 2_000,
    windowMs: o.quick ? 5_000 : 10_000,
    log: o.log,
  };
}

/** What a cluster run gives back: the load results and what the replicas said. */
export interface LiveRun {
  /** One result per case, in order. */
  readonly results: Array<LoadResult & { readonly app: BenchApp }>;
  /** Commands still pooled when a drain gave up, per case (0: drained). */
  readonly undrained: number[];
  /** Warnings and errors the replicas logged, per replica. */
  readonly logs: Array<Awaited<ReturnType<BenchCluster["logCounts"]>>>;
  /** Exit codes of the replicas when stopped (0: clean). */
  readonly exitCodes: Array<number | null>;
  /** Engine counters at the end, per replica. */
  readonly engine: Array<EngineCounters | null>;
  /** The machine's 1-minute load average at the start and at the end. */
  readonly loadAverage: readonly [number | null, number | null];
  /** Where the timed replica waited (empty unless `timed`). */
  readonly timing: TimingTotal[];
}

/**
 * The machine's 1-minute load average, or null where Deno cannot read it.
 *
 * @example
 * ```ts
 * import { loadAverage } from "./saturated.ts";
 * loadAverage(); // e.g. 1.7
 * ```
 */
export function loadAverage(): number | null {
  try {
    return Deno.loadavg()[0] ?? null;
  } catch {
    return null;
  }
}

/**
 * A note on how busy the machine was: other processes share its cores with the replicas.
 *
 * @example
 * ```ts
 * import { loadNote } from "./saturated.ts";
 * loadNote([1.2, 3.4]);
 * ```
 */
export function loadNote(load: readonly [number | null, number | null]): string {
  const f = (x: number | null): string => (x === null ? "?" : x.toFixed(2));
  return `machine load average (1 min): ${f(load[0])} at the start, ${f(load[1])} at the end, ` +
    `on ${navigator.hardwareConcurrency} cores`;
}

/**
 * Runs every case in turn, on one 4-replica cluster per run of cases of one application.
 *
 * @example
 * ```ts
 * import { runCases, saturatedOptions } from "./saturated.ts";
 * // const run = await runCases(saturatedOptions({ quick: true, log: console.error }));
 * ```
 */
export async function runCases(o: LiveOptions): Promise<LiveRun> {
  const loadBefore = loadAverage();
  const runs: LiveRun[] = [];
  // One cluster per run of consecutive cases of one application.
  for (let i = 0; i < o.cases.length;) {
    const app = o.cases[i]!.app ?? "kv";
    let j = i;
    while (j < o.cases.length && (o.cases[j]!.app ?? "kv") === app) j++;
    runs.push(await runCluster(o, app, o.cases.slice(i, j), i));
    i = j;
  }
  return {
    results: runs.flatMap((r) => r.results),
    undrained: runs.flatMap((r) => r.undrained),
    logs: runs.flatMap((r) => r.logs),
    exitCodes: runs.flatMap((r) => r.exitCodes),
    engine: runs.flatMap((r) => r.engine),
    loadAverage: [loadBefore, loadAverage()],
    timing: runs.flatMap((r) => r.timing),
  };
}

/** Starts a 4-replica cluster of `app`, runs `cases` in turn, stops it. */
async function runCluster(
  o: LiveOptions,
  app: BenchApp,
  cases: readonly LoadCase[],
  first: number,
): Promise<LiveRun> {
  // The profiler and the timed replica go to the first cluster only.
  const profile = o.cpuProfDir === undefined || first > 0
    ? undefined
    : { index: 0, dir: o.cpuProfDir };
  const entry = o.timed === true && first === 0 ? { index: 1, path: TIMED_ENTRY } : undefined;
  const program = app === "order" ? ORDER_ENTRY : undefined;
  const cluster = await BenchCluster.create({
    replicas: 4,
    profile,
    entry,
    program,
    plaintext: o.plaintext,
  });
  const results: Array<LoadResult & { app: BenchApp }> = [];
  const undrained: number[] = [];
  let engine: LiveRun["engine"] = [];
  let exitCodes: Array<number | null> = [];
  let logs: LiveRun["logs"] = [];
  let timing: TimingTotal[] = [];
  try {
    cluster.startAll();
    await cluster.waitReady();
    o.log(`${app} replicas up (pids ${cluster.pids.join(", ")}), data in ${cluster.files.dir}`);
    for (const [i, c] of cases.entries()) {
      const r = await runLoad(cluster, {
        clients: o.clients,
        size: c.size,
        batch: o.batch,
        outstanding: c.outstanding,
        warmupMs: o.warmupMs,
        windowMs: o.windowMs,
        firstClient: (first + i) * o.clients,
      });
      results.push({ ...r, app });
      o.log(`${describe({ ...r, app })}`);
      undrained.push(i + 1 < cases.length ? await cluster.drain(DRAIN_TIMEOUT_MS) : 0);
    }
    engine = (await cluster.statuses()).map((s) => engineOf(s));
  } finally {
    logs = await Promise.all(cluster.urls.map((_, i) => cluster.logCounts(i)));
    if (entry !== undefined) {
      await cluster.stop(entry.index);
      timing = timingTotals(await Deno.readTextFile(cluster.files.logPath(entry.index)));
    }
    exitCodes = await cluster.close();
  }
  return { results, undrained, logs, exitCodes, engine, loadAverage: [null, null], timing };
}

/** The `engine` field of `GET /status` (not in {@link ReplicaStatus}). */
export function engineOf(status: ReplicaStatus | null): EngineCounters | null {
  const e = (status as { engine?: EngineCounters } | null)?.engine;
  return e ?? null;
}

/**
 * One line for a load result.
 *
 * @example
 * ```ts
 * // console.log(describe(result)); // "32 B x 1000 outstanding: 580 commands/s, p50 1633 ms..."
 * ```
 */
export function describe(r: LoadResult & { readonly app?: BenchApp }): string {
  const f = (x: number | null): string => (x === null ? "—" : x.toFixed(1));
  const errors = Object.entries(r.errors).map(([k, v]) => `${k}: ${v}`).join(", ");
  const pct = (xs: Array<number | null>): string =>
    xs.map((x) => x === null ? "—" : x.toFixed(0)).join(", ");
  const cpu = r.cpu === undefined ? "" : `; CPU in the window, % of a core: replicas ` +
    `${pct(r.cpu.replicas)}, clients ${pct(r.cpu.clients)}; machine busy ${
      f(r.cpu.machineBusy)
    } %` +
    `; ${f(cpuUsPerCommand(r))} µs of CPU per command per replica`;
  return `${r.app ?? "kv"} ${r.size} B x ${r.outstanding} outstanding: ` +
    `${Math.round(r.commandsPerSecond)} commands/s, ${f(r.nodesPerSecond)} Nodes/s, ` +
    `p50 ${f(r.latencyMs.p50)} ms, p99 ${f(r.latencyMs.p99)} ms (${r.requests} requests)` +
    `${errors ? `; errors: ${errors}` : ""}${cpu}`;
}

/**
 * CPU time per command per replica, µs: each replica process's CPU time in the window (from
 * /proc) divided by the commands acknowledged in it, averaged over the replicas. Null when a
 * replica's CPU time or the commands are missing.
 *
 * @example
 * ```ts
 * import { cpuUsPerCommand } from "./saturated.ts";
 * // 4 replicas at 50 % of a core for 10 s, 100,000 commands: 50 µs each.
 * // cpuUsPerCommand({ cpu: { replicas: [50, 50, 50, 50] }, windowSeconds: 10, acked: 100_000 })
 * ```
 */
export function cpuUsPerCommand(
  r: Pick<LoadResult, "acked" | "windowSeconds"> & {
    readonly cpu: { readonly replicas: ReadonlyArray<number | null> };
  },
): number | null {
  const shares = r.cpu.replicas;
  if (r.acked === 0 || shares.length === 0 || shares.some((x) => x === null)) return null;
  const mean = shares.reduce((a: number, b) => a + b!, 0) / shares.length;
  return (mean / 100) * r.windowSeconds * 1e6 / r.acked;
}

/**
 * Section (a): saturated throughput.
 *
 * @example
 * ```ts
 * import { saturatedOptions, saturatedSection } from "./saturated.ts";
 * // const result = await saturatedSection(saturatedOptions({ quick: true, log: console.error }));
 * ```
 */
export async function saturatedSection(o: LiveOptions): Promise<SectionResult> {
  const run = await runCases(o);
  const figures: Figure[] = [];
  for (const r of run.results) {
    const order = r.app === "order";
    const label = `${order ? "ordering-only" : "key-value"} ${r.size} B x ${r.outstanding}` +
      ` outstanding`;
    const is32 = r.size === 32;
    const rate: Figure = {
      section: "a",
      name: `${label}: throughput`,
      value: r.commandsPerSecond,
      unit: "commands/s",
    };
    const p50: Figure = {
      section: "a",
      name: `${label}: latency p50`,
      value: r.latencyMs.p50,
      unit: "ms",
    };
    const cpu: Figure = {
      section: "a",
      name: `${label}: CPU per command per replica`,
      value: cpuUsPerCommand(r),
      unit: "µs",
    };
    const t = SATURATED_TARGET;
    figures.push(
      !is32 ? rate : withTarget(rate, ">=", order ? t.orderingPerSecond : t.kvPerSecond),
      order && is32 ? withTarget(p50, "<=", t.orderingP50Ms) : p50,
      { section: "a", name: `${label}: latency p99`, value: r.latencyMs.p99, unit: "ms" },
      { section: "a", name: `${label}: committed Nodes`, value: r.nodesPerSecond, unit: "Nodes/s" },
      order && is32 ? withTarget(cpu, "<=", t.cpuUsPerCommand) : cpu,
    );
  }
  const best = (app: BenchApp) =>
    run.results.filter((r) => r.app === app && r.size === 32)
      .sort((a, b) => b.commandsPerSecond - a.commandsPerSecond)[0];
  const topOrder = best("order");
  const topKv = best("kv");
  const summary: Record<string, number | null> = {
    orderingThroughput: topOrder?.commandsPerSecond ?? null,
    kvThroughput: topKv?.commandsPerSecond ?? null,
    cpuUsPerCommandPerReplica: topOrder === undefined ? null : cpuUsPerCommand(topOrder),
  };
  const notes = [
    `4 replica processes (durable Deno KV) and ${o.clients} client processes on one machine, ` +
    `one cluster per application (key-value store; ordering-only); ` +
    `batches of ${o.batch} commands; warm-up ${o.warmupMs / 1000} s, window ` +
    `${o.windowMs / 1000} s per case.`,
    ...run.results.map(describe),
    loadNote(run.loadAverage),
    ...problems(run),
  ];
  const profile = o.cpuProfDir === undefined ? null : await profileSummary(o.cpuProfDir);
  if (profile !== null) notes.push(`replica 0 profile (${profile.file}):`, ...profile.lines);
  if (run.timing.length > 0) {
    notes.push("replica 1 wall time (all cases):", ...timingLines(run.timing));
  }
  notes.push(
    "summary: the best 32-byte case of each application; CPU per command of the best " +
      "ordering-only case",
  );
  return {
    section: "a",
    title: "Saturated throughput",
    figures,
    notes,
    summary,
    details: { options: { ...o, log: undefined }, ...run, profile },
  };
}

/**
 * Section (b): latency at light load (one command outstanding).
 *
 * @example
 * ```ts
 * import { lightLoadOptions, lightLoadSection } from "./saturated.ts";
 * // const result = await lightLoadSection(lightLoadOptions({ quick: true, log: console.error }));
 * ```
 */
export async function lightLoadSection(o: LiveOptions): Promise<SectionResult> {
  const run = await runCases(o);
  const r = run.results[0]!;
  const figure = (name: string, value: number | null, unit: string): Figure => ({
    section: "b",
    name,
    value,
    unit,
  });
  return {
    section: "b",
    title: "Light-load latency",
    summary: { lightP50Ms: r.latencyMs.p50, lightP99Ms: r.latencyMs.p99 },
    figures: [
      withTarget(
        figure("latency p50 (1 outstanding)", r.latencyMs.p50, "ms"),
        "<=",
        LIGHT_TARGET.p50Ms,
      ),
      withTarget(
        figure("latency p99 (1 outstanding)", r.latencyMs.p99, "ms"),
        "<=",
        LIGHT_TARGET.p99Ms,
      ),
      figure("latency p90", r.latencyMs.p90, "ms"),
      figure("throughput at 1 outstanding", r.commandsPerSecond, "commands/s"),
      figure("views (Nodes) per second", r.viewsPerSecond, "views/s"),
    ],
    notes: [
      `One client process, one 32-byte command per request, one request outstanding, to each ` +
      `replica in turn; warm-up ${o.warmupMs / 1000} s, window ${o.windowMs / 1000} s.`,
      describe(r),
      loadNote(run.loadAverage),
      ...problems(run),
      ...(run.timing.length > 0 ? ["replica 1 wall time:", ...timingLines(run.timing)] : []),
    ],
    details: { options: { ...o, log: undefined }, ...run },
  };
}

/** What went wrong in the replicas, for the notes. */
export function problems(run: LiveRun): string[] {
  const out: string[] = [];
  for (const [i, l] of run.logs.entries()) {
    const events = Object.entries(l.events).sort((a, b) => b[1] - a[1]).slice(0, 6);
    if (events.length > 0) {
      out.push(`replica ${i} logged: ${events.map(([k, v]) => `${k} x${v}`).join(", ")}`);
    }
    for (const s of l.samples) out.push(`replica ${i}: ${s}`);
  }
  for (const [i, code] of run.exitCodes.entries()) {
    if (code !== 0 && code !== null) out.push(`replica ${i} exited with code ${code}`);
  }
  for (const [i, e] of run.engine.entries()) {
    if (e === null) out.push(`replica ${i} did not answer /status at the end`);
    else if (e.droppedMessages > 0 || e.failed) {
      out.push(`replica ${i}: ${e.droppedMessages} messages dropped, failed: ${e.failed}`);
    }
  }
  for (const [i, n] of run.undrained.entries()) {
    if (n > 0) out.push(`after case ${i + 1}, ${n} commands were still pooled (drain timed out)`);
  }
  for (const r of run.results) {
    if (r.lateMsMax > 500) out.push(`a client started ${Math.round(r.lateMsMax)} ms late`);
  }
  return out;
}

/**
 * Lines for the notes: per operation of the timed replica, rate, mean and largest wall time.
 *
 * @example
 * ```ts
 * import { timingLines } from "./saturated.ts";
 * timingLines([]); // []
 * ```
 */
export function timingLines(totals: readonly TimingTotal[]): string[] {
  return totals.map((t) =>
    `  ${t.name.padEnd(22)} ${t.perSecond.toFixed(1).padStart(8)}/s  mean ` +
    `${t.meanMs.toFixed(2).padStart(7)} ms  max ${t.maxMs.toFixed(0).padStart(4)} ms  ` +
    `in flight: mean ${t.share.toFixed(2)}, max ${t.inFlightMax}` +
    (t.itemsPerSecond > 0 ? `  items ${t.itemsPerSecond.toFixed(0)}/s` : "")
  );
}

/** The top of the newest profile in `dir`. */
async function profileSummary(
  dir: string,
): Promise<{ file: string; lines: string[]; top: unknown[] } | null> {
  const files: Array<{ name: string; mtime: number }> = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".cpuprofile")) {
      files.push({ name: e.name, mtime: (await Deno.stat(`${dir}/${e.name}`)).mtime!.getTime() });
    }
  }
  const newest = files.sort((a, b) => b.mtime - a.mtime)[0];
  if (newest === undefined) return null;
  const file = `${dir}/${newest.name}`;
  const rows = summariseProfile(JSON.parse(await Deno.readTextFile(file)));
  const top = rows.slice(0, 15);
  const lines = top.map((r) => `  ${(100 * r.selfShare).toFixed(1)}% self  ${r.name}`);
  return { file, lines, top };
}
