/**
 * Section (e), Restart time: a durable Deno KV store holds `committed` committed Nodes (written
 * through {@link DenoKvStorage} in batches, no consensus), three uncommitted Nodes above them and
 * the safety state a replica has after voting for the last one. A new process
 * (bench/restart_child.ts) opens it, restores its Engine, starts, is handed the next view's
 * PROPOSE, and signs its first vote. Measured from the parent's spawn call to that vote, the
 * median of several runs, each on a fresh copy of the store (a vote changes it).
 *
 * Restart reads the safety state, the committed head and the uncommitted Nodes; it verifies
 * none of their QCs. So QCs below the last few views carry placeholder signatures of the right
 * size; the ones a restarted replica may check (from view `committed - 2` on) are real.
 *
 * @module
 */
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import type { SafetyState } from "../src/storage/storage.ts";
import type { BenchChain } from "./chain.ts";
import { benchValidators, buildChain, leaderIndex, nextProposal } from "./chain.ts";
import type { BenchContext, Figure, SectionResult } from "./figures.ts";
import { quantile, withTarget } from "./figures.ts";
import type { RestartTimes } from "./restart_child.ts";

/** Committed Nodes on disk in a full run. */
export const RESTART_NODES_FULL = 100_000;
/** Committed Nodes on disk in a quick run. */
export const RESTART_NODES_QUICK = 10_000;
/** The target, ms. */
export const RESTART_TARGET_MS = 2_000;
/** Commits per {@link DenoKvStorage.write} while building the store. */
const COMMITS_PER_WRITE = 250;
const STORE_NAME = "restart.kv";

/** One measured restart. */
export interface RestartRun extends RestartTimes {
  /** `Date.now()` just before the parent spawned the child. */
  readonly spawnedAt: number;
}

/**
 * Writes `chain` as a replica's store: Nodes 1..length-3 committed, the last three stored
 * uncommitted, and the safety state after voting for the last one.
 *
 * @example
 * ```ts
 * // await writeStore(chain, `${dir}/restart.kv`);
 * ```
 */
export async function writeStore(
  chain: BenchChain,
  path: string,
  log: (line: string) => void,
): Promise<{ ms: number; bytes: number }> {
  const started = performance.now();
  const committed = chain.nodes.length - 3;
  const storage = await DenoKvStorage.open(path);
  try {
    for (let from = 0; from < committed; from += COMMITS_PER_WRITE) {
      const commits = chain.nodes.slice(from, Math.min(committed, from + COMMITS_PER_WRITE));
      await storage.write({ commits });
      if ((from + COMMITS_PER_WRITE) % 20_000 === 0) log(`e: ${from + COMMITS_PER_WRITE} written`);
    }
    const last = chain.nodes[chain.nodes.length - 1]!.node;
    // After inserting Node `h` (justify QC(h - 1)): lock QC(h - 2), high QC(h - 1), voted in h.
    const safety: SafetyState = {
      currentView: last.view,
      lastVotedView: last.view,
      lockedQC: chain.qcs[chain.qcs.length - 3]!,
      highQC: chain.qcs[chain.qcs.length - 2]!,
      highTC: null,
    };
    await storage.write({ nodes: chain.nodes.slice(committed), safety });
  } finally {
    await storage.close();
  }
  return { ms: performance.now() - started, bytes: await storeBytes(path) };
}

async function storeBytes(path: string): Promise<number> {
  const dir = path.slice(0, path.lastIndexOf("/"));
  const name = path.slice(path.lastIndexOf("/") + 1);
  let bytes = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.startsWith(name)) bytes += (await Deno.stat(`${dir}/${e.name}`)).size;
  }
  return bytes;
}

/** Copies the store's files (SQLite and its WAL, if any) from `from` to `to`. */
async function copyStore(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isFile && e.name.startsWith(STORE_NAME)) {
      await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
    }
  }
}

function childCommand(args: string[]): Deno.Command {
  const config = new URL("../deno.json", import.meta.url).pathname;
  const child = new URL("./restart_child.ts", import.meta.url).pathname;
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", config, "--allow-read", "--allow-write", child, ...args],
    stdout: "piped",
    stderr: "piped",
  });
}

/** Spawns one restart and returns its instants. */
async function restartOnce(
  dir: string,
  proposal: string,
  options: { validator: number; noWait: boolean },
): Promise<RestartRun> {
  const command = childCommand([
    "--store",
    `${dir}/${STORE_NAME}`,
    "--proposal",
    proposal,
    "--validator",
    String(options.validator),
    ...(options.noWait ? ["--no-wait"] : []),
  ]);
  const spawnedAt = Date.now();
  const out = await command.output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`restart child failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const times = JSON.parse(stdout.split("\n").pop()!) as RestartTimes;
  if (times.votedView < 0) throw new Error("restart child never voted");
  return { ...times, spawnedAt };
}

/**
 * Section (e).
 *
 * @example
 * ```ts
 * import { runRestart } from "./restart.ts";
 * const r = await runRestart({ quick: true, long: false, log: console.error });
 * ```
 */
export async function runRestart(ctx: BenchContext): Promise<SectionResult> {
  const committed = ctx.quick ? RESTART_NODES_QUICK : RESTART_NODES_FULL;
  const runs = ctx.quick ? 2 : 5;
  const length = committed + 3;
  const validators = benchValidators(4);
  const replica = (leaderIndex(validators, length + 1) + 1) % 4;
  ctx.log(`e: building ${length} Nodes ...`);
  const chain = await buildChain(validators, {
    length,
    absent: replica,
    realSignaturesFrom: committed - 2,
    onProgress: (k) => k % 50_000 === 0 && ctx.log(`e: ${k} built`),
  });
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-restart-" });
  try {
    ctx.log(`e: writing the store (${committed} commits) ...`);
    await Deno.mkdir(`${dir}/pristine`);
    const store = await writeStore(chain, `${dir}/pristine/${STORE_NAME}`, ctx.log);
    await Deno.writeFile(`${dir}/proposal.bin`, (await nextProposal(chain)).bytes);
    ctx.log(`e: store written in ${store.ms.toFixed(0)} ms; restarting ${runs} times ...`);
    await childCommand(["--warm"]).output();
    const results: RestartRun[] = [];
    const racing: RestartRun[] = [];
    for (let i = 0; i < 2 * runs; i++) {
      const runDir = `${dir}/run-${i}`;
      const noWait = i % 2 === 1;
      await copyStore(`${dir}/pristine`, runDir);
      const run = await restartOnce(runDir, `${dir}/proposal.bin`, { validator: replica, noWait });
      (noWait ? racing : results).push(run);
      await Deno.remove(runDir, { recursive: true });
    }
    return restartResult(committed, store, results, racing);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Start handled → vote took long enough to be the view timer's tick, not work. */
function stalled(r: RestartRun): boolean {
  return r.voteAt - r.engineOpenAt >= 500;
}

function restartResult(
  committed: number,
  store: { ms: number; bytes: number },
  runs: RestartRun[],
  racing: RestartRun[],
): SectionResult {
  const median = (f: (r: RestartRun) => number): number => quantile(runs.map(f), 0.5)!;
  const fig = (name: string, value: number, unit: string, note?: string): Figure => ({
    section: "e",
    name,
    value,
    unit,
    ...(note === undefined ? {} : { note }),
  });
  const bad = runs.filter((r) => r.restoredHeight !== committed);
  return {
    section: "e",
    title: "Restart",
    figures: [
      withTarget(
        fig(
          `spawn → first vote, ${committed} Nodes on disk`,
          median((r) => r.voteAt - r.spawnedAt),
          "ms",
          `median of ${runs.length}` +
            (bad.length > 0 ? `; restored heights ${bad.map((r) => r.restoredHeight)}` : ""),
        ),
        "<",
        RESTART_TARGET_MS,
      ),
      fig(
        "  runtime start → modules loaded",
        median((r) => r.modulesLoadedAt - r.timeOrigin),
        "ms",
      ),
      fig("  open Deno KV store", median((r) => r.storeOpenAt - r.modulesLoadedAt), "ms"),
      fig("  Engine.open (restore)", median((r) => r.engineOpenAt - r.storeOpenAt), "ms"),
      fig(
        "  start → vote (verify, execute, persist, sign)",
        median((r) => r.voteAt - r.engineOpenAt),
        "ms",
      ),
      fig(
        "spawn → first vote, proposal during start",
        quantile(racing.map((r) => r.voteAt - r.spawnedAt), 1)!,
        "ms",
        `max of ${racing.length}; ${racing.filter(stalled).length} stalled ≥ 500 ms in the ` +
          "Engine's lost wake-up (see docs/PERFORMANCE.md)",
      ),
      fig("store size", store.bytes / 1e6, "MB"),
      fig(
        "store write rate (batched commits)",
        committed / (store.ms / 1000),
        "Nodes/s",
        `${COMMITS_PER_WRITE} commits per write`,
      ),
    ],
    notes: [
      "The child's module cache is warm (one untimed run first); the store's pages are likely " +
      "in the OS page cache (it was just copied).",
      "spawn → runtime start (Deno binary start-up) is the rest of the total.",
    ],
    details: { committed, store, runs, racing },
  };
}
