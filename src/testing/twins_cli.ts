/**
 * `deno task twins --scenarios N [--seed S] [--rounds R] [--adversary twin|forker] [--reconfigure]
 * [--no-reputation]`
 *
 * Runs N Twins scenarios (one validator of four runs twice with one key; each round has its own
 * leader and partition; see `twins.ts`), or, with `--adversary forker`, the same round structure
 * with a forking Byzantine leader. Prints a line per failing scenario (replay it with
 * `--seed S --scenarios 1`) and ends with `N scenarios, V safety violations, L liveness
 * failures`. Exits 1 if V > 0 or L > 0, 2 on bad flags. With `--reconfigure`, a fifth validator
 * joins inside the rounds and an honest one is then removed or re-weighed (SPECIFICATION.md 3.4).
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { intFlag, parseFlags, runMain } from "../cli/flags.ts";
import { forkerScenario } from "./scenario.ts";
import { runSimulation } from "./sim.ts";
import { TWINS_CHOICES_PER_ROUND, twinsScenario } from "./twins.ts";

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args, {
    scenarios: { type: "string" },
    seed: { type: "string" },
    rounds: { type: "string" },
    adversary: { type: "string" },
    reconfigure: { type: "boolean" },
    "no-reputation": { type: "boolean" },
  });
  const count = intFlag(flags, "scenarios", 1, 10_000_000, 1000);
  const first = intFlag(flags, "seed", 1, Number.MAX_SAFE_INTEGER, 1);
  const rounds = intFlag(flags, "rounds", 1, 64, 8);
  const adversary = flags.adversary ?? "twin";
  if (adversary !== "twin" && adversary !== "forker") {
    throw new ConfigError("bad-flag", `--adversary must be twin or forker: "${adversary}"`);
  }

  const started = performance.now();
  let safety = 0;
  let liveness = 0;
  let changed = 0;
  let completed = 0;
  for (let seed = first; seed < first + count; seed++) {
    const scenario = adversary === "twin"
      ? twinsScenario(seed, { rounds, reconfigure: flags.reconfigure === true })
      : forkerScenario(seed, rounds);
    // Leader reputation (SPECIFICATION.md 3.5) is on unless --no-reputation.
    const plain = flags["no-reputation"] === true ? { reputation: null } : {};
    const r = await runSimulation({ ...scenario, ...plain });
    const problems = [...r.safetyViolations, ...r.livenessFailures];
    changed += r.handovers.started;
    completed += r.handovers.completed;
    if (r.safetyViolations.length > 0) safety++;
    if (r.livenessFailures.length > 0) liveness++;
    if (problems.length > 0) {
      console.log(
        `FAIL seed=${seed} rounds=${rounds} adversary=${adversary} ` +
          `leaders=${scenario.leaders?.join(",")} trace=${r.traceHash.slice(0, 16)}\n` +
          problems.map((l) => `  ${l}`).join("\n"),
      );
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `(${count} scenarios of ${rounds} rounds in ${seconds.toFixed(1)} s, ` +
      `${
        (count / seconds).toFixed(0)
      } scenarios/s; ${TWINS_CHOICES_PER_ROUND} choices per round; ` +
      `validator-set changes committed ${changed}, handed over ${completed})`,
  );
  console.log(`${count} scenarios, ${safety} safety violations, ${liveness} liveness failures`);
  return safety + liveness > 0 ? 1 : 0;
}

if (import.meta.main) await runMain(main, "twins");
