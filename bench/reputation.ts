/**
 * Section (i), Leader reputation: committed Nodes per second of a 4-replica key-value cluster
 * (processes, durable Deno KV, the CLI's LAN timeouts: 500 ms minimum view timeout), idle (each
 * leader proposes after the pool's 20 ms idle delay), in three cases run one after another:
 * all four up; replica 3 never started, with leader reputation (SPECIFICATION.md 3.4, the
 * default); replica 3 never started, without (cluster file `leaderReputation: false`).
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

const CASES: readonly ReputationCase[] = [
  { name: "all up", down: [], reputation: true },
  { name: "1 of 4 down, reputation", down: [3], reputation: true },
  { name: "1 of 4 down, no reputation", down: [3], reputation: false },
];

/** What one case measured. */
interface CaseOutcome {
  readonly case: ReputationCase;
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

function notMeasuredCase(c: ReputationCase, windowMs: number, note: string): CaseOutcome {
  return { case: c, nodesPerSecond: null, heights: null, views: null, windowMs, note };
}

async function runCase(c: ReputationCase, windowMs: number, warmup: number): Promise<CaseOutcome> {
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
        return notMeasuredCase(c, windowMs, "no warm-up");
      }
      await sleep(200);
    }
    const a = await height(url);
    const t0 = performance.now();
    await sleep(windowMs);
    const b = await height(url);
    const elapsed = performance.now() - t0;
    if (a === null || b === null) {
      return notMeasuredCase(c, windowMs, "no status");
    }
    return {
      case: c,
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
  const outcomes: CaseOutcome[] = [];
  for (const c of CASES) {
    ctx.log(`(i) ${c.name}: ${windowMs / 1000} s`);
    const o = await runCase(c, windowMs, warmup);
    ctx.log(`(i) ${c.name}: ${o.nodesPerSecond?.toFixed(1) ?? "not measured"} Nodes/s`);
    outcomes.push(o);
  }
  const [up, on, off] = outcomes.map((o) => o.nodesPerSecond);
  const ratio = (x: number | null | undefined) =>
    x === null || x === undefined || up === null || up === undefined || up === 0 ? null : x / up;
  const figures: Figure[] = [
    ...outcomes.map((o) => ({
      section: "i",
      name: `${o.case.name}: committed Nodes/s`,
      value: o.nodesPerSecond === null ? null : round1(o.nodesPerSecond),
      unit: "Nodes/s",
      ...(o.note === undefined ? {} : { note: o.note }),
    })),
    withRatio("1 down with reputation / all up", ratio(on), "≥ 0.70"),
    withRatio("1 down without reputation / all up", ratio(off), undefined),
  ];
  return {
    section: "i",
    title: "Leader reputation",
    figures,
    notes: [
      "4 key-value replica processes, idle (a Node every idle delay of 20 ms), 500 ms minimum " +
      "view timeout; replica 3 never started in the 1-down cases; replica 0's committed height " +
      `over a ${windowMs / 1000} s window after ${warmup} committed heights.`,
    ],
    details: outcomes,
    summary: { reputationOneDownRatio: ratio(on) },
  };
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
