/**
 * The authenticated handshake that opens every Consensus TCP connection. Both sides run the same
 * steps (see the wire format in `tcp.ts`):
 *
 * 1. Send HELLO `[1, chainId, ownPublicKey, ownNonce]` (nonce: 32 fresh random bytes).
 * 2. Receive the peer's HELLO and check it: well formed, same chain id, not our own key, a member
 *    of the validator set, the key we dialed (when we dialed), a nonce different from ours.
 * 3. Send PROOF `[signature]`: Ed25519 over {@link handshakeSignedBytes}`(chainId, peerNonce,
 *    ownPublicKey)`, which binds the handshake domain, the chain, the peer's fresh nonce and our
 *    identity, so a proof can be replayed neither to another peer, nor on another chain, nor as
 *    any other signed message.
 * 4. Receive the peer's PROOF and verify it over `(chainId, ownNonce, peerPublicKey)`.
 *
 * All of it must finish within `handshakeTimeoutMs` (default 5 s). Any failure is a
 * {@link HandshakeError} with a reason, and the caller closes the connection.
 *
 * **Encrypted links (version 2, the default).** Each HELLO also carries a fresh X25519 ephemeral
 * key, `[2, chainId, publicKey, nonce, ephemeralKey]`, and each PROOF signs both ephemeral keys as
 * well ({@link handshakeSignedBytesV2}). Both sides then derive one AES-256-GCM key per direction
 * from the X25519 secret and seal every later frame (`link_cipher.ts`, which also says why this and
 * not TLS). A relay in the middle can neither read the frames nor inject, replay or reorder any.
 * With `encrypt: false` (an explicit choice, for local tests) the handshake is version 1, as
 * above, and frames travel in the clear; a side of either kind refuses the other
 * (`link-mode-mismatch`), so a cluster never half-encrypts.
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { assert, DecodeError, HotStuffError } from "../errors.ts";
import { bytesEqual, SignatureDomain, toHex } from "../types.ts";
import { type FrameCipher, FrameError, FrameType } from "./framing.ts";
import { deriveLinkCipher, EPHEMERAL_KEY_BYTES, generateEphemeralKey } from "./link_cipher.ts";

/** Version number in a plaintext HELLO. */
export const HANDSHAKE_VERSION = 1;
/** Version number in an encrypting HELLO (one that carries an ephemeral key). */
export const HANDSHAKE_VERSION_ENCRYPTED = 2;
/** The domain tag a version 2 PROOF signs. */
export const HANDSHAKE_V2_DOMAIN = "hotstuff/handshake/v2";
/** Bytes of a handshake nonce. */
export const NONCE_BYTES = 32;
/** Default `handshakeTimeoutMs`: 5 s for the whole exchange. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5_000;
/** Default `handshakeFrameBytesMax`: handshake frames are tiny, so 1 KiB is plenty. */
export const DEFAULT_HANDSHAKE_FRAME_BYTES_MAX = 1024;
/** Longest chain id accepted in a HELLO, in UTF-8 bytes (as the codec's default). */
export const CHAIN_ID_BYTES_MAX = 64;

/** Why a handshake failed. */
export type HandshakeErrorReason =
  | "bad-hello"
  | "bad-proof"
  | "wrong-chain"
  | "own-key"
  | "unknown-key"
  | "unexpected-peer"
  | "nonce-reuse"
  | "bad-signature"
  | "link-mode-mismatch"
  | "bad-key-exchange"
  | "handshake-timeout"
  | "closed"
  | "frame-too-large"
  | "truncated-frame"
  | "read-timeout"
  | "read-failed"
  | "write-failed"
  | "sign-failed";

/**
 * A refused or failed handshake.
 *
 * @example
 * ```ts
 * import { HandshakeError } from "./handshake.ts";
 * const e = new HandshakeError("wrong-chain", "peer is on chain other, we are on main");
 * console.log(e.reason);
 * ```
 */
export class HandshakeError extends HotStuffError {
  /**
   * Creates a handshake error.
   *
   * @param reason machine-readable reason
   * @param message what was wrong, with the offending value
   */
  constructor(reason: HandshakeErrorReason, message: string) {
    super(reason, message);
    this.name = "HandshakeError";
  }
}

/** A decoded HELLO. */
export interface Hello {
  /** The sender's chain. */
  readonly chainId: string;
  /** The sender's identity. */
  readonly publicKey: Uint8Array;
  /** 32 fresh random bytes that the other side must sign. */
  readonly nonce: Uint8Array;
  /** The sender's X25519 ephemeral public key (version 2), or null (version 1, plaintext). */
  readonly ephemeral?: Uint8Array | null;
}

/** Either a decoded value, or why it was refused (reason `bad-hello` or `bad-proof`). */
export type HandshakeDecodeResult<T> = { ok: true; value: T } | {
  ok: false;
  error: HandshakeError;
};

/**
 * The frame payload of a HELLO: the type byte, then CBOR `[1, chainId, publicKey, nonce]`, or
 * `[2, chainId, publicKey, nonce, ephemeral]` when it carries an ephemeral key.
 *
 * @example
 * ```ts
 * import { decodeHello, encodeHello } from "./handshake.ts";
 * const hello = { chainId: "c", publicKey: new Uint8Array(32), nonce: new Uint8Array(32) };
 * decodeHello(encodeHello(hello)).ok; // true
 * ```
 */
export function encodeHello(hello: Hello): Uint8Array {
  const e = hello.ephemeral ?? null;
  const fields = e === null
    ? [HANDSHAKE_VERSION, hello.chainId, hello.publicKey, hello.nonce]
    : [HANDSHAKE_VERSION_ENCRYPTED, hello.chainId, hello.publicKey, hello.nonce, e];
  return withType(FrameType.hello, encodeValue(fields));
}

/**
 * Strictly decodes a HELLO frame payload. Never throws.
 *
 * @example
 * ```ts
 * import { decodeHello } from "./handshake.ts";
 * decodeHello(new Uint8Array([0x10, 0x80])).ok; // false: wrong field count
 * ```
 */
export function decodeHello(payload: Uint8Array): HandshakeDecodeResult<Hello> {
  return decodeTyped(payload, FrameType.hello, "bad-hello", (v) => {
    const encrypted = Array.isArray(v) && v[0] === HANDSHAKE_VERSION_ENCRYPTED;
    const a = fields(v, "hello", encrypted ? 5 : 4);
    if (a[0] !== HANDSHAKE_VERSION && !encrypted) {
      throw new DecodeError("bad-version", `hello: version ${String(a[0])}, expected 1 or 2`);
    }
    const chainId = a[1];
    if (typeof chainId !== "string" || chainId.length === 0) {
      throw new DecodeError("bad-type", "hello: chain id must be a non-empty string");
    }
    if (new TextEncoder().encode(chainId).length > CHAIN_ID_BYTES_MAX) {
      throw new DecodeError("too-large", `hello: chain id longer than ${CHAIN_ID_BYTES_MAX} bytes`);
    }
    return {
      chainId,
      publicKey: bytesField(a[2], "hello public key", 32),
      nonce: bytesField(a[3], "hello nonce", NONCE_BYTES),
      ephemeral: encrypted ? bytesField(a[4], "hello ephemeral key", EPHEMERAL_KEY_BYTES) : null,
    };
  });
}

/**
 * The frame payload of a PROOF: the type byte, then CBOR `[signature]`.
 *
 * @example
 * ```ts
 * import { decodeProof, encodeProof } from "./handshake.ts";
 * decodeProof(encodeProof(new Uint8Array(64))).ok; // true
 * ```
 */
export function encodeProof(signature: Uint8Array): Uint8Array {
  return withType(FrameType.proof, encodeValue([signature]));
}

/**
 * Strictly decodes a PROOF frame payload to its 64-byte signature. Never throws.
 *
 * @example
 * ```ts
 * import { decodeProof } from "./handshake.ts";
 * decodeProof(new Uint8Array([0x11])).ok; // false
 * ```
 */
export function decodeProof(payload: Uint8Array): HandshakeDecodeResult<Uint8Array> {
  return decodeTyped(
    payload,
    FrameType.proof,
    "bad-proof",
    (v) => bytesField(fields(v, "proof", 1)[0], "proof signature", 64),
  );
}

/**
 * The bytes a handshake PROOF signs: canonical CBOR of `[SignatureDomain.handshake, chainId,
 * nonce, publicKey]`, where `nonce` is the *other* side's nonce and `publicKey` the signer's own.
 *
 * @example
 * ```ts
 * import { handshakeSignedBytes } from "./handshake.ts";
 * handshakeSignedBytes("c", new Uint8Array(32), new Uint8Array(32));
 * ```
 */
export function handshakeSignedBytes(
  chainId: string,
  nonce: Uint8Array,
  publicKey: Uint8Array,
): Uint8Array {
  return encodeValue([SignatureDomain.handshake, chainId, nonce, publicKey]);
}

/**
 * The bytes a version 2 (encrypting) PROOF signs: canonical CBOR of `["hotstuff/handshake/v2",
 * chainId, nonce, publicKey, ownEphemeral, peerEphemeral]`, where `nonce` is the other side's
 * nonce, `publicKey` the signer's own key, and the ephemeral keys the signer's and the one it
 * received. Signing both ephemeral keys is what keeps a relay from substituting its own.
 *
 * @example
 * ```ts
 * import { handshakeSignedBytesV2 } from "./handshake.ts";
 * const k = new Uint8Array(32);
 * handshakeSignedBytesV2("c", k, k, { own: k, peer: k });
 * ```
 */
export function handshakeSignedBytesV2(
  chainId: string,
  nonce: Uint8Array,
  publicKey: Uint8Array,
  ephemeral: { readonly own: Uint8Array; readonly peer: Uint8Array },
): Uint8Array {
  return encodeValue([
    HANDSHAKE_V2_DOMAIN,
    chainId,
    nonce,
    publicKey,
    ephemeral.own,
    ephemeral.peer,
  ]);
}

/**
 * What the transport needs of the validator set: who is a member. `ValidatorSet` is one.
 *
 * @example
 * ```ts
 * import type { Membership } from "./handshake.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const members: Membership = new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]);
 * ```
 */
export interface Membership {
  /** Every member. */
  readonly validators: readonly { readonly publicKey: Uint8Array }[];
  /** The member with this key, or undefined for a non-member. */
  get(publicKey: Uint8Array): unknown;
}

/** What the handshake reads from and writes to: {@link FramedConn} is one. */
export interface FrameChannel {
  /** The next frame payload, or null when the peer closed. */
  next(frameBytesMax?: number): Promise<Uint8Array | null>;
  /** Writes one frame. */
  write(payload: Uint8Array): Promise<void>;
  /** Closes the channel; pending reads and writes fail. Idempotent. */
  close(): void;
  /** Seals every later frame with `cipher` (needed for an encrypting handshake). */
  secure?(cipher: FrameCipher): void;
}

/** Options of {@link handshake}. */
export interface HandshakeOptions {
  /** Our chain; the peer must be on the same. */
  readonly chainId: string;
  /** Our key. */
  readonly signer: Signer;
  /** Checks the peer's proof. */
  readonly verifier: Verifier;
  /** Who may connect: the peer's key must be a member. */
  readonly validators: Membership;
  /** When we dialed: the key we expect to reach. */
  readonly expectedPeer?: Uint8Array;
  /** Time for the whole exchange. Default 5 s. */
  readonly handshakeTimeoutMs?: number;
  /** Largest handshake frame. Default 1 KiB. */
  readonly handshakeFrameBytesMax?: number;
  /** Source of nonces. Default `crypto.getRandomValues`. */
  readonly randomBytes?: (length: number) => Uint8Array;
  /**
   * Encrypt the link (handshake version 2) and refuse a plaintext peer; `false` for a plaintext
   * link (version 1) that refuses an encrypting peer. Default true.
   */
  readonly encrypt?: boolean;
}

/**
 * Runs the handshake on a fresh connection and resolves to the peer's authenticated public key.
 * On failure the channel is closed only if the timeout fired; otherwise the caller closes it.
 *
 * @throws {HandshakeError} with the reason the peer was refused
 * @example
 * ```ts
 * import { handshake, type HandshakeOptions } from "./handshake.ts";
 * import { FramedConn } from "./framing.ts";
 *
 * // On an accepted or dialed connection: who is at the other end?
 * async function peerOf(conn: Deno.TcpConn, options: HandshakeOptions): Promise<string> {
 *   const key = await handshake(new FramedConn(conn), options);
 *   return Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");
 * }
 * ```
 */
export async function handshake(
  channel: FrameChannel,
  options: HandshakeOptions,
): Promise<Uint8Array> {
  const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  let timedOut = false;
  // Closing the channel makes any pending read or write fail, so `exchange` always ends.
  const timer = setTimeout(() => {
    timedOut = true;
    channel.close();
  }, timeoutMs);
  try {
    const peer = await exchange(channel, options);
    if (timedOut) throw new Error("timed out");
    return peer;
  } catch (e) {
    if (timedOut) {
      throw new HandshakeError("handshake-timeout", `handshake not done within ${timeoutMs} ms`);
    }
    throw toHandshakeError(e);
  } finally {
    clearTimeout(timer);
  }
}

async function exchange(channel: FrameChannel, options: HandshakeOptions): Promise<Uint8Array> {
  const { chainId, signer } = options;
  const max = options.handshakeFrameBytesMax ?? DEFAULT_HANDSHAKE_FRAME_BYTES_MAX;
  const random = options.randomBytes ?? randomBytes;
  const encrypt = options.encrypt ?? true;
  assert(!encrypt || channel.secure !== undefined, "an encrypting handshake needs secure()");
  const nonce = random(NONCE_BYTES);
  const ephemeral = encrypt ? await generateEphemeralKey() : null;
  // Step 1: HELLO.
  const ownHello = { chainId, publicKey: signer.publicKey, nonce, ephemeral: ephemeral?.publicKey };
  await channel.write(encodeHello(ownHello));
  // Step 2: the peer's HELLO.
  const decoded = decodeHello(await nextFrame(channel, max, "hello"));
  if (!decoded.ok) throw decoded.error;
  const hello = decoded.value;
  checkHello(hello, nonce, options);
  const peerEphemeral = hello.ephemeral ?? null;
  if ((peerEphemeral !== null) !== encrypt) {
    throw new HandshakeError(
      "link-mode-mismatch",
      `peer ${toHex(hello.publicKey)} wants ${
        peerEphemeral === null ? "plaintext" : "encrypted"
      } ` +
        `links, we want ${encrypt ? "encrypted" : "plaintext"} links`,
    );
  }
  const keys = ephemeral === null || peerEphemeral === null
    ? null
    : { own: ephemeral.publicKey, peer: peerEphemeral };
  const cipher = ephemeral === null || peerEphemeral === null ? null : deriveLinkCipher({
    chainId,
    own: ephemeral,
    peerEphemeral,
    ownKey: signer.publicKey,
    peerKey: hello.publicKey,
    ownNonce: nonce,
    peerNonce: hello.nonce,
  });
  cipher?.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile
  // Step 3: our PROOF over the peer's nonce (and both ephemeral keys).
  let signature: Uint8Array;
  try {
    signature = await signer.sign(
      keys === null
        ? handshakeSignedBytes(chainId, hello.nonce, signer.publicKey)
        : handshakeSignedBytesV2(chainId, hello.nonce, signer.publicKey, keys),
    );
  } catch (e) {
    throw new HandshakeError("sign-failed", e instanceof Error ? e.message : String(e));
  }
  await channel.write(encodeProof(signature));
  // Step 4: the peer's PROOF over our nonce (and both ephemeral keys, seen from its side).
  const proof = decodeProof(await nextFrame(channel, max, "proof"));
  if (!proof.ok) throw proof.error;
  const signed = keys === null
    ? handshakeSignedBytes(chainId, nonce, hello.publicKey)
    : handshakeSignedBytesV2(chainId, nonce, hello.publicKey, { own: keys.peer, peer: keys.own });
  if (!(await options.verifier.verify(hello.publicKey, signed, proof.value))) {
    throw new HandshakeError(
      "bad-signature",
      `handshake proof of ${toHex(hello.publicKey)} does not verify`,
    );
  }
  if (cipher !== null) channel.secure!(await cipher);
  return hello.publicKey;
}

/** Step 2's checks, in order; the first that fails is the reason. */
function checkHello(hello: Hello, ownNonce: Uint8Array, options: HandshakeOptions): void {
  const key = toHex(hello.publicKey);
  if (hello.chainId !== options.chainId) {
    throw new HandshakeError(
      "wrong-chain",
      `peer ${key} is on chain ${JSON.stringify(hello.chainId)}, we are on ${
        JSON.stringify(options.chainId)
      }`,
    );
  }
  if (bytesEqual(hello.publicKey, options.signer.publicKey)) {
    throw new HandshakeError("own-key", `peer claims our own key ${key}`);
  }
  if (options.validators.get(hello.publicKey) === undefined) {
    throw new HandshakeError("unknown-key", `peer key ${key} is not in the validator set`);
  }
  if (options.expectedPeer !== undefined && !bytesEqual(options.expectedPeer, hello.publicKey)) {
    throw new HandshakeError(
      "unexpected-peer",
      `dialed ${toHex(options.expectedPeer)} but reached ${key}`,
    );
  }
  if (bytesEqual(hello.nonce, ownNonce)) {
    throw new HandshakeError("nonce-reuse", `peer ${key} echoed our nonce`);
  }
}

async function nextFrame(channel: FrameChannel, max: number, what: string): Promise<Uint8Array> {
  const frame = await channel.next(max);
  if (frame === null) {
    throw new HandshakeError("closed", `connection closed while waiting for the ${what}`);
  }
  return frame;
}

function toHandshakeError(e: unknown): HandshakeError {
  if (e instanceof HandshakeError) return e;
  if (e instanceof FrameError) {
    return new HandshakeError(e.reason as HandshakeErrorReason, e.message);
  }
  return new HandshakeError("read-failed", e instanceof Error ? e.message : String(e));
}

function randomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

function withType(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + body.length);
  out[0] = type;
  out.set(body, 1);
  return out;
}

function decodeTyped<T>(
  payload: Uint8Array,
  type: number,
  reason: "bad-hello" | "bad-proof",
  body: (v: unknown) => T,
): HandshakeDecodeResult<T> {
  const what = reason.slice(4);
  try {
    if (payload.length === 0 || payload[0] !== type) {
      throw new DecodeError("bad-type", `${what}: frame type ${payload[0]}, expected ${type}`);
    }
    return { ok: true, value: body(decodeValue(payload.subarray(1))) };
  } catch (e) {
    const detail = e instanceof DecodeError ? `${e.reason}: ${e.message}` : String(e);
    return { ok: false, error: new HandshakeError(reason, detail) };
  }
}

function fields(v: unknown, what: string, length: number): unknown[] {
  if (!Array.isArray(v) || v.length !== length) {
    throw new DecodeError("bad-length", `${what}: expected an array of ${length} fields`);
  }
  return v;
}

function bytesField(v: unknown, what: string, length: number): Uint8Array {
  if (!(v instanceof Uint8Array) || v.length !== length) {
    throw new DecodeError("bad-length", `${what}: expected ${length} bytes`);
  }
  return v;
}
