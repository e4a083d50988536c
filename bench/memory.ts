/**
 * Section (f), Memory: the resident set size of each of 4 replica processes (`VmRSS` of
 * `/proc/PID/status`), sampled every second while closed-loop clients keep the cluster at full
 * load (the load of section (a): 32-byte commands, 1000 outstanding). `--long` runs 10 minutes,
 * a normal run 60 s, a quick run 15 s.
 *
 * Reported: RSS before the load, at its start, at its end, the maximum, and the slope of a
 * least-squares line through the second half of the samples (MB/min): the first half holds the
 * ramp-up (JIT, caches filling to their bounds), the second whether memory keeps growing. The same
 * for the V8 heap in use (from each replica's `/status`), and the slope of the heap's floor (the
 * least sample of each tenth of the run): a sawtooth swings by ~150 MB between collections, so
 * the floor is where a leak shows.
 *
 * @module
 */
import type { Figure, SectionResult } from "./figures.ts";
import type { LoadResult } from "./load.ts";
import { runLoad } from "./load.ts";
import { BenchCluster, rssBytes } from "./replicas.ts";
import { describe, engineOf, loadAverage, loadNote, problems } from "./saturated.ts";

/** Memory growth below this over the second half counts as flat, MB/min. */
export const FLAT_MB_PER_MIN = 1;

/** RSS samples of one replica. */
export interface RssSeries {
  /** Replica index. */
  readonly replica: number;
  /** Process id. */
  readonly pid: number;
  /** RSS once the replicas answer, before the load, bytes. */
  readonly idleBytes: number | null;
  /** `[seconds since the load started, RSS bytes]`, one per second. */
  readonly samples: Array<[number, number]>;
  /** `[seconds since the load started, V8 heap in use, bytes]` from the replica's `/status`. */
  readonly heap: Array<[number, number]>;
}

/** The summary of one series. */
export interface RssSummary {
  /** Replica index. */
  readonly replica: number;
  /** Before the load, MB. */
  readonly idleMb: number | null;
  /** First sample under load, MB. */
  readonly startMb: number | null;
  /** Last sample, MB. */
  readonly endMb: number | null;
  /** Largest sample, MB. */
  readonly maxMb: number | null;
  /** Least-squares slope over the second half, MB/min. */
  readonly slopeMbPerMin: number | null;
  /** Largest minus smallest sample of the second half, MB: the noise the slope sits in. */
  readonly swingMb: number | null;
  /** V8 heap in use at the last sample, MB. */
  readonly heapEndMb: number | null;
  /** Least-squares slope of the heap in use over the second half, MB/min. */
  readonly heapSlopeMbPerMin: number | null;
  /** Largest minus smallest heap sample of the second half, MB. */
  readonly heapSwingMb: number | null;
  /**
   * The heap's floor: the least sample of each tenth of the run (what the collector leaves), MB,
   * from the second tenth on (the first holds the ramp).
   */
  readonly heapFloorsMb: number[];
  /** Least-squares slope of those floors, MB/min: what a leak would raise. */
  readonly heapFloorSlopeMbPerMin: number | null;
}

const MB = 1024 * 1024;

/**
 * The least-squares slope of `points` (`[x, y]`), or null with fewer than 2 distinct x.
 *
 * @example
 * ```ts
 * import { slope } from "./memory.ts";
 * slope([[0, 1], [1, 3], [2, 5]]); // 2
 * ```
 */
export function slope(points: ReadonlyArray<readonly [number, number]>): number | null {
  const n = points.length;
  if (n < 2) return null;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
  }
  return sxx === 0 ? null : sxy / sxx;
}

/**
 * Start, end, max and second-half slope of a series.
 *
 * @example
 * ```ts
 * import { summariseRss } from "./memory.ts";
 * summariseRss({ replica: 0, pid: 1, idleBytes: null, samples: [[0, 1e6], [60, 2e6]] });
 * ```
 */
export function summariseRss(s: RssSeries): RssSummary {
  const ys = s.samples.map(([, y]) => y / MB);
  const rss = secondHalf(s.samples);
  const heap = secondHalf(s.heap ?? []);
  return {
    replica: s.replica,
    idleMb: s.idleBytes === null ? null : s.idleBytes / MB,
    startMb: ys[0] ?? null,
    endMb: ys.at(-1) ?? null,
    maxMb: ys.length === 0 ? null : Math.max(...ys),
    slopeMbPerMin: rss.slope,
    swingMb: rss.swing,
    heapEndMb: s.heap?.length ? s.heap.at(-1)![1] / MB : null,
    heapSlopeMbPerMin: heap.slope,
    heapSwingMb: heap.swing,
    ...floors(s.heap ?? []),
  };
}

/** The least sample of each tenth of a series after the first, and their slope (MB/min). */
function floors(
  samples: ReadonlyArray<readonly [number, number]>,
): { heapFloorsMb: number[]; heapFloorSlopeMbPerMin: number | null } {
  const last = samples.at(-1)?.[0] ?? 0;
  const points: Array<[number, number]> = [];
  for (let k = 1; k < 10; k++) {
    const inTenth = samples.filter(([t]) => t >= (k * last) / 10 && t < ((k + 1) * last) / 10);
    if (inTenth.length === 0) continue;
    const least = inTenth.reduce((a, b) => (b[1] < a[1] ? b : a));
    points.push([least[0] / 60, least[1] / MB]);
  }
  return { heapFloorsMb: points.map(([, y]) => y), heapFloorSlopeMbPerMin: slope(points) };
}

/** Slope (MB/min) and swing (MB) of the samples of the second half of a series. */
function secondHalf(
  samples: ReadonlyArray<readonly [number, number]>,
): { slope: number | null; swing: number | null } {
  const last = samples.at(-1)?.[0] ?? 0;
  const half = samples.filter(([t]) => t >= last / 2).map(([t, y]) => [t / 60, y / MB] as const);
  if (half.length === 0) return { slope: null, swing: null };
  const ys = half.map(([, y]) => y);
  return { slope: slope(half), swing: Math.max(...ys) - Math.min(...ys) };
}

/**
 * Section (f).
 *
 * @example
 * ```ts
 * import { memorySection } from "./memory.ts";
 * // await memorySection({ quick: true, long: false, log: console.error });
 * ```
 */
export async function memorySection(
  o: { quick: boolean; long: boolean; log: (line: string) => void },
): Promise<SectionResult> {
  const seconds = o.long ? 600 : o.quick ? 15 : 60;
  const loadBefore = loadAverage();
  const cluster = await BenchCluster.create({ replicas: 4 });
  let load: LoadResult | null = null;
  let series: RssSeries[] = [];
  let logs: Awaited<ReturnType<BenchCluster["logCounts"]>>[] = [];
  let exitCodes: Array<number | null> = [];
  let engine: ReturnType<typeof engineOf>[] = [];
  try {
    cluster.startAll();
    await cluster.waitReady();
    const pids = cluster.pids.map((p) => p!);
    o.log(`replicas up (pids ${pids.join(", ")}); sampling RSS for ${seconds} s under load`);
    series = await Promise.all(pids.map(async (pid, replica) => ({
      replica,
      pid,
      idleBytes: await rssBytes(pid),
      samples: [] as Array<[number, number]>,
      heap: [] as Array<[number, number]>,
    })));
    load = await runLoad(cluster, {
      clients: 2,
      size: 32,
      batch: 100,
      outstanding: 1000,
      warmupMs: 0,
      windowMs: seconds * 1000,
      onSecond: async (t) => {
        for (const s of series) {
          const rss = await rssBytes(s.pid);
          if (rss !== null) s.samples.push([t, rss]);
        }
        const statuses = await cluster.statuses(1_000);
        for (const [i, st] of statuses.entries()) {
          const used = st?.memory?.heapUsed;
          if (typeof used === "number") series[i]!.heap.push([t, used]);
        }
        if (t > 0 && t % 60 === 0) o.log(`${t} s: RSS ${rssLine(series)}`);
      },
    });
    o.log(describe(load));
    engine = (await cluster.statuses()).map(engineOf);
  } finally {
    logs = await Promise.all(cluster.urls.map((_, i) => cluster.logCounts(i)));
    exitCodes = await cluster.close();
  }
  const sums = series.map(summariseRss);
  const load2 = [loadBefore, loadAverage()] as const;
  return {
    section: "f",
    title: "Memory",
    figures: figures(sums, seconds, load),
    notes: [
      `RSS of each replica every second for ${seconds} s under the load of (a) (32 B, 1000 ` +
      `outstanding, 2 clients); slope: least squares over the second half.`,
      ...sums.map((s) =>
        `replica ${s.replica}: idle ${mb(s.idleMb)}, start ${mb(s.startMb)}, end ${mb(s.endMb)}, ` +
        `max ${mb(s.maxMb)} MB, slope ${mb(s.slopeMbPerMin)} MB/min, ` +
        `2nd-half swing ${mb(s.swingMb)} MB; V8 heap in use: end ${mb(s.heapEndMb)} MB, ` +
        `slope ${mb(s.heapSlopeMbPerMin)} MB/min, 2nd-half swing ${mb(s.heapSwingMb)} MB, ` +
        `floors ${s.heapFloorsMb.map((x) => x.toFixed(0)).join(" ")} MB ` +
        `(slope ${mb(s.heapFloorSlopeMbPerMin)} MB/min)`
      ),
      ...(load === null ? [] : [describe(load)]),
      loadNote(load2),
      ...problems({
        results: [],
        undrained: [],
        logs,
        exitCodes,
        engine,
        loadAverage: load2,
        timing: [],
      }),
    ],
    details: {
      seconds,
      series,
      summaries: sums,
      load,
      logs,
      exitCodes,
      engine,
      loadAverage: load2,
    },
  };
}

function figures(sums: RssSummary[], seconds: number, load: LoadResult | null): Figure[] {
  const mean = (xs: Array<number | null>): number | null => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
  };
  const max = (xs: Array<number | null>): number | null => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length === 0 ? null : Math.max(...v);
  };
  const f = (name: string, value: number | null, unit: string): Figure => ({
    section: "f",
    name,
    value,
    unit,
  });
  const worst = max(sums.map((s) => s.slopeMbPerMin));
  const heapWorst = max(sums.map((s) => s.heapSlopeMbPerMin));
  const floorWorst = max(sums.map((s) => s.heapFloorSlopeMbPerMin));
  return [
    f("RSS before load (mean of 4)", mean(sums.map((s) => s.idleMb)), "MB"),
    f("RSS at load start (mean of 4)", mean(sums.map((s) => s.startMb)), "MB"),
    f(`RSS after ${seconds} s (mean of 4)`, mean(sums.map((s) => s.endMb)), "MB"),
    f(`RSS max over ${seconds} s (any replica)`, max(sums.map((s) => s.maxMb)), "MB"),
    {
      ...f("RSS slope, 2nd half (steepest replica)", worst, "MB/min"),
      target: `flat (< ${FLAT_MB_PER_MIN})`,
      met: worst === null ? null : worst < FLAT_MB_PER_MIN,
    },
    f("RSS swing, 2nd half (widest replica)", max(sums.map((s) => s.swingMb)), "MB"),
    f(`V8 heap in use after ${seconds} s (mean of 4)`, mean(sums.map((s) => s.heapEndMb)), "MB"),
    {
      ...f("V8 heap slope, 2nd half (steepest replica)", heapWorst, "MB/min"),
      target: `flat (< ${FLAT_MB_PER_MIN})`,
      met: heapWorst === null ? null : heapWorst < FLAT_MB_PER_MIN,
    },
    f("V8 heap swing, 2nd half (widest replica)", max(sums.map((s) => s.heapSwingMb)), "MB"),
    {
      ...f("V8 heap floor slope, per-tenth minima (steepest replica)", floorWorst, "MB/min"),
      target: `flat (< ${FLAT_MB_PER_MIN})`,
      met: floorWorst === null ? null : floorWorst < FLAT_MB_PER_MIN,
    },
    f("throughput during the run", load?.commandsPerSecond ?? null, "commands/s"),
  ];
}

function mb(x: number | null): string {
  return x === null ? "—" : x.toFixed(1);
}

function rssLine(series: RssSeries[]): string {
  return series.map((s) => `${mb((s.samples.at(-1)?.[1] ?? NaN) / MB)} MB`).join(", ");
}
