/**
 * `deno task kill-loop`: SIGKILLs replica processes of the key-value store at random moments
 * under client load, restarts each from its data directory, and then checks the three things a
 * crash must never break.
 *
 * ```
 * deno task kill-loop [--kills N] [--seed S] [--replicas R] [--clients C] [--keep]
 * ```
 *
 * 1. Creates a cluster of R replicas (default 4) in a temporary directory on free ports and
 *    starts one process each (`examples/kv_store/replica.ts`, log level `debug`, so that every
 *    vote a replica sends is logged as a `vote:send` line with its view and Node hash).
 * 2. Runs C clients (default 4): `PUT /kv/{key}`, and every fourth request a batch through
 *    `POST /commands?wait=commit`; each key is written once, and every write answered `200` is
 *    remembered as *acknowledged*.
 * 3. N times (default 6): waits a random time, SIGKILLs a random replica, waits a random time,
 *    restarts it from its data directory, and waits until it answers and the cluster commits
 *    again. The seed (default 1) fixes every random choice (not the timing of the processes).
 * 4. Stops the clients, waits until every replica has committed the last acknowledged write, and
 *    checks: every acknowledged write reads back with its value from every replica (else
 *    *lost*); the replicas' committed chains have the same hash at every common height
 *    (`GET /committed` in ranges of 256; else a *disagreement* per height); no validator signed
 *    two different votes in one view (else a *double vote*). Votes come from two sources: each
 *    replica's `vote:send` log lines (over all its restarts), and the signers of every QC in
 *    the committed chains.
 *
 * Prints `N kills, W acknowledged writes, L lost, D disagreements, V double votes`. Exit code 1
 * when L, D or V is above 0, a replica logged a `fatal` line, or the cluster stopped making
 * progress; 2 on bad flags; 0 otherwise. On failure the directory (cluster file, data, logs) is
 * kept and its path printed; `--keep` keeps it always.
 *
 * A vote sent in the moment between its send and its log line can be missed in the logs when the
 * process is killed right then; the QC source still sees it if it was counted.
 *
 * @module
 */
import { intFlag, parseFlags, runMain } from "../cli/flags.ts";
import { Random } from "./random.ts";
import {
  fetchPolitely,
  getKv,
  ProcessCluster,
  putKv,
  setBatch,
  sleep,
  tryStatus,
} from "../../examples/kv_store/cluster.ts";

/** Options of {@link runKillLoop}. */
export interface KillLoopOptions {
  /** SIGKILLs to deliver. */
  readonly kills: number;
  /** Seed of every random choice. */
  readonly seed: number;
  /** Replica processes. Default 4. */
  readonly replicas?: number;
  /** Concurrent clients. Default 4. */
  readonly clients?: number;
  /** Minimum view timeout of the replicas, ms. Default 300. */
  readonly viewTimeoutMs?: number;
  /** Keep the temporary directory: always, on failure (default) or never. */
  readonly keepDir?: "always" | "on-failure" | "never";
  /** Progress lines (one per kill). Default: none. */
  readonly log?: (line: string) => void;
}

/** An acknowledged write that some replica does not return. */
export interface LostWrite {
  /** The key. */
  readonly key: string;
  /** The replica that lacks it (index). */
  readonly replica: number;
  /** What it returned instead (null: nothing). */
  readonly got: string | null;
}

/** A height at which the committed chains differ. */
export interface Disagreement {
  /** The height. */
  readonly height: number;
  /** Each replica's hash there (null: none). */
  readonly hashes: ReadonlyArray<string | null>;
}

/** Two different votes by one validator in one view. */
export interface DoubleVoteEvidence {
  /** The validator's name. */
  readonly validator: string;
  /** The view. */
  readonly view: number;
  /** The Nodes voted for, and where each vote was seen. */
  readonly votes: ReadonlyArray<{ readonly nodeHash: string; readonly source: string }>;
}

/** What {@link runKillLoop} found. */
export interface KillLoopReport {
  /** SIGKILLs delivered. */
  readonly kills: number;
  /** Writes answered 200. */
  readonly acknowledgedWrites: number;
  /** Client requests that failed (not acknowledged; expected while replicas die). */
  readonly clientErrors: number;
  /** Acknowledged writes missing or wrong somewhere. */
  readonly lost: readonly LostWrite[];
  /** Heights where the committed chains differ. */
  readonly disagreements: readonly Disagreement[];
  /** Validators that voted twice in one view. */
  readonly doubleVotes: readonly DoubleVoteEvidence[];
  /** `fatal` log lines (Engine failures). */
  readonly fatal: readonly string[];
  /** Highest height every replica has committed. */
  readonly commonHeight: number;
  /** Distinct (validator, view) votes seen in logs and QCs. */
  readonly votesSeen: number;
  /** `vote:send` log lines read (all replicas, all restarts). */
  readonly voteLogLines: number;
  /** QC signatures read from the committed chains. */
  readonly certificateVotes: number;
  /** The temporary directory, if kept. */
  readonly keptDir: string | null;
}

/** How long the cluster may go without committing before the loop gives up, ms. */
const PROGRESS_TIMEOUT_MS = 60_000;
/** Client requests' timeout, ms. */
const CLIENT_TIMEOUT_MS = 15_000;
/** Writes in one `POST /commands?wait=commit` batch. */
const BATCH_WRITES = 8;
/** Read-backs in flight at once. */
const READBACK_CONCURRENCY = 16;

/**
 * Runs the kill loop and checks the cluster afterwards. Never leaves a process behind.
 *
 * @throws {Error} when the cluster stops making progress (with the end of each replica's log)
 * @example
 * ```ts
 * import { formatKillLoopSummary, runKillLoop } from "./kill_loop.ts";
 * const report = await runKillLoop({ kills: 2, seed: 7, keepDir: "never" });
 * console.log(formatKillLoopSummary(report));
 * ```
 */
export async function runKillLoop(options: KillLoopOptions): Promise<KillLoopReport> {
  const replicas = options.replicas ?? 4;
  const cluster = await ProcessCluster.create({
    replicas,
    logLevel: "debug",
    viewTimeoutMs: options.viewTimeoutMs ?? 300,
    prefix: "hotstuff-kill-loop-",
  });
  let failed = true;
  let clients: Clients | null = null;
  try {
    for (let i = 0; i < replicas; i++) cluster.start(i);
    await cluster.waitReady();
    await waitForProgress(cluster, 0);
    clients = new Clients(cluster, options.clients ?? 4, options.seed);
    const kills = await killRepeatedly(cluster, options);
    await clients.stop();
    const report = await check(cluster, clients, kills);
    failed = !killLoopPassed(report);
    const keep = options.keepDir === "always" || (failed && options.keepDir !== "never");
    return { ...report, keptDir: keep ? cluster.dir : null };
  } finally {
    await clients?.stop();
    const keep = options.keepDir === "always" || (failed && options.keepDir !== "never");
    await cluster.close({ keepDir: keep });
    if (keep) options.log?.(`kept ${cluster.dir} (cluster file, data directories, logs)`);
  }
}

/**
 * True when nothing was lost, the chains agree, nobody voted twice and nothing failed.
 *
 * @example
 * ```ts
 * import { killLoopPassed, runKillLoop } from "./kill_loop.ts";
 * const report = await runKillLoop({ kills: 1, seed: 1 });
 * if (!killLoopPassed(report)) Deno.exit(1);
 * ```
 */
export function killLoopPassed(report: Omit<KillLoopReport, "keptDir">): boolean {
  return report.lost.length === 0 && report.disagreements.length === 0 &&
    report.doubleVotes.length === 0 && report.fatal.length === 0;
}

/**
 * The one-line summary: `N kills, W acknowledged writes, L lost, D disagreements, V double votes`.
 *
 * @example
 * ```ts
 * import { formatKillLoopSummary, runKillLoop } from "./kill_loop.ts";
 * const report = await runKillLoop({ kills: 6, seed: 1 });
 * console.log(formatKillLoopSummary(report)); // "6 kills, 812 acknowledged writes, 0 lost, ..."
 * ```
 */
export function formatKillLoopSummary(report: KillLoopReport): string {
  return `${report.kills} kills, ${report.acknowledgedWrites} acknowledged writes, ` +
    `${report.lost.length} lost, ${report.disagreements.length} disagreements, ` +
    `${report.doubleVotes.length} double votes`;
}

// ---------------------------------------------------------------------------------------------
// The loop

async function killRepeatedly(cluster: ProcessCluster, o: KillLoopOptions): Promise<number> {
  const random = new Random(o.seed);
  const n = cluster.urls.length;
  let kills = 0;
  while (kills < o.kills) {
    await sleep(random.range(100, 2_000));
    await assertAllRunning(cluster);
    const victim = random.int(n);
    const before = await maxHeight(cluster);
    await cluster.kill(victim, "SIGKILL");
    kills++;
    o.log?.(`kill ${kills}/${o.kills}: SIGKILL replica-${victim} at committed height ${before}`);
    await sleep(random.range(0, 1_500));
    cluster.start(victim);
    await cluster.waitReady(30_000, [victim]);
    await waitForProgress(cluster, before);
  }
  return kills;
}

/** Waits until some replica has committed beyond `height`. */
async function waitForProgress(cluster: ProcessCluster, height: number): Promise<void> {
  const deadline = performance.now() + PROGRESS_TIMEOUT_MS;
  while ((await maxHeight(cluster)) <= height) {
    await assertAllRunning(cluster);
    if (performance.now() > deadline) {
      throw new Error(
        `no commit beyond height ${height} within ${PROGRESS_TIMEOUT_MS} ms` +
          (await logTails(cluster)),
      );
    }
    await sleep(100);
  }
}

/**
 * Throws when a replica process is gone that the loop did not kill: it crashed, or something
 * outside signalled it. Either way the run no longer tests what it claims to.
 */
async function assertAllRunning(cluster: ProcessCluster): Promise<void> {
  for (let i = 0; i < cluster.urls.length; i++) {
    if (cluster.running(i)) continue;
    throw new Error(
      `replica-${i} exited without being killed by the loop (a crash, or a signal from ` +
        `outside); the end of its log:\n${await cluster.logTail(i, 10)}`,
    );
  }
}

/**
 * Each replica's committed height (-1 when it does not answer within a second).
 *
 * @example
 * ```ts
 * import { heightsOf } from "./kill_loop.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function lowest(cluster: ProcessCluster): Promise<number> {
 *   return Math.min(...await heightsOf(cluster));
 * }
 * ```
 */
export async function heightsOf(cluster: ProcessCluster): Promise<number[]> {
  const statuses = await Promise.all(cluster.urls.map((u) => tryStatus(u, 1_000)));
  return statuses.map((s) => s?.committed.height ?? -1);
}

async function maxHeight(cluster: ProcessCluster): Promise<number> {
  return Math.max(...(await heightsOf(cluster)));
}

/**
 * The last lines of every replica's log, for an error message.
 *
 * @example
 * ```ts
 * import { logTails } from "./kill_loop.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function stuck(cluster: ProcessCluster): Promise<never> {
 *   throw new Error(`stuck${await logTails(cluster)}`);
 * }
 * ```
 */
export async function logTails(cluster: ProcessCluster): Promise<string> {
  let out = "";
  for (let i = 0; i < cluster.urls.length; i++) {
    out += `\n--- replica-${i}\n${await cluster.logTail(i, 6)}`;
  }
  return out;
}

/**
 * Client load on a {@link ProcessCluster}: every key written once (`PUT /kv/{key}`, every fourth
 * request a batch through `POST /commands`), at a replica chosen at random; every write answered
 * 200 remembered as acknowledged, with the highest height it committed at.
 *
 * @example
 * ```ts
 * import { Clients } from "./kill_loop.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function load(cluster: ProcessCluster): Promise<number> {
 *   const clients = new Clients(cluster, 4, 1);
 *   await new Promise((resolve) => setTimeout(resolve, 1_000));
 *   await clients.stop();
 *   return clients.acked.size;
 * }
 * ```
 */
export class Clients {
  /** Acknowledged writes: key to value. */
  readonly acked: Map<string, string> = new Map();
  /** Highest height an acknowledged write committed at. */
  maxHeight = 0;
  /** Requests not acknowledged. */
  errors = 0;
  readonly #stop = new AbortController();
  readonly #done: Promise<void[]>;

  /** Starts `count` clients; `seed` fixes their choices of replica. */
  constructor(cluster: ProcessCluster, count: number, seed: number) {
    this.#done = Promise.all(
      Array.from({ length: count }, (_, c) => this.#run(cluster, c, new Random(seed * 977 + c))),
    );
  }

  async #run(cluster: ProcessCluster, c: number, random: Random): Promise<void> {
    const encoder = new TextEncoder();
    for (let n = 0; !this.#stop.signal.aborted; n++) {
      const url = cluster.urls[random.int(cluster.urls.length)]!;
      const keys = Array.from(
        { length: n % 4 === 3 ? BATCH_WRITES : 1 },
        (_, j) => `c${c}-${n}-${j}`,
      );
      const entries = keys.map((k) => [k, `${k}@${Date.now()}`] as const);
      try {
        const heights = entries.length === 1
          ? [(await putKv(url, keys[0]!, encoder.encode(entries[0]![1]), CLIENT_TIMEOUT_MS)).height]
          : (await setBatch(
            url,
            entries.map(([k, v]) => [k, encoder.encode(v)]),
            CLIENT_TIMEOUT_MS,
          ))
            .map((d) => d.height);
        for (const [k, v] of entries) this.acked.set(k, v);
        this.maxHeight = Math.max(this.maxHeight, ...heights);
      } catch {
        // Not acknowledged: the replica died or was busy; the next write goes elsewhere.
        this.errors++;
        await sleep(50);
      }
    }
  }

  /** Stops the clients and waits for the requests in flight. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }
}

// ---------------------------------------------------------------------------------------------
// The checks

async function check(
  cluster: ProcessCluster,
  clients: Clients,
  kills: number,
): Promise<Omit<KillLoopReport, "keptDir">> {
  await waitForAll(cluster, clients.maxHeight);
  const lost = await lostWrites(cluster, clients.acked);
  const chains = await Promise.all(cluster.urls.map((u) => committedChain(u)));
  const disagreements = chainDisagreements(chains);
  const votes = new VoteBook(cluster.config.validators.map((v) => v.name));
  for (let i = 0; i < cluster.urls.length; i++) await votes.readLog(cluster.logPath(i), i);
  for (const chain of chains) votes.readCertificates(chain, cluster.config.validators);
  const fatal: string[] = [];
  for (let i = 0; i < cluster.urls.length; i++) {
    const text = await Deno.readTextFile(cluster.logPath(i)).catch(() => "");
    for (const line of text.split("\n")) if (line.includes(`"level":"fatal"`)) fatal.push(line);
  }
  return {
    kills,
    acknowledgedWrites: clients.acked.size,
    clientErrors: clients.errors,
    lost,
    disagreements,
    doubleVotes: votes.doubleVotes(),
    fatal,
    commonHeight: Math.min(...chains.map((c) => c.length)),
    votesSeen: votes.size,
    voteLogLines: votes.logLines,
    certificateVotes: votes.certificateVotes,
  };
}

/**
 * Waits until every replica has committed `height` (the last acknowledged write's).
 *
 * @throws {Error} after 60 s, or when a replica process is gone
 * @example
 * ```ts
 * import { type Clients, waitForAll } from "./kill_loop.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function settle(cluster: ProcessCluster, clients: Clients): Promise<void> {
 *   await waitForAll(cluster, clients.maxHeight);
 * }
 * ```
 */
export async function waitForAll(cluster: ProcessCluster, height: number): Promise<void> {
  const deadline = performance.now() + PROGRESS_TIMEOUT_MS;
  while (Math.min(...(await heightsOf(cluster))) < height) {
    await assertAllRunning(cluster);
    if (performance.now() > deadline) {
      throw new Error(
        `not every replica reached height ${height} within ${PROGRESS_TIMEOUT_MS} ms: ` +
          `${await heightsOf(cluster)}${await logTails(cluster)}`,
      );
    }
    await sleep(100);
  }
}

/**
 * The acknowledged writes that some replica does not return with their value.
 *
 * @example
 * ```ts
 * import { type Clients, lostWrites } from "./kill_loop.ts";
 * import type { ProcessCluster } from "../../examples/kv_store/cluster.ts";
 * async function lost(cluster: ProcessCluster, clients: Clients): Promise<number> {
 *   return (await lostWrites(cluster, clients.acked)).length;
 * }
 * ```
 */
export async function lostWrites(
  cluster: ProcessCluster,
  acked: ReadonlyMap<string, string>,
): Promise<LostWrite[]> {
  const decoder = new TextDecoder();
  const lost: LostWrite[] = [];
  const jobs = [...acked].flatMap(([key, value]) =>
    cluster.urls.map((url, replica) => ({ key, value, url, replica }))
  );
  for (let i = 0; i < jobs.length; i += READBACK_CONCURRENCY) {
    await Promise.all(
      jobs.slice(i, i + READBACK_CONCURRENCY).map(async (j) => {
        const got = await getKv(j.url, j.key).catch((e) => new TextEncoder().encode(`error: ${e}`));
        const text = got === null ? null : decoder.decode(got);
        if (text !== j.value) lost.push({ key: j.key, replica: j.replica, got: text });
      }),
    );
  }
  return lost;
}

/** A committed Node as `GET /committed` answers it in JSON (the fields read here). */
export interface CommittedNode {
  /** Its hash, hex. */
  readonly hash: string;
  /** Its height. */
  readonly height: number;
  /** The QC it carries: view, certified Node (hex) and signers (hex keys). */
  readonly justify: {
    readonly view: number;
    readonly nodeHash: string;
    readonly signers: readonly string[];
  };
}

/**
 * A replica's whole committed chain, heights 1.., fetched in ranges of 256.
 *
 * @example
 * ```ts
 * import { committedChain } from "./kill_loop.ts";
 * async function length(url: string): Promise<number> {
 *   return (await committedChain(url)).length;
 * }
 * ```
 */
export async function committedChain(url: string): Promise<CommittedNode[]> {
  const status = await tryStatus(url, 5_000);
  const top = status?.committed.height ?? 0;
  const out: CommittedNode[] = [];
  for (let h = 1; h <= top;) {
    const to = Math.min(top, h + 255);
    const r = await fetchPolitely(`${url}/committed?from=${h}&to=${to}`);
    if (r.status !== 200) throw new Error(`GET ${url}/committed: ${r.status} ${await r.text()}`);
    const nodes = (await r.json() as Array<{ node: CommittedNode }>).map((n) => n.node);
    if (nodes.length === 0) break;
    out.push(...nodes);
    h += nodes.length;
  }
  return out;
}

/**
 * Heights (up to the shortest chain) where the replicas' committed chains differ.
 *
 * @example
 * ```ts
 * import { chainDisagreements } from "./kill_loop.ts";
 * const qc = { view: 0, nodeHash: "00", signers: [] };
 * const a = { hash: "a", height: 1, justify: qc };
 * chainDisagreements([[a], [{ ...a, hash: "b" }]]); // [{ height: 1, hashes: ["a", "b"] }]
 * ```
 */
export function chainDisagreements(
  chains: ReadonlyArray<readonly CommittedNode[]>,
): Disagreement[] {
  const common = Math.min(...chains.map((c) => c.length));
  const out: Disagreement[] = [];
  for (let i = 0; i < common; i++) {
    const hashes = chains.map((c) => c[i]?.hash ?? null);
    if (hashes.some((h) => h !== hashes[0])) out.push({ height: i + 1, hashes });
  }
  return out;
}

/**
 * Every vote seen, by validator and view, from replicas' logs and from committed QCs; finds the
 * validators that voted for two different Nodes in one view.
 *
 * @example
 * ```ts
 * import { VoteBook } from "./kill_loop.ts";
 * const book = new VoteBook(["replica-0"]);
 * book.add(0, 7, "aa", "log");
 * book.add(0, 7, "bb", "QC");
 * book.doubleVotes(); // [{ validator: "replica-0", view: 7, votes: [...] }]
 * ```
 */
export class VoteBook {
  readonly #names: readonly string[];
  /** `validator/view` to Node hash to where it was seen. */
  readonly #votes = new Map<string, Map<string, string>>();

  /**
   * An empty book.
   *
   * @param names the validators' names, by index
   */
  constructor(names: readonly string[]) {
    this.#names = names;
  }

  /** Distinct (validator, view) pairs seen. */
  /** `vote:send` lines read. */
  logLines = 0;
  /** QC signatures read. */
  certificateVotes = 0;

  /** Distinct (validator, view) pairs seen. */
  get size(): number {
    return this.#votes.size;
  }

  /** Records that `validator` (an index) voted for `nodeHash` in `view`, seen at `source`. */
  add(validator: number, view: number, nodeHash: string, source: string): void {
    const key = `${validator}/${view}`;
    let byHash = this.#votes.get(key);
    if (byHash === undefined) this.#votes.set(key, byHash = new Map());
    if (!byHash.has(nodeHash)) byHash.set(nodeHash, source);
  }

  /** The `vote:send` lines of replica `i`'s log, over all its restarts. */
  async readLog(path: string, i: number): Promise<void> {
    using file = await Deno.open(path, { read: true });
    let rest = "";
    let lineNo = 0;
    for await (const chunk of file.readable.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) this.#logLine(line, i, ++lineNo);
    }
    this.#logLine(rest, i, ++lineNo);
  }

  #logLine(line: string, i: number, lineNo: number): void {
    if (!line.includes(`"event":"vote:send"`)) return;
    const v = JSON.parse(line) as { view: number; nodeHash: string };
    this.logLines++;
    this.add(i, v.view, v.nodeHash, `${this.#names[i]}.log line ${lineNo}`);
  }

  /** The signers of every QC carried by a committed Node. */
  readCertificates(
    chain: readonly CommittedNode[],
    validators: ReadonlyArray<{ readonly publicKey: Uint8Array }>,
  ): void {
    const index = new Map(validators.map((v, i) => [toHex(v.publicKey), i]));
    for (const node of chain) {
      const qc = node.justify;
      for (const signer of qc.signers) {
        const i = index.get(signer);
        if (i !== undefined) {
          this.certificateVotes++;
          this.add(i, qc.view, qc.nodeHash, `QC in the Node at height ${node.height}`);
        }
      }
    }
  }

  /** Every (validator, view) with votes for more than one Node. */
  doubleVotes(): DoubleVoteEvidence[] {
    const out: DoubleVoteEvidence[] = [];
    for (const [key, byHash] of this.#votes) {
      if (byHash.size < 2) continue;
      const [validator, view] = key.split("/").map(Number) as [number, number];
      const votes = [...byHash].map(([nodeHash, source]) => ({ nodeHash, source }));
      out.push({ validator: this.#names[validator]!, view, votes });
    }
    return out;
  }
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------------------------
// The command line

const FLAGS = {
  kills: { type: "string" },
  seed: { type: "string" },
  replicas: { type: "string" },
  clients: { type: "string" },
  keep: { type: "boolean" },
} as const;

/**
 * The `kill-loop` command: parses flags, runs the loop, prints the summary. Returns the exit
 * code.
 *
 * @throws {ConfigError} on bad flags
 * @example
 * ```ts
 * import { killLoopMain } from "./kill_loop.ts";
 * if (import.meta.main) Deno.exit(await killLoopMain(["--kills", "100", "--seed", "42"]));
 * ```
 */
export async function killLoopMain(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const kills = intFlag(f, "kills", 0, 1_000_000, 6);
  const seed = intFlag(f, "seed", 0, 0xffff_ffff, 1);
  const replicas = intFlag(f, "replicas", 4, 64, 4);
  const clients = intFlag(f, "clients", 1, 256, 4);
  console.log(
    `kill loop: ${kills} kills of ${replicas} replicas, ${clients} clients, seed ${seed}`,
  );
  const report = await runKillLoop({
    kills,
    seed,
    replicas,
    clients,
    keepDir: f.keep === true ? "always" : "on-failure",
    log: (line) => console.log(line),
  });
  printDetails(report);
  console.log(formatKillLoopSummary(report));
  return killLoopPassed(report) ? 0 : 1;
}

function printDetails(report: KillLoopReport): void {
  console.log(
    `checked: ${report.commonHeight} common committed heights, ${report.votesSeen} votes ` +
      `(validator, view) from ${report.voteLogLines} vote:send log lines and ` +
      `${report.certificateVotes} QC signatures, ${report.clientErrors} client requests not ` +
      `acknowledged`,
  );
  for (const l of report.lost.slice(0, 10)) {
    console.log(`  lost: ${l.key} at replica-${l.replica} (got ${JSON.stringify(l.got)})`);
  }
  for (const d of report.disagreements.slice(0, 10)) {
    console.log(`  disagreement at height ${d.height}: ${d.hashes.join(" ")}`);
  }
  for (const v of report.doubleVotes.slice(0, 10)) {
    const votes = v.votes.map((x) => `${x.nodeHash} (${x.source})`).join(" vs ");
    console.log(`  double vote: ${v.validator} in view ${v.view}: ${votes}`);
  }
  for (const line of report.fatal.slice(0, 5)) console.log(`  fatal: ${line}`);
}

if (import.meta.main) await runMain(() => killLoopMain(Deno.args), "kill-loop");
