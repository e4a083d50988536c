/**
 * Commit proofs: evidence, checkable from signatures alone, that a Node is committed. A light
 * client (a wallet, a bridge, a monitor) trusts a validator set, not a replica: it asks any replica
 * for a proof and decides with {@link verifyCommitProof}. See SPECIFICATION.md section 15.
 *
 * A proof is a run of Nodes of consecutive heights, each the parent of the next, whose last three
 * Nodes `b`, `b'`, `b''` are a direct chain in consecutive views (`b'.justify` certifies `b`,
 * `b''.justify` certifies `b'`), and a QC that certifies `b''`. That is exactly what makes an
 * honest replica commit `b` (SPECIFICATION.md 5.3): the QC of `b''` shows that validators holding
 * more than 2/3 of the power voted for `b''`, and an honest one votes for `b''` only after locking
 * on the QC of `b` (5.2), so no conflicting Node can gather a commit of its own while less than 1/3
 * of the power is Byzantine. Every Node of the run up to `b` is an ancestor of `b` by hash, so it
 * is committed too.
 *
 * @module
 */
import {
  decodeNode,
  decodeQC,
  decodeValue,
  encodeNode,
  encodeQC,
  encodeValue,
  nodeHash,
} from "../codec.ts";
import { MessageVerifier } from "../consensus/verify.ts";
import {
  decodeValidatorConfig,
  encodeValidatorConfig,
  type NodeConfig,
  QuorumRule,
  sameConfig,
  stableConfig,
  type ValidatorConfig,
  validatorConfigHash,
} from "../consensus/reconfig.ts";
import { ed25519Verifier, type Verifier } from "../crypto.ts";
import type { Hash, Node, QuorumCertificate } from "../types.ts";
import { bytesEqual } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";

/**
 * A commit proof: Nodes of ascending heights, and the QC of the last one.
 *
 * @example
 * ```ts
 * import { type CommitProof, decodeCommitProof } from "./commit_proof.ts";
 * declare const body: Uint8Array; // a replica's answer to GET /proof?from=F&to=T
 * const proof: CommitProof = decodeCommitProof(body);
 * console.log(proof.nodes.length, proof.certificate.view);
 * ```
 */
export interface CommitProof {
  /**
   * At least three Nodes of consecutive heights, each the parent of the next. The last three are
   * a direct chain in consecutive views; every Node but the last two is proven committed.
   */
  readonly nodes: readonly Node[];
  /** A QC for the last Node. */
  readonly certificate: QuorumCertificate;
  /**
   * The validator configuration after the last Node the proof commits (`b`), when a Node of the
   * proof changed it; null when it is the configuration before the first Node (the one the
   * verifier trusts); absent means null. Its hash is `configHash` of the Node after `b`
   * (SPECIFICATION.md 15.1).
   */
  readonly config?: ValidatorConfig | null;
}

/**
 * What a light client trusts: the chain's id and its validator set.
 *
 * @example
 * ```ts
 * import type { CommitTrust } from "./commit_proof.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const validators: ValidatorSet; // e.g. from a cluster file
 * const trust: CommitTrust = { chainId: "kv-1", validators };
 * ```
 */
export interface CommitTrust {
  /** The chain every certificate must name. */
  readonly chainId: string;
  /** The validators (keys and powers) whose quorums the client believes. */
  readonly validators: ValidatorSet;
  /**
   * The validator configuration after the Node before the proof's first Node, when the client
   * has followed a change (a verdict's `config`); default: `validators`, stable. The proof's QCs
   * are checked against the set it hands over to, or its set when stable.
   */
  readonly config?: ValidatorConfig;
  /** Signature checks (default: Ed25519 with Web Crypto). */
  readonly verifier?: Verifier;
}

/**
 * A Node proven committed, with its hash.
 *
 * @example
 * ```ts
 * import type { ProvenNode } from "./commit_proof.ts";
 * import { toHex } from "../types.ts";
 * const line = ({ node, hash }: ProvenNode): string => `height ${node.height}: ${toHex(hash)}`;
 * ```
 */
export interface ProvenNode {
  /** The Node. */
  readonly node: Node;
  /** Its hash. */
  readonly hash: Hash;
}

/**
 * The outcome of {@link verifyCommitProof}.
 *
 * @example
 * ```ts
 * import type { CommitVerdict } from "./commit_proof.ts";
 * const describe = (v: CommitVerdict): string =>
 *   v.ok ? `committed up to ${v.committed.at(-1)!.node.height}` : `${v.reason}: ${v.detail}`;
 * ```
 */
export type CommitVerdict =
  | {
    readonly ok: true;
    /** Every Node the proof shows committed, ascending by height (at least one). */
    readonly committed: readonly ProvenNode[];
    /**
     * The validator configuration after the last committed Node: the `config` to trust for the
     * next proof, which starts above it.
     */
    readonly config: ValidatorConfig;
  }
  | { readonly ok: false; readonly reason: CommitProofRejection; readonly detail: string };

/**
 * Why a commit proof was refused.
 *
 * @example
 * ```ts
 * import type { CommitProofRejection } from "./commit_proof.ts";
 * const forged = (r: CommitProofRejection): boolean => r === "bad-signature" || r === "no-quorum";
 * ```
 */
export type CommitProofRejection =
  | "too-short"
  | "too-long"
  | "bad-height"
  | "not-linked"
  | "not-consecutive"
  | "justify-mismatch"
  | "certificate-mismatch"
  | "wrong-chain"
  | "unknown-signer"
  | "duplicate-signer"
  | "no-quorum"
  | "bad-signature"
  | "bad-qc"
  | "config-mismatch";

/**
 * Whether a refusal means that the trusted validator set does not certify the chain where the
 * proof is: the set has changed since the one trusted (SPECIFICATION.md 15.2 step 5), so the
 * changes must be followed from an earlier height.
 *
 * @example
 * ```ts
 * import { trustedSetMoved } from "./commit_proof.ts";
 * trustedSetMoved("config-mismatch"); // true
 * trustedSetMoved("bad-signature"); // false: a forgery, not a change
 * ```
 */
export function trustedSetMoved(reason: CommitProofRejection): boolean {
  return reason === "config-mismatch" || reason === "no-quorum" || reason === "unknown-signer";
}

/**
 * Nodes past `to` that a replica reads when it builds a proof of heights `from..to` (`GET /proof`):
 * the direct chain `b', b''` and the Node carrying the QC of `b''` need 3; the rest allow for views
 * that are not consecutive. A request reads, and is charged for, `to - from + 1 +` this many Nodes.
 *
 * @example
 * ```ts
 * import { PROOF_LOOKAHEAD_NODES } from "./commit_proof.ts";
 * const nodesRead = (from: number, to: number) => to - from + 1 + PROOF_LOOKAHEAD_NODES;
 * nodesRead(5, 5); // 17
 * ```
 */
export const PROOF_LOOKAHEAD_NODES = 16;

/**
 * Most Nodes a proof may hold (a replica sends at most its `rangeMax`, 256 by default).
 *
 * @example
 * ```ts
 * import { COMMIT_PROOF_NODES_MAX, decodeCommitProof } from "./commit_proof.ts";
 * declare const body: Uint8Array;
 * const proof = decodeCommitProof(body, Math.min(258, COMMIT_PROOF_NODES_MAX)); // a tighter bound
 * ```
 */
export const COMMIT_PROOF_NODES_MAX = 1024;

/**
 * Decides from signatures alone whether the Nodes of `proof` are committed, trusting only
 * `trust`. Never throws for a malformed proof: a refusal carries its reason.
 *
 * @example
 * ```ts
 * import { ValidatorSet, verifyCommitProof, type CommitProof } from "../../mod.ts";
 * declare const proof: CommitProof; // from decodeCommitProof(await (await fetch(url)).bytes())
 * declare const validators: ValidatorSet;
 * const verdict = await verifyCommitProof(proof, { chainId: "kv-1", validators });
 * if (verdict.ok) console.log("committed up to", verdict.committed.at(-1)!.node.height);
 * else console.log("refused:", verdict.reason, verdict.detail);
 * ```
 */
export async function verifyCommitProof(
  proof: CommitProof,
  trust: CommitTrust,
): Promise<CommitVerdict> {
  const nodes = proof.nodes;
  if (nodes.length < 3) return refuse("too-short", `${nodes.length} Nodes, at least 3 needed`);
  if (nodes.length > COMMIT_PROOF_NODES_MAX) {
    return refuse("too-long", `${nodes.length} Nodes, at most ${COMMIT_PROOF_NODES_MAX}`);
  }
  // Spec 15.1 step 1: A run of consecutive heights above genesis, each Node the parent of the next.
  const hashes = nodes.map(nodeHash);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    if (n.height < 1) return refuse("bad-height", `Node ${i} has height ${n.height}`);
    if (i === 0) continue;
    if (n.height !== nodes[i - 1]!.height + 1) {
      return refuse("bad-height", `height ${n.height} follows ${nodes[i - 1]!.height}`);
    }
    if (!bytesEqual(n.parent, hashes[i - 1]!)) {
      return refuse("not-linked", `Node at height ${n.height} is not the child of the one before`);
    }
  }
  // Spec 15.1 step 2: The last three are a direct chain in consecutive views (5.3 items 2 and 3).
  const k = nodes.length - 3;
  const [b, b1, b2] = [nodes[k]!, nodes[k + 1]!, nodes[k + 2]!];
  if (b1.view !== b.view + 1 || b2.view !== b1.view + 1) {
    return refuse(
      "not-consecutive",
      `views ${b.view}, ${b1.view}, ${b2.view} are not consecutive`,
    );
  }
  // Spec 15.1 step 3: b'.justify certifies b, b''.justify certifies b', the certificate certifies b''.
  const chain: [QuorumCertificate, number, string][] = [
    [b1.justify, k, "justify-mismatch"],
    [b2.justify, k + 1, "justify-mismatch"],
    [proof.certificate, k + 2, "certificate-mismatch"],
  ];
  for (const [qc, i, reason] of chain) {
    const target = nodes[i]!;
    if (qc.view !== target.view || !bytesEqual(qc.nodeHash, hashes[i]!)) {
      return refuse(
        reason as CommitProofRejection,
        `a QC of view ${qc.view} does not certify the Node at height ${target.height}`,
      );
    }
  }
  // Spec 15.1 step 4: Each of the three QCs: the trusted chain, a quorum of the trusted set (the one handed over
  // to, during a change), valid signatures. Signers outside it are not counted: a joint QC of a
  // handover also holds the other set's signatures (3.4 step 3).
  const before = trust.config ?? stableConfig(trust.validators);
  const trusted = before.next ?? before.set;
  const rule = new QuorumRule([trusted]);
  const verifier = new MessageVerifier(
    trust.chainId,
    () => [rule],
    trust.verifier ?? ed25519Verifier(),
  );
  for (const [qc, i] of chain) {
    const members = qc.signatures.filter((s) => trusted.get(s.signer) !== undefined);
    if (members.length === 0) {
      return refuse(
        "unknown-signer",
        `QC of the Node at height ${nodes[i]!.height}: no signer is a trusted validator`,
      );
    }
    const verdict = await verifier.verifyQC({ ...qc, signatures: members }, rule);
    if (!verdict.ok) {
      return refuse(
        asRejection(verdict.reason),
        `QC of the Node at height ${nodes[i]!.height}: ${verdict.detail}`,
      );
    }
  }
  // Spec 15.1 step 5: The configuration after b: the proof's, or the trusted one when no Node of the proof
  // changed it; b'.configHash (checked by every voter for b', 3.4 step 8) must name it.
  const carried = proof.config ?? null;
  const config = carried ?? before;
  if (!bytesEqual(validatorConfigHash(config), b1.configHash)) {
    return refuse(
      "config-mismatch",
      carried === null
        ? `the validator configuration changed before height ${b1.height}: the proof must carry it`
        : `the configuration carried does not match the Node at height ${b1.height}`,
    );
  }
  const committed = nodes.slice(0, k + 1).map((node, i) => ({ node, hash: hashes[i]! }));
  return { ok: true, committed, config };
}

/**
 * Builds a commit proof from a replica's chain: the Nodes from `from` on, cut after the first
 * direct chain in consecutive views `b, b', b''` with `b` at height `to` or above whose `b''` has a
 * known QC. `chain` holds consecutive heights from `from` (a replica's committed Nodes, then the
 * branch of its highest QC); `certificateOf` looks up a QC for a Node when no Node of `chain`
 * carries one. `configs[i]`, when given, is the configuration record of `chain[i]` (its parent's
 * and its own configuration: a committed Node's record, or the NodeTree's), or null when it wrote
 * none (its configuration is its parent's). Then the proof stops at the first Node that changes the
 * configuration (`to` is lowered to it), so that the set the client trusts certifies it (15.1), and
 * carries the configuration after `b` when one of its Nodes recorded it. Returns null when `chain`
 * proves no commit at `to` or above.
 *
 * @example
 * ```ts
 * import { buildCommitProof } from "./commit_proof.ts";
 * await buildCommitProof([], 1, 1, () => Promise.resolve(null)); // null: nothing to prove
 * ```
 */
export async function buildCommitProof(
  chain: readonly Node[],
  from: number,
  to: number,
  certificateOf: (hash: Hash) => Promise<QuorumCertificate | null>,
  configs: readonly (NodeConfig | null)[] = [],
): Promise<CommitProof | null> {
  if (chain.length < 3 || chain[0]!.height !== from || to < from) return null;
  const change = configs.findIndex((c, i) =>
    i <= to - from && c !== null && !sameConfig(c.parent, c.after)
  );
  if (change >= 0) to = from + change;
  const hashes = chain.map(nodeHash);
  for (let k = to - from; k + 2 < chain.length; k++) {
    const [b, b1, b2] = [chain[k]!, chain[k + 1]!, chain[k + 2]!];
    if (b1.view !== b.view + 1 || b2.view !== b1.view + 1) continue;
    if (!certifies(b1.justify, b, hashes[k]!) || !certifies(b2.justify, b1, hashes[k + 1]!)) {
      continue;
    }
    const next = chain[k + 3];
    const certificate = next !== undefined && certifies(next.justify, b2, hashes[k + 2]!)
      ? next.justify
      : await certificateOf(hashes[k + 2]!);
    if (certificate === null || !certifies(certificate, b2, hashes[k + 2]!)) continue;
    const recorded = configs.slice(0, k + 1).findLast((c) => c !== null) ?? null;
    return { nodes: chain.slice(0, k + 3), certificate, config: recorded?.after ?? null };
  }
  return null;
}

/**
 * The canonical CBOR encoding of a proof: `[[encodeNode(node): bytes, ...], encodeQC(qc): bytes]`,
 * followed by `encodeValidatorConfig(config): bytes` when the proof carries a configuration.
 *
 * @example
 * ```ts
 * import { encodeCommitProof } from "./commit_proof.ts";
 * declare const proof: import("./commit_proof.ts").CommitProof;
 * const body = encodeCommitProof(proof); // what GET /proof answers
 * ```
 */
export function encodeCommitProof(proof: CommitProof): Uint8Array {
  const body: unknown[] = [proof.nodes.map(encodeNode), encodeQC(proof.certificate)];
  if (proof.config != null) body.push(encodeValidatorConfig(proof.config));
  return encodeValue(body);
}

/**
 * Why bytes are not a commit proof.
 *
 * @example
 * ```ts
 * import { CommitProofDecodeError, decodeCommitProof } from "./commit_proof.ts";
 * try {
 *   decodeCommitProof(new Uint8Array([0x80]));
 * } catch (e) {
 *   if (e instanceof CommitProofDecodeError) console.log(e.reason); // "bad-form"
 * }
 * ```
 */
export class CommitProofDecodeError extends Error {
  /**
   * A decode failure.
   *
   * @param reason a short machine-readable reason
   * @param message what was wrong
   */
  constructor(readonly reason: string, message: string) {
    super(message);
    this.name = "CommitProofDecodeError";
  }
}

/**
 * Strictly decodes {@link encodeCommitProof}'s encoding, at most `nodesMax` Nodes. Throws a
 * {@link CommitProofDecodeError} on anything else. Decoding checks the form only: verify with
 * {@link verifyCommitProof}.
 *
 * @example
 * ```ts
 * import { decodeCommitProof } from "./commit_proof.ts";
 * try {
 *   decodeCommitProof(new Uint8Array([0x80]));
 * } catch (e) {
 *   console.log((e as Error).message); // a proof is a CBOR array of two or three items
 * }
 * ```
 */
export function decodeCommitProof(
  bytes: Uint8Array,
  nodesMax: number = COMMIT_PROOF_NODES_MAX,
): CommitProof {
  let value: unknown;
  try {
    value = decodeValue(bytes);
  } catch (e) {
    throw new CommitProofDecodeError("bad-cbor", (e as Error).message);
  }
  if (!Array.isArray(value) || value.length < 2 || value.length > 3) {
    throw new CommitProofDecodeError("bad-form", "a proof is a CBOR array of two or three items");
  }
  const [list, qcBytes, configBytes] = value as [unknown, unknown, unknown];
  if (!Array.isArray(list)) throw new CommitProofDecodeError("bad-form", "Nodes must be an array");
  if (list.length > nodesMax) {
    throw new CommitProofDecodeError("too-long", `${list.length} Nodes, at most ${nodesMax}`);
  }
  const nodes = list.map((item, i) => {
    if (!(item instanceof Uint8Array)) {
      throw new CommitProofDecodeError("bad-form", `Node ${i} is not bytes`);
    }
    const d = decodeNode(item);
    if (!d.ok) throw new CommitProofDecodeError("bad-node", `Node ${i}: ${d.error.message}`);
    return d.value;
  });
  if (!(qcBytes instanceof Uint8Array)) {
    throw new CommitProofDecodeError("bad-form", "the certificate is not bytes");
  }
  const qc = decodeQC(qcBytes);
  if (!qc.ok) throw new CommitProofDecodeError("bad-qc", `certificate: ${qc.error.message}`);
  if (configBytes === undefined) return { nodes, certificate: qc.value, config: null };
  if (!(configBytes instanceof Uint8Array)) {
    throw new CommitProofDecodeError("bad-form", "the configuration is not bytes");
  }
  try {
    return { nodes, certificate: qc.value, config: decodeValidatorConfig(configBytes) };
  } catch (e) {
    throw new CommitProofDecodeError("bad-config", (e as Error).message);
  }
}

function certifies(qc: QuorumCertificate, node: Node, hash: Hash): boolean {
  return qc.view === node.view && bytesEqual(qc.nodeHash, hash);
}

function refuse(reason: CommitProofRejection, detail: string): CommitVerdict {
  return { ok: false, reason, detail };
}

const QC_REASONS: readonly string[] = [
  "wrong-chain",
  "unknown-signer",
  "duplicate-signer",
  "no-quorum",
  "bad-signature",
];

function asRejection(reason: string): CommitProofRejection {
  return (QC_REASONS.includes(reason) ? reason : "bad-qc") as CommitProofRejection;
}
