/**
 * Snapshot state sync: a replica with an empty store, or one far behind its peers, joins from a
 * peer's snapshot of committed state instead of replaying every Node. See SPECIFICATION.md 15.4.
 *
 * 1. Ask every peer for its newest manifest (`GET /state/snapshot`): a commit proof and 256 chunk
 *    hashes.
 * 2. Keep the manifests whose commit proof verifies against the trusted set and proves the Nodes
 *    at `H` and `H + 1` committed, and whose chunk hashes fold to the state root the Node at
 *    `H + 1` carries (the state after `H`, `stateAnchor`); take the highest `H`.
 * 3. Fetch the 256 chunks (`GET /state/chunk`, 8 in flight), each checked against its hash in the
 *    manifest before it is used (`verifyChunk`: each value hashed once); a peer whose chunk fails
 *    is dropped and another is asked. Checked chunks enter the tree whole and are written packed
 *    by bucket (`DenoKvStorage.putSnapshotState`).
 * 4. Meanwhile fetch the history Nodes below `H` and write them (head at `H - 1`); once the whole
 *    state is written, write the snapshot's Node as the committed head (with a QC for it as the
 *    highest QC when the proof carries one; the safety state's votes and lock are left as stored).
 *
 * The install runs under a marker (`DenoKvStorage.beginSnapshot`): a replica that crashes
 * mid-install finds it at the next start, deletes what it wrote and starts over
 * ({@link recoverSnapshotInstall}). A store far behind (`aboveHeight`) is emptied but for its
 * safety state after the marker is set. The Engine starts only after the install is complete, so
 * the replica never votes on partial state.
 *
 * @module
 */
import { decodeNode, genesisQC, nodeHash } from "../codec.ts";
import type { Verifier } from "../crypto.ts";
import { decodeCommitProof, trustedSetMoved, verifyCommitProof } from "../light/commit_proof.ts";
import { LightClient } from "../light/client.ts";
import type { ValidatorConfig } from "../consensus/reconfig.ts";
import { readBodyLimited } from "../net/http.ts";
import type { SafetyState, Storage, StoredNode } from "../storage/storage.ts";
import type { DenoKvStorage, SnapshotBucket } from "../storage/deno_kv.ts";
import { type StateAnchor, stateAnchor } from "../light/state_proof.ts";
import type { Hash, Node } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";
import { decodeManifest } from "./service.ts";
import { decodeChunk } from "./chunk.ts";
import {
  BUCKETS_PER_CHUNK,
  type CheckedChunk,
  rootOfChunkHashes,
  SNAPSHOT_CHUNKS,
  StateTree,
  verifyChunk,
} from "./tree.ts";
import { decodeValue } from "../codec.ts";

/** What a store needs for a snapshot install (DenoKvStorage has it). */
export type SnapshotStore =
  & Storage
  & Pick<
    DenoKvStorage,
    | "snapshotMarker"
    | "beginSnapshot"
    | "putSnapshotState"
    | "clearSnapshot"
    | "installSnapshotChain"
    | "endSnapshot"
    | "dropForSnapshot"
  >;

/** True when `storage` can install snapshots. */
export function isSnapshotStore(storage: Storage): storage is SnapshotStore {
  const s = storage as Partial<SnapshotStore>;
  return typeof s.beginSnapshot === "function" && typeof s.putSnapshotState === "function" &&
    typeof s.snapshotMarker === "function" && typeof s.clearSnapshot === "function" &&
    typeof s.endSnapshot === "function" && typeof s.installSnapshotChain === "function" &&
    typeof s.dropForSnapshot === "function";
}

/** Options of {@link syncSnapshot}. */
export interface SnapshotSyncOptions {
  /** Chain id. */
  readonly chainId: string;
  /** The trusted validator set. */
  readonly validators: ValidatorSet;
  /**
   * The validator configuration to check anchors against (15.1); default: `validators`, stable.
   * When that set no longer certifies the snapshots, it is learned from commit proofs.
   */
  readonly config?: ValidatorConfig;
  /** Signature checks. Default Ed25519. */
  readonly verifier?: Verifier;
  /** Peers' HTTP API base URLs. */
  readonly peers: readonly string[];
  /** The store to install into: empty, unless `aboveHeight` is given. */
  readonly storage: SnapshotStore;
  /**
   * Install only a snapshot above this height (a replica far behind, SPECIFICATION.md 15.4): the
   * store may then hold committed Nodes, and all of it but the safety state is replaced. Without
   * it the store must be empty.
   */
  readonly aboveHeight?: number;
  /** Request headers for a peer request (admission). */
  readonly authorize?: (method: string, url: URL) => Promise<Record<string, string>>;
  /**
   * Largest chunk answer read, bytes. Default 16 MiB: memory while fetching is at most 8 chunks
   * (8 requests in flight).
   */
  readonly chunkBytesMax?: number;
  /**
   * Committed Nodes below the snapshot's fetched and stored, heights. Default 1024 (the
   * mempool's `commandHorizon`: the ids their batches consumed decide "already committed?").
   */
  readonly historyHeights?: number;
  /** Deadline of one request, ms. Default 10,000. */
  readonly requestTimeoutMs?: number;
  /** Log sink. */
  readonly log?: (event: string, fields: Record<string, unknown>) => void;
  /** Stops the sync. */
  readonly signal?: AbortSignal;
}

/** What a sync installed. */
export interface SnapshotSyncResult {
  /** Height of the snapshot's Node (the new committed head). */
  readonly height: number;
  /** Its hash. */
  readonly hash: Hash;
  /** Its state root. */
  readonly root: Hash;
  /** Keys installed. */
  readonly keys: number;
  /** The installed state's tree (for {@link StateService.adopt}). */
  readonly tree: StateTree;
  /** The committed Nodes installed, ascending: the history and the snapshot's Node last. */
  readonly chain: readonly StoredNode[];
  /** Peers dropped for bad answers, with the reason. */
  readonly dropped: readonly { readonly peer: string; readonly reason: string }[];
}

/**
 * A sync that found no usable snapshot or could not finish (the replica then replays), or, with
 * `aboveHeight`, found none far enough ahead (reason `"not-behind"`).
 */
export class SnapshotSyncError extends Error {
  /** The error's name. */
  override readonly name = "SnapshotSyncError";
  /**
   * `"not-behind"`: no snapshot above `aboveHeight`; `"set-moved"`: no verifiable snapshot, and
   * some were refused because the trusted validator set no longer certifies them (15.1);
   * `"failed"`: anything else.
   */
  readonly reason: "failed" | "not-behind" | "set-moved";

  /** An error with `message`, and `reason` (default `"failed"`). */
  constructor(message: string, reason: "failed" | "not-behind" | "set-moved" = "failed") {
    super(message);
    this.reason = reason;
  }
}

/**
 * At start: if a snapshot install was cut by a crash (its marker is set), finishes it when the
 * head already reached the snapshot's Node, or deletes the state it wrote otherwise.
 */
export async function recoverSnapshotInstall(storage: Storage): Promise<void> {
  if (!isSnapshotStore(storage)) return;
  const marker = await storage.snapshotMarker();
  if (marker === null) return;
  const head = await storage.committedHead();
  if (head !== null && head.height === marker) await storage.endSnapshot();
  else await storage.clearSnapshot();
}

/**
 * Installs the newest provable snapshot a peer offers (see the module docs).
 *
 * @throws {SnapshotSyncError} when no peer offers a verifiable snapshot or every peer failed
 * @example
 * ```ts
 * import { type SnapshotStore, syncSnapshot } from "./sync.ts";
 * import type { StateService } from "./service.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const validators: ValidatorSet;
 * declare const storage: SnapshotStore; // an empty store
 * declare const state: StateService;
 * const peers = ["http://127.0.0.1:9001"];
 * const r = await syncSnapshot({ chainId: "kv-1", validators, peers, storage });
 * state.adopt(r.tree);
 * ```
 */
export async function syncSnapshot(options: SnapshotSyncOptions): Promise<SnapshotSyncResult> {
  const dropped: { peer: string; reason: string }[] = [];
  const drop = (peer: string, reason: string): void => {
    dropped.push({ peer, reason });
    options.log?.("sync:peer-dropped", { peer, reason });
  };
  const head = await options.storage.committedHead();
  const above = options.aboveHeight;
  if (head !== null && above === undefined) {
    throw new SnapshotSyncError(
      "the store is not empty: a snapshot installs only into an empty one",
    );
  }
  // Spec 15.4 steps 1-2.
  let manifest: Manifest;
  try {
    manifest = await bestManifest(options, drop);
  } catch (e) {
    const moved = e instanceof SnapshotSyncError && e.reason === "set-moved";
    if (!moved || options.config !== undefined) throw e;
    // The trusted set no longer certifies the snapshots: learn the configuration the chain has
    // now from commit proofs, as a light client does (15.2 step 5), and check them against it.
    const config = await followConfiguration(options);
    if (config === null) throw e;
    options.log?.("sync:followed-validators", {
      validators: (config.next ?? config.set).validators.length,
    });
    dropped.length = 0; // the peers refused for the set alone are asked again
    manifest = await bestManifest({ ...options, config }, drop);
  }
  const anchor = manifest.anchor;
  if (above !== undefined && anchor.height <= above) {
    throw new SnapshotSyncError(
      `the newest snapshot (${anchor.height}) is not above ${above}`,
      "not-behind",
    );
  }
  options.log?.("sync:manifest", { height: anchor.height, root: toHex(anchor.root) });
  // Chunks are checked one by one, so any peer that keeps this checkpoint may serve them: those
  // that offered it first, then the others.
  const others = options.peers.filter((p) => !manifest.peers.includes(p));
  const good = [...manifest.peers, ...others].filter((p) => !dropped.some((d) => d.peer === p));
  options.log?.("sync:proven", { height: anchor.height });
  // Spec 15.4 steps 3 and 4 ("Far behind": the old state and Nodes go first, under the marker).
  const tree = new StateTree();
  await options.storage.beginSnapshot(anchor.height);
  if (head !== null) {
    await options.storage.dropForSnapshot();
    options.log?.("sync:replacing", { head: head.height, height: anchor.height });
  }
  const chain = await installUnderMarker(options, tree, manifest, good, drop);
  await options.storage.endSnapshot();
  // The highest QC is raised last: a crash before it leaves a complete store without it.
  const safety = await options.storage.loadSafety();
  const genesis = genesisQC(options.chainId);
  const highQC = anchor.qc !== null && (safety === null || safety.highQC.view < anchor.qc.view)
    ? anchor.qc
    : safety?.highQC ?? genesis;
  const next: SafetyState = {
    currentView: safety?.currentView ?? 0,
    lastVotedView: safety?.lastVotedView ?? 0,
    lockedQC: safety?.lockedQC ?? genesis,
    highQC,
    highTC: safety?.highTC ?? null,
  };
  await options.storage.write({ safety: next });
  options.log?.("sync:done", { height: anchor.height, keys: tree.size });
  return {
    height: anchor.height,
    hash: anchor.nodeHash,
    root: anchor.root,
    keys: tree.size,
    tree,
    chain,
    dropped,
  };
}

/**
 * Spec 15.4 steps 3 and 4 under the install marker: the chunks into `tree` and the store, and the
 * history Nodes, fetched and written while the chunks are (the head then stands at `H - 1`, below
 * the marker's height, so a crash still undoes the install), then the proven Node, which moves the
 * head to `H` once the whole state is written. Any failure clears what was written.
 */
async function installUnderMarker(
  o: SnapshotSyncOptions,
  tree: StateTree,
  manifest: Manifest,
  peers: string[],
  drop: (peer: string, reason: string) => void,
): Promise<StoredNode[]> {
  const stored = (node: Node): StoredNode => ({ node, hash: nodeHash(node), updates: [] });
  const { node: top, height, root } = manifest.anchor;
  // Spec 15.4 step 4: the history only needs the proven Node to be checked, so it is fetched and
  // written at once, while the chunks are (step 3).
  const history = fetchHistory(o, top, [...peers], drop).then(async (nodes) => {
    const chain = nodes.map(stored);
    if (chain.length > 0) await o.storage.installSnapshotChain(chain);
    return chain;
  });
  history.catch(() => {});
  try {
    const timing = await fetchChunks(o, tree, manifest.chunkHashes, height, peers, drop);
    // Where the chunk phase's time went (ms): waiting for answers, checking, writing, the tree.
    const ms = Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, Math.round(v)]));
    o.log?.("sync:chunks", { keys: tree.size, ms });
    // Each chunk matched its hash and the hashes fold to the root: so does the whole.
    if (!bytesEqual(tree.root(), root)) {
      throw new SnapshotSyncError("the installed state does not hash to the anchored root");
    }
    const chain = await history;
    o.log?.("sync:history", { nodes: chain.length });
    // The Nodes below are committed Nodes of the store now: the proven one extends them.
    const last = stored(top);
    if (chain.length === 0) await o.storage.installSnapshotChain([last]);
    else await o.storage.write({ commits: [last] });
    return [...chain, last];
  } catch (e) {
    await history.catch(() => {});
    await o.storage.clearSnapshot();
    throw e;
  }
}

interface Manifest {
  /** The proven committed Node and the root of the state after it. */
  readonly anchor: StateAnchor;
  readonly chunkHashes: Hash[];
  /** Peers that offered this anchor. */
  readonly peers: string[];
}

async function bestManifest(
  o: SnapshotSyncOptions,
  drop: (peer: string, reason: string) => void,
): Promise<Manifest> {
  const found: { peer: string; anchor: StateAnchor; chunkHashes: Hash[] }[] = [];
  let moved = 0;
  // A replica with a store asks at every start: a peer that does not answer soon is skipped.
  const timeoutMs = o.aboveHeight === undefined ? undefined : MANIFEST_TIMEOUT_BEHIND_MS;
  await Promise.all(o.peers.map(async (peer) => {
    // Spec 15.4 step 1.
    const r = await get(o, peer, "/state/snapshot", MANIFEST_BYTES_MAX, timeoutMs);
    if (r === null || r.status !== 200) return;
    const m = decodeManifest(r.body);
    if (m === null) return drop(peer, "malformed manifest");
    // Spec 15.4 step 2.
    const anchor = await anchorOf(o, m.commitProof);
    if ("refusal" in anchor) {
      if (anchor.setMoved) moved++;
      return drop(peer, `bad anchor: ${anchor.refusal}`);
    }
    const root = rootOfChunkHashes(m.chunkHashes);
    if (root === null || !bytesEqual(root, anchor.root)) {
      return drop(peer, "chunk hashes do not fold to the anchored root");
    }
    found.push({ peer, anchor, chunkHashes: m.chunkHashes });
  }));
  if (found.length === 0) {
    throw new SnapshotSyncError(
      "no peer offers a verifiable snapshot",
      moved > 0 ? "set-moved" : "failed",
    );
  }
  found.sort((a, b) => b.anchor.height - a.anchor.height);
  const best = found[0]!;
  // Two committed Nodes at one height cannot both be: only the same anchor is joined.
  const peers = found.filter((f) =>
    f.anchor.height === best.anchor.height && bytesEqual(f.anchor.root, best.anchor.root) &&
    bytesEqual(f.anchor.nodeHash, best.anchor.nodeHash)
  ).map((f) => f.peer);
  return { anchor: best.anchor, chunkHashes: best.chunkHashes, peers };
}

/** Most time spent learning the chain's validator configuration from commit proofs, ms. */
const FOLLOW_CONFIGURATION_MS = 120_000;

/**
 * The validator configuration after the newest commit the peers can prove, learned from the
 * trusted set by following every change from height 1 (`LightClient`, 15.2); null when nothing
 * could be verified.
 */
async function followConfiguration(o: SnapshotSyncOptions): Promise<ValidatorConfig | null> {
  const client = new LightClient({
    chainId: o.chainId,
    validators: o.validators,
    verifier: o.verifier,
    sources: o.peers,
    backoffMs: 200,
    onRefusal: (r) =>
      o.log?.("sync:follow-refused", { peer: r.source, reason: r.reason, detail: r.detail }),
  });
  const deadline = Date.now() + FOLLOW_CONFIGURATION_MS;
  let idle = 0;
  while (idle < 5 && Date.now() < deadline && o.signal?.aborted !== true) {
    const verified = await client.step();
    idle = verified.length === 0 ? idle + 1 : 0;
    if (idle > 0) await new Promise((r) => setTimeout(r, 100));
  }
  return client.head === null ? null : client.config;
}

/** Largest manifest answer read, bytes (a commit proof of a few Nodes and 256 hashes). */
const MANIFEST_BYTES_MAX = 40 << 20;

/**
 * The state anchor of a manifest's commit proof, or why it has none (`setMoved`: the trusted set
 * no longer certifies it).
 */
async function anchorOf(
  o: SnapshotSyncOptions,
  bytes: Uint8Array,
): Promise<StateAnchor | { refusal: string; setMoved: boolean }> {
  let proof;
  try {
    proof = decodeCommitProof(bytes);
  } catch {
    return { refusal: "malformed commit proof", setMoved: false };
  }
  const verdict = await verifyCommitProof(proof, o);
  if (!verdict.ok) {
    return {
      refusal: `commit proof refused: ${verdict.reason}`,
      setMoved: trustedSetMoved(verdict.reason),
    };
  }
  const anchor = stateAnchor(verdict);
  return typeof anchor === "string" ? { refusal: anchor, setMoved: false } : anchor;
}

/** Deadline of a manifest request when the store is not empty (`aboveHeight`), ms. */
const MANIFEST_TIMEOUT_BEHIND_MS = 2_000;
/** Chunk requests in flight at once (memory while fetching: this many chunks). */
const CHUNKS_IN_FLIGHT = 8;
/**
 * Checked chunks held before they are written: 32 chunks are 512 buckets, about one Deno KV
 * operation of packed state (`DenoKvStorage.putSnapshotState`) while buckets are small.
 */
const WRITE_CHUNKS_MIN = 32;
/** ... or this many bytes of keys and values. */
const WRITE_BYTES_MIN = 512 << 10;
/** State writes in flight at once. */
const WRITES_IN_FLIGHT = 3;

async function fetchChunks(
  o: SnapshotSyncOptions,
  tree: StateTree,
  hashes: readonly Hash[],
  height: number,
  peers: string[],
  drop: (peer: string, reason: string) => void,
): Promise<Record<string, number>> {
  const max = o.chunkBytesMax ?? 16 << 20;
  let next = 0;
  const ms = { wait: 0, check: 0, write: 0, adopt: 0 };
  const writer = new EntryWriter(o.storage, ms);
  const fetchOne = async (c: number): Promise<CheckedChunk> => {
    for (let attempts = 1;; attempts++) {
      if (o.signal?.aborted) throw new SnapshotSyncError("aborted");
      if (peers.length === 0) throw new SnapshotSyncError("every peer failed to serve chunks");
      if (attempts > 4 * peers.length + 4) {
        throw new SnapshotSyncError(`chunk ${c}: no peer answered`);
      }
      const peer = peers[next++ % peers.length]!;
      const r = await get(o, peer, `/state/chunk?height=${height}&index=${c}`, max);
      if (r === null || r.status !== 200) continue; // unreachable, or no longer kept there
      const t = performance.now();
      const got = decodeChunk(r.body);
      const verdict = got === null
        ? { ok: false, reason: "malformed chunk" } as const
        : verifyChunk(c, got, hashes[c]!);
      ms.check += performance.now() - t;
      if (verdict.ok) return verdict.chunk;
      drop(peer, `chunk ${c}: ${verdict.reason}`);
      if (peers.includes(peer)) peers.splice(peers.indexOf(peer), 1);
    }
  };
  // A window of requests, each answer checked as it arrives; chunks enter the tree and the
  // store in order, each only after it matched its hash.
  const inFlight: Promise<CheckedChunk>[] = [];
  for (let c = 0; c < Math.min(CHUNKS_IN_FLIGHT, SNAPSHOT_CHUNKS); c++) inFlight.push(fetchOne(c));
  // Failures surface in order; the ones behind the first are not left unhandled.
  for (const p of inFlight) p.catch(() => {});
  try {
    for (let c = 0; c < SNAPSHOT_CHUNKS; c++) {
      let t = performance.now();
      const chunk = await inFlight.shift()!;
      ms.wait += performance.now() - t;
      const ahead = c + CHUNKS_IN_FLIGHT;
      if (ahead < SNAPSHOT_CHUNKS) {
        const p = fetchOne(ahead);
        p.catch(() => {});
        inFlight.push(p);
      }
      t = performance.now();
      tree.adoptChunk(chunk);
      ms.adopt += performance.now() - t;
      await writer.add(chunk);
    }
    await writer.flush();
  } finally {
    await writer.settle();
  }
  return ms;
}

/**
 * Writes checked chunks, whole chunks at a time, at least {@link WRITE_CHUNKS_MIN} chunks (or
 * {@link WRITE_BYTES_MIN} bytes) a call, with up to {@link WRITES_IN_FLIGHT} calls in flight
 * (distinct buckets: their order does not matter before the head moves). Memory: the entries
 * held and in flight (views into answers the tree keeps anyway).
 */
class EntryWriter {
  readonly #storage: SnapshotStore;
  readonly #ms: { write: number };
  #held: SnapshotBucket[] = [];
  #heldChunks = 0;
  #heldBytes = 0;
  readonly #writes: Promise<void>[] = [];

  constructor(storage: SnapshotStore, ms: { write: number }) {
    this.#storage = storage;
    this.#ms = ms;
  }

  /** Holds a chunk's entries; writes what is held once it is enough (waiting for a slot). */
  async add(chunk: CheckedChunk): Promise<void> {
    const first = chunk.index * BUCKETS_PER_CHUNK;
    for (let i = 0; i < BUCKETS_PER_CHUNK; i++) {
      const entries = chunk.entries.slice(chunk.bucketStarts[i], chunk.bucketStarts[i + 1]);
      if (entries.length > 0) this.#held.push({ bucket: first + i, entries });
    }
    for (const e of chunk.entries) this.#heldBytes += e.key.length + e.value.length;
    this.#heldChunks++;
    if (this.#heldChunks < WRITE_CHUNKS_MIN && this.#heldBytes < WRITE_BYTES_MIN) return;
    if (this.#writes.length >= WRITES_IN_FLIGHT) {
      const t = performance.now();
      await this.#writes.shift();
      this.#ms.write += performance.now() - t;
    }
    this.#start();
  }

  /** Writes what is held and waits for every write. */
  async flush(): Promise<void> {
    if (this.#held.length > 0) this.#start();
    const t = performance.now();
    while (this.#writes.length > 0) await this.#writes.shift();
    this.#ms.write += performance.now() - t;
  }

  /** Waits for the writes in flight, failed or not (before the store is cleared). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#writes.splice(0));
  }

  #start(): void {
    const w = this.#storage.putSnapshotState(this.#held);
    w.catch(() => {});
    this.#writes.push(w);
    this.#held = [];
    this.#heldChunks = 0;
    this.#heldBytes = 0;
  }
}

/**
 * The committed Nodes of the `historyHeights` heights below `top`, ascending, each the parent of
 * the next and the last the parent of `top`; fewer when no peer has them (the chain is then only
 * `top`, and the pool knows fewer recent ids: logged).
 */
async function fetchHistory(
  o: SnapshotSyncOptions,
  top: Node,
  peers: readonly string[],
  drop: (peer: string, reason: string) => void,
): Promise<Node[]> {
  const from = Math.max(1, top.height - (o.historyHeights ?? 1024));
  if (from >= top.height) return [];
  for (const peer of peers) {
    const nodes: Node[] = [];
    let ok = true;
    while (ok && from + nodes.length < top.height) {
      const at = from + nodes.length;
      const limit = Math.min(256, top.height - at);
      const r = await get(o, peer, `/chain?from=${at}&limit=${limit}`, 64 << 20);
      const page = r === null || r.status !== 200 ? null : decodeNodes(r.body);
      if (page === null || page.length === 0) ok = false;
      else nodes.push(...page.slice(0, limit));
    }
    if (!ok) continue;
    // Linked backwards from the proven Node: each hash is the next one's parent.
    let child = top;
    for (let i = nodes.length - 1; i >= 0 && ok; i--) {
      const n = nodes[i]!;
      ok = n.height === child.height - 1 && bytesEqual(nodeHash(n), child.parent);
      child = n;
    }
    if (ok) return nodes;
    drop(peer, "history Nodes not linked to the proven Node");
  }
  o.log?.("sync:no-history", { from, to: top.height - 1 });
  return [];
}

function decodeNodes(body: Uint8Array): Node[] | null {
  return decodeList(body, (b) => {
    if (!(b instanceof Uint8Array)) return null;
    const r = decodeNode(b);
    return r.ok ? r.value : null;
  });
}

/** A CBOR array whose every item `item` reads; null when it is not one or an item is bad. */
function decodeList<T>(body: Uint8Array, item: (v: unknown) => T | null): T[] | null {
  let v: unknown;
  try {
    v = decodeValue(body);
  } catch {
    return null;
  }
  if (!Array.isArray(v)) return null;
  const out: T[] = [];
  for (const x of v) {
    const r = item(x);
    if (r === null) return null;
    out.push(r);
  }
  return out;
}

async function get(
  o: SnapshotSyncOptions,
  base: string,
  path: string,
  max: number,
  timeoutMs: number = o.requestTimeoutMs ?? 10_000,
): Promise<{ status: number; body: Uint8Array } | null> {
  const url = new URL(path, base);
  try {
    const headers = await o.authorize?.("GET", url) ?? {};
    const signal = AbortSignal.timeout(timeoutMs);
    const r = await fetch(url, {
      headers,
      signal: o.signal === undefined ? signal : AbortSignal.any([signal, o.signal]),
    });
    if (r.status !== 200) {
      await r.body?.cancel();
      return { status: r.status, body: new Uint8Array() };
    }
    return { status: 200, body: await readBodyLimited(r, max) };
  } catch {
    return null;
  }
}
