/**
 * Key proofs: a state key's value (or its absence) proven from signatures alone, against the
 * state root a committed Node carries. See SPECIFICATION.md 15.3.
 *
 * A key proof is the canonical CBOR array
 * `[key, value or null, [bucket, [[key, valueHash], ...], [sibling, ...12]], commitProof]`: the tree
 * proof of the key (`src/state/tree.ts`) against the root of the committed state after height `H`,
 * and a commit proof (`commit_proof.ts`) whose first two Nodes, at `H` and `H + 1`, are proven
 * committed: the state after `H` is the root Node `H + 1` carries (SPECIFICATION.md 2, 7). The
 * same anchor proves snapshot manifests (`src/state/sync.ts`).
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import {
  STATE_PROOF_ENTRIES_MAX,
  STATE_TREE_DEPTH,
  type StateProof,
  verifyStateProof,
} from "../state/tree.ts";
import type { Hash, Node, QuorumCertificate } from "../types.ts";
import { bytesEqual } from "../types.ts";
import {
  type CommitProof,
  type CommitTrust,
  type CommitVerdict,
  decodeCommitProof,
  encodeCommitProof,
  verifyCommitProof,
} from "./commit_proof.ts";

/**
 * A key's value proven against the state root of a committed Node.
 *
 * @example
 * ```ts
 * import { decodeKeyProof, type KeyProof } from "./state_proof.ts";
 * declare const body: Uint8Array; // the answer to GET /kv/{key}?proof
 * const proof: KeyProof = decodeKeyProof(body);
 * console.log(proof.commitProof.nodes[0]!.height, proof.value === null ? "absent" : "present");
 * ```
 */
export interface KeyProof {
  /** The state key. */
  readonly key: Uint8Array;
  /** Its value, or null when absent. */
  readonly value: Uint8Array | null;
  /** The tree proof against the anchored root. */
  readonly proof: StateProof;
  /** A commit proof whose first two Nodes (heights `H`, `H + 1`) are committed: the anchor. */
  readonly commitProof: CommitProof;
}

/**
 * The committed state a verified commit proof anchors: the state after its first Node (height
 * `height`), whose root the second Node carries.
 *
 * @example
 * ```ts
 * import { stateAnchor, type StateAnchor } from "./state_proof.ts";
 * import type { CommitVerdict } from "./commit_proof.ts";
 * declare const verdict: CommitVerdict; // of a commit proof from H to H + 1
 * const anchor: StateAnchor | string = verdict.ok ? stateAnchor(verdict) : verdict.reason;
 * if (typeof anchor !== "string") console.log(anchor.height, anchor.root);
 * ```
 */
export interface StateAnchor {
  /** Height of the committed Node after which the state is (`H`). */
  readonly height: number;
  /** That Node. */
  readonly node: Node;
  /** Its hash. */
  readonly nodeHash: Hash;
  /** The root of the committed state after it (carried by the committed Node at `H + 1`). */
  readonly root: Hash;
  /** The QC of the Node at `H` (the justify of the Node at `H + 1`), when it is one. */
  readonly qc: QuorumCertificate | null;
}

/**
 * The state anchor of a verified commit proof (see {@link StateAnchor}), or why there is none:
 * fewer than two committed Nodes, or a Node at `H + 1` without a state root.
 *
 * @example
 * ```ts
 * import { decodeCommitProof, verifyCommitProof } from "./commit_proof.ts";
 * import { stateAnchor } from "./state_proof.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const body: Uint8Array; // a commit proof from H to H + 1 (GET /proof?from=H&to=H+1)
 * declare const validators: ValidatorSet;
 * const verdict = await verifyCommitProof(decodeCommitProof(body), { chainId: "kv-1", validators });
 * const anchor = verdict.ok ? stateAnchor(verdict) : verdict.reason;
 * if (typeof anchor !== "string") console.log(`the state after ${anchor.height}`, anchor.root);
 * ```
 */
export function stateAnchor(verdict: CommitVerdict & { ok: true }): StateAnchor | string {
  const [first, second] = verdict.committed;
  if (first === undefined || second === undefined) {
    return "the proof shows fewer than two Nodes committed";
  }
  // Linked by the proof's own check (each Node's parent is the one before).
  if (!bytesEqual(second.node.parent, first.hash)) return "the first two Nodes are not linked";
  if (second.node.stateRoot.length !== 32) return "the chain carries no state roots";
  const justify = second.node.justify;
  const qc = bytesEqual(justify.nodeHash, first.hash) ? justify : null;
  return {
    height: first.node.height,
    node: first.node,
    nodeHash: first.hash,
    root: second.node.stateRoot,
    qc,
  };
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
    readonly reason: "not-committed" | "no-state-root" | "bad-state-proof";
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
  // Spec 15.3 step 1.
  const commit = await verifyCommitProof(proof.commitProof, trust);
  if (!commit.ok) {
    return { ok: false, reason: "not-committed", detail: `${commit.reason}: ${commit.detail}` };
  }
  // Spec 15.3 step 2.
  const anchor = stateAnchor(commit);
  if (typeof anchor === "string") return { ok: false, reason: "no-state-root", detail: anchor };
  // Spec 15.3 step 3.
  const state = verifyStateProof(anchor.root, proof.key, proof.value, proof.proof);
  if (!state.ok) return { ok: false, reason: "bad-state-proof", detail: state.reason };
  return { ok: true, value: state.value, height: anchor.height, nodeHash: anchor.nodeHash };
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
 * console.log(proof.commitProof.nodes[0]!.height);
 * ```
 */
export function decodeKeyProof(bytes: Uint8Array): KeyProof {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch (e) {
    throw new KeyProofDecodeError(`not CBOR: ${(e as Error).message}`);
  }
  const bad = (what: string): never => {
    throw new KeyProofDecodeError(`bad ${what}`);
  };
  if (!Array.isArray(v) || v.length !== 4) bad("shape");
  const [key, value, treeValue, commitBytes] = v as unknown[];
  if (!(key instanceof Uint8Array)) bad("key");
  if (value !== null && !(value instanceof Uint8Array)) bad("value");
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
    proof: { bucket: bucket as number, entries: pairs, siblings: siblings as Hash[] },
    commitProof,
  };
}
