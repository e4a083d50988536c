/**
 * One load run: client processes (bench/client.ts) against a running {@link BenchCluster}, with
 * a shared start instant, a warm-up and a steady-state window; their reports merged into
 * throughput and latency quantiles.
 *
 * @module
 */
import type { ClientReport } from "./client.ts";
import { quantile } from "./figures.ts";
import { type BenchCluster, cpuSeconds, machineCpuSeconds } from "./replicas.ts";

const CLIENT_ENTRY = new URL("./client.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;
/** Time the client processes get to load before the shared start, ms. */
const CLIENT_START_DELAY_MS = 1_000;

/** Options of {@link runLoad}. */
export interface LoadOptions {
  /** Client processes. */
  readonly clients: number;
  /** Command size, bytes. */
  readonly size: number;
  /** Commands per request. */
  readonly batch: number;
  /** Commands outstanding over all clients (a multiple of `batch * clients` is exact). */
  readonly outstanding: number;
  /** Warm-up, ms. */
  readonly warmupMs: number;
  /** Steady-state window, ms. */
  readonly windowMs: number;
  /** First client number (distinct per run on one cluster; commands are unique anyway). */
  readonly firstClient?: number;
  /** Replicas the clients write through (base URLs). Default: every replica, in turn. */
  readonly urls?: readonly string[];
  /** Called once per second from the start to the end of the window (e.g. to sample RSS). */
  readonly onSecond?: (secondsSinceStart: number) => Promise<void> | void;
}

/** The merged outcome of a load run. */
export interface LoadResult {
  /** Client processes. */
  readonly clients: number;
  /** Command size, bytes. */
  readonly size: number;
  /** Commands per request. */
  readonly batch: number;
  /** Commands outstanding, as run (slots times batch, over all clients). */
  readonly outstanding: number;
  /** Window, s. */
  readonly windowSeconds: number;
  /** Commands acknowledged in the window, over all clients. */
  readonly acked: number;
  /** `acked / windowSeconds`. */
  readonly commandsPerSecond: number;
  /** Committed Nodes per second in the window (replica 0's committed height). */
  readonly nodesPerSecond: number | null;
  /** Views per second in the window (replica 0). */
  readonly viewsPerSecond: number | null;
  /** End-to-end latency quantiles of commands acknowledged in the window, ms. */
  readonly latencyMs: {
    readonly p50: number | null;
    readonly p90: number | null;
    readonly p99: number | null;
    readonly max: number | null;
  };
  /** Requests answered in the window. */
  readonly requests: number;
  /** Refusals and failures over all clients, by reason. */
  readonly errors: Record<string, number>;
  /** The last error text of any client. */
  readonly lastError: string | null;
  /** Latest client start after the shared instant, ms (a late client shortens its warm-up). */
  readonly lateMsMax: number;
  /** CPU used in the window, in % of one core: each replica, each client, the machine's busy %. */
  readonly cpu: {
    readonly replicas: Array<number | null>;
    readonly clients: Array<number | null>;
    readonly machineBusy: number | null;
  };
}

/**
 * Runs `clients` client processes against `cluster` and merges their reports.
 *
 * @throws {Error} when a client process fails
 * @example
 * ```ts
 * // const r = await runLoad(cluster, { clients: 2, size: 32, batch: 100, outstanding: 1000,
 * //   warmupMs: 3000, windowMs: 10000 });
 * // console.log(r.commandsPerSecond, r.latencyMs.p50);
 * ```
 */
export async function runLoad(cluster: BenchCluster, o: LoadOptions): Promise<LoadResult> {
  const perClient = Math.max(1, Math.round(o.outstanding / o.clients));
  const startAt = Date.now() + CLIENT_START_DELAY_MS;
  const children = Array.from({ length: o.clients }, (_, c) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--config",
        DENO_JSON,
        CLIENT_ENTRY,
        "--urls",
        (o.urls ?? cluster.urls).join(","),
        "--client",
        String((o.firstClient ?? 0) + c),
        "--size",
        String(o.size),
        "--batch",
        String(o.batch),
        "--outstanding",
        String(perClient),
        "--start-at",
        String(startAt),
        "--warmup-ms",
        String(o.warmupMs),
        "--window-ms",
        String(o.windowMs),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn());
  const outputs = Promise.all(children.map((c) => c.output()));
  const pids = { replicas: cluster.pids, clients: children.map((c) => c.pid) };
  const heights = await observe(cluster, startAt, o, pids);
  const reports = (await outputs).map((out, c) => {
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success || text === "") {
      const err = new TextDecoder().decode(out.stderr).trim().slice(-1000);
      throw new Error(`client ${c} failed (exit ${out.code}): ${err}`);
    }
    return JSON.parse(text.split("\n").at(-1)!) as ClientReport;
  });
  return merge(o, reports, heights);
}

interface WindowProgress {
  start: { height: number; view: number } | null;
  end: { height: number; view: number } | null;
  cpu: LoadResult["cpu"];
}

/** CPU seconds of the given processes and of the machine, at one instant. */
async function cpuSnapshot(
  pids: { replicas: ReadonlyArray<number | null>; clients: readonly number[] },
): Promise<
  {
    replicas: Array<number | null>;
    clients: Array<number | null>;
    machine: { busy: number; total: number } | null;
  }
> {
  const of = (pid: number | null) => pid === null ? Promise.resolve(null) : cpuSeconds(pid);
  return {
    replicas: await Promise.all(pids.replicas.map(of)),
    clients: await Promise.all(pids.clients.map(of)),
    machine: await machineCpuSeconds(),
  };
}

/** Samples replica 0 at the window's edges and calls `onSecond` every second meanwhile. */
async function observe(
  cluster: BenchCluster,
  startAt: number,
  o: LoadOptions,
  pids: { replicas: ReadonlyArray<number | null>; clients: readonly number[] },
): Promise<WindowProgress> {
  const progress: WindowProgress = {
    start: null,
    end: null,
    cpu: { replicas: [], clients: [], machineBusy: null },
  };
  const at = (ms: number): Promise<void> =>
    new Promise((r) => setTimeout(r, Math.max(0, startAt + ms - Date.now())));
  const sample = async (): Promise<{ height: number; view: number } | null> => {
    const s = (await cluster.statuses(1_000))[0];
    return s === null || s === undefined ? null : { height: s.committed.height, view: s.view };
  };
  const total = o.warmupMs + o.windowMs;
  const ticks = (async () => {
    if (o.onSecond === undefined) return;
    for (let s = 0; s * 1000 <= total; s++) {
      await at(s * 1000);
      await o.onSecond(s);
    }
  })();
  await at(o.warmupMs);
  const cpu0 = await cpuSnapshot(pids);
  const t0 = performance.now();
  progress.start = await sample();
  await at(total);
  const cpu1 = await cpuSnapshot(pids);
  const seconds = (performance.now() - t0) / 1000;
  progress.end = await sample();
  const share = (a: number | null | undefined, b: number | null | undefined) =>
    a === null || a === undefined || b === null || b === undefined
      ? null
      : (100 * (b - a)) / seconds;
  progress.cpu = {
    replicas: cpu1.replicas.map((b, i) => share(cpu0.replicas[i], b)),
    clients: cpu1.clients.map((b, i) => share(cpu0.clients[i], b)),
    machineBusy: cpu0.machine === null || cpu1.machine === null
      ? null
      : (100 * (cpu1.machine.busy - cpu0.machine.busy)) /
        (cpu1.machine.total - cpu0.machine.total),
  };
  await ticks;
  return progress;
}

function merge(o: LoadOptions, reports: ClientReport[], p: WindowProgress): LoadResult {
  const seconds = o.windowMs / 1000;
  const acked = reports.reduce((n, r) => n + r.acked, 0);
  // Every request of a run carries `batch` commands: request quantiles are command quantiles.
  const latencies = reports.flatMap((r) => r.latenciesMs);
  const errors: Record<string, number> = {};
  for (const r of reports) {
    for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  }
  const rate = (key: "height" | "view"): number | null =>
    p.start === null || p.end === null ? null : (p.end[key] - p.start[key]) / seconds;
  return {
    clients: reports.length,
    size: o.size,
    batch: o.batch,
    outstanding: reports.reduce((n, r) => n + r.slots * r.batch, 0),
    windowSeconds: seconds,
    acked,
    commandsPerSecond: acked / seconds,
    nodesPerSecond: rate("height"),
    viewsPerSecond: rate("view"),
    latencyMs: {
      p50: quantile(latencies, 0.5),
      p90: quantile(latencies, 0.9),
      p99: quantile(latencies, 0.99),
      max: quantile(latencies, 1),
    },
    requests: latencies.length,
    errors,
    lastError: reports.map((r) => r.lastError).findLast((e) => e !== null) ?? null,
    lateMsMax: Math.max(0, ...reports.map((r) => r.lateMs)),
    cpu: p.cpu,
  };
}
