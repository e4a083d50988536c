/**
 * Encryption of the Consensus TCP links, keyed by the handshake (`handshake.ts`, version 2).
 *
 * **Why this and not TLS.** The validators already have Ed25519 keys, and the handshake already
 * proves them. TLS would add a second identity (X.509 certificates and a certificate authority
 * to make, distribute, renew and revoke), and Deno's `Deno.listenTls` cannot ask the dialer for
 * a client certificate, so a TLS link would still need our handshake to know who dialed, and the
 * handshake would not be bound to the TLS channel (a Byzantine validator could relay between
 * two others). Here the key exchange *is* the handshake: each side sends an ephemeral X25519 key
 * in its HELLO and signs both ephemeral keys with its validator key, so a relay that changes
 * either key breaks the signatures, and one that forwards them unchanged cannot compute the
 * shared secret. Nothing new to deploy: the validator key files are the only secrets. This is the
 * shape of SIGMA (the signed Diffie-Hellman of IKE and TLS 1.3), built only from Web Crypto
 * (X25519, HKDF-SHA-256, AES-256-GCM): no dependency.
 *
 * **Keys.** `secret = X25519(own ephemeral, peer ephemeral)`; the key for the frames a sender
 * sends is `HKDF-SHA-256(secret, salt = empty, info = CBOR ["hotstuff/link/v1", chainId,
 * senderKey, senderNonce, receiverNonce])`, 32 bytes; one key per direction.
 *
 * **Records.** Every frame payload after the handshake is sealed alone with AES-256-GCM: the
 * 12-byte IV is 4 zero bytes and the frame's 64-bit sequence number in that direction (0, 1,
 * ...), never sent; the ciphertext is the payload plus a 16-byte tag. A frame that does not open
 * (tampered, replayed, reordered, dropped before it, injected) closes the connection
 * (`decrypt-failed`): a stream cipher cannot resynchronise, and a peer never sends one. Frame
 * lengths stay visible, as in TLS.
 *
 * @module
 */
import { encodeValue } from "../codec.ts";
import { assert } from "../errors.ts";
import { type FrameCipher, FrameError } from "./framing.ts";

/** Bytes of an X25519 public key. */
export const EPHEMERAL_KEY_BYTES = 32;
/** Bytes an encrypted frame adds to its payload (the AES-GCM tag). */
export const SEAL_OVERHEAD_BYTES = 16;
/** The HKDF info domain of link keys. */
export const LINK_KEY_DOMAIN = "hotstuff/link/v1";
/** A direction's frames, at most, before the connection must be replaced (IVs never repeat). */
const SEQUENCE_MAX = 2 ** 48;

/** An ephemeral X25519 key pair for one handshake. */
export interface EphemeralKey {
  /** The raw public key, sent in the HELLO. */
  readonly publicKey: Uint8Array;
  /** The private key; never leaves Web Crypto. */
  readonly privateKey: CryptoKey;
}

/**
 * A fresh X25519 key pair.
 *
 * @example
 * ```ts
 * import { generateEphemeralKey } from "./link_cipher.ts";
 * const { publicKey } = await generateEphemeralKey();
 * console.log(publicKey.length); // 32
 * ```
 */
export async function generateEphemeralKey(): Promise<EphemeralKey> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  assert(raw.length === EPHEMERAL_KEY_BYTES, `X25519 public key of ${raw.length} bytes`);
  return { publicKey: raw, privateKey: pair.privateKey };
}

/** What {@link deriveLinkCipher} binds the keys to. */
export interface LinkKeyInput {
  /** The chain id. */
  readonly chainId: string;
  /** Our ephemeral key pair. */
  readonly own: EphemeralKey;
  /** The peer's ephemeral public key, from its HELLO. */
  readonly peerEphemeral: Uint8Array;
  /** Our validator key. */
  readonly ownKey: Uint8Array;
  /** The peer's validator key. */
  readonly peerKey: Uint8Array;
  /** Our HELLO nonce. */
  readonly ownNonce: Uint8Array;
  /** The peer's HELLO nonce. */
  readonly peerNonce: Uint8Array;
}

/**
 * The two directions' keys of a link, from the ephemeral keys of both sides.
 *
 * @throws {FrameError} `bad-key-exchange` when the peer's ephemeral key is not a usable X25519
 *   key (e.g. a low-order point, whose shared secret is all zeros)
 * @example
 * ```ts
 * import { deriveLinkCipher, generateEphemeralKey } from "./link_cipher.ts";
 * const a = await generateEphemeralKey();
 * const b = await generateEphemeralKey();
 * const k = (n: number) => new Uint8Array(32).fill(n);
 * const ab = await deriveLinkCipher({ chainId: "c", own: a, peerEphemeral: b.publicKey,
 *   ownKey: k(1), peerKey: k(2), ownNonce: k(3), peerNonce: k(4) });
 * const ba = await deriveLinkCipher({ chainId: "c", own: b, peerEphemeral: a.publicKey,
 *   ownKey: k(2), peerKey: k(1), ownNonce: k(4), peerNonce: k(3) });
 * await ba.open(await ab.seal(new Uint8Array([7]))); // Uint8Array [7]
 * ```
 */
export async function deriveLinkCipher(input: LinkKeyInput): Promise<LinkCipher> {
  let secret: Uint8Array;
  try {
    const peer = await crypto.subtle.importKey(
      "raw",
      input.peerEphemeral as Uint8Array<ArrayBuffer>,
      { name: "X25519" },
      false,
      [],
    );
    secret = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: peer }, input.own.privateKey, 256),
    );
  } catch (e) {
    throw new FrameError("bad-key-exchange", `X25519 failed: ${(e as Error).message}`);
  }
  if (secret.every((b) => b === 0)) {
    throw new FrameError("bad-key-exchange", "the peer's ephemeral key gives an all-zero secret");
  }
  const hkdf = await crypto.subtle.importKey(
    "raw",
    secret as Uint8Array<ArrayBuffer>,
    "HKDF",
    false,
    [
      "deriveKey",
    ],
  );
  const key = (sender: Uint8Array, senderNonce: Uint8Array, receiverNonce: Uint8Array) =>
    crypto.subtle.deriveKey(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new Uint8Array(0),
        info: encodeValue([
          LINK_KEY_DOMAIN,
          input.chainId,
          sender,
          senderNonce,
          receiverNonce,
        ]) as Uint8Array<
          ArrayBuffer
        >,
      },
      hkdf,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  const [send, receive] = await Promise.all([
    key(input.ownKey, input.ownNonce, input.peerNonce),
    key(input.peerKey, input.peerNonce, input.ownNonce),
  ]);
  return new LinkCipher(send, receive);
}

/**
 * Seals the frames one side sends and opens the frames it receives, each direction with its own
 * key and sequence number. Calls to {@link LinkCipher.seal} must be made in the order the
 * frames are written, and calls to {@link LinkCipher.open} in the order they are read.
 *
 * @example
 * ```ts
 * import { deriveLinkCipher, generateEphemeralKey } from "./link_cipher.ts";
 * const a = await generateEphemeralKey();
 * const b = await generateEphemeralKey();
 * const k = (n: number) => new Uint8Array(32).fill(n);
 * const cipher = await deriveLinkCipher({ chainId: "c", own: a, peerEphemeral: b.publicKey,
 *   ownKey: k(1), peerKey: k(2), ownNonce: k(3), peerNonce: k(4) });
 * const sealed = await cipher.seal(new Uint8Array([7])); // one byte and its tag
 * ```
 */
export class LinkCipher implements FrameCipher {
  /** Bytes a sealed payload adds: the AES-GCM tag. */
  readonly overheadBytes: number = SEAL_OVERHEAD_BYTES;
  readonly #send: CryptoKey;
  readonly #receive: CryptoKey;
  #sent = 0;
  #received = 0;

  /**
   * A cipher from the two directions' AES-256-GCM keys.
   *
   * @param send the key of the frames we send
   * @param receive the key of the frames we receive
   */
  constructor(send: CryptoKey, receive: CryptoKey) {
    this.#send = send;
    this.#receive = receive;
  }

  /**
   * The sealed form of the next frame payload we send (16 bytes longer).
   *
   * @throws {FrameError} `sequence-exhausted` after 2^48 frames
   */
  seal(payload: Uint8Array): Promise<Uint8Array> {
    if (this.#sent >= SEQUENCE_MAX) {
      return Promise.reject(new FrameError("sequence-exhausted", "too many frames on one link"));
    }
    const iv = ivOf(this.#sent++);
    return crypto.subtle.encrypt(
      { name: "AES-GCM", iv },
      this.#send,
      payload as Uint8Array<ArrayBuffer>,
    ).then((b) => new Uint8Array(b));
  }

  /**
   * The payload of the next frame we receive.
   *
   * @throws {FrameError} `decrypt-failed` when it was not sealed by the peer as the next frame
   */
  async open(sealed: Uint8Array): Promise<Uint8Array> {
    if (this.#received >= SEQUENCE_MAX) {
      throw new FrameError("sequence-exhausted", "too many frames on one link");
    }
    const iv = ivOf(this.#received++);
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv },
          this.#receive,
          sealed as Uint8Array<ArrayBuffer>,
        ),
      );
    } catch {
      throw new FrameError(
        "decrypt-failed",
        `frame ${this.#received - 1} of ${sealed.length} bytes does not open: tampered, ` +
          `reordered or not from the peer`,
      );
    }
  }
}

function ivOf(sequence: number): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(sequence));
  return iv;
}
