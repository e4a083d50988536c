/**
 * Section (c), Scaling: n replicas of equal power in one process, the library's deterministic
 * simulator with real Ed25519 signatures (Web Crypto) and a network without faults (1-2 ms
 * virtual delays). Virtual time costs nothing, so everything is counted in wall-clock time of the
 * whole process: n replicas share its cores, and the throughput is the honest "in one process"
 * figure, not what n machines would reach.
 *
 * Warm-up: the first `warmup` heights committed by every replica (boot, key imports, JIT). The
 * steady-state window: the next `window` heights. Messages and bytes per committed Node count
 * every delivery in the window (a broadcast to n - 1 peers counts n - 1 times), bytes as
 * {@link encodeMessage} encodes them for the wire (without the frame header).
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { encodeMessage } from "../src/codec.ts";
import { Engine } from "../src/runtime/engine.ts";
import { runSimulation } from "../src/testing/sim.ts";
import type { ConsensusMessage, PublicKey } from "../src/types.ts";
import type { BenchContext, Figure, SectionResult } from "./figures.ts";
import { notMeasured, quantile, withTarget } from "./figures.ts";

/** One replica count to run. */
export interface ScalingCase {
  /** Replicas (validators of power 1). */
  readonly n: number;
  /** Heights committed by all before the window opens. */
  readonly warmup: number;
  /** Heights committed by all inside the window. */
  readonly window: number;
  /** Runs of the case; the one with the median throughput is reported. Default 1. */
  readonly repeats?: number;
}

/** The cases of a full run. n = 128 is bounded to a few committed Nodes. */
export const FULL_CASES: readonly ScalingCase[] = [
  { n: 4, warmup: 20, window: 300, repeats: 3 },
  { n: 16, warmup: 5, window: 60, repeats: 3 },
  { n: 64, warmup: 3, window: 20 },
  { n: 128, warmup: 3, window: 12 },
];

/** The cases of a quick run (n = 128 skipped). */
export const QUICK_CASES: readonly ScalingCase[] = [
  { n: 4, warmup: 10, window: 150 },
  { n: 16, warmup: 3, window: 30 },
  { n: 64, warmup: 2, window: 8 },
];

/** Run once, untimed, before the cases: the process's JIT and Web Crypto warm-up. */
const PROCESS_WARMUP: ScalingCase = { n: 4, warmup: 1, window: 100 };

/** What one case measured. */
export interface ScalingOutcome {
  /** The case. */
  readonly case: ScalingCase;
  /** Committed Nodes per wall second in the window. */
  readonly throughput: number;
  /** Committed Nodes per wall second over the whole run, boot included. */
  readonly throughputWhole: number;
  /** Window length, ms. */
  readonly windowMs: number;
  /** Process CPU time (user + system) in the window over its wall time (1 = one core busy). */
  readonly cpuPerWall: number;
  /** Deliveries per committed Node in the window. */
  readonly messagesPerNode: number;
  /** Encoded bytes delivered per committed Node in the window. */
  readonly bytesPerNode: number;
  /** Deliveries and bytes per committed Node, by message type. */
  readonly byType: Record<string, { messages: number; bytes: number }>;
  /** Median views from a Node's view to the view its committer was in. */
  readonly commitLatencyViewsP50: number | null;
  /** Median wall ms from a proposal's first delivery to its commit by every replica. */
  readonly commitLatencyWallMsP50: number | null;
  /** Wall ms of the whole run. */
  readonly totalMs: number;
  /** Heights every replica committed. */
  readonly committed: number;
  /** Deliveries over the whole run. */
  readonly delivered: number;
  /** Safety violations and liveness failures the simulator's checkers reported. */
  readonly problems: string[];
  /** Steady throughput of every repeat, in run order (this outcome is their median). */
  readonly repeatThroughputs?: number[];
}

/** Tracks commits, views and deliveries of one run, in wall-clock time. */
class Observer {
  readonly #c: ScalingCase;
  readonly #views: number[];
  readonly #commitsAt = new Map<number, number>();
  readonly #proposalSeen = new Map<number, number>();
  readonly #allAt = new Map<number, number>();
  readonly #viewOfHeight = new Map<number, number>();
  readonly latencyViews: number[] = [];
  readonly windowMessages: ConsensusMessage[] = [];
  windowStart: number | null = null;
  windowEnd: number | null = null;
  cpuStart: { user: number; system: number } | null = null;
  cpuWindowUs = 0;
  delivered = 0;

  constructor(c: ScalingCase) {
    this.#c = c;
    this.#views = new Array(c.n).fill(0);
  }

  get inWindow(): boolean {
    return this.windowStart !== null && this.windowEnd === null;
  }

  /** The simulator's trace: `<virtual ms> <kind> ...`. */
  onTrace(line: string): void {
    const rest = line.slice(line.indexOf(" ") + 1);
    if (rest.startsWith("commit ")) {
      const [, e, h, v] = rest.split(" ");
      this.#onCommit(Number(e), Number(h!.slice(1)), Number(v!.slice(1)));
    } else if (rest.startsWith("view ")) {
      const [, e, view] = rest.split(" ");
      this.#views[Number(e)] = Number(view);
    }
  }

  onDeliver(m: ConsensusMessage): void {
    this.delivered++;
    if (this.inWindow) this.windowMessages.push(m);
    if (m.type === "propose" && !this.#proposalSeen.has(m.node.view)) {
      this.#proposalSeen.set(m.node.view, performance.now());
    }
  }

  #onCommit(endpoint: number, height: number, view: number): void {
    const count = (this.#commitsAt.get(height) ?? 0) + 1;
    this.#commitsAt.set(height, count);
    this.#viewOfHeight.set(height, view);
    const { warmup, window } = this.#c;
    const counted = height > warmup && height <= warmup + window;
    if (counted) this.latencyViews.push(this.#views[endpoint]! - view);
    if (count !== this.#c.n) return;
    const now = performance.now();
    this.#allAt.set(height, now);
    if (height === warmup) {
      this.windowStart = now;
      this.cpuStart = process.cpuUsage();
    }
    if (height === warmup + window) {
      this.windowEnd = now;
      const cpu = process.cpuUsage(this.cpuStart ?? undefined);
      this.cpuWindowUs = cpu.user + cpu.system;
    }
  }

  /** Wall ms from first delivery of each window Node's proposal to its commit by all. */
  wallLatencies(): number[] {
    const out: number[] = [];
    const { warmup, window } = this.#c;
    for (let h = warmup + 1; h <= warmup + window; h++) {
      const at = this.#allAt.get(h);
      const seen = this.#proposalSeen.get(this.#viewOfHeight.get(h) ?? -1);
      if (at !== undefined && seen !== undefined) out.push(at - seen);
    }
    return out;
  }
}

/** Encoded sizes of the window's deliveries, by type (a broadcast is encoded once). */
function sizeByType(messages: readonly ConsensusMessage[]): Map<string, [number, number]> {
  const sizes = new Map<ConsensusMessage, number>();
  const byType = new Map<string, [number, number]>();
  for (const m of messages) {
    let size = sizes.get(m);
    if (size === undefined) {
      size = encodeMessage(m).length;
      sizes.set(m, size);
    }
    const t = byType.get(m.type) ?? [0, 0];
    byType.set(m.type, [t[0] + 1, t[1] + size]);
  }
  return byType;
}

/**
 * Runs one case. Deliveries are observed by wrapping `Engine.prototype.receive` for the run (the
 * simulator has no delivery hook; see docs/PERFORMANCE.md).
 *
 * @example
 * ```ts
 * import { runScalingCase } from "./scaling.ts";
 * const r = await runScalingCase({ n: 4, warmup: 3, window: 10 });
 * console.log(r.throughput);
 * ```
 */
export async function runScalingCase(c: ScalingCase): Promise<ScalingOutcome> {
  const obs = new Observer(c);
  const original = Engine.prototype.receive;
  Engine.prototype.receive = function (this: Engine, from: PublicKey, m: ConsensusMessage) {
    obs.onDeliver(m);
    return original.call(this, from, m);
  };
  const started = performance.now();
  let report;
  try {
    report = await runSimulation({
      seed: 1,
      powers: new Array(c.n).fill(1),
      signatures: "ed25519",
      faults: {
        dropRate: 0,
        duplicateRate: 0,
        delayMinMs: 1,
        delayMaxMs: 2,
        healedDelayMaxMs: 2,
        partitions: [],
        crashes: [],
        crashOnWriteRate: 0,
        healAt: 0,
      },
      livenessCommits: c.warmup + c.window,
      livenessWindowMs: 600_000,
      eventsMax: 50_000_000,
      trace: (line) => obs.onTrace(line),
    });
  } finally {
    Engine.prototype.receive = original;
  }
  const totalMs = performance.now() - started;
  const committed = Math.min(...report.committedHeights);
  const problems = [...report.safetyViolations, ...report.livenessFailures];
  if (obs.windowStart === null || obs.windowEnd === null) {
    problems.push(`window never closed: every replica committed ${committed} heights`);
  }
  const windowMs = (obs.windowEnd ?? NaN) - (obs.windowStart ?? NaN);
  const byType = sizeByType(obs.windowMessages);
  const perNode = (x: number): number => x / c.window;
  let bytes = 0;
  const byTypeOut: Record<string, { messages: number; bytes: number }> = {};
  for (const [type, [count, size]] of byType) {
    bytes += size;
    byTypeOut[type] = { messages: perNode(count), bytes: perNode(size) };
  }
  return {
    case: c,
    throughput: c.window / (windowMs / 1000),
    throughputWhole: committed / (totalMs / 1000),
    windowMs,
    cpuPerWall: obs.cpuWindowUs / 1000 / windowMs,
    messagesPerNode: perNode(obs.windowMessages.length),
    bytesPerNode: perNode(bytes),
    byType: byTypeOut,
    commitLatencyViewsP50: quantile(obs.latencyViews, 0.5),
    commitLatencyWallMsP50: quantile(obs.wallLatencies(), 0.5),
    totalMs,
    committed,
    delivered: obs.delivered,
    problems,
  };
}

function throughputNote(r: ScalingOutcome): string {
  const all = r.repeatThroughputs ?? [r.throughput];
  const spread = all.length > 1
    ? `, median of ${all.length} runs (${all.map((t) => t.toFixed(1)).join(", ")})`
    : "";
  return `window of ${r.case.window} heights after ${r.case.warmup}${spread}`;
}

/** Runs a case `repeats` times and keeps the run with the median steady throughput. */
async function runRepeats(c: ScalingCase, ctx: BenchContext): Promise<ScalingOutcome> {
  const runs: ScalingOutcome[] = [];
  for (let i = 0; i < (c.repeats ?? 1); i++) {
    ctx.log(`c: n=${c.n}, warm-up ${c.warmup} + window ${c.window} heights ...`);
    const r = await runScalingCase(c);
    ctx.log(
      `c: n=${c.n}: ${r.throughput.toFixed(1)} Nodes/s steady, ${r.totalMs.toFixed(0)} ms total`,
    );
    runs.push(r);
  }
  const sorted = [...runs].sort((a, b) => a.throughput - b.throughput);
  const median = sorted[(sorted.length - 1) >> 1]!;
  return { ...median, repeatThroughputs: runs.map((r) => r.throughput) };
}

function caseFigures(r: ScalingOutcome): Figure[] {
  const n = r.case.n;
  const note = r.problems.length > 0 ? `simulator reported: ${r.problems.join("; ")}` : undefined;
  const fig = (name: string, value: number | null, unit: string, extra?: string): Figure => ({
    section: "c",
    name: `n=${n} ${name}`,
    value: value !== null && Number.isFinite(value) ? value : null,
    unit,
    ...(extra !== undefined || note !== undefined
      ? { note: [extra, note].filter((s) => s !== undefined).join("; ") }
      : {}),
  });
  return [
    fig("throughput (steady)", r.throughput, "Nodes/s", throughputNote(r)),
    fig("wall time per Node per replica", r.windowMs / r.case.window / n, "ms"),
    fig("messages per Node", r.messagesPerNode, "msgs"),
    fig("bytes per Node", r.bytesPerNode, "B"),
    fig("commit latency p50", r.commitLatencyViewsP50, "views"),
    fig("proposal→commit by all p50", r.commitLatencyWallMsP50, "ms (wall)"),
  ];
}

/**
 * Section (c).
 *
 * @example
 * ```ts
 * import { runScaling } from "./scaling.ts";
 * const r = await runScaling({ quick: true, long: false, log: console.error });
 * ```
 */
export async function runScaling(ctx: BenchContext): Promise<SectionResult> {
  const cases = ctx.quick ? QUICK_CASES : FULL_CASES;
  ctx.log(`c: process warm-up (n=4, ${PROCESS_WARMUP.window} heights, not reported) ...`);
  await runScalingCase(PROCESS_WARMUP);
  const outcomes: ScalingOutcome[] = [];
  for (const c of cases) outcomes.push(await runRepeats(c, ctx));
  const figures = outcomes.flatMap(caseFigures);
  const base = outcomes.find((o) => o.case.n === 4);
  const big = outcomes.find((o) => o.case.n === 64);
  const ratioName = "n=64 throughput / n=4 throughput";
  if (base !== undefined && big !== undefined) {
    figures.push(withTarget(
      { section: "c", name: ratioName, value: (100 * big.throughput) / base.throughput, unit: "%" },
      ">=",
      50,
    ));
  } else {
    figures.push(notMeasured("c", ratioName, "%", "n=4 or n=64 not run"));
  }
  if (base !== undefined && big !== undefined) {
    figures.push({
      section: "c",
      name: "n=4 / n=64 wall time per Node per replica",
      value: (100 * base.windowMs / base.case.window / 4) / (big.windowMs / big.case.window / 64),
      unit: "%",
      note: "estimate of the n=64 / n=4 throughput ratio with one core per replica, if " +
        "throughput were bound by each replica's CPU (not a measurement of that setup)",
    });
  }
  if (ctx.quick) figures.push(notMeasured("c", "n=128", "", "skipped in quick mode"));
  return {
    section: "c",
    title: "Scaling",
    figures,
    notes: [
      "One process, the deterministic simulator, real Ed25519 (Web Crypto), no faults, 1-2 ms " +
      "virtual delays: n replicas share the process's cores, so total work per Node grows " +
      "about as n² (every replica verifies a QC of 2n/3 + 1 signatures).",
      "Virtual-time latency is meaningless here (signatures take no virtual time); latency is " +
      "given in views and as wall time in this process.",
    ],
    details: outcomes,
  };
}

/** `deno run bench/scaling.ts --n 16 [--warmup 5] [--window 60]`: one case (for profiling). */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      n: { type: "string", default: "16" },
      warmup: { type: "string", default: "5" },
      window: { type: "string", default: "60" },
    },
  });
  const c = { n: Number(values.n), warmup: Number(values.warmup), window: Number(values.window) };
  console.log(JSON.stringify(await runScalingCase(c), null, 2));
}

if (import.meta.main) await main();
