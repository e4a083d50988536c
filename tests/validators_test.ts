import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import type { SignerSignature } from "../src/types.ts";
import { toHex } from "../src/types.ts";
import { plantedBugs, TOTAL_POWER_MAX, type Validator, ValidatorSet } from "../src/validators.ts";

/** A distinct 32-byte key per index; the first byte decides the sort order. */
const key = (i: number): Uint8Array => {
  const k = new Uint8Array(32).fill(i & 0xff);
  k[0] = i & 0xff;
  k[1] = (i >> 8) & 0xff;
  return k;
};
const validators = (powers: readonly number[]): Validator[] =>
  powers.map((power, i) => ({ publicKey: key(i + 1), power }));
const equal = (n: number): ValidatorSet => new ValidatorSet(validators(Array(n).fill(1)));
const sigsOf = (keys: readonly Uint8Array[]): SignerSignature[] =>
  keys.map((signer) => ({ signer, signature: new Uint8Array(64) }));
const signers = (set: ValidatorSet, indices: readonly number[]): SignerSignature[] =>
  sigsOf(indices.map((i) => set.validators[i]!.publicKey));

function assertConfigError(f: () => unknown, reason: string): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.equal(e.reason, reason);
    assert.equal(e.name, "ConfigError");
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Quorum maths

Deno.test("validators: 4 equal validators: 3 is a quorum, 2 is not", () => {
  const set = equal(4);
  assert.equal(set.totalPower, 4);
  assert.equal(set.quorumPower, 3);
  assert.equal(set.isQuorum(3), true);
  assert.equal(set.isQuorum(4), true);
  assert.equal(set.isQuorum(2), false);
  assert.deepStrictEqual(set.countQuorum(signers(set, [0, 1, 2])), { ok: true, power: 3 });
  assert.equal(set.countQuorum(signers(set, [0, 3])).ok, false);
});

Deno.test("validators: 7 equal validators: 5 is a quorum, 4 is not", () => {
  const set = equal(7);
  assert.equal(set.quorumPower, 5);
  assert.equal(set.isQuorum(5), true);
  assert.equal(set.isQuorum(4), false);
  assert.deepStrictEqual(set.countQuorum(signers(set, [6, 0, 2, 4, 5])), { ok: true, power: 5 });
  assert.equal(set.countQuorum(signers(set, [0, 1, 2, 3])).ok, false);
});

Deno.test("validators: weighted 1,1,1,2,5 (total 10): 7 is a quorum, 6 is not", () => {
  const set = new ValidatorSet(validators([1, 1, 1, 2, 5]));
  assert.equal(set.totalPower, 10);
  assert.equal(set.quorumPower, 7);
  assert.equal(set.isQuorum(7), true);
  assert.equal(set.isQuorum(6), false);
  // Validators sort by key, and key(i + 1) keeps the input order here.
  assert.deepStrictEqual(set.countQuorum(signers(set, [4, 3])), { ok: true, power: 7 });
  assert.deepStrictEqual(set.countQuorum(signers(set, [4, 0, 1])), { ok: true, power: 7 });
  const six = set.countQuorum(signers(set, [4, 0]));
  assert.equal(six.ok, false);
  assert.equal(!six.ok && six.reason, "no-quorum");
  assert.equal(set.countQuorum(signers(set, [0, 1, 2, 3])).ok, false, "power 5 of 10");
});

Deno.test("validators: quorumPower is the least power that isQuorum accepts, for totals 1..200", () => {
  for (let total = 1; total <= 200; total++) {
    const set = new ValidatorSet([{ publicKey: key(1), power: total }]);
    assert.equal(set.isQuorum(set.quorumPower), true, `total ${total}`);
    assert.equal(set.isQuorum(set.quorumPower - 1), false, `total ${total}`);
    // More than 2/3, in exact integer arithmetic.
    assert.equal(3 * set.quorumPower > 2 * total && 3 * (set.quorumPower - 1) <= 2 * total, true);
  }
});

Deno.test("validators: quorum maths is exact at the largest total power", () => {
  const set = new ValidatorSet([{ publicKey: key(1), power: TOTAL_POWER_MAX }]);
  assert.equal(set.isQuorum(set.quorumPower), true);
  assert.equal(set.isQuorum(set.quorumPower - 1), false);
  assert.ok(Number.isSafeInteger(3 * set.totalPower));
});

// ---------------------------------------------------------------------------------------------
// countQuorum

Deno.test("validators: countQuorum rejects an unknown signer, even with a quorum of known ones", () => {
  const set = equal(4);
  const stranger = key(200);
  const r = set.countQuorum([...signers(set, [0, 1, 2, 3]), ...sigsOf([stranger])]);
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.reason, "unknown-signer");
  assert.equal(!r.ok && r.detail, toHex(stranger));
  assert.equal(set.powerOf(stranger), 0);
  assert.equal(set.get(stranger), undefined);
});

Deno.test("validators: countQuorum rejects a signer that appears twice", () => {
  const set = equal(4);
  const r = set.countQuorum(signers(set, [0, 1, 1]));
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.reason, "duplicate-signer");
  assert.equal(!r.ok && r.detail, toHex(set.validators[1]!.publicKey));
  // A duplicate is refused even when the distinct signers alone are a quorum.
  const d = set.countQuorum(signers(set, [0, 1, 2, 2]));
  assert.equal(!d.ok && d.reason, "duplicate-signer");
  // The same key in another array object is still the same signer.
  const copy = sigsOf([set.validators[0]!.publicKey.slice()]);
  const c = set.countQuorum([...signers(set, [0, 1, 2]), ...copy]);
  assert.equal(!c.ok && c.reason, "duplicate-signer");
});

Deno.test("validators: with plantedBugs.countSignerTwice a duplicate signer counts twice", () => {
  const set = equal(4);
  assert.equal(plantedBugs.countSignerTwice, false, "off by default");
  try {
    plantedBugs.countSignerTwice = true;
    // 2 distinct signers of 4 are not a quorum, but counted as 3 they look like one.
    assert.deepStrictEqual(set.countQuorum(signers(set, [0, 1, 1])), { ok: true, power: 3 });
  } finally {
    plantedBugs.countSignerTwice = false;
  }
  assert.equal(set.countQuorum(signers(set, [0, 1, 1])).ok, false, "restored");
});

Deno.test("validators: countQuorum rejects below-quorum and empty signer lists as no-quorum", () => {
  const set = equal(4);
  for (const indices of [[], [0], [0, 1], [2, 3]]) {
    const r = set.countQuorum(signers(set, indices));
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.reason, "no-quorum", `${indices.length} signers`);
    assert.match(!r.ok ? r.detail : "", /of total 4/);
  }
});

// ---------------------------------------------------------------------------------------------
// Constructor

Deno.test("validators: the constructor refuses an empty set", () => {
  assertConfigError(() => new ValidatorSet([]), "empty-set");
});

Deno.test("validators: the constructor refuses keys that are not 32 bytes", () => {
  for (const n of [0, 31, 33, 64]) {
    assertConfigError(
      () => new ValidatorSet([...validators([1]), { publicKey: new Uint8Array(n), power: 1 }]),
      "bad-key",
    );
  }
  const notBytes = { publicKey: Array(32).fill(1) as unknown as Uint8Array, power: 1 };
  assertConfigError(() => new ValidatorSet([notBytes]), "bad-key");
});

Deno.test("validators: the constructor refuses zero, negative, fractional and unsafe powers", () => {
  for (const power of [0, -1, -0, 0.5, 1.5, NaN, Infinity, 2 ** 53, Number.MAX_VALUE]) {
    assertConfigError(
      () => new ValidatorSet([{ publicKey: key(1), power: 1 }, { publicKey: key(2), power }]),
      "bad-power",
    );
  }
});

Deno.test("validators: the constructor refuses a duplicate key", () => {
  const dup = [{ publicKey: key(1), power: 1 }, { publicKey: key(1).slice(), power: 2 }];
  assertConfigError(
    () => new ValidatorSet([...validators([1, 1]).slice(1), ...dup]),
    "duplicate-validator",
  );
});

Deno.test("validators: the constructor refuses a total power over TOTAL_POWER_MAX", () => {
  assert.ok(new ValidatorSet([{ publicKey: key(1), power: TOTAL_POWER_MAX }]));
  assertConfigError(
    () => new ValidatorSet([{ publicKey: key(1), power: TOTAL_POWER_MAX + 1 }]),
    "power-overflow",
  );
  assertConfigError(
    () => new ValidatorSet(validators([TOTAL_POWER_MAX, 1])),
    "power-overflow",
  );
  const big = Math.floor(Number.MAX_SAFE_INTEGER / 2);
  assertConfigError(() => new ValidatorSet(validators([big, big, big])), "power-overflow");
});

Deno.test("validators: the set sorts validators by key and sums their power", () => {
  const set = new ValidatorSet([
    { publicKey: key(3), power: 3 },
    { publicKey: key(1), power: 1 },
    { publicKey: key(2), power: 2 },
  ]);
  assert.deepStrictEqual(set.validators.map((v) => v.power), [1, 2, 3]);
  assert.equal(set.totalPower, 6);
  assert.equal(set.powerOf(key(2)), 2);
  assert.equal(set.get(key(3))?.power, 3);
});

// ---------------------------------------------------------------------------------------------
// Leader schedule

const leaderCounts = (set: ValidatorSet, from: number, views: number): Map<string, number> => {
  const counts = new Map<string, number>();
  for (let v = from; v < from + views; v++) {
    const id = toHex(set.leader(v).publicKey);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
};

Deno.test("validators: the leader schedule is deterministic", () => {
  const powers = [3, 1, 4, 1, 5];
  const a = new ValidatorSet(validators(powers));
  const b = new ValidatorSet(validators(powers));
  for (let v = 0; v < 100; v++) {
    assert.deepStrictEqual(a.leader(v).publicKey, b.leader(v).publicKey, `view ${v}`);
    assert.strictEqual(a.leader(v), a.leader(v));
  }
});

Deno.test("validators: each validator leads exactly `power` views of every period of totalPower", () => {
  for (const powers of [[1, 1, 1, 1], [1, 1, 1, 2, 5], [3, 1, 4, 1, 5, 9, 2, 6], [7], [1, 100]]) {
    const set = new ValidatorSet(validators(powers));
    for (const start of [0, set.totalPower, 5 * set.totalPower, 1_000_003]) {
      const counts = leaderCounts(set, start, set.totalPower);
      for (const v of set.validators) {
        assert.equal(counts.get(toHex(v.publicKey)), v.power, `powers ${powers}, start ${start}`);
      }
    }
  }
});

Deno.test("validators: the schedule repeats with period totalPower", () => {
  const set = new ValidatorSet(validators([1, 1, 1, 2, 5]));
  for (let v = 0; v < 50; v++) assert.strictEqual(set.leader(v), set.leader(v + set.totalPower));
});

Deno.test("validators: the schedule spreads a heavy validator out (smooth round robin)", () => {
  const set = new ValidatorSet(validators([1, 1, 1, 2, 5]));
  const heavy = set.validators[4]!;
  assert.equal(heavy.power, 5);
  const views = Array.from({ length: 10 }, (_, v) => set.leader(v) === heavy);
  // Never more than 2 views in a row for a validator with half the power.
  for (let v = 0; v + 2 < views.length; v++) assert.ok(!(views[v] && views[v + 1] && views[v + 2]));
});

Deno.test("validators: the schedule does not depend on the input order", () => {
  const list = validators([1, 1, 1, 2, 5, 3]);
  const orders = [list, [...list].reverse(), [
    list[3]!,
    list[0]!,
    list[5]!,
    list[1]!,
    list[4]!,
    list[2]!,
  ]];
  const sets = orders.map((o) => new ValidatorSet(o));
  for (let v = 0; v < 3 * sets[0]!.totalPower; v++) {
    const expected = toHex(sets[0]!.leader(v).publicKey);
    for (const s of sets) assert.equal(toHex(s.leader(v).publicKey), expected, `view ${v}`);
  }
});

Deno.test("validators: large totals (over 2^16) use the cumulative schedule, still `power` per period", () => {
  const set = new ValidatorSet(validators([40_000, 30_000, 1]));
  assert.ok(set.totalPower > 1 << 16);
  const counts = leaderCounts(set, 3 * set.totalPower, set.totalPower);
  for (const v of set.validators) assert.equal(counts.get(toHex(v.publicKey)), v.power);
  const shuffled = new ValidatorSet([...set.validators].reverse());
  for (const view of [0, 39_999, 40_000, 69_999, 70_000, 70_001, 123_456_789]) {
    assert.deepStrictEqual(shuffled.leader(view).publicKey, set.leader(view).publicKey);
  }
});
