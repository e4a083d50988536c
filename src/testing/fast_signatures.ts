/**
 * A fast, deterministic signature scheme for the simulator only: a signature is
 * `SHA-256(secret || message)` twice (64 bytes), and the verifier knows every simulated
 * validator's secret. It keeps the property the protocol relies on inside a simulation (only the
 * holder of a key can produce its signatures: Byzantine code in the simulator signs only through
 * its own Signer) at a hundredth of Ed25519's cost. Never use it outside the simulator.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import type { Signer, Verifier } from "../crypto.ts";
import { publicKeyOf } from "../crypto.ts";
import { bytesEqual, toHex } from "../types.ts";

function mac(secret: Uint8Array, message: Uint8Array): Uint8Array {
  const a = new Uint8Array(secret.length + message.length + 1);
  a.set(secret);
  a.set(message, secret.length);
  const first = sha256(a);
  a[a.length - 1] = 1;
  const out = new Uint8Array(64);
  out.set(first);
  out.set(sha256(a), 32);
  return out;
}

/**
 * A registry of simulated keys: hands out Signers and one Verifier that knows them all.
 *
 * @example
 * ```ts
 * import { FastSignatures } from "./fast_signatures.ts";
 * const keys = new FastSignatures();
 * const s = keys.signer(new Uint8Array(32).fill(1));
 * const sig = await s.sign(new Uint8Array([1]));
 * await keys.verifier.verify(s.publicKey, new Uint8Array([1]), sig); // true
 * ```
 */
export class FastSignatures {
  readonly #secrets = new Map<string, Uint8Array>();

  /** A signer for a 32-byte secret key (its public key is the real Ed25519 one). */
  signer(secretKey: Uint8Array): Signer {
    const publicKey = publicKeyOf(secretKey);
    this.#secrets.set(toHex(publicKey), secretKey.slice());
    return {
      publicKey,
      sign: (message) => Promise.resolve(mac(secretKey, message)),
    };
  }

  /** Verifies signatures of every key handed out by {@link FastSignatures.signer}. */
  readonly verifier: Verifier = {
    verify: (publicKey, message, signature) => {
      const secret = this.#secrets.get(toHex(publicKey));
      if (secret === undefined || signature.length !== 64) return Promise.resolve(false);
      return Promise.resolve(bytesEqual(mac(secret, message), signature));
    },
  };
}
