/**
 * The Consensus TCP API: PROPOSE, VOTE and NEW-VIEW between replicas, over one authenticated TCP
 * connection per pair of replicas (kept by the Connection Manager, `connections.ts`).
 *
 * ## Wire format
 *
 * A connection is a sequence of **frames** in each direction:
 *
 * ```
 * frame   = length:u32-big-endian  payload:length-bytes     ; 0 <= length <= frameBytesMax
 * payload = type:u8  body
 * ```
 *
 * A length above `frameBytesMax` (default 8 MiB; 1 KiB during the handshake) closes the
 * connection before anything is allocated (`frame-too-large`). A stream that ends inside a frame
 * is `truncated-frame`; a frame that does not arrive in full within `readIdleTimeoutMs` (default
 * 30 s) is `read-timeout`. Both close the connection.
 *
 * | type | name | body |
 * |---|---|---|
 * | `0x10` | HELLO | CBOR `[1, chainId: text, publicKey: bytes(32), nonce: bytes(32)]`; encrypted links: `[2, chainId, publicKey, nonce, ephemeral: bytes(32)]` |
 * | `0x11` | PROOF | CBOR `[signature: bytes(64)]` |
 * | `0x00` | PING | empty |
 * | `0x01` | PONG | empty |
 * | `0x02` | MESSAGE | `encodeMessage(msg)`: canonical CBOR of PROPOSE, VOTE or NEW-VIEW |
 * | `0x03` | BATCH | a batch of client commands (`encodeBatch`; SPECIFICATION.md 13.1) |
 *
 * **Handshake** (`handshake.ts`). Both sides, dialer and listener alike, at once:
 *
 * 1. send HELLO with 32 fresh random bytes as `nonce`;
 * 2. receive the peer's HELLO; refuse a malformed one (`bad-hello`), another chain
 *    (`wrong-chain`), our own key (`own-key`), a key outside the validator set (`unknown-key`),
 *    a key other than the one dialed (`unexpected-peer`), our own nonce echoed (`nonce-reuse`);
 * 3. send PROOF: Ed25519 signature over CBOR
 *    `["hotstuff/handshake/v1", chainId, peerNonce, ownPublicKey]`;
 * 4. receive the peer's PROOF and verify it over `[..., chainId, ownNonce, peerPublicKey]`
 *    (`bad-proof`, `bad-signature`).
 *
 * All four within `handshakeTimeoutMs` (default 5 s) or `handshake-timeout`. Before the
 * handshake is done, no other frame type is accepted.
 *
 * **Encrypted links** (the default; `encryptLinks: false` for plaintext, local tests only): the
 * HELLO is version 2 and carries an X25519 ephemeral key, the PROOF also signs both ephemeral
 * keys, and every later frame payload is sealed with AES-256-GCM, one key per direction
 * (`handshake.ts`, `link_cipher.ts`; a frame that does not open closes the connection,
 * `decrypt-failed`). A replica refuses a peer of the other kind (`link-mode-mismatch`).
 *
 * **After the handshake**, either side may send PING, PONG, MESSAGE and BATCH frames in any order.
 * A PING is answered with a PONG. Every `keepaliveIntervalMs` (default 5 s) each side sends a
 * PING; after `keepaliveMissedMax` (default 3) intervals without any frame received, it closes
 * the connection (`keepalive-timeout`). A MESSAGE that does not decode, an unknown type, an empty
 * payload or a PING/PONG with a body is a *bad frame*: logged with its reason, counted, dropped;
 * the connection is closed after more than `badFramesMax` (default 100) of them. Messages are
 * delivered with the peer key proven in the handshake; their own signatures are checked by the
 * consumer, not here.
 *
 * **One connection per pair.** If two authenticated connections exist between the same pair,
 * both sides keep the one dialed by the lower public key (bytewise), or, if both were dialed by
 * the same side, the newer one (a kept connection that has received nothing for two keepalive
 * intervals counts as dead and loses). The other is retired: no more frames are written to it, it is
 * half-closed (TCP FIN), and each side reads it to its end before closing it, so no frame already
 * sent on it is lost. See `connections.ts` for dialing, backoff, keepalive and queue rules.
 *
 * @module
 */
import type { CodecLimits } from "../codec.ts";
import { decodeMessage, DEFAULT_CODEC_LIMITS, encodeMessage } from "../codec.ts";
import { DecodeError, type HotStuffError } from "../errors.ts";
import type { ConsensusMessage } from "../types.ts";
import { ConnectionManager, type NetworkOptions, type PeerStatus } from "./connections.ts";
import { FrameType } from "./framing.ts";

/**
 * Options of {@link ConsensusTcp}: identity, addresses, log, and every limit.
 *
 * @example
 * ```ts
 * import { ConsensusTcp, type ConsensusTcpOptions } from "./tcp.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const signer = ed25519Signer(deriveSecretKey("validator-0"));
 * const options: ConsensusTcpOptions = {
 *   chainId: "my-chain",
 *   signer,
 *   verifier: ed25519Verifier(),
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 * };
 * const tcp = new ConsensusTcp(options);
 * await tcp.close();
 * ```
 */
export interface ConsensusTcpOptions extends NetworkOptions {
  /** Bounds the message decoder enforces. Default {@link DEFAULT_CODEC_LIMITS}. */
  readonly codecLimits?: CodecLimits;
}

/**
 * Receives each consensus message with the public key of the authenticated peer that sent it.
 * The message's own signatures are not checked yet.
 *
 * @example
 * ```ts
 * import type { MessageHandler } from "./tcp.ts";
 * const handler: MessageHandler = (_from, message) => console.log(message.type); // e.g. engine.receive
 * ```
 */
export type MessageHandler = (from: Uint8Array, msg: ConsensusMessage) => void;

/**
 * Receives the bytes of each BATCH frame with the public key of the authenticated peer that sent
 * it; the consumer decodes and checks them.
 *
 * @example
 * ```ts
 * import type { BatchHandler } from "./tcp.ts";
 * const handler: BatchHandler = (_from, bytes) => console.log(`batch of ${bytes.length} bytes`);
 * ```
 */
export type BatchHandler = (from: Uint8Array, bytes: Uint8Array) => void;

/**
 * The Consensus TCP API of one replica.
 *
 * @example
 * ```ts
 * import { ConsensusTcp } from "./tcp.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import type { VoteMessage } from "../types.ts";
 * import { ValidatorSet } from "../validators.ts";
 *
 * const alice = ed25519Signer(deriveSecretKey("alice"));
 * const bob = ed25519Signer(deriveSecretKey("bob"));
 * const validators = new ValidatorSet([alice, bob].map((s) => ({ publicKey: s.publicKey, power: 1 })));
 * const common = { chainId: "demo", verifier: ed25519Verifier(), validators };
 * const listen = { hostname: "127.0.0.1", port: 0 };
 *
 * const b = new ConsensusTcp({ ...common, signer: bob, listen, peers: [] });
 * b.onMessage((from, msg) => console.log(msg.type, "from", from));
 * await b.start();
 * const a = new ConsensusTcp({
 *   ...common,
 *   signer: alice,
 *   listen,
 *   peers: [{ publicKey: bob.publicKey, hostname: "127.0.0.1", port: b.port }],
 * });
 * await a.start();
 * const vote: VoteMessage = {
 *   type: "vote",
 *   view: 1,
 *   nodeHash: new Uint8Array(32),
 *   signer: alice.publicKey,
 *   signature: new Uint8Array(64), // sign for real; the transport does not check it
 * };
 * a.send(bob.publicKey, vote); // queued; delivered once connected
 * await a.close();
 * await b.close();
 * ```
 */
export class ConsensusTcp {
  readonly #manager: ConnectionManager;
  readonly #codecLimits: CodecLimits;
  #handler: MessageHandler | null = null;
  #batchHandler: BatchHandler | null = null;

  /**
   * Creates the API; nothing happens until {@link ConsensusTcp.start}.
   *
   * @param options identity, addresses, log and limits
   * @throws {ConfigError} on a bad limit, a signer outside the validator set, or a bad peer
   */
  constructor(options: ConsensusTcpOptions) {
    this.#codecLimits = options.codecLimits ?? DEFAULT_CODEC_LIMITS;
    this.#manager = new ConnectionManager({
      ...options,
      onFrame: (from, frame) => this.#receive(from, frame),
    });
  }

  /** Starts listening and dialing every peer. Resolves once listening. */
  start(): Promise<void> {
    return this.#manager.start();
  }

  /**
   * The port actually listened on (the OS's choice when `listen.port` is 0).
   *
   * @throws {HotStuffError} `not-started` before {@link ConsensusTcp.start}
   */
  get port(): number {
    return this.#manager.port;
  }

  /**
   * Queues `msg` for the peer `to`. Returns false if `to` is not a peer (not a validator, or us),
   * the message is larger than `frameBytesMax`, we are closed, or the peer's send queue was full:
   * then its *oldest* queued frame was dropped (and counted) and `msg` is queued anyway.
   */
  send(to: Uint8Array, msg: ConsensusMessage): boolean {
    return this.#manager.enqueue(to, messageFrame(msg)) === "queued";
  }

  /** Queues `msg` for every peer (every validator except us). Encodes it once. */
  broadcast(msg: ConsensusMessage): void {
    this.#manager.broadcast(messageFrame(msg));
  }

  /**
   * Sets the handler for incoming messages (replacing any earlier one). Set it before
   * {@link ConsensusTcp.start}; messages that arrive with no handler set are dropped. A handler
   * that throws is logged (`net:handler-error`); the connection stays up.
   */
  onMessage(handler: MessageHandler): void {
    this.#handler = handler;
  }

  /**
   * Queues a batch of client commands for every peer, as one BATCH frame (built once). A full
   * peer queue drops its oldest frame, as for messages.
   */
  broadcastBatch(bytes: Uint8Array): void {
    const frame = new Uint8Array(1 + bytes.length);
    frame[0] = FrameType.batch;
    frame.set(bytes, 1);
    this.#manager.broadcast(frame);
  }

  /**
   * Sets the handler for incoming BATCH frames (replacing any earlier one); without one they are
   * dropped. A handler that throws is logged (`net:handler-error`); the connection stays up.
   */
  onBatch(handler: BatchHandler): void {
    this.#batchHandler = handler;
  }

  /** One line per peer for a status page; see {@link PeerStatus}. */
  status(): PeerStatus[] {
    return this.#manager.status();
  }

  /** Closes the listener and every connection, and waits for every task. Idempotent. */
  close(): Promise<void> {
    return this.#manager.close();
  }

  #receive(from: Uint8Array, frame: Uint8Array): HotStuffError | null {
    if (frame[0] === FrameType.batch) {
      this.#batchHandler?.(from, frame.subarray(1));
      return null;
    }
    if (frame[0] !== FrameType.message) {
      return new DecodeError("unknown-frame-type", `frame type ${frame[0]} after the handshake`);
    }
    const decoded = decodeMessage(frame.subarray(1), this.#codecLimits);
    if (!decoded.ok) return decoded.error;
    this.#handler?.(from, decoded.value);
    return null;
  }
}

/** A MESSAGE frame payload: the type byte, then the canonical encoding. */
function messageFrame(msg: ConsensusMessage): Uint8Array {
  const body = encodeMessage(msg);
  const frame = new Uint8Array(1 + body.length);
  frame[0] = FrameType.message;
  frame.set(body, 1);
  return frame;
}
