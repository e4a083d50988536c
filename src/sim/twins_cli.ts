/**
 * `deno task twins --scenarios N [--seed S] [--rounds R] [--adversary twin|forker]`
 *
 * Runs N Twins scenarios (one validator of four runs twice with one key; each round has its own
 * leader and partition; see `twins.ts`), or, with `--adversary forker`, the same round structure
 * with a forking Byzantine leader. Prints a line per failing scenario (replay it with
 * `--seed S --scenarios 1`) and ends with `N scenarios, V safety violations, L liveness
 * failures`. Exits 1 if V > 0 or L > 0, 2 on bad flags.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { forkerScenario } from "./scenario.ts";
import { runSimulation } from "./sim.ts";
import { TWINS_CHOICES_PER_ROUND, twinsScenario } from "./twins.ts";

function fail(message: string): never {
  console.error(`twins: ${message}`);
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
      scenarios: { type: "string" },
      seed: { type: "string" },
      rounds: { type: "string" },
      adversary: { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  }).values;
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}
const count = positiveInt(args.scenarios, "scenarios", 1000);
const first = positiveInt(args.seed, "seed", 1);
const rounds = positiveInt(args.rounds, "rounds", 8);
if (rounds > 64) fail("--rounds must be at most 64");
const adversary = args.adversary ?? "twin";
if (adversary !== "twin" && adversary !== "forker") {
  fail(`--adversary must be twin or forker, got "${adversary}"`);
}

const started = performance.now();
let safety = 0;
let liveness = 0;
for (let seed = first; seed < first + count; seed++) {
  const scenario = adversary === "twin"
    ? twinsScenario(seed, { rounds })
    : forkerScenario(seed, rounds);
  const r = await runSimulation(scenario);
  if (r.safetyViolations.length > 0) safety++;
  if (r.livenessFailures.length > 0) liveness++;
  if (r.safetyViolations.length + r.livenessFailures.length > 0) {
    console.log(
      `FAIL seed=${seed} rounds=${rounds} adversary=${adversary} leaders=${
        scenario.leaders?.join(",")
      } trace=${r.traceHash.slice(0, 16)}\n` +
        [...r.safetyViolations, ...r.livenessFailures].map((l) => `  ${l}`).join("\n"),
    );
  }
}
const seconds = (performance.now() - started) / 1000;
console.error(
  `(${count} scenarios of ${rounds} rounds in ${seconds.toFixed(1)} s, ` +
    `${(count / seconds).toFixed(0)} scenarios/s; ${TWINS_CHOICES_PER_ROUND} choices per round)`,
);
console.log(`${count} scenarios, ${safety} safety violations, ${liveness} liveness failures`);
if (safety + liveness > 0) Deno.exit(1);
