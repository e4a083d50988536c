/**
 * Validator-set changes: which set certifies each Node, and how a change hands over from the old
 * set to the new one. See SPECIFICATION.md section 3.4.
 *
 * A change is decided by the Application when it executes a Node `b` (the *change Node*). The old
 * set `S` certifies `b`; the Nodes that descend from `b` are certified *jointly*, by a quorum of
 * `S` and a quorum of the new set `S'`, until a Node `q` whose own ancestry proves that a Node at
 * or above `b` is committed (a direct 3-chain with `q.justify` on its head); `q`'s descendants are
 * certified by `S'` alone. Everything here is a pure function of a Node and its parent's
 * configuration, so every replica computes the same set for the same Node.
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import { sha256Bytes } from "../crypto.ts";
import { ConfigError } from "../errors.ts";
import type { Node, PublicKey, SignerSignature } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import type { QuorumCount, Validator } from "../validators.ts";
import { plantedBugs, ValidatorSet } from "../validators.ts";

/**
 * One change to a validator set: a new power for a key; power 0 removes it.
 *
 * @example
 * ```ts
 * import type { ValidatorUpdate } from "./reconfig.ts";
 * const remove: ValidatorUpdate = { publicKey: new Uint8Array(32).fill(3), power: 0 };
 * ```
 */
export interface ValidatorUpdate {
  /** Ed25519 public key (32 bytes). */
  readonly publicKey: PublicKey;
  /** The new voting power (0 removes the validator). */
  readonly power: number;
}

/** Most validators in one set (the configuration record must fit one storage value). */
export const VALIDATORS_MAX = 512;

/** Most updates one Node may return. */
export const VALIDATOR_UPDATES_MAX = 64;

/**
 * The validator configuration after a Node. `next === null`: stable, `set` certifies the
 * children. Otherwise a change is in progress: the children are certified by `set` and `next`
 * jointly, until the handover completes (Spec 3.4 step 4).
 *
 * @example
 * ```ts
 * import { stableConfig, type ValidatorConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const config: ValidatorConfig = stableConfig(set);
 * console.log(config.next === null); // true: no change in progress
 * ```
 */
export interface ValidatorConfig {
  /** The set in force (the old set while a change is in progress). */
  readonly set: ValidatorSet;
  /** The set being handed over to, or null. */
  readonly next: ValidatorSet | null;
  /** Height of the change Node (0 when stable). */
  readonly changeHeight: number;
  /** While a change is in progress: consecutive direct links ending at this Node (0..2). */
  readonly run: number;
}

/**
 * Who must sign a QC: a quorum of every set in `sets` (one set, or two during a handover).
 *
 * @example
 * ```ts
 * import { QuorumRule } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * new QuorumRule([set]).isMember(new Uint8Array(32).fill(1)); // true
 * ```
 */
export class QuorumRule {
  /** A stable identity: equal rules have equal ids. */
  readonly id: string;

  /**
   * Makes a rule.
   *
   * @param sets one or two sets; a quorum of each is required
   * @param any test-only (a planted bug): a quorum of any one set suffices
   */
  constructor(
    /** The sets whose quorums are required. */
    readonly sets: readonly ValidatorSet[],
    /** Test-only (a planted bug): a quorum of any one set suffices. */
    readonly any = false,
  ) {
    this.id = (any ? "any:" : "") + sets.map(setId).join("|");
  }

  /** True iff `key` is a member of one of the sets. */
  isMember(key: PublicKey): boolean {
    return this.sets.some((s) => s.get(key) !== undefined);
  }

  /**
   * Spec 3.1 for every set of the rule: every signer is a member of one of the sets, no signer
   * appears twice, and the signers' power in each set is a quorum of that set.
   */
  countQuorum(signatures: readonly SignerSignature[]): QuorumCount {
    const seen = new Set<string>();
    for (const s of signatures) {
      const id = toHex(s.signer);
      // Spec 3.1 step 1: only members sign.
      if (!this.isMember(s.signer)) return { ok: false, reason: "unknown-signer", detail: id };
      // Spec 3.1 step 2: each signer counts once.
      if (seen.has(id) && !plantedBugs.countSignerTwice) {
        return { ok: false, reason: "duplicate-signer", detail: id };
      }
      seen.add(id);
    }
    let power = 0;
    let anyOk = false;
    for (const set of this.sets) {
      const members = signatures.filter((s) => set.get(s.signer) !== undefined);
      const count = set.countQuorum(members);
      if (count.ok) {
        anyOk = true;
        power += count.power;
      } else if (!this.any) {
        // Spec 3.4 step 3: during a handover, a quorum of each set.
        return count;
      }
    }
    if (!anyOk) return { ok: false, reason: "no-quorum", detail: `no quorum of ${this.id}` };
    return { ok: true, power };
  }
}

/** Identities of sets, computed once per set. */
const SET_IDS = new WeakMap<ValidatorSet, string>();

/** A short identity of a set's members and powers. */
function setId(set: ValidatorSet): string {
  let id = SET_IDS.get(set);
  if (id === undefined) {
    id = set.validators.map((v) => `${toHex(v.publicKey).slice(0, 16)}:${v.power}`).join(",");
    SET_IDS.set(set, id);
  }
  return id;
}

/**
 * Test-only switches that plant known bugs in the handover, so tests can show the simulator
 * catches them. Never set in production: the replica runtime refuses to start with any on.
 */
export const plantedReconfigBugs: {
  /** Use the new set for the change Node's children at once, before the change is committed. */
  activateBeforeCommit: boolean;
  /** After a handover, accept a quorum of the old set too for Nodes of the new set. */
  countOldSetVotes: boolean;
  /**
   * Leaders name their parent's configuration without its handover in `configHash`, and voters
   * do not check it (Spec 3.4 step 8): a light client would trust the wrong set.
   */
  uncheckedConfigHash: boolean;
} = { activateBeforeCommit: false, countOldSetVotes: false, uncheckedConfigHash: false };

/**
 * The stable configuration of a set.
 *
 * @example
 * ```ts
 * import { stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * stableConfig(new ValidatorSet([{ publicKey: new Uint8Array(32), power: 1 }]));
 * ```
 */
export function stableConfig(set: ValidatorSet): ValidatorConfig {
  return { set, next: null, changeHeight: 0, run: 0 };
}

/** A configuration and the old set that it replaced, kept only for the planted bug. */
const OLD_SETS = new WeakMap<ValidatorConfig, ValidatorSet>();

/**
 * Spec 3.4 step 3: the rule that certifies the children of a Node whose configuration is
 * `config`: its set, or, during a handover, both sets.
 *
 * @example
 * ```ts
 * import { certifyingRule, stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * certifyingRule(stableConfig(new ValidatorSet([{ publicKey: new Uint8Array(32), power: 1 }])));
 * ```
 */
export function certifyingRule(config: ValidatorConfig): QuorumRule {
  const old = OLD_SETS.get(config);
  if (old !== undefined && plantedReconfigBugs.countOldSetVotes) {
    return new QuorumRule([config.set, old], true);
  }
  let rule = RULES.get(config);
  if (rule === undefined) {
    rule = new QuorumRule(config.next === null ? [config.set] : [config.set, config.next]);
    RULES.set(config, rule);
  }
  return rule;
}

/** The rule of each configuration, made once (it is asked for on every vote). */
const RULES = new WeakMap<ValidatorConfig, QuorumRule>();

/**
 * The set whose schedule picks the leader of a view for a proposal extending a Node with this
 * configuration (Spec 3.4 step 5): the new set as soon as a change is in progress.
 *
 * @example
 * ```ts
 * import { leaderSet, stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * leaderSet(stableConfig(new ValidatorSet([{ publicKey: new Uint8Array(32), power: 1 }])));
 * ```
 */
export function leaderSet(config: ValidatorConfig): ValidatorSet {
  return config.next ?? config.set;
}

/**
 * `set` with `updates` applied in order (power 0 removes; a new key is added).
 *
 * @throws {ConfigError} when the result is empty, too large, or an update is malformed
 * @example
 * ```ts
 * import { applyUpdates } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32), power: 1 }]);
 * applyUpdates(set, [{ publicKey: new Uint8Array(32).fill(1), power: 2 }]).totalPower; // 3
 * ```
 */
export function applyUpdates(
  set: ValidatorSet,
  updates: readonly ValidatorUpdate[],
): ValidatorSet {
  if (updates.length > VALIDATOR_UPDATES_MAX) {
    throw new ConfigError("too-many-updates", `${updates.length} validator updates`);
  }
  const byKey = new Map<string, Validator>();
  for (const v of set.validators) byKey.set(toHex(v.publicKey), v);
  for (const u of updates) {
    if (!(u.publicKey instanceof Uint8Array) || u.publicKey.length !== 32) {
      throw new ConfigError("bad-key", "validator update key must be 32 bytes");
    }
    if (!Number.isSafeInteger(u.power) || u.power < 0) {
      throw new ConfigError("bad-power", `validator update power must be >= 0: ${u.power}`);
    }
    const id = toHex(u.publicKey);
    if (u.power === 0) byKey.delete(id);
    else byKey.set(id, { publicKey: u.publicKey.slice(), power: u.power });
  }
  if (byKey.size > VALIDATORS_MAX) {
    throw new ConfigError("too-many-validators", `${byKey.size} validators`);
  }
  return new ValidatorSet([...byKey.values()]);
}

/** The outcome of {@link nextConfig}. */
export type NextConfig =
  | { readonly ok: true; readonly config: ValidatorConfig }
  | { readonly ok: false; readonly reason: string };

/**
 * Spec 3.4 steps 1-4: the configuration after `node`, from its parent's configuration, its
 * parent's view and the validator updates the Application returned for it.
 *
 * @example
 * ```ts
 * import { nextConfig, stableConfig } from "./reconfig.ts";
 * import { genesisNode } from "../codec.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const joining = { publicKey: new Uint8Array(32).fill(2), power: 1 };
 * const next = nextConfig(stableConfig(set), { ...genesisNode("c"), height: 5 }, 4, [joining]);
 * if (next.ok) console.log(next.config.next?.validators.length); // 2: a handover to two validators starts
 * ```
 */
export function nextConfig(
  parent: ValidatorConfig,
  node: Node,
  parentView: number,
  updates: readonly ValidatorUpdate[],
): NextConfig {
  if (parent.next === null) {
    if (updates.length === 0) return { ok: true, config: parent };
    // Spec 3.4 step 1: a change Node starts a handover; the old set still certifies it.
    let next: ValidatorSet;
    try {
      next = applyUpdates(parent.set, updates);
    } catch (e) {
      return { ok: false, reason: `bad validator update: ${(e as Error).message}` };
    }
    if (plantedReconfigBugs.activateBeforeCommit) return { ok: true, config: stableConfig(next) };
    return { ok: true, config: { set: parent.set, next, changeHeight: node.height, run: 0 } };
  }
  // Spec 3.4 step 2: one change at a time.
  if (updates.length > 0) return { ok: false, reason: "validator change in progress" };
  // Spec 3.4 step 4: `node.justify` certifies its parent `z`, and `z`, `y = z.parent` are direct
  // links (each certifies its parent, one view later) above the change: the 3-chain
  // `x <- y <- z` with `x` at or above the change Node is committed, and the handover completes.
  const link = bytesEqual(node.justify.nodeHash, node.parent);
  if (link && parent.run >= 2) {
    const config = stableConfig(parent.next);
    OLD_SETS.set(config, parent.set);
    return { ok: true, config };
  }
  const direct = link && node.view === parentView + 1;
  return { ok: true, config: { ...parent, run: direct ? Math.min(parent.run + 1, 2) : 0 } };
}

/** Two configurations are the same (same sets, same handover progress). */
export function sameConfig(a: ValidatorConfig, b: ValidatorConfig): boolean {
  if (a === b) return true;
  return setId(a.set) === setId(b.set) && (a.next === null) === (b.next === null) &&
    (a.next === null || setId(a.next) === setId(b.next!)) && a.changeHeight === b.changeHeight &&
    a.run === b.run;
}

// ---------------------------------------------------------------------------------------------
// The configuration record, kept in application state under a reserved key (Spec 3.4 step 6).

/** Keys starting with this prefix are reserved: an Application may not update them. */
export const RESERVED_KEY_PREFIX: Uint8Array = new TextEncoder().encode("\u0000hotstuff/");

/**
 * The key of the configuration record.
 *
 * @example
 * ```ts
 * import { isReservedKey, VALIDATOR_CONFIG_KEY } from "./reconfig.ts";
 * console.log(isReservedKey(VALIDATOR_CONFIG_KEY)); // true: an Application may not write it
 * ```
 */
export const VALIDATOR_CONFIG_KEY: Uint8Array = new TextEncoder().encode(
  "\u0000hotstuff/validators",
);

/** True iff `key` starts with {@link RESERVED_KEY_PREFIX}. */
export function isReservedKey(key: Uint8Array): boolean {
  if (key.length < RESERVED_KEY_PREFIX.length) return false;
  for (let i = 0; i < RESERVED_KEY_PREFIX.length; i++) {
    if (key[i] !== RESERVED_KEY_PREFIX[i]) return false;
  }
  return true;
}

/**
 * The record written with a Node `n` whose configuration differs from its parent's or whose
 * parent's differs from its grandparent's: the configurations after `n`'s grandparent, parent and
 * `n`. From the latest record, a restarted replica knows the configuration of its committed head
 * and the rule that certifies it, even when the record is that of the Node above the head (a
 * commit cut by a crash, SPECIFICATION.md 6.3).
 */
export interface ConfigRecord {
  /** Height of the Node that wrote it. */
  readonly height: number;
  /** Configuration after the Node's grandparent. */
  readonly grandparent: ValidatorConfig;
  /** Configuration after the Node's parent. */
  readonly parent: ValidatorConfig;
  /** Configuration after the Node. */
  readonly after: ValidatorConfig;
}

function encodeSet(set: ValidatorSet): unknown[] {
  return set.validators.map((v) => [v.publicKey, v.power]);
}

function encodeConfig(c: ValidatorConfig): unknown[] {
  return [encodeSet(c.set), c.next === null ? null : encodeSet(c.next), c.changeHeight, c.run];
}

/**
 * Encodes a configuration record (canonical CBOR).
 *
 * @example
 * ```ts
 * import { decodeConfigRecord, encodeConfigRecord, stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const c = stableConfig(set);
 * const bytes = encodeConfigRecord({ height: 7, grandparent: c, parent: c, after: c });
 * console.log(decodeConfigRecord(bytes).height); // 7
 * ```
 */
export function encodeConfigRecord(r: ConfigRecord): Uint8Array {
  return encodeValue([
    1,
    r.height,
    encodeConfig(r.grandparent),
    encodeConfig(r.parent),
    encodeConfig(r.after),
  ]);
}

function decodeSet(v: unknown): ValidatorSet {
  if (!Array.isArray(v)) throw new ConfigError("bad-config-record", "set is not an array");
  if (v.length > VALIDATORS_MAX) {
    throw new ConfigError("bad-config-record", `${v.length} validators, at most ${VALIDATORS_MAX}`);
  }
  return new ValidatorSet(v.map((e) => {
    if (!Array.isArray(e) || e.length !== 2 || !(e[0] instanceof Uint8Array)) {
      throw new ConfigError("bad-config-record", "bad validator entry");
    }
    return { publicKey: e[0], power: e[1] as number };
  }));
}

function decodeConfig(v: unknown): ValidatorConfig {
  if (!Array.isArray(v) || v.length !== 4) {
    throw new ConfigError("bad-config-record", "bad configuration");
  }
  const [set, next, changeHeight, run] = v;
  if (!Number.isSafeInteger(changeHeight) || !Number.isSafeInteger(run)) {
    throw new ConfigError("bad-config-record", "bad configuration numbers");
  }
  return {
    set: decodeSet(set),
    next: next === null ? null : decodeSet(next),
    changeHeight: changeHeight as number,
    run: run as number,
  };
}

/**
 * Decodes a configuration record written by {@link encodeConfigRecord}.
 *
 * @throws {ConfigError} on a malformed record (storage corruption)
 * @example
 * ```ts
 * import { decodeConfigRecord, encodeConfigRecord, stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const c = stableConfig(set);
 * const record = decodeConfigRecord(encodeConfigRecord({ height: 1, grandparent: c, parent: c, after: c }));
 * console.log(record.after.set.totalPower); // 1
 * ```
 */
export function decodeConfigRecord(bytes: Uint8Array): ConfigRecord {
  const v = decodeValue(bytes);
  if (!Array.isArray(v) || v.length !== 5 || v[0] !== 1 || !Number.isSafeInteger(v[1])) {
    throw new ConfigError("bad-config-record", "bad configuration record");
  }
  return {
    height: v[1] as number,
    grandparent: decodeConfig(v[2]),
    parent: decodeConfig(v[3]),
    after: decodeConfig(v[4]),
  };
}

/**
 * The canonical encoding of a configuration: CBOR `[set, next or null, changeHeight, run]`, a set
 * being `[[publicKey, power], ...]` sorted by key. A Node's `configHash` is the SHA-256 of the
 * encoding of its parent's configuration (SPECIFICATION.md 3.4 step 8), and a commit proof carries
 * these bytes when a configuration changes in it (15.1).
 *
 * @example
 * ```ts
 * import { decodeValidatorConfig, encodeValidatorConfig, stableConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const bytes = encodeValidatorConfig(stableConfig(set));
 * console.log(decodeValidatorConfig(bytes).set.totalPower); // 1
 * ```
 */
export function encodeValidatorConfig(config: ValidatorConfig): Uint8Array {
  let bytes = ENCODED.get(config);
  if (bytes === undefined) {
    bytes = encodeValue(encodeConfig(config));
    ENCODED.set(config, bytes);
  }
  return bytes;
}

/** The encoding of each configuration, made once (a replica hashes it for every Node). */
const ENCODED = new WeakMap<ValidatorConfig, Uint8Array>();

/** The SHA-256 of each configuration's encoding, made once. */
const HASHES = new WeakMap<ValidatorConfig, Uint8Array>();

/**
 * SHA-256 of {@link encodeValidatorConfig}: what a Node's `configHash` holds for its parent's
 * configuration (SPECIFICATION.md 3.4 step 8).
 *
 * @example
 * ```ts
 * import { stableConfig, validatorConfigHash } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * console.log(validatorConfigHash(stableConfig(set)).length); // 32
 * ```
 */
export function validatorConfigHash(config: ValidatorConfig): Uint8Array {
  let hash = HASHES.get(config);
  if (hash === undefined) {
    hash = sha256Bytes(encodeValidatorConfig(config));
    HASHES.set(config, hash);
  }
  return hash;
}

/**
 * Strictly decodes {@link encodeValidatorConfig}'s bytes: at most {@link VALIDATORS_MAX}
 * validators per set, 32-byte keys, positive powers, and the canonical encoding only.
 *
 * @throws {ConfigError} with reason `bad-config` on anything else
 * @example
 * ```ts
 * import { decodeValidatorConfig } from "./reconfig.ts";
 * try {
 *   decodeValidatorConfig(new Uint8Array([0x80]));
 * } catch (e) {
 *   console.log((e as Error).name); // ConfigError
 * }
 * ```
 */
export function decodeValidatorConfig(bytes: Uint8Array): ValidatorConfig {
  let config: ValidatorConfig;
  try {
    config = decodeConfig(decodeValue(bytes));
  } catch (e) {
    throw new ConfigError("bad-config", `not a validator configuration: ${(e as Error).message}`);
  }
  // Stable: no handover fields; handing over: the change Node's height and a run of 0..2.
  const valid = config.next === null
    ? config.changeHeight === 0 && config.run === 0
    : config.changeHeight >= 1 && config.run >= 0 && config.run <= 2;
  if (!valid) throw new ConfigError("bad-config", "bad handover fields");
  if (!bytesEqual(encodeValidatorConfig(config), bytes)) {
    throw new ConfigError("bad-config", "not the canonical encoding");
  }
  return config;
}

/**
 * A Node's configuration and the configuration of its parent (whose rule certifies it).
 *
 * @example
 * ```ts
 * import { type NodeConfig, rootConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const genesis: NodeConfig = rootConfig(set, null, 0);
 * console.log(genesis.parent.set === set); // true
 * ```
 */
export interface NodeConfig {
  /** The configuration after the Node's parent: `certifyingRule(parent)` certifies the Node. */
  readonly parent: ValidatorConfig;
  /** The configuration after the Node. */
  readonly after: ValidatorConfig;
}

/**
 * Spec 3.4 step 6: the committed head's configurations from the latest record in committed state
 * (or null: none written yet, the genesis set holds).
 *
 * @example
 * ```ts
 * import { rootConfig } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const { after } = rootConfig(set, null, 0); // no record written yet: the genesis set holds
 * console.log(after.next); // null
 * ```
 */
export function rootConfig(
  genesis: ValidatorSet,
  record: ConfigRecord | null,
  rootHeight: number,
): NodeConfig {
  if (record === null) return { parent: stableConfig(genesis), after: stableConfig(genesis) };
  if (record.height === rootHeight + 1) {
    return { parent: record.grandparent, after: record.parent };
  }
  if (record.height === rootHeight) return { parent: record.parent, after: record.after };
  if (record.height > rootHeight) {
    throw new ConfigError(
      "bad-config-record",
      `configuration record of height ${record.height} above head ${rootHeight}`,
    );
  }
  return { parent: record.after, after: record.after };
}

/**
 * A Node's configuration and its parent's, from the configuration record its updates hold (Spec
 * 3.4 step 6); null when it wrote none (its configuration is its parent's). What commit proofs
 * are cut by (15.1).
 *
 * @example
 * ```ts
 * import { nodeConfigOf } from "./reconfig.ts";
 * nodeConfigOf([]); // null: no record, the configuration did not change here
 * ```
 */
export function nodeConfigOf(
  updates: readonly (readonly [Uint8Array, Uint8Array | null])[],
): NodeConfig | null {
  const r = recordOf(updates);
  return r === null ? null : { parent: r.parent, after: r.after };
}

/** The configuration record a Node carries, if its updates hold one. */
export function recordOf(
  updates: readonly (readonly [Uint8Array, Uint8Array | null])[],
): ConfigRecord | null {
  for (const [k, v] of updates) {
    if (v !== null && bytesEqual(k, VALIDATOR_CONFIG_KEY)) return decodeConfigRecord(v);
  }
  return null;
}

/**
 * The validator configuration as of the state an Application hook is given (committed state with
 * the pending updates of uncommitted ancestors): the configuration after the parent of the Node
 * being validated or produced. Null means the genesis set is in force, unchanged.
 *
 * @example
 * ```ts
 * import { readValidatorConfig } from "./reconfig.ts";
 * const state = { get: (_key: Uint8Array) => Promise.resolve(null) };
 * const config = await readValidatorConfig(state);
 * console.log(config === null ? "genesis set" : config.next !== null ? "handover" : "stable");
 * ```
 */
export async function readValidatorConfig(
  state: { get(key: Uint8Array): Promise<Uint8Array | null> },
): Promise<ValidatorConfig | null> {
  const bytes = await state.get(VALIDATOR_CONFIG_KEY);
  return bytes === null ? null : decodeConfigRecord(bytes).after;
}
