/**
 * The protocol's data: Nodes, quorum certificates, timeout certificates and the three consensus
 * messages (PROPOSE, VOTE, NEW-VIEW). See SPECIFICATION.md section 2.
 *
 * All byte fields are `Uint8Array`. Hashes are SHA-256 (32 bytes), public keys are Ed25519 (32
 * bytes), signatures are Ed25519 (64 bytes).
 *
 * @module
 */

/**
 * A 32-byte SHA-256 hash.
 *
 * @example
 * ```ts
 * import type { Hash } from "./types.ts";
 * const hash: Hash = new Uint8Array(32); // SHA-256 of a Node's canonical encoding
 * ```
 */
export type Hash = Uint8Array;
/**
 * A 32-byte Ed25519 public key: a validator's identity.
 *
 * @example
 * ```ts
 * import type { PublicKey } from "./types.ts";
 * import { deriveSecretKey, publicKeyOf } from "./crypto.ts";
 * const key: PublicKey = publicKeyOf(deriveSecretKey("validator-0")); // 32 bytes
 * ```
 */
export type PublicKey = Uint8Array;
/**
 * A 64-byte Ed25519 signature.
 *
 * @example
 * ```ts
 * import type { Signature } from "./types.ts";
 * import { deriveSecretKey, ed25519Signer } from "./crypto.ts";
 * const signature: Signature = await ed25519Signer(deriveSecretKey("v")).sign(new Uint8Array([1]));
 * ```
 */
export type Signature = Uint8Array;

/**
 * One validator's signature inside a certificate.
 *
 * @example
 * ```ts
 * import type { SignerSignature } from "./types.ts";
 * const s: SignerSignature = { signer: new Uint8Array(32), signature: new Uint8Array(64) };
 * ```
 */
export interface SignerSignature {
  /** The signer's public key. */
  readonly signer: PublicKey;
  /** Its signature over the certificate's signed bytes. */
  readonly signature: Signature;
}

/**
 * A quorum certificate: signatures of more than 2/3 of the voting power over
 * `("vote", chainId, view, nodeHash)`. A QC of view `v` certifies the Node proposed in view `v`.
 * The genesis QC (view 0, no signatures) certifies the genesis Node and is accepted by rule.
 *
 * @example
 * ```ts
 * import type { QuorumCertificate } from "./types.ts";
 * import { genesisQC } from "./codec.ts";
 * const qc: QuorumCertificate = genesisQC("my-chain"); // view 0, no signatures
 * console.log(qc.view, qc.signatures.length);
 * ```
 */
export interface QuorumCertificate {
  /** The chain this QC belongs to. */
  readonly chainId: string;
  /** The view in which the certified Node was proposed and voted for. */
  readonly view: number;
  /** Hash of the certified Node. */
  readonly nodeHash: Hash;
  /** Signatures of distinct validators, sorted by signer. */
  readonly signatures: readonly SignerSignature[];
}

/**
 * A timeout certificate: signatures of more than 2/3 of the voting power over
 * `("new-view", chainId, view)`. It proves that view `view` has ended without progress, so
 * replicas may enter `view + 1`.
 *
 * @example
 * ```ts
 * import type { TimeoutCertificate } from "./types.ts";
 * const tc: TimeoutCertificate = { chainId: "my-chain", view: 7, signatures: [] };
 * ```
 */
export interface TimeoutCertificate {
  /** The chain this TC belongs to. */
  readonly chainId: string;
  /** The view that timed out. */
  readonly view: number;
  /** Signatures of distinct validators, sorted by signer. */
  readonly signatures: readonly SignerSignature[];
}

/**
 * A Node of the NodeTree: one proposal. Its hash is SHA-256 of its canonical encoding.
 *
 * @example
 * ```ts
 * import type { Node } from "./types.ts";
 * import { genesisNode, nodeHash } from "./codec.ts";
 * const genesis: Node = genesisNode("my-chain");
 * console.log(genesis.height, nodeHash(genesis).length); // 0 32
 * ```
 */
export interface Node {
  /** The view in which it was proposed. */
  readonly view: number;
  /** Parent's height + 1; genesis has height 0. */
  readonly height: number;
  /** Hash of the parent Node. */
  readonly parent: Hash;
  /** QC for an ancestor (usually the parent): the chain's certificate that this Node carries. */
  readonly justify: QuorumCertificate;
  /** Opaque application command bytes. */
  readonly command: Uint8Array;
  /**
   * SHA-256 of the validator configuration after the parent, the one whose rule certifies this
   * Node (`validatorConfigHash`, SPECIFICATION.md 3.4 step 8); 32 zero bytes in genesis.
   */
  readonly configHash: Hash;
  /** Public key of the leader that proposed it. */
  readonly proposer: PublicKey;
  /**
   * The application state root as of the parent (committed state overlaid with the updates of
   * every uncommitted ancestor, the parent's included), from the Application's `stateRoot` hook:
   * 32 bytes, or empty (length 0) on a chain without state roots and in genesis
   * (SPECIFICATION.md 2, 7).
   */
  readonly stateRoot: Uint8Array;
}

/**
 * PROPOSE: the leader of `node.view` proposes `node`.
 *
 * @example
 * ```ts
 * import type { ProposeMessage } from "./types.ts";
 * import { genesisNode } from "./codec.ts";
 * const m: ProposeMessage = {
 *   type: "propose",
 *   node: genesisNode("my-chain"),
 *   tc: null,
 *   signature: new Uint8Array(64),
 * };
 * ```
 */
export interface ProposeMessage {
  /** Message type tag. */
  readonly type: "propose";
  /** The proposed Node. */
  readonly node: Node;
  /** When `node.justify.view + 1 < node.view`: the TC that lets replicas enter `node.view`. */
  readonly tc: TimeoutCertificate | null;
  /** Proposer's signature over `("propose", chainId, node.view, hash(node))`. */
  readonly signature: Signature;
}

/**
 * VOTE: `signer` votes for the Node `nodeHash` proposed in `view`.
 *
 * @example
 * ```ts
 * import type { VoteMessage } from "./types.ts";
 * const vote: VoteMessage = {
 *   type: "vote",
 *   view: 3,
 *   nodeHash: new Uint8Array(32),
 *   signer: new Uint8Array(32),
 *   signature: new Uint8Array(64),
 * };
 * ```
 */
export interface VoteMessage {
  /** Message type tag. */
  readonly type: "vote";
  /** The view of the Node voted for. */
  readonly view: number;
  /** Hash of the Node voted for. */
  readonly nodeHash: Hash;
  /** The voter. */
  readonly signer: PublicKey;
  /** Signature over `("vote", chainId, view, nodeHash)`. */
  readonly signature: Signature;
}

/**
 * NEW-VIEW: `signer` gives up on `view` (its timer expired) and carries its highest QC to the
 * next leader. Broadcast to all, so that everyone can form the TC for `view`. It also carries the
 * sender's highest TC, so a replica that is behind can follow it into its view on signed evidence,
 * and its vote in the view it gives up, if any.
 *
 * @example
 * ```ts
 * import type { NewViewMessage } from "./types.ts";
 * import { genesisQC } from "./codec.ts";
 * const m: NewViewMessage = {
 *   type: "new-view",
 *   view: 4,
 *   highQC: genesisQC("my-chain"),
 *   highTC: null,
 *   vote: null,
 *   signer: new Uint8Array(32),
 *   signature: new Uint8Array(64),
 * };
 * ```
 */
export interface NewViewMessage {
  /** Message type tag. */
  readonly type: "new-view";
  /** The view that the sender gives up. */
  readonly view: number;
  /** The sender's highest QC. */
  readonly highQC: QuorumCertificate;
  /** The sender's highest TC, if any. */
  readonly highTC: TimeoutCertificate | null;
  /**
   * The sender's vote in `view`, if it voted in it: the Node's hash and the vote signature over
   * `("vote", chainId, view, nodeHash)`. Lets any replica form the QC of `view` when the next
   * leader, to whom the vote was sent, is down (SPECIFICATION.md 9.2 step 2).
   */
  readonly vote: { readonly nodeHash: Hash; readonly signature: Signature } | null;
  /** The sender. */
  readonly signer: PublicKey;
  /** Signature over `("new-view", chainId, view)`. */
  readonly signature: Signature;
}

/**
 * Any message of the Consensus TCP API.
 *
 * @example
 * ```ts
 * import type { ConsensusMessage } from "./types.ts";
 * function describe(m: ConsensusMessage): string {
 *   return m.type === "propose" ? `PROPOSE height ${m.node.height}` : `${m.type} view ${m.view}`;
 * }
 * ```
 */
export type ConsensusMessage = ProposeMessage | VoteMessage | NewViewMessage;

/**
 * Domain tags that every signature covers, so a signature for one purpose is never another.
 *
 * @example
 * ```ts
 * import { SignatureDomain } from "./types.ts";
 * console.log(SignatureDomain.vote); // "hotstuff/vote/v1": a vote signature is never a proposal's
 * ```
 */
export const SignatureDomain = {
  propose: "hotstuff/propose/v1",
  vote: "hotstuff/vote/v1",
  newView: "hotstuff/new-view/v1",
  handshake: "hotstuff/handshake/v1",
} as const;

/** One of the {@link SignatureDomain} tags. */
export type SignatureDomainTag = typeof SignatureDomain[keyof typeof SignatureDomain];

/**
 * Hex encoding of bytes (lower case), for logs, map keys and JSON.
 *
 * @example
 * ```ts
 * import { toHex } from "./types.ts";
 * console.log(toHex(new Uint8Array([1, 171]))); // "01ab"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]!];
  return s;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Parses lower- or upper-case hex; returns `null` for anything else.
 *
 * @example
 * ```ts
 * fromHex("00ff"); // Uint8Array [0, 255]
 * ```
 */
export function fromHex(hex: string): Uint8Array | null {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Byte-wise equality.
 *
 * @example
 * ```ts
 * import { bytesEqual } from "./types.ts";
 * console.log(bytesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))); // true
 * ```
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Byte-wise order: negative if `a < b`, 0 if equal, positive if `a > b`. */
export function bytesCompare(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}
