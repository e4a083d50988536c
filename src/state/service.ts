/**
 * The replica's state service: keeps the {@link StateTree} of committed state (and, through it,
 * the state roots of Nodes, SPECIFICATION.md 7), freezes it at every checkpoint height, and serves
 * key proofs, snapshot manifests and snapshot chunks of the kept checkpoints, each anchored on the
 * state root a committed Node carries. See SPECIFICATION.md 15.3 and 15.4.
 *
 * ## HTTP routes (added to the NodeTree HTTP API)
 *
 * | path | answer (`application/cbor`) |
 * |---|---|
 * | `GET /state/snapshot` | the newest provable snapshot's manifest: `[commitProof, [chunkHash, ...256]]` |
 * | `GET /state/chunk?height=H&index=I` | chunk `I` of the snapshot at `H`: `[[key, value], ...]` |
 *
 * `404 no-snapshot` when no kept checkpoint can be proven yet, or the height is not (or no longer)
 * kept.
 *
 * @module
 */
import { decodeValue, encodeValue, nodeHash } from "../codec.ts";
import { type ChainWithConfigs, readChainWithConfigs, RouteError } from "../net/http.ts";
import { buildCommitProof, type CommitProof, encodeCommitProof } from "../light/commit_proof.ts";
import type { KeyProof } from "../light/state_proof.ts";
import type { Hash, Node, QuorumCertificate } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import { encodeChunk } from "./chunk.ts";
import { StateRoots } from "./roots.ts";
import { SNAPSHOT_CHUNKS, StateTree, type StateVersion } from "./tree.ts";

/**
 * Options of {@link StateService}.
 *
 * @example
 * ```ts
 * import type { StateServiceOptions } from "./service.ts";
 * const options: StateServiceOptions = { checkpointInterval: 64 };
 * ```
 */
export interface StateServiceOptions {
  /** Checkpoint every this many heights. Default {@link STATE_CHECKPOINT_INTERVAL}. */
  readonly checkpointInterval?: number;
  /**
   * Called after each checkpoint with the lowest height a kept checkpoint's snapshot needs: the
   * oldest kept checkpoint minus `historyHeights` (retention prunes below it).
   */
  readonly onCheckpoint?: (keepFrom: number) => void;
  /** Committed Nodes below a snapshot that joiners fetch (see `sync.ts`). Default 1024. */
  readonly historyHeights?: number;
  /** Log sink. */
  readonly log?: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * Read access to the replica's chain, to build commit proofs that anchor checkpoints.
 *
 * @example
 * ```ts
 * import type { ChainAccess } from "./service.ts";
 * const none: ChainAccess = {
 *   chainFrom: () => Promise.resolve([]),
 *   certificateOf: () => Promise.resolve(null),
 * };
 * ```
 */
export interface ChainAccess {
  /** This replica's chain from a height (see `NodeTreeView.chainFrom`). */
  chainFrom(fromHeight: number, limit: number): Promise<Node[]>;
  /**
   * The same with each Node's configuration record (see `NodeTreeView.chainWithConfigs`;
   * optional): anchors then carry the validator configuration when it changed (15.1).
   */
  chainWithConfigs?(fromHeight: number, limit: number): Promise<ChainWithConfigs>;
  /** The QC this replica holds for a Node, or null. */
  certificateOf(hash: Hash): Promise<QuorumCertificate | null>;
}

/** Default checkpoint interval, heights. */
export const STATE_CHECKPOINT_INTERVAL = 64;
/** Checkpoints kept (their frozen versions serve proofs and snapshots). */
export const STATE_CHECKPOINTS_KEPT = 4;
/**
 * Older checkpoints also kept while a joiner fetches their chunks (one was asked for in the last
 * {@link STATE_SERVING_KEEP_MS}): at most this many, so a slow join is not cut off by new
 * checkpoints, and memory stays bounded (a kept version shares unchanged buckets with the tree).
 */
export const STATE_CHECKPOINTS_SERVING_MAX = 2;
/** How long after its last chunk request a checkpoint counts as being served, ms. */
export const STATE_SERVING_KEEP_MS = 30_000;
/** Chain Nodes read to build an anchoring commit proof (see `PROOF_LOOKAHEAD_NODES`, 15.1). */
const ANCHOR_NODES_READ = 64;

/**
 * A checkpoint: a committed height and the frozen state after it.
 *
 * @example
 * ```ts
 * import type { Checkpoint, StateService } from "./service.ts";
 * declare const state: StateService;
 * const cp: Checkpoint | null = state.checkpoint(64);
 * if (cp !== null) console.log(cp.height, cp.version.root, cp.version.size);
 * ```
 */
export interface Checkpoint {
  /** Height of the committed Node. */
  readonly height: number;
  /** Its hash. */
  readonly nodeHash: Hash;
  /** The state after it. */
  readonly version: StateVersion;
}

/**
 * A kept checkpoint with the commit proof that anchors its root (SPECIFICATION.md 15.3).
 *
 * @example
 * ```ts
 * import type { AnchoredCheckpoint, StateService } from "./service.ts";
 * import type { ChainAccess } from "./service.ts";
 * declare const state: StateService;
 * declare const chain: ChainAccess;
 * const a: AnchoredCheckpoint | null = await state.anchored(chain);
 * if (a !== null) console.log(a.checkpoint.height, a.commitProof.nodes.length);
 * ```
 */
export interface AnchoredCheckpoint {
  /** The checkpoint. */
  readonly checkpoint: Checkpoint;
  /** Proves its Node and the next committed; the next carries the checkpoint's root. */
  readonly commitProof: CommitProof;
}

/**
 * See the module docs.
 *
 * @example
 * ```ts
 * import { StateService } from "./service.ts";
 * import type { CommitNotice } from "../app.ts";
 * import type { Storage } from "../storage/storage.ts";
 * declare const storage: Storage;
 * const state = new StateService({ checkpointInterval: 64 });
 * await state.load(storage.stateEntries!());
 * const onCommit = (n: CommitNotice): void => state.onCommit(n); // from the Application's onCommit
 * ```
 */
export class StateService {
  readonly #o: StateServiceOptions;
  #tree = new StateTree();
  readonly #interval: number;
  readonly #checkpoints: Checkpoint[] = [];
  /** When each kept checkpoint last served a chunk (`Date.now()`). */
  readonly #servedAt = new WeakMap<Checkpoint, number>();
  #loaded = false;
  /** The state roots of uncommitted Nodes over the tree (the Application's `stateRoot` hook). */
  readonly roots: StateRoots = new StateRoots(() => this.#tree);

  /** A service with an empty tree; {@link StateService.load} fills it. */
  constructor(options: StateServiceOptions) {
    this.#o = options;
    this.#interval = options.checkpointInterval ?? STATE_CHECKPOINT_INTERVAL;
    if (!Number.isSafeInteger(this.#interval) || this.#interval < 1) {
      throw new RangeError(`checkpointInterval must be a positive integer: ${this.#interval}`);
    }
  }

  /** The checkpoint interval, heights. */
  get checkpointInterval(): number {
    return this.#interval;
  }

  /** The live tree (read only). */
  get tree(): StateTree {
    return this.#tree;
  }

  /** True once the tree holds the committed state (after {@link StateService.load}). */
  get loaded(): boolean {
    return this.#loaded;
  }

  /**
   * Builds the tree from the stored committed state. No checkpoint is taken at the stored head
   * itself: the store may hold part of the next Node's updates (SPECIFICATION.md 6.3), which the
   * tree absorbs once that Node is committed again.
   */
  async load(entries: AsyncIterable<readonly [Uint8Array, Uint8Array]>): Promise<void> {
    const batch: [Uint8Array, Uint8Array][] = [];
    for await (const [k, v] of entries) {
      batch.push([k, v]);
      if (batch.length >= 4096) this.#tree.apply(batch.splice(0));
    }
    this.#tree.apply(batch);
    this.#tree.root();
    this.#loaded = true;
  }

  /** Takes the tree of a verified snapshot install (`sync.ts`) as the committed state. */
  adopt(tree: StateTree): void {
    this.#tree = tree;
    this.roots.clear();
    this.#loaded = true;
  }

  /** A committed Node's updates, in height order (from the Application's `onCommit`). */
  onCommit(notice: {
    node: { height: number };
    hash: Hash;
    updates: readonly (readonly [Uint8Array, Uint8Array | null])[];
  }): void {
    if (!this.#loaded) return;
    this.#tree.apply(notice.updates);
    const height = notice.node.height;
    this.roots.committed(notice.hash, height);
    if (height % this.#interval !== 0) return;
    // The tree is hashed as Nodes are checked (their state roots, SPECIFICATION.md 7): freezing
    // rehashes only the last few commits.
    this.#checkpoint({ height, nodeHash: notice.hash, version: this.#tree.freeze() });
  }

  #checkpoint(cp: Checkpoint): void {
    this.#checkpoints.push(cp);
    this.#trim();
    const { height, version } = cp;
    this.#o.log?.("state:checkpoint", { height, root: toHex(version.root), keys: version.size });
    const oldest = this.#checkpoints[0]!.height;
    this.#o.onCheckpoint?.(Math.max(1, oldest - (this.#o.historyHeights ?? 1024)));
  }

  /**
   * Keeps the last {@link STATE_CHECKPOINTS_KEPT} checkpoints, and older ones still being served
   * (up to {@link STATE_CHECKPOINTS_SERVING_MAX} of them).
   */
  #trim(): void {
    const now = Date.now();
    const serving = (c: Checkpoint): boolean =>
      now - (this.#servedAt.get(c) ?? -Infinity) < STATE_SERVING_KEEP_MS;
    for (;;) {
      const older = this.#checkpoints.length - STATE_CHECKPOINTS_KEPT;
      if (older <= 0) return;
      const candidates = this.#checkpoints.slice(0, older);
      const idle = candidates.findIndex((c) => !serving(c));
      if (idle < 0 && older <= STATE_CHECKPOINTS_SERVING_MAX) return;
      const dropped = this.#checkpoints.splice(Math.max(0, idle), 1)[0]!;
      if (serving(dropped)) {
        this.#o.log?.("state:serving-dropped", { height: dropped.height });
      }
    }
  }

  /** The checkpoint at `height`, if kept. */
  checkpoint(height: number): Checkpoint | null {
    return this.#checkpoints.find((c) => c.height === height) ?? null;
  }

  /**
   * The newest kept checkpoint that can be proven now, with its anchor: a commit proof from its
   * height `H` to `H + 1` built from `chain`, whose Node at `H + 1` carries the checkpoint's root
   * (an older kept one when a newer is not provable yet); null when none is.
   */
  async anchored(chain: ChainAccess): Promise<AnchoredCheckpoint | null> {
    for (let i = this.#checkpoints.length - 1; i >= 0; i--) {
      const cp = this.#checkpoints[i]!;
      const h = cp.height;
      // The chain read may come back short while a commit moves the head: asked again.
      let commitProof = null;
      for (let attempt = 0; attempt < 3 && commitProof === null; attempt++) {
        const { nodes, configs } = await readChainWithConfigs(chain, h, ANCHOR_NODES_READ);
        commitProof = await buildCommitProof(
          nodes,
          h,
          h + 1,
          (x) => chain.certificateOf(x),
          configs,
        );
      }
      if (commitProof === null) continue;
      const [node, next] = commitProof.nodes;
      if (!bytesEqual(nodeHash(node!), cp.nodeHash)) continue;
      // Our tree and the chain must agree (a certified Node's root is the chain's state).
      if (!bytesEqual(next!.stateRoot, cp.version.root)) {
        this.#o.log?.("state:root-mismatch", {
          height: h,
          ours: toHex(cp.version.root),
          chain: toHex(next!.stateRoot),
        });
        continue;
      }
      return { checkpoint: cp, commitProof };
    }
    return null;
  }

  /** A proof of `key` in the newest provable checkpoint (see {@link StateService.anchored}). */
  async keyProof(key: Uint8Array, chain: ChainAccess): Promise<KeyProof | null> {
    const a = await this.anchored(chain);
    if (a === null) return null;
    const version = a.checkpoint.version;
    return { key, value: version.get(key), proof: version.prove(key), commitProof: a.commitProof };
  }

  /** The state routes, or null for another path. */
  async route(request: Request, url: URL, chain: ChainAccess): Promise<Response | null> {
    if (!url.pathname.startsWith("/state/")) return null;
    if (request.method !== "GET") {
      throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
    }
    switch (url.pathname) {
      case "/state/snapshot": {
        const a = await this.anchored(chain);
        if (a === null) throw new RouteError(404, "no-snapshot", "no provable checkpoint yet");
        const manifest = [encodeCommitProof(a.commitProof), a.checkpoint.version.chunkHashes()];
        return cbor(encodeValue(manifest));
      }
      case "/state/chunk": {
        const cp = this.checkpoint(intParam(url, "height"));
        const index = intParam(url, "index");
        if (cp === null) throw new RouteError(404, "no-snapshot", "no checkpoint at that height");
        if (index >= SNAPSHOT_CHUNKS) throw new RouteError(400, "bad-parameter", "bad index");
        this.#servedAt.set(cp, Date.now());
        return cbor(encodeChunk(cp.version.chunk(index)));
      }
    }
    throw new RouteError(404, "not-found", `no route ${url.pathname}`);
  }
}

/** Decodes a manifest answer; null when malformed. */
export function decodeManifest(
  bytes: Uint8Array,
): { commitProof: Uint8Array; chunkHashes: Hash[] } | null {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 2) return null;
  const [commitProof, hashes] = v as unknown[];
  if (!(commitProof instanceof Uint8Array)) return null;
  if (!Array.isArray(hashes) || hashes.length !== SNAPSHOT_CHUNKS) return null;
  if (!hashes.every((h) => h instanceof Uint8Array && h.length === 32)) return null;
  return { commitProof, chunkHashes: hashes as Hash[] };
}

function intParam(url: URL, name: string): number {
  const raw = url.searchParams.get(name);
  if (raw === null || !/^\d{1,15}$/.test(raw)) {
    throw new RouteError(400, "bad-parameter", `${name} must be a non-negative integer`);
  }
  return Number(raw);
}

function cbor(body: Uint8Array): Response {
  return new Response(body as Uint8Array<ArrayBuffer>, {
    headers: { "content-type": "application/cbor" },
  });
}
