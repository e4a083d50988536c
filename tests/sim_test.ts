/**
 * The deterministic simulator: bounded runs of the real core under mixed faults, determinism,
 * and the Byzantine-power boundary. `deno task sim --seeds 1000` runs the long version.
 */
import assert from "node:assert/strict";
import type { Application } from "../src/app.ts";
import { describeScenario, mixedScenario } from "../src/testing/scenario.ts";
import type { SimOptions } from "../src/testing/sim.ts";
import { runSimulation } from "../src/testing/sim.ts";
import { twinsScenario } from "../src/testing/twins.ts";

const QUIET: SimOptions["faults"] = {
  dropRate: 0,
  duplicateRate: 0,
  delayMinMs: 1,
  delayMaxMs: 20,
  partitions: [],
  crashes: [],
  crashOnWriteRate: 0,
  healAt: 2000,
};

async function assertClean(options: SimOptions): Promise<void> {
  const r = await runSimulation(options);
  const what = `seed ${options.seed}: ${describeScenario(options)}`;
  assert.deepEqual(r.safetyViolations, [], what);
  assert.deepEqual(r.livenessFailures, [], what);
}

Deno.test("4 equal replicas, no faults: every replica commits the same chain, one Node per view", async () => {
  const r = await runSimulation({ seed: 1, powers: [1, 1, 1, 1], faults: QUIET });
  assert.deepEqual(r.safetyViolations, []);
  // The run stops as soon as every replica has committed enough: one may be a Node behind.
  const heights = r.committedHeights;
  assert.ok(Math.max(...heights) - Math.min(...heights) <= 1, `heights ${heights}`);
  assert.ok(r.committedHeights[0]! > 50, `only ${r.committedHeights[0]} commits`);
  // Responsive: with no faults no view times out, so commits keep pace with views.
  assert.ok(r.maxView - r.committedHeights[0]! <= 5, `view ${r.maxView}`);
});

Deno.test("the same seed gives the same run (trace hash); another seed another run", async () => {
  const a = await runSimulation(mixedScenario(11));
  const b = await runSimulation(mixedScenario(11));
  const c = await runSimulation(mixedScenario(12));
  assert.equal(a.traceHash, b.traceHash);
  assert.deepEqual(a.committedHeights, b.committedHeights);
  assert.notEqual(a.traceHash, c.traceHash);
});

Deno.test("mixed faults, 4 equal replicas, Byzantine power below 1/3: 60 seeds safe and live", async () => {
  for (let seed = 1; seed <= 60; seed++) await assertClean(mixedScenario(seed));
});

Deno.test("mixed faults, 7 equal replicas: 15 seeds safe and live", async () => {
  for (let seed = 1; seed <= 15; seed++) {
    await assertClean(mixedScenario(seed, { powers: [1, 1, 1, 1, 1, 1, 1] }));
  }
});

Deno.test("mixed faults, weighted powers 1,1,1,2,5: 30 seeds safe and live", async () => {
  for (let seed = 1; seed <= 30; seed++) {
    await assertClean(mixedScenario(seed, { powers: [1, 1, 1, 2, 5] }));
  }
});

Deno.test("Twins (one validator run twice): 100 scenarios safe and live", async () => {
  for (let seed = 1; seed <= 100; seed++) await assertClean(twinsScenario(seed));
});

Deno.test("Byzantine power at 1/3 or more (two twins of four, split): the checker finds a violation", async () => {
  const r = await runSimulation({
    seed: 1,
    powers: [1, 1, 1, 1],
    behaviours: ["twin", "twin", "honest", "honest"],
    faults: {
      ...QUIET,
      // Endpoints: 0,1 = validator 0; 2,3 = validator 1; 4 = validator 2; 5 = validator 3.
      partitions: [{ start: 0, end: 3000, groups: [[0, 2, 4], [1, 3, 5]] }],
      healAt: 3000,
    },
  });
  assert.match(r.safetyViolations[0] ?? "", /conflicting commits/);
});

Deno.test("liveness checker: with two of four validators silent nothing commits, and the checker says so", async () => {
  const r = await runSimulation({
    seed: 1,
    powers: [1, 1, 1, 1],
    behaviours: ["silent", "silent", "honest", "honest"],
    faults: QUIET,
  });
  assert.deepEqual(r.safetyViolations, []);
  assert.match(r.livenessFailures[0] ?? "", /committed 0 of/);
});

Deno.test("the same split with one twin (power 1/4) stays safe", async () => {
  await assertClean({
    seed: 1,
    powers: [1, 1, 1, 1],
    behaviours: ["twin", "honest", "honest", "honest"],
    faults: {
      ...QUIET,
      partitions: [{ start: 0, end: 3000, groups: [[0, 2, 3], [1, 4]] }],
      healAt: 3000,
    },
  });
});

Deno.test("weighted boundary, powers 1,1,1,2,5: twins holding 3 of 10 are safe, 5 of 10 are not", async () => {
  // Each twin runs on both sides of a partition; the honest validators are split between them.
  const split = (twins: readonly number[], honestSides: readonly number[]): SimOptions => {
    const behaviours = [0, 1, 2, 3, 4].map((v) =>
      twins.includes(v) ? "twin" : "honest"
    ) as SimOptions["behaviours"];
    const groups: number[][] = [[], []];
    let id = 0;
    let h = 0;
    behaviours!.forEach((b) => {
      if (b === "twin") {
        groups[0]!.push(id++);
        groups[1]!.push(id++);
      } else groups[honestSides[h++]!]!.push(id++);
    });
    return {
      seed: 3,
      powers: [1, 1, 1, 2, 5],
      behaviours,
      faults: { ...QUIET, partitions: [{ start: 0, end: 3000, groups }], healAt: 3000 },
    };
  };
  // 3 of 10 (< 1/3): honest 2 and 5 on different sides; only the side with 5 has a quorum (7).
  const low = await runSimulation(split([0, 1, 2], [0, 1]));
  assert.deepEqual(low.safetyViolations, [], "power 3 of 10 is safe");
  // 5 of 10 (>= 1/3): honest 1+1 | 1+2; both sides reach 7.
  const high = await runSimulation(split([4], [0, 0, 1, 1]));
  assert.match(high.safetyViolations[0] ?? "", /conflicting commits/, "power 5 of 10 is not");
});

Deno.test("7 equal replicas, three twins (3/7, above 1/3) split 2|2: the checker finds a violation", async () => {
  const r = await runSimulation({
    seed: 2,
    powers: [1, 1, 1, 1, 1, 1, 1],
    behaviours: ["twin", "twin", "twin", "honest", "honest", "honest", "honest"],
    faults: {
      ...QUIET,
      // Endpoints 0-5 are the twins' copies (two each), 6-9 the honest validators.
      partitions: [{ start: 0, end: 3000, groups: [[0, 2, 4, 6, 7], [1, 3, 5, 8, 9]] }],
      healAt: 3000,
    },
  });
  assert.match(r.safetyViolations[0] ?? "", /conflicting commits/);
});

Deno.test("users can simulate their own Application: every replica ends with the same state", async () => {
  const chains = new Map<number, number[]>();
  const app = (endpoint: number): Application => ({
    produceCommand: ({ view }) => ({ command: new Uint8Array([view % 5]) }),
    validateNode: ({ node }) =>
      node.command.length === 1
        ? { ok: true, updates: [] }
        : { ok: false, reason: "one byte commands only" },
    onCommit: ({ node }) => {
      chains.set(endpoint, [...(chains.get(endpoint) ?? []), node.command[0]!]);
    },
  });
  const r = await runSimulation({ seed: 5, powers: [1, 1, 1, 1], faults: QUIET, app });
  assert.deepEqual(r.safetyViolations, []);
  // The app saw the same commands in the same order everywhere (runs stop at slightly different
  // heights, so compare the common prefix).
  assert.equal(chains.size, 4, "every endpoint's Application saw commits");
  const all = [...chains.values()];
  const shortest = Math.min(...all.map((c) => c.length));
  assert.ok(shortest > 20, `only ${shortest} commits`);
  for (const c of all) assert.deepEqual(c.slice(0, shortest), all[0]!.slice(0, shortest));
});

Deno.test("the 1/3 boundary with total power 100: a twin holding 32 is safe, one holding 34 is not", async () => {
  // Validator 0 is the twin (endpoints 0 and 1) and leads the first 60 views, as Twins may
  // choose; validators 1 and 2 are honest (endpoints 2, 3), one on each side of the partition.
  // A quorum is 67: 34 + 33 reaches it on both sides, 32 + 34 on neither.
  const run = (powers: number[]) =>
    runSimulation({
      seed: 4,
      powers,
      behaviours: ["twin", "honest", "honest"],
      leaders: Array(60).fill(0),
      faults: {
        ...QUIET,
        partitions: [{ start: 0, end: 3000, groups: [[0, 2], [1, 3]] }],
        healAt: 3000,
      },
      livenessWindowMs: 10_000,
    });
  const under = await run([32, 34, 34]);
  assert.deepEqual(under.safetyViolations, [], "32 % is safe");
  const over = await run([34, 33, 33]);
  assert.match(over.safetyViolations[0] ?? "", /conflicting commits/, "34 % is not");
});
