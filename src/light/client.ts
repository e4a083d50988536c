/**
 * A light client: follows a running cluster without running consensus, trusting only a validator
 * set. It asks replicas' NodeTree HTTP APIs for commit proofs (`GET /proof`), verifies each with
 * {@link verifyCommitProof}, and accepts a proof only when its first Node is the child of the last
 * Node it verified, so the Nodes it reports form one committed chain. A replica's answers are
 * hints until verified: a replica that answers badly is skipped for a while and another is asked.
 * See SPECIFICATION.md 15.2.
 *
 * @module
 */
import { stableConfig, type ValidatorConfig } from "../consensus/reconfig.ts";
import type { Hash, Node } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import {
  type CommitProofRejection,
  type CommitTrust,
  decodeCommitProof,
  trustedSetMoved,
  verifyCommitProof,
} from "./commit_proof.ts";
import { decodeKeyProof, type KeyProofVerdict, verifyKeyProof } from "./state_proof.ts";

/**
 * Options of {@link LightClient}.
 *
 * @example
 * ```ts
 * import { LightClient, type LightClientOptions } from "./client.ts";
 * import type { ValidatorSet } from "../validators.ts";
 * declare const validators: ValidatorSet;
 * const options: LightClientOptions = {
 *   chainId: "kv-1",
 *   validators,
 *   sources: ["http://127.0.0.1:9001", "http://127.0.0.1:9011"],
 *   requestTimeoutMs: 2_000,
 *   onRefusal: (r) => console.warn(`refused ${r.source}: ${r.reason}`),
 * };
 * const client = new LightClient(options);
 * ```
 */
export interface LightClientOptions extends CommitTrust {
  /** Base URLs of replicas' HTTP APIs, e.g. `http://127.0.0.1:9001`. */
  readonly sources: readonly string[];
  /** Most Nodes asked per proof (at most the replicas' `rangeMax` minus 2). Default 200. */
  readonly nodesPerProof?: number;
  /** Longest wait for one answer, ms. Default 5000. */
  readonly requestTimeoutMs?: number;
  /** Largest answer read, bytes. Default 40 MiB. */
  readonly responseBytesMax?: number;
  /** How long a source that failed is skipped, ms. Default 2000. */
  readonly backoffMs?: number;
  /** Called with every refused or failed answer (for logs). */
  readonly onRefusal?: (refusal: SourceRefusal) => void;
}

/**
 * Why an answer of a source was not used.
 *
 * @example
 * ```ts
 * import type { SourceRefusal } from "./client.ts";
 * const refusals: SourceRefusal[] = [];
 * const onRefusal = (r: SourceRefusal): void => {
 *   refusals.push(r);
 * };
 * ```
 */
export interface SourceRefusal {
  /** The source's base URL. */
  readonly source: string;
  /** A verification reason, or `unreachable`, `bad-answer`, `not-linked-to-verified`. */
  readonly reason:
    | CommitProofRejection
    | (KeyProofVerdict & { ok: false })["reason"]
    | "unreachable"
    | "bad-answer"
    | "not-linked-to-verified";
  /** What happened. */
  readonly detail: string;
}

/**
 * A state value proven by {@link LightClient.proveState}.
 *
 * @example
 * ```ts
 * import type { LightClient, ProvenValue } from "./client.ts";
 * import { kvStateKey } from "../../examples/kv_store/app.ts";
 * declare const client: LightClient;
 * const key = kvStateKey(new TextEncoder().encode("greeting"));
 * const proven: ProvenValue | null = await client.proveState("/kv/greeting?proof", key);
 * if (proven !== null) console.log(proven.height, proven.value ?? "absent");
 * ```
 */
export interface ProvenValue {
  /** The value, or null when the key is absent. */
  readonly value: Uint8Array | null;
  /** Height of the committed Node whose state holds it. */
  readonly height: number;
  /** That Node's hash. */
  readonly nodeHash: Hash;
}

/**
 * The newest verified commit.
 *
 * @example
 * ```ts
 * import type { LightClient, VerifiedHead } from "./client.ts";
 * declare const client: LightClient;
 * await client.step();
 * const head: VerifiedHead | null = client.head;
 * console.log(head?.height, head?.node.view);
 * ```
 */
export interface VerifiedHead {
  /** Its height. */
  readonly height: number;
  /** Its hash. */
  readonly hash: Hash;
  /** The Node. */
  readonly node: Node;
}

/**
 * Follows a cluster's committed chain from proofs, and the validator-set changes it makes.
 *
 * @example
 * ```ts
 * import { LightClient, ValidatorSet } from "../../mod.ts";
 * declare const validators: ValidatorSet;
 * const client = new LightClient({
 *   chainId: "kv-1",
 *   validators,
 *   sources: ["http://127.0.0.1:9001", "http://127.0.0.1:9011"],
 * });
 * const verified = await client.step(); // Nodes newly proven committed
 * console.log(verified.length, client.head?.height);
 * ```
 */
export class LightClient {
  readonly #o: LightClientOptions;
  readonly #skipUntil = new Map<string, number>();
  #next = 0;
  #head: VerifiedHead | null = null;
  #verifiedCount = 0;
  /** The validator configuration after the head (before it: the trusted one). */
  #config: ValidatorConfig;
  /** The trusted set did not certify the chain at a source's height: walk from height 1. */
  #fromGenesis = false;

  /**
   * A client that trusts `options.chainId` and `options.validators` only.
   *
   * @param options trust, sources and limits
   */
  constructor(options: LightClientOptions) {
    if (options.sources.length === 0) throw new RangeError("a light client needs a source");
    this.#o = options;
    this.#config = options.config ?? stableConfig(options.validators);
  }

  /**
   * The validator configuration after the verified head, learned from verified proofs (before
   * the first: the trusted one). Its set, or the set it hands over to, checks the next proof.
   */
  get config(): ValidatorConfig {
    return this.#config;
  }

  /** The newest verified commit, or null before the first. */
  get head(): VerifiedHead | null {
    return this.#head;
  }

  /** How many commits have been verified. */
  get verifiedCount(): number {
    return this.#verifiedCount;
  }

  /**
   * One round: asks a source for its committed height (a hint), then for a proof of the Nodes
   * after the verified head up to it, and verifies it. Before the first verified commit it starts
   * at the source's committed height. Resolves to the Nodes newly proven committed (empty when
   * nothing new is proven, or the source failed: the next round asks another).
   */
  async step(): Promise<VerifiedHead[]> {
    const source = this.#pickSource();
    try {
      // Spec 15.2 step 1: the source's committed height, a hint.
      const hint = await this.#committedHeight(source);
      const from = this.#head !== null
        ? this.#head.height + 1
        : this.#fromGenesis
        ? 1
        : Math.max(1, hint);
      if (hint < from) return [];
      // Spec 15.2 step 2: a proof of the heights after the verified head.
      const to = Math.min(hint, from + (this.#o.nodesPerProof ?? 200) - 1);
      const answer = await this.#get(source, `/proof?from=${from}&to=${to}`);
      if (answer.status === 404) return []; // not provable there yet
      if (answer.status !== 200) {
        return this.#refuse(source, "bad-answer", `/proof answered ${answer.status}`);
      }
      let proof;
      try {
        proof = decodeCommitProof(answer.body);
      } catch (e) {
        return this.#refuse(source, "bad-answer", (e as Error).message);
      }
      // Spec 15.2 step 3: verified against the configuration after the head, from `from`,
      // linked to the head.
      const verdict = await verifyCommitProof(proof, { ...this.#o, config: this.#config });
      if (!verdict.ok) {
        if (
          this.#head === null && !this.#fromGenesis && from > 1 && trustedSetMoved(verdict.reason)
        ) {
          // The set may have changed since the trusted one: follow the chain's changes from the
          // start instead (Spec 15.2 step 5). Not the source's fault, so it is not skipped.
          this.#fromGenesis = true;
          this.#o.onRefusal?.({ source, reason: verdict.reason, detail: verdict.detail });
          return [];
        }
        return this.#refuse(source, verdict.reason, verdict.detail);
      }
      const first = verdict.committed[0]!.node;
      if (first.height !== from) {
        return this.#refuse(source, "bad-answer", `proof starts at ${first.height}, not ${from}`);
      }
      if (this.#head !== null && !bytesEqual(first.parent, this.#head.hash)) {
        // Impossible below 1/3 Byzantine power: two conflicting commits were proven.
        return this.#refuse(
          source,
          "not-linked-to-verified",
          `the proven Node at height ${from} does not extend verified ${toHex(this.#head.hash)}`,
        );
      }
      const out = verdict.committed.map((c) => ({
        height: c.node.height,
        hash: c.hash,
        node: c.node,
      }));
      this.#head = out.at(-1)!;
      this.#config = verdict.config;
      this.#verifiedCount += out.length;
      return out;
    } catch (e) {
      return this.#refuse(source, "unreachable", (e as Error).message);
    }
  }

  /**
   * Asks a source for a key proof at `path` (e.g. `/kv/{key}?proof` of the key-value example) and
   * verifies it (`state_proof.ts`): the state root a committed Node carries, and the value of
   * `stateKey` in it. Resolves to the proven value (null: absent) and its height, or to null when
   * the source had none yet or failed (a failure is reported and the source skipped).
   */
  async proveState(path: string, stateKey: Uint8Array): Promise<ProvenValue | null> {
    const source = this.#pickSource();
    try {
      const answer = await this.#get(source, path);
      if (answer.status === 404) return null; // no provable checkpoint there yet
      if (answer.status !== 200) {
        this.#refuse(source, "bad-answer", `${path} answered ${answer.status}`);
        return null;
      }
      let proof;
      try {
        proof = decodeKeyProof(answer.body);
      } catch (e) {
        this.#refuse(source, "bad-answer", (e as Error).message);
        return null;
      }
      if (!bytesEqual(proof.key, stateKey)) {
        this.#refuse(source, "bad-answer", `a proof of key ${toHex(proof.key)}`);
        return null;
      }
      const verdict = await verifyKeyProof(proof, { ...this.#o, config: this.#config });
      if (!verdict.ok) {
        this.#refuse(source, verdict.reason, verdict.detail);
        return null;
      }
      return { value: verdict.value, height: verdict.height, nodeHash: verdict.nodeHash };
    } catch (e) {
      this.#refuse(source, "unreachable", (e as Error).message);
      return null;
    }
  }

  /** Round robin over the sources not being skipped (all of them when every one is). */
  #pickSource(): string {
    const now = Date.now();
    const sources = this.#o.sources;
    for (let i = 0; i < sources.length; i++) {
      const s = sources[(this.#next + i) % sources.length]!;
      if ((this.#skipUntil.get(s) ?? 0) <= now) {
        this.#next = (this.#next + i + 1) % sources.length;
        return s;
      }
    }
    this.#next = (this.#next + 1) % sources.length;
    return sources[this.#next]!;
  }

  /** Spec 15.2 step 4: a failed answer is reported and its source skipped for a while. */
  #refuse(source: string, reason: SourceRefusal["reason"], detail: string): VerifiedHead[] {
    this.#skipUntil.set(source, Date.now() + (this.#o.backoffMs ?? 2_000));
    this.#o.onRefusal?.({ source, reason, detail });
    return [];
  }

  /** The source's committed height from `/status`: a hint, never trusted. */
  async #committedHeight(source: string): Promise<number> {
    const answer = await this.#get(source, "/status");
    if (answer.status !== 200) throw new Error(`/status answered ${answer.status}`);
    const status = JSON.parse(new TextDecoder().decode(answer.body)) as {
      committed?: { height?: unknown };
    };
    const h = status?.committed?.height;
    if (typeof h !== "number" || !Number.isSafeInteger(h) || h < 0) {
      throw new Error("/status has no committed height");
    }
    return h;
  }

  /** GET with a deadline and a bounded body. */
  async #get(source: string, path: string): Promise<{ status: number; body: Uint8Array }> {
    const max = this.#o.responseBytesMax ?? 40 * 1024 * 1024;
    const response = await fetch(`${source}${path}`, {
      signal: AbortSignal.timeout(this.#o.requestTimeoutMs ?? 5_000),
    });
    const reader = response.body?.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (reader !== undefined) {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > max) {
          await reader.cancel();
          throw new Error(`answer to ${path} is larger than ${max} bytes`);
        }
        chunks.push(value);
      }
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      body.set(c, at);
      at += c.length;
    }
    return { status: response.status, body };
  }
}
