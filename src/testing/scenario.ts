/**
 * Seeded random fault plans ("mixed faults") for the simulator CLI and tests.
 *
 * @module
 */
import { Random } from "./random.ts";
import type { Behaviour, CrashEvent, PartitionWindow, SimChange, SimOptions } from "./sim.ts";

/** Byzantine behaviours the mixed plans choose from. */
export const BYZANTINE_BEHAVIOURS: readonly Behaviour[] = [
  "silent",
  "equivocator",
  "double-voter",
  "stale",
  "future",
  "forker",
  "forger",
  "twin",
];

/**
 * Options of {@link mixedScenario}.
 *
 * @example
 * ```ts
 * import { mixedScenario, type ScenarioOptions } from "./scenario.ts";
 * import { runSimulation } from "./sim.ts";
 * const options: ScenarioOptions = { powers: [1, 1, 2, 3], byzantine: true };
 * const report = await runSimulation(mixedScenario(42, options));
 * console.log(report.safetyViolations.length); // 0
 * ```
 */
export interface ScenarioOptions {
  /** Voting powers; default four validators of power 1. */
  readonly powers?: readonly number[];
  /** Allow Byzantine validators (always below 1/3 of the power). Default true. */
  readonly byzantine?: boolean;
  /**
   * Validator-set changes during the run (SPECIFICATION.md 3.4): two spare validators start as
   * followers; one to three changes add, remove, re-weigh or swap validators at random heights,
   * while the faults go on. Byzantine power stays below 1/3 of every set. Default false.
   */
  readonly reconfigure?: boolean;
}

/** Spare validators (followers that may join) in a reconfiguring run. */
const SPARES = 2;

/**
 * One to three random validator-set changes over `powers` (the first `genesis` form the first
 * set), each keeping the Byzantine power below 1/3 of the set it makes.
 *
 * @example
 * ```ts
 * import { Random } from "./random.ts";
 * import { randomChanges } from "./scenario.ts";
 * randomChanges(new Random(1), [1, 1, 1, 1, 1], 4, new Set([0]));
 * ```
 */
export function randomChanges(
  rng: Random,
  powers: readonly number[],
  genesis: number,
  byzantine: ReadonlySet<number>,
): SimChange[] {
  const set = new Map<number, number>(powers.slice(0, genesis).map((p, i) => [i, p]));
  const changes: SimChange[] = [];
  let atHeight = rng.range(2, 10);
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const members = [...set.keys()];
    const spares = powers.map((_, v) => v).filter((v) => !set.has(v));
    const updates: { validator: number; power: number }[] = [];
    const kind = rng.pick(["add", "remove", "power", "swap"] as const);
    if ((kind === "add" || kind === "swap") && spares.length > 0) {
      updates.push({ validator: rng.pick(spares), power: rng.range(1, 2) });
    }
    if ((kind === "remove" || kind === "swap") && members.length > 1) {
      updates.push({ validator: rng.pick(members), power: 0 });
    }
    if (kind === "power") updates.push({ validator: rng.pick(members), power: rng.range(1, 3) });
    const next = new Map(set);
    for (const u of updates) {
      u.power === 0 ? next.delete(u.validator) : next.set(u.validator, u.power);
    }
    const total = [...next.values()].reduce((a, b) => a + b, 0);
    const byz = [...next].filter(([v]) => byzantine.has(v)).reduce((a, [, p]) => a + p, 0);
    if (updates.length === 0 || next.size === 0 || byz * 3 >= total) continue;
    changes.push({ atHeight, updates });
    for (const [v, p] of [...set]) if (!next.has(v)) set.delete(v), void p;
    for (const [v, p] of next) set.set(v, p);
    atHeight += rng.range(1, 12);
  }
  return changes;
}

/**
 * A random but reproducible run: Byzantine validators holding less than 1/3 of the power,
 * drops, duplicates, delays, partitions, crashes (with restarts) and power losses around writes,
 * all of which stop at `healAt`.
 *
 * @example
 * ```ts
 * import { mixedScenario } from "./scenario.ts";
 * const options = mixedScenario(7, { powers: [1, 1, 1, 1] });
 * ```
 */
export function mixedScenario(seed: number, options: ScenarioOptions = {}): SimOptions {
  const rng = new Random(seed ^ 0x5eed5eed);
  const genesisPowers = options.powers ?? [1, 1, 1, 1];
  const reconfigure = options.reconfigure ?? false;
  const powers = reconfigure ? [...genesisPowers, ...Array(SPARES).fill(1)] : genesisPowers;
  const total = genesisPowers.reduce((a, b) => a + b, 0);
  const behaviours: Behaviour[] = powers.map(() => "honest");
  if (options.byzantine ?? true) {
    let byzPower = 0;
    for (const v of rng.shuffle(genesisPowers.map((_, i) => i))) {
      if ((byzPower + powers[v]!) * 3 >= total || rng.chance(0.3)) continue;
      byzPower += powers[v]!;
      behaviours[v] = rng.pick(BYZANTINE_BEHAVIOURS);
    }
  }
  const endpoints = behaviours.reduce((n, b) => n + (b === "twin" ? 2 : 1), 0);
  const honestEndpoints: number[] = [];
  let id = 0;
  for (const b of behaviours) {
    if (b === "honest") honestEndpoints.push(id);
    id += b === "twin" ? 2 : 1;
  }
  const healAt = rng.range(1500, 6000);
  const partitions: PartitionWindow[] = [];
  for (let i = rng.int(4); i > 0; i--) {
    const start = rng.int(healAt);
    const end = Math.min(healAt, start + rng.range(100, 3000));
    const groupsCount = rng.range(2, 3);
    const groups: number[][] = Array.from({ length: groupsCount }, () => []);
    for (let e = 0; e < endpoints; e++) groups[rng.int(groupsCount)]!.push(e);
    partitions.push({ start, end, groups });
  }
  const crashes: CrashEvent[] = [];
  for (let i = rng.int(3); i > 0; i--) {
    const endpoint = rng.pick(honestEndpoints);
    const at = rng.int(healAt);
    crashes.push({ endpoint, at, restartAt: Math.min(healAt, at + rng.range(20, 2000)) });
  }
  const byzantine = new Set(behaviours.flatMap((b, v) => b === "honest" ? [] : [v]));
  const reconfiguration = reconfigure
    ? {
      genesisValidators: genesisPowers.length,
      changes: randomChanges(rng, powers, genesisPowers.length, byzantine),
    }
    : {};
  return {
    seed,
    powers,
    behaviours,
    ...reconfiguration,
    faults: {
      dropRate: rng.pick([0, 0.01, 0.05, 0.1, 0.3]),
      duplicateRate: rng.pick([0, 0.02, 0.2]),
      delayMinMs: 1,
      delayMaxMs: rng.pick([5, 20, 100, 400]),
      partitions,
      crashes,
      crashOnWriteRate: rng.pick([0, 0, 0.002, 0.02]),
      healAt,
    },
  };
}

/**
 * A forker (validator 0, a quarter of the power) that leads about half of the first rounds, with
 * random partitions by view: the adversary that needs the lock check (SPECIFICATION.md 5.1 step
 * 2) to be stopped. Leaders and partitions are chosen per round, as in Twins.
 *
 * @example
 * ```ts
 * import { forkerScenario } from "./scenario.ts";
 * const options = forkerScenario(78);
 * ```
 */
export function forkerScenario(seed: number, rounds = 12): SimOptions {
  const rng = new Random(seed);
  const leaders = Array.from({ length: rounds }, () => rng.chance(0.5) ? 0 : 1 + rng.int(3));
  const viewPartitions = Array.from({ length: rounds }, () => {
    if (rng.chance(0.7)) return null;
    const groups: number[][] = [[], []];
    for (let e = 0; e < 4; e++) groups[rng.int(2)]!.push(e);
    return groups;
  });
  return {
    seed,
    powers: [1, 1, 1, 1],
    behaviours: ["forker", "honest", "honest", "honest"],
    leaders,
    viewPartitions,
    faults: quietFaults(5000),
  };
}

/**
 * An equivocating leader (validator 0) while honest replicas crash and restart twenty times in
 * three seconds: the adversary that needs the last voted view to survive restarts
 * (SPECIFICATION.md 6.2 step 1).
 *
 * @example
 * ```ts
 * import { crashStormScenario } from "./scenario.ts";
 * const options = crashStormScenario(2);
 * ```
 */
export function crashStormScenario(seed: number): SimOptions {
  const rng = new Random(seed);
  const crashes: CrashEvent[] = Array.from({ length: 20 }, () => {
    const at = rng.int(3000);
    return { endpoint: 1 + rng.int(3), at, restartAt: at + rng.range(5, 60) };
  });
  return {
    seed,
    powers: [1, 1, 1, 1],
    behaviours: ["equivocator", "honest", "honest", "honest"],
    faults: { ...quietFaults(3000), delayMaxMs: 30, crashes },
  };
}

/**
 * A forger (validator 0) that, as leader, forges a 3-chain whose QCs repeat its own signature:
 * the adversary that needs each signer counted once (SPECIFICATION.md 3.1 step 2).
 *
 * @example
 * ```ts
 * import { forgerScenario } from "./scenario.ts";
 * const options = forgerScenario(1);
 * ```
 */
export function forgerScenario(seed: number): SimOptions {
  return {
    seed,
    powers: [1, 1, 1, 1],
    behaviours: ["forger", "honest", "honest", "honest"],
    faults: { ...quietFaults(3000), delayMaxMs: 30 },
  };
}

/**
 * A fault plan with nothing but small delays (1-10 ms) until `healAt`: the base of scripted and
 * Twins scenarios, which bring their own adversity.
 *
 * @example
 * ```ts
 * import { quietFaults } from "./scenario.ts";
 * const faults = { ...quietFaults(3000), dropRate: 0.1 };
 * ```
 */
export function quietFaults(healAt: number): SimOptions["faults"] {
  return {
    dropRate: 0,
    duplicateRate: 0,
    delayMinMs: 1,
    delayMaxMs: 10,
    partitions: [],
    crashes: [],
    crashOnWriteRate: 0,
    healAt,
  };
}

/**
 * A one-line description of a scenario, enough to replay it with the CLI.
 *
 * @example
 * ```ts
 * import { describeScenario, mixedScenario } from "./scenario.ts";
 * describeScenario(mixedScenario(7));
 * ```
 */
export function describeScenario(o: SimOptions): string {
  const f = o.faults;
  const byz = (o.behaviours ?? []).map((b, i) => b === "honest" ? "" : `${i}:${b}`).filter(
    Boolean,
  );
  const changes = o.changes === undefined
    ? ""
    : ` changes=[${
      o.changes.map((c) => `h${c.atHeight}:${c.updates.map((u) => `${u.validator}=${u.power}`)}`)
        .join(" ")
    }]`;
  return `powers=${o.powers.join(",")}${changes} byzantine=[${byz.join(" ")}] drop=${f.dropRate} ` +
    `dup=${f.duplicateRate} delay=${f.delayMinMs}-${f.delayMaxMs}ms partitions=${f.partitions.length} ` +
    `crashes=${f.crashes.length} crashOnWrite=${f.crashOnWriteRate} healAt=${f.healAt}ms`;
}
