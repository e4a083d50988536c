/**
 * `deno task sim --seeds N [--replicas N] [--powers 1,1,2] [--seed S] [--ed25519] [--trace]`
 *
 * Runs N seeded simulations with mixed faults (Byzantine validators below 1/3 of the power,
 * drops, duplicates, delays, partitions, crashes, power losses), prints one line per failing
 * seed (enough to replay it with `--seed S --seeds 1`), and ends with
 * `N runs, V safety violations, L liveness failures`. Exits 1 if V or L is not 0, 2 on bad flags.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { describeScenario, mixedScenario } from "./scenario.ts";
import { runSimulation } from "./sim.ts";

function fail(message: string): never {
  console.error(`sim: ${message}`);
  Deno.exit(2);
}

function positiveInt(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    fail(`--${name} must be a positive integer, got "${value}"`);
  }
  return Number(value);
}

let args;
try {
  args = parseArgs({
    args: Deno.args,
    options: {
      seeds: { type: "string" },
      replicas: { type: "string" },
      powers: { type: "string" },
      seed: { type: "string" },
      ed25519: { type: "boolean" },
      trace: { type: "boolean" },
      "no-byzantine": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}

const seeds = positiveInt(args.seeds, "seeds", 100);
const first = args.seed === undefined ? 1 : positiveInt(args.seed, "seed", 1);
let powers: number[];
if (args.powers !== undefined) {
  if (args.replicas !== undefined) fail("give --replicas or --powers, not both");
  powers = args.powers.split(",").map((p) => positiveInt(p.trim(), "powers", 1));
  if (powers.length < 1) fail("--powers needs at least one power");
} else {
  powers = Array(positiveInt(args.replicas, "replicas", 4)).fill(1);
}
if (powers.length > 64) fail("at most 64 replicas in the simulator CLI");

const started = performance.now();
let safety = 0;
let liveness = 0;
for (let seed = first; seed < first + seeds; seed++) {
  const scenario = mixedScenario(seed, { powers, byzantine: !args["no-byzantine"] });
  const report = await runSimulation({
    ...scenario,
    signatures: args.ed25519 ? "ed25519" : "fast",
    trace: args.trace ? (line) => console.log(line) : undefined,
  });
  safety += report.safetyViolations.length > 0 ? 1 : 0;
  liveness += report.livenessFailures.length > 0 ? 1 : 0;
  if (report.safetyViolations.length + report.livenessFailures.length > 0) {
    console.log(
      `FAIL seed=${seed} ${describeScenario(scenario)} trace=${report.traceHash.slice(0, 16)}\n` +
        [...report.safetyViolations, ...report.livenessFailures].map((l) => `  ${l}`).join("\n"),
    );
  } else if (seeds === 1) {
    console.log(
      `ok seed=${seed} ${describeScenario(scenario)} heights=${
        report.committedHeights.join(",")
      } ` +
        `maxView=${report.maxView} trace=${report.traceHash}`,
    );
  }
}
const seconds = (performance.now() - started) / 1000;
console.error(`(${seeds} runs in ${seconds.toFixed(1)} s, ${(seeds / seconds).toFixed(1)} runs/s)`);
console.log(`${seeds} runs, ${safety} safety violations, ${liveness} liveness failures`);
if (safety + liveness > 0) Deno.exit(1);
