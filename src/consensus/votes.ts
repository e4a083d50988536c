/**
 * Collecting signed VOTEs into QCs and NEW-VIEWs into TCs, with equivocation detection.
 * See SPECIFICATION.md section 9. Messages reaching here have valid signatures (checked by the
 * shell); this module counts power and keeps memory bounded.
 *
 * @module
 */
import type { NewViewMessage, QuorumCertificate, SignerSignature, VoteMessage } from "../types.ts";
import { bytesCompare, toHex } from "../types.ts";
import type { TimeoutCertificate } from "../types.ts";
import type { EquivocationEvidence } from "../events.ts";
import type { ValidatorSet } from "../validators.ts";

/** What adding a message produced. */
export interface CollectResult<C> {
  /** A certificate, the first time the message's view/node reaches a quorum. */
  readonly certificate?: C;
  /** Evidence, when the signer already sent a conflicting message in that view. */
  readonly equivocation?: EquivocationEvidence;
  /** True if the message added nothing (duplicate or equivocating second message). */
  readonly ignored: boolean;
}

function sortedSignatures(sigs: Iterable<SignerSignature>): SignerSignature[] {
  return [...sigs].sort((a, b) => bytesCompare(a.signer, b.signer));
}

/**
 * Collects VOTEs per view. Keeps at most `viewsMax` views (the highest make room; see `viewSlot`) and at most
 * one vote per signer per view.
 *
 * @example
 * ```ts
 * import { VoteCollector } from "./votes.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const key = new Uint8Array(32).fill(1);
 * const c = new VoteCollector("chain", new ValidatorSet([{ publicKey: key, power: 1 }]), 64);
 * const r = c.add({
 *   type: "vote",
 *   view: 1,
 *   nodeHash: new Uint8Array(32),
 *   signer: key,
 *   signature: new Uint8Array(64),
 * });
 * console.log(r); // one vote of power 1 of 1: a QC (signatures are checked before, by the Engine)
 * ```
 */
export class VoteCollector {
  readonly #views = new Map<number, Map<string, VoteMessage>>();
  readonly #formed = new Set<number>();

  /**
   * @param chainId chain of the QCs formed
   * @param validators who may vote, with what power
   * @param viewsMax most views tracked at once
   */
  constructor(
    readonly chainId: string,
    readonly validators: ValidatorSet,
    readonly viewsMax: number,
  ) {}

  /** Adds a verified vote (Spec 9.1). */
  add(vote: VoteMessage): CollectResult<QuorumCertificate> {
    const byViewSigner = viewSlot(this.#views, this.#formed, vote.view, this.viewsMax);
    if (byViewSigner === null) return { ignored: true };
    const id = toHex(vote.signer);
    const prior = byViewSigner.get(id);
    // Spec 9.1 step 3: one vote per signer per view; a different second vote is evidence.
    if (prior !== undefined) {
      if (bytesCompare(prior.nodeHash, vote.nodeHash) === 0) return { ignored: true };
      return { ignored: true, equivocation: { kind: "double-vote", first: prior, second: vote } };
    }
    byViewSigner.set(id, vote);
    if (this.#formed.has(vote.view)) return { ignored: false };
    const hashId = toHex(vote.nodeHash);
    const same = [...byViewSigner.values()].filter((v) => toHex(v.nodeHash) === hashId);
    const signatures = sortedSignatures(
      same.map((v) => ({ signer: v.signer, signature: v.signature })),
    );
    // Spec 9.1 step 4: a QC when the votes for this Node hash reach a quorum.
    if (!this.validators.countQuorum(signatures).ok) return { ignored: false };
    this.#formed.add(vote.view);
    return {
      ignored: false,
      certificate: { chainId: this.chainId, view: vote.view, nodeHash: vote.nodeHash, signatures },
    };
  }

  /** Forgets every view below `view`. */
  pruneBelow(view: number): void {
    for (const v of [...this.#views.keys()]) {
      if (v < view) {
        this.#views.delete(v);
        this.#formed.delete(v);
      }
    }
  }
}

/**
 * The map of `view` in a collector, made if needed. When `viewsMax` views are tracked already,
 * the highest goes to make room (views below the current one are pruned by the core, so what
 * crowds a collector is views ahead, which anyone can send); a message for a view above all of
 * them is not tracked (null). So messages far ahead never push out the view being decided.
 */
function viewSlot<T>(
  views: Map<number, Map<string, T>>,
  formed: Set<number>,
  view: number,
  viewsMax: number,
): Map<string, T> | null {
  let m = views.get(view);
  if (m !== undefined) return m;
  if (views.size >= viewsMax) {
    const highest = Math.max(...views.keys());
    if (view > highest) return null;
    views.delete(highest);
    formed.delete(highest);
  }
  m = new Map();
  views.set(view, m);
  return m;
}

/**
 * Collects NEW-VIEWs per view into TCs (Spec 9.2). Same bounds as {@link VoteCollector}.
 *
 * @example
 * ```ts
 * import { NewViewCollector } from "./votes.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const key = new Uint8Array(32).fill(1);
 * const c = new NewViewCollector("chain", new ValidatorSet([{ publicKey: key, power: 1 }]), 64);
 * console.log(c); // add() takes NEW-VIEW messages the Engine has verified
 * ```
 */
export class NewViewCollector {
  readonly #views = new Map<number, Map<string, NewViewMessage>>();
  readonly #formed = new Set<number>();

  /**
   * @param chainId chain of the TCs formed
   * @param validators who may sign, with what power
   * @param viewsMax most views tracked at once
   */
  constructor(
    readonly chainId: string,
    readonly validators: ValidatorSet,
    readonly viewsMax: number,
  ) {}

  /** Adds a verified NEW-VIEW. */
  add(msg: NewViewMessage): CollectResult<TimeoutCertificate> {
    const byView = viewSlot(this.#views, this.#formed, msg.view, this.viewsMax);
    if (byView === null) return { ignored: true };
    const id = toHex(msg.signer);
    // Spec 9.2 step 4: one NEW-VIEW per signer per view counts (re-sends are duplicates).
    if (byView.has(id)) return { ignored: true };
    byView.set(id, msg);
    if (this.#formed.has(msg.view)) return { ignored: false };
    const signatures = sortedSignatures(
      [...byView.values()].map((m) => ({ signer: m.signer, signature: m.signature })),
    );
    // Spec 9.2 step 4: a TC when the signers' power is a quorum.
    if (!this.validators.countQuorum(signatures).ok) return { ignored: false };
    this.#formed.add(msg.view);
    return { ignored: false, certificate: { chainId: this.chainId, view: msg.view, signatures } };
  }

  /** Forgets every view below `view`. */
  pruneBelow(view: number): void {
    for (const v of [...this.#views.keys()]) {
      if (v < view) {
        this.#views.delete(v);
        this.#formed.delete(v);
      }
    }
  }
}
