/**
 * The benchmark harness: `deno task bench [--quick] [--long] [--only c,d] [--json FILE]`.
 *
 * Sections, as lettered in the issue:
 * - a: saturated throughput, 4 replica processes (durable Deno KV), closed-loop client processes;
 * - b: light-load latency (one command outstanding);
 * - c: scaling, n ∈ {4, 16, 64, 128} replicas in one process with real signatures;
 * - d: catch-up rate of a replica 10,000 Nodes behind;
 * - e: restart time with 100,000 committed Nodes on disk;
 * - f: memory (RSS of each replica) over a run at full load;
 * - g: writes through one replica while wrk floods another with expensive reads
 *   (`floodWriteRatio`, bench/flood.ts).
 * - h: single-key PUTs from 200 concurrent wrk clients (bench/puts.ts).
 * - i: leader reputation: committed Nodes/s with all 4 replicas up, and with 1 of 4 down with
 *   and without reputation (bench/reputation.ts).
 * - j: join time of a wiped replica into a cluster with 100,000 committed Nodes, by snapshot
 *   state sync and by replay (bench/join.ts).
 * - k: Merkle libraries from npm against the state tree, 100,000 keys (bench/merkle_libraries.ts);
 *   only with `--only k` (15-25 minutes here, most of it the sparse Merkle tree; 66 s with
 *   `--quick`, 10,000 keys): it checks a design choice, not a release.
 *
 * It prints a table (section, figure, value, unit, target) and, with `--json FILE`, writes every
 * figure with its details. `--quick` runs a short subset (under 60 s). The bench reports; it
 * never passes or fails on a figure (the exit code is non-zero only when the harness breaks).
 *
 * Sections a, b, f and g run in a child process each (bench/live.ts). `--cpu-prof DIR` runs one
 * replica of section a under the V8 profiler; `--timed` runs one replica of sections a and b
 * with wall-time accounting (bench/timed_replica.ts). With `--plot` (or `--plot-file FILE`), or
 * with `--json` in a full run, section a's points (and b's) are drawn as a throughput-latency
 * SVG, docs/throughput-latency.svg by default.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runCatchUpSection } from "./catchup.ts";
import type { Section, SectionResult } from "./figures.ts";
import { formatTable, notMeasured } from "./figures.ts";
import type { LiveContext } from "./live.ts";
import { runFlood, runLightLoad, runMemory, runPuts, runReputation, runSaturated } from "./live.ts";
import { DEFAULT_PLOT_PATH, plotFromSection } from "./plot.ts";
import { runJoinSection } from "./join.ts";
import { runMerkleLibrariesSection } from "./merkle_libraries.ts";
import { runRestart } from "./restart.ts";
import { runScaling } from "./scaling.ts";

/** Every section, in order. */
export const SECTIONS: readonly Section[] = [
  { id: "a", title: "Saturated throughput", run: runSaturated },
  { id: "b", title: "Light-load latency", run: runLightLoad },
  { id: "c", title: "Scaling", run: runScaling },
  { id: "d", title: "Catch-up", run: runCatchUpSection },
  { id: "e", title: "Restart", run: runRestart },
  { id: "f", title: "Memory", run: runMemory },
  { id: "g", title: "Writes under a read flood", run: runFlood },
  { id: "h", title: "Single-key writes", run: runPuts },
  { id: "i", title: "Leader reputation", run: runReputation },
  { id: "j", title: "Join time of a wiped replica", run: runJoinSection },
  { id: "k", title: "Merkle libraries against the state tree", run: runMerkleLibrariesSection },
];

const USAGE = `Usage: deno task bench [options]

  --quick        a short subset (whole run under 60 s; sections g, i and j only with --only)
  --long         the long memory run (section f: 10 minutes)
  --only a,b,..  only these sections (letters a-k; section k runs only when named here)
  --json FILE    also write every figure and its details to FILE
  --plot         draw section a's throughput-latency curve as SVG into
                 docs/throughput-latency.svg (--json in a full run implies it)
  --plot-file F  ... into F instead
  --cpu-prof DIR run replica 0 of section a under the V8 profiler (profile into DIR)
  --timed        run replica 1 of sections a and b with wall-time accounting
                 (bench/timed_replica.ts: where it waits)
  --help         this text`;

/** Parsed command line. */
export interface BenchArgs {
  /** `--quick`. */
  readonly quick: boolean;
  /** `--long`. */
  readonly long: boolean;
  /** Sections to run. */
  readonly only: readonly string[];
  /** `--json FILE`, or null. */
  readonly json: string | null;
  /** Where to write the throughput-latency SVG, or null for no plot. */
  readonly plot: string | null;
  /** `--cpu-prof DIR`, or null. */
  readonly cpuProf: string | null;
  /** `--timed`. */
  readonly timed: boolean;
  /** `--help`. */
  readonly help: boolean;
}

/**
 * Parses the bench's command line.
 *
 * @example
 * ```ts
 * import { parseBenchArgs } from "./main.ts";
 * parseBenchArgs(["--quick", "--only", "c,d"]).only; // ["c", "d"]
 * ```
 */
export function parseBenchArgs(args: readonly string[]): BenchArgs {
  const { values } = parseArgs({
    args: [...args],
    options: {
      quick: { type: "boolean", default: false },
      long: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string" },
      plot: { type: "boolean", default: false },
      "plot-file": { type: "string" },
      "cpu-prof": { type: "string" },
      timed: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const known = SECTIONS.map((s) => s.id);
  // Sections g (~2 minutes, wrk), i (three clusters) and j (~1 minute quick) join a quick run
  // only when asked for by --only; section k (a library comparison) any run.
  const only = values.only === undefined
    ? known.filter((s) => s !== "k" && !(values.quick && (s === "g" || s === "i" || s === "j")))
    : values.only.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "");
  const unknown = only.filter((s) => !known.includes(s));
  if (unknown.length > 0) {
    throw new Error(`--only: unknown section(s) ${unknown.join(", ")}; known: ${known.join(",")}`);
  }
  const wantPlot = values.plot || values["plot-file"] !== undefined ||
    (values.json !== undefined && !values.quick);
  return {
    quick: values.quick,
    long: values.long,
    only,
    json: values.json ?? null,
    plot: wantPlot ? values["plot-file"] ?? DEFAULT_PLOT_PATH : null,
    cpuProf: values["cpu-prof"] ?? null,
    timed: values.timed,
    help: values.help,
  };
}

/** Runs one section; a thrown error becomes a not-measured figure, and the bench goes on. */
async function runSection(section: Section, ctx: LiveContext): Promise<SectionResult> {
  const started = performance.now();
  try {
    const r = await section.run(ctx);
    return { ...r, elapsedMs: performance.now() - started };
  } catch (e) {
    const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    ctx.log(`${section.id}: failed: ${why}`);
    return {
      section: section.id,
      title: section.title,
      figures: [notMeasured(section.id, "section", "", `failed: ${why}`)],
      notes: [e instanceof Error && e.stack !== undefined ? e.stack : why],
      elapsedMs: performance.now() - started,
    };
  }
}

function machine(): Record<string, unknown> {
  let os: string | null = null;
  try {
    os = `${Deno.build.os} ${Deno.osRelease()}`;
  } catch {
    os = Deno.build.os;
  }
  return {
    cores: navigator.hardwareConcurrency,
    os,
    arch: Deno.build.arch,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
  };
}

async function main(): Promise<number> {
  let args: BenchArgs;
  try {
    args = parseBenchArgs(Deno.args);
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const started = performance.now();
  const log = (line: string): void => {
    console.error(`[${((performance.now() - started) / 1000).toFixed(1)} s] ${line}`);
  };
  const ctx: LiveContext = {
    quick: args.quick,
    long: args.long,
    log,
    cpuProfDir: args.cpuProf,
    timed: args.timed,
  };
  const results: SectionResult[] = [];
  for (const section of SECTIONS.filter((s) => args.only.includes(s.id))) {
    log(`section ${section.id}: ${section.title}`);
    results.push(await runSection(section, ctx));
  }
  const elapsedMs = performance.now() - started;
  console.log(formatTable(results));
  console.log(`\n${args.quick ? "quick" : "full"} run, ${(elapsedMs / 1000).toFixed(1)} s`);
  const saturated = results.find((r) => r.section === "a");
  if (args.plot !== null && saturated !== undefined) {
    const light = results.find((r) => r.section === "b");
    if (await plotFromSection(saturated, args.plot, { light })) log(`wrote ${args.plot}`);
  }
  if (args.json !== null) {
    const report = {
      version: 1,
      summary: summaryOf(results),
      startedAt: new Date(Date.now() - elapsedMs).toISOString(),
      elapsedMs,
      args,
      machine: machine(),
      sections: results,
    };
    await Deno.writeTextFile(args.json, JSON.stringify(report, null, 2) + "\n");
    log(`wrote ${args.json}`);
  }
  return 0;
}

/** The keys of the report's `summary`, in order. */
export const SUMMARY_KEYS = [
  "orderingThroughput",
  "kvThroughput",
  "cpuUsPerCommandPerReplica",
  "lightP50Ms",
  "lightP99Ms",
  "catchUpNodesPerSecond",
  "singleKeyPutsPerSecond",
  "floodWriteRatio",
  "reputationOneDownRatio",
] as const;

/**
 * The report's top-level `summary`: the headline number of each key that a section run measured
 * (commands/s, µs, ms, Nodes/s), null for the others.
 *
 * @example
 * ```ts
 * import { summaryOf } from "./main.ts";
 * summaryOf([]).kvThroughput; // null
 * ```
 */
export function summaryOf(
  results: readonly SectionResult[],
): Record<(typeof SUMMARY_KEYS)[number], number | null> {
  const merged: Record<string, number | null> = {};
  for (const r of results) Object.assign(merged, r.summary ?? {});
  return Object.fromEntries(SUMMARY_KEYS.map((k) => [k, merged[k] ?? null])) as Record<
    (typeof SUMMARY_KEYS)[number],
    number | null
  >;
}

if (import.meta.main) Deno.exit(await main());
