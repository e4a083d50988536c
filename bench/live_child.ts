/**
 * Runs one of the sections that need replica processes, (a), (b) or (f), and prints its
 * {@link SectionResult} as one JSON line on stdout (progress on stderr). The harness
 * (bench/live.ts) spawns it with `--allow-all`: the sections need the network, which the
 * `bench` task does not grant, and Deno asks for `--allow-all` to read `/proc/PID/status`.
 *
 * Alone (e.g. to profile a replica, or to try other loads):
 *
 * ```
 * deno run -A bench/live_child.ts --section a [--quick] [--cpu-prof DIR] [--timed]
 *   [--plaintext] [--app kv,order] [--sizes 32,128] [--outstanding 1000,4000] [--batch 100] [--clients 2]
 *   [--warmup-s 3] [--window-s 10]
 * deno run -A bench/live_child.ts --section b [--quick] [--timed]
 * deno run -A bench/live_child.ts --section f [--quick | --long]
 * deno run -A bench/live_child.ts --section g [--quick]
 * deno run -A bench/live_child.ts --section i [--quick]
 * ```
 *
 * `--sizes` and `--outstanding` make every combination (sizes outer); given, they replace the
 * mode's cases of (a). `--cpu-prof DIR` runs replica 0 under the V8 profiler; `--timed` runs
 * replica 1 as bench/timed_replica.ts (wall time spent waiting on storage, hooks, signatures).
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { SectionResult } from "./figures.ts";
import { floodSection } from "./flood.ts";
import { putsSection } from "./puts.ts";
import { reputationSection } from "./reputation.ts";
import { memorySection } from "./memory.ts";
import type { BenchApp, LiveOptions, LoadCase } from "./saturated.ts";
import {
  lightLoadOptions,
  lightLoadSection,
  saturatedOptions,
  saturatedSection,
} from "./saturated.ts";

/** Parses the child's flags and runs its section. */
async function main(args: string[]): Promise<SectionResult> {
  const { values } = parseArgs({
    args,
    options: {
      section: { type: "string" },
      quick: { type: "boolean", default: false },
      long: { type: "boolean", default: false },
      "cpu-prof": { type: "string" },
      timed: { type: "boolean", default: false },
      sizes: { type: "string" },
      app: { type: "string" },
      plaintext: { type: "boolean", default: false },
      outstanding: { type: "string" },
      batch: { type: "string" },
      clients: { type: "string" },
      "warmup-s": { type: "string" },
      "window-s": { type: "string" },
    },
    strict: true,
  });
  const log = (line: string): void => console.error(line);
  const quick = values.quick;
  switch (values.section) {
    case "a":
      return await saturatedSection({
        ...overrides(saturatedOptions({ quick, log, cpuProfDir: values["cpu-prof"] }), values),
        timed: values.timed,
        plaintext: values.plaintext,
      });
    case "b":
      return await lightLoadSection({
        ...overrides(lightLoadOptions({ quick, log }), values),
        timed: values.timed,
        plaintext: values.plaintext,
      });
    case "f":
      return await memorySection({ quick, long: values.long, log });
    case "g":
      return await floodSection({ quick, log });
    case "h":
      return await putsSection({ quick, log });
    case "i":
      return await reputationSection({ quick, long: false, log });
    default:
      throw new Error(`--section must be a, b, f, g, h or i: ${values.section}`);
  }
}

function overrides(o: LiveOptions, v: Record<string, string | boolean | undefined>): LiveOptions {
  const list = (s: unknown): number[] | null =>
    typeof s === "string" ? s.split(",").map((x) => positive(x)) : null;
  const sizes = list(v.sizes);
  const outstanding = list(v.outstanding);
  let cases: readonly LoadCase[] = o.cases;
  const apps = typeof v.app === "string" ? v.app.split(",").map(appOf) : null;
  if (sizes !== null || outstanding !== null || apps !== null) {
    const as = apps ?? [...new Set(o.cases.map((c) => c.app ?? "kv"))];
    const ss = sizes ?? [...new Set(o.cases.map((c) => c.size))];
    const os = outstanding ?? [...new Set(o.cases.map((c) => c.outstanding))];
    cases = as.flatMap((app) =>
      ss.flatMap((size) => os.map((n): LoadCase => ({ size, outstanding: n, app })))
    );
  }
  const num = (s: unknown, fallback: number): number =>
    typeof s === "string" ? positive(s) : fallback;
  return {
    ...o,
    cases,
    batch: num(v.batch, o.batch),
    clients: num(v.clients, o.clients),
    warmupMs: typeof v["warmup-s"] === "string" ? Number(v["warmup-s"]) * 1000 : o.warmupMs,
    windowMs: num(v["window-s"], o.windowMs / 1000) * 1000,
  };
}

function appOf(s: string): BenchApp {
  const a = s.trim();
  if (a !== "kv" && a !== "order") throw new Error(`--app must be kv or order: ${s}`);
  return a;
}

function positive(s: string): number {
  const n = Number(s.trim());
  if (!Number.isFinite(n) || n <= 0) throw new Error(`not a positive number: ${s}`);
  return n;
}

if (import.meta.main) {
  const result = await main(Deno.args);
  console.log(JSON.stringify(result));
  // Fetch connections kept alive to the stopped replicas must not hold the process.
  Deno.exit(0);
}
