/**
 * The simulator's checkers are not vacuous: each planted bug (a test-only switch) is caught, and
 * the same runs without the bug are clean. Every run is deterministic: a seed here is a replayable
 * bug report.
 */
import assert from "node:assert/strict";
import { plantedSafetyBugs } from "../src/consensus/safety.ts";
import { plantedReconfigBugs } from "../src/consensus/reconfig.ts";
import {
  crashStormScenario,
  forgerScenario,
  forkerScenario,
  quietFaults,
} from "../src/testing/scenario.ts";
import type { SimOptions } from "../src/testing/sim.ts";
import { runSimulation } from "../src/testing/sim.ts";
import { plantedBugs } from "../src/validators.ts";
import { GAP_ATTACK_LEADERS, gapAttacker } from "./support/gap_attack.ts";

async function violations(
  scenarios: Iterable<SimOptions>,
): Promise<{ seeds: number[]; first: string | undefined }> {
  const seeds: number[] = [];
  let first: string | undefined;
  for (const o of scenarios) {
    const r = await runSimulation(o);
    if (r.safetyViolations.length > 0) {
      seeds.push(o.seed);
      first ??= r.safetyViolations[0];
    }
  }
  return { seeds, first };
}

function* seeds<T>(count: number, make: (seed: number) => T): Generator<T> {
  for (let s = 1; s <= count; s++) yield make(s);
}

/** Runs `body` with a bug planted, and always removes it again. */
async function withBug(plant: () => void, body: () => Promise<void>): Promise<void> {
  plant();
  try {
    await body();
  } finally {
    plantedSafetyBugs.skipLockCheck = false;
    plantedSafetyBugs.commitWithoutDirectParents = false;
    plantedSafetyBugs.forgetLastVotedView = false;
    plantedSafetyBugs.skipStateRootCheck = false;
    plantedSafetyBugs.proposeWrongStateRoot = false;
    plantedBugs.countSignerTwice = false;
    plantedReconfigBugs.activateBeforeCommit = false;
    plantedReconfigBugs.countOldSetVotes = false;
  }
}

/**
 * Validators 0-3 hand over to 0, 1, 2, 4, 5, 6 (three join, one leaves) at height 3, under 1-10 ms
 * delays (until 800 ms): a quorum of the new set (five of six) need not hold a quorum of the old one (three of
 * four), so a Node certified by the wrong set shows in the committed chain's QCs.
 */
function handoverScenario(seed: number): SimOptions {
  return {
    seed,
    powers: [1, 1, 1, 1, 1, 1, 1],
    genesisValidators: 4,
    changes: [{
      atHeight: 3,
      updates: [
        { validator: 3, power: 0 },
        { validator: 4, power: 1 },
        { validator: 5, power: 1 },
        { validator: 6, power: 1 },
      ],
    }],
    faults: { ...quietFaults(800), delayMaxMs: 10 },
  };
}

Deno.test("planted bug: counting a signer twice lets a forger's QCs through; caught in every forger run", async () => {
  const runs = () => seeds(10, forgerScenario);
  assert.deepEqual((await violations(runs())).seeds, [], "clean without the bug");
  await withBug(() => (plantedBugs.countSignerTwice = true), async () => {
    const found = await violations(runs());
    assert.ok(found.seeds.length >= 8, `caught in ${found.seeds.length} of 10 runs`);
    assert.match(found.first!, /conflicting commits/);
  });
});

Deno.test("planted bug: forgetting the last voted view after a restart makes an honest replica vote twice", async () => {
  const runs = () => seeds(10, crashStormScenario);
  assert.deepEqual((await violations(runs())).seeds, [], "clean without the bug");
  await withBug(() => (plantedSafetyBugs.forgetLastVotedView = true), async () => {
    const found = await violations(runs());
    assert.ok(found.seeds.length >= 5, `caught in ${found.seeds.length} of 10 runs`);
    assert.match(found.first!, /voted twice in view/);
  });
});

Deno.test("planted bug: skipping the lock check lets a forking leader split the committed chain", async () => {
  // Random leaders and partitions per round, as in Twins; 3 of the first 150 seeds find it.
  const runs = () => seeds(150, (s) => forkerScenario(s));
  assert.deepEqual((await violations(runs())).seeds, [], "clean without the bug");
  await withBug(() => (plantedSafetyBugs.skipLockCheck = true), async () => {
    const found = await violations(runs());
    assert.ok(found.seeds.length >= 1, "caught at least once");
    assert.match(found.first!, /conflicting commits/);
  });
});

Deno.test("planted bug: committing on a 3-chain with a view gap is exploited by a scripted leader", async () => {
  const run = () =>
    runSimulation({
      seed: 1,
      powers: [1, 1, 1, 1],
      behaviours: ["scripted", "honest", "honest", "honest"],
      adversaries: { 0: gapAttacker() },
      leaders: GAP_ATTACK_LEADERS,
      faults: quietFaults(3000),
    });
  const clean = await run();
  assert.deepEqual(clean.safetyViolations, [], "clean without the bug");
  assert.deepEqual(clean.livenessFailures, []);
  await withBug(() => (plantedSafetyBugs.commitWithoutDirectParents = true), async () => {
    const r = await run();
    assert.match(r.safetyViolations[0] ?? "", /conflicting commits at height 1/);
  });
});

Deno.test("planted bug: using the new validator set before the change is committed gives Nodes QCs without an old-set quorum", async () => {
  const runs = () => seeds(10, handoverScenario);
  assert.deepEqual((await violations(runs())).seeds, [], "clean without the bug");
  await withBug(() => (plantedReconfigBugs.activateBeforeCommit = true), async () => {
    const found = await violations(runs());
    assert.ok(found.seeds.length >= 5, `caught in ${found.seeds.length} of 10 runs`);
    assert.match(found.first!, /is not a quorum of its validator set/);
  });
});

Deno.test("planted bug: counting old-set votes for a new-set Node lets a removed validator certify it", async () => {
  const runs = () => seeds(10, handoverScenario);
  await withBug(() => (plantedReconfigBugs.countOldSetVotes = true), async () => {
    const found = await violations(runs());
    assert.ok(found.seeds.length >= 5, `caught in ${found.seeds.length} of 10 runs`);
    assert.match(found.first!, /is not a quorum of its validator set/);
  });
});

Deno.test("planted bug: leaders proposing wrong state roots are refused by every replica; without the check they commit and the checker sees it", async () => {
  const runs = () => seeds(5, (seed) => ({ seed, powers: [1, 1, 1, 1], faults: quietFaults(0) }));
  assert.deepEqual((await violations(runs())).seeds, [], "clean without the bug");
  await withBug(() => (plantedSafetyBugs.proposeWrongStateRoot = true), async () => {
    // Every Node carries a wrong root: every replica refuses it, nothing commits, nothing unsafe.
    let refused = 0;
    const r = await runSimulation({
      seed: 1,
      powers: [1, 1, 1, 1],
      faults: quietFaults(0),
      trace: (line) => {
        if (line.includes(" node state-root-mismatch ")) refused++;
      },
    });
    assert.deepEqual(r.safetyViolations, []);
    assert.ok(refused > 0, "wrong roots are refused");
    assert.deepEqual(r.committedHeights, [0, 0, 0, 0]);
    plantedSafetyBugs.skipStateRootCheck = true;
    const found = await violations(runs());
    assert.deepEqual(found.seeds, [1, 2, 3, 4, 5]);
    assert.match(found.first!, /committed height 1 carries state root [0-9a-f]{64}, the committed/);
  });
});
