/**
 * Section (h): single-key writes from many clients. 4 key-value replica processes (as in (a));
 * wrk (a Debian package) keeps `PUT_CONNECTIONS` connections busy with `PUT /kv/{key}` requests,
 * each a new key with a 16-byte value, each answered once committed (`bench/puts.lua`), against one
 * replica. The replica adds each to its next batch like any command; the figure is the writes
 * acknowledged per second (2xx answers) and wrk's latency quantiles. Target ≥ 8,000 writes/s.
 *
 * Needs network access: run in a child process by the harness (bench/live.ts), like (a).
 *
 * @module
 */
import { type Figure, notMeasured, type SectionResult, withTarget } from "./figures.ts";
import { BenchCluster } from "./replicas.ts";
import { loadAverage, loadNote } from "./saturated.ts";
import { hasWrk, runWrk, type WrkSummary } from "./wrk.ts";

const SCRIPT = new URL("./puts.lua", import.meta.url).pathname;
/** Concurrent clients (wrk connections), as in the issue. */
export const PUT_CONNECTIONS = 200;
/** Target, writes/s. */
export const PUTS_TARGET = 8_000;

/** Options of {@link putsSection}. */
export interface PutsOptions {
  /** Shorter run. */
  readonly quick: boolean;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/**
 * Section (h): single-key PUTs from `PUT_CONNECTIONS` concurrent clients.
 *
 * @example
 * ```ts
 * import { putsSection } from "./puts.ts";
 * // const result = await putsSection({ quick: true, log: console.error });
 * ```
 */
export async function putsSection(o: PutsOptions): Promise<SectionResult> {
  const title = "Single-key writes";
  if (!(await hasWrk())) {
    return {
      section: "h",
      title,
      figures: [notMeasured("h", "writes/s", "", "wrk is not installed (apt-get install wrk)")],
      notes: [],
      summary: { singleKeyPutsPerSecond: null },
    };
  }
  const seconds = o.quick ? 5 : 10;
  const loadBefore = loadAverage();
  const cluster = await BenchCluster.create({ replicas: 4 });
  let run: WrkSummary;
  try {
    cluster.startAll();
    await cluster.waitReady();
    const url = cluster.urls[0]!;
    o.log(`h: warm-up (3 s, not counted), then ${seconds} s of PUTs to ${url}`);
    const common = { threads: 2, connections: PUT_CONNECTIONS, script: SCRIPT, latency: true };
    await runWrk(url, { ...common, seconds: 3, env: { PUT_PREFIX: "warm" } });
    run = await runWrk(url, { ...common, seconds, env: { PUT_PREFIX: "run" } });
  } finally {
    await cluster.close();
  }
  const ok = run.requests === null || run.requestsPerSecond === null
    ? null
    : run.requestsPerSecond * (1 - (run.non2xx ?? 0) / Math.max(1, run.requests));
  const figure = (name: string, value: number | null, unit: string): Figure => ({
    section: "h",
    name,
    value,
    unit,
  });
  o.log(`h: ${ok?.toFixed(0)} writes/s acknowledged, p50 ${run.latencyMs.p50} ms`);
  return {
    section: "h",
    title,
    figures: [
      withTarget(
        figure(`${PUT_CONNECTIONS} clients: writes acknowledged`, ok, "writes/s"),
        ">=",
        PUTS_TARGET,
      ),
      figure("latency p50", run.latencyMs.p50, "ms"),
      figure("latency p99", run.latencyMs.p99, "ms"),
      figure("refused (non-2xx)", run.non2xx, "requests"),
    ],
    notes: [
      `wrk -t2 -c${PUT_CONNECTIONS} -d${seconds}s --latency -s bench/puts.lua against replica 0 ` +
      `of 4 key-value replicas (durable Deno KV); each PUT a new key, 16-byte value, answered ` +
      `after commit; a 3 s run first, not counted.`,
      loadNote([loadBefore, loadAverage()]),
      ...(run.socketErrors === null ? [] : [`wrk socket errors: ${run.socketErrors}`]),
    ],
    summary: { singleKeyPutsPerSecond: ok },
    details: { wrk: run },
  };
}
