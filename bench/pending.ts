/**
 * Sections (a), (b) and (f) need real replica processes (the replica runtime and its CLI, with
 * durable Deno KV, TCP between replicas and closed-loop client processes). Until that lands they
 * report their figures as not measured, never as numbers.
 *
 * @module
 */
import type { BenchContext, SectionResult } from "./figures.ts";
import { notMeasured } from "./figures.ts";

const WHY = "needs the replica runtime (replica CLI not wired into the bench yet)";

/**
 * Section (a): saturated throughput of 4 replica processes, durable Deno KV, closed-loop
 * client processes.
 *
 * @example
 * ```ts
 * import { runSaturated } from "./pending.ts";
 * (await runSaturated({ quick: true, long: false, log: console.error })).figures[0]!.value; // null
 * ```
 */
export function runSaturated(_ctx: BenchContext): Promise<SectionResult> {
  return Promise.resolve({
    section: "a",
    title: "Saturated throughput",
    figures: [
      notMeasured("a", "4 replicas, saturated throughput", "commands/s", WHY),
      notMeasured("a", "4 replicas, saturated throughput", "Nodes/s", WHY),
      notMeasured("a", "latency p50 at saturation", "ms", WHY),
    ],
    notes: ["Reference (DESIGN.md): libhotstuff ~83,000 commands/s with 4 replicas here."],
  });
}

/**
 * Section (b): latency at light load.
 *
 * @example
 * ```ts
 * import { runLightLoad } from "./pending.ts";
 * await runLightLoad({ quick: true, long: false, log: console.error });
 * ```
 */
export function runLightLoad(_ctx: BenchContext): Promise<SectionResult> {
  return Promise.resolve({
    section: "b",
    title: "Light-load latency",
    figures: [
      notMeasured("b", "latency p50", "ms", WHY),
      notMeasured("b", "latency p99", "ms", WHY),
    ],
    notes: ["Reference (DESIGN.md): libhotstuff ~4.4 ms p50 at light load here."],
  });
}

/**
 * Section (f): RSS sampled over a run at full load (`--long`: a long run).
 *
 * @example
 * ```ts
 * import { runMemory } from "./pending.ts";
 * await runMemory({ quick: true, long: true, log: console.error });
 * ```
 */
export function runMemory(ctx: BenchContext): Promise<SectionResult> {
  const minutes = ctx.long ? 30 : ctx.quick ? 0.25 : 2;
  return Promise.resolve({
    section: "f",
    title: "Memory",
    figures: [
      notMeasured("f", `RSS max over ${minutes} min`, "MB", WHY),
      notMeasured("f", `RSS growth over ${minutes} min`, "MB", WHY),
    ],
    notes: [],
  });
}
