/**
 * The validator set: who may sign, with how much voting power, and who leads each view.
 * See SPECIFICATION.md section 3.
 *
 * A quorum is *more than 2/3 of the total power*, counted over distinct, known signers. Safety
 * holds while the Byzantine validators hold less than 1/3 of the power.
 *
 * The set is plain data (a list of `{publicKey, power}`), so a later version can attach a new set
 * to a committed Node without changing how certificates are checked.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import type { PublicKey, SignerSignature } from "./types.ts";
import { bytesCompare, toHex } from "./types.ts";

/**
 * One validator: its key and its voting power.
 *
 * @example
 * ```ts
 * import type { Validator } from "./validators.ts";
 * const v: Validator = { publicKey: new Uint8Array(32), power: 10 };
 * ```
 */
export interface Validator {
  /** Ed25519 public key (32 bytes). */
  readonly publicKey: PublicKey;
  /** Voting power: a positive safe integer. */
  readonly power: number;
}

/**
 * Why a set of signers does or does not form a quorum.
 *
 * @example
 * ```ts
 * import type { QuorumCount } from "./validators.ts";
 * function describe(q: QuorumCount): string {
 *   return q.ok ? `a quorum of power ${q.power}` : `no quorum: ${q.reason} (${q.detail})`;
 * }
 * ```
 */
export type QuorumCount =
  | { ok: true; power: number }
  | { ok: false; reason: "unknown-signer" | "duplicate-signer" | "no-quorum"; detail: string };

/**
 * Test-only switches that plant known bugs, so that tests can show the simulator catches them.
 * Never set in production: the replica runtime refuses to start with any of them on.
 */
export const plantedBugs: {
  /** Count a signer's power once per signature instead of once per signer. */
  countSignerTwice: boolean;
} = { countSignerTwice: false };

/**
 * A custom leader schedule: the index (into the key-sorted validators) of the leader of `view`,
 * or undefined to use the default weighted round robin. Must be deterministic and the same on
 * every replica. The simulator's Twins scenarios use it to choose each round's leader.
 *
 * @example
 * ```ts
 * import { type LeaderSchedule, ValidatorSet } from "./validators.ts";
 * // Round robin by index, ignoring power.
 * const roundRobin: LeaderSchedule = (view) => view % 2;
 * const set = new ValidatorSet(
 *   [1, 2].map((n) => ({ publicKey: new Uint8Array(32).fill(n), power: 1 })),
 *   { leaderSchedule: roundRobin },
 * );
 * ```
 */
export type LeaderSchedule = (view: number) => number | undefined;

/** The largest total power accepted, so that `3 * total` stays a safe integer. */
export const TOTAL_POWER_MAX: number = Math.floor(Number.MAX_SAFE_INTEGER / 3);

/**
 * An immutable validator set with voting powers, quorum maths and a weighted leader schedule.
 *
 * @example
 * ```ts
 * import { ValidatorSet } from "./validators.ts";
 * const keys = [1, 2, 3, 4].map((i) => new Uint8Array(32).fill(i));
 * const set = new ValidatorSet(keys.map((publicKey) => ({ publicKey, power: 1 })));
 * set.isQuorum(3); // true: 3 of 4 is more than 2/3
 * set.isQuorum(2); // false
 * ```
 */
export class ValidatorSet {
  /** Validators, sorted by public key. */
  readonly validators: readonly Validator[];
  /** Sum of all powers. */
  readonly totalPower: number;
  readonly #byKey: Map<string, Validator>;
  #schedule: number[] | undefined;
  readonly #custom: LeaderSchedule | undefined;

  /**
   * Builds and checks a validator set.
   *
   * @param validators at least one; distinct keys; positive integer powers
   * @param options `leaderSchedule`: a custom schedule (see {@link LeaderSchedule})
   * @throws {ConfigError} on an empty set, a bad key, a bad power, a duplicate or an overflow
   */
  constructor(validators: readonly Validator[], options: { leaderSchedule?: LeaderSchedule } = {}) {
    this.#custom = options.leaderSchedule;
    if (validators.length === 0) throw new ConfigError("empty-set", "validator set is empty");
    const sorted = [...validators].sort((a, b) => bytesCompare(a.publicKey, b.publicKey));
    const byKey = new Map<string, Validator>();
    let total = 0;
    for (const v of sorted) {
      if (!(v.publicKey instanceof Uint8Array) || v.publicKey.length !== 32) {
        throw new ConfigError("bad-key", "validator public key must be 32 bytes");
      }
      if (!Number.isSafeInteger(v.power) || v.power <= 0) {
        throw new ConfigError(
          "bad-power",
          `validator power must be a positive integer: ${v.power}`,
        );
      }
      const id = toHex(v.publicKey);
      if (byKey.has(id)) throw new ConfigError("duplicate-validator", `duplicate validator ${id}`);
      byKey.set(id, v);
      total += v.power;
      if (total > TOTAL_POWER_MAX) {
        throw new ConfigError("power-overflow", `total power exceeds ${TOTAL_POWER_MAX}`);
      }
    }
    this.validators = sorted;
    this.totalPower = total;
    this.#byKey = byKey;
  }

  /** The validator with this key, or undefined. */
  get(publicKey: PublicKey): Validator | undefined {
    return this.#byKey.get(toHex(publicKey));
  }

  /** Power of `publicKey` (0 for a non-member). */
  powerOf(publicKey: PublicKey): number {
    return this.get(publicKey)?.power ?? 0;
  }

  /** True iff `power` is more than 2/3 of the total power. */
  isQuorum(power: number): boolean {
    return power * 3 > this.totalPower * 2;
  }

  /** The least power that is a quorum. */
  get quorumPower(): number {
    return Math.floor((this.totalPower * 2) / 3) + 1;
  }

  /**
   * Counts the power of a certificate's signers. Spec 3.1: every signer must be a member, no
   * signer may appear twice, and the distinct signers' power must be a quorum.
   * (Signatures themselves are checked separately.)
   */
  countQuorum(signatures: readonly SignerSignature[]): QuorumCount {
    const seen = new Set<string>();
    let power = 0;
    for (const s of signatures) {
      const id = toHex(s.signer);
      const v = this.#byKey.get(id);
      // Spec 3.1 step 1: only members sign.
      if (v === undefined) return { ok: false, reason: "unknown-signer", detail: id };
      // Spec 3.1 step 2: each signer counts once.
      if (seen.has(id) && !plantedBugs.countSignerTwice) {
        return { ok: false, reason: "duplicate-signer", detail: id };
      }
      seen.add(id);
      power += v.power;
    }
    // Spec 3.1 step 3: more than 2/3 of the total power.
    if (!this.isQuorum(power)) {
      return {
        ok: false,
        reason: "no-quorum",
        detail: `power ${power} of total ${this.totalPower} is not more than 2/3`,
      };
    }
    return { ok: true, power };
  }

  /** The custom schedule's leader of `view` (see {@link LeaderSchedule}), or undefined. */
  customLeader(view: number): Validator | undefined {
    const custom = this.#custom?.(view);
    if (custom === undefined) return undefined;
    const v = this.validators[custom];
    if (v === undefined) throw new ConfigError("bad-schedule", `no validator ${custom}`);
    return v;
  }

  /**
   * The leader of `view`. Spec 3.3: smooth weighted round robin over the validators sorted by
   * key, with period `totalPower` (each validator leads `power` views of every period, spread
   * out). Deterministic from (view, set). For very large totals, a hash-free fallback maps the
   * view onto the cumulative power directly.
   */
  leader(view: number): Validator {
    const custom = this.customLeader(view);
    if (custom !== undefined) return custom;
    const period = this.totalPower;
    const slot = view % period;
    if (period <= 1 << 16) {
      this.#schedule ??= smoothWeightedSchedule(this.validators);
      return this.validators[this.#schedule[slot]!]!;
    }
    let acc = 0;
    for (const v of this.validators) {
      acc += v.power;
      if (slot < acc) return v;
    }
    return this.validators[this.validators.length - 1]!;
  }
}

/** Smooth weighted round robin: indices into `validators`, one per unit of total power. */
function smoothWeightedSchedule(validators: readonly Validator[]): number[] {
  const total = validators.reduce((s, v) => s + v.power, 0);
  const current = validators.map(() => 0);
  const out: number[] = [];
  for (let slot = 0; slot < total; slot++) {
    let best = 0;
    for (let i = 0; i < validators.length; i++) {
      current[i]! += validators[i]!.power;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    out.push(best);
  }
  return out;
}
