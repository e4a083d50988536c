/**
 * Validator-set changes (SPECIFICATION.md 3.4): the configuration of each Node, the quorum rules
 * of a handover, the record that survives restarts, and simulated handovers under faults.
 */
import assert from "node:assert/strict";
import { genesisQC, nodeHash } from "../src/codec.ts";
import {
  applyUpdates,
  certifyingRule,
  decodeConfigRecord,
  encodeConfigRecord,
  nextConfig,
  QuorumRule,
  rootConfig,
  stableConfig,
  type ValidatorConfig,
} from "../src/consensus/reconfig.ts";
import { checkValidateResult, DEFAULT_APP_LIMITS } from "../src/app.ts";
import { crashStormScenario, mixedScenario } from "../src/testing/scenario.ts";
import { runSimulation } from "../src/testing/sim.ts";
import { twinsScenario } from "../src/testing/twins.ts";
import type { Node } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";

const KEYS = [1, 2, 3, 4, 5, 6, 7].map((i) => new Uint8Array(32).fill(i));
const S = new ValidatorSet(KEYS.slice(0, 4).map((publicKey) => ({ publicKey, power: 1 })));
const sig = (i: number) => ({ signer: KEYS[i]!, signature: new Uint8Array(64) });

/** A Node of `view` on `parent` whose justify certifies `justified` (the parent by default). */
function node(view: number, parent: Node | null, justified: Node | null = parent): Node {
  return {
    view,
    height: (parent?.height ?? 0) + 1,
    parent: parent === null ? new Uint8Array(32) : nodeHash(parent),
    justify: justified === null
      ? genesisQC("c")
      : { ...genesisQC("c"), view: justified.view, nodeHash: nodeHash(justified) },
    command: new Uint8Array([view]),
    configHash: new Uint8Array(32),
    proposer: KEYS[0]!,
    stateRoot: new Uint8Array(0),
  };
}

/** Runs `nodes` (each on the previous) through nextConfig from `start`. */
function configs(start: ValidatorConfig, nodes: Node[], changeAt: number): ValidatorConfig[] {
  const out: ValidatorConfig[] = [];
  let c = start;
  let parentView = 0;
  for (const [i, n] of nodes.entries()) {
    const r = nextConfig(
      c,
      n,
      parentView,
      i === changeAt ? [{ publicKey: KEYS[4]!, power: 1 }] : [],
    );
    assert.ok(r.ok);
    c = r.config;
    out.push(c);
    parentView = n.view;
  }
  return out;
}

Deno.test("3.4 steps 1-4: a change starts a joint handover that ends after a direct 3-chain above it", () => {
  const b = node(1, null, null);
  const y = node(2, b);
  const z = node(3, y);
  const q = node(4, z);
  const after = node(5, q);
  const cs = configs(stableConfig(S), [b, y, z, q, after], 0);
  assert.equal(cs[0]!.next?.validators.length, 5, "b starts the handover");
  assert.deepEqual(cs.slice(0, 3).map((c) => c.run), [0, 1, 2]);
  assert.equal(cs[3]!.next, null, "q's justify names the head of b <- y <- z: handed over");
  assert.equal(cs[3]!.set.validators.length, 5);
  assert.equal(certifyingRule(cs[2]!).sets.length, 2, "q itself is certified jointly");
  assert.equal(certifyingRule(cs[3]!).sets.length, 1, "q's children by the new set alone");
});

Deno.test("3.4 step 4: a view gap or a justify that skips the parent restarts the count", () => {
  const b = node(1, null, null);
  const y = node(3, b); // a view gap
  const z = node(4, y);
  const w = node(5, z, y); // justify skips the parent
  const cs = configs(stableConfig(S), [b, y, z, w, node(6, w), node(7, w)], 0);
  assert.deepEqual(cs.slice(0, 4).map((c) => c.run), [0, 0, 1, 0]);
  assert.ok(cs.every((c) => c.next !== null), "no direct 3-chain yet: still joint");
});

Deno.test("3.4 step 2: a second change while one is handed over is refused", () => {
  const b = node(1, null, null);
  const first = nextConfig(stableConfig(S), b, 0, [{ publicKey: KEYS[4]!, power: 1 }]);
  assert.ok(first.ok);
  const r = nextConfig(first.config, node(2, b), 1, [{ publicKey: KEYS[5]!, power: 1 }]);
  assert.deepEqual(r, { ok: false, reason: "validator change in progress" });
});

Deno.test("3.4 step 3: during a handover a QC needs a quorum of each set", () => {
  const next = applyUpdates(S, [
    { publicKey: KEYS[3]!, power: 0 },
    { publicKey: KEYS[4]!, power: 1 },
    { publicKey: KEYS[5]!, power: 1 },
  ]);
  const joint = new QuorumRule([S, next]);
  // 0, 1, 4, 5: a quorum of the new set (4 of 5), only 2 of 4 of the old one.
  assert.equal(joint.countQuorum([0, 1, 4, 5].map(sig)).ok, false);
  assert.equal(new QuorumRule([next]).countQuorum([0, 1, 4, 5].map(sig)).ok, true);
  assert.equal(joint.countQuorum([0, 1, 2, 4].map(sig)).ok, true);
  assert.equal(joint.countQuorum([0, 1, 2, 6].map(sig)).ok, false, "7 is in neither set");
});

Deno.test("applyUpdates: add, remove, re-weigh; an empty result or a bad update is refused", () => {
  const s2 = applyUpdates(S, [{ publicKey: KEYS[0]!, power: 3 }, {
    publicKey: KEYS[1]!,
    power: 0,
  }]);
  assert.deepEqual(s2.validators.map((v) => v.power), [3, 1, 1]);
  assert.throws(() =>
    applyUpdates(S, KEYS.slice(0, 4).map((publicKey) => ({ publicKey, power: 0 })))
  );
  assert.throws(() => applyUpdates(S, [{ publicKey: new Uint8Array(31), power: 1 }]));
  assert.throws(() => applyUpdates(S, [{ publicKey: KEYS[5]!, power: -1 }]));
});

Deno.test("3.4 step 6: the record gives the committed head's configuration, also one height above it", () => {
  const next = applyUpdates(S, [{ publicKey: KEYS[4]!, power: 1 }]);
  const grandparent = stableConfig(S);
  const parent: ValidatorConfig = { set: S, next, changeHeight: 9, run: 0 };
  const after: ValidatorConfig = { ...parent, run: 1 };
  const record = decodeConfigRecord(encodeConfigRecord({ height: 10, grandparent, parent, after }));
  assert.equal(record.after.run, 1);
  assert.equal(record.after.next?.totalPower, 5);
  assert.equal(rootConfig(S, record, 10).after.run, 1);
  assert.equal(rootConfig(S, record, 10).parent.run, 0);
  const cut = rootConfig(S, record, 9); // the head's child wrote it, its commit cut by a crash
  assert.equal(cut.after.changeHeight, 9);
  assert.equal(cut.parent.next, null);
  assert.equal(rootConfig(S, record, 20).parent.run, 1);
  assert.throws(() => rootConfig(S, record, 8));
  assert.equal(rootConfig(S, null, 5).after.set, S);
});

Deno.test("7: an Application may not write the reserved keys; validatorUpdates are checked", () => {
  const reserved = new TextEncoder().encode("\u0000hotstuff/validators");
  const ok = (r: unknown) => checkValidateResult(r, DEFAULT_APP_LIMITS);
  assert.match(ok({ ok: true, updates: [[reserved, null]] })!, /reserved/);
  assert.equal(
    ok({ ok: true, updates: [], validatorUpdates: [{ publicKey: KEYS[0], power: 0 }] }),
    null,
  );
  assert.match(
    ok({ ok: true, updates: [], validatorUpdates: [{ publicKey: KEYS[0], power: 1.5 }] })!,
    /power/,
  );
  assert.match(ok({ ok: true, updates: [], validatorUpdates: {} })!, /array/);
});

Deno.test("sim: 4 validators, changes under faults (add, remove, re-weigh, swap), 12 seeds: safe, live, handed over", async () => {
  let handedOver = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const r = await runSimulation(mixedScenario(seed, { reconfigure: true }));
    assert.deepEqual([...r.safetyViolations, ...r.livenessFailures], [], `seed ${seed}`);
    handedOver += r.handovers.completed;
  }
  assert.ok(handedOver >= 12, `${handedOver} handovers`);
});

Deno.test("twins: a fifth validator joins and an honest one leaves inside partitioned rounds, 20 scenarios", async () => {
  let handedOver = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const r = await runSimulation(twinsScenario(seed, { reconfigure: true }));
    assert.deepEqual([...r.safetyViolations, ...r.livenessFailures], [], `seed ${seed}`);
    handedOver += r.handovers.completed;
  }
  assert.ok(handedOver >= 20, `${handedOver} handovers`);
});

Deno.test("sim: replicas crash and restart twenty times in three seconds while a fifth validator joins and one leaves, against an equivocating leader", async () => {
  let handedOver = 0;
  for (let seed = 1; seed <= 6; seed++) {
    const storm = crashStormScenario(seed);
    const r = await runSimulation({
      ...storm,
      powers: [1, 1, 1, 1, 1],
      behaviours: ["equivocator", "honest", "honest", "honest", "honest"],
      genesisValidators: 4,
      changes: [
        { atHeight: 3, updates: [{ validator: 4, power: 1 }] },
        { atHeight: 8, updates: [{ validator: 1, power: 0 }] },
      ],
    });
    assert.deepEqual([...r.safetyViolations, ...r.livenessFailures], [], `seed ${seed}`);
    handedOver += r.handovers.completed;
  }
  assert.equal(handedOver, 12);
});
