/**
 * Section (g): writes under an HTTP read flood. Four replica processes (as in section a); closed-
 * loop clients write through replica 1 only (`POST /commands?wait=commit`, one command per
 * request, 200 outstanding); the flood goes to replica 0 from wrk (a Debian package) with
 * `bench/flood.lua`: expensive reads (`/committed` and `/chain` ranges of 256 Nodes), bodies of
 * 2 MiB (twice `bodyBytesMax`) and unknown routes, in turn, at most 300 requests/s (30
 * connections, each waiting 100 ms before its next request, wrk's `delay()`).
 *
 * Windows of the same length, alternating without and with the flood, A-B-A-B-A (quick: 5 s
 * each; full: A-B-A-B-A-B-A, 10 s each), so that a drift of a shared machine falls on both kinds
 * alike. The figure is `floodWriteRatio = mean flooded rate / mean unflooded rate`; every window's
 * rate is in the notes. Target ≥ 0.70. `FLOOD_KINDS=01` in the environment restricts the flood to
 * some kinds (0 `/committed`, 1 `/chain`, 2 oversized bodies, 3 unknown routes), to see what each
 * costs. Without wrk on PATH the figure is not measured (and says
 * why).
 *
 * @module
 */
import { type Figure, notMeasured, type SectionResult, withTarget } from "./figures.ts";
import { type LoadResult, runLoad } from "./load.ts";
import { BenchCluster } from "./replicas.ts";
import { hasWrk, runWrk, type WrkSummary } from "./wrk.ts";

const SCRIPT = new URL("./flood.lua", import.meta.url).pathname;
/** The writers: 200 requests of one command outstanding, from two client processes. */
const WRITE_LOAD = { clients: 2, size: 32, batch: 1, outstanding: 200 } as const;
/** wrk connections; each waits 100 ms between its requests, so at most 300 requests/s. */
const FLOOD_CONNECTIONS = 30;

/** Options of {@link floodSection}. */
export interface FloodOptions {
  /** Short windows. */
  readonly quick: boolean;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/**
 * Runs section (g).
 *
 * @example
 * ```ts
 * import { floodSection } from "./flood.ts";
 * // const result = await floodSection({ quick: true, log: console.error });
 * ```
 */
export async function floodSection(o: FloodOptions): Promise<SectionResult> {
  const title = "Writes under a read flood";
  if (!(await hasWrk())) {
    return {
      section: "g",
      title,
      figures: [
        notMeasured("g", "floodWriteRatio", "", "wrk is not installed (apt-get install wrk)"),
      ],
      notes: [],
    };
  }
  const windowMs = o.quick ? 5_000 : 10_000;
  const warmupMs = 2_000;
  const pattern = o.quick ? "ABABA" : "ABABABA";
  const cluster = await BenchCluster.create({ replicas: 4 });
  try {
    cluster.startAll();
    await cluster.waitReady();
    const writeUrl = cluster.urls[1]!;
    const floodUrl = cluster.urls[0]!;
    const windows: Array<{ flooded: boolean; load: LoadResult; wrk: WrkSummary | null }> = [];
    // A first load, not counted: a fresh cluster is slower for its first seconds.
    o.log("g: warm-up load (not counted)");
    await runLoad(cluster, { ...WRITE_LOAD, warmupMs: 0, windowMs: 3_000, urls: [writeUrl] });
    for (const [i, kind] of [...pattern].entries()) {
      const flooded = kind === "B";
      o.log(
        `g: window ${i + 1}/${pattern.length}, ${flooded ? `flood at ${floodUrl}` : "no flood"}`,
      );
      const wrk = flooded ? startWrk(floodUrl, Math.ceil((warmupMs + windowMs) / 1000) + 2) : null;
      const load = await runLoad(cluster, {
        ...WRITE_LOAD,
        warmupMs,
        windowMs,
        firstClient: 10 * i,
        urls: [writeUrl],
      });
      windows.push({ flooded, load, wrk: await wrk });
    }
    const rate = (flooded: boolean) =>
      mean(
        windows.filter((w) => w.flooded === flooded).map((w) => w.load.commandsPerSecond),
      );
    const unflooded = rate(false);
    const floodedRate = rate(true);
    const ratio = unflooded > 0 ? floodedRate / unflooded : null;
    const wrks = windows.flatMap((w) => w.wrk === null ? [] : [w.wrk]);
    const answered = mean(wrks.map((w) => w.requestsPerSecond ?? 0));
    const figures: Figure[] = [
      withTarget(
        { section: "g", name: "floodWriteRatio", value: round(ratio), unit: "" },
        ">=",
        0.7,
      ),
      {
        section: "g",
        name: "writes, unflooded",
        value: Math.round(unflooded),
        unit: "commands/s",
      },
      { section: "g", name: "writes, flooded", value: Math.round(floodedRate), unit: "commands/s" },
      {
        section: "g",
        name: "flood requests answered",
        value: Math.round(answered * 10) / 10,
        unit: "requests/s",
        note: `${sum(wrks.map((w) => w.non2xx ?? 0))} of ${
          sum(wrks.map((w) => w.requests ?? 0))
        } not 2xx`,
      },
    ];
    return {
      section: "g",
      title,
      figures,
      notes: [
        "floodWriteRatio = mean write rate of the flooded windows / of the unflooded ones",
        `windows (commands/s): ${
          windows.map((w) => `${w.flooded ? "B" : "A"} ${Math.round(w.load.commandsPerSecond)}`)
            .join(", ")
        }`,
        `wrk -t1 -c${FLOOD_CONNECTIONS} -s bench/flood.lua (100 ms delay per connection)`,
      ],
      details: { windows },
      summary: { floodWriteRatio: round(ratio) },
    };
  } finally {
    await cluster.close();
  }
}

function startWrk(url: string, seconds: number): Promise<WrkSummary> {
  return runWrk(url, { threads: 1, connections: FLOOD_CONNECTIONS, seconds, script: SCRIPT });
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : sum(values) / values.length;
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 1000) / 1000;
}
