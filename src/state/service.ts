/**
 * The replica's state service: keeps the {@link StateTree} of committed state, signs the state
 * root at every checkpoint height, gathers the other validators' signatures into a
 * {@link StateCertificate}, and serves attestations, snapshot manifests and snapshot chunks. See
 * SPECIFICATION.md 15.3 and 15.4.
 *
 * ## HTTP routes (added to the NodeTree HTTP API)
 *
 * | path | answer (`application/cbor`) |
 * |---|---|
 * | `GET /state/attestation?height=H` | this validator's signed root at checkpoint `H`: `[height, nodeHash, root, signer, signature]` |
 * | `GET /state/snapshot` | the newest certified snapshot's manifest: `[certificate, [chunkHash, ...256]]` |
 * | `GET /state/chunk?height=H&index=I` | chunk `I` of the snapshot at `H`: `[[key, value], ...]` |
 *
 * `404 no-snapshot` when the height is not (or no longer) kept.
 *
 * @module
 */
import { decodeValue, encodeValue } from "../codec.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { ed25519Verifier } from "../crypto.ts";
import { readBodyLimited, RouteError } from "../net/http.ts";
import { buildCommitProof } from "../light/commit_proof.ts";
import type { KeyProof } from "../light/state_proof.ts";
import type { Hash, Node, PublicKey, QuorumCertificate, SignerSignature } from "../types.ts";
import { bytesCompare, bytesEqual, toHex } from "../types.ts";
import type { ValidatorSet } from "../validators.ts";
import {
  certificateToValue,
  decodeAttestation,
  encodeAttestation,
  signStateRoot,
  type StateCertificate,
  type StateRootClaim,
  stateRootSignedBytes,
} from "./certificate.ts";
import { encodeChunk } from "./chunk.ts";
import { SNAPSHOT_CHUNKS, StateTree, type StateVersion } from "./tree.ts";

/**
 * Options of {@link StateService}.
 *
 * @example
 * ```ts
 * import type { StateServiceOptions } from "./service.ts";
 * import type { Signer } from "../crypto.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const validators: ValidatorSet;
 * declare const signer: Signer;
 * const options: StateServiceOptions = {
 *   chainId: "kv-1",
 *   validators,
 *   signer,
 *   peers: [], // { publicKey, url } of each other validator
 *   checkpointInterval: 64,
 * };
 * ```
 */
export interface StateServiceOptions {
  /** Chain id. */
  readonly chainId: string;
  /** The validator set. */
  readonly validators: ValidatorSet;
  /** This validator's key. */
  readonly signer: Signer;
  /** Signature checks of peers' attestations. Default Ed25519. */
  readonly verifier?: Verifier;
  /** The other validators' HTTP APIs. */
  readonly peers: readonly { readonly publicKey: PublicKey; readonly url: string }[];
  /** Signs a request to a peer (the admission header); null sends it unsigned. */
  readonly authorize?: (method: string, url: URL) => Promise<Record<string, string>>;
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
/** How long peers are asked for their attestation of a checkpoint, ms. */
const COLLECT_FOR_MS = 20_000;
/** Pause between rounds of asking, ms. */
const COLLECT_PAUSE_MS = 150;
/** Deadline of one attestation request, ms. */
const ATTESTATION_TIMEOUT_MS = 2_000;

/**
 * A checkpoint: the claim, the frozen state, and the signatures gathered so far.
 *
 * @example
 * ```ts
 * import type { Checkpoint, StateService } from "./service.ts";
 * declare const state: StateService;
 * const cp: Checkpoint | null = state.checkpoint(64);
 * if (cp !== null) console.log(cp.claim.root, cp.signatures.size, cp.version.size);
 * ```
 */
export interface Checkpoint {
  /** The signed claim. */
  readonly claim: StateRootClaim;
  /** The state at its height. */
  readonly version: StateVersion;
  /** Signatures by signer (hex), this validator's first. */
  readonly signatures: Map<string, SignerSignature>;
  /** This validator's own signature. */
  readonly own: SignerSignature;
}

/**
 * See the module docs.
 *
 * @example
 * ```ts
 * import { StateService } from "./service.ts";
 * import type { CommitNotice } from "../app.ts";
 * import type { Signer } from "../crypto.ts";
 * import type { Storage } from "../storage/storage.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const validators: ValidatorSet;
 * declare const signer: Signer; // this validator's key
 * declare const storage: Storage;
 * const state = new StateService({ chainId: "kv-1", validators, signer, peers: [] });
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
  readonly #abort = new AbortController();
  #loaded = false;
  #checkpointing: Promise<void> = Promise.resolve();

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
   * Builds the tree from the stored committed state. No checkpoint is signed for the stored head
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
    if (height % this.#interval !== 0) return;
    // The state is taken now and hashed in slices in the background: the Engine awaits this
    // hook, and a checkpoint may hash thousands of buckets. Checkpoints resolve in order.
    const version = this.#tree.freezeAsync();
    this.#checkpointing = this.#checkpointing.then(() =>
      this.#checkpoint(height, notice.hash, version)
    )
      .catch((e) => this.#o.log?.("state:checkpoint-failed", { height, reason: String(e) }));
  }

  /** Waits until every checkpoint asked for so far is signed and kept (for tests). */
  async settled(): Promise<void> {
    await this.#checkpointing;
  }

  async #checkpoint(height: number, nodeHash: Hash, pending: Promise<StateVersion>): Promise<void> {
    const version = await pending;
    const claim: StateRootClaim = { height, nodeHash, root: version.root };
    const own = await signStateRoot(this.#o.chainId, claim, this.#o.signer);
    const signatures = new Map([[toHex(own.signer), own]]);
    const cp: Checkpoint = { claim, version, signatures, own };
    this.#checkpoints.push(cp);
    this.#trim();
    this.#o.log?.("state:checkpoint", { height, root: toHex(claim.root), keys: version.size });
    const oldest = this.#checkpoints[0]!.claim.height;
    this.#o.onCheckpoint?.(Math.max(1, oldest - (this.#o.historyHeights ?? 1024)));
    void this.#collect(cp);
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
        this.#o.log?.("state:serving-dropped", { height: dropped.claim.height });
      }
    }
  }

  /** The checkpoint at `height`, if kept. */
  checkpoint(height: number): Checkpoint | null {
    return this.#checkpoints.find((c) => c.claim.height === height) ?? null;
  }

  /** The newest kept checkpoint whose signatures are a quorum, with its certificate. */
  certified(): { checkpoint: Checkpoint; certificate: StateCertificate } | null {
    return this.#certifiedAll()[0] ?? null;
  }

  /** Every kept checkpoint whose signatures are a quorum, newest first. */
  #certifiedAll(): { checkpoint: Checkpoint; certificate: StateCertificate }[] {
    const out = [];
    for (let i = this.#checkpoints.length - 1; i >= 0; i--) {
      const cp = this.#checkpoints[i]!;
      const signatures = [...cp.signatures.values()].sort((a, b) =>
        bytesCompare(a.signer, b.signer)
      );
      if (this.#o.validators.countQuorum(signatures).ok) {
        out.push({ checkpoint: cp, certificate: { ...cp.claim, signatures } });
      }
    }
    return out;
  }

  /**
   * A proof of `key` in the newest certified checkpoint that can be proven committed now (an
   * older kept one otherwise), with the commit proof of its Node built
   * from `chain` (this replica's chain from a height, see `NodeTreeView.chainFrom`); null when no
   * checkpoint is certified or provable yet.
   */
  async keyProof(
    key: Uint8Array,
    chain: (fromHeight: number, limit: number) => Promise<Node[]>,
    certificateOf: (hash: Hash) => Promise<QuorumCertificate | null>,
  ): Promise<KeyProof | null> {
    // The newest certified checkpoint whose commit proof can be built now (the chain read may
    // come back short while a commit moves the head: an older one is proven instead).
    for (const c of this.#certifiedAll()) {
      const h = c.certificate.height;
      let commitProof = null;
      for (let attempt = 0; attempt < 3 && commitProof === null; attempt++) {
        commitProof = await buildCommitProof(await chain(h, 64), h, h, certificateOf);
      }
      if (commitProof === null) continue;
      const version = c.checkpoint.version;
      return {
        key,
        value: version.get(key),
        certificate: c.certificate,
        proof: version.prove(key),
        commitProof,
      };
    }
    return null;
  }

  /** Stops asking peers. */
  close(): void {
    this.#abort.abort();
  }

  /** The state routes, or null for another path. */
  route(request: Request, url: URL): Response | null {
    if (!url.pathname.startsWith("/state/")) return null;
    if (request.method !== "GET") {
      throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
    }
    switch (url.pathname) {
      case "/state/attestation": {
        const cp = this.checkpoint(intParam(url, "height"));
        if (cp === null) throw new RouteError(404, "no-snapshot", "no checkpoint at that height");
        return cbor(encodeAttestation(cp.claim, cp.own));
      }
      case "/state/snapshot": {
        const c = this.certified();
        if (c === null) throw new RouteError(404, "no-snapshot", "no certified checkpoint yet");
        const manifest = [certificateToValue(c.certificate), c.checkpoint.version.chunkHashes()];
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

  /** Asks every peer for its signature of `cp` until a quorum or every peer answered. */
  async #collect(cp: Checkpoint): Promise<void> {
    const deadline = Date.now() + COLLECT_FOR_MS;
    const verifier = this.#o.verifier ?? ed25519Verifier();
    const bytes = stateRootSignedBytes(this.#o.chainId, cp.claim);
    const signal = this.#abort.signal;
    while (Date.now() < deadline && !signal.aborted) {
      const missing = this.#o.peers.filter((p) => !cp.signatures.has(toHex(p.publicKey)));
      if (missing.length === 0) return;
      await Promise.all(missing.map(async (p) => {
        const got = await this.#ask(p.url, cp.claim.height, signal);
        if (got === null || !bytesEqual(got.signature.signer, p.publicKey)) return;
        const c = got.claim;
        if (c.height !== cp.claim.height || !bytesEqual(c.nodeHash, cp.claim.nodeHash)) return;
        if (!bytesEqual(c.root, cp.claim.root)) {
          this.#o.log?.("state:root-mismatch", {
            height: c.height,
            peer: toHex(p.publicKey),
            ours: toHex(cp.claim.root),
            theirs: toHex(c.root),
          });
          return;
        }
        if (!await verifier.verify(p.publicKey, bytes, got.signature.signature)) return;
        cp.signatures.set(toHex(p.publicKey), got.signature);
      }));
      if (this.#checkpoints.indexOf(cp) < 0) return;
      await new Promise((r) => setTimeout(r, COLLECT_PAUSE_MS));
    }
  }

  async #ask(
    base: string,
    height: number,
    signal: AbortSignal,
  ): Promise<ReturnType<typeof decodeAttestation>> {
    const url = new URL(`/state/attestation?height=${height}`, base);
    try {
      const headers = await this.#o.authorize?.("GET", url) ?? {};
      const r = await fetch(url, {
        headers,
        signal: AbortSignal.any([signal, AbortSignal.timeout(ATTESTATION_TIMEOUT_MS)]),
      });
      if (!r.ok) {
        await r.body?.cancel();
        return null;
      }
      return decodeAttestation(await readBodyLimited(r, 1024));
    } catch {
      return null;
    }
  }
}

/** Decodes a manifest answer; null when malformed. */
export function decodeManifest(
  bytes: Uint8Array,
): { certificate: unknown; chunkHashes: Hash[] } | null {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 2) return null;
  const [certificate, hashes] = v as unknown[];
  if (!Array.isArray(hashes) || hashes.length !== SNAPSHOT_CHUNKS) return null;
  if (!hashes.every((h) => h instanceof Uint8Array && h.length === 32)) return null;
  return { certificate, chunkHashes: hashes as Hash[] };
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
