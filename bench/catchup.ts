/**
 * Section (d), Catch-up rate: a fresh replica (one of 4 validators, durable Deno KV in a temp
 * dir, the counter Application) learns of a proposal whose parent it lacks, and its CatchUp flow
 * fetches the chain from height 1 in answers of at most `catchUpNodesMax` (256) Nodes, verifying
 * every justify QC (3 real Ed25519 signatures), executing, persisting and committing each Node.
 *
 * The peer side is free: every Node is encoded before the clock starts, and the NodeSource
 * answers at once by decoding the requested range, as the NodeTree HTTP client would from the
 * wire. So the figure is the receiving replica's own rate: decode, verify, execute, persist,
 * commit. Measured from the proposal's arrival to the commit of height `length - 3` (the last
 * one the fetched chain alone can commit).
 *
 * `--storage memory` replaces Deno KV by {@link MemoryStorage}: the replica's own cost without
 * the storage engine's (for profiling; the section's figure is always with Deno KV).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { decodeMessage, decodeNode, encodeNode } from "../src/codec.ts";
import type { Verifier } from "../src/crypto.ts";
import { ed25519Verifier } from "../src/crypto.ts";
import { Engine } from "../src/runtime/engine.ts";
import type { Clock, NodeSource } from "../src/runtime/engine.ts";
import type { ConsensusEvent } from "../src/events.ts";
import { counterApp } from "../src/testing/counter_app.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { type Storage, wrapStorage } from "../src/storage/storage.ts";
import type { Node } from "../src/types.ts";
import type { BenchChain } from "./chain.ts";
import { BENCH_CHAIN_ID, benchValidators, buildChain, leaderIndex, nextProposal } from "./chain.ts";
import type { BenchContext, SectionResult } from "./figures.ts";
import { withTarget } from "./figures.ts";

/** Nodes behind in a full run. */
export const CATCHUP_NODES_FULL = 10_000;
/** Nodes behind in a quick run. */
export const CATCHUP_NODES_QUICK = 2_000;
/** The target, Nodes/s. */
export const CATCHUP_TARGET = 10_000;

/** What one catch-up run measured. */
export interface CatchUpOutcome {
  /** Nodes behind. */
  readonly length: number;
  /** Committed height reached by the fetched chain (`length - 3`). */
  readonly committed: number;
  /** Proposal arrival to commit of `committed`, ms. */
  readonly elapsedMs: number;
  /** `committed / elapsed`. */
  readonly nodesPerSecond: number;
  /** Proposal arrival to the replica's vote on it (caught up and voting), ms, or null. */
  readonly voteMs: number | null;
  /** Fetch requests answered. */
  readonly fetches: number;
  /** Storage writes (atomic batches) and the wall ms spent inside them. */
  readonly writes: { readonly count: number; readonly ms: number };
  /** Signature verifications and the wall ms spent awaiting them (they may overlap). */
  readonly verifies: { readonly count: number; readonly ms: number };
  /** Wall ms spent decoding fetched Nodes. */
  readonly decodeMs: number;
  /** Bytes of the encoded Nodes fetched. */
  readonly fetchedBytes: number;
  /** How many inputs the replica rejected (`message:reject` events). */
  readonly rejectCount: number;
  /** The first few rejections. */
  readonly rejects: string[];
}

/** Where the replica under test persists: durable Deno KV (the default) or memory. */
export type CatchUpStorage = "kv" | "memory";

/** Counts and times every write. */
function timedStorage(inner: Storage, stats: { count: number; ms: number }): Storage {
  return wrapStorage(inner, {
    write: async (batch) => {
      const t = performance.now();
      try {
        await inner.write(batch);
      } finally {
        stats.count++;
        stats.ms += performance.now() - t;
      }
    },
  });
}

/** Counts and times every verification. */
function timedVerifier(inner: Verifier, stats: { count: number; ms: number }): Verifier {
  return {
    verify: async (key, message, signature) => {
      const t = performance.now();
      try {
        return await inner.verify(key, message, signature);
      } finally {
        stats.count++;
        stats.ms += performance.now() - t;
      }
    },
  };
}

/** A wall clock with one timer, as the replica runtime would give the Engine. */
function wallClock(): Clock & { dispose(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const clear = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return {
    now: () => performance.now(),
    setTimer: (at, callback) => {
      clear();
      timer = setTimeout(callback, Math.max(0, at - performance.now()));
    },
    clearTimer: clear,
    dispose: clear,
  };
}

/**
 * Catches a fresh durable replica up on `chain` (built with that replica absent) and measures.
 *
 * @example
 * ```ts
 * // const outcome = await runCatchUp(chain, replicaIndex, dir, { storage: "kv" });
 * ```
 */
export async function runCatchUp(
  chain: BenchChain,
  replica: number,
  dir: string,
  options: { readonly storage?: CatchUpStorage } = {},
): Promise<CatchUpOutcome> {
  const length = chain.nodes.length;
  const target = length - 3;
  const encoded = chain.nodes.map((s) => encodeNode(s.node));
  const fetchedBytes = encoded.reduce((n, b) => n + b.length, 0);
  const proposal = await nextProposal(chain);
  const leaderKey = chain.validators.signers[leaderIndex(chain.validators, length + 1)]!.publicKey;
  const writes = { count: 0, ms: 0 };
  const verifies = { count: 0, ms: 0 };
  const rejects: string[] = [];
  let decodeMs = 0;
  let fetches = 0;
  let committedAt: number | null = null;
  let votedAt: number | null = null;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => done = resolve);
  const onEvent = (e: ConsensusEvent): void => {
    if (e.type === "node:commit" && e.height >= target && committedAt === null) {
      committedAt = performance.now();
    }
    if (e.type === "vote:send" && e.view === length + 1) votedAt = performance.now();
    if (e.type === "message:reject") rejects.push(`${e.message} ${e.reason} ${e.detail}`);
    if (committedAt !== null && votedAt !== null) done();
  };
  let engine: Engine | null = null;
  const nodeSource: NodeSource = {
    fetch: (req) => {
      fetches++;
      queueMicrotask(() => {
        const t = performance.now();
        const slice = encoded.slice(req.fromHeight - 1, req.fromHeight - 1 + req.limit);
        const nodes: Node[] = slice.map((bytes) => {
          const r = decodeNode(bytes);
          if (!r.ok) throw new Error(`bench chain Node does not decode: ${r.error.message}`);
          return r.value;
        });
        decodeMs += performance.now() - t;
        engine?.receiveNodes(leaderKey, nodes);
      });
    },
  };
  const clock = wallClock();
  const inner = options.storage === "memory"
    ? new MemoryStorage()
    : await DenoKvStorage.open(`${dir}/catchup.kv`);
  const storage = timedStorage(inner, writes);
  try {
    engine = await Engine.open({
      chainId: BENCH_CHAIN_ID,
      validators: chain.validators.set,
      signer: chain.validators.signers[replica]!,
      verifier: timedVerifier(ed25519Verifier(), verifies),
      storage,
      app: counterApp(),
      network: { send: () => {}, broadcast: () => {} },
      nodeSource,
      clock,
      onEvent,
    });
    engine.start();
    await engine.idle();
    const decoded = decodeMessage(proposal.bytes);
    if (!decoded.ok) throw new Error(`proposal does not decode: ${decoded.error.message}`);
    const started = performance.now();
    engine.receive(leaderKey, decoded.value);
    const guard = setTimeout(done, 600_000);
    await finished;
    clearTimeout(guard);
    await engine.idle();
    if (committedAt === null) throw new Error(`catch-up did not commit height ${target}`);
    const elapsedMs = committedAt - started;
    return {
      length,
      committed: target,
      elapsedMs,
      nodesPerSecond: target / (elapsedMs / 1000),
      voteMs: votedAt === null ? null : votedAt - started,
      fetches,
      writes,
      verifies,
      decodeMs,
      fetchedBytes,
      rejectCount: rejects.length,
      rejects: rejects.slice(0, 10),
    };
  } finally {
    await engine?.stop();
    clock.dispose();
    await storage.close();
  }
}

/**
 * Section (d).
 *
 * @example
 * ```ts
 * import { runCatchUpSection } from "./catchup.ts";
 * const r = await runCatchUpSection({ quick: true, long: false, log: console.error });
 * ```
 */
export async function runCatchUpSection(
  ctx: BenchContext,
  nodes?: number,
  options: { readonly storage?: CatchUpStorage } = {},
): Promise<SectionResult> {
  const length = nodes ?? (ctx.quick ? CATCHUP_NODES_QUICK : CATCHUP_NODES_FULL);
  const validators = benchValidators(4);
  // The replica under test must not lead the view of the proposal that starts the catch-up.
  const replica = (leaderIndex(validators, length + 1) + 1) % 4;
  ctx.log(`d: building a chain of ${length} Nodes with real QCs ...`);
  const t = performance.now();
  const chain = await buildChain(validators, { length, absent: replica });
  ctx.log(`d: built in ${(performance.now() - t).toFixed(0)} ms; catching up ...`);
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-catchup-" });
  let r: CatchUpOutcome;
  try {
    r = await runCatchUp(chain, replica, dir, options);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  ctx.log(`d: ${r.nodesPerSecond.toFixed(0)} Nodes/s`);
  const per = (ms: number): number => (1000 * ms) / r.committed;
  const rejectNote = r.rejectCount === 0
    ? ""
    : `; ${r.rejectCount} fetched Nodes rejected, e.g. ${r.rejects.slice(0, 2).join(", ")}`;
  return {
    section: "d",
    title: "Catch-up",
    summary: { catchUpNodesPerSecond: r.nodesPerSecond },
    figures: [
      withTarget(
        {
          section: "d",
          name: `rate, ${length} Nodes behind`,
          value: r.nodesPerSecond,
          unit: "Nodes/s",
          note: `verified, executed, persisted (${
            options.storage === "memory" ? "in memory" : "durable Deno KV"
          }) and committed${rejectNote}`,
        },
        ">=",
        CATCHUP_TARGET,
      ),
      { section: "d", name: "time to vote after catching up", value: r.voteMs, unit: "ms" },
      {
        section: "d",
        name: "storage writes per Node",
        value: r.writes.count / r.committed,
        unit: "writes",
      },
      {
        section: "d",
        name: "wall time in storage writes",
        value: per(r.writes.ms),
        unit: "µs/Node",
      },
      {
        section: "d",
        name: "wall time awaiting verifications",
        value: per(r.verifies.ms) / (r.verifies.count / r.committed),
        unit: "µs/verify",
        note: `${(r.verifies.count / r.committed).toFixed(2)} verifications per Node; ` +
          "call to result: Deno runs Web Crypto's Ed25519 on the main thread, so the calls " +
          "of an answer queue behind each other",
      },
    ],
    notes: [
      "Peer side free: Nodes pre-encoded, answers decoded at once (no network, no server).",
      "Commands of 32 bytes; counter Application; one of 4 validators of equal power.",
    ],
    details: r,
  };
}

/** `deno run bench/catchup.ts [--nodes 2000] [--storage kv|memory]`: the section alone. */
async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      nodes: { type: "string", default: String(CATCHUP_NODES_QUICK) },
      storage: { type: "string", default: "kv" },
    },
  });
  const storage = values.storage;
  if (storage !== "kv" && storage !== "memory") {
    console.error(`--storage must be kv or memory, got ${storage}`);
    Deno.exit(2);
  }
  const ctx = { quick: false, long: false, log: (line: string) => console.error(line) };
  const r = await runCatchUpSection(ctx, Number(values.nodes), { storage });
  console.log(JSON.stringify(r, null, 2));
}

if (import.meta.main) await main();
