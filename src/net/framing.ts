/**
 * Length-prefixed frames over a byte stream: a 4-byte big-endian payload length, then the
 * payload. See the wire format in `tcp.ts` (copied into SPECIFICATION.md).
 *
 * The reader checks the announced length against `frameBytesMax` *before* it allocates anything,
 * reads through one fixed-size buffer, and gives every frame `readIdleTimeoutMs` to arrive in
 * full, so that a peer can neither make us allocate a large frame it never sends nor hold a
 * connection open by dripping bytes. Every failure is a {@link FrameError} with a reason; after a
 * failure the reader has closed its source and refuses further reads (the stream is out of step).
 *
 * @module
 */
import { assert, HotStuffError } from "../errors.ts";

/** Bytes of the length header in front of every frame. */
export const FRAME_HEADER_BYTES = 4;
/** Largest payload a 4-byte header can announce. */
export const FRAME_BYTES_LIMIT = 0xffff_ffff;
/** The most bytes a {@link FrameCipher} may add to a payload. */
export const SEALED_OVERHEAD_BYTES_MAX = 64;
/** Default `frameBytesMax`: 8 MiB. */
export const DEFAULT_FRAME_BYTES_MAX: number = 8 * 1024 * 1024;
/** Default `readIdleTimeoutMs`: 30 s for one whole frame to arrive. */
export const DEFAULT_READ_IDLE_TIMEOUT_MS = 30_000;
/** Default `readBufferBytes`: 64 KiB, the reader's fixed buffer. */
export const DEFAULT_READ_BUFFER_BYTES: number = 64 * 1024;

/**
 * The type byte that starts every frame payload on a Consensus TCP connection.
 *
 * @example
 * ```ts
 * import { FrameType } from "./framing.ts";
 * const ping = new Uint8Array([FrameType.ping]);
 * ```
 */
export const FrameType = {
  /** Keepalive request; payload is exactly this one byte. */
  ping: 0x00,
  /** Keepalive answer; payload is exactly this one byte. */
  pong: 0x01,
  /** A consensus message: this byte, then `encodeMessage` bytes. */
  message: 0x02,
  /** A batch of client commands: this byte, then the batch's bytes (`encodeBatch`). */
  batch: 0x03,
  /** Handshake step 1: this byte, then CBOR `[1, chainId, publicKey, nonce]`. */
  hello: 0x10,
  /** Handshake step 2: this byte, then CBOR `[signature]`. */
  proof: 0x11,
} as const;

/** Why a frame could not be read or written. */
export type FrameErrorReason =
  | "frame-too-large"
  | "truncated-frame"
  | "read-timeout"
  | "read-failed"
  | "write-failed"
  | "decrypt-failed"
  | "bad-key-exchange"
  | "sequence-exhausted";

/**
 * A framing failure: the connection it happened on must be closed.
 *
 * @example
 * ```ts
 * import { FrameError } from "./framing.ts";
 * const e = new FrameError("frame-too-large", "frame of 4294967295 bytes exceeds 8388608");
 * console.log(e.reason);
 * ```
 */
export class FrameError extends HotStuffError {
  /**
   * Creates a framing error.
   *
   * @param reason machine-readable reason
   * @param message what was wrong, with the offending value
   */
  constructor(reason: FrameErrorReason, message: string) {
    super(reason, message);
    this.name = "FrameError";
  }
}

/**
 * Where frames are read from: `Deno.Conn` is one; {@link streamSource} adapts a ReadableStream.
 * `close` must make a pending `read` settle (that is how a timed-out read is abandoned).
 */
export interface ByteSource {
  /** Reads up to `p.length` bytes into `p`; resolves to the count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Closes the source. May throw if already closed; callers ignore that. */
  close(): void;
}

/** Where frames are written to: `Deno.Conn` is one. */
export interface ByteSink {
  /** Writes some prefix of `p`; resolves to the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * Adapts a ReadableStream of byte chunks to a {@link ByteSource}. Chunks larger than the reader's
 * buffer are handed out in pieces; the only memory held is the current chunk.
 *
 * @example
 * ```ts
 * import { FrameReader, streamSource } from "./framing.ts";
 * const stream = ReadableStream.from([new Uint8Array([0, 0, 0, 1, 42])]);
 * const frame = await new FrameReader(streamSource(stream)).next(); // Uint8Array [42]
 * ```
 */
export function streamSource(stream: ReadableStream<Uint8Array>): ByteSource {
  const reader = stream.getReader();
  let chunk: Uint8Array = new Uint8Array(0);
  return {
    async read(p: Uint8Array): Promise<number | null> {
      while (chunk.length === 0) {
        const r = await reader.read();
        if (r.done) return null;
        chunk = r.value;
      }
      const n = Math.min(p.length, chunk.length);
      p.set(chunk.subarray(0, n));
      chunk = chunk.subarray(n);
      return n;
    },
    close(): void {
      chunk = new Uint8Array(0);
      reader.cancel().catch(() => {});
    },
  };
}

/** Options of {@link FrameReader}. */
export interface FrameReaderOptions {
  /** Largest accepted payload, checked against the header before allocating. Default 8 MiB. */
  readonly frameBytesMax?: number;
  /**
   * Longest wait for one whole frame, from the call to {@link FrameReader.next} until its last
   * byte. Covers idle peers and slow drips alike. Default 30 s.
   */
  readonly readIdleTimeoutMs?: number;
  /** Size of the reader's fixed buffer. Default 64 KiB. */
  readonly readBufferBytes?: number;
}

/**
 * Reads length-prefixed frames from a {@link ByteSource} through a fixed-size buffer.
 * One `next()` at a time.
 *
 * @example
 * ```ts
 * import { encodeFrame, FrameReader, streamSource } from "./framing.ts";
 * const bytes = encodeFrame(new Uint8Array([1, 2, 3]));
 * const reader = new FrameReader(streamSource(ReadableStream.from([bytes])));
 * await reader.next(); // Uint8Array [1, 2, 3]
 * await reader.next(); // null: clean end of stream
 * ```
 */
export class FrameReader {
  readonly #source: ByteSource;
  readonly #frameBytesMax: number;
  readonly #timeoutMs: number;
  readonly #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #busy = false;
  #failed: FrameError | null = null;

  /**
   * Creates a reader; nothing is read until {@link FrameReader.next}.
   *
   * @param source the bytes to read; closed by the reader on any failure
   * @param options limits, see {@link FrameReaderOptions}
   */
  constructor(source: ByteSource, options: FrameReaderOptions = {}) {
    this.#source = source;
    this.#frameBytesMax = options.frameBytesMax ?? DEFAULT_FRAME_BYTES_MAX;
    this.#timeoutMs = options.readIdleTimeoutMs ?? DEFAULT_READ_IDLE_TIMEOUT_MS;
    const bufferBytes = options.readBufferBytes ?? DEFAULT_READ_BUFFER_BYTES;
    assert(Number.isSafeInteger(bufferBytes) && bufferBytes >= FRAME_HEADER_BYTES, "buffer size");
    assert(this.#frameBytesMax >= 0 && this.#frameBytesMax <= FRAME_BYTES_LIMIT, "frame limit");
    assert(this.#timeoutMs > 0, "read timeout must be positive");
    this.#buf = new Uint8Array(bufferBytes);
  }

  /**
   * The next frame's payload, or null at a clean end of stream (between frames).
   *
   * @param frameBytesMax a tighter limit for this frame (e.g. during the handshake)
   * @throws {FrameError} `frame-too-large`, `truncated-frame`, `read-timeout` or `read-failed`;
   * the source is closed and every later call throws the same error
   */
  async next(frameBytesMax: number = this.#frameBytesMax): Promise<Uint8Array | null> {
    if (this.#failed !== null) throw this.#failed;
    assert(!this.#busy, "FrameReader.next called concurrently");
    this.#busy = true;
    const deadline = new Deadline(this.#timeoutMs, () => closeQuietly(this.#source));
    try {
      return await this.#readFrame(Math.min(frameBytesMax, this.#frameBytesMax), deadline);
    } catch (e) {
      this.#failed = deadline.expired ? deadline.error : toFrameError(e, "read-failed");
      closeQuietly(this.#source);
      throw this.#failed;
    } finally {
      deadline.clear();
      this.#busy = false;
    }
  }

  async #readFrame(frameBytesMax: number, deadline: Deadline): Promise<Uint8Array | null> {
    if (!(await this.#fill(FRAME_HEADER_BYTES, deadline))) {
      const got = this.#end - this.#start;
      if (got === 0) return null;
      throw new FrameError("truncated-frame", `end of stream after ${got} of 4 header bytes`);
    }
    const b = this.#buf;
    const s = this.#start;
    const length = ((b[s]! << 24) | (b[s + 1]! << 16) | (b[s + 2]! << 8) | b[s + 3]!) >>> 0;
    // Checked before anything is allocated: a 4 GiB header costs us nothing.
    if (length > frameBytesMax) {
      throw new FrameError(
        "frame-too-large",
        `frame of ${length} bytes exceeds frameBytesMax ${frameBytesMax}`,
      );
    }
    this.#start += FRAME_HEADER_BYTES;
    const frame = new Uint8Array(length);
    let filled = this.#take(frame, 0);
    while (filled < length) {
      const rest = frame.subarray(filled);
      // Large remainders are read straight into the frame; small ones through the buffer.
      const n = rest.length >= this.#buf.length
        ? await this.#readSome(rest, deadline)
        : ((await this.#fill(1, deadline)) ? this.#take(frame, filled) : null);
      if (n === null) {
        throw new FrameError("truncated-frame", `end of stream after ${filled} of ${length} bytes`);
      }
      filled += n;
    }
    return frame;
  }

  /** Copies buffered bytes into `frame` from `offset`; returns how many. */
  #take(frame: Uint8Array, offset: number): number {
    const n = Math.min(frame.length - offset, this.#end - this.#start);
    frame.set(this.#buf.subarray(this.#start, this.#start + n), offset);
    this.#start += n;
    return n;
  }

  /** Buffers at least `count` bytes; false if the stream ends first. */
  async #fill(count: number, deadline: Deadline): Promise<boolean> {
    assert(count <= this.#buf.length, "fill larger than the buffer");
    while (this.#end - this.#start < count) {
      if (this.#buf.length - this.#start < count) {
        // Not enough room behind the buffered bytes: move them to the front.
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.#readSome(this.#buf.subarray(this.#end), deadline);
      if (n === null) return false;
      this.#end += n;
    }
    return true;
  }

  async #readSome(into: Uint8Array, deadline: Deadline): Promise<number | null> {
    assert(into.length > 0, "read into an empty buffer");
    for (;;) {
      const n = await deadline.race(this.#source.read(into));
      if (n === null || n > 0) return n;
    }
  }
}

/** One frame's time budget: a timer started lazily at the first read that has to wait. */
class Deadline {
  expired = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #reject: ((e: FrameError) => void) | undefined;
  #promise: Promise<never> | undefined;

  constructor(readonly ms: number, readonly onExpire: () => void) {}

  get error(): FrameError {
    return new FrameError("read-timeout", `no complete frame within ${this.ms} ms`);
  }

  race<T>(p: Promise<T>): Promise<T> {
    if (this.#promise === undefined) {
      this.#promise = new Promise<never>((_, reject) => (this.#reject = reject));
      this.#promise.catch(() => {});
      this.#timer = setTimeout(() => {
        this.expired = true;
        this.#reject!(this.error);
        this.onExpire();
      }, this.ms);
    }
    return Promise.race([p, this.#promise]);
  }

  clear(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

function toFrameError(e: unknown, reason: FrameErrorReason): FrameError {
  if (e instanceof FrameError) return e;
  return new FrameError(reason, e instanceof Error ? `${e.name}: ${e.message}` : String(e));
}

/**
 * Closes something that may already be closed, ignoring the error that would cause.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./framing.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * closeQuietly(listener);
 * closeQuietly(listener); // no error
 * ```
 */
export function closeQuietly(closable: { close(): void }): void {
  try {
    closable.close();
  } catch {
    // Already closed.
  }
}

/**
 * A frame's bytes: 4-byte big-endian length, then `payload`.
 *
 * @throws {FrameError} `frame-too-large` if the payload exceeds `frameBytesMax`
 * @example
 * ```ts
 * import { encodeFrame } from "./framing.ts";
 * encodeFrame(new Uint8Array([9])); // Uint8Array [0, 0, 0, 1, 9]
 * ```
 */
export function encodeFrame(
  payload: Uint8Array,
  frameBytesMax: number = DEFAULT_FRAME_BYTES_MAX,
): Uint8Array {
  return encodeFrames([payload], frameBytesMax);
}

/**
 * Several frames back to back in one buffer, so that they go out in one write.
 *
 * @throws {FrameError} `frame-too-large` if any payload exceeds `frameBytesMax`
 * @example
 * ```ts
 * import { encodeFrames } from "./framing.ts";
 * encodeFrames([new Uint8Array([1]), new Uint8Array([2])]).length; // 10
 * ```
 */
export function encodeFrames(
  payloads: readonly Uint8Array[],
  frameBytesMax: number = DEFAULT_FRAME_BYTES_MAX,
): Uint8Array {
  let total = 0;
  for (const p of payloads) {
    if (p.length > frameBytesMax || p.length > FRAME_BYTES_LIMIT) {
      throw new FrameError(
        "frame-too-large",
        `payload of ${p.length} bytes exceeds frameBytesMax ${frameBytesMax}`,
      );
    }
    total += FRAME_HEADER_BYTES + p.length;
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const p of payloads) {
    view.setUint32(offset, p.length);
    out.set(p, offset + FRAME_HEADER_BYTES);
    offset += FRAME_HEADER_BYTES + p.length;
  }
  return out;
}

/**
 * Writes all of `bytes` (a sink may write less than asked).
 *
 * @throws {FrameError} `write-failed` when the sink fails
 * @example
 * ```ts
 * import { encodeFrame, writeAll } from "./framing.ts";
 * const written: Uint8Array[] = [];
 * // A sink that takes at most 3 bytes per call, as a socket may.
 * const sink = { write: (b: Uint8Array) => Promise.resolve(written.push(b.slice(0, 3)) && Math.min(3, b.length)) };
 * await writeAll(sink, encodeFrame(new Uint8Array([1, 2, 3, 4])));
 * console.log(written.length); // 3: a 4-byte header and 4 bytes, 3 at a time
 * ```
 */
export async function writeAll(sink: ByteSink, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  try {
    while (offset < bytes.length) offset += await sink.write(bytes.subarray(offset));
  } catch (e) {
    throw toFrameError(e, "write-failed");
  }
}

/** Options of {@link FramedConn}. */
export interface FramedConnOptions extends FrameReaderOptions {}

/**
 * Seals frame payloads before they are written and opens them after they are read, in order
 * (`link_cipher.ts`'s `LinkCipher` is one). Installed by the handshake.
 */
export interface FrameCipher {
  /** Bytes a sealed payload adds. */
  readonly overheadBytes: number;
  /** The sealed form of the next payload written. */
  seal(payload: Uint8Array): Promise<Uint8Array>;
  /** The payload of the next sealed frame read; throws a {@link FrameError} if it does not open. */
  open(sealed: Uint8Array): Promise<Uint8Array>;
}

/**
 * A `Deno.Conn` that speaks frames: one {@link FrameReader}, batched writes, idempotent close.
 *
 * @example
 * ```ts
 * import { FramedConn } from "./framing.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const dialed = Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const a = new FramedConn(await listener.accept());
 * const b = new FramedConn(await dialed);
 * await a.write(new Uint8Array([7]));
 * await b.next(); // Uint8Array [7]
 * a.close();
 * b.close();
 * listener.close();
 * ```
 */
export class FramedConn {
  /** The underlying connection. */
  readonly conn: Deno.Conn;
  /** `host:port` of our end. */
  readonly localAddress: string;
  /** `host:port` of the other end. */
  readonly remoteAddress: string;
  readonly #reader: FrameReader;
  readonly #frameBytesMax: number;
  #cipher: FrameCipher | null = null;
  #closed = false;

  /**
   * Wraps a connection.
   *
   * @param conn an open connection; this object owns it from now on
   * @param options limits, see {@link FrameReaderOptions}
   */
  constructor(conn: Deno.Conn, options: FramedConnOptions = {}) {
    this.conn = conn;
    this.localAddress = addressOf(conn.localAddr);
    this.remoteAddress = addressOf(conn.remoteAddr);
    this.#frameBytesMax = options.frameBytesMax ?? DEFAULT_FRAME_BYTES_MAX;
    // Room for a cipher's overhead; `next` applies the exact limit.
    const readerMax = Math.min(FRAME_BYTES_LIMIT, this.#frameBytesMax + SEALED_OVERHEAD_BYTES_MAX);
    this.#reader = new FrameReader(
      { read: (p) => conn.read(p), close: () => this.close() },
      { ...options, frameBytesMax: readerMax },
    );
  }

  /**
   * From now on, seals every payload written and opens every payload read with `cipher`. Call
   * it between two frames, with no read or write under way (the handshake does, when it ends).
   */
  secure(cipher: FrameCipher): void {
    assert(this.#cipher === null, "FramedConn.secure called twice");
    assert(cipher.overheadBytes <= SEALED_OVERHEAD_BYTES_MAX, "cipher overhead too large");
    this.#cipher = cipher;
  }

  /** True once {@link FramedConn.secure} installed a cipher. */
  get secured(): boolean {
    return this.#cipher !== null;
  }

  /** True once {@link FramedConn.close} ran (by us, or by the reader after a failure). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The next frame's payload, or null when the peer closed between frames.
   *
   * @throws {FrameError} see {@link FrameReader.next}
   */
  async next(frameBytesMax: number = this.#frameBytesMax): Promise<Uint8Array | null> {
    const cipher = this.#cipher;
    if (cipher === null) return await this.#reader.next(frameBytesMax);
    const sealed = await this.#reader.next(frameBytesMax + cipher.overheadBytes);
    if (sealed === null) return null;
    try {
      return await cipher.open(sealed);
    } catch (e) {
      this.close();
      throw toFrameError(e, "decrypt-failed");
    }
  }

  /**
   * Writes one frame.
   *
   * @throws {FrameError} `frame-too-large` or `write-failed`
   */
  write(payload: Uint8Array): Promise<void> {
    return this.writeBatch([payload]);
  }

  /**
   * Writes several frames with one write.
   *
   * @throws {FrameError} `frame-too-large` or `write-failed`
   */
  async writeBatch(payloads: readonly Uint8Array[]): Promise<void> {
    const cipher = this.#cipher;
    if (cipher === null) {
      await writeAll(this.conn, encodeFrames(payloads, this.#frameBytesMax));
      return;
    }
    for (const p of payloads) {
      if (p.length > this.#frameBytesMax) {
        throw new FrameError(
          "frame-too-large",
          `payload of ${p.length} bytes exceeds frameBytesMax ${this.#frameBytesMax}`,
        );
      }
    }
    // Sealed in write order: the sequence numbers are taken now, before any await.
    const sealed = await Promise.all(payloads.map((p) => cipher.seal(p)));
    await writeAll(this.conn, encodeFrames(sealed, this.#frameBytesMax + cipher.overheadBytes));
  }

  /**
   * Half-closes: tells the peer we will write no more (it reads to the end of what we sent),
   * while we keep reading. Never throws.
   */
  async closeWrite(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.conn.closeWrite();
    } catch {
      // Already closed or reset: the reader will see it.
    }
  }

  /** Closes the connection; pending reads and writes fail. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.conn);
  }
}

function addressOf(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}
