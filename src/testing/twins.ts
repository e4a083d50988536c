/**
 * Twins scenarios (Bano, Sonnino, Chursin, Perelman, Li, Ching, Malkhi: "Twins: BFT Systems Made
 * Robust", 2021). Validator 0 runs twice with one key (two honest Engines, endpoints 0 and 1),
 * so equivocation and forgotten locks appear without any attack code. Each round (view) has its
 * own leader and its own network partition; after the last round the network is whole, and
 * liveness must return.
 *
 * The scenario space for R rounds is (partitions x leaders)^R; a seed picks one scenario
 * uniformly, so sampling by seed covers the space without enumerating it in memory.
 *
 * @module
 */
import { Random } from "./random.ts";
import { quietFaults } from "./scenario.ts";
import type { SimChange, SimOptions } from "./sim.ts";

/**
 * Options of {@link twinsScenario}.
 *
 * @example
 * ```ts
 * import { type TwinsOptions, twinsScenario } from "./twins.ts";
 * import { runSimulation } from "./sim.ts";
 * const options: TwinsOptions = { rounds: 6 };
 * const report = await runSimulation(twinsScenario(7, options));
 * console.log(report.safetyViolations); // []
 * ```
 */
export interface TwinsOptions {
  /** Rounds (views) with chosen leaders and partitions. Default 8. */
  readonly rounds?: number;
  /**
   * Validator-set changes inside the rounds (SPECIFICATION.md 3.4): a fifth validator (endpoint
   * 5, a follower until it joins, placed in a random group of each round's partition) is added,
   * and an honest validator is then removed or re-weighed, at random heights. Default false.
   */
  readonly reconfigure?: boolean;
}

/** Endpoints of a Twins run: validator 0 twice, then validators 1, 2, 3. */
const ENDPOINTS = 5;
const VALIDATORS = 4;
/** The partitions end here (virtual ms): long enough for the chosen rounds to play out. */
const HEAL_AT_MS = 4000;

/**
 * All partitions of the 5 endpoints into at most 3 non-empty groups that leave at least one
 * group able to form a quorum with the twin's help, plus the whole network. Computed once.
 */
function partitions(): number[][][] {
  const out: number[][][] = [];
  const seen = new Set<string>();
  // Assign each endpoint a group label 0..2 (restricted growth strings avoid duplicates).
  const rec = (i: number, labels: number[], maxLabel: number) => {
    if (i === ENDPOINTS) {
      const groups: number[][] = [];
      labels.forEach((g, e) => (groups[g] ??= []).push(e));
      const key = JSON.stringify(groups);
      if (!seen.has(key)) {
        seen.add(key);
        out.push(groups);
      }
      return;
    }
    for (let g = 0; g <= Math.min(maxLabel + 1, 2); g++) {
      rec(i + 1, [...labels, g], Math.max(maxLabel, g));
    }
  };
  rec(0, [], -1);
  return out;
}

const PARTITIONS = partitions();

/** How many (partition, leader) choices each round has. */
export const TWINS_CHOICES_PER_ROUND: number = PARTITIONS.length * VALIDATORS;

/** The partition with the spare (endpoint 5) added to one of its groups. */
function withSpare(rng: Random, groups: readonly number[][]): number[][] {
  const g = rng.int(groups.length);
  return groups.map((group, i) => i === g ? [...group, ENDPOINTS] : [...group]);
}

/**
 * Add validator 4 early (heights 1-4), then, most of the time, remove or re-weigh an honest
 * validator: the twin (validator 0, power 1) stays below 1/3 of every set.
 */
function twinsChanges(rng: Random): SimChange[] {
  const add: SimChange = { atHeight: rng.range(1, 4), updates: [{ validator: 4, power: 1 }] };
  const victim = 1 + rng.int(3);
  const second: SimChange = {
    atHeight: add.atHeight + rng.range(1, 6),
    updates: [{ validator: victim, power: rng.chance(0.5) ? 0 : 2 }],
  };
  return rng.chance(0.3) ? [add] : [add, second];
}

/**
 * One Twins scenario, chosen by `seed`.
 *
 * @example
 * ```ts
 * import { twinsScenario } from "./twins.ts";
 * const options = twinsScenario(1, { rounds: 6 });
 * ```
 */
export function twinsScenario(seed: number, options: TwinsOptions = {}): SimOptions {
  const rounds = options.rounds ?? 8;
  const rng = new Random(seed ^ 0x7a115);
  const viewPartitions: number[][][] = [];
  const leaders: number[] = [];
  for (let r = 0; r < rounds; r++) {
    viewPartitions.push(PARTITIONS[rng.int(PARTITIONS.length)]!);
    leaders.push(rng.int(VALIDATORS));
  }
  const reconfigure = options.reconfigure ?? false;
  return {
    seed,
    powers: reconfigure ? [1, 1, 1, 1, 1] : [1, 1, 1, 1],
    behaviours: reconfigure
      ? ["twin", "honest", "honest", "honest", "honest"]
      : ["twin", "honest", "honest", "honest"],
    viewPartitions: reconfigure ? viewPartitions.map((p) => withSpare(rng, p)) : viewPartitions,
    leaders,
    ...(reconfigure ? { genesisValidators: VALIDATORS, changes: twinsChanges(rng) } : {}),
    faults: { ...quietFaults(HEAL_AT_MS), healedDelayMaxMs: 10 },
    livenessWindowMs: 60_000,
    livenessCommits: 3,
  };
}
