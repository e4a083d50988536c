/**
 * Section (k): Merkle libraries from npm against the hand-written state tree (src/state/tree.ts).
 *
 * Alone: `deno run -A bench/merkle_libraries.ts [--keys N] [--nodes R] [--only tree,mpt,smt,oz]
 * [--json]`. Each candidate runs in a child process of its own (with `--expose-gc`, so the memory
 * figure is its own), on the same seeded keys and values:
 *
 * - `tree`: src/state/tree.ts through its public API (4,096 buckets, SHA-256);
 * - `mpt`: `@ethereumjs/mpt` (Ethereum's Merkle Patricia trie, in memory), its node hash set to
 *   the same SHA-256 (the default is keccak-256), keys not hashed;
 * - `smt`: `@iden3/js-merkletree` (a sparse Merkle tree with Poseidon over the BN254 field, 64
 *   levels); a key and a value enter as `sha256(bytes) mod p`, the field elements it takes;
 * - `oz`: `@openzeppelin/merkle-tree`'s `SimpleMerkleTree` (a static tree over sorted leaves,
 *   keccak-256), leaf `sha256(u16 len(key) ‖ key ‖ sha256(value))`: it has no update, so a Node
 *   rebuilds it from every leaf, and it has no proof of absence.
 *
 * Measured for each: building from `--keys` entries (default 100,000; keys `"k/"` + 16 bytes,
 * values 32-100 bytes) to the root; the heap and external memory it then holds beyond the input
 * (after a GC; rough); `--nodes` Nodes (default 5) of 512 updates (256 overwrites, 256 new keys)
 * each applied and the new root taken, median and max (wall time, and CPU time of the process,
 * which other loads move less); proof size (CBOR, or the library's own bytes) and prove and verify
 * time for 100 present and 100 absent keys; and whether two instances given the first 1,000
 * entries in opposite orders have the same root.
 *
 * @module
 */
import { encode as cborEncode } from "cborg";
import process from "node:process";
import { parseArgs } from "node:util";
import { sha256Bytes } from "../src/crypto.ts";
import { StateTree, type StateVersion, verifyStateProof } from "../src/state/tree.ts";
import { bytesEqual, toHex } from "../src/types.ts";
import type { BenchContext, Figure, SectionResult } from "./figures.ts";

/** The candidates, in display order. */
export const MERKLE_CANDIDATES = ["tree", "mpt", "smt", "oz"] as const;
/** One of {@link MERKLE_CANDIDATES}. */
export type MerkleCandidateId = (typeof MERKLE_CANDIDATES)[number];

const UPDATES_PER_NODE = 512;
const PROOF_SAMPLES = 100;
const ORDER_CHECK_ENTRIES = 1_000;
/** Keys in the section's full run, and in a quick one. */
const SECTION_KEYS_FULL = 100_000;
const SECTION_KEYS_QUICK = 10_000;

type Entry = readonly [Uint8Array, Uint8Array];

/** A proof made by a candidate: its size, and a check of it against the root it was made for. */
interface MadeProof {
  readonly bytes: number;
  readonly verify: () => Promise<boolean>;
}

/** What the bench does with a structure; one instance per candidate. */
interface Candidate {
  /** Library and version, or the project file. */
  readonly name: string;
  /** Inserts entries (absent keys or overwrites) and returns the new root. */
  apply(entries: readonly Entry[]): Promise<Uint8Array>;
  /** A proof that `key` has `value` (null: absent), or null when the structure cannot make one. */
  prove(key: Uint8Array, value: Uint8Array | null): Promise<MadeProof | null>;
}

/** What one candidate measured (one JSON line of a child). */
export interface MerkleOutcome {
  /** Candidate id. */
  readonly id: MerkleCandidateId;
  /** Library and version. */
  readonly name: string;
  /** Keys built from. */
  readonly keys: number;
  /** Building from scratch to the root, ms. */
  readonly buildMs: number;
  /** ... its CPU time (this process, every thread), ms: less moved by other loads than wall time. */
  readonly buildCpuMs: number;
  /** Heap plus external memory held after the build beyond the input, bytes (rough). */
  readonly memoryBytes: number | null;
  /** Per Node of 512 updates, apply and root, ms: median and max over `nodes`. */
  readonly nodeMsMedian: number;
  readonly nodeMsMax: number;
  /** ... its CPU time, median, ms. */
  readonly nodeCpuMsMedian: number;
  /** Nodes applied. */
  readonly nodes: number;
  /** Proofs of present keys. */
  readonly present: ProofFigures;
  /** Proofs of absent keys; null when the structure cannot prove absence. */
  readonly absent: ProofFigures | null;
  /** Whether the first 1,000 entries inserted in opposite orders gave the same root. */
  readonly orderIndependent: boolean;
}

/** Means over the sampled proofs. */
export interface ProofFigures {
  /** Proof size, bytes. */
  readonly bytes: number;
  /** Making one, µs. */
  readonly proveUs: number;
  /** Verifying one against the root, µs. */
  readonly verifyUs: number;
  /** ... its CPU time, µs. */
  readonly verifyCpuUs: number;
}

// --- Inputs: seeded, so every candidate gets the same keys and values. ---

/** mulberry32: a small seeded generator (the inputs only need to be the same in every child). */
function generator(seed: number): (bytes: Uint8Array) => Uint8Array {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return (bytes) => {
    for (let i = 0; i < bytes.length; i += 4) {
      const r = next();
      for (let j = 0; j < 4 && i + j < bytes.length; j++) bytes[i + j] = (r >>> (8 * j)) & 0xff;
    }
    return bytes;
  };
}

interface Inputs {
  readonly entries: Entry[];
  readonly nodes: Entry[][];
  readonly absent: Uint8Array[];
}

function makeInputs(keys: number, nodes: number): Inputs {
  const fill = generator(12);
  const key = (): Uint8Array => {
    const k = fill(new Uint8Array(18));
    k[0] = 0x6b; // "k/"
    k[1] = 0x2f;
    return k;
  };
  const value = (): Uint8Array => fill(new Uint8Array(32 + (fill(new Uint8Array(1))[0]! % 69)));
  const entries: Entry[] = Array.from({ length: keys }, () => [key(), value()]);
  const pick = new Uint32Array(1);
  const batches: Entry[][] = [];
  for (let n = 0; n < nodes; n++) {
    const batch: Entry[] = [];
    for (let i = 0; i < UPDATES_PER_NODE / 2; i++) {
      fill(new Uint8Array(pick.buffer));
      const old = entries[pick[0]! % keys]!;
      batch.push([old[0], value()], [key(), value()]);
    }
    batches.push(batch);
  }
  const absent = Array.from({ length: PROOF_SAMPLES }, key);
  return { entries, nodes: batches, absent };
}

// --- The candidates. ---

function treeCandidate(): Candidate {
  const tree = new StateTree();
  let version: StateVersion | null = null;
  return {
    name: "src/state/tree.ts",
    apply(entries) {
      tree.apply(entries);
      version = null;
      return Promise.resolve(tree.root());
    },
    prove(key, value) {
      version ??= tree.freeze();
      const root = version.root;
      const proof = version.prove(key);
      const bytes = cborEncode([proof.bucket, proof.entries, proof.siblings]).length;
      const verify = (): Promise<boolean> =>
        Promise.resolve(verifyStateProof(root, key, value, proof).ok);
      return Promise.resolve({ bytes, verify });
    },
  };
}

async function mptCandidate(): Promise<Candidate> {
  const { createMPT, createMerkleProof, verifyMPTWithMerkleProof } = await import(
    "@ethereumjs/mpt"
  );
  const options = { useKeyHashingFunction: sha256Bytes };
  const trie = await createMPT(options);
  const verifier = await createMPT(options);
  return {
    name: "@ethereumjs/mpt 10.1.3",
    async apply(entries) {
      for (const [k, v] of entries) await trie.put(k, v);
      return trie.root();
    },
    async prove(key, value) {
      const root = trie.root();
      const proof = await createMerkleProof(trie, key);
      const verify = async (): Promise<boolean> => {
        const got = await verifyMPTWithMerkleProof(verifier, root, key, proof);
        return value === null ? got === null : got !== null && bytesEqual(got, value);
      };
      return { bytes: cborEncode(proof).length, verify };
    },
  };
}

/** The BN254 scalar field's order: the SMT's keys and values are elements of it. */
const BN254_P = 21888242871839275222246405745257275088548364400416034343698204186575808495617n;

function fieldOf(bytes: Uint8Array): bigint {
  return BigInt("0x" + toHex(sha256Bytes(bytes))) % BN254_P;
}

async function smtCandidate(): Promise<Candidate> {
  const { InMemoryDB, Merkletree, verifyProof } = await import("@iden3/js-merkletree");
  const tree = new Merkletree(new InMemoryDB(new Uint8Array(0)), true, 64);
  const present = new Set<bigint>();
  return {
    name: "@iden3/js-merkletree 1.5.2",
    async apply(entries) {
      for (const [k, v] of entries) {
        const key = fieldOf(k);
        // The library has `add` for a new key and `update` for an existing one.
        if (present.has(key)) await tree.update(key, fieldOf(v));
        else {
          await tree.add(key, fieldOf(v));
          present.add(key);
        }
      }
      return (await tree.root()).value;
    },
    async prove(key, value) {
      const root = await tree.root();
      const k = fieldOf(key);
      const { proof } = await tree.generateProof(k, root);
      const v = value === null ? 0n : fieldOf(value);
      const verify = async (): Promise<boolean> =>
        proof.existence === (value !== null) && await verifyProof(root, proof, k, v);
      return { bytes: proof.bytes().length, verify };
    },
  };
}

function ozLeaf(key: Uint8Array, value: Uint8Array): Uint8Array {
  const b = new Uint8Array(2 + key.length + 32);
  b[0] = key.length >> 8;
  b[1] = key.length & 0xff;
  b.set(key, 2);
  b.set(sha256Bytes(value), 2 + key.length);
  return sha256Bytes(b);
}

async function ozCandidate(): Promise<Candidate> {
  const { SimpleMerkleTree } = await import("@openzeppelin/merkle-tree");
  const leaves = new Map<string, Uint8Array>();
  let tree: ReturnType<typeof SimpleMerkleTree.of> | null = null;
  return {
    name: "@openzeppelin/merkle-tree 1.0.8",
    apply(entries) {
      for (const [k, v] of entries) leaves.set(toHex(k), ozLeaf(k, v));
      // No update in place: the tree is built again from every leaf (sorted, so order-free).
      tree = SimpleMerkleTree.of([...leaves.values()], { sortLeaves: true });
      return Promise.resolve(hexBytes(tree.root));
    },
    prove(key, value) {
      if (tree === null || value === null) return Promise.resolve(null);
      const root = tree.root;
      const leaf = ozLeaf(key, value);
      const proof = tree.getProof(leaf);
      const bytes = cborEncode(proof.map(hexBytes)).length;
      const verify = (): Promise<boolean> =>
        Promise.resolve(SimpleMerkleTree.verify(root, leaf, proof));
      return Promise.resolve({ bytes, verify });
    },
  };
}

function hexBytes(hex: string): Uint8Array {
  const h = hex.startsWith("0x") ? hex.slice(2) : hex;
  return Uint8Array.from(
    { length: h.length / 2 },
    (_, i) => parseInt(h.slice(2 * i, 2 * i + 2), 16),
  );
}

function candidate(id: MerkleCandidateId): Promise<Candidate> {
  switch (id) {
    case "tree":
      return Promise.resolve(treeCandidate());
    case "mpt":
      return mptCandidate();
    case "smt":
      return smtCandidate();
    case "oz":
      return ozCandidate();
  }
}

// --- Measuring one candidate (in a child process). ---

/** CPU time of this process so far (user and system, every thread), ms. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function heldBytes(): number | null {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return null;
  gc();
  const m = Deno.memoryUsage();
  return m.heapUsed + m.external;
}

async function proofFigures(
  c: Candidate,
  samples: readonly (readonly [Uint8Array, Uint8Array | null])[],
): Promise<ProofFigures | null> {
  let bytes = 0;
  let proveMs = 0;
  let verifyMs = 0;
  let verifyCpuMs = 0;
  for (const [key, value] of samples) {
    const a = performance.now();
    const proof = await c.prove(key, value);
    const b = performance.now();
    if (proof === null) return null;
    const cpu = cpuMs();
    const ok = await proof.verify();
    verifyCpuMs += cpuMs() - cpu;
    verifyMs += performance.now() - b;
    proveMs += b - a;
    bytes += proof.bytes;
    if (!ok) throw new Error(`${c.name}: a proof it made did not verify`);
  }
  const n = samples.length;
  const us = (ms: number): number => 1000 * ms / n;
  return {
    bytes: bytes / n,
    proveUs: us(proveMs),
    verifyUs: us(verifyMs),
    verifyCpuUs: us(verifyCpuMs),
  };
}

async function orderIndependent(
  id: MerkleCandidateId,
  entries: readonly Entry[],
): Promise<boolean> {
  const some = entries.slice(0, ORDER_CHECK_ENTRIES);
  const forward = await (await candidate(id)).apply(some);
  const backward = await (await candidate(id)).apply(some.slice().reverse());
  return bytesEqual(forward, backward);
}

/**
 * Measures one candidate on the seeded inputs (what a child process runs).
 *
 * @example
 * ```ts
 * import { measureCandidate } from "./merkle_libraries.ts";
 * const o = await measureCandidate("tree", 1_000, 2);
 * console.log(o.buildMs, o.nodeMsMedian, o.present.bytes);
 * ```
 */
export async function measureCandidate(
  id: MerkleCandidateId,
  keys: number,
  nodes: number,
): Promise<MerkleOutcome> {
  const inputs = makeInputs(keys, nodes);
  const c = await candidate(id); // loads the library before the memory baseline
  const before = heldBytes();
  const t0 = performance.now();
  const cpu0 = cpuMs();
  await c.apply(inputs.entries);
  const buildCpuMs = cpuMs() - cpu0;
  const buildMs = performance.now() - t0;
  const after = heldBytes();
  console.error(`k: ${id}: built in ${(buildMs / 1000).toFixed(1)} s`);
  const nodeMs: number[] = [];
  const nodeCpuMs: number[] = [];
  for (const batch of inputs.nodes) {
    const t = performance.now();
    const cpu = cpuMs();
    await c.apply(batch);
    nodeCpuMs.push(cpuMs() - cpu);
    nodeMs.push(performance.now() - t);
  }
  nodeMs.sort((a, b) => a - b);
  nodeCpuMs.sort((a, b) => a - b);
  // Present keys: from the initial entries not overwritten since (their values are current).
  const overwritten = new Set(inputs.nodes.flat().map(([k]) => toHex(k)));
  const step = Math.max(1, Math.floor(keys / PROOF_SAMPLES));
  const present = inputs.entries.filter((e, i) => i % step === 0 && !overwritten.has(toHex(e[0])))
    .slice(0, PROOF_SAMPLES);
  return {
    id,
    name: c.name,
    keys,
    buildMs,
    buildCpuMs,
    memoryBytes: before === null || after === null ? null : after - before,
    nodeMsMedian: nodeMs[Math.floor(nodeMs.length / 2)] ?? 0,
    nodeMsMax: nodeMs.at(-1) ?? 0,
    nodeCpuMsMedian: nodeCpuMs[Math.floor(nodeCpuMs.length / 2)] ?? 0,
    nodes,
    present: (await proofFigures(c, present))!,
    absent: await proofFigures(c, inputs.absent.map((k) => [k, null] as const)),
    orderIndependent: await orderIndependent(id, inputs.entries),
  };
}

// --- The parent: one child per candidate, a table. ---

/** Options of {@link runMerkleLibraries}. */
export interface MerkleRunOptions {
  /** Keys to build from. */
  readonly keys: number;
  /** Nodes of 512 updates to apply. */
  readonly nodes: number;
  /** Candidates to run. */
  readonly only: readonly MerkleCandidateId[];
  /** Progress lines. */
  readonly log: (line: string) => void;
}

/**
 * Runs each candidate in a child process and returns what they measured.
 *
 * @example
 * ```ts
 * import { runMerkleLibraries } from "./merkle_libraries.ts";
 * const out = await runMerkleLibraries({ keys: 1_000, nodes: 2, only: ["tree"], log: console.error });
 * console.log(out[0]?.buildMs);
 * ```
 */
export async function runMerkleLibraries(options: MerkleRunOptions): Promise<MerkleOutcome[]> {
  const out: MerkleOutcome[] = [];
  for (const id of options.only) {
    options.log(`k: ${id}: ${options.keys} keys, ${options.nodes} Nodes (load ${loadAverage()})`);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        new URL(import.meta.url).pathname,
        "--candidate",
        id,
        "--keys",
        String(options.keys),
        "--nodes",
        String(options.nodes),
      ],
      stdout: "piped",
      stderr: "inherit",
    });
    const { code, stdout } = await child.output();
    if (code !== 0) throw new Error(`k: candidate ${id} exited with ${code}`);
    const outcome = JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
    options.log(`k: ${id}: ${JSON.stringify(outcome)}`);
    out.push(outcome);
  }
  return out;
}

/** The 1-minute load average, or "?" without `--allow-sys`. */
function loadAverage(): string {
  try {
    return Deno.loadavg()[0]!.toFixed(2);
  } catch {
    return "?";
  }
}

const fixed = (v: number, digits: number): string => v.toFixed(digits);

/**
 * The outcomes as a Markdown table (the form docs/PERFORMANCE.md quotes).
 *
 * @example
 * ```ts
 * import { formatMerkleTable } from "./merkle_libraries.ts";
 * console.log(formatMerkleTable([]));
 * ```
 */
export function formatMerkleTable(outcomes: readonly MerkleOutcome[]): string {
  const rows = [
    "| structure | build (CPU) | memory | Node of 512: median (max), CPU | " +
    "present: proof, verify (CPU) | absent: proof, verify (CPU) | order-free root |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const o of outcomes) {
    const proof = (p: ProofFigures | null): string =>
      p === null
        ? "none"
        : `${fixed(p.bytes, 0)} B, ${fixed(p.verifyUs, 0)} (${fixed(p.verifyCpuUs, 0)}) µs`;
    const memory = o.memoryBytes === null ? "?" : `${fixed(o.memoryBytes / 2 ** 20, 0)} MiB`;
    rows.push(
      `| ${o.name} | ${fixed(o.buildMs / 1000, 2)} (${fixed(o.buildCpuMs / 1000, 2)}) s | ` +
        `${memory} | ${fixed(o.nodeMsMedian, 1)} (${fixed(o.nodeMsMax, 1)}), ` +
        `${fixed(o.nodeCpuMsMedian, 1)} ms | ${proof(o.present)} | ` +
        `${proof(o.absent)} | ${o.orderIndependent ? "yes" : "no"} |`,
    );
  }
  return rows.join("\n");
}

/**
 * The bench section: every candidate at 100,000 keys (quick: 10,000), each in a child process
 * (the bench task grants no environment access, which the libraries' dependencies read).
 */
export async function runMerkleLibrariesSection(ctx: BenchContext): Promise<SectionResult> {
  const keys = ctx.quick ? SECTION_KEYS_QUICK : SECTION_KEYS_FULL;
  const load = loadAverage();
  const outcomes = await runMerkleLibraries({
    keys,
    nodes: ctx.quick ? 3 : 5,
    only: MERKLE_CANDIDATES,
    log: ctx.log,
  });
  const figures: Figure[] = [];
  for (const o of outcomes) {
    const f = (name: string, value: number | null, unit: string): Figure => ({
      section: "k",
      name: `${o.id} ${name}`,
      value,
      unit,
    });
    figures.push(
      f(`build ${keys} keys`, o.buildMs, "ms"),
      f("Node of 512 updates + root (median)", o.nodeMsMedian, "ms"),
      f("Node of 512 updates + root (median CPU)", o.nodeCpuMsMedian, "ms"),
      f("present-key proof", o.present.bytes, "bytes"),
      f("present-key verify", o.present.verifyUs, "µs"),
      f("absent-key proof", o.absent?.bytes ?? null, "bytes"),
      f("absent-key verify", o.absent?.verifyUs ?? null, "µs"),
      f("memory after build", o.memoryBytes === null ? null : o.memoryBytes / 2 ** 20, "MiB"),
    );
  }
  return {
    section: "k",
    title: "Merkle libraries against the state tree",
    figures,
    notes: [`load average (1 min) at the start: ${load}`, formatMerkleTable(outcomes)],
    details: outcomes,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      keys: { type: "string", default: String(SECTION_KEYS_FULL) },
      nodes: { type: "string", default: "5" },
      only: { type: "string", default: MERKLE_CANDIDATES.join(",") },
      candidate: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const keys = Number(values.keys);
  const nodes = Number(values.nodes);
  if (values.candidate !== undefined) {
    const id = asCandidate(values.candidate);
    console.log(JSON.stringify(await measureCandidate(id, keys, nodes)));
    return;
  }
  const only = values.only.split(",").map((s) => asCandidate(s.trim()));
  const started = `load average (1 min) at the start: ${loadAverage()}`;
  const outcomes = await runMerkleLibraries({ keys, nodes, only, log: console.error });
  if (values.json) console.log(JSON.stringify(outcomes));
  else console.log(`${formatMerkleTable(outcomes)}\n\n${started}; at the end: ${loadAverage()}`);
}

function asCandidate(s: string): MerkleCandidateId {
  const id = MERKLE_CANDIDATES.find((c) => c === s);
  if (id === undefined) throw new Error(`unknown candidate ${s}; known: ${MERKLE_CANDIDATES}`);
  return id;
}

if (import.meta.main) await main();
