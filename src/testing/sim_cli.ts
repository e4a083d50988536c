/**
 * `deno task sim --seeds N [--replicas N] [--powers 1,1,2] [--seed S] [--ed25519] [--trace]
 * [--reconfigure] [--no-reputation]`
 *
 * Runs N seeded simulations with mixed faults (Byzantine validators below 1/3 of the power,
 * drops, duplicates, delays, partitions, crashes, power losses), prints one line per failing
 * seed (enough to replay it with `--seed S --seeds 1`), and ends with
 * `N runs, V safety violations, L liveness failures`. Exits 1 if V or L is not 0, 2 on bad flags.
 * With `--reconfigure`, two spare validators follow the chain and the validator set changes one
 * to three times during the faults (SPECIFICATION.md 3.4).
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { intFlag, parseFlags, runMain } from "../cli/flags.ts";
import { describeScenario, mixedScenario } from "./scenario.ts";
import { runSimulation } from "./sim.ts";

async function main(): Promise<number> {
  const flags = parseFlags(Deno.args, {
    seeds: { type: "string" },
    replicas: { type: "string" },
    powers: { type: "string" },
    seed: { type: "string" },
    ed25519: { type: "boolean" },
    trace: { type: "boolean" },
    "no-byzantine": { type: "boolean" },
    reconfigure: { type: "boolean" },
    "no-reputation": { type: "boolean" },
  });
  const seeds = intFlag(flags, "seeds", 1, 10_000_000, 100);
  const first = intFlag(flags, "seed", 1, Number.MAX_SAFE_INTEGER, 1);
  let powers: number[];
  if (typeof flags.powers === "string") {
    if (flags.replicas !== undefined) {
      throw new ConfigError("bad-flag", "give --replicas or --powers, not both");
    }
    powers = flags.powers.split(",").map((p) =>
      intFlag({ powers: p.trim() }, "powers", 1, 1_000_000, 1)
    );
  } else {
    powers = Array(intFlag(flags, "replicas", 1, 64, 4)).fill(1);
  }
  if (powers.length > 64) throw new ConfigError("bad-flag", "at most 64 replicas");

  const started = performance.now();
  let safety = 0;
  let liveness = 0;
  let changed = 0;
  let completed = 0;
  for (let seed = first; seed < first + seeds; seed++) {
    const scenario = mixedScenario(seed, {
      powers,
      byzantine: flags["no-byzantine"] !== true,
      reconfigure: flags.reconfigure === true,
    });
    const report = await runSimulation({
      ...scenario,
      signatures: flags.ed25519 === true ? "ed25519" : "fast",
      // Leader reputation (SPECIFICATION.md 3.5) is on unless --no-reputation.
      ...(flags["no-reputation"] === true ? { reputation: null } : {}),
      trace: flags.trace === true ? (line) => console.log(line) : undefined,
    });
    const problems = [...report.safetyViolations, ...report.livenessFailures];
    changed += report.handovers.started;
    completed += report.handovers.completed;
    safety += report.safetyViolations.length > 0 ? 1 : 0;
    liveness += report.livenessFailures.length > 0 ? 1 : 0;
    if (problems.length > 0) {
      console.log(
        `FAIL seed=${seed} ${describeScenario(scenario)} trace=${report.traceHash.slice(0, 16)}\n` +
          problems.map((l) => `  ${l}`).join("\n"),
      );
    } else if (seeds === 1) {
      console.log(
        `ok seed=${seed} ${describeScenario(scenario)} heights=${report.committedHeights} ` +
          `maxView=${report.maxView} handovers=${report.handovers.completed}/` +
          `${report.handovers.started} trace=${report.traceHash}`,
      );
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `(${seeds} runs in ${seconds.toFixed(1)} s, ${(seeds / seconds).toFixed(1)} runs/s; ` +
      `validator-set changes committed ${changed}, handed over ${completed})`,
  );
  console.log(`${seeds} runs, ${safety} safety violations, ${liveness} liveness failures`);
  return safety + liveness > 0 ? 1 : 0;
}

if (import.meta.main) await runMain(main, "sim");
