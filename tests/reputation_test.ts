/**
 * Leader reputation (SPECIFICATION.md 3.5): the rule as a pure function, and in the simulator a
 * crashed validator that stops costing timeouts, and a Byzantine minority that cannot keep honest
 * validators from leading.
 */
import assert from "node:assert/strict";
import type { Application } from "../src/app.ts";
import {
  type CommittedSummary,
  DEFAULT_REPUTATION_OPTIONS,
  reputationLeader,
  summarize,
} from "../src/consensus/reputation.ts";
import { genesisNode, genesisQC } from "../src/codec.ts";
import { ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import { Engine } from "../src/runtime/engine.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { StoredNode } from "../src/storage/storage.ts";
import type { Node } from "../src/types.ts";
import { nodeHash } from "../src/codec.ts";
import { deriveSecretKey, publicKeyOf } from "../src/crypto.ts";
import type { Adversary } from "../src/testing/sim.ts";
import { runSimulation, type SimOptions } from "../src/testing/sim.ts";
import { counterApp, type PlannedChange } from "../src/testing/counter_app.ts";
import { quietFaults } from "../src/testing/scenario.ts";
import { bytesEqual, type PublicKey, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";

const OPTS = DEFAULT_REPUTATION_OPTIONS;
const CHAIN = "reputation-test";
const KEYS = [1, 2, 3, 4].map((i) => new Uint8Array(32).fill(i));
const SET = new ValidatorSet(KEYS.map((publicKey) => ({ publicKey, power: 1 })));

/** Committed Nodes of views `from..to`, proposed and signed by `live` only (in turn). */
function history(from: number, to: number, live: readonly PublicKey[]): CommittedSummary[] {
  const out: CommittedSummary[] = [];
  for (let v = from; v <= to; v++) {
    out.push({ height: v, view: v, proposer: live[v % live.length]!, signers: [...live] });
  }
  return out;
}

const hex = (k: PublicKey) => toHex(k);

Deno.test("3.5: without history, at probation views and under a custom schedule, the plain schedule leads", () => {
  for (let v = 1; v < 40; v++) {
    assert.equal(reputationLeader(v, SET, [], OPTS), SET.leader(v), `view ${v}`);
  }
  const live = KEYS.slice(0, 3);
  const h = history(1, 600, live);
  for (const v of [256, 512]) {
    assert.equal(reputationLeader(v, SET, h, OPTS), SET.leader(v / 256), `probation view ${v}`);
  }
  const custom = new ValidatorSet(SET.validators, { leaderSchedule: () => 3 });
  assert.equal(reputationLeader(300, custom, h, OPTS), custom.validators[3]);
});

Deno.test("3.5 steps 2-5: a validator absent from the window loses its views to the active ones, in turn", () => {
  const live = KEYS.slice(0, 3);
  const h = history(1, 100, live);
  const leaders = new Map<string, number>();
  for (let v = 113; v < 113 + 120; v++) {
    if (v % OPTS.probationViews === 0) continue;
    const l = reputationLeader(v, SET, h, OPTS);
    leaders.set(hex(l.publicKey), (leaders.get(hex(l.publicKey)) ?? 0) + 1);
    // An active scheduled leader keeps its view.
    if (live.some((k) => bytesEqual(k, SET.leader(v).publicKey))) {
      assert.equal(l, SET.leader(v), `view ${v}`);
    }
  }
  assert.equal(leaders.get(hex(KEYS[3]!)), undefined, "the absent validator leads nothing");
  for (const k of live) {
    const n = leaders.get(hex(k)) ?? 0;
    assert.ok(n >= 35 && n <= 45, `${hex(k).slice(0, 4)} leads ${n} of 120`);
  }
});

Deno.test("3.5 step 2: Nodes newer than v - lagViews do not count; the same inputs give the same leader", () => {
  const live = KEYS.slice(0, 3);
  // All four active up to view 100, then only three: at view 105 the window ends at 93, so the
  // fourth is still active and keeps its turn.
  const h = [...history(1, 100, KEYS), ...history(101, 104, live)];
  const v = [105, 106, 107, 108, 109].find((x) => bytesEqual(SET.leader(x).publicKey, KEYS[3]!))!;
  assert.equal(reputationLeader(v, SET, h, OPTS), SET.leader(v));
  assert.equal(reputationLeader(v, SET, [...h], OPTS), reputationLeader(v, SET, h, OPTS));
});

Deno.test("3.5 step 4: below a quorum of active power the plain schedule leads", () => {
  const h = history(1, 100, KEYS.slice(0, 2)); // 2 of 4 is no quorum
  for (let v = 113; v < 140; v++) assert.equal(reputationLeader(v, SET, h, OPTS), SET.leader(v));
});

// ---------------------------------------------------------------------------------------------
// In the simulator

/** Views entered through a TC by honest endpoints, and commits, over a run. */
async function timeouts(
  options: Partial<SimOptions>,
  plan: readonly PlannedChange[] = [],
): Promise<{ tcViews: number; commits: number; proposers: Map<string, number> }> {
  let tcViews = 0;
  const proposers = new Map<string, number>();
  const app = (endpoint: number): Application => {
    const inner = counterApp(plan);
    if (endpoint !== 0) return inner;
    return {
      ...inner,
      onCommit: ({ node }) => {
        const k = toHex(node.proposer);
        proposers.set(k, (proposers.get(k) ?? 0) + 1);
      },
    };
  };
  const r = await runSimulation({
    seed: 5,
    powers: [1, 1, 1, 1],
    faults: quietFaults(20_000),
    livenessWindowMs: 5_000,
    app,
    trace: (line) => {
      const f = line.split(" ");
      if (f[1] === "view" && f[2] === "0" && f[4] === "tc") tcViews++;
    },
    ...options,
  });
  assert.deepEqual(r.safetyViolations, []);
  assert.deepEqual(r.livenessFailures, []);
  return { tcViews, commits: r.committedHeights[0]!, proposers };
}

Deno.test("sim: 4 replicas, one crashed from the start: with reputation view timeouts stop; without, one view in four times out", async () => {
  const crashed: SimOptions["behaviours"] = ["honest", "honest", "honest", "silent"];
  const on = await timeouts({ behaviours: crashed });
  const off = await timeouts({ behaviours: crashed, reputation: null });
  // 20 s of virtual time at a view every few ms: the plain schedule times out on every fourth
  // view (each costing a timeout of 200 ms and up); reputation after the first window only on
  // probation views (one in 1024 here).
  assert.ok(off.tcViews >= 20, `without reputation ${off.tcViews} timeouts`);
  assert.ok(on.tcViews <= 6, `with reputation ${on.tcViews} timeouts`);
  assert.ok(on.commits >= 5 * off.commits, `commits ${on.commits} vs ${off.commits}`);
});

/**
 * A Byzantine validator that tries to push validator 0 out of the schedule: it never votes for
 * validator 0's Nodes (neither in VOTEs nor attached to NEW-VIEWs), so they certify only with
 * every honest vote; otherwise it behaves.
 */
function excluder(victim: PublicKey): Adversary {
  const victims = new Set<string>();
  const mine = (hash: Uint8Array) => victims.has(toHex(hash));
  return {
    onDeliver: (_api, _from, m) => {
      if (m.type === "propose" && bytesEqual(m.node.proposer, victim)) {
        if (victims.size > 4096) victims.clear();
        victims.add(toHex(nodeHash(m.node)));
      }
      return Promise.resolve();
    },
    onSend: (api, m, to) => {
      if (m.type === "vote" && mine(m.nodeHash)) return Promise.resolve();
      const out = m.type === "new-view" && m.vote !== null && mine(m.vote.nodeHash)
        ? { ...m, vote: null }
        : m;
      if (to === "all") api.broadcast(out);
      else for (const id of api.endpointsOf(to)) api.send(id, out);
      return Promise.resolve();
    },
  };
}

Deno.test("sim: a Byzantine validator that withholds its votes from one honest leader cannot keep it from leading", async () => {
  const victim = publicKeyOf(deriveSecretKey("sim-validator-0"));
  const r = await timeouts({
    behaviours: ["honest", "honest", "honest", "scripted"],
    adversaries: { 3: excluder(victim) },
  });
  for (const [k, n] of r.proposers) assert.ok(n > 0, `${k.slice(0, 8)} led ${n}`);
  const mine = r.proposers.get(toHex(victim)) ?? 0;
  // Fair share is a quarter of the committed Nodes.
  assert.ok(mine >= r.commits / 6, `the victim led ${mine} of ${r.commits}`);
});

Deno.test("3.5 + 6.2: a restarted Engine reads the committed history back and agrees on leaders with the rule", async () => {
  const signers = [0, 1, 2, 3].map((i) => ed25519Signer(deriveSecretKey(`rep-restart-${i}`)));
  const set = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
  const live = signers.slice(0, 3).map((s) => s.publicKey);
  // 60 committed Nodes, proposed and certified by three validators only (no signature checks:
  // storage holds what the replica verified before).
  const storage = new MemoryStorage();
  let parent: StoredNode = {
    node: genesisNode(CHAIN),
    hash: nodeHash(genesisNode(CHAIN)),
    updates: [],
  };
  const commits: StoredNode[] = [];
  for (let h = 1; h <= 60; h++) {
    const justify = h === 1 ? genesisQC(CHAIN) : {
      chainId: CHAIN,
      view: parent.node.view,
      nodeHash: parent.hash,
      signatures: live.map((signer) => ({ signer, signature: new Uint8Array(64) })),
    };
    const node: Node = {
      view: h,
      height: h,
      parent: parent.hash,
      justify,
      command: new Uint8Array([h]),
      configHash: new Uint8Array(32),
      proposer: live[h % 3]!,
      stateRoot: new Uint8Array(0),
    };
    parent = { node, hash: nodeHash(node), updates: [] };
    commits.push(parent);
  }
  await storage.write({ commits });
  const open = (reputation?: null) =>
    Engine.open({
      chainId: CHAIN,
      validators: set,
      signer: signers[0]!,
      verifier: ed25519Verifier(),
      storage,
      app: counterApp(),
      network: { send: () => {}, broadcast: () => {} },
      nodeSource: { fetch: () => {} },
      clock: { now: () => 0, setTimer: () => {}, clearTimer: () => {} },
      ...(reputation === null ? { reputation } : {}),
    });
  const engine = await open();
  const plain = await open(null);
  const summaries = commits.map((c) => summarize(c.node));
  let differs = 0;
  for (let v = 61; v < 90; v++) {
    const expected = reputationLeader(v, set, summaries, OPTS).publicKey;
    assert.ok(bytesEqual(engine.core.leader(v), expected), `view ${v}`);
    if (!bytesEqual(plain.core.leader(v), expected)) differs++;
    assert.ok(!bytesEqual(engine.core.leader(v), signers[3]!.publicKey), `view ${v}`);
  }
  assert.ok(differs > 0, "the plain schedule would have given the absent validator views");
});

Deno.test("sim: a validator that crashes and restarts leads again once its votes are back in the window", async () => {
  const back = publicKeyOf(deriveSecretKey("sim-validator-3"));
  const faults = {
    ...quietFaults(20_000),
    crashes: [{ endpoint: 3, at: 1_000, restartAt: 6_000 }],
  };
  const r = await timeouts({ faults });
  const led = r.proposers.get(toHex(back)) ?? 0;
  // Up for 15 of the 20 s (a quarter of the views when active): well above what it led in its
  // first second, and far from nothing.
  assert.ok(led >= r.commits / 8, `it led ${led} of ${r.commits} committed Nodes`);
  assert.ok(r.tcViews <= 12, `${r.tcViews} timeouts`);
});

Deno.test("3.5 across a validator-set change: only members of the leader set count; a removed validator never leads; a joiner leads once active", () => {
  // The window was committed by the old set {1,2,3,4}; the leader set is now {1,2,3,5}: 4 left,
  // 5 joined and has not voted yet.
  const joiner = new Uint8Array(32).fill(5);
  const next = new ValidatorSet(
    [...KEYS.slice(0, 3), joiner].map((publicKey) => ({ publicKey, power: 1 })),
  );
  const old = history(1, 100, KEYS);
  for (let v = 101; v < 140; v++) {
    if (v % OPTS.probationViews === 0) continue;
    const leader = reputationLeader(v, next, old, OPTS);
    assert.ok(next.get(leader.publicKey) !== undefined, `view ${v}: a member of the leader set`);
    assert.ok(!bytesEqual(leader.publicKey, KEYS[3]!), `view ${v}: the removed validator`);
    // 1, 2, 3 are active (a quorum of the new set): the inactive joiner's views go to them.
    assert.ok(!bytesEqual(leader.publicKey, joiner), `view ${v}: the joiner is not active yet`);
  }
  // Once its votes are in the window, it leads its own views of the new set's schedule.
  const joined = [...old, ...history(101, 130, [...KEYS.slice(0, 3), joiner])];
  const views = [];
  for (let v = 150; v < 170; v++) {
    if (bytesEqual(next.leader(v).publicKey, joiner)) views.push(v);
  }
  assert.ok(views.length > 0);
  for (const v of views) {
    assert.ok(bytesEqual(reputationLeader(v, next, joined, OPTS).publicKey, joiner), `view ${v}`);
  }
  // A set whose active members are not a quorum of it (3 of 6 equal powers) gets its plain
  // schedule, so the joiners lead their views at once.
  const wide = new ValidatorSet(
    [...KEYS.slice(0, 3), ...[5, 6, 7].map((i) => new Uint8Array(32).fill(i))]
      .map((publicKey) => ({ publicKey, power: 1 })),
  );
  for (let v = 101; v < 130; v++) {
    assert.equal(reputationLeader(v, wide, old, OPTS), wide.leader(v), `view ${v}`);
  }
});

Deno.test("sim: 3.5 across a change: validator 3 is down from the start; a change removes it and adds validator 4, which then leads its share; few view timeouts", async () => {
  const pub = (i: number) => publicKeyOf(deriveSecretKey(`sim-validator-${i}`));
  const key = (i: number) => toHex(pub(i));
  const r = await timeouts({
    powers: [1, 1, 1, 1, 1],
    genesisValidators: 4,
    behaviours: ["honest", "honest", "honest", "silent", "honest"],
    changes: [{ atHeight: 20, updates: [{ validator: 3, power: 0 }, { validator: 4, power: 1 }] }],
  }, [{
    atHeight: 20,
    updates: [{ publicKey: pub(3), power: 0 }, { publicKey: pub(4), power: 1 }],
  }]);
  // The down validator proposed nothing; the joiner, active once its votes are in the window,
  // leads Nodes of its own; before the change reputation gave validator 3's views to the others.
  assert.equal(r.proposers.get(key(3)) ?? 0, 0);
  assert.ok((r.proposers.get(key(4)) ?? 0) >= 100, `joiner led ${r.proposers.get(key(4))}`);
  assert.ok(r.tcViews <= 8, `${r.tcViews} timeouts`);
});
