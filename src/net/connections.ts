/**
 * The Connection Manager: keeps exactly one healthy, authenticated TCP connection per peer and
 * moves opaque frames over it. The Consensus TCP API (`tcp.ts`) sits on top and gives the frames
 * their meaning.
 *
 * What it does, and the rule behind each part:
 *
 * - **Listen and dial.** Every replica listens, and dials every peer it has an address for. Both
 *   sides may dial at the same time.
 * - **One connection per pair.** When a second authenticated connection to a peer appears, both
 *   sides apply the same rule ({@link keepsNewConnection}): the connection dialed by the side with
 *   the lower public key wins; between two dialed by the same side, the newer wins. So both sides
 *   keep the same one. The one exception is a winning connection that has gone quiet (nothing
 *   received for two keepalive intervals): it is treated as dead and replaced, so that a peer that
 *   restarted is not locked out by a half-open connection until the keepalive notices.
 * - **Retire, do not cut.** The losing connection sends nothing more and half-closes; both ends
 *   read it to its end, so nothing already in flight on it is lost. `handshakeTimeoutMs` after
 *   it was retired it is closed regardless. A connection the peer ends is retired the same way,
 *   so the write under way finishes first.
 * - **Redial with backoff.** After a failed dial, the next waits {@link backoffDelayMs}: doubling
 *   from `dialBackoffMinMs` up to `dialBackoffMaxMs`, with jitter from an injected random source.
 *   A connection that drops after living at least `dialBackoffMaxMs` is redialed at once; one that
 *   drops sooner counts as another failure (so a flapping peer cannot make us spin).
 * - **Keepalive.** Every `keepaliveIntervalMs` a ping goes to each peer; the peer answers with a
 *   pong. Any frame received resets the count; after `keepaliveMissedMax` intervals without one,
 *   the connection is closed (`keepalive-timeout`).
 * - **Bounded send queue per peer.** At most `sendQueueMax` frames and `sendQueueBytesMax` bytes.
 *   When full, the *oldest* frame is dropped and counted: in consensus the newest messages (a
 *   higher view, a higher QC) supersede the old ones, and a slow or dead peer never grows memory.
 *   The queue survives reconnects; frames in the write that was under way when a connection
 *   broke are lost.
 * - **Bounded inbound connections.** Beyond `inboundConnectionsMax` open inbound sockets
 *   (handshaking or live), new ones are closed right after accept (`inbound-limit`).
 * - **Bad frames.** The frame handler returns an error for a frame it refuses; it is logged and
 *   counted, and a connection with more than `badFramesMax` of them is closed.
 * - **Status.** {@link ConnectionManager.status} reports, per peer: connected, since, direction,
 *   addresses, queue, dropped and bad frame counts, and the last error.
 *
 * No socket task ever throws: every failure is logged with a reason (`log(event, fields)`, where
 * `fields.reason` is machine-readable) and the task ends or retries.
 *
 * @module
 */
import type { Signer, Verifier } from "../crypto.ts";
import { assert, AssertionError, ConfigError, HotStuffError } from "../errors.ts";
import { bytesCompare, bytesEqual, toHex } from "../types.ts";
import {
  closeQuietly,
  DEFAULT_FRAME_BYTES_MAX,
  DEFAULT_READ_IDLE_TIMEOUT_MS,
  FRAME_BYTES_LIMIT,
  FramedConn,
  FrameType,
} from "./framing.ts";
import {
  DEFAULT_HANDSHAKE_FRAME_BYTES_MAX,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  handshake,
  type Membership,
} from "./handshake.ts";

/**
 * Every limit of the transport. Each has a default in {@link DEFAULT_CONNECTION_LIMITS}.
 *
 * @example
 * ```ts
 * import type { ConnectionLimits } from "./connections.ts";
 * const wan: ConnectionLimits = { sendQueueMax: 4096, keepaliveIntervalMs: 10_000 };
 * ```
 */
export interface ConnectionLimits {
  /** Largest frame payload, sent or received. Default 8 MiB. */
  readonly frameBytesMax?: number;
  /** Most frames queued for one peer; beyond it the oldest is dropped. Default 1024. */
  readonly sendQueueMax?: number;
  /** Most payload bytes queued for one peer; beyond it the oldest is dropped. Default 64 MiB. */
  readonly sendQueueBytesMax?: number;
  /** Most open inbound sockets (handshaking or live); more are refused. Default 256. */
  readonly inboundConnectionsMax?: number;
  /** Time for the whole handshake, and for a TCP connect. Default 5 s. */
  readonly handshakeTimeoutMs?: number;
  /** Largest handshake frame. Default 1 KiB. */
  readonly handshakeFrameBytesMax?: number;
  /**
   * Longest wait for one complete frame; must exceed `keepaliveIntervalMs`, since pings keep a
   * healthy connection busy. Default 30 s.
   */
  readonly readIdleTimeoutMs?: number;
  /** Interval between keepalive pings. Default 5 s. */
  readonly keepaliveIntervalMs?: number;
  /** Keepalive intervals without any received frame before closing. Default 3. */
  readonly keepaliveMissedMax?: number;
  /** First redial delay after a failure (before jitter). Default 100 ms. */
  readonly dialBackoffMinMs?: number;
  /** Largest redial delay (before jitter). Default 10 s. */
  readonly dialBackoffMaxMs?: number;
  /** Bad frames one connection may send; one more closes it. Default 100. */
  readonly badFramesMax?: number;
}

/**
 * The default limits.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONNECTION_LIMITS } from "./connections.ts";
 * DEFAULT_CONNECTION_LIMITS.sendQueueMax; // 1024
 * ```
 */
export const DEFAULT_CONNECTION_LIMITS: Readonly<Required<ConnectionLimits>> = {
  frameBytesMax: DEFAULT_FRAME_BYTES_MAX,
  sendQueueMax: 1024,
  sendQueueBytesMax: 64 * 1024 * 1024,
  inboundConnectionsMax: 256,
  handshakeTimeoutMs: DEFAULT_HANDSHAKE_TIMEOUT_MS,
  handshakeFrameBytesMax: DEFAULT_HANDSHAKE_FRAME_BYTES_MAX,
  readIdleTimeoutMs: DEFAULT_READ_IDLE_TIMEOUT_MS,
  keepaliveIntervalMs: 5_000,
  keepaliveMissedMax: 3,
  dialBackoffMinMs: 100,
  dialBackoffMaxMs: 10_000,
  badFramesMax: 100,
};

/** Frames written to a socket in one write, at most. */
const WRITE_BATCH_FRAMES_MAX = 256;
/** Payload bytes gathered into one write, at most (a single larger frame goes alone). */
const WRITE_BATCH_BYTES_MAX = 256 * 1024;
/** Backoff attempts stop growing here (2^30 × min is far beyond any max). */
const BACKOFF_ATTEMPT_MAX = 30;
const PING = new Uint8Array([FrameType.ping]);
const PONG = new Uint8Array([FrameType.pong]);

/**
 * A peer to dial.
 *
 * @example
 * ```ts
 * import type { PeerAddress } from "./connections.ts";
 * const peer: PeerAddress = { publicKey: new Uint8Array(32), hostname: "10.0.0.2", port: 9000 };
 * ```
 */
export interface PeerAddress {
  /** The peer's identity; the handshake must prove it. */
  readonly publicKey: Uint8Array;
  /** Host name or IP address. */
  readonly hostname: string;
  /** TCP port. */
  readonly port: number;
}

/**
 * Where to listen. Port 0 lets the OS choose; read the choice from `port`.
 *
 * @example
 * ```ts
 * import type { ListenAddress } from "./connections.ts";
 * const any: ListenAddress = { hostname: "0.0.0.0", port: 9000 };
 * const osChooses: ListenAddress = { hostname: "127.0.0.1", port: 0 };
 * ```
 */
export interface ListenAddress {
  /** Host name or IP address to bind. */
  readonly hostname: string;
  /** TCP port, or 0. */
  readonly port: number;
}

/**
 * Receives log events, e.g. `("net:handshake-failed", {reason: "unknown-key", ...})`. Failures
 * always carry a machine-readable `reason` field.
 *
 * @example
 * ```ts
 * import type { NetLog } from "./connections.ts";
 * const log: NetLog = (event, fields) => console.log(event, JSON.stringify(fields));
 * ```
 */
export type NetLog = (event: string, fields: Record<string, unknown>) => void;

/**
 * Receives every frame that is not a keepalive, from an authenticated peer; the first byte is the
 * frame type. Returns null if the frame is fine, or the error that makes it a bad frame.
 */
export type FrameHandler = (from: Uint8Array, frame: Uint8Array) => HotStuffError | null;

/**
 * Options shared by the Connection Manager and the Consensus TCP API.
 *
 * @example
 * ```ts
 * import type { NetworkOptions } from "./connections.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const signer = ed25519Signer(deriveSecretKey("validator-0"));
 * const options: NetworkOptions = {
 *   chainId: "my-chain",
 *   signer,
 *   verifier: ed25519Verifier(),
 *   validators: new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]),
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 * };
 * ```
 */
export interface NetworkOptions extends ConnectionLimits {
  /** Our chain; peers on another chain are refused. */
  readonly chainId: string;
  /** Our identity; its key must be in `validators`. */
  readonly signer: Signer;
  /** Verifies handshake proofs. */
  readonly verifier: Verifier;
  /** Who may connect. Every member except us is a peer. */
  readonly validators: Membership;
  /** Where to listen. */
  readonly listen: ListenAddress;
  /** Addresses to dial; our own entry, if present, is skipped. */
  readonly peers: readonly PeerAddress[];
  /** Log sink. Default: `console.error`. */
  readonly log?: NetLog;
  /** Random numbers in [0, 1) for backoff jitter. Default `Math.random`. */
  readonly random?: () => number;
  /**
   * Encrypt every link (handshake version 2, `link_cipher.ts`) and refuse plaintext peers.
   * `false` runs plaintext links, an explicit choice for local tests. Default true.
   */
  readonly encryptLinks?: boolean;
}

/** Options of {@link ConnectionManager}. */
export interface ConnectionManagerOptions extends NetworkOptions {
  /** Receives non-keepalive frames. Default: refuses them all. */
  readonly onFrame?: FrameHandler;
}

/** What happened to a frame handed to {@link ConnectionManager.enqueue}. */
export type EnqueueResult =
  | "queued"
  | "dropped-oldest"
  | "unknown-peer"
  | "too-large"
  | "closed";

/**
 * One peer's line on a status page.
 *
 * @example
 * ```ts
 * import type { PeerStatus } from "./connections.ts";
 * function line(p: PeerStatus): string {
 *   return `${p.publicKey.slice(0, 8)} ${p.connected ? "up" : "down"} queued=${p.queuedFrames}`;
 * }
 * ```
 */
export interface PeerStatus {
  /** The peer's public key, hex. */
  readonly publicKey: string;
  /** The address we dial, `host:port`, or null if we only accept its connections. */
  readonly address: string | null;
  /** True while an authenticated connection is up. */
  readonly connected: boolean;
  /** Who dialed the current connection, or null. */
  readonly direction: "inbound" | "outbound" | null;
  /** When the current connection was established (ms since the epoch), or null. */
  readonly since: number | null;
  /** Our end of the current connection, `host:port`, or null. */
  readonly localAddress: string | null;
  /** Its end of the current connection, `host:port`, or null. */
  readonly remoteAddress: string | null;
  /** Frames waiting in the send queue. */
  readonly queuedFrames: number;
  /** Frames dropped because the send queue was full (oldest first), since start. */
  readonly droppedFrames: number;
  /** Frames from this peer refused as bad, since start. */
  readonly badFrames: number;
  /** Frames written to this peer (keepalives included), since start. */
  readonly sentFrames: number;
  /** Frames received from this peer (keepalives included), since start. */
  readonly receivedFrames: number;
  /** Connections established with this peer, since start. */
  readonly connects: number;
  /** The last failure, `reason: message`, or null. */
  readonly lastError: string | null;
}

/**
 * Delay before redial attempt `attempt` (1 = the first retry): `dialBackoffMinMs × 2^(attempt-1)`
 * capped at `dialBackoffMaxMs`, then scaled into [50 %, 100 %] by `random()` ("equal jitter"), so
 * that replicas that failed together do not redial together.
 *
 * @example
 * ```ts
 * import { backoffDelayMs } from "./connections.ts";
 * const opts = { dialBackoffMinMs: 100, dialBackoffMaxMs: 1000, random: () => 1 };
 * backoffDelayMs(1, opts); // 100
 * backoffDelayMs(3, opts); // 400
 * backoffDelayMs(9, opts); // 1000
 * ```
 */
export function backoffDelayMs(
  attempt: number,
  options: { dialBackoffMinMs: number; dialBackoffMaxMs: number; random: () => number },
): number {
  assert(Number.isSafeInteger(attempt) && attempt >= 1, "backoff attempt counts from 1");
  const exponent = Math.min(attempt, BACKOFF_ATTEMPT_MAX) - 1;
  const ceiling = Math.min(options.dialBackoffMaxMs, options.dialBackoffMinMs * 2 ** exponent);
  const r = Math.min(Math.max(options.random(), 0), 1);
  return Math.round(ceiling / 2 + (ceiling / 2) * r);
}

/** A connection between us and a peer, as the deduplication rule sees it. */
export interface ConnectionCandidate {
  /** The public key of the side that dialed it. */
  readonly dialer: Uint8Array;
  /** True if it has received nothing for two keepalive intervals. */
  readonly quiet: boolean;
}

/**
 * The deduplication rule: with connection `current` up, should the newly authenticated `next`
 * replace it? Both ends of a pair apply it to the same two connections and agree, because it
 * depends only on who dialed: the lower key's dial wins, and between two dials by the same side
 * the newer wins. A quiet `current` loses regardless.
 *
 * @example
 * ```ts
 * import { keepsNewConnection } from "./connections.ts";
 * const low = new Uint8Array(32).fill(1), high = new Uint8Array(32).fill(2);
 * keepsNewConnection(
 *   { dialer: high, quiet: false },
 *   { dialer: low, quiet: false },
 *   [low, high],
 * ); // true
 * ```
 */
export function keepsNewConnection(
  current: ConnectionCandidate,
  next: ConnectionCandidate,
  pair: readonly [Uint8Array, Uint8Array],
): boolean {
  const lower = bytesCompare(pair[0], pair[1]) < 0 ? pair[0] : pair[1];
  const currentWins = bytesEqual(current.dialer, lower);
  const nextWins = bytesEqual(next.dialer, lower);
  return nextWins || !currentWins || current.quiet;
}

/**
 * A bounded FIFO of frames (or other items, sized by `sizeOf`) that drops the *oldest* to make
 * room: at most `framesMax` items and `bytesMax` bytes.
 *
 * @example
 * ```ts
 * import { FrameQueue } from "./connections.ts";
 * const q = new FrameQueue(2, 1024);
 * q.push(new Uint8Array([1]));
 * q.push(new Uint8Array([2]));
 * q.push(new Uint8Array([3])); // 1: frame [1] was dropped
 * q.shift(); // Uint8Array [2]
 * ```
 */
export class FrameQueue<T = Uint8Array> {
  /** Most frames held. */
  readonly framesMax: number;
  /** Most payload bytes held. */
  readonly bytesMax: number;
  readonly #sizeOf: (item: T) => number;
  readonly #ring: (T | undefined)[] = [];
  #head = 0;
  #count = 0;
  #bytes = 0;

  /**
   * Creates an empty queue.
   *
   * @param framesMax most frames held, at least 1
   * @param bytesMax most payload bytes held
   * @param sizeOf an item's bytes (default: a frame's length)
   */
  constructor(
    framesMax: number,
    bytesMax: number,
    sizeOf: (item: T) => number = (item) => (item as Uint8Array).length,
  ) {
    assert(Number.isSafeInteger(framesMax) && framesMax >= 1, "queue needs room for a frame");
    assert(bytesMax >= 0, "queue byte limit");
    this.framesMax = framesMax;
    this.bytesMax = bytesMax;
    this.#sizeOf = sizeOf;
  }

  /** Frames held. */
  get length(): number {
    return this.#count;
  }

  /** Payload bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Appends `frame`, first dropping the oldest frames until it fits.
   *
   * @returns how many frames were dropped
   */
  push(frame: T): number {
    const size = this.#sizeOf(frame);
    assert(size <= this.bytesMax, "frame larger than the whole queue");
    let dropped = 0;
    while (this.#count >= this.framesMax || this.#bytes + size > this.bytesMax) {
      this.shift();
      dropped++;
    }
    this.#ring[(this.#head + this.#count) % this.framesMax] = frame;
    this.#count++;
    this.#bytes += size;
    assert(this.#count <= this.framesMax && this.#bytes <= this.bytesMax, "queue bounds");
    return dropped;
  }

  /** The oldest frame, left in place, or undefined if empty. */
  peek(): T | undefined {
    return this.#count === 0 ? undefined : this.#ring[this.#head];
  }

  /** Removes and returns the oldest frame, or undefined if empty. */
  shift(): T | undefined {
    if (this.#count === 0) return undefined;
    const frame = this.#ring[this.#head];
    assert(frame !== undefined, "queue slot holds a frame");
    this.#ring[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.framesMax;
    this.#count--;
    this.#bytes -= this.#sizeOf(frame);
    return frame;
  }
}

/** Wakes whoever waits; a notify with nobody waiting is a no-op. */
class Notifier {
  #waiters: (() => void)[] = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

interface Peer {
  readonly key: Uint8Array;
  readonly hex: string;
  readonly address: PeerAddress | null;
  readonly queue: FrameQueue;
  /** Notified whenever `link` changes, and on shutdown. */
  readonly changed: Notifier;
  link: Link | null;
  /** How long the last link lived, in ms. */
  lastLinkMs: number;
  dropped: number;
  droppedLogged: number;
  bad: number;
  sent: number;
  received: number;
  connects: number;
  lastError: string | null;
}

/** One authenticated connection to a peer. */
class Link {
  readonly since: number = Date.now();
  readonly startedAt: number = performance.now();
  lastReceivedAt: number = performance.now();
  missedPings = 0;
  pingDue = false;
  pongDue = false;
  badFrames = 0;
  /** No longer the peer's link: writes nothing more, reads until the peer's end or a timeout. */
  retiring = false;
  /** Bookkeeping done: no longer the peer's link, and logged. */
  detached = false;
  closed = false;
  retireTimer: ReturnType<typeof setTimeout> | undefined;
  readonly wake: Notifier = new Notifier();

  constructor(
    readonly io: FramedConn,
    readonly peer: Peer,
    readonly outbound: boolean,
    readonly dialer: Uint8Array,
  ) {}
}

/** Reasons a link ends that are not failures (they do not set `lastError`). */
const BENIGN_CLOSE = new Set(["superseded", "duplicate-connection", "shutdown"]);

/**
 * The Connection Manager. See the module documentation for the rules it keeps.
 *
 * @example
 * ```ts
 * import { ConnectionManager } from "./connections.ts";
 * import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../crypto.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const signer = ed25519Signer(deriveSecretKey("a"));
 * const validators = new ValidatorSet([{ publicKey: signer.publicKey, power: 1 }]);
 * const manager = new ConnectionManager({
 *   chainId: "c",
 *   signer,
 *   verifier: ed25519Verifier(),
 *   validators,
 *   listen: { hostname: "127.0.0.1", port: 0 },
 *   peers: [],
 * });
 * await manager.start();
 * console.log(manager.port);
 * await manager.close();
 * ```
 */
export class ConnectionManager {
  readonly #options: ConnectionManagerOptions;
  readonly #limits: Readonly<Required<ConnectionLimits>>;
  readonly #self: Uint8Array;
  readonly #peers = new Map<string, Peer>();
  readonly #sockets = new Set<FramedConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #sleeps = new Set<() => void>();
  readonly #dials = new Set<AbortController>();
  readonly #retiring = new Set<Link>();
  readonly #log: NetLog;
  readonly #random: () => number;
  readonly #onFrame: FrameHandler;
  #listener: Deno.TcpListener | null = null;
  #interval: ReturnType<typeof setInterval> | undefined;
  #inbound = 0;
  #started = false;
  #closed = false;
  #closing: Promise<void> | null = null;

  /**
   * Creates a manager; nothing happens until {@link ConnectionManager.start}.
   *
   * @param options identity, addresses, limits and hooks
   * @throws {ConfigError} on a bad limit, a signer that is not a validator, or a bad peer entry
   */
  constructor(options: ConnectionManagerOptions) {
    this.#options = options;
    this.#limits = resolveLimits(options);
    this.#self = options.signer.publicKey;
    this.#log = safeLog(options.log ?? defaultLog);
    this.#random = options.random ?? Math.random;
    this.#onFrame = options.onFrame ?? refuseFrame;
    checkIdentity(options);
    const addresses = addressBook(options);
    for (const v of options.validators.validators) {
      if (bytesEqual(v.publicKey, this.#self)) continue;
      const hex = toHex(v.publicKey);
      this.#peers.set(hex, newPeer(v.publicKey, hex, addresses.get(hex) ?? null, this.#limits));
    }
  }

  /** The limits in force (options merged over the defaults). */
  get limits(): Readonly<Required<ConnectionLimits>> {
    return this.#limits;
  }

  /**
   * The port we listen on (useful after listening on port 0).
   *
   * @throws {HotStuffError} `not-started` before {@link ConnectionManager.start}
   */
  get port(): number {
    if (this.#listener === null) {
      throw new HotStuffError("not-started", "the connection manager is not listening");
    }
    return this.#listener.addr.port;
  }

  /** Open TCP sockets: handshaking, live and superseded ones not yet closed. */
  get socketsOpen(): number {
    return this.#sockets.size;
  }

  /**
   * Starts listening and dialing.
   *
   * @throws {HotStuffError} `bad-state` if started twice or after close; Deno's error if the
   * address cannot be bound
   */
  start(): Promise<void> {
    if (this.#started || this.#closed) {
      return Promise.reject(new HotStuffError("bad-state", "start: already started or closed"));
    }
    this.#started = true;
    const { hostname, port } = this.#options.listen;
    try {
      this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (e) {
      return Promise.reject(e);
    }
    const listener = this.#listener;
    this.#log("net:listening", { address: `${listener.addr.hostname}:${listener.addr.port}` });
    this.#spawn("accept", () => this.#acceptLoop(listener));
    this.#interval = setInterval(() => this.#tick(), this.#limits.keepaliveIntervalMs);
    for (const peer of this.#peers.values()) {
      if (peer.address !== null) this.#spawn("dial", () => this.#dialLoop(peer));
    }
    return Promise.resolve();
  }

  /**
   * Queues `frame` (a complete payload, type byte first) for the peer `to`. When the queue is
   * full the oldest queued frame is dropped and counted; `frame` is always queued then.
   */
  enqueue(to: Uint8Array, frame: Uint8Array): EnqueueResult {
    const peer = this.#peers.get(toHex(to));
    if (peer === undefined) return "unknown-peer";
    if (this.#closed) return "closed";
    if (frame.length > this.#limits.frameBytesMax) {
      this.#log("net:send-refused", {
        peer: peer.hex,
        reason: "frame-too-large",
        message:
          `frame of ${frame.length} bytes exceeds frameBytesMax ${this.#limits.frameBytesMax}`,
      });
      return "too-large";
    }
    const dropped = peer.queue.push(frame);
    peer.link?.wake.notify();
    if (dropped === 0) return "queued";
    peer.dropped += dropped;
    // Logged at 1, 2, 4, 8, ... drops: a dead peer must not flood the log either.
    if (peer.dropped >= 2 * peer.droppedLogged || peer.droppedLogged === 0) {
      peer.droppedLogged = peer.dropped;
      this.#log("net:queue-full", {
        peer: peer.hex,
        reason: "send-queue-full",
        droppedFrames: peer.dropped,
        queuedFrames: peer.queue.length,
      });
    }
    return "dropped-oldest";
  }

  /** Queues `frame` for every peer. */
  broadcast(frame: Uint8Array): void {
    for (const peer of this.#peers.values()) this.enqueue(peer.key, frame);
  }

  /** One line per peer (every validator but us), sorted by public key. */
  status(): PeerStatus[] {
    return [...this.#peers.values()].map(peerStatus);
  }

  /** Closes the listener and every connection and waits for every task. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    if (this.#listener !== null) closeQuietly(this.#listener);
    clearInterval(this.#interval);
    for (const dial of this.#dials) dial.abort();
    for (const wakeUp of [...this.#sleeps]) wakeUp();
    for (const peer of this.#peers.values()) {
      if (peer.link !== null) this.#closeLink(peer.link, "shutdown", "closing");
      peer.changed.notify();
    }
    for (const link of [...this.#retiring]) this.#closeLink(link, "shutdown", "closing");
    for (const io of this.#sockets) io.close();
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    assert(this.#inbound === 0, "every inbound socket was released");
    this.#log("net:closed", {});
  }

  // -------------------------------------------------------------------------------------------
  // Tasks

  /** Runs a task that must never throw; an escaped error is logged (an assertion re-thrown). */
  #spawn(name: string, body: () => Promise<void>): void {
    const task: Promise<void> = body()
      .catch((e) => {
        this.#log("net:task-failed", { task: name, reason: "internal-error", message: String(e) });
        if (e instanceof AssertionError) throw e;
      })
      .finally(() => this.#tasks.delete(task));
    this.#tasks.add(task);
  }

  /** Resolves after `ms`, or at once when the manager closes. */
  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wakeUp = (): void => {
        clearTimeout(timer);
        this.#sleeps.delete(wakeUp);
        resolve();
      };
      const timer = setTimeout(wakeUp, ms);
      this.#sleeps.add(wakeUp);
    });
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closed) return;
        this.#log("net:accept-failed", { reason: "accept-failed", message: messageOf(e) });
        await this.#sleep(this.#limits.dialBackoffMinMs);
        continue;
      }
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      if (this.#inbound >= this.#limits.inboundConnectionsMax) {
        this.#log("net:inbound-refused", {
          reason: "inbound-limit",
          remote: `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`,
          message:
            `${this.#inbound} inbound connections, limit ${this.#limits.inboundConnectionsMax}`,
        });
        closeQuietly(conn);
        continue;
      }
      this.#inbound++;
      this.#spawn("inbound", () => this.#serveInbound(conn));
    }
  }

  async #serveInbound(conn: Deno.TcpConn): Promise<void> {
    const io = this.#open(conn);
    try {
      const link = await this.#authenticate(io, null);
      if (link !== null) await this.#runLink(link);
    } finally {
      this.#inbound--;
      this.#forget(io);
    }
  }

  async #dialLoop(peer: Peer): Promise<void> {
    let attempt = 0;
    let connectsSeen = 0;
    while (!this.#closed) {
      if (peer.link !== null) {
        await peer.changed.wait();
        continue;
      }
      if (peer.connects !== connectsSeen) {
        // A connection came and went. One that did not last counts as a failure, so that a
        // flapping peer is redialed ever more slowly; one that lasted resets the backoff.
        connectsSeen = peer.connects;
        const lasted = peer.lastLinkMs >= this.#limits.dialBackoffMaxMs;
        attempt = lasted ? 0 : Math.min(attempt + 1, BACKOFF_ATTEMPT_MAX);
      }
      if (attempt > 0) {
        await this.#sleep(backoffDelayMs(attempt, { ...this.#limits, random: this.#random }));
        if (this.#closed || peer.link !== null) continue;
      }
      if (!(await this.#dialOnce(peer))) attempt = Math.min(attempt + 1, BACKOFF_ATTEMPT_MAX);
    }
  }

  /** One dial and handshake; true if the peer is connected afterwards. */
  async #dialOnce(peer: Peer): Promise<boolean> {
    assert(peer.address !== null, "dialing a peer without an address");
    const { hostname, port } = peer.address;
    const abort = new AbortController();
    this.#dials.add(abort);
    const timer = setTimeout(() => abort.abort(), this.#limits.handshakeTimeoutMs);
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname, port, transport: "tcp", signal: abort.signal });
    } catch (e) {
      if (!this.#closed) {
        peer.lastError = `dial-failed: ${messageOf(e)}`;
        this.#log("net:dial-failed", {
          peer: peer.hex,
          address: `${hostname}:${port}`,
          reason: "dial-failed",
          message: messageOf(e),
        });
      }
      return false;
    } finally {
      clearTimeout(timer);
      this.#dials.delete(abort);
    }
    if (this.#closed) {
      closeQuietly(conn);
      return false;
    }
    const io = this.#open(conn);
    const link = await this.#authenticate(io, peer);
    if (link === null) {
      this.#forget(io);
    } else {
      this.#spawn("link", () => this.#runLink(link).finally(() => this.#forget(io)));
    }
    return peer.link !== null;
  }

  #open(conn: Deno.TcpConn): FramedConn {
    try {
      conn.setNoDelay(true);
    } catch {
      // Not fatal: only latency suffers.
    }
    const io = new FramedConn(conn, {
      frameBytesMax: this.#limits.frameBytesMax,
      readIdleTimeoutMs: this.#limits.readIdleTimeoutMs,
    });
    this.#sockets.add(io);
    return io;
  }

  #forget(io: FramedConn): void {
    io.close();
    this.#sockets.delete(io);
  }

  /** Handshake, then install; null if refused (already logged). */
  async #authenticate(io: FramedConn, expected: Peer | null): Promise<Link | null> {
    let key: Uint8Array;
    try {
      key = await handshake(io, {
        chainId: this.#options.chainId,
        signer: this.#options.signer,
        verifier: this.#options.verifier,
        validators: this.#options.validators,
        expectedPeer: expected?.key,
        handshakeTimeoutMs: this.#limits.handshakeTimeoutMs,
        handshakeFrameBytesMax: this.#limits.handshakeFrameBytesMax,
        encrypt: this.#options.encryptLinks ?? true,
      });
    } catch (e) {
      if (this.#closed) return null;
      const reason = e instanceof HotStuffError ? e.reason : "internal-error";
      if (expected !== null) expected.lastError = `${reason}: ${messageOf(e)}`;
      this.#log("net:handshake-failed", {
        peer: expected?.hex ?? null,
        direction: expected === null ? "inbound" : "outbound",
        remote: io.remoteAddress,
        reason,
        message: messageOf(e),
      });
      return null;
    }
    if (this.#closed) return null;
    return this.#install(io, expected !== null, key);
  }

  /**
   * Makes an authenticated connection the peer's link, unless the one it has wins. The loser of
   * the two is retired, not cut (see `#retire`).
   */
  #install(io: FramedConn, outbound: boolean, key: Uint8Array): Link {
    const peer = this.#peers.get(toHex(key));
    assert(peer !== undefined, "the handshake admits only validators other than us");
    assert(!outbound || peer.address !== null, "we dial only peers with an address");
    const link = new Link(io, peer, outbound, outbound ? this.#self : peer.key);
    const old = peer.link;
    if (old !== null) {
      const pair = [this.#self, peer.key] as const;
      const quiet = performance.now() - old.lastReceivedAt > 2 * this.#limits.keepaliveIntervalMs;
      const current = { dialer: old.dialer, quiet };
      if (!keepsNewConnection(current, { dialer: link.dialer, quiet: false }, pair)) {
        link.detached = true;
        this.#log("net:duplicate-connection", {
          peer: peer.hex,
          reason: "duplicate-connection",
          direction: outbound ? "outbound" : "inbound",
          kept: `${old.io.localAddress} <-> ${old.io.remoteAddress}`,
        });
        this.#retire(link, "duplicate-connection", "the other connection to this peer wins");
        return link;
      }
      this.#retire(old, "superseded", "replaced by a newer connection");
    }
    peer.link = link;
    peer.connects++;
    this.#log("net:connected", {
      peer: peer.hex,
      direction: outbound ? "outbound" : "inbound",
      local: io.localAddress,
      remote: io.remoteAddress,
    });
    peer.changed.notify();
    return link;
  }

  /**
   * Takes a link out of service without losing what is in flight on it: it sends nothing more
   * and half-closes, so the peer reads everything we wrote and then the end of the stream, and we
   * read (and deliver) everything the peer wrote until its end arrives. The peer retires the same
   * connection by the same rule, so both ends close it; `handshakeTimeoutMs` bounds the wait.
   */
  #retire(link: Link, reason: string, message: string): void {
    if (link.closed || link.retiring) return;
    link.retiring = true;
    this.#detach(link, reason, message);
    link.retireTimer = setTimeout(
      () => this.#closeLink(link, "retire-timeout", "the peer did not close a retired connection"),
      this.#limits.handshakeTimeoutMs,
    );
    this.#retiring.add(link);
    link.wake.notify();
  }

  // -------------------------------------------------------------------------------------------
  // A live link: one reader, one writer

  async #runLink(link: Link): Promise<void> {
    const writer = this.#writeLoop(link);
    await this.#readLoop(link);
    // The reader has ended: by a failure (the link is closed), or at the peer's end of stream
    // (the link is retiring, so the writer finishes the write under way, then stops).
    await writer;
    this.#closeLink(link, "closed", "reader and writer stopped");
  }

  async #readLoop(link: Link): Promise<void> {
    try {
      while (!link.closed) {
        const frame = await link.io.next();
        if (frame === null) {
          this.#retire(link, "eof", "the peer closed the connection");
          return;
        }
        if (link.closed) return;
        this.#receive(link, frame);
      }
    } catch (e) {
      this.#closeLink(link, e instanceof HotStuffError ? e.reason : "read-failed", messageOf(e));
    }
  }

  #receive(link: Link, frame: Uint8Array): void {
    const peer = link.peer;
    peer.received++;
    link.missedPings = 0;
    link.lastReceivedAt = performance.now();
    const type = frame[0];
    if (type === undefined) return this.#badFrame(link, "empty-frame", "frame without a type byte");
    if (type === FrameType.ping || type === FrameType.pong) {
      if (frame.length !== 1) {
        return this.#badFrame(link, "bad-keepalive", `keepalive frame of ${frame.length} bytes`);
      }
      if (type === FrameType.ping) {
        link.pongDue = true;
        link.wake.notify();
      }
      return;
    }
    let verdict: HotStuffError | null;
    try {
      verdict = this.#onFrame(peer.key, frame);
    } catch (e) {
      this.#log("net:handler-error", {
        peer: peer.hex,
        reason: "handler-threw",
        message: messageOf(e),
      });
      return;
    }
    if (verdict !== null) this.#badFrame(link, verdict.reason, verdict.message);
  }

  #badFrame(link: Link, reason: string, message: string): void {
    link.badFrames++;
    link.peer.bad++;
    this.#log("net:bad-frame", {
      peer: link.peer.hex,
      reason,
      message,
      badFrames: link.badFrames,
    });
    if (link.badFrames > this.#limits.badFramesMax) {
      this.#closeLink(
        link,
        "too-many-bad-frames",
        `${link.badFrames} bad frames, limit ${this.#limits.badFramesMax}`,
      );
    }
  }

  async #writeLoop(link: Link): Promise<void> {
    try {
      while (!link.closed) {
        const batch = this.#takeBatch(link);
        if (batch.length === 0) {
          if (link.retiring) return await link.io.closeWrite();
          await link.wake.wait();
          continue;
        }
        await link.io.writeBatch(batch);
        link.peer.sent += batch.length;
      }
    } catch (e) {
      this.#closeLink(link, e instanceof HotStuffError ? e.reason : "write-failed", messageOf(e));
    }
  }

  /** Keepalive answers first, then queued frames (only for the peer's current link). */
  #takeBatch(link: Link): Uint8Array[] {
    const batch: Uint8Array[] = [];
    if (link.retiring) return batch;
    if (link.pongDue) batch.push(PONG);
    if (link.pingDue) batch.push(PING);
    link.pongDue = link.pingDue = false;
    if (link.peer.link !== link) return batch;
    let bytes = 0;
    while (batch.length < WRITE_BATCH_FRAMES_MAX && bytes < WRITE_BATCH_BYTES_MAX) {
      const frame = link.peer.queue.shift();
      if (frame === undefined) break;
      batch.push(frame);
      bytes += frame.length;
    }
    return batch;
  }

  #tick(): void {
    for (const peer of this.#peers.values()) {
      const link = peer.link;
      if (link === null) continue;
      if (link.missedPings >= this.#limits.keepaliveMissedMax) {
        this.#closeLink(
          link,
          "keepalive-timeout",
          `nothing received for ${link.missedPings} keepalive intervals`,
        );
        continue;
      }
      link.missedPings++;
      link.pingDue = true;
      link.wake.notify();
    }
  }

  #closeLink(link: Link, reason: string, message: string): void {
    if (link.closed) return;
    link.closed = true;
    clearTimeout(link.retireTimer);
    this.#retiring.delete(link);
    link.io.close();
    link.wake.notify();
    this.#detach(link, reason, message);
  }

  /** The link stops being the peer's link; logged once per link. */
  #detach(link: Link, reason: string, message: string): void {
    if (link.detached) return;
    link.detached = true;
    const peer = link.peer;
    if (peer.link === link) {
      peer.link = null;
      peer.lastLinkMs = performance.now() - link.startedAt;
      peer.changed.notify();
    }
    if (!BENIGN_CLOSE.has(reason)) peer.lastError = `${reason}: ${message}`;
    this.#log("net:disconnected", {
      peer: peer.hex,
      direction: link.outbound ? "outbound" : "inbound",
      remote: link.io.remoteAddress,
      reason,
      message,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function newPeer(
  key: Uint8Array,
  hex: string,
  address: PeerAddress | null,
  limits: Readonly<Required<ConnectionLimits>>,
): Peer {
  return {
    key,
    hex,
    address,
    queue: new FrameQueue(limits.sendQueueMax, limits.sendQueueBytesMax),
    changed: new Notifier(),
    link: null,
    lastLinkMs: 0,
    dropped: 0,
    droppedLogged: 0,
    bad: 0,
    sent: 0,
    received: 0,
    connects: 0,
    lastError: null,
  };
}

function peerStatus(peer: Peer): PeerStatus {
  const link = peer.link;
  return {
    publicKey: peer.hex,
    address: peer.address === null ? null : `${peer.address.hostname}:${peer.address.port}`,
    connected: link !== null,
    direction: link === null ? null : link.outbound ? "outbound" : "inbound",
    since: link?.since ?? null,
    localAddress: link?.io.localAddress ?? null,
    remoteAddress: link?.io.remoteAddress ?? null,
    queuedFrames: peer.queue.length,
    droppedFrames: peer.dropped,
    badFrames: peer.bad,
    sentFrames: peer.sent,
    receivedFrames: peer.received,
    connects: peer.connects,
    lastError: peer.lastError,
  };
}

function resolveLimits(options: ConnectionLimits): Readonly<Required<ConnectionLimits>> {
  const limits = { ...DEFAULT_CONNECTION_LIMITS };
  for (const name of Object.keys(limits) as (keyof ConnectionLimits)[]) {
    const value = options[name];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new ConfigError("bad-limit", `${name} must be a positive integer, got ${value}`);
    }
    limits[name] = value;
  }
  const rules: [boolean, string][] = [
    [limits.frameBytesMax <= FRAME_BYTES_LIMIT, `frameBytesMax must be <= ${FRAME_BYTES_LIMIT}`],
    [
      limits.sendQueueBytesMax >= limits.frameBytesMax,
      "sendQueueBytesMax must be >= frameBytesMax",
    ],
    [
      limits.dialBackoffMinMs <= limits.dialBackoffMaxMs,
      "dialBackoffMinMs must be <= dialBackoffMaxMs",
    ],
    [
      limits.readIdleTimeoutMs > limits.keepaliveIntervalMs,
      "readIdleTimeoutMs must exceed keepaliveIntervalMs (pings keep healthy connections busy)",
    ],
  ];
  for (const [ok, message] of rules) if (!ok) throw new ConfigError("bad-limit", message);
  return limits;
}

function checkIdentity(options: NetworkOptions): void {
  if (options.chainId.length === 0) throw new ConfigError("bad-chain-id", "chainId is empty");
  if (options.validators.get(options.signer.publicKey) === undefined) {
    throw new ConfigError(
      "not-a-validator",
      `our key ${toHex(options.signer.publicKey)} is not in the validator set`,
    );
  }
}

function addressBook(options: NetworkOptions): Map<string, PeerAddress> {
  const book = new Map<string, PeerAddress>();
  for (const p of options.peers) {
    const hex = toHex(p.publicKey);
    if (bytesEqual(p.publicKey, options.signer.publicKey)) continue;
    if (options.validators.get(p.publicKey) === undefined) {
      throw new ConfigError("unknown-peer", `peer ${hex} is not in the validator set`);
    }
    if (book.has(hex)) throw new ConfigError("duplicate-peer", `peer ${hex} is listed twice`);
    if (!Number.isSafeInteger(p.port) || p.port <= 0 || p.port > 65535) {
      throw new ConfigError("bad-port", `peer ${hex}: bad port ${p.port}`);
    }
    book.set(hex, p);
  }
  return book;
}

function refuseFrame(_from: Uint8Array, frame: Uint8Array): HotStuffError {
  return new HotStuffError("unknown-frame-type", `no handler for frame type ${frame[0]}`);
}

function defaultLog(event: string, fields: Record<string, unknown>): void {
  console.error(event, fields);
}

function safeLog(log: NetLog): NetLog {
  return (event, fields) => {
    try {
      log(event, fields);
    } catch {
      // A broken log sink must not break the transport.
    }
  };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
