/**
 * State certificates: validators' signatures over the state root of a committed Node. See
 * SPECIFICATION.md 15.3.
 *
 * A validator signs `("hotstuff/state-root/v1", chainId, height, nodeHash, root)` (canonical
 * CBOR) once it has committed the Node `nodeHash` at `height` and computed the root of its
 * committed state there. Execution is deterministic, so every honest validator signs the same
 * root for the same committed Node; signatures of more than 2/3 of the power prove the root
 * while less than 1/3 of the power is Byzantine (some honest validator computed it).
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import { ed25519Verifier, type Signer, type Verifier } from "../crypto.ts";
import type { Hash, SignerSignature } from "../types.ts";
import { bytesCompare } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";

/** The domain tag of a state-root signature (never a tag of `SignatureDomain`). */
export const STATE_ROOT_DOMAIN = "hotstuff/state-root/v1";

/**
 * What a state-root signature covers.
 *
 * @example
 * ```ts
 * import { type StateRootClaim, stateRootSignedBytes } from "./certificate.ts";
 * import { EMPTY_STATE_ROOT } from "./tree.ts";
 * const claim: StateRootClaim = { height: 64, nodeHash: new Uint8Array(32), root: EMPTY_STATE_ROOT };
 * const signed = stateRootSignedBytes("kv-1", claim); // what each validator signs
 * ```
 */
export interface StateRootClaim {
  /** Height of the committed Node. */
  readonly height: number;
  /** Its hash. */
  readonly nodeHash: Hash;
  /** The root of the committed state after it (src/state/tree.ts). */
  readonly root: Hash;
}

/**
 * A claim with signatures of distinct validators, sorted by signer.
 *
 * @example
 * ```ts
 * import type { StateCertificate } from "./certificate.ts";
 * import type { KeyProof } from "../light/state_proof.ts";
 * declare const proof: KeyProof;
 * const cert: StateCertificate = proof.certificate;
 * console.log(cert.height, cert.root, cert.signatures.length);
 * ```
 */
export interface StateCertificate extends StateRootClaim {
  /** The signatures. */
  readonly signatures: readonly SignerSignature[];
}

/** The bytes a validator signs for `claim` on chain `chainId`. */
export function stateRootSignedBytes(chainId: string, claim: StateRootClaim): Uint8Array {
  return encodeValue([STATE_ROOT_DOMAIN, chainId, claim.height, claim.nodeHash, claim.root]);
}

/** Signs a claim. */
export async function signStateRoot(
  chainId: string,
  claim: StateRootClaim,
  signer: Signer,
): Promise<SignerSignature> {
  const signature = await signer.sign(stateRootSignedBytes(chainId, claim));
  return { signer: signer.publicKey, signature };
}

/**
 * Checks a state certificate against a trusted chain and validator set: distinct members whose
 * power is a quorum, every signature valid. Returns null when it holds, or the reason.
 *
 * @example
 * ```ts
 * import { verifyStateCertificate } from "./certificate.ts";
 * import type { StateCertificate } from "./certificate.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const cert: StateCertificate; // e.g. a key proof's certificate
 * declare const validators: ValidatorSet;
 * const problem = await verifyStateCertificate(cert, { chainId: "kv-1", validators });
 * console.log(problem ?? "certified");
 * ```
 */
export async function verifyStateCertificate(
  cert: StateCertificate,
  trust: { chainId: string; validators: ValidatorSet; verifier?: Verifier },
): Promise<string | null> {
  const count = trust.validators.countQuorum(cert.signatures);
  if (!count.ok) return `${count.reason}: ${count.detail}`;
  const bytes = stateRootSignedBytes(trust.chainId, cert);
  const verifier = trust.verifier ?? ed25519Verifier();
  const oks = await Promise.all(
    cert.signatures.map((s) => verifier.verify(s.signer, bytes, s.signature)),
  );
  return oks.every((ok) => ok) ? null : "bad-signature";
}

/** `[height, nodeHash, root, [[signer, signature], ...]]`. */
export function certificateToValue(cert: StateCertificate): unknown[] {
  const sigs = [...cert.signatures].sort((a, b) => bytesCompare(a.signer, b.signer));
  return [cert.height, cert.nodeHash, cert.root, sigs.map((s) => [s.signer, s.signature])];
}

/** Reads a certificate from its CBOR value; null when malformed. */
export function certificateFromValue(v: unknown, signaturesMax: number): StateCertificate | null {
  if (!Array.isArray(v) || v.length !== 4) return null;
  const [height, nodeHash, root, sigs] = v as unknown[];
  if (typeof height !== "number" || !Number.isSafeInteger(height) || height < 1) return null;
  if (!isHash(nodeHash) || !isHash(root)) return null;
  if (!Array.isArray(sigs) || sigs.length > signaturesMax) return null;
  const signatures: SignerSignature[] = [];
  for (const s of sigs) {
    if (!Array.isArray(s) || s.length !== 2) return null;
    const [signer, signature] = s as unknown[];
    if (!(signer instanceof Uint8Array) || signer.length !== 32) return null;
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return null;
    signatures.push({ signer, signature });
  }
  return { height, nodeHash, root, signatures };
}

/** One validator's signed claim as CBOR: `[height, nodeHash, root, signer, signature]`. */
export function encodeAttestation(claim: StateRootClaim, s: SignerSignature): Uint8Array {
  return encodeValue([claim.height, claim.nodeHash, claim.root, s.signer, s.signature]);
}

/** Decodes {@link encodeAttestation}; null when malformed. */
export function decodeAttestation(
  bytes: Uint8Array,
): { claim: StateRootClaim; signature: SignerSignature } | null {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 5) return null;
  const c = certificateFromValue([v[0], v[1], v[2], [[v[3], v[4]]]], 1);
  if (c === null) return null;
  return {
    claim: { height: c.height, nodeHash: c.nodeHash, root: c.root },
    signature: c.signatures[0]!,
  };
}

function isHash(v: unknown): v is Hash {
  return v instanceof Uint8Array && v.length === 32;
}
