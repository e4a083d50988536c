/**
 * Section (i), Leader reputation: committed Nodes per second of a 4-replica key-value cluster
 * (processes, durable Deno KV, the CLI's LAN timeouts: 500 ms minimum view timeout), in three cases
 * run one after another: all four up; replica 3 never started, with leader reputation
 * (SPECIFICATION.md 3.5, the default); replica 3 never started, without (cluster file
 * `leaderReputation: false`). Each trio runs idle (each leader proposes after the pool's 20 ms
 * idle delay) and under 32 closed-loop writers of single-key PUTs through replica 0.
 *
 * Each case: start, wait until the running replicas answer and have committed `warmupHeights`,
 * then read replica 0's committed height at the start and the end of the window. The ratio
 * `1-down / all-up` is computed from figures of one run (this machine is shared and noisy).
 *
 * @module
 */
import { sleep, tryStatus } from "../examples/kv_store/cluster.ts";
import type { BenchContext, Figure, SectionResult } from "./figures.ts";
import { BenchCluster } from "./replicas.ts";

/** One case of the section. */
interface ReputationCase {
  readonly name: string;
  readonly down: readonly number[];
  readonly reputation: boolean;
}

/** Concurrent writers of each trio of cases (0: idle). */
const LOADS: readonly number[] = [0, 32];

const CASES: readonly ReputationCase[] = [
  { name: "all up", down: [], reputation: true },
  { name: "1 of 4 down, reputation", down: [3], reputation: true },
  { name: "1 of 4 down, no reputation", down: [3], reputation: false },
];

/** What one case measured. */
interface CaseOutcome {
  readonly case: ReputationCase;
  /** Concurrent writers (0: idle). */
  readonly writers: number;
  /** Acknowledged writes per second in the window (null when idle). */
  readonly writesPerSecond: number | null;
  readonly nodesPerSecond: number | null;
  readonly heights: readonly [number, number] | null;
  readonly windowMs: number;
  readonly views: readonly [number, number] | null;
  readonly note?: string;
}

async function height(url: string): Promise<{ height: number; view: number } | null> {
  const s = await tryStatus(url);
  return s === null ? null : { height: s.committed.height, view: s.view };
}

function notMeasuredCase(
  c: ReputationCase,
  writers: number,
  windowMs: number,
  note: string,
): CaseOutcome {
  const none = { nodesPerSecond: null, writesPerSecond: null, heights: null, views: null };
  return { case: c, writers, ...none, windowMs, note };
}

/**
 * `writers` closed loops of single-key PUTs through `url` (each answered after its commit) until
 * `signal` aborts; `acked` counts the answers with status 200.
 */
function writeLoad(url: string, writers: number, signal: AbortSignal): { acked: number } {
  const counter = { acked: 0 };
  for (let w = 0; w < writers; w++) {
    void (async () => {
      for (let i = 0; !signal.aborted; i++) {
        try {
          const r = await fetch(`${url}/kv/w${w}-${i}`, { method: "PUT", body: "v", signal });
          await r.body?.cancel();
          if (r.status === 200) counter.acked++;
        } catch {
          if (!signal.aborted) await sleep(50);
        }
      }
    })();
  }
  return counter;
}

async function runCase(
  c: ReputationCase,
  writers: number,
  windowMs: number,
  warmup: number,
): Promise<CaseOutcome> {
  const cluster = await BenchCluster.create({ replicas: 4 });
  try {
    if (!c.reputation) {
      const path = cluster.files.configPath;
      const config = JSON.parse(await Deno.readTextFile(path));
      await Deno.writeTextFile(path, JSON.stringify({ ...config, leaderReputation: false }));
    }
    for (let i = 0; i < 4; i++) if (!c.down.includes(i)) cluster.start(i);
    const url = cluster.urls[0]!;
    const deadline = performance.now() + 60_000;
    for (;;) {
      const h = await height(url);
      if (h !== null && h.height >= warmup) break;
      if (performance.now() > deadline) {
        return notMeasuredCase(c, writers, windowMs, "no warm-up");
      }
      await sleep(200);
    }
    const stop = new AbortController();
    const load = writeLoad(url, writers, stop.signal);
    if (writers > 0) await sleep(2_000);
    const a = await height(url);
    const acked = load.acked;
    const t0 = performance.now();
    await sleep(windowMs);
    const b = await height(url);
    const elapsed = performance.now() - t0;
    const writes = load.acked - acked;
    stop.abort();
    if (a === null || b === null) {
      return notMeasuredCase(c, writers, windowMs, "no status");
    }
    return {
      case: c,
      writers,
      writesPerSecond: writers === 0 ? null : writes / (elapsed / 1000),
      nodesPerSecond: (b.height - a.height) / (elapsed / 1000),
      heights: [a.height, b.height],
      views: [a.view, b.view],
      windowMs: elapsed,
    };
  } finally {
    await cluster.close();
  }
}

/**
 * Runs section (i) (in the child process of bench/live.ts: it needs the network).
 *
 * @example
 * ```ts
 * // const result = await reputationSection({ quick: true, long: false, log: console.error });
 * ```
 */
export async function reputationSection(ctx: BenchContext): Promise<SectionResult> {
  const windowMs = ctx.quick ? 8_000 : 20_000;
  const warmup = 30;
  const figures: Figure[] = [];
  const outcomes: CaseOutcome[] = [];
  let summaryRatio: number | null = null;
  for (const writers of LOADS) {
    const load = writers === 0 ? "idle" : `${writers} writers`;
    const trio: CaseOutcome[] = [];
    for (const c of CASES) {
      ctx.log(`(i) ${load}, ${c.name}: ${windowMs / 1000} s`);
      const o = await runCase(c, writers, windowMs, warmup);
      ctx.log(`(i) ${load}, ${c.name}: ${o.nodesPerSecond?.toFixed(1) ?? "not measured"} Nodes/s`);
      trio.push(o);
    }
    const [up, on, off] = trio.map((o) => o.nodesPerSecond);
    const ratio = (x: number | null | undefined) =>
      x === null || x === undefined || up === null || up === undefined || up === 0 ? null : x / up;
    figures.push(
      ...trio.flatMap((o) => caseFigures(o, load)),
      withRatio(`${load}: 1 down with reputation / all up`, ratio(on), "≥ 0.70"),
      withRatio(`${load}: 1 down without reputation / all up`, ratio(off), undefined),
    );
    if (writers === 0) summaryRatio = ratio(on);
    outcomes.push(...trio);
  }
  return {
    section: "i",
    title: "Leader reputation",
    figures,
    notes: [
      "4 key-value replica processes, 500 ms minimum view timeout; replica 3 never started in the " +
      "1-down cases; replica 0's committed height over a " +
      `${windowMs / 1000} s window after ${warmup} committed heights. Idle: a Node every idle ` +
      "delay of 20 ms. Writers: closed loops of single-key PUTs through replica 0, each answered " +
      "after its commit (2 s of load before the window).",
    ],
    details: outcomes,
    summary: { reputationOneDownRatio: summaryRatio },
  };
}

/** The figures of one case. */
function caseFigures(o: CaseOutcome, load: string): Figure[] {
  const note = o.note === undefined ? {} : { note: o.note };
  const nodes: Figure = {
    section: "i",
    name: `${load}, ${o.case.name}: committed Nodes/s`,
    value: o.nodesPerSecond === null ? null : round1(o.nodesPerSecond),
    unit: "Nodes/s",
    ...note,
  };
  if (o.writers === 0) return [nodes];
  const writes: Figure = {
    section: "i",
    name: `${load}, ${o.case.name}: acknowledged writes/s`,
    value: o.writesPerSecond === null ? null : round1(o.writesPerSecond),
    unit: "writes/s",
  };
  return [nodes, writes];
}

function withRatio(name: string, value: number | null, target: string | undefined): Figure {
  const v = value === null ? null : Math.round(value * 1000) / 1000;
  return {
    section: "i",
    name,
    value: v,
    unit: "ratio",
    ...(target === undefined ? {} : { target, met: v === null ? null : v >= 0.7 }),
  };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
