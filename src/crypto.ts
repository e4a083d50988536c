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
import { assert, ConfigError } from "./errors.ts";
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
 * SHA-256 (synchronous). Inputs of at least {@link SHA256_NATIVE_BYTES_MIN} bytes go to the
 * runtime's native implementation through `node:crypto` (~7x faster than @noble/hashes on Nodes
 * and batches); shorter ones to a small JavaScript implementation here, which skips the ~6 µs a
 * native call costs in objects and copies (state values and keys are mostly short: a snapshot
 * install hashes one per key, a Node's state root about 5 per update; see docs/PERFORMANCE.md).
 * It is here rather than @noble/hashes because @noble/hashes measured no faster than the native
 * call on short inputs (`deno run -A bench/sha256.ts`, 3 rounds, load 2.3: 64 bytes 4.5-7.8 µs
 * against 4.6-6.7 µs native and 2.2-3.4 µs here); tests/crypto_test.ts checks it against the
 * native hash on every length 0-400.
 *
 * @example
 * ```ts
 * import { sha256Bytes } from "./crypto.ts";
 * sha256Bytes(new Uint8Array()).length; // 32
 * ```
 */
export function sha256Bytes(data: Uint8Array): Uint8Array {
  if (data.length < SHA256_NATIVE_BYTES_MIN) return sha256Short(data);
  const d = createHash("sha256").update(data).digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/**
 * Inputs this long or longer are hashed natively by {@link sha256Bytes}: below it the JavaScript
 * rounds (~0.7 µs a 64-byte block) cost less than a native call (measured in
 * docs/PERFORMANCE.md, "State sync").
 */
export const SHA256_NATIVE_BYTES_MIN = 192;

/** SHA-256 round constants (FIPS 180-4, 4.2.2). */
const SHA256_K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
/** The initial hash value (FIPS 180-4, 5.3.3). */
const SHA256_IV = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);
/** Scratch of {@link sha256Short}: message schedule, state, the padded last blocks. */
const sha256W = new Int32Array(64);
const sha256H = new Int32Array(8);
const sha256Tail = new Uint8Array(128);

/** SHA-256 of a short input in JavaScript (FIPS 180-4, 6.2); not reentrant, never awaits. */
function sha256Short(data: Uint8Array): Uint8Array {
  const n = data.length;
  assert(n < SHA256_NATIVE_BYTES_MIN, "sha256Short: input too long");
  sha256H.set(SHA256_IV);
  const whole = n - (n % 64);
  for (let at = 0; at < whole; at += 64) sha256Block(data, at);
  // Padding: 0x80, zeros, the length in bits (big-endian, 64 bits; inputs here are short).
  const rest = n - whole;
  const tail = rest < 56 ? 64 : 128;
  const t = sha256Tail;
  for (let i = 0; i < rest; i++) t[i] = data[whole + i]!;
  t[rest] = 0x80;
  for (let i = rest + 1; i < tail - 4; i++) t[i] = 0;
  const bits = n * 8;
  t[tail - 4] = bits >>> 24;
  t[tail - 3] = bits >>> 16;
  t[tail - 2] = bits >>> 8;
  t[tail - 1] = bits;
  sha256Block(t, 0);
  if (tail === 128) sha256Block(t, 64);
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    const x = sha256H[i]!;
    out[4 * i] = x >>> 24;
    out[4 * i + 1] = x >>> 16;
    out[4 * i + 2] = x >>> 8;
    out[4 * i + 3] = x;
  }
  return out;
}

/** One compression of the 64 bytes of `b` at `at` into `sha256H`. */
function sha256Block(b: Uint8Array, at: number): void {
  const w = sha256W;
  for (let i = 0; i < 16; i++, at += 4) {
    w[i] = (b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  const h = sha256H;
  let a = h[0]!, b1 = h[1]!, c = h[2]!, d = h[3]!, e = h[4]!, f = h[5]!, g = h[6]!, k = h[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + s1 + ((e & f) ^ (~e & g)) + SHA256_K[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b1) ^ (a & c) ^ (b1 & c))) | 0;
    k = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b1;
    b1 = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0]! + a) | 0;
  h[1] = (h[1]! + b1) | 0;
  h[2] = (h[2]! + c) | 0;
  h[3] = (h[3]! + d) | 0;
  h[4] = (h[4]! + e) | 0;
  h[5] = (h[5]! + f) | 0;
  h[6] = (h[6]! + g) | 0;
  h[7] = (h[7]! + k) | 0;
}
