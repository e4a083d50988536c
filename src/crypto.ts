/**
 * Ed25519 signing and verification. Web Crypto on the hot path (it verifies ~20x faster than the
 * pure-JS implementation here) with imported keys cached; @noble/ed25519 for key generation and
 * derivation, and as a fallback where Web Crypto lacks Ed25519.
 *
 * @module
 */
import * as ed from "@noble/ed25519";
import { createHash } from "node:crypto";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { ConfigError } from "./errors.ts";
import type { PublicKey, Signature } from "./types.ts";
import { toHex } from "./types.ts";

ed.hashes.sha512 = sha512;

/**
 * Something that signs with one validator key.
 *
 * @example
 * ```ts
 * import { deriveSecretKey, ed25519Signer, type Signer } from "./crypto.ts";
 * const signer: Signer = ed25519Signer(deriveSecretKey("validator-0"));
 * const signature = await signer.sign(new TextEncoder().encode("hello"));
 * console.log(signature.length); // 64
 * ```
 */
export interface Signer {
  /** The public key that verifies this signer's signatures. */
  readonly publicKey: PublicKey;
  /** Signs `message`; resolves to a 64-byte signature. */
  sign(message: Uint8Array): Promise<Signature>;
}

/**
 * Something that verifies signatures.
 *
 * @example
 * ```ts
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier, type Verifier } from "./crypto.ts";
 * const signer = ed25519Signer(deriveSecretKey("validator-0"));
 * const verifier: Verifier = ed25519Verifier();
 * const message = new TextEncoder().encode("hello");
 * console.log(await verifier.verify(signer.publicKey, message, await signer.sign(message))); // true
 * ```
 */
export interface Verifier {
  /** Resolves to true iff `signature` is `publicKey`'s valid signature of `message`. */
  verify(publicKey: PublicKey, message: Uint8Array, signature: Signature): Promise<boolean>;
}

const PKCS8_PREFIX = new Uint8Array([
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
]);

let webCryptoEd25519: boolean | undefined;

async function hasWebCryptoEd25519(): Promise<boolean> {
  if (webCryptoEd25519 === undefined) {
    try {
      const k = await crypto.subtle.importKey(
        "raw",
        ed.getPublicKey(new Uint8Array(32)) as Uint8Array<ArrayBuffer>,
        { name: "Ed25519" },
        false,
        ["verify"],
      );
      webCryptoEd25519 = k !== undefined;
    } catch {
      webCryptoEd25519 = false;
    }
  }
  return webCryptoEd25519;
}

/**
 * A fresh random 32-byte Ed25519 secret key.
 *
 * @example
 * ```ts
 * import { generateSecretKey, publicKeyOf } from "./crypto.ts";
 * const pk = publicKeyOf(generateSecretKey());
 * ```
 */
export function generateSecretKey(): Uint8Array {
  return ed.utils.randomSecretKey();
}

/**
 * A deterministic secret key derived from a seed (for tests and the simulator only).
 *
 * @example
 * ```ts
 * import { deriveSecretKey } from "./crypto.ts";
 * deriveSecretKey("replica-0").length; // 32
 * ```
 */
export function deriveSecretKey(seed: string): Uint8Array {
  return sha256(new TextEncoder().encode(`hotstuff/derive/v1/${seed}`));
}

/**
 * The public key of a 32-byte secret key.
 *
 * @example
 * ```ts
 * import { deriveSecretKey, publicKeyOf } from "./crypto.ts";
 * publicKeyOf(deriveSecretKey("a")).length; // 32
 * ```
 */
export function publicKeyOf(secretKey: Uint8Array): PublicKey {
  if (secretKey.length !== 32) {
    throw new ConfigError("bad-key", `secret key must be 32 bytes, got ${secretKey.length}`);
  }
  return ed.getPublicKey(secretKey);
}

/**
 * A {@link Signer} for a 32-byte Ed25519 secret key. Ed25519 signatures are deterministic, so the
 * same key and message always give the same signature (the simulator relies on it).
 *
 * @example
 * ```ts
 * import { deriveSecretKey, ed25519Signer } from "./crypto.ts";
 * const signer = ed25519Signer(deriveSecretKey("a"));
 * const sig = await signer.sign(new Uint8Array([1, 2, 3]));
 * ```
 */
export function ed25519Signer(secretKey: Uint8Array): Signer {
  const publicKey = publicKeyOf(secretKey);
  const secret = secretKey.slice();
  let key: Promise<CryptoKey | null> | undefined;
  const importKey = async (): Promise<CryptoKey | null> => {
    if (!(await hasWebCryptoEd25519())) return null;
    const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
    pkcs8.set(PKCS8_PREFIX);
    pkcs8.set(secret, PKCS8_PREFIX.length);
    return crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  };
  return {
    publicKey,
    async sign(message: Uint8Array): Promise<Signature> {
      key ??= importKey();
      const k = await key;
      if (k === null) return ed.sign(message, secret);
      return new Uint8Array(
        await crypto.subtle.sign("Ed25519", k, message as Uint8Array<ArrayBuffer>),
      );
    },
  };
}

/**
 * Options of {@link ed25519Verifier}.
 *
 * @example
 * ```ts
 * import { ed25519Verifier, type VerifierOptions } from "./crypto.ts";
 * const options: VerifierOptions = { keyCacheMax: 64 };
 * const verifier = ed25519Verifier(options);
 * ```
 */
export interface VerifierOptions {
  /** Most imported public keys kept. Default 4096. */
  readonly keyCacheMax?: number;
}

/**
 * A {@link Verifier} for Ed25519 that caches imported Web Crypto keys (importing costs ~30 % of
 * a verification). Malformed keys or signatures verify as false; it never throws on input.
 *
 * @example
 * ```ts
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "./crypto.ts";
 * const s = ed25519Signer(deriveSecretKey("a"));
 * const msg = new Uint8Array([7]);
 * await ed25519Verifier().verify(s.publicKey, msg, await s.sign(msg)); // true
 * ```
 */
export function ed25519Verifier(options: VerifierOptions = {}): Verifier {
  const keyCacheMax = options.keyCacheMax ?? 4096;
  const keys = new Map<string, Promise<CryptoKey | null>>();
  const keyFor = (publicKey: PublicKey): Promise<CryptoKey | null> => {
    const id = toHex(publicKey);
    let k = keys.get(id);
    if (k === undefined) {
      if (keys.size >= keyCacheMax) keys.clear();
      k = crypto.subtle.importKey(
        "raw",
        publicKey.slice(),
        { name: "Ed25519" },
        false,
        ["verify"],
      ).catch(() => null);
      keys.set(id, k);
    }
    return k;
  };
  return {
    async verify(publicKey, message, signature): Promise<boolean> {
      if (publicKey.length !== 32 || signature.length !== 64) return false;
      try {
        if (!(await hasWebCryptoEd25519())) {
          // Strict RFC 8032 checks, as Web Crypto does: replicas must agree on validity.
          return ed.verify(signature, message, publicKey, { zip215: false });
        }
        const k = await keyFor(publicKey);
        if (k === null) return false;
        return await crypto.subtle.verify(
          "Ed25519",
          k,
          signature as Uint8Array<ArrayBuffer>,
          message as Uint8Array<ArrayBuffer>,
        );
      } catch {
        return false;
      }
    },
  };
}

/**
 * SHA-256 (synchronous, the runtime's native implementation through `node:crypto`: ~7x faster
 * than @noble/hashes on Nodes and batches, and faster on 40-byte command ids too; see
 * docs/PERFORMANCE.md).
 *
 * @example
 * ```ts
 * import { sha256Bytes } from "./crypto.ts";
 * sha256Bytes(new Uint8Array()).length; // 32
 * ```
 */
export function sha256Bytes(data: Uint8Array): Uint8Array {
  const d = createHash("sha256").update(data).digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}
