/**
 * `deno task demo`: a replicated key-value store cluster on this machine, under client load.
 *
 * ```
 * deno task demo [--replicas N] [--duration SECONDS] [--clients C] [--batch B]
 *                [--log-level LEVEL] [--keep]
 * ```
 *
 * 1. Creates a cluster of N replicas (default 4) in a temporary directory, on free ports.
 * 2. Starts one replica process each (`deno run examples/kv_store/replica.ts`).
 * 3. Runs C clients (default 8), each sending batches of B `set` commands (default 250) with
 *    `POST /commands?wait=commit` to the replicas in turn, and now and then a `PUT /kv/{key}`.
 * 4. Shows a live progress line (view, committed height, commands/s): updated in place on a
 *    terminal, a plain line every 5 s otherwise.
 * 5. Runs for `--duration` seconds, or until Ctrl-C, then prints a summary: throughput, each
 *    replica's height, whether every replica has the same committed chain (hashes compared at
 *    every common height, via `GET /committed`), and whether every acknowledged `PUT` reads back
 *    from every replica.
 *
 * Exit code 0 only when the replicas agree (and the writes read back); 1 otherwise; 2 on bad
 * flags. The replica processes are stopped and the temporary directory removed on every exit
 * path, Ctrl-C included (a second Ctrl-C kills the replicas at once). `--keep` keeps the
 * directory (and its logs).
 *
 * @module
 */
import { ConfigError, intFlag, parseFlags, ProgressTicker, runMain } from "../../mod.ts";
import {
  compareHeads,
  getKv,
  ProcessCluster,
  putKv,
  type ReplicaStatus,
  setBatch,
  sleep,
  tryStatus,
} from "./cluster.ts";

const FLAGS = {
  replicas: { type: "string" },
  duration: { type: "string" },
  clients: { type: "string" },
  batch: { type: "string" },
  "log-level": { type: "string" },
  keep: { type: "boolean" },
} as const;

/** PUTs whose read-back is checked at the end, at most. */
const READBACK_MAX = 200;

interface Load {
  acked: number;
  errors: number;
  lastError: string | null;
  puts: Array<{ key: string; value: Uint8Array; height: number }>;
  maxHeight: number;
}

/**
 * The demo. Returns the exit code.
 *
 * @throws {ConfigError} on bad flags
 * @example
 * ```ts
 * import { demoMain } from "./demo.ts";
 * if (import.meta.main) Deno.exit(await demoMain(["--duration", "20"]));
 * ```
 */
export async function demoMain(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const replicas = intFlag(f, "replicas", 1, 64, 4);
  const duration = intFlag(f, "duration", 1, 365 * 24 * 3600, 0);
  const clients = intFlag(f, "clients", 1, 256, 8);
  const batch = intFlag(f, "batch", 1, 4096, 250);
  const logLevel = typeof f["log-level"] === "string" ? f["log-level"] : "warn";
  if (!["debug", "info", "warn", "error", "silent"].includes(logLevel)) {
    throw new ConfigError("bad-flag", `--log-level must be debug, info, warn, error or silent`);
  }
  const stop = new AbortController();
  let firstInterrupt: number | null = null;
  let cluster: ProcessCluster | null = null;
  const onSignal = (): void => {
    const now = performance.now();
    if (firstInterrupt === null) {
      firstInterrupt = now;
      console.log("\nstopping (Ctrl-C again to kill the replicas at once)...");
      stop.abort();
      return;
    }
    // `deno task` passes the terminal's Ctrl-C on as a second signal: that one is no request.
    if (now - firstInterrupt < 1000) return;
    cluster?.killAllNow();
    if (cluster !== null) Deno.removeSync(cluster.dir, { recursive: true });
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    cluster = await ProcessCluster.create({ replicas, logLevel, prefix: "hotstuff-demo-" });
    console.log(`cluster of ${replicas} replicas in ${cluster.dir}`);
    for (let i = 0; i < replicas; i++) cluster.start(i);
    await cluster.waitReady();
    console.log(`replicas up: ${cluster.urls.join(" ")}`);
    console.log(
      `live NodeTree page: ${cluster.urls[0]}/ (every replica serves its own at /, ` +
        `Prometheus metrics at /metrics)`,
    );
    const label = duration > 0 ? `for ${duration} s` : "until Ctrl-C";
    console.log(`load: ${clients} clients, batches of ${batch} commands, ${label}`);
    const load: Load = { acked: 0, errors: 0, lastError: null, puts: [], maxHeight: 0 };
    const started = performance.now();
    if (duration > 0) setTimeout(() => stop.abort(), duration * 1000);
    await Promise.all([
      ...Array.from({ length: clients }, (_, c) => client(cluster!, c, batch, load, stop.signal)),
      progress(cluster, load, started, stop.signal),
    ]);
    const seconds = (performance.now() - started) / 1000;
    return await summary(cluster, load, seconds);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (cluster !== null) {
      await cluster.close({ keepDir: f.keep === true });
      console.log(f.keep === true ? `kept ${cluster.dir}` : `removed ${cluster.dir}`);
    }
  }
}

/** One client: batches of `set` commands, and every fifth round a `PUT`. */
async function client(
  cluster: ProcessCluster,
  c: number,
  batch: number,
  load: Load,
  signal: AbortSignal,
): Promise<void> {
  const value = new TextEncoder().encode(`value from client ${c} `.repeat(2));
  for (let round = 0; !signal.aborted; round++) {
    const url = cluster.urls[(c + round) % cluster.urls.length]!;
    try {
      if (round % 5 === 4) {
        const key = `demo-${c}-${round}`;
        const v = new TextEncoder().encode(`${key}@${Date.now()}`);
        const r = await putKv(url, key, v);
        load.acked++;
        load.maxHeight = Math.max(load.maxHeight, r.height);
        if (load.puts.length < READBACK_MAX) load.puts.push({ key, value: v, height: r.height });
        continue;
      }
      const entries = Array.from(
        { length: batch },
        (_, j) => [`k-${c}-${(round * batch + j) % 10_000}`, value] as const,
      );
      const done = await setBatch(url, entries);
      load.acked += done.length;
      for (const d of done) load.maxHeight = Math.max(load.maxHeight, d.height);
    } catch (e) {
      load.errors++;
      load.lastError = String(e).slice(0, 200);
      await sleep(200);
    }
  }
}

/** The live progress line. */
async function progress(
  cluster: ProcessCluster,
  load: Load,
  started: number,
  signal: AbortSignal,
): Promise<void> {
  const tty = Deno.stdout.isTerminal();
  const encoder = new TextEncoder();
  let lastAcked = 0;
  let lastTime = started;
  let lastPrint = started;
  const aborted = new Promise((r) => signal.addEventListener("abort", r, { once: true }));
  while (!signal.aborted) {
    await Promise.race([sleep(1000), aborted]);
    const now = performance.now();
    const rate = (load.acked - lastAcked) / ((now - lastTime) / 1000);
    lastAcked = load.acked;
    lastTime = now;
    const statuses = await Promise.all(cluster.urls.map((u) => tryStatus(u, 1000)));
    const line = progressLine(statuses, load, rate, (now - started) / 1000);
    if (tty) {
      await Deno.stdout.write(encoder.encode(`\r${line.padEnd(100)}`));
    } else if (now - lastPrint >= 5000) {
      lastPrint = now;
      console.log(line);
    }
  }
  if (tty) await Deno.stdout.write(encoder.encode("\n"));
}

function progressLine(
  statuses: ReadonlyArray<ReplicaStatus | null>,
  load: Load,
  rate: number,
  seconds: number,
): string {
  const up = statuses.filter((s) => s !== null) as ReplicaStatus[];
  const view = Math.max(0, ...up.map((s) => s.view));
  const height = Math.max(0, ...up.map((s) => s.committed.height));
  return `t=${seconds.toFixed(0)}s view=${view} committed height=${height} ` +
    `commands/s=${Math.round(rate)} acked=${load.acked} errors=${load.errors} ` +
    `replicas up=${up.length}/${statuses.length}`;
}

async function summary(cluster: ProcessCluster, load: Load, seconds: number): Promise<number> {
  // Let every replica commit what was acknowledged somewhere before comparing.
  console.log(`closing check: every replica commits height ${load.maxHeight}...`);
  const waiting = new ProgressTicker((there: number) =>
    console.log(`  ${there} of ${cluster.urls.length} replicas at height ${load.maxHeight}`)
  );
  const deadline = performance.now() + 10_000;
  let statuses = await Promise.all(cluster.urls.map((u) => tryStatus(u)));
  const behind = (): number =>
    statuses.filter((s) => s === null || s.committed.height < load.maxHeight).length;
  while (performance.now() < deadline && behind() > 0) {
    waiting.tick(cluster.urls.length - behind());
    await sleep(200);
    statuses = await Promise.all(cluster.urls.map((u) => tryStatus(u)));
  }
  console.log("closing check: comparing the committed heads...");
  const heads = await compareHeads(cluster.urls);
  console.log(`closing check: reading back ${load.puts.length} acknowledged PUTs...`);
  const readback = await checkReadback(cluster, load);
  console.log("");
  console.log(
    `summary: ${cluster.urls.length} replicas, ${seconds.toFixed(1)} s of load, ` +
      `${load.acked} commands committed and acknowledged ` +
      `(${Math.round(load.acked / seconds)} commands/s), ${load.errors} client errors`,
  );
  if (load.lastError !== null) console.log(`  last client error: ${load.lastError}`);
  for (const [i, s] of statuses.entries()) {
    const name = cluster.config.validators[i]!.name;
    console.log(
      s === null
        ? `  ${name}: not answering`
        : `  ${name}: view ${s.view}, committed height ${s.committed.height}`,
    );
  }
  console.log(
    heads.agree
      ? `  committed chains: every replica has the same Node at common height ` +
        `${heads.commonHeight} (its hash covers the chain below it)`
      : `  committed chains: DISAGREE at common height ${heads.commonHeight} ` +
        `(${heads.hashes.map((h) => h?.slice(0, 16) ?? "no answer").join(", ")})`,
  );
  console.log(
    `  acknowledged PUTs read back from every replica: ${readback.ok} of ${readback.checked}`,
  );
  const ok = heads.agree && readback.ok === readback.checked;
  console.log(ok ? "result: OK" : "result: FAILED");
  return ok ? 0 : 1;
}

async function checkReadback(
  cluster: ProcessCluster,
  load: Load,
): Promise<{ checked: number; ok: number }> {
  let ok = 0;
  let checked = 0;
  const ticker = new ProgressTicker(() =>
    console.log(`  read back ${checked} of ${load.puts.length} PUTs`)
  );
  for (const put of load.puts) {
    checked++;
    ticker.tick(undefined);
    const values = await Promise.all(cluster.urls.map((u) => getKv(u, put.key).catch(() => null)));
    if (values.every((v) => v !== null && equal(v, put.value))) ok++;
  }
  return { checked: load.puts.length, ok };
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

if (import.meta.main) await runMain(() => demoMain(Deno.args), "demo");
