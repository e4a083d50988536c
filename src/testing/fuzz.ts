/**
 * A seeded mutational fuzzer for the strict decoders of `codec.ts`.
 *
 * It builds valid frames of every kind (PROPOSE with and without a TC, VOTE, NEW-VIEW with and
 * without a high TC and a vote, bare Nodes and QCs, all with real Ed25519 signatures), mutates
 * them with a seeded PRNG, and feeds the results to `decodeMessage`, `decodeNode` and `decodeQC`.
 * It checks that the decoders never throw, always return a well-formed `DecodeResult`, and that
 * every accepted input is canonical: re-encoding the value gives the input bytes back, and
 * decoding those gives an equal value.
 *
 * The same seed replays the same inputs exactly (only the timings differ).
 *
 * @example
 * ```ts
 * import { fuzzDecoders } from "./fuzz.ts";
 * const report = await fuzzDecoders({ runs: 1000, seed: 42 });
 * if (report.uncaughtExceptions > 0) console.log(report.failures[0]);
 * ```
 *
 * @module
 */
import {
  type CodecLimits,
  decodeMessage,
  decodeNode,
  decodeQC,
  type DecodeResult,
  DEFAULT_CODEC_LIMITS,
  encodeMessage,
  encodeNode,
  encodeQC,
  genesisNode,
  genesisQC,
  nodeHash,
  signedBytes,
} from "../codec.ts";
import { deriveSecretKey, ed25519Signer, type Signer } from "../crypto.ts";
import { assert, ConfigError, DecodeError } from "../errors.ts";
import {
  bytesEqual,
  type ConsensusMessage,
  type Node,
  type QuorumCertificate,
  SignatureDomain,
  type SignerSignature,
  type TimeoutCertificate,
  toHex,
} from "../types.ts";

// Re-exported because the public types below refer to it.
export type { CodecLimits } from "../codec.ts";

/** Which decoder an input is fed to. */
export type FuzzTarget = "message" | "node" | "qc";

/**
 * A decoder under test. It must return a `DecodeResult` of `codec.ts` and never throw; the result
 * is typed `unknown` because checking that contract at run time is the fuzzer's job.
 */
export type FuzzDecoder = (bytes: Uint8Array, limits: CodecLimits) => unknown;

/** The decoders under test, one per {@link FuzzTarget}. */
export interface FuzzDecoders {
  /** Decodes a consensus message frame. Default `decodeMessage`. */
  readonly message: FuzzDecoder;
  /** Decodes a Node. Default `decodeNode`. */
  readonly node: FuzzDecoder;
  /** Decodes a QC. Default `decodeQC`. */
  readonly qc: FuzzDecoder;
}

/** Options of {@link fuzzDecoders}. */
export interface FuzzOptions {
  /** Number of inputs to decode: a non-negative safe integer. */
  readonly runs: number;
  /** PRNG seed: a safe integer. The same seed gives the same inputs. */
  readonly seed: number;
  /**
   * Test-only: decoders to fuzz instead of those of `codec.ts`, e.g. a deliberately throwing one
   * to show that the fuzzer reports it. Missing entries use the real decoders.
   */
  readonly decoders?: Partial<FuzzDecoders>;
  /** Most failure examples kept in the report. Default 10. */
  readonly failuresMax?: number;
  /** Millisecond clock for the timings. Default `performance.now`. */
  readonly now?: () => number;
}

/** One input that broke a decoder's contract, with what it takes to reproduce it. */
export interface FuzzFailure {
  /** What went wrong. */
  readonly kind: "uncaught-exception" | "bad-result" | "round-trip";
  /** The decoder that was fed the input. */
  readonly target: FuzzTarget;
  /** Index of the input in the run (0-based). */
  readonly run: number;
  /** The input, in hex. */
  readonly inputHex: string;
  /** The exception or the mismatch. */
  readonly detail: string;
}

/** The slowest single decode of a run. */
export interface FuzzSlowest {
  /** Time taken, in milliseconds. */
  readonly ms: number;
  /** The decoder that was fed the input. */
  readonly target: FuzzTarget;
  /** Index of the input in the run (0-based), or -1 for an empty run. */
  readonly run: number;
  /** The input, in hex (empty for an empty run), to time it again alone. */
  readonly inputHex: string;
}

/** What {@link fuzzDecoders} found. All three failure counts must be 0. */
export interface FuzzReport {
  /** The seed, to replay the run. */
  readonly seed: number;
  /** Inputs decoded. */
  readonly inputs: number;
  /** Inputs that decoded to a value. */
  readonly accepted: number;
  /** Inputs that were refused, by `DecodeError.reason`. */
  readonly rejected: Readonly<Record<string, number>>;
  /** Inputs on which a decoder threw instead of returning a result. */
  readonly uncaughtExceptions: number;
  /** Inputs on which a decoder returned something other than a well-formed result. */
  readonly badResults: number;
  /** Accepted inputs that did not re-encode to the same bytes and decode to an equal value. */
  readonly roundTripFailures: number;
  /** The slowest decode. */
  readonly slowest: FuzzSlowest;
  /** Wall time of the whole run, in milliseconds (corpus building included). */
  readonly elapsedMs: number;
  /** The first few failures, at most `failuresMax`. */
  readonly failures: readonly FuzzFailure[];
}

/** Largest mutated input, in bytes; longer mutants are cut to this size. */
export const FUZZ_INPUT_BYTES_MAX = 64 * 1024;
/** Most inputs kept in the mutation pool (seeds plus accepted mutants). */
export const FUZZ_POOL_MAX = 1024;

/**
 * Tight limits used for a quarter of the inputs, so that the limit checks (`too-many`,
 * `too-large`) are reached from both sides by the seed frames and their mutants.
 */
export const FUZZ_TIGHT_LIMITS: CodecLimits = {
  commandBytesMax: 32,
  signaturesMax: 3,
  chainIdBytesMax: 12,
};

const DEFAULT_DECODERS: FuzzDecoders = {
  message: decodeMessage,
  node: decodeNode,
  qc: decodeQC,
};

/**
 * Fuzzes the decoders with `runs` mutated inputs from the seed `seed`. Never throws on decoder
 * misbehaviour: it counts it in the report.
 *
 * @example
 * ```ts
 * import { fuzzDecoders } from "./fuzz.ts";
 * const report = await fuzzDecoders({ runs: 10_000, seed: 7 });
 * console.log(`${report.inputs} inputs, ${report.uncaughtExceptions} uncaught exceptions`);
 * ```
 *
 * @throws {ConfigError} if `runs` or `seed` is not a (non-negative) safe integer
 */
export async function fuzzDecoders(options: FuzzOptions): Promise<FuzzReport> {
  const { runs, seed } = options;
  if (!Number.isSafeInteger(runs) || runs < 0) {
    throw new ConfigError("bad-runs", `runs must be a non-negative safe integer: ${runs}`);
  }
  if (!Number.isSafeInteger(seed)) {
    throw new ConfigError("bad-seed", `seed must be a safe integer: ${seed}`);
  }
  const now = options.now ?? (() => performance.now());
  const started = now();
  const state = newState(options, now, await seedCorpus());
  for (let run = 0; run < runs; run++) fuzzOne(state, run);
  const report = { ...finish(state), seed, elapsedMs: now() - started };
  assertReport(report, runs);
  return report;
}

// ---------------------------------------------------------------------------------------------
// The run loop

interface PoolEntry {
  readonly bytes: Uint8Array;
  readonly target: FuzzTarget;
}

interface State {
  readonly rng: Rng;
  readonly decoders: FuzzDecoders;
  readonly now: () => number;
  readonly failuresMax: number;
  readonly seedCount: number;
  readonly pool: PoolEntry[];
  readonly rejected: Map<string, number>;
  readonly failures: FuzzFailure[];
  inputs: number;
  accepted: number;
  uncaughtExceptions: number;
  badResults: number;
  roundTripFailures: number;
  slowest: FuzzSlowest;
}

function newState(options: FuzzOptions, now: () => number, seeds: PoolEntry[]): State {
  assert(seeds.length > 0 && seeds.length < FUZZ_POOL_MAX, "fuzz: seed corpus size");
  return {
    rng: newRng(options.seed),
    decoders: { ...DEFAULT_DECODERS, ...options.decoders },
    now,
    failuresMax: options.failuresMax ?? 10,
    seedCount: seeds.length,
    pool: seeds,
    rejected: new Map(),
    failures: [],
    inputs: 0,
    accepted: 0,
    uncaughtExceptions: 0,
    badResults: 0,
    roundTripFailures: 0,
    slowest: { ms: -1, target: "message", run: -1, inputHex: "" },
  };
}

const TARGETS: readonly FuzzTarget[] = ["message", "node", "qc"];

/** Mutates one pool entry, decodes it, and records the outcome. */
function fuzzOne(state: State, run: number): void {
  const { rng, pool } = state;
  const parent = pool[rng.below(pool.length)]!;
  const input = mutate(rng, parent.bytes, pool);
  // Mostly the parent's own decoder; sometimes another one, to mix up the expected shapes.
  const target = rng.below(5) === 0 ? TARGETS[rng.below(3)]! : parent.target;
  const limits = rng.below(4) === 0 ? FUZZ_TIGHT_LIMITS : DEFAULT_CODEC_LIMITS;
  state.inputs++;
  const outcome = decodeTimed(state, run, target, input, limits);
  if (outcome === "failed") return;
  if (!outcome.ok) {
    state.rejected.set(outcome.error.reason, (state.rejected.get(outcome.error.reason) ?? 0) + 1);
    return;
  }
  state.accepted++;
  const problem = roundTripProblem(state.decoders, target, input, outcome.value, limits);
  if (problem !== null) {
    state.roundTripFailures++;
    recordFailure(state, { kind: "round-trip", target, run, detail: problem }, input);
    return;
  }
  if (!bytesEqual(input, parent.bytes)) addToPool(state, { bytes: input, target });
}

type Outcome = DecodeResult<unknown> | "failed";

/** Calls the decoder, timing it; counts and records a throw or a malformed result. */
function decodeTimed(
  state: State,
  run: number,
  target: FuzzTarget,
  input: Uint8Array,
  limits: CodecLimits,
): Outcome {
  const t0 = state.now();
  let result: unknown;
  try {
    result = state.decoders[target](input, limits);
  } catch (e) {
    state.uncaughtExceptions++;
    const detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    recordFailure(state, { kind: "uncaught-exception", target, run, detail }, input);
    return "failed";
  } finally {
    const ms = state.now() - t0;
    if (ms > state.slowest.ms) state.slowest = { ms, target, run, inputHex: toHex(input) };
  }
  const problem = resultProblem(result);
  if (problem === null) return result as DecodeResult<unknown>;
  state.badResults++;
  recordFailure(state, { kind: "bad-result", target, run, detail: problem }, input);
  return "failed";
}

/** Why `result` is not a well-formed `DecodeResult`, or null if it is. */
function resultProblem(result: unknown): string | null {
  if (typeof result !== "object" || result === null) return `not an object: ${String(result)}`;
  const r = result as { ok?: unknown; value?: unknown; error?: unknown };
  if (r.ok === true) return "value" in r ? null : "ok result without a value";
  if (r.ok !== false) return `ok is ${String(r.ok)}`;
  if (!(r.error instanceof DecodeError)) return `error is not a DecodeError: ${String(r.error)}`;
  if (typeof r.error.reason !== "string" || r.error.reason === "") return "error without a reason";
  return null;
}

const ENCODERS: Record<FuzzTarget, (value: never) => Uint8Array> = {
  message: encodeMessage,
  node: encodeNode,
  qc: encodeQC,
};

/**
 * Checks that an accepted input is canonical: its value re-encodes to the very same bytes, and
 * those decode to an equal value. Returns why not, or null.
 */
function roundTripProblem(
  decoders: FuzzDecoders,
  target: FuzzTarget,
  input: Uint8Array,
  value: unknown,
  limits: CodecLimits,
): string | null {
  try {
    const encoded = ENCODERS[target](value as never);
    const result = decoders[target](encoded, limits);
    const problem = resultProblem(result);
    if (problem !== null) return `re-encoded value: ${problem}`;
    const again = result as DecodeResult<unknown>;
    if (!again.ok) return `re-encoded value is rejected: ${again.error.reason}`;
    if (!sameValue(again.value, value)) return "re-encoded value decodes to a different value";
    if (!bytesEqual(encoded, input)) {
      return `accepted non-canonical bytes; canonical ${toHex(encoded)}`;
    }
    return null;
  } catch (e) {
    return `round trip threw: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** Structural equality; numbers compare with `Object.is`, so `-0` differs from `0`. */
function sameValue(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && bytesEqual(a, b);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => sameValue(x, b[i]));
  }
  if (typeof a !== "object" || a === null || typeof b !== "object" || b === null) {
    return Object.is(a, b);
  }
  const keysA = Object.keys(a);
  const keysB = Object.keys(b);
  if (keysA.length !== keysB.length) return false;
  const recB = b as Record<string, unknown>;
  return keysA.every((k) => k in recB && sameValue((a as Record<string, unknown>)[k], recB[k]));
}

/** Keeps the failure as an example unless `failuresMax` are kept already. */
function recordFailure(
  state: State,
  failure: Omit<FuzzFailure, "inputHex">,
  input: Uint8Array,
): void {
  if (state.failures.length < state.failuresMax) {
    state.failures.push({ ...failure, inputHex: toHex(input) });
  }
}

/** Adds an accepted mutant to the pool; when full, it replaces a random mutant (never a seed). */
function addToPool(state: State, entry: PoolEntry): void {
  if (state.pool.length < FUZZ_POOL_MAX) {
    state.pool.push(entry);
    return;
  }
  const slot = state.seedCount + state.rng.below(FUZZ_POOL_MAX - state.seedCount);
  assert(slot >= state.seedCount && slot < FUZZ_POOL_MAX, "fuzz: seeds stay in the pool");
  state.pool[slot] = entry;
}

function finish(state: State): Omit<FuzzReport, "seed" | "elapsedMs"> {
  const rejected: Record<string, number> = {};
  for (const reason of [...state.rejected.keys()].sort()) {
    rejected[reason] = state.rejected.get(reason)!;
  }
  return {
    inputs: state.inputs,
    accepted: state.accepted,
    rejected,
    uncaughtExceptions: state.uncaughtExceptions,
    badResults: state.badResults,
    roundTripFailures: state.roundTripFailures,
    slowest: { ...state.slowest, ms: Math.max(0, state.slowest.ms) },
    failures: state.failures,
  };
}

/** Every input is counted exactly once. */
function assertReport(report: FuzzReport, runs: number): void {
  const rejected = Object.values(report.rejected).reduce((s, n) => s + n, 0);
  const settled = report.accepted + rejected + report.uncaughtExceptions + report.badResults;
  assert(report.inputs === runs, `fuzz: ${report.inputs} inputs for ${runs} runs`);
  assert(settled === runs, `fuzz: ${settled} outcomes for ${runs} runs`);
  assert(report.roundTripFailures <= report.accepted, "fuzz: round trips only of accepted inputs");
}

// ---------------------------------------------------------------------------------------------
// Seed corpus: valid frames of every kind, with real signatures

const FUZZ_VALIDATORS = 4;

/** Valid frames of every kind; chain ids, commands and signature counts straddle tight limits. */
async function seedCorpus(): Promise<PoolEntry[]> {
  const signers = Array.from(
    { length: FUZZ_VALIDATORS },
    (_, i) => ed25519Signer(deriveSecretKey(`fuzz-${i}`)),
  );
  const out: PoolEntry[] = [];
  const chains = ["fuzz", "fuzz-chain-1", "fuzz-chain-13"];
  for (const [c, chainId] of chains.entries()) {
    const nodes = await nodeChain(signers, chainId, c);
    for (const node of nodes) {
      out.push({ bytes: encodeNode(node), target: "node" });
      out.push({ bytes: encodeQC(node.justify), target: "qc" });
      const messages = await messagesFor(signers, node);
      for (const m of messages) out.push({ bytes: encodeMessage(m), target: "message" });
    }
  }
  out.push({ bytes: encodeQC(genesisQC("fuzz")), target: "qc" });
  return out;
}

/** Three Nodes extending genesis, each justified by a QC for its parent. */
async function nodeChain(
  signers: readonly Signer[],
  chainId: string,
  variant: number,
): Promise<Node[]> {
  const commands = [0, 11, 32, 33, 200].map((n) => new Uint8Array(n).fill(0x61 + variant));
  const views = [1, 2 ** 32 + variant, Number.MAX_SAFE_INTEGER - variant];
  let parent = genesisNode(chainId);
  let justify = genesisQC(chainId);
  const nodes: Node[] = [];
  for (let i = 0; i < views.length; i++) {
    const node: Node = {
      view: views[i]!,
      height: parent.height + 1,
      parent: nodeHash(parent),
      justify,
      command: commands[(i + variant) % commands.length]!,
      configHash: new Uint8Array(32).fill(0xc0 + i + variant),
      proposer: signers[i % signers.length]!.publicKey,
      stateRoot: i % 2 === 0 ? new Uint8Array(0) : new Uint8Array(32).fill(variant),
    };
    nodes.push(node);
    const voters = signers.slice(0, 2 + ((i + variant) % 3)); // 2, 3 or 4 signatures
    justify = await qcFor(voters, node, chainId);
    parent = node;
  }
  return nodes;
}

async function qcFor(
  voters: readonly Signer[],
  node: Node,
  chainId: string,
): Promise<QuorumCertificate> {
  const hash = nodeHash(node);
  const bytes = signedBytes(SignatureDomain.vote, chainId, node.view, hash);
  return { chainId, view: node.view, nodeHash: hash, signatures: await signAll(voters, bytes) };
}

async function tcFor(
  voters: readonly Signer[],
  chainId: string,
  view: number,
): Promise<TimeoutCertificate> {
  const bytes = signedBytes(SignatureDomain.newView, chainId, view);
  return { chainId, view, signatures: await signAll(voters, bytes) };
}

async function signAll(signers: readonly Signer[], bytes: Uint8Array): Promise<SignerSignature[]> {
  const out: SignerSignature[] = [];
  for (const s of signers) out.push({ signer: s.publicKey, signature: await s.sign(bytes) });
  return out;
}

/** PROPOSE with and without a TC, a VOTE, NEW-VIEW with and without a high TC and a vote. */
async function messagesFor(signers: readonly Signer[], node: Node): Promise<ConsensusMessage[]> {
  const chainId = node.justify.chainId;
  const hash = nodeHash(node);
  const leader = signers[0]!;
  const voter = signers[1]!;
  const tc = await tcFor(
    signers.slice(0, 3 + (node.view % 2)),
    chainId,
    Math.max(0, node.view - 1),
  );
  const proposeSig = await leader.sign(
    signedBytes(SignatureDomain.propose, chainId, node.view, hash),
  );
  const voteSig = await voter.sign(signedBytes(SignatureDomain.vote, chainId, node.view, hash));
  const nvSig = await voter.sign(signedBytes(SignatureDomain.newView, chainId, node.view));
  const vote = { nodeHash: hash, signature: voteSig };
  const newView = { view: node.view, highQC: node.justify, signer: voter.publicKey };
  return [
    { type: "propose", node, tc: null, signature: proposeSig },
    { type: "propose", node, tc, signature: proposeSig },
    { type: "vote", view: node.view, nodeHash: hash, signer: voter.publicKey, signature: voteSig },
    { ...newView, type: "new-view", highTC: null, vote: null, signature: nvSig },
    { ...newView, type: "new-view", highTC: tc, vote: null, signature: nvSig },
    { ...newView, type: "new-view", highTC: null, vote, signature: nvSig },
    { ...newView, type: "new-view", highTC: tc, vote, signature: nvSig },
  ];
}

// ---------------------------------------------------------------------------------------------
// Seeded PRNG: mulberry32, its state mixed from both 32-bit halves of the seed

interface Rng {
  /** A uniform integer in [0, n); n >= 1. */
  below(n: number): number;
  /** A uniform byte. */
  byte(): number;
}

function newRng(seed: number): Rng {
  const hi = Math.floor(seed / 2 ** 32) | 0;
  let a = (Math.imul((seed | 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(hi, 0xc2b2ae35)) >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    below: (n) => Math.floor(next() * n),
    byte: () => Math.floor(next() * 256),
  };
}

// ---------------------------------------------------------------------------------------------
// Mutations

type Mutator = (rng: Rng, input: Uint8Array, pool: readonly PoolEntry[]) => Uint8Array;

/** Applies 1 to 4 random mutations: one half of the time, two a quarter of the time, ... */
function mutate(rng: Rng, input: Uint8Array, pool: readonly PoolEntry[]): Uint8Array {
  let out = input;
  let count = 1;
  while (count < 4 && rng.below(2) === 0) count++;
  for (let i = 0; i < count; i++) out = MUTATORS[rng.below(MUTATORS.length)]!(rng, out, pool);
  return out.length > FUZZ_INPUT_BYTES_MAX ? out.slice(0, FUZZ_INPUT_BYTES_MAX) : out;
}

/** Bytes that mean something to a CBOR decoder: length prefixes, tags, simple values, breaks. */
// deno-fmt-ignore
const INTERESTING_BYTES = [
  0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1f, 0x20, 0x3b, 0x40, 0x41, 0x58, 0x5f, 0x60,
  0x7f, 0x80, 0x81, 0x84, 0x85, 0x86, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xc2, 0xd8, 0xf4, 0xf5, 0xf6,
  0xf7, 0xf9, 0xfa, 0xfb, 0xff,
];

/**
 * Encodings to put where an integer was: huge and negative integers, bignums, floats (whole,
 * fractional, -0, NaN, Infinity) and integers in longer-than-needed forms.
 */
const ODD_INTEGERS: readonly number[][] = [
  [0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0], // 2^53
  [0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 1], // 2^53 + 1
  [0x1b, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 2^53 - 1
  [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // 2^64 - 1
  [0x1a, 0xff, 0xff, 0xff, 0xff], // 2^32 - 1
  [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // -2^64
  [0x3b, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe], // -(2^53 - 1)
  [0x20], // -1
  [0xc2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0, 0], // bignum 2^64
  [0xc3, 0x41, 0x00], // negative bignum -1
  [0xfb, 0x43, 0x40, 0, 0, 0, 0, 0, 0], // 2^53 as float64
  [0xf9, 0x80, 0x00], // -0.0
  [0xf9, 0x00, 0x00], // 0.0
  [0xf9, 0x3c, 0x00], // 1.0
  [0xf9, 0x3e, 0x00], // 1.5
  [0xf9, 0x7c, 0x00], // Infinity
  [0xf9, 0x7e, 0x00], // NaN
  [0x18, 0x01], // 1 in two bytes
  [0x1a, 0, 0, 0, 0x01], // 1 in five bytes
  [0x00],
];

/** Whole items to put anywhere: the CBOR shapes the decoder must refuse, and some it accepts. */
const ODD_ITEMS: readonly number[][] = [
  [0xa0], // {}
  [0xa1, 0x01, 0x02], // {1: 2}
  [0xf7], // undefined
  [0xf6], // null
  [0xf5], // true
  [0x80], // []
  [0x40], // h''
  [0x60], // ""
  [0x61, 0xff], // text with invalid UTF-8
  [0xc0, 0x60], // tag 0 ""
  [0xd8, 0x18, 0x40], // tag 24 h''
  [0x5f, 0x41, 0x00, 0xff], // indefinite bytes
  [0x9f, 0xff], // indefinite array
  [0xfa, 0x7f, 0xc0, 0, 0], // NaN as float32
];

const MUTATORS: readonly Mutator[] = [
  flipBits,
  setInterestingByte,
  insertBytes,
  deleteBytes,
  truncate,
  spliceTwo,
  duplicateSlice,
  replaceInteger,
  replaceWithFloat,
  replaceItem,
  resizeByteString,
  dropOrRepeatChild,
];

function flipBits(rng: Rng, input: Uint8Array): Uint8Array {
  if (input.length === 0) return new Uint8Array([rng.byte()]);
  const out = input.slice();
  const flips = 1 + rng.below(8);
  for (let i = 0; i < flips; i++) out[rng.below(out.length)]! ^= 1 << rng.below(8);
  return out;
}

function setInterestingByte(rng: Rng, input: Uint8Array): Uint8Array {
  if (input.length === 0) return new Uint8Array([pick(rng, INTERESTING_BYTES)]);
  const out = input.slice();
  out[rng.below(out.length)] = pick(rng, INTERESTING_BYTES);
  return out;
}

function insertBytes(rng: Rng, input: Uint8Array): Uint8Array {
  const n = 1 + rng.below(4);
  const ins = Array.from(
    { length: n },
    () => rng.below(2) ? rng.byte() : pick(rng, INTERESTING_BYTES),
  );
  return splice(input, rng.below(input.length + 1), 0, ins);
}

function deleteBytes(rng: Rng, input: Uint8Array): Uint8Array {
  if (input.length === 0) return input;
  const at = rng.below(input.length);
  return splice(input, at, 1 + rng.below(Math.min(16, input.length - at)), []);
}

function truncate(rng: Rng, input: Uint8Array): Uint8Array {
  return input.subarray(0, rng.below(input.length + 1));
}

/** A prefix of this input followed by a suffix of another pool entry. */
function spliceTwo(rng: Rng, input: Uint8Array, pool: readonly PoolEntry[]): Uint8Array {
  const other = pool[rng.below(pool.length)]!.bytes;
  const head = input.subarray(0, rng.below(input.length + 1));
  const tail = other.subarray(rng.below(other.length + 1));
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out;
}

function duplicateSlice(rng: Rng, input: Uint8Array): Uint8Array {
  if (input.length === 0) return input;
  const from = rng.below(input.length);
  const slice = input.subarray(from, from + 1 + rng.below(Math.min(64, input.length - from)));
  return splice(input, rng.below(input.length + 1), 0, [...slice]);
}

/** Replaces an integer item with a huge, negative, float or overlong encoding. */
function replaceInteger(rng: Rng, input: Uint8Array): Uint8Array {
  const ints = itemsOf(input)?.filter((s) => s.major === 0 || s.major === 1);
  if (ints === undefined || ints.length === 0) return flipBits(rng, input);
  const span = pick(rng, ints);
  return splice(input, span.start, span.end - span.start, pick(rng, ODD_INTEGERS));
}

/** Replaces an unsigned integer with the same number as a float: equal value, other bytes. */
function replaceWithFloat(rng: Rng, input: Uint8Array): Uint8Array {
  const ints = itemsOf(input)?.filter((s) => s.major === 0);
  if (ints === undefined || ints.length === 0) return flipBits(rng, input);
  const span = pick(rng, ints);
  const float = new Uint8Array(9);
  float[0] = 0xfb;
  new DataView(float.buffer).setFloat64(1, span.value);
  return splice(input, span.start, span.end - span.start, [...float]);
}

/** Replaces an item with an odd one, or with an item taken from another pool entry. */
function replaceItem(rng: Rng, input: Uint8Array, pool: readonly PoolEntry[]): Uint8Array {
  const items = itemsOf(input);
  if (items === undefined || items.length === 0) return flipBits(rng, input);
  const span = pick(rng, items);
  let replacement = pick(rng, ODD_ITEMS);
  const donorItems = itemsOf(pool[rng.below(pool.length)]!.bytes);
  if (rng.below(2) === 0 && donorItems !== undefined && donorItems.length > 0) {
    const d = pick(rng, donorItems);
    replacement = [...d.source.subarray(d.start, d.end)];
  }
  return splice(input, span.start, span.end - span.start, replacement);
}

/** Makes a byte string one byte shorter or longer (31/33-byte hashes, 63/65-byte signatures). */
function resizeByteString(rng: Rng, input: Uint8Array): Uint8Array {
  const strings = itemsOf(input)?.filter((s) => s.major === 2);
  if (strings === undefined || strings.length === 0) return flipBits(rng, input);
  const span = pick(rng, strings);
  const content = input.subarray(span.headerEnd, span.end);
  const resized = rng.below(2) === 0 ? content.subarray(0, Math.max(0, content.length - 1)) : [
    ...content,
    rng.byte(),
  ];
  return splice(input, span.start, span.end - span.start, [
    ...header(2, resized.length),
    ...resized,
  ]);
}

/** Removes one child of an array, or repeats one several times (too many signatures, ...). */
function dropOrRepeatChild(rng: Rng, input: Uint8Array): Uint8Array {
  const items = itemsOf(input);
  const arrays = items?.filter((s) => s.major === 4 && s.value > 0);
  if (items === undefined || arrays === undefined || arrays.length === 0) {
    return flipBits(rng, input);
  }
  const array = pick(rng, arrays);
  const children = items.filter((s) => s.parent === array.index);
  const child = pick(rng, children);
  const repeat = rng.below(2) === 0 ? 0 : 2 + rng.below(7);
  const body = [...input.subarray(array.headerEnd, child.start)];
  for (let i = 0; i < repeat; i++) body.push(...input.subarray(child.start, child.end));
  body.push(...input.subarray(child.end, array.end));
  const count = array.value - 1 + repeat;
  return splice(input, array.start, array.end - array.start, [...header(4, count), ...body]);
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.below(items.length)]!;
}

/** `input` with `deleteCount` bytes at `at` replaced by `insert`. */
function splice(
  input: Uint8Array,
  at: number,
  deleteCount: number,
  insert: ArrayLike<number>,
): Uint8Array {
  const out = new Uint8Array(input.length - deleteCount + insert.length);
  out.set(input.subarray(0, at));
  out.set(insert, at);
  out.set(input.subarray(at + deleteCount), at + insert.length);
  return out;
}

/** The shortest CBOR header of `major` with argument `n` (n < 2^32). */
function header(major: number, n: number): number[] {
  const m = major << 5;
  if (n < 24) return [m | n];
  if (n < 0x100) return [m | 24, n];
  if (n < 0x10000) return [m | 25, n >> 8, n & 0xff];
  return [m | 26, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
}

// ---------------------------------------------------------------------------------------------
// A minimal CBOR walker, to find the items that the structural mutations work on

interface Item {
  readonly source: Uint8Array;
  /** Position of this item in the walk (pre-order). */
  readonly index: number;
  /** Index of the enclosing array, map or tag, or -1. */
  readonly parent: number;
  readonly major: number;
  /** The header's argument: the integer, or the length or count. */
  readonly value: number;
  readonly start: number;
  readonly headerEnd: number;
  readonly end: number;
}

/** Most items walked in one input; larger inputs are mutated byte-wise only. */
const WALK_ITEMS_MAX = 4096;
const WALK_DEPTH_MAX = 32;

/** Walks of pool entries, which are mutated again and again. Walks are pure, so this is safe. */
const itemsCache = new WeakMap<Uint8Array, Item[] | undefined>();

/** Every item of a well-formed, definite-length CBOR input, or undefined if it is not one. */
function itemsOf(input: Uint8Array): Item[] | undefined {
  if (itemsCache.has(input)) return itemsCache.get(input);
  const items: Item[] = [];
  const end = walk(input, 0, -1, 0, items);
  const result = end === input.length ? items : undefined;
  itemsCache.set(input, result);
  return result;
}

/** Walks one item at `pos`; returns its end, or -1 if it is malformed or too big to walk. */
function walk(
  input: Uint8Array,
  pos: number,
  parent: number,
  depth: number,
  items: Item[],
): number {
  if (pos >= input.length || depth > WALK_DEPTH_MAX || items.length >= WALK_ITEMS_MAX) return -1;
  const major = input[pos]! >> 5;
  const head = readHeader(input, pos);
  if (head === null) return -1;
  const index = items.length;
  const item = {
    source: input,
    index,
    parent,
    major,
    value: head.value,
    start: pos,
    headerEnd: head.end,
  };
  items.push({ ...item, end: -1 });
  let end = head.end;
  if (major === 2 || major === 3) end += head.value;
  const children = major === 4 ? head.value : major === 5 ? 2 * head.value : major === 6 ? 1 : 0;
  for (let i = 0; i < children && end !== -1; i++) end = walk(input, end, index, depth + 1, items);
  if (end === -1 || end > input.length) return -1;
  items[index] = { ...item, end };
  return end;
}

/** The argument of the header at `pos` and where the header ends; null if indefinite or cut. */
function readHeader(input: Uint8Array, pos: number): { value: number; end: number } | null {
  const info = input[pos]! & 31;
  const major = input[pos]! >> 5;
  if (info < 24) return { value: major === 7 ? 0 : info, end: pos + 1 };
  if (info > 27) return null;
  const size = 1 << (info - 24);
  if (pos + 1 + size > input.length) return null;
  if (major === 7) return { value: 0, end: pos + 1 + size }; // a float: no argument to read
  let value = 0;
  for (let i = 1; i <= size; i++) value = value * 256 + input[pos + i]!;
  return Number.isSafeInteger(value) ? { value, end: pos + 1 + size } : null;
}
