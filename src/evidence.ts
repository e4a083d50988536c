/**
 * Evidence of equivocation: a validator's two conflicting signed messages of one view (two
 * proposals, or two votes), checked by {@link verifyEvidence}, kept by an {@link EvidenceStore}
 * (bounded; a Deno KV one survives restarts), served at `GET /evidence` and handed to the
 * Application. See SPECIFICATION.md section 16.
 *
 * Anyone can check a record without trusting the replica that served it: both messages carry
 * their signer's signature over `(domain, chainId, view, hash)`.
 *
 * @module
 */
import { decodeMessage, encodeMessage, encodeValue, nodeHash, signedBytes } from "./codec.ts";
import { decodeValue } from "./codec.ts";
import type { Verifier } from "./crypto.ts";
import type { EquivocationEvidence } from "./events.ts";
import type { ConsensusMessage, PublicKey } from "./types.ts";
import { bytesEqual, SignatureDomain, toHex } from "./types.ts";
import type { ValidatorSet } from "./validators.ts";

export type { EquivocationEvidence } from "./events.ts";

/**
 * The validator that signed both messages of `evidence`.
 *
 * @example
 * ```ts
 * import { type EquivocationEvidence, evidenceOffender } from "./evidence.ts";
 * const signer = new Uint8Array(32).fill(1);
 * const vote = (b: number) => ({
 *   type: "vote" as const,
 *   view: 3,
 *   nodeHash: new Uint8Array(32).fill(b),
 *   signer,
 *   signature: new Uint8Array(64),
 * });
 * const record: EquivocationEvidence = { kind: "double-vote", first: vote(1), second: vote(2) };
 * console.log(evidenceOffender(record)); // the signer's key: the one to punish
 * ```
 */
export function evidenceOffender(evidence: EquivocationEvidence): PublicKey {
  return evidence.kind === "double-vote" ? evidence.first.signer : evidence.first.node.proposer;
}

/**
 * The view of `evidence`'s first message (after {@link verifyEvidence}: of both).
 *
 * @example
 * ```ts
 * import { type EquivocationEvidence, evidenceView } from "./evidence.ts";
 * const signer = new Uint8Array(32).fill(1);
 * const vote = (b: number) => ({
 *   type: "vote" as const,
 *   view: 3,
 *   nodeHash: new Uint8Array(32).fill(b),
 *   signer,
 *   signature: new Uint8Array(64),
 * });
 * const record: EquivocationEvidence = { kind: "double-vote", first: vote(1), second: vote(2) };
 * console.log(evidenceView(record)); // 3
 * ```
 */
export function evidenceView(evidence: EquivocationEvidence): number {
  return evidence.kind === "double-vote" ? evidence.first.view : evidence.first.node.view;
}

/**
 * Why {@link verifyEvidence} refused a record.
 *
 * @example
 * ```ts
 * import type { EvidenceRefusal } from "./evidence.ts";
 * const forged: EvidenceRefusal = "bad-signature";
 * ```
 */
export type EvidenceRefusal =
  | "bad-kind"
  | "different-view"
  | "different-signer"
  | "not-conflicting"
  | "unknown-signer"
  | "bad-signature";

/**
 * The verdict of {@link verifyEvidence}.
 *
 * @example
 * ```ts
 * import type { EvidenceVerdict } from "./evidence.ts";
 * function describe(v: EvidenceVerdict): string {
 *   return v.ok ? `equivocation in view ${v.view}` : `refused: ${v.reason}`;
 * }
 * ```
 */
export type EvidenceVerdict =
  | { readonly ok: true; readonly offender: PublicKey; readonly view: number }
  | { readonly ok: false; readonly reason: EvidenceRefusal; readonly detail: string };

/**
 * What {@link verifyEvidence} checks against.
 *
 * @example
 * ```ts
 * import type { EvidenceContext } from "./evidence.ts";
 * import { ed25519Verifier } from "./crypto.ts";
 * import { ValidatorSet } from "./validators.ts";
 * const set = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * const context: EvidenceContext = { chainId: "c", validators: set, verifier: ed25519Verifier() };
 * ```
 */
export interface EvidenceContext {
  /** The chain id both messages must be signed for. */
  readonly chainId: string;
  /**
   * The set the offender must belong to, or the sets of which it must belong to one: when
   * validator sets change (SPECIFICATION.md 3.4), the sets in force for the two messages' Nodes
   * (see `Engine` for how a replica picks them).
   */
  readonly validators: ValidatorSet | readonly ValidatorSet[];
  /** Signature checks. */
  readonly verifier: Verifier;
}

/** One message's (signer, view, signed hash), or null when its kind is not the record's. */
function parts(
  kind: EquivocationEvidence["kind"],
  m: ConsensusMessage,
): { signer: PublicKey; view: number; hash: Uint8Array; signature: Uint8Array } | null {
  if (kind === "double-vote" && m.type === "vote") {
    return { signer: m.signer, view: m.view, hash: m.nodeHash, signature: m.signature };
  }
  if (kind === "double-proposal" && m.type === "propose") {
    const hash = nodeHash(m.node);
    return { signer: m.node.proposer, view: m.node.view, hash, signature: m.signature };
  }
  return null;
}

/**
 * Spec 16.1: checks that `evidence` proves equivocation: two messages of its kind, by one
 * member, in one view, for different Nodes, both validly signed for this chain.
 *
 * @example
 * ```ts
 * import { type EquivocationEvidence, verifyEvidence } from "./evidence.ts";
 * const signer = new Uint8Array(32).fill(1);
 * const vote = (b: number) => ({
 *   type: "vote" as const,
 *   view: 3,
 *   nodeHash: new Uint8Array(32).fill(b),
 *   signer,
 *   signature: new Uint8Array(64),
 * });
 * const record: EquivocationEvidence = { kind: "double-vote", first: vote(1), second: vote(2) };
 * import { ed25519Verifier } from "./crypto.ts";
 * import { ValidatorSet } from "./validators.ts";
 * const validators = new ValidatorSet([{ publicKey: signer, power: 1 }]);
 * const verdict = await verifyEvidence(record, { chainId: "c", validators, verifier: ed25519Verifier() });
 * if (!verdict.ok) console.log(verdict.reason); // bad-signature: these signatures are zeros
 * ```
 */
export async function verifyEvidence(
  evidence: EquivocationEvidence,
  context: EvidenceContext,
): Promise<EvidenceVerdict> {
  // Spec 16.1 step 1: both messages are of the record's kind.
  const a = parts(evidence.kind, evidence.first);
  const b = parts(evidence.kind, evidence.second);
  if (a === null || b === null) {
    return { ok: false, reason: "bad-kind", detail: `not two messages of ${evidence.kind}` };
  }
  // Spec 16.1 step 2: one view, one signer, and that signer a member.
  if (a.view !== b.view) {
    return { ok: false, reason: "different-view", detail: `views ${a.view} and ${b.view}` };
  }
  if (!bytesEqual(a.signer, b.signer)) {
    return { ok: false, reason: "different-signer", detail: toHex(b.signer) };
  }
  const sets = Array.isArray(context.validators)
    ? context.validators as readonly ValidatorSet[]
    : [context.validators as ValidatorSet];
  if (!sets.some((set) => set.get(a.signer) !== undefined)) {
    return { ok: false, reason: "unknown-signer", detail: toHex(a.signer) };
  }
  // Spec 16.1 step 3: conflicting: different Nodes (the same message twice proves nothing).
  if (bytesEqual(a.hash, b.hash)) {
    return { ok: false, reason: "not-conflicting", detail: `both for ${toHex(a.hash)}` };
  }
  // Spec 16.1 step 4: both signatures, over this chain's signed bytes.
  const domain = evidence.kind === "double-vote" ? SignatureDomain.vote : SignatureDomain.propose;
  for (const [i, p] of [a, b].entries()) {
    const bytes = signedBytes(domain, context.chainId, p.view, p.hash);
    if (!await context.verifier.verify(p.signer, bytes, p.signature)) {
      return { ok: false, reason: "bad-signature", detail: i === 0 ? "first" : "second" };
    }
  }
  return { ok: true, offender: a.signer, view: a.view };
}

/**
 * Canonical CBOR of a record: `[kind, encodeMessage(first), encodeMessage(second)]`.
 *
 * @example
 * ```ts
 * import { type EquivocationEvidence, decodeEvidence, encodeEvidence } from "./evidence.ts";
 * const signer = new Uint8Array(32).fill(1);
 * const vote = (b: number) => ({
 *   type: "vote" as const,
 *   view: 3,
 *   nodeHash: new Uint8Array(32).fill(b),
 *   signer,
 *   signature: new Uint8Array(64),
 * });
 * const record: EquivocationEvidence = { kind: "double-vote", first: vote(1), second: vote(2) };
 * const again = decodeEvidence(encodeEvidence(record)); // the record again
 * ```
 */
export function encodeEvidence(evidence: EquivocationEvidence): Uint8Array {
  return encodeValue([
    evidence.kind,
    encodeMessage(evidence.first),
    encodeMessage(evidence.second),
  ]);
}

/**
 * Decodes {@link encodeEvidence}'s bytes; null when they are not a well-formed record (the
 * signatures are not checked: see {@link verifyEvidence}).
 *
 * @example
 * ```ts
 * import { decodeEvidence } from "./evidence.ts";
 * decodeEvidence(new Uint8Array([0x80])); // null
 * ```
 */
export function decodeEvidence(bytes: Uint8Array): EquivocationEvidence | null {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 3) return null;
  const [kind, first, second] = v as unknown[];
  if (!(first instanceof Uint8Array) || !(second instanceof Uint8Array)) return null;
  const a = decodeMessage(first);
  const b = decodeMessage(second);
  if (!a.ok || !b.ok) return null;
  if (kind === "double-vote" && a.value.type === "vote" && b.value.type === "vote") {
    return { kind, first: a.value, second: b.value };
  }
  if (kind === "double-proposal" && a.value.type === "propose" && b.value.type === "propose") {
    return { kind, first: a.value, second: b.value };
  }
  return null;
}

/**
 * A stored record with its sequence number (1, 2, ... in the order it was stored).
 *
 * @example
 * ```ts
 * import { type EvidenceEntry, MemoryEvidenceStore } from "./evidence.ts";
 * const page: EvidenceEntry[] = await new MemoryEvidenceStore().list(0, 32); // [] when empty
 * ```
 */
export interface EvidenceEntry {
  /** Position in the store, from 1. */
  readonly seq: number;
  /** The record. */
  readonly evidence: EquivocationEvidence;
}

/**
 * Bounds of an {@link EvidenceStore}.
 *
 * @example
 * ```ts
 * import type { EvidenceLimits } from "./evidence.ts";
 * const small: EvidenceLimits = { perOffenderMax: 1, recordsMax: 64 };
 * ```
 */
export interface EvidenceLimits {
  /** Records kept per offender (the first ones; one is proof enough). Default 8. */
  readonly perOffenderMax: number;
  /** Records kept in all. Default 1024. */
  readonly recordsMax: number;
}

/**
 * The default {@link EvidenceLimits}.
 *
 * @example
 * ```ts
 * import { DEFAULT_EVIDENCE_LIMITS } from "./evidence.ts";
 * console.log(DEFAULT_EVIDENCE_LIMITS.recordsMax); // 1024
 * ```
 */
export const DEFAULT_EVIDENCE_LIMITS: EvidenceLimits = { perOffenderMax: 8, recordsMax: 1024 };

/**
 * Where verified evidence is kept. `add` stores a record unless one of the same kind, offender
 * and view is stored, or a limit is reached; it resolves to whether it stored it.
 *
 * @example
 * ```ts
 * import { type EvidenceStore, MemoryEvidenceStore } from "./evidence.ts";
 * const store: EvidenceStore = new MemoryEvidenceStore();
 * console.log(await store.count()); // 0
 * ```
 */
export interface EvidenceStore {
  /** Stores a verified record (durably, for a persistent store); false if not stored. */
  add(evidence: EquivocationEvidence): Promise<boolean>;
  /** Up to `limit` records with `seq > after`, ascending. */
  list(after: number, limit: number): Promise<EvidenceEntry[]>;
  /** Records stored. */
  count(): Promise<number>;
}

/** The identity of a record: one per kind, offender and view. */
function recordKey(evidence: EquivocationEvidence): string {
  return `${evidence.kind}:${toHex(evidenceOffender(evidence))}:${evidenceView(evidence)}`;
}

/**
 * An in-memory {@link EvidenceStore} (tests, the simulator).
 *
 * @example
 * ```ts
 * import { MemoryEvidenceStore } from "./evidence.ts";
 * const store = new MemoryEvidenceStore();
 * await store.count(); // 0
 * ```
 */
export class MemoryEvidenceStore implements EvidenceStore {
  readonly #entries: EvidenceEntry[] = [];
  readonly #keys = new Set<string>();
  readonly #perOffender = new Map<string, number>();
  readonly #limits: EvidenceLimits;

  /**
   * An empty store.
   *
   * @param limits bounds (default {@link DEFAULT_EVIDENCE_LIMITS})
   */
  constructor(limits: EvidenceLimits = DEFAULT_EVIDENCE_LIMITS) {
    this.#limits = limits;
  }

  add(evidence: EquivocationEvidence): Promise<boolean> {
    const key = recordKey(evidence);
    const offender = toHex(evidenceOffender(evidence));
    const n = this.#perOffender.get(offender) ?? 0;
    if (
      this.#keys.has(key) || n >= this.#limits.perOffenderMax ||
      this.#entries.length >= this.#limits.recordsMax
    ) return Promise.resolve(false);
    this.#keys.add(key);
    this.#perOffender.set(offender, n + 1);
    this.#entries.push({ seq: this.#entries.length + 1, evidence });
    return Promise.resolve(true);
  }

  list(after: number, limit: number): Promise<EvidenceEntry[]> {
    return Promise.resolve(this.#entries.slice(Math.max(0, after), Math.max(0, after) + limit));
  }

  count(): Promise<number> {
    return Promise.resolve(this.#entries.length);
  }
}

/**
 * An {@link EvidenceStore} in a Deno KV of its own (e.g. `evidence.kv` in the data directory):
 * records survive restarts. Keys: `["evidence", seq]` (the encoded record, at most a few KiB:
 * proposals carry a batch digest list, not commands), `["key", kind:offender:view]`,
 * `["offender", hex]` (count) and `["count"]`. Each `add` is one atomic commit.
 *
 * @example
 * ```ts
 * import { DenoKvEvidenceStore } from "./evidence.ts";
 * const store = await DenoKvEvidenceStore.open(":memory:");
 * await store.count(); // 0
 * store.close();
 * ```
 */
export class DenoKvEvidenceStore implements EvidenceStore {
  readonly #kv: Deno.Kv;
  readonly #limits: EvidenceLimits;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(kv: Deno.Kv, limits: EvidenceLimits) {
    this.#kv = kv;
    this.#limits = limits;
  }

  /**
   * Opens (or creates) the store at `path`.
   *
   * @param path the Deno KV path
   * @param limits bounds (default {@link DEFAULT_EVIDENCE_LIMITS})
   */
  static async open(
    path: string,
    limits: EvidenceLimits = DEFAULT_EVIDENCE_LIMITS,
  ): Promise<DenoKvEvidenceStore> {
    return new DenoKvEvidenceStore(await Deno.openKv(path), limits);
  }

  add(evidence: EquivocationEvidence): Promise<boolean> {
    // One add at a time: the count is read and written in one atomic operation each.
    const next = this.#queue.then(() => this.#add(evidence));
    this.#queue = next.catch(() => {});
    return next;
  }

  async #add(evidence: EquivocationEvidence): Promise<boolean> {
    const bytes = encodeEvidence(evidence);
    if (bytes.length > EVIDENCE_BYTES_MAX) return false;
    const offender = toHex(evidenceOffender(evidence));
    const [known, count, perOffender] = await this.#kv.getMany<[string, bigint, bigint]>([
      ["key", recordKey(evidence)],
      ["count"],
      ["offender", offender],
    ]);
    const n = Number(count.value ?? 0n);
    const m = Number(perOffender.value ?? 0n);
    if (known.value !== null) return false;
    if (n >= this.#limits.recordsMax || m >= this.#limits.perOffenderMax) return false;
    const r = await this.#kv.atomic()
      .check(known, count, perOffender)
      .set(["evidence", n + 1], bytes)
      .set(["key", recordKey(evidence)], "")
      .set(["count"], BigInt(n + 1))
      .set(["offender", offender], BigInt(m + 1))
      .commit();
    return r.ok;
  }

  async list(after: number, limit: number): Promise<EvidenceEntry[]> {
    const out: EvidenceEntry[] = [];
    const iter = this.#kv.list<Uint8Array>({
      start: ["evidence", Math.max(0, after) + 1],
      end: ["evidence", Number.MAX_SAFE_INTEGER],
    }, { limit });
    for await (const e of iter) {
      const evidence = decodeEvidence(e.value);
      if (evidence !== null) out.push({ seq: e.key[1] as number, evidence });
    }
    return out;
  }

  async count(): Promise<number> {
    return Number((await this.#kv.get<bigint>(["count"])).value ?? 0n);
  }

  /** Closes the KV. */
  close(): void {
    this.#kv.close();
  }
}

/** Largest encoded record stored (a Deno KV value holds at most 64 KiB). */
const EVIDENCE_BYTES_MAX = 60 * 1024;
