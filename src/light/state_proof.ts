/**
 * Key proofs: a state key's value (or its absence) proven from signatures alone. See
 * SPECIFICATION.md 15.3.
 *
 * A key proof is the canonical CBOR array
 * `[key, value or null, certificate, [bucket, [[key, valueHash], ...], [sibling, ...12]], commitProof]`:
 * a {@link StateCertificate} (a quorum's signatures over a committed Node's height, hash and
 * state root), the tree proof of the key against that root (`src/state/tree.ts`), and a commit
 * proof (`commit_proof.ts`) that the certificate's Node is committed.
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import {
  certificateFromValue,
  certificateToValue,
  type StateCertificate,
  verifyStateCertificate,
} from "../state/certificate.ts";
import {
  STATE_PROOF_ENTRIES_MAX,
  STATE_TREE_DEPTH,
  type StateProof,
  verifyStateProof,
} from "../state/tree.ts";
import type { Hash } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import {
  type CommitProof,
  type CommitTrust,
  decodeCommitProof,
  encodeCommitProof,
  verifyCommitProof,
} from "./commit_proof.ts";

/**
 * A key's value proven against a certified root of a committed Node.
 *
 * @example
 * ```ts
 * import { decodeKeyProof, type KeyProof } from "./state_proof.ts";
 * declare const body: Uint8Array; // the answer to GET /kv/{key}?proof
 * const proof: KeyProof = decodeKeyProof(body);
 * console.log(proof.certificate.height, proof.value === null ? "absent" : "present");
 * ```
 */
export interface KeyProof {
  /** The state key. */
  readonly key: Uint8Array;
  /** Its value, or null when absent. */
  readonly value: Uint8Array | null;
  /** The certified root. */
  readonly certificate: StateCertificate;
  /** The tree proof against `certificate.root`. */
  readonly proof: StateProof;
  /** A commit proof of the certificate's Node. */
  readonly commitProof: CommitProof;
}

/**
 * The outcome of {@link verifyKeyProof}.
 *
 * @example
 * ```ts
 * import type { KeyProofVerdict } from "./state_proof.ts";
 * const describe = (v: KeyProofVerdict): string =>
 *   v.ok ? `proven at height ${v.height}` : `${v.reason}: ${v.detail}`;
 * ```
 */
export type KeyProofVerdict =
  | {
    readonly ok: true;
    /** The proven value (null: absent). */
    readonly value: Uint8Array | null;
    /** Height of the committed Node whose state holds it. */
    readonly height: number;
    /** That Node's hash. */
    readonly nodeHash: Hash;
  }
  | {
    readonly ok: false;
    readonly reason: "bad-certificate" | "not-committed" | "bad-state-proof";
    readonly detail: string;
  };

/**
 * Checks a key proof, trusting only `trust` (chain id and validator set). Never throws on a
 * malformed proof.
 *
 * @example
 * ```ts
 * import { decodeKeyProof, verifyKeyProof } from "./state_proof.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const body: Uint8Array; // the answer to GET /kv/{key}?proof
 * declare const validators: ValidatorSet;
 * const verdict = await verifyKeyProof(decodeKeyProof(body), { chainId: "kv-1", validators });
 * if (verdict.ok) console.log(verdict.height, verdict.value);
 * ```
 */
export async function verifyKeyProof(
  proof: KeyProof,
  trust: CommitTrust,
): Promise<KeyProofVerdict> {
  const cert = proof.certificate;
  // Spec 15.3 step 1.
  const problem = await verifyStateCertificate(cert, trust);
  if (problem !== null) return { ok: false, reason: "bad-certificate", detail: problem };
  // Spec 15.3 step 2.
  const commit = await verifyCommitProof(proof.commitProof, trust);
  if (!commit.ok) {
    return { ok: false, reason: "not-committed", detail: `${commit.reason}: ${commit.detail}` };
  }
  const proven = commit.committed.find((c) => c.node.height === cert.height);
  if (proven === undefined || !bytesEqual(proven.hash, cert.nodeHash)) {
    return {
      ok: false,
      reason: "not-committed",
      detail: `the proof does not show Node ${toHex(cert.nodeHash)} committed at ${cert.height}`,
    };
  }
  // Spec 15.3 step 3.
  const state = verifyStateProof(cert.root, proof.key, proof.value, proof.proof);
  if (!state.ok) return { ok: false, reason: "bad-state-proof", detail: state.reason };
  return { ok: true, value: state.value, height: cert.height, nodeHash: cert.nodeHash };
}

/**
 * The canonical CBOR encoding of a key proof (see the module docs).
 *
 * @example
 * ```ts
 * import { decodeKeyProof, encodeKeyProof, type KeyProof } from "./state_proof.ts";
 * declare const proof: KeyProof; // e.g. from StateService.keyProof
 * const body = encodeKeyProof(proof); // what GET /kv/{key}?proof answers
 * decodeKeyProof(body); // an equal proof
 * ```
 */
export function encodeKeyProof(p: KeyProof): Uint8Array {
  return encodeValue([
    p.key,
    p.value,
    certificateToValue(p.certificate),
    [p.proof.bucket, p.proof.entries.map(([k, h]) => [k, h]), p.proof.siblings],
    encodeCommitProof(p.commitProof),
  ]);
}

/**
 * A key proof that is not well formed.
 *
 * @example
 * ```ts
 * import { decodeKeyProof, KeyProofDecodeError } from "./state_proof.ts";
 * try {
 *   decodeKeyProof(new Uint8Array([0x80]));
 * } catch (e) {
 *   console.log(e instanceof KeyProofDecodeError, (e as Error).message); // true "bad shape"
 * }
 * ```
 */
export class KeyProofDecodeError extends Error {
  /** The error's name. */
  override readonly name = "KeyProofDecodeError";
}

/**
 * Decodes {@link encodeKeyProof}, checking every field's type and bounds.
 *
 * @throws {KeyProofDecodeError} when malformed
 *
 * @example
 * ```ts
 * import { decodeKeyProof } from "./state_proof.ts";
 * const response = await fetch("http://127.0.0.1:9001/kv/greeting?proof");
 * const proof = decodeKeyProof(new Uint8Array(await response.arrayBuffer()));
 * console.log(proof.certificate.height);
 * ```
 */
export function decodeKeyProof(bytes: Uint8Array, signaturesMax = 1024): KeyProof {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch (e) {
    throw new KeyProofDecodeError(`not CBOR: ${(e as Error).message}`);
  }
  const bad = (what: string): never => {
    throw new KeyProofDecodeError(`bad ${what}`);
  };
  if (!Array.isArray(v) || v.length !== 5) bad("shape");
  const [key, value, certValue, treeValue, commitBytes] = v as unknown[];
  if (!(key instanceof Uint8Array)) bad("key");
  if (value !== null && !(value instanceof Uint8Array)) bad("value");
  const certificate = certificateFromValue(certValue, signaturesMax) ?? bad("certificate");
  if (!Array.isArray(treeValue) || treeValue.length !== 3) bad("state proof");
  const [bucket, entries, siblings] = treeValue as unknown[];
  if (typeof bucket !== "number" || !Number.isInteger(bucket)) bad("bucket");
  if (!Array.isArray(entries) || entries.length > STATE_PROOF_ENTRIES_MAX) bad("entries");
  const pairs = (entries as unknown[]).map((e) => {
    if (!Array.isArray(e) || e.length !== 2) return bad("entry");
    const [k, h] = e as unknown[];
    if (!(k instanceof Uint8Array) || !(h instanceof Uint8Array) || h.length !== 32) {
      return bad("entry");
    }
    return [k, h] as const;
  });
  if (!Array.isArray(siblings) || siblings.length !== STATE_TREE_DEPTH) bad("siblings");
  if (!(siblings as unknown[]).every((s) => s instanceof Uint8Array && s.length === 32)) {
    bad("siblings");
  }
  if (!(commitBytes instanceof Uint8Array)) bad("commit proof");
  let commitProof: CommitProof;
  try {
    commitProof = decodeCommitProof(commitBytes as Uint8Array);
  } catch (e) {
    throw new KeyProofDecodeError(`bad commit proof: ${(e as Error).message}`);
  }
  return {
    key: key as Uint8Array,
    value: value as Uint8Array | null,
    certificate,
    proof: { bucket: bucket as number, entries: pairs, siblings: siblings as Hash[] },
    commitProof,
  };
}
