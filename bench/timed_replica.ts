/**
 * The key-value replica (`examples/kv_store/replica.ts`, same flags) with wall-time accounting,
 * to see what a replica under load *waits* for, which a CPU profile cannot show (it reports the
 * waits as "(idle)"). Every 5 s it logs one `bench:timing` JSON line to stderr with, per
 * operation, the calls, the total and largest wall time and the most in flight at once:
 *
 * - `storage.*`: the Deno KV storage under the replica's state cache (`getState` counts cache
 *   misses only), with the Nodes, commits and state updates written;
 * - `app.produceCommand`, `app.validateNode`, `app.onCommit`: the mempool's Application hooks
 *   (wrapped by replacing the `Mempool.prototype.application` getter in this process only);
 * - `crypto.sign`, `crypto.verify`: Ed25519 through Web Crypto;
 * - `loop.lag`: how late a 10 ms interval timer fires (event-loop blocking).
 *
 * Run it as one replica of a bench cluster (`BenchClusterOptions.entry`), or by hand with the
 * flags of `deno task replica`. It changes no behaviour, only measures.
 *
 * @module
 */
import { runMain } from "../src/cli/flags.ts";
import { ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import type { Signer, Verifier } from "../src/crypto.ts";
import type { Application } from "../src/app.ts";
import { Mempool } from "../src/runtime/mempool.ts";
import { startReplica } from "../src/runtime/replica.ts";
import { configureJsonLogging, type LogLevel } from "../src/runtime/log.ts";
import { type Storage, wrapStorage, type WriteBatch } from "../src/storage/storage.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import {
  formatHostPort,
  readClusterConfig,
  readSecretKey,
  validatorSetOf,
} from "../src/cli/config.ts";
import { intFlag, parseFlags, requireFlag } from "../src/cli/flags.ts";
import { kvMachine } from "../examples/kv_store/app.ts";
import { kvRoutes } from "../examples/kv_store/routes.ts";

/** Wall-time totals of one operation. */
interface Meter {
  calls: number;
  totalMs: number;
  maxMs: number;
  inFlight: number;
  inFlightMax: number;
  items: number;
}

const meters = new Map<string, Meter>();

function meter(name: string): Meter {
  let m = meters.get(name);
  if (m === undefined) {
    m = { calls: 0, totalMs: 0, maxMs: 0, inFlight: 0, inFlightMax: 0, items: 0 };
    meters.set(name, m);
  }
  return m;
}

/**
 * Times an async call under `name` (wall time from call to settlement).
 *
 * @example
 * ```ts
 * // const v = await timed("storage.getState", () => kv.getState(key));
 * ```
 */
export async function timed<T>(name: string, f: () => Promise<T>, items = 0): Promise<T> {
  const m = meter(name);
  m.calls++;
  m.items += items;
  m.inFlight++;
  m.inFlightMax = Math.max(m.inFlightMax, m.inFlight);
  const t = performance.now();
  try {
    return await f();
  } finally {
    const ms = performance.now() - t;
    m.inFlight--;
    m.totalMs += ms;
    m.maxMs = Math.max(m.maxMs, ms);
  }
}

function timedStorage(inner: Storage): Storage {
  const updates = (b: WriteBatch): number =>
    (b.commits ?? []).reduce((n, c) => n + c.updates.length, 0);
  return wrapStorage(inner, {
    write: (b) => {
      meter("storage.write.nodes").items += b.nodes?.length ?? 0;
      meter("storage.write.commits").items += b.commits?.length ?? 0;
      return timed("storage.write", () => inner.write(b), updates(b));
    },
    getNode: (h) => timed("storage.getNode", () => inner.getNode(h)),
    committedHash: (h) => timed("storage.committedHash", () => inner.committedHash(h)),
    getState: (k) => timed("storage.getState", () => inner.getState(k)),
  });
}

function timedSigner(inner: Signer): Signer {
  return { publicKey: inner.publicKey, sign: (m) => timed("crypto.sign", () => inner.sign(m)) };
}

function timedVerifier(inner: Verifier): Verifier {
  return { verify: (k, m, s) => timed("crypto.verify", () => inner.verify(k, m, s)) };
}

/** Wraps the hooks of every Mempool's Application in this process. */
function timeApplicationHooks(): void {
  const d = Object.getOwnPropertyDescriptor(Mempool.prototype, "application");
  if (d?.get === undefined) throw new Error("Mempool.prototype.application is not a getter");
  const original = d.get;
  Object.defineProperty(Mempool.prototype, "application", {
    configurable: true,
    get(this: Mempool): Application {
      const app = original.call(this) as Application;
      return {
        produceCommand: (r) =>
          timed("app.produceCommand", async () => {
            const out = await app.produceCommand(r);
            meter("app.produceCommand").items += out.command.length;
            return out;
          }),
        validateNode: (r) => timed("app.validateNode", async () => await app.validateNode(r)),
        onCommit: app.onCommit === undefined
          ? undefined
          : (r) => timed("app.onCommit", async () => await app.onCommit!(r)),
      };
    },
  });
}

/** One operation's totals over a whole log. */
export interface TimingTotal {
  /** Operation, e.g. `storage.write`. */
  readonly name: string;
  /** Calls per second of wall time. */
  readonly perSecond: number;
  /** Mean wall time per call, ms. */
  readonly meanMs: number;
  /** Largest wall time of a call, ms. */
  readonly maxMs: number;
  /** Total wall time over wall time: the mean number in flight (over 1: they overlap). */
  readonly share: number;
  /** Most in flight at once. */
  readonly inFlightMax: number;
  /** Items (state updates written, command bytes produced), per second. */
  readonly itemsPerSecond: number;
}

/**
 * Sums the `bench:timing` lines of a timed replica's log.
 *
 * @example
 * ```ts
 * import { timingTotals } from "./timed_replica.ts";
 * timingTotals(""); // []
 * ```
 */
export function timingTotals(log: string): TimingTotal[] {
  let wallMs = 0;
  const sums = new Map<string, Meter>();
  for (const line of log.split("\n")) {
    if (!line.includes('"bench:timing"')) continue;
    const e = JSON.parse(line) as {
      windowMs: number;
      lines: Record<
        string,
        { calls: number; totalMs: number; maxMs: number; inFlightMax: number; items: number }
      >;
    };
    wallMs += e.windowMs;
    for (const [name, m] of Object.entries(e.lines)) {
      const s = sums.get(name) ??
        { calls: 0, totalMs: 0, maxMs: 0, inFlight: 0, inFlightMax: 0, items: 0 };
      s.calls += m.calls;
      s.totalMs += m.totalMs;
      s.items += m.items;
      s.maxMs = Math.max(s.maxMs, m.maxMs);
      s.inFlightMax = Math.max(s.inFlightMax, m.inFlightMax);
      sums.set(name, s);
    }
  }
  if (wallMs === 0) return [];
  return [...sums].map(([name, s]) => ({
    name,
    perSecond: s.calls / (wallMs / 1000),
    meanMs: s.calls === 0 ? 0 : s.totalMs / s.calls,
    maxMs: s.maxMs,
    share: s.totalMs / wallMs,
    inFlightMax: s.inFlightMax,
    itemsPerSecond: s.items / (wallMs / 1000),
  }));
}

function report(since: number): void {
  const lines: Record<string, unknown> = {};
  for (const [name, m] of [...meters].sort()) {
    lines[name] = {
      calls: m.calls,
      totalMs: Math.round(m.totalMs),
      meanMs: m.calls === 0 ? 0 : Math.round((100 * m.totalMs) / m.calls) / 100,
      maxMs: Math.round(m.maxMs),
      inFlightMax: m.inFlightMax,
      items: m.items,
    };
    m.calls =
      m.totalMs =
      m.maxMs =
      m.inFlightMax =
      m.items =
        0;
  }
  const line = { time: new Date().toISOString(), level: "warn", event: "bench:timing" };
  console.error(
    JSON.stringify({ ...line, windowMs: Math.round(performance.now() - since), lines }),
  );
}

const FLAGS = {
  config: { type: "string" },
  key: { type: "string" },
  data: { type: "string" },
  "log-level": { type: "string" },
  "view-timeout-ms": { type: "string" },
} as const;

async function main(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const config = await readClusterConfig(requireFlag(f, "config"));
  const { secretKey, index } = await readSecretKey(requireFlag(f, "key"), config);
  const dataDir = requireFlag(f, "data");
  await Deno.mkdir(dataDir, { recursive: true });
  const me = config.validators[index]!;
  timeApplicationHooks();
  const stop = new AbortController();
  Deno.addSignalListener("SIGTERM", () => stop.abort());
  Deno.addSignalListener("SIGINT", () => stop.abort());
  await configureJsonLogging((f["log-level"] ?? "warn") as LogLevel);
  const replica = await startReplica({
    chainId: config.chainId,
    validators: validatorSetOf(config),
    signer: timedSigner(ed25519Signer(secretKey)),
    verifier: timedVerifier(ed25519Verifier()),
    storage: timedStorage(await DenoKvStorage.open(`${dataDir}/replica.kv`)),
    machine: kvMachine,
    routes: kvRoutes,
    listenConsensus: me.consensus,
    listenHttp: me.http,
    peers: config.validators.map((v) => ({
      publicKey: v.publicKey,
      consensus: v.consensus,
      httpUrl: `http://${formatHostPort(v.http)}`,
    })),
    pacemaker: {
      viewTimeoutMinMs: intFlag(f, "view-timeout-ms", 10, 60_000, 500),
      viewTimeoutMaxMs: 8_000,
    },
    logLevel: (f["log-level"] ?? "warn") as LogLevel,
    name: me.name,
    signal: stop.signal,
  });
  let since = performance.now();
  let expected = performance.now() + 10;
  const lag = setInterval(() => {
    const now = performance.now();
    const late = Math.max(0, now - expected);
    const m = meter("loop.lag");
    m.calls++;
    m.totalMs += late;
    m.maxMs = Math.max(m.maxMs, late);
    expected = now + 10;
  }, 10);
  const reporter = setInterval(() => {
    report(since);
    since = performance.now();
  }, 5_000);
  await new Promise<void>((resolve) => stop.signal.addEventListener("abort", () => resolve()));
  clearInterval(lag);
  clearInterval(reporter);
  report(since);
  await replica.close();
  return 0;
}

if (import.meta.main) await runMain(() => main(Deno.args), "timed-replica");
