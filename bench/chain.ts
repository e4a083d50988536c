/**
 * A committed chain built without running consensus, for the catch-up and restart sections:
 * real Nodes whose hashes link, justify QCs signed by a quorum of real Ed25519 keys, and the
 * counter Application's state updates. Building it is not measured.
 *
 * Node `k` (k ≥ 1) has view `k`, height `k`, the leader of view `k` as proposer, and justifies
 * its parent with the QC of view `k - 1` (the genesis QC for `k = 1`): the happy path, where
 * every Node is its parent's direct child in the next view, so inserting Node `k` commits
 * Node `k - 3`.
 *
 * @module
 */
import type { Application } from "../src/app.ts";
import { encodeMessage, genesisNode, genesisQC, nodeHash, signedBytes } from "../src/codec.ts";
import type { Signer } from "../src/crypto.ts";
import { deriveSecretKey, ed25519Signer } from "../src/crypto.ts";
import { counterApp } from "../src/testing/counter_app.ts";
import type { StoredNode } from "../src/storage/storage.ts";
import type { Node, ProposeMessage, QuorumCertificate } from "../src/types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

/** Chain id of every bench chain. */
export const BENCH_CHAIN_ID = "bench";

/** The secret-key seed of validator `i` (the restart child derives its key from it). */
export function validatorSeed(i: number): string {
  return `bench-validator-${i}`;
}

/** Validators of equal power, and a signer for each, both in the set's (sorted) order. */
export interface BenchValidators {
  /** The set. */
  readonly set: ValidatorSet;
  /** `signers[i]` signs for `set.validators[i]`. */
  readonly signers: readonly Signer[];
  /** `seeds[i]` derives `signers[i]`'s secret key. */
  readonly seeds: readonly string[];
}

/**
 * `count` validators of power 1 with keys derived from {@link validatorSeed}.
 *
 * @example
 * ```ts
 * import { benchValidators } from "./chain.ts";
 * benchValidators(4).set.validators.length; // 4
 * ```
 */
export function benchValidators(count: number): BenchValidators {
  const unsorted = Array.from({ length: count }, (_, i) => {
    const seed = validatorSeed(i);
    return { seed, signer: ed25519Signer(deriveSecretKey(seed)) };
  });
  const set = new ValidatorSet(unsorted.map((u) => ({ publicKey: u.signer.publicKey, power: 1 })));
  const bySorted = set.validators.map((v) =>
    unsorted.find((u) => bytesEqual(u.signer.publicKey, v.publicKey))!
  );
  return { set, signers: bySorted.map((u) => u.signer), seeds: bySorted.map((u) => u.seed) };
}

/** Options of {@link buildChain}. */
export interface BuildChainOptions {
  /** Nodes to build above genesis. */
  readonly length: number;
  /** Index (in set order) of the validator that never signs: the replica under test. */
  readonly absent: number;
  /** Bytes of each Node's command. Default 32. */
  readonly commandBytes?: number;
  /**
   * QCs of views below this are signed with placeholder bytes of the right size (for Nodes that
   * the measured replica stores but never verifies). Default 1: every QC is really signed.
   */
  readonly realSignaturesFrom?: number;
  /** Progress callback, called every 10,000 Nodes. */
  readonly onProgress?: (built: number) => void;
}

/** A built chain. */
export interface BenchChain {
  /** The validators. */
  readonly validators: BenchValidators;
  /** `nodes[k - 1]` is the Node at height `k`, with its hash and counter updates. */
  readonly nodes: StoredNode[];
  /** `qcs[k - 1]` certifies Node `k` (signed by every validator but the absent one). */
  readonly qcs: QuorumCertificate[];
}

/**
 * Builds `length` Nodes above genesis with their QCs.
 *
 * @example
 * ```ts
 * import { benchValidators, buildChain } from "./chain.ts";
 * const chain = await buildChain(benchValidators(4), { length: 10, absent: 3 });
 * chain.nodes.length; // 10
 * ```
 */
export async function buildChain(
  validators: BenchValidators,
  options: BuildChainOptions,
): Promise<BenchChain> {
  const commandBytes = options.commandBytes ?? 32;
  const realFrom = options.realSignaturesFrom ?? 1;
  const app = counterApp();
  const state = new Map<string, Uint8Array | null>();
  const nodes: StoredNode[] = [];
  const qcs: QuorumCertificate[] = [];
  let parent = nodeHash(genesisNode(BENCH_CHAIN_ID));
  let justify = genesisQC(BENCH_CHAIN_ID);
  for (let k = 1; k <= options.length; k++) {
    const node: Node = {
      view: k,
      height: k,
      parent,
      justify,
      command: commandFor(k, commandBytes),
      configHash: validatorConfigHash(stableConfig(validators.set)),
      proposer: validators.set.leader(k).publicKey,
      stateRoot: new Uint8Array(0),
    };
    const hash = nodeHash(node);
    nodes.push({ node, hash, updates: await execute(app, state, node, hash) });
    justify = await quorumCertificate(validators, options.absent, k, hash, k >= realFrom);
    qcs.push(justify);
    parent = hash;
    if (k % 10_000 === 0) options.onProgress?.(k);
  }
  return { validators, nodes, qcs };
}

/**
 * The leader's signed PROPOSE of the Node after the chain's last one (view and height
 * `length + 1`, justified by the last QC), and its wire size.
 *
 * @example
 * ```ts
 * // const { message } = await nextProposal(chain);
 * ```
 */
export async function nextProposal(
  chain: BenchChain,
): Promise<{ message: ProposeMessage; bytes: Uint8Array }> {
  const last = chain.nodes[chain.nodes.length - 1]!;
  const view = last.node.view + 1;
  const leader = leaderIndex(chain.validators, view);
  const node: Node = {
    view,
    height: last.node.height + 1,
    parent: last.hash,
    justify: chain.qcs[chain.qcs.length - 1]!,
    command: commandFor(view, last.node.command.length),
    configHash: validatorConfigHash(stableConfig(chain.validators.set)),
    proposer: chain.validators.signers[leader]!.publicKey,
    stateRoot: new Uint8Array(0),
  };
  const signature = await chain.validators.signers[leader]!.sign(
    signedBytes(SignatureDomain.propose, BENCH_CHAIN_ID, view, nodeHash(node)),
  );
  const message: ProposeMessage = { type: "propose", node, tc: null, signature };
  return { message, bytes: encodeMessage(message) };
}

/** Index (in set order) of the leader of `view`. */
export function leaderIndex(validators: BenchValidators, view: number): number {
  const leader = validators.set.leader(view).publicKey;
  return validators.set.validators.findIndex((v) => bytesEqual(v.publicKey, leader));
}

/** A command the counter Application accepts (its first byte is the increment). */
function commandFor(k: number, bytes: number): Uint8Array {
  const command = new Uint8Array(Math.max(2, bytes));
  for (let i = 0; i < command.length; i++) command[i] = (k * 31 + i * 7) & 0xff;
  command[0] = 1 + (k % 7);
  return command;
}

/** The counter Application's updates for `node`, applied to `state` (the chain's tip state). */
async function execute(
  app: Application,
  state: Map<string, Uint8Array | null>,
  node: Node,
  hash: Uint8Array,
): Promise<[Uint8Array, Uint8Array | null][]> {
  const view = { get: (key: Uint8Array) => Promise.resolve(state.get(toHex(key)) ?? null) };
  const r = await app.validateNode({ node, hash, state: view });
  if (!r.ok) throw new Error(`counter app refused bench Node ${node.height}: ${r.reason}`);
  const updates = r.updates.map(([k, v]): [Uint8Array, Uint8Array | null] => [k, v]);
  for (const [k, v] of updates) state.set(toHex(k), v);
  return updates;
}

/** A QC of `view` over `hash` by every validator but `absent` (a quorum of 3 of 4 for n = 4). */
async function quorumCertificate(
  validators: BenchValidators,
  absent: number,
  view: number,
  hash: Uint8Array,
  real: boolean,
): Promise<QuorumCertificate> {
  const bytes = signedBytes(SignatureDomain.vote, BENCH_CHAIN_ID, view, hash);
  const quorum = validators.set.quorumPower;
  const signing = validators.signers.filter((_, i) => i !== absent).slice(0, quorum);
  const signatures = await Promise.all(signing.map(async (s) => ({
    signer: s.publicKey,
    signature: real ? await s.sign(bytes) : placeholderSignature(view),
  })));
  return { chainId: BENCH_CHAIN_ID, view, nodeHash: hash, signatures };
}

function placeholderSignature(view: number): Uint8Array {
  const sig = new Uint8Array(64);
  for (let i = 0; i < 64; i++) sig[i] = (view + i * 13) & 0xff;
  return sig;
}
