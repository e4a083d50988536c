/**
 * Section (j), join time: a replica whose data directory is wiped joins a cluster of replica
 * processes with `nodes` committed Nodes, once by snapshot state sync (`--state-sync`) and once
 * by replay from genesis; each figure is the time from its process start to its committed height
 * reaching the others' height at that start.
 *
 * The chain is built without running consensus (building it is not measured): `nodes` Nodes of
 * the key-value replicas' own format (view k, height k, the leader of k as proposer, each justified
 * by the QC of its parent signed with the real keys of validators 0, 1 and 2); the first
 * `ceil(keys / 400)` Nodes each name one batch of 400 `set` commands (the mempool's batch and
 * command formats, executed by the mempool itself to get their updates), the rest name none. Each
 * of replicas 0-2 gets it in its Deno KV store (Nodes, updates, safety state after voting for the
 * last one) and its batches in its batch store; then they run as processes and extend the chain.
 *
 * Alone: `deno run -A bench/join.ts [--nodes N] [--keys K] [--replay-cap-s S] [--sync-runs R]
 * [--template DIR] [--cpu-prof DIR]`: `--replay-cap-s 0` skips the replay, `--sync-runs` repeats the
 * join by state sync, `--template` keeps the built chain in DIR for the next run (and uses it when
 * there), `--cpu-prof` runs replicas 0 (a server) and 3 (the joiner) under the V8 profiler.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { StateView } from "../src/app.ts";
import { genesisNode, genesisQC, nodeHash, signedBytes } from "../src/codec.ts";
import { readSecretKey, validatorSetOf } from "../src/cli/config.ts";
import { ed25519Signer, type Signer } from "../src/crypto.ts";
import { encodeBatch, encodeDigests, MemoryBatchStore, Mempool } from "../src/runtime/mempool.ts";
import { DenoKvBatchStore } from "../src/storage/batches.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import type { StoredNode } from "../src/storage/storage.ts";
import type { Node, QuorumCertificate } from "../src/types.ts";
import { bytesCompare, SignatureDomain, toHex } from "../src/types.ts";
import { encodeKvCommand, kvMachine } from "../examples/kv_store/app.ts";
import { ProcessCluster, sleep, tryStatus } from "../examples/kv_store/cluster.ts";
import type { BenchContext, SectionResult } from "./figures.ts";
import { withTarget } from "./figures.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

/** Committed Nodes in a full run (the issue's figure). */
export const JOIN_NODES_FULL = 100_000;
/** ... in a quick run. */
export const JOIN_NODES_QUICK = 5_000;
/** The issue's target for a join by state sync, ms. */
export const JOIN_TARGET_MS = 10_000;
const COMMANDS_PER_BATCH = 400;
const COMMITS_PER_WRITE = 256;
const CHECKPOINT_ARGS = ["--state-checkpoint-interval", "64"];

/** What one join run measured. */
export interface JoinOutcome {
  /** Committed Nodes before the joins. */
  readonly nodes: number;
  /** Keys in the state. */
  readonly keys: number;
  /** Building and writing the chain, ms (not a figure). */
  readonly setupMs: number;
  /** Join by state sync: start to caught up, ms, and the install as logged. */
  readonly syncMs: number | null;
  readonly syncInstall: Record<string, unknown> | null;
  /** The last join by state sync: when each step of the joiner's log came, ms after its start. */
  readonly syncSteps: Record<string, number>;
  /** Every join by state sync of the run, ms (`syncMs` is the last). */
  readonly syncRunsMs: readonly (number | null)[];
  /** Join by replay: start to caught up, ms; null when not caught up within the cap. */
  readonly replayMs: number | null;
  /** Replay: the height reached when the cap ended it (or the target when it finished). */
  readonly replayHeight: number;
  /** The height each join had to reach. */
  readonly targets: readonly number[];
}

/** Options of {@link runJoin}. */
export interface JoinOptions {
  /** Committed Nodes before the joins. */
  readonly nodes: number;
  /** Keys in the state. */
  readonly keys: number;
  /** Cap of the join by replay, ms (0: not run). */
  readonly replayCapMs: number;
  /** Joins by state sync, one after the other (the replica wiped between them). Default 1. */
  readonly syncRuns?: number;
  /**
   * A directory holding the built chain: used when it has one (copied, so it stays as it is),
   * written otherwise. Building 100,000 Nodes takes minutes; a template makes repeated runs cheap.
   */
  readonly templateDir?: string;
  /** Run replicas 0 and 3 under the V8 profiler (`--cpu-prof`), profiles into this directory. */
  readonly cpuProfDir?: string;
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/** Runs both joins once (the join by state sync `syncRuns` times). */
export async function runJoin(options: JoinOptions): Promise<JoinOutcome> {
  const t0 = performance.now();
  const cluster = await buildCluster(options);
  try {
    const setupMs = performance.now() - t0;
    for (const i of [0, 1, 2]) cluster.start(i, CHECKPOINT_ARGS);
    await cluster.waitReady(120_000, [0, 1, 2]);
    await waitFor("an anchored snapshot", 120_000, async () => {
      const r = await fetch(`${cluster.urls[0]}/state/snapshot`).catch(() => null);
      await r?.body?.cancel();
      return r?.status === 200;
    });
    options.log(`j: chain of ${options.nodes} Nodes ready in ${Math.round(setupMs)} ms; joining`);
    const syncs: {
      ms: number | null;
      target: number;
      steps: Record<string, number>;
      install: Record<string, unknown> | null;
    }[] = [];
    for (let run = 0; run < (options.syncRuns ?? 1); run++) {
      if (run > 0) {
        await cluster.kill(3, "SIGTERM");
        await cluster.wipe(3);
        await Deno.remove(cluster.logPath(3)).catch(() => {});
      }
      const sync = await join(cluster, [...CHECKPOINT_ARGS, "--state-sync"], 120_000);
      const log = await Deno.readTextFile(cluster.logPath(3));
      const line = log.split("\n").find((l) => l.includes('"sync:installed"'));
      for (const l of log.split("\n")) {
        if (/"event":"(sync:|replica:start)/.test(l)) {
          options.log(`j: replica 3: ${l.slice(0, 400)}`);
        }
      }
      const steps = phases(log, sync.startedAt);
      options.log(`j: steps (ms after start): ${JSON.stringify(steps)}`);
      options.log(`j: joined by state sync in ${sync.ms} ms (load ${await loadAverage()})`);
      syncs.push({ ...sync, steps, install: line === undefined ? null : JSON.parse(line) });
    }
    await cluster.kill(3, "SIGTERM");
    await cluster.wipe(3);
    const replay = options.replayCapMs > 0
      ? await join(cluster, CHECKPOINT_ARGS, options.replayCapMs)
      : { ms: null, target: 0, height: 0 };
    options.log(`j: by replay ${replay.ms ?? `> ${options.replayCapMs}`} ms`);
    const last = syncs.at(-1)!;
    return {
      nodes: options.nodes,
      keys: options.keys,
      setupMs,
      syncMs: last.ms,
      syncRunsMs: syncs.map((s) => s.ms),
      syncInstall: last.install,
      syncSteps: last.steps,
      replayMs: replay.ms,
      replayHeight: replay.height,
      targets: [last.target, replay.target],
    };
  } finally {
    await cluster.close();
  }
}

/** The 1-minute load average (Linux), for the log. */
async function loadAverage(): Promise<string> {
  const text = await Deno.readTextFile("/proc/loadavg").catch(() => "? ");
  return text.split(" ")[0]!;
}

/** A cluster with the chain in replicas 0-2's stores: from the template, or built. */
async function buildCluster(options: JoinOptions): Promise<ProcessCluster> {
  const template = options.templateDir;
  const profiled = options.cpuProfDir;
  const command = profiled === undefined
    ? undefined
    : (i: number): readonly string[] =>
      i === 0 || i === 3
        ? [
          "sh",
          "-c",
          `d="$1"; shift 2; exec "$d" run --cpu-prof --cpu-prof-dir=${profiled} "$@"`,
          "sh",
        ]
        : [];
  const o = { replicas: 4, prefix: "bench-join-", command };
  if (template !== undefined && await exists(`${template}/cluster.json`)) {
    const dir = await Deno.makeTempDir({ prefix: "bench-join-" });
    await copyDir(template, dir);
    return await ProcessCluster.fromDir(o, dir);
  }
  const cluster = await ProcessCluster.create(o);
  try {
    await writeChain(cluster, options.nodes, options.keys, options.log);
    if (template !== undefined) await copyDir(cluster.dir, template);
    return cluster;
  } catch (e) {
    await cluster.close();
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function copyDir(from: string, to: string): Promise<void> {
  const r = await new Deno.Command("cp", { args: ["-a", `${from}/.`, to] }).output();
  if (!r.success) throw new Error(`cp ${from} ${to}: ${new TextDecoder().decode(r.stderr)}`);
}

/** Starts replica 3 and waits until its committed height reaches the others' at its start. */
async function join(
  cluster: ProcessCluster,
  args: readonly string[],
  capMs: number,
): Promise<{ ms: number | null; target: number; height: number; startedAt: number }> {
  const target = Math.max(...await heights(cluster, [0, 1, 2]));
  const t0 = performance.now();
  const startedAt = Date.now();
  cluster.start(3, args);
  let height = -1;
  while (performance.now() - t0 < capMs) {
    height = (await heights(cluster, [3]))[0]!;
    if (height >= target) {
      return { ms: Math.round(performance.now() - t0), target, height, startedAt };
    }
    await sleep(50);
  }
  return { ms: null, target, height, startedAt };
}

/** When each step of the joiner's log came, ms after its process was started. */
function phases(log: string, startedAt: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of log.split("\n")) {
    const m = /"time":"([^"]+)","level":"\w+","event":"((?:sync|replica):[\w-]+)"/.exec(line);
    if (m !== null) out[m[2]!] = Date.parse(m[1]!) - startedAt;
  }
  return out;
}

async function heights(cluster: ProcessCluster, which: readonly number[]): Promise<number[]> {
  const s = await Promise.all(which.map((i) => tryStatus(cluster.urls[i]!, 1_000)));
  return s.map((x) => x?.committed.height ?? -1);
}

async function waitFor(what: string, ms: number, ok: () => Promise<boolean>): Promise<void> {
  const until = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** Builds the chain and writes it into replicas 0-2's stores (see the module docs). */
async function writeChain(
  cluster: ProcessCluster,
  length: number,
  keys: number,
  log: (line: string) => void,
): Promise<void> {
  const config = cluster.config;
  const chainId = config.chainId;
  const signers: Signer[] = [];
  for (const v of config.validators) {
    const { secretKey } = await readSecretKey(`${cluster.dir}/${v.name}.key`, config);
    signers.push(ed25519Signer(secretKey));
  }
  const validators = validatorSetOf(config);
  const pool = new Mempool(kvMachine, { batchStore: new MemoryBatchStore() });
  const app = pool.application;
  const state = new Map<string, Uint8Array | null>();
  const view: StateView = { get: (k) => Promise.resolve(state.get(toHex(k)) ?? null) };
  const stores = await Promise.all([0, 1, 2].map(async (i) => {
    await Deno.mkdir(cluster.dataDir(i), { recursive: true });
    return {
      nodes: await DenoKvStorage.open(`${cluster.dataDir(i)}/replica.kv`),
      batches: await DenoKvBatchStore.open(`${cluster.dataDir(i)}/batches.kv`),
    };
  }));
  let parent = nodeHash(genesisNode(chainId));
  let justify: QuorumCertificate = genesisQC(chainId);
  let pending: StoredNode[] = [];
  const batches = Math.ceil(keys / COMMANDS_PER_BATCH);
  for (let k = 1; k <= length; k++) {
    const digests: Uint8Array[] = [];
    if (k <= batches) {
      const entries = Array.from({ length: COMMANDS_PER_BATCH }, (_, i) => {
        const n = (k - 1) * COMMANDS_PER_BATCH + i;
        const key = new TextEncoder().encode(`key-${n}`);
        const value = new TextEncoder().encode(`value-${n}`);
        return { command: encodeKvCommand({ op: "set", key, value }), expires: k + 100 };
      }).slice(0, Math.max(0, keys - (k - 1) * COMMANDS_PER_BATCH));
      const bytes = encodeBatch(entries);
      const digest = pool.addBatch(bytes);
      const digestBytes = Uint8Array.from(digest.match(/../g)!, (h) => parseInt(h, 16));
      for (const s of stores) await s.batches.put(digestBytes, bytes);
      digests.push(digestBytes);
    }
    const node: Node = {
      view: k,
      height: k,
      parent,
      justify,
      command: encodeDigests(digests),
      configHash: validatorConfigHash(stableConfig(validators)),
      proposer: validators.leader(k).publicKey,
      stateRoot: new Uint8Array(0),
    };
    const hash = nodeHash(node);
    const r = await app.validateNode({ node, hash, state: view });
    if (!r.ok) throw new Error(`the pool refused generated Node ${k}: ${r.reason}`);
    for (const [key, value] of r.updates) state.set(toHex(key), value);
    await app.onCommit?.({ node, hash, updates: r.updates });
    pending.push({ node, hash, updates: r.updates });
    justify = await quorumCertificate(chainId, signers.slice(0, 3), k, hash);
    parent = hash;
    if (pending.length >= COMMITS_PER_WRITE || k === length) {
      await Promise.all(stores.map((s) => s.nodes.write({ commits: pending })));
      pending = [];
    }
    if (k % 20_000 === 0) log(`j: ${k} Nodes built and written`);
  }
  // Every replica voted for the last Node; its QC is the highest (and the lock).
  const safety = {
    currentView: length,
    lastVotedView: length,
    lockedQC: justify,
    highQC: justify,
    highTC: null,
  };
  for (const s of stores) {
    await s.nodes.write({ safety });
    await s.nodes.close();
    s.batches.close();
  }
  pool.close();
}

async function quorumCertificate(
  chainId: string,
  signers: readonly Signer[],
  view: number,
  hash: Uint8Array,
): Promise<QuorumCertificate> {
  const bytes = signedBytes(SignatureDomain.vote, chainId, view, hash);
  const signatures = await Promise.all(
    signers.map(async (s) => ({ signer: s.publicKey, signature: await s.sign(bytes) })),
  );
  signatures.sort((a, b) => bytesCompare(a.signer, b.signer));
  return { chainId, view, nodeHash: hash, signatures };
}

/**
 * The section: both joins at {@link JOIN_NODES_FULL} Nodes (quick: {@link JOIN_NODES_QUICK}), in
 * a child process (the bench task has no network permission).
 */
export async function runJoinSection(ctx: BenchContext): Promise<SectionResult> {
  const nodes = ctx.quick ? JOIN_NODES_QUICK : JOIN_NODES_FULL;
  const keys = ctx.quick ? 20_000 : 100_000;
  const capS = ctx.quick ? 60 : 600;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./join.ts", import.meta.url).pathname,
      "--nodes",
      String(nodes),
      "--keys",
      String(keys),
      "--replay-cap-s",
      String(capS),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const [out, err] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.status,
  ]);
  for (const line of err.split("\n")) if (line.startsWith("j: ")) ctx.log(line.slice(0, 200));
  const o = JSON.parse(out.trim().split("\n").at(-1)!) as JoinOutcome;
  const name = `${nodes} Nodes, ${keys} keys`;
  return {
    section: "j",
    title: "Join time of a wiped replica",
    figures: [
      withTarget(
        { section: "j", name: `${name}: join by state sync`, value: o.syncMs, unit: "ms" },
        "<",
        JOIN_TARGET_MS,
      ),
      { section: "j", name: `${name}: join by replay`, value: o.replayMs, unit: "ms" },
    ],
    notes: [
      `4 replica processes (durable Deno KV); replica 3 wiped; the others at height ${
        o.targets[0]
      } when it started. Replay ${
        o.replayMs === null
          ? `did not finish within ${capS} s (height ${o.replayHeight} of ${o.targets[1]})`
          : "finished"
      }.`,
      `state sync install: ${JSON.stringify(o.syncInstall)}`,
    ],
    details: o,
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      nodes: { type: "string" },
      keys: { type: "string" },
      "replay-cap-s": { type: "string" },
      "sync-runs": { type: "string" },
      template: { type: "string" },
      "cpu-prof": { type: "string" },
    },
  });
  const o = await runJoin({
    nodes: Number(values.nodes ?? JOIN_NODES_QUICK),
    keys: Number(values.keys ?? 20_000),
    replayCapMs: 1000 * Number(values["replay-cap-s"] ?? 300),
    syncRuns: Number(values["sync-runs"] ?? 1),
    templateDir: values.template,
    cpuProfDir: values["cpu-prof"],
    log: (line) => console.error(line),
  });
  console.log(JSON.stringify(o));
}
