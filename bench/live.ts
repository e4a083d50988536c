/**
 * Sections (a) Saturated throughput, (b) Light-load latency and (f) Memory, as the harness runs
 * them: each in a child process (bench/live_child.ts) with `--allow-all`, because they start
 * replica and client processes that need the network (the `bench` task grants no `--allow-net`)
 * and sample `/proc/PID/status` (Deno asks for `--allow-all` to read `/proc`). The child's
 * progress lines are passed on to the harness log; its last stdout line is the section result.
 *
 * @module
 */
import type { BenchContext, SectionResult } from "./figures.ts";

const CHILD = new URL("./live_child.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;

/** Extra options of the live sections. */
export interface LiveContext extends BenchContext {
  /** Section (a): run replica 0 under the V8 profiler, writing its profile into this directory. */
  readonly cpuProfDir?: string | null;
  /** Sections (a), (b): run replica 1 as bench/timed_replica.ts (where it waits). */
  readonly timed?: boolean;
}

/**
 * Runs section `id` in a child process.
 *
 * @throws {Error} when the child fails or prints no result
 * @example
 * ```ts
 * import { runLiveSection } from "./live.ts";
 * // await runLiveSection("b", { quick: true, long: false, log: console.error });
 * ```
 */
export async function runLiveSection(
  id: "a" | "b" | "f" | "g" | "h" | "i",
  ctx: LiveContext,
): Promise<SectionResult> {
  const args = ["run", "--allow-all", "--config", DENO_JSON, CHILD, "--section", id];
  if (ctx.quick) args.push("--quick");
  if (ctx.long) args.push("--long");
  if (id === "a" && ctx.cpuProfDir) args.push("--cpu-prof", ctx.cpuProfDir);
  if ((id === "a" || id === "b") && ctx.timed === true) args.push("--timed");
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const progress = (async () => {
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter());
    for await (const line of lines) {
      ctx.log(`${id}: ${line}`);
      tail.push(line);
      if (tail.length > 20) tail.shift();
    }
  })();
  const [out, status] = await Promise.all([new Response(child.stdout).text(), child.status]);
  await progress;
  const last = out.trim().split("\n").at(-1) ?? "";
  if (!status.success || !last.startsWith("{")) {
    throw new Error(`section ${id} child exited with ${status.code}: ${tail.join(" | ")}`);
  }
  return JSON.parse(last) as SectionResult;
}

function lineSplitter(): TransformStream<string, string> {
  let buffered = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const l of lines) if (l !== "") controller.enqueue(l);
    },
    flush(controller) {
      if (buffered !== "") controller.enqueue(buffered);
    },
  });
}

/**
 * Section (a): saturated throughput (see bench/saturated.ts).
 *
 * @example
 * ```ts
 * import { runSaturated } from "./live.ts";
 * // await runSaturated({ quick: true, long: false, log: console.error });
 * ```
 */
export function runSaturated(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("a", ctx);
}

/**
 * Section (b): latency at light load (see bench/saturated.ts).
 *
 * @example
 * ```ts
 * import { runLightLoad } from "./live.ts";
 * // await runLightLoad({ quick: true, long: false, log: console.error });
 * ```
 */
export function runLightLoad(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("b", ctx);
}

/**
 * Section (f): RSS over a run at full load (see bench/memory.ts).
 *
 * @example
 * ```ts
 * import { runMemory } from "./live.ts";
 * // await runMemory({ quick: true, long: false, log: console.error });
 * ```
 */
export function runMemory(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("f", ctx);
}

/**
 * Section (g): writes under an HTTP read flood (see bench/flood.ts).
 *
 * @example
 * ```ts
 * import { runFlood } from "./live.ts";
 * // await runFlood({ quick: true, long: false, log: console.error });
 * ```
 */
export function runFlood(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("g", ctx);
}

/**
 * Section (h): single-key writes from 200 concurrent clients (see bench/puts.ts).
 *
 * @example
 * ```ts
 * import { runPuts } from "./live.ts";
 * // await runPuts({ quick: true, long: false, log: console.error });
 * ```
 */
export function runPuts(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("h", ctx);
}

/**
 * Section (i): committed Nodes/s with 1 of 4 replicas down, with and without leader reputation
 * (see bench/reputation.ts).
 *
 * @example
 * ```ts
 * import { runReputation } from "./live.ts";
 * // await runReputation({ quick: true, long: false, log: console.error });
 * ```
 */
export function runReputation(ctx: LiveContext): Promise<SectionResult> {
  return runLiveSection("i", ctx);
}
