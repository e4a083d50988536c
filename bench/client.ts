/**
 * A closed-loop client process for sections (a), (b) and (f): keeps `--outstanding` commands in
 * flight as `--outstanding / --batch` concurrent `POST /commands?wait=commit` requests, each a
 * CBOR array of `--batch` unique key-value `set` commands of exactly `--size` bytes. A request
 * that is answered starts the next one at once (closed loop); each request goes to the next
 * replica in turn.
 *
 * ```
 * deno run --allow-net bench/client.ts --urls http://127.0.0.1:9001,... --client 0
 *   --size 32 --batch 100 --outstanding 1000 --start-at EPOCH_MS --warmup-ms 3000
 *   --window-ms 10000
 * ```
 *
 * It starts at `--start-at` (`Date.now()` time, shared by every client of a run), counts the
 * commands acknowledged (a `200` answer: every command of the batch committed) between
 * `start + warmup` and `start + warmup + window`, with the latency of each request from its
 * submission to its answer (every command of a batch shares it), then aborts what is in flight
 * and prints one JSON {@link ClientReport} line on stdout.
 *
 * Commands are unique across clients and runs (the mempool dedupes by SHA-256): the value holds
 * 8 random bytes of this process and a sequence number.
 *
 * @module
 */
import { encodeValue } from "../src/codec.ts";
import { intFlag, parseFlags, requireFlag, runMain } from "../src/cli/flags.ts";
import { kvMachine } from "../examples/kv_store/app.ts";
import { sleep } from "../src/runtime/clock.ts";

/** What one client prints when its window ends. */
export interface ClientReport {
  /** `--client`. */
  readonly client: number;
  /** Command size, bytes. */
  readonly size: number;
  /** Commands per request. */
  readonly batch: number;
  /** Concurrent requests (outstanding commands = `slots * batch`). */
  readonly slots: number;
  /** Commands acknowledged inside the window. */
  readonly acked: number;
  /** Latency of each request answered inside the window, ms (submission to answer). */
  readonly latenciesMs: number[];
  /** Commands acknowledged from the start (warm-up included). */
  readonly ackedTotal: number;
  /** Requests sent from the start. */
  readonly requestsTotal: number;
  /** Refusals and failures, by reason (`status-503/pool-full`, `fetch`, ...). */
  readonly errors: Record<string, number>;
  /** The last error's text, or null. */
  readonly lastError: string | null;
  /** How late the client started after `--start-at`, ms (it starts at once when late). */
  readonly lateMs: number;
}

/** Random bytes per process plus a sequence number: the least a value may hold. */
const UNIQUE_BYTES = 16;
/** Back-off after a refusal or a failed request, ms. */
const RETRY_DELAY_MS = 100;
/** Largest request body the replica accepts by default (`bodyBytesMax`). */
const BODY_BYTES_MAX = 1024 * 1024;

/**
 * Makes unique key-value `set` commands of exactly `size` bytes: the CBOR array
 * `["set", key (4 bytes), value]`, the value padded so that the whole command has `size` bytes.
 *
 * @example
 * ```ts
 * import { CommandMaker } from "./client.ts";
 * const make = new CommandMaker(32, 0);
 * make.next().length; // 32
 * ```
 */
export class CommandMaker {
  /** Command size, bytes. */
  readonly size: number;
  readonly #template: Uint8Array;
  readonly #keyAt: number;
  readonly #seqAt: number;
  #seq = 0;

  /**
   * A maker of `size`-byte commands for client `client`.
   *
   * @param size command size in bytes (27 or more; a few sizes cannot be hit exactly: 35, 36)
   * @param client client number, part of the key
   */
  constructor(size: number, client: number) {
    const valueBytes = valueBytesFor(size);
    if (valueBytes === null) throw new RangeError(`no command of exactly ${size} bytes`);
    const head = [0x83, 0x63, 0x73, 0x65, 0x74, 0x44]; // ["set", 4-byte key, ...
    const valueHeader = byteStringHeader(valueBytes);
    const t = new Uint8Array(head.length + 4 + valueHeader.length + valueBytes);
    t.set(head);
    this.#keyAt = head.length;
    t.set(valueHeader, this.#keyAt + 4);
    const valueAt = this.#keyAt + 4 + valueHeader.length;
    t.set(crypto.getRandomValues(new Uint8Array(8)), valueAt);
    this.#seqAt = valueAt + 8;
    new DataView(t.buffer).setUint16(this.#keyAt, client & 0xffff);
    this.#template = t;
    this.size = size;
    if (t.length !== size) throw new Error(`command template of ${t.length} bytes, not ${size}`);
  }

  /** The next unique command. */
  next(): Uint8Array {
    const c = this.#template.slice();
    const view = new DataView(c.buffer);
    const seq = this.#seq++;
    view.setUint16(this.#keyAt + 2, seq & 0xffff);
    view.setUint32(this.#seqAt, Math.floor(seq / 2 ** 32));
    view.setUint32(this.#seqAt + 4, seq >>> 0);
    return c;
  }
}

/** The value length that makes the command exactly `size` bytes, or null. */
function valueBytesFor(size: number): number | null {
  const fixed = 6 + 4; // array and "set" (5), key header (1), key (4)
  for (const header of [1, 2, 3]) {
    const v = size - fixed - header;
    if (v >= UNIQUE_BYTES && byteStringHeader(v).length === header) return v;
  }
  return null;
}

function byteStringHeader(length: number): Uint8Array {
  if (length < 24) return Uint8Array.of(0x40 + length);
  if (length < 256) return Uint8Array.of(0x58, length);
  if (length < 65536) return Uint8Array.of(0x59, length >> 8, length & 0xff);
  throw new RangeError(`byte string of ${length} bytes is too long for a bench command`);
}

function arrayHeader(n: number): Uint8Array {
  if (n < 24) return Uint8Array.of(0x80 + n);
  if (n < 256) return Uint8Array.of(0x98, n);
  if (n < 65536) return Uint8Array.of(0x99, n >> 8, n & 0xff);
  throw new RangeError(`array of ${n} items is too long for a bench batch`);
}

/**
 * The canonical CBOR array of `commands` (byte strings), encoded by hand: the clients share the
 * replicas' cores, so they should spend as little CPU as possible.
 *
 * @example
 * ```ts
 * import { CommandMaker, encodeBatch } from "./client.ts";
 * const make = new CommandMaker(32, 0);
 * encodeBatch([make.next(), make.next()]).length; // 1 + 2 * (2 + 32)
 * ```
 */
export function encodeBatch(commands: readonly Uint8Array[]): Uint8Array {
  const parts = [arrayHeader(commands.length)];
  for (const c of commands) parts.push(byteStringHeader(c.length), c);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

interface ClientRun {
  readonly urls: readonly string[];
  readonly client: number;
  readonly batch: number;
  readonly slots: number;
  readonly make: CommandMaker;
  readonly windowStart: number;
  readonly windowEnd: number;
  readonly stop: AbortController;
  acked: number;
  ackedTotal: number;
  requestsTotal: number;
  latenciesMs: number[];
  errors: Record<string, number>;
  lastError: string | null;
}

/** One slot of the closed loop: a request, its answer, the next request. */
async function slotLoop(run: ClientRun, slot: number): Promise<void> {
  const signal = run.stop.signal;
  for (let round = 0; !signal.aborted; round++) {
    const url = run.urls[(run.client + slot + round) % run.urls.length]!;
    const body = encodeBatch(Array.from({ length: run.batch }, () => run.make.next()));
    const sent = performance.now();
    let failure: string | null;
    try {
      const r = await fetch(`${url}/commands?wait=commit`, {
        method: "POST",
        headers: { "content-type": "application/cbor" },
        body: body as Uint8Array<ArrayBuffer>,
        signal,
      });
      const text = await r.text();
      failure = r.status === 200 ? null : `status-${r.status}/${reasonOf(text)}`;
    } catch (e) {
      if (signal.aborted) return;
      failure = `fetch/${e instanceof Error ? e.name : "error"}`;
      run.lastError = String(e).slice(0, 300);
    }
    const answered = performance.now();
    run.requestsTotal++;
    if (failure !== null) {
      run.errors[failure] = (run.errors[failure] ?? 0) + 1;
      run.lastError ??= failure;
      await sleep(RETRY_DELAY_MS, signal);
      continue;
    }
    run.ackedTotal += run.batch;
    if (answered >= run.windowStart && answered <= run.windowEnd) {
      run.acked += run.batch;
      run.latenciesMs.push(Math.round((answered - sent) * 100) / 100);
    }
  }
}

function reasonOf(text: string): string {
  try {
    const v = JSON.parse(text) as { reason?: unknown };
    return typeof v.reason === "string" ? v.reason : "unknown";
  } catch {
    return "not-json";
  }
}

const FLAGS = {
  urls: { type: "string" },
  client: { type: "string" },
  size: { type: "string" },
  batch: { type: "string" },
  outstanding: { type: "string" },
  "start-at": { type: "string" },
  "warmup-ms": { type: "string" },
  "window-ms": { type: "string" },
} as const;

/**
 * The client: parses flags, runs the closed loop over the window, prints its report.
 *
 * @example
 * ```ts
 * import { clientMain } from "./client.ts";
 * // Deno.exit(await clientMain(["--urls", url, "--start-at", String(Date.now())]));
 * ```
 */
export async function clientMain(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const urls = requireFlag(f, "urls").split(",").filter((u) => u !== "");
  const client = intFlag(f, "client", 0, 65_535, 0);
  const size = intFlag(f, "size", 27, 60 * 1024, 32);
  const batch = intFlag(f, "batch", 1, 4096, 100);
  const outstanding = intFlag(f, "outstanding", 1, 100_000, batch);
  const startAt = intFlag(f, "start-at", 0, Number.MAX_SAFE_INTEGER, Date.now());
  const warmupMs = intFlag(f, "warmup-ms", 0, 3_600_000, 3_000);
  const windowMs = intFlag(f, "window-ms", 1, 3_600_000, 10_000);
  if (batch * (size + 3) + 3 > BODY_BYTES_MAX) {
    throw new RangeError(`a batch of ${batch} commands of ${size} bytes exceeds 1 MiB`);
  }
  const make = new CommandMaker(size, client);
  selfCheck(make);
  const wait = startAt - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const start = performance.now();
  const stop = new AbortController();
  const run: ClientRun = {
    urls,
    client,
    batch,
    slots: Math.max(1, Math.round(outstanding / batch)),
    make,
    windowStart: start + warmupMs,
    windowEnd: start + warmupMs + windowMs,
    stop,
    acked: 0,
    ackedTotal: 0,
    requestsTotal: 0,
    latenciesMs: [],
    errors: {},
    lastError: null,
  };
  const timer = setTimeout(() => stop.abort(), warmupMs + windowMs);
  await Promise.all(Array.from({ length: run.slots }, (_, s) => slotLoop(run, s)));
  clearTimeout(timer);
  const report: ClientReport = {
    client,
    size,
    batch,
    slots: run.slots,
    acked: run.acked,
    latenciesMs: run.latenciesMs,
    ackedTotal: run.ackedTotal,
    requestsTotal: run.requestsTotal,
    errors: run.errors,
    lastError: run.lastError,
    lateMs: Math.max(0, -wait),
  };
  console.log(JSON.stringify(report));
  return 0;
}

/** The hand encoding must be what the replica's codec writes, and the machine must accept it. */
function selfCheck(make: CommandMaker): void {
  const probe = new CommandMaker(make.size, 65_535);
  const commands = [probe.next(), probe.next()];
  const mine = encodeBatch(commands);
  const theirs = encodeValue(commands);
  if (mine.length !== theirs.length || mine.some((b, i) => b !== theirs[i])) {
    throw new Error("hand-encoded batch differs from encodeValue");
  }
  const problem = kvMachine.check?.(commands[0]!) ?? null;
  if (problem !== null) throw new Error(`the key-value machine refuses the command: ${problem}`);
}

if (import.meta.main) await runMain(() => clientMain(Deno.args), "bench-client");
