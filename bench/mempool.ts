/**
 * CPU cost per command of the mempool's hot paths, in one process with no I/O: a command's id,
 * admitting client commands (`submit`: the machine's check, the SHA-256 id, the pool), and
 * validating a Node (`validateNode`) whose batches arrived before (decoded and hashed on arrival)
 * and whose batches are only in the store (decoded and hashed while validating). The key-value machine, 32-byte `set` commands. Each figure is the
 * median of `--runs` rounds over `--commands` commands. Not a section of the bench: it explains
 * section (a)'s profile (docs/PERFORMANCE.md, finding 14).
 *
 * Usage: `deno run bench/mempool.ts [--commands 2000] [--runs 15]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { genesisQC } from "../src/codec.ts";
import {
  batchDigest,
  commandId,
  encodeBatch,
  encodeDigests,
  MemoryBatchStore,
  Mempool,
} from "../src/runtime/mempool.ts";
import { toHex } from "../src/types.ts";
import type { Node } from "../src/types.ts";
import { encodeKvCommand, kvMachine } from "../examples/kv_store/app.ts";

const EXPIRES = 100;
const NO_STATE = { get: () => Promise.resolve(null) };

/** `count` distinct 32-byte `set` commands. */
function commands(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const value = new Uint8Array(21).fill(i & 0xff);
    const out = encodeKvCommand({
      op: "set",
      key: new Uint8Array([i & 0xff, i >> 8, 0, 1]),
      value,
    });
    if (out.length !== 32) throw new Error(`a command of ${out.length} bytes, not 32`);
    return out;
  });
}

/** Microseconds per command of `submit`, in batches of 100, into an empty pool. */
function submitMicros(cmds: readonly Uint8Array[]): number {
  const pool = new Mempool(kvMachine, { idleProposeDelayMs: 0 });
  const started = performance.now();
  for (let i = 0; i < cmds.length; i += 100) {
    pool.submit(cmds.slice(i, i + 100), { expires: EXPIRES });
  }
  const us = ((performance.now() - started) * 1000) / cmds.length;
  pool.close();
  return us;
}

/** Microseconds per command of its id alone (SHA-256 of expiry and bytes, as hex). */
function idMicros(cmds: readonly Uint8Array[]): number {
  const started = performance.now();
  let sink = 0;
  for (const c of cmds) sink += toHex(commandId(c, EXPIRES)).length;
  if (sink !== 64 * cmds.length) throw new Error("an id is not 32 bytes");
  return ((performance.now() - started) * 1000) / cmds.length;
}

/**
 * Microseconds per command of validating one Node naming batches of all `cmds`: batches received
 * before (decoded and hashed on arrival, outside the timing: `pooled`) or only in the store (read,
 * decoded and hashed while validating).
 */
async function validateMicros(cmds: readonly Uint8Array[], pooled: boolean): Promise<number> {
  const store = new MemoryBatchStore();
  const pool = new Mempool(kvMachine, { idleProposeDelayMs: 0, batchStore: store });
  const digests: Uint8Array[] = [];
  for (let i = 0; i < cmds.length; i += 1000) {
    const bytes = encodeBatch(
      cmds.slice(i, i + 1000).map((command) => ({ command, expires: EXPIRES })),
    );
    digests.push(batchDigest(bytes));
    if (pooled) pool.addBatch(bytes);
    else await store.put(batchDigest(bytes), bytes);
  }
  const node: Node = {
    view: 1,
    height: 1,
    parent: new Uint8Array(32),
    justify: genesisQC("bench"),
    command: encodeDigests(digests),
    configHash: new Uint8Array(32),
    proposer: new Uint8Array(32),
    stateRoot: new Uint8Array(0),
  };
  const started = performance.now();
  const r = await pool.application.validateNode({
    node,
    hash: new Uint8Array(32),
    state: NO_STATE,
  });
  const us = ((performance.now() - started) * 1000) / cmds.length;
  pool.close();
  if (!r.ok) throw new Error(`the batch was refused: ${r.reason}`);
  return us;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      commands: { type: "string", default: "2000" },
      runs: { type: "string", default: "15" },
    },
  });
  const cmds = commands(Number(values.commands));
  const runs = Number(values.runs);
  const rounds = async (f: () => number | Promise<number>): Promise<number> => {
    const xs: number[] = [];
    for (let i = 0; i < runs; i++) xs.push(await f());
    return median(xs);
  };
  const id = await rounds(() => idMicros(cmds));
  const submit = await rounds(() => submitMicros(cmds));
  const pooled = await rounds(() => validateMicros(cmds, true));
  const unpooled = await rounds(() => validateMicros(cmds, false));
  console.log(`id (SHA-256 of expiry and bytes, hex): ${id.toFixed(2)} µs per command`);
  console.log(`submit (check, id, pool):            ${submit.toFixed(2)} µs per command`);
  console.log(`validate, batches received before:   ${pooled.toFixed(2)} µs per command`);
  console.log(`validate, batches read from store:   ${unpooled.toFixed(2)} µs per command`);
}

if (import.meta.main) await main();
