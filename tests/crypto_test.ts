import assert from "node:assert/strict";
import * as ed from "@noble/ed25519";
import {
  deriveSecretKey,
  ed25519Signer,
  ed25519Verifier,
  generateSecretKey,
  publicKeyOf,
  SHA256_NATIVE_BYTES_MIN,
  sha256Bytes,
} from "../src/crypto.ts";
import { createHash } from "node:crypto";
import { ConfigError } from "../src/errors.ts";
import { toHex } from "../src/types.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const MESSAGES = [new Uint8Array(0), enc("vote 7"), new Uint8Array(1000).fill(0xab)];

/** Verifies without letting a throw escape unnoticed: a throw fails the assertion. */
async function verifies(publicKey: Uint8Array, message: Uint8Array, sig: Uint8Array) {
  let result: boolean | undefined;
  await assert.doesNotReject(async () => {
    result = await ed25519Verifier().verify(publicKey, message, sig);
  });
  assert.equal(typeof result, "boolean");
  return result!;
}

Deno.test("crypto: a signature verifies under the signer's public key", async () => {
  const signer = ed25519Signer(deriveSecretKey("replica-0"));
  const verifier = ed25519Verifier();
  for (const message of MESSAGES) {
    const sig = await signer.sign(message);
    assert.equal(sig.length, 64);
    assert.equal(await verifier.verify(signer.publicKey, message, sig), true);
  }
});

Deno.test("crypto: a random key signs and verifies too", async () => {
  const signer = ed25519Signer(generateSecretKey());
  const sig = await signer.sign(enc("x"));
  assert.equal(await verifies(signer.publicKey, enc("x"), sig), true);
});

Deno.test("crypto: the wrong message, key or signature does not verify", async () => {
  const a = ed25519Signer(deriveSecretKey("a"));
  const b = ed25519Signer(deriveSecretKey("b"));
  const message = enc("propose 3");
  const sig = await a.sign(message);
  assert.equal(await verifies(a.publicKey, enc("propose 4"), sig), false, "other message");
  assert.equal(await verifies(a.publicKey, message.subarray(1), sig), false, "shorter message");
  assert.equal(await verifies(b.publicKey, message, sig), false, "other key");
  assert.equal(await verifies(a.publicKey, message, await b.sign(message)), false, "other signer");
  assert.equal(await verifies(a.publicKey, message, await a.sign(enc("x"))), false, "other sig");
  for (const bit of [0, 100, 255, 256, 300, 511]) {
    const flipped = sig.slice();
    flipped[bit >> 3]! ^= 1 << (bit & 7);
    assert.equal(await verifies(a.publicKey, message, flipped), false, `bit ${bit} flipped`);
  }
});

Deno.test("crypto: malformed key or signature lengths verify as false without throwing", async () => {
  const signer = ed25519Signer(deriveSecretKey("a"));
  const message = enc("m");
  const sig = await signer.sign(message);
  const pk = signer.publicKey;
  for (const n of [0, 1, 31, 33, 64]) {
    const key = new Uint8Array(n);
    key.set(pk.subarray(0, Math.min(n, 32)));
    assert.equal(await verifies(key, message, sig), false, `${n}-byte key`);
  }
  for (const n of [0, 32, 63, 65, 128]) {
    const s = new Uint8Array(n);
    s.set(sig.subarray(0, Math.min(n, 64)));
    assert.equal(await verifies(pk, message, s), false, `${n}-byte signature`);
  }
});

Deno.test("crypto: 32-byte keys that are not curve points, and zero signatures, verify as false", async () => {
  const signer = ed25519Signer(deriveSecretKey("a"));
  const message = enc("m");
  const sig = await signer.sign(message);
  // y = 2 is not the y coordinate of a point on edwards25519; all-0xff is not a canonical y.
  const notAPoint = new Uint8Array(32);
  notAPoint[0] = 2;
  for (const key of [notAPoint, new Uint8Array(32).fill(0xff)]) {
    assert.equal(await verifies(key, message, sig), false, toHex(key));
  }
  assert.equal(await verifies(signer.publicKey, message, new Uint8Array(64)), false);
  assert.equal(await verifies(signer.publicKey, message, new Uint8Array(64).fill(0xff)), false);
});

Deno.test("crypto: a signature with S replaced by S + L (malleated) does not verify", async () => {
  const signer = ed25519Signer(deriveSecretKey("a"));
  const message = enc("m");
  const sig = await signer.sign(message);
  const L = 2n ** 252n + 27742317777372353535851937790883648493n;
  let s = 0n;
  for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
  let malleated = s + L;
  assert.ok(malleated < 2n ** 256n);
  const bad = sig.slice();
  for (let i = 0; i < 32; i++, malleated >>= 8n) bad[32 + i] = Number(malleated & 0xffn);
  assert.equal(await verifies(signer.publicKey, message, bad), false);
  assert.equal(ed.verify(bad, message, signer.publicKey), false, "noble agrees");
});

Deno.test("crypto: signatures are deterministic: same key and message give the same bytes", async () => {
  const key = deriveSecretKey("replica-1");
  const s1 = ed25519Signer(key);
  const s2 = ed25519Signer(key.slice());
  for (const message of MESSAGES) {
    const a = await s1.sign(message);
    assert.deepStrictEqual(await s1.sign(message), a, "same signer twice");
    assert.deepStrictEqual(await s2.sign(message), a, "another signer with the same key");
  }
  assert.notDeepStrictEqual(await s1.sign(enc("a")), await s1.sign(enc("b")));
});

Deno.test("crypto: the signer copies its secret key (later changes to the caller's array do not matter)", async () => {
  const key = deriveSecretKey("copy");
  const signer = ed25519Signer(key);
  const before = await ed25519Signer(key.slice()).sign(enc("m"));
  key.fill(0);
  assert.deepStrictEqual(await signer.sign(enc("m")), before);
});

Deno.test("crypto: deriveSecretKey is deterministic, 32 bytes, and differs by seed", () => {
  const a = deriveSecretKey("replica-0");
  assert.equal(a.length, 32);
  assert.deepStrictEqual(deriveSecretKey("replica-0"), a);
  assert.notDeepStrictEqual(deriveSecretKey("replica-1"), a);
  assert.notDeepStrictEqual(deriveSecretKey(""), a);
  // Pinned: a change here changes every simulator key and every recorded seed.
  assert.equal(toHex(a), toHex(sha256Bytes(enc("hotstuff/derive/v1/replica-0"))));
  assert.deepStrictEqual(publicKeyOf(deriveSecretKey("replica-0")), publicKeyOf(a));
});

Deno.test("crypto: generateSecretKey gives fresh 32-byte keys", () => {
  const a = generateSecretKey();
  const b = generateSecretKey();
  assert.equal(a.length, 32);
  assert.notDeepStrictEqual(a, b);
});

Deno.test("crypto: secret keys that are not 32 bytes are refused with ConfigError bad-key", () => {
  for (const n of [0, 31, 33, 64]) {
    for (
      const f of [() => publicKeyOf(new Uint8Array(n)), () => ed25519Signer(new Uint8Array(n))]
    ) {
      assert.throws(f, (e) => e instanceof ConfigError && e.reason === "bad-key", `${n} bytes`);
    }
  }
});

Deno.test("crypto: @noble/ed25519 is set up on import (hashes.sha512)", () => {
  assert.equal(typeof ed.hashes.sha512, "function");
});

Deno.test("crypto: Web Crypto Ed25519 is available here, so the comparison below tests it", async () => {
  const pk = publicKeyOf(deriveSecretKey("a"));
  const key = await crypto.subtle.importKey(
    "raw",
    pk as Uint8Array<ArrayBuffer>,
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  assert.equal(key.algorithm.name, "Ed25519");
});

Deno.test("crypto: Web Crypto signatures and keys equal those of @noble/ed25519", async () => {
  for (const seed of ["a", "b", "replica-7"]) {
    const secret = deriveSecretKey(seed);
    const signer = ed25519Signer(secret);
    assert.deepStrictEqual(signer.publicKey, ed.getPublicKey(secret), "public key");
    for (const message of MESSAGES) {
      const web = await signer.sign(message);
      const noble = ed.sign(message, secret);
      assert.equal(toHex(web), toHex(noble), `${seed}: ${message.length}-byte message`);
      assert.equal(ed.verify(web, message, signer.publicKey), true, "noble verifies Web Crypto");
      assert.equal(
        await verifies(signer.publicKey, message, noble),
        true,
        "Web Crypto verifies noble",
      );
    }
  }
});

Deno.test("crypto: the verifier stays correct when its key cache overflows", async () => {
  const verifier = ed25519Verifier({ keyCacheMax: 2 });
  const signers = ["a", "b", "c", "d", "e"].map((s) => ed25519Signer(deriveSecretKey(s)));
  const message = enc("m");
  const sigs = await Promise.all(signers.map((s) => s.sign(message)));
  for (let round = 0; round < 2; round++) {
    for (const [i, s] of signers.entries()) {
      assert.equal(await verifier.verify(s.publicKey, message, sigs[i]!), true);
      const other = sigs[(i + 1) % sigs.length]!;
      assert.equal(await verifier.verify(s.publicKey, message, other), false);
    }
  }
});

Deno.test("crypto: the verifier caches by key value, so a mutated key array is not confused", async () => {
  const a = ed25519Signer(deriveSecretKey("a"));
  const b = ed25519Signer(deriveSecretKey("b"));
  const verifier = ed25519Verifier();
  const message = enc("m");
  const key = a.publicKey.slice();
  assert.equal(await verifier.verify(key, message, await a.sign(message)), true);
  key.set(b.publicKey);
  assert.equal(await verifier.verify(key, message, await a.sign(message)), false);
  assert.equal(await verifier.verify(key, message, await b.sign(message)), true);
});

Deno.test("crypto: sha256Bytes matches the FIPS 180-2 test vectors", () => {
  assert.equal(
    toHex(sha256Bytes(new Uint8Array(0))),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    toHex(sha256Bytes(enc("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("crypto: sha256Bytes agrees with the native SHA-256 on every length around its switch", () => {
  // Short inputs are hashed in JavaScript, long ones natively: each length 0..400 (the padding
  // cases 55, 56, 63, 64, 119, 120 and the switch at SHA256_NATIVE_BYTES_MIN), random bytes.
  assert.ok(SHA256_NATIVE_BYTES_MIN < 400);
  for (let n = 0; n <= 400; n++) {
    for (let round = 0; round < 3; round++) {
      const data = crypto.getRandomValues(new Uint8Array(n));
      const native = createHash("sha256").update(data).digest();
      assert.equal(toHex(sha256Bytes(data)), toHex(new Uint8Array(native)), `length ${n}`);
    }
  }
  // A view into a larger buffer hashes only its own bytes.
  const buffer = crypto.getRandomValues(new Uint8Array(100));
  const view = buffer.subarray(10, 50);
  assert.equal(toHex(sha256Bytes(view)), toHex(sha256Bytes(view.slice())));
  assert.equal(
    toHex(sha256Bytes(enc("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});
