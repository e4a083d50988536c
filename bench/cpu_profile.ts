/**
 * Summarises a V8 CPU profile (`deno run --cpu-prof`): the functions with the most self time,
 * and the most inclusive time (time with the function anywhere on the stack).
 *
 * Usage: `deno run --allow-read bench/cpu_profile.ts FILE.cpuprofile [--top 10]`
 *
 * @module
 */
import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** One row of the summary. */
export interface ProfileRow {
  /** `function (file:line)`. */
  readonly name: string;
  /** Self time, ms. */
  readonly selfMs: number;
  /** Self time, share of the profile. */
  readonly selfShare: number;
  /** Inclusive time, ms. */
  readonly totalMs: number;
  /** Inclusive time, share of the profile. */
  readonly totalShare: number;
}

function frameName(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url === "" ? "" : f.url.replace(/^.*\/(src|bench|node_modules|ext)\//, "$1/");
  const fn = f.functionName === "" ? "(anonymous)" : f.functionName;
  return file === "" ? fn : `${fn} (${file}:${f.lineNumber + 1})`;
}

/**
 * Self and inclusive time per function of a profile, sorted by self time.
 *
 * @example
 * ```ts
 * import { summariseProfile } from "./cpu_profile.ts";
 * // summariseProfile(JSON.parse(await Deno.readTextFile("x.cpuprofile"))).slice(0, 10)
 * ```
 */
export function summariseProfile(profile: CpuProfile): ProfileRow[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let all = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    all += dt;
    const leaf = byId.get(id);
    if (leaf === undefined) return;
    const leafName = frameName(leaf);
    self.set(leafName, (self.get(leafName) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const name = frameName(byId.get(cur)!);
      if (seen.has(name)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + dt);
    }
  });
  return [...total.entries()].map(([name, totalMs]) => {
    const selfMs = self.get(name) ?? 0;
    return { name, selfMs, selfShare: selfMs / all, totalMs, totalShare: totalMs / all };
  }).sort((a, b) => b.selfMs - a.selfMs);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`.padStart(6);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { top: { type: "string", default: "10" } },
    allowPositionals: true,
  });
  const top = Number(values.top);
  for (const file of positionals) {
    const rows = summariseProfile(JSON.parse(await Deno.readTextFile(file)) as CpuProfile);
    console.log(`${file}\n\nself time:`);
    for (const r of rows.slice(0, top)) console.log(`${pct(r.selfShare)}  ${r.name}`);
    console.log("\ninclusive time (program frames):");
    const inclusive = rows.filter((r) => /\((src|bench)\//.test(r.name))
      .sort((a, b) => b.totalMs - a.totalMs);
    for (const r of inclusive.slice(0, top)) console.log(`${pct(r.totalShare)}  ${r.name}`);
  }
}

if (import.meta.main) await main();
