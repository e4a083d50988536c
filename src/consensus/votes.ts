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
import type { QuorumRule } from "./reconfig.ts";

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
 * import { QuorumRule } from "./reconfig.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const key = new Uint8Array(32).fill(1);
 * const rule = new QuorumRule([new ValidatorSet([{ publicKey: key, power: 1 }])]);
 * const c = new VoteCollector("chain", 64);
 * const r = c.add({
 *   type: "vote",
 *   view: 1,
 *   nodeHash: new Uint8Array(32),
 *   signer: key,
 *   signature: new Uint8Array(64),
 * }, rule);
 * console.log(r); // one vote of power 1 of 1: a QC (signatures are checked before, by the Engine)
 * ```
 */
export class VoteCollector {
  readonly #views = new Map<number, Map<string, VoteMessage>>();
  readonly #formed = new Set<number>();

  /**
   * @param chainId chain of the QCs formed
   * @param viewsMax most views tracked at once
   */
  constructor(
    readonly chainId: string,
    readonly viewsMax: number,
  ) {}

  /**
   * Adds a verified vote (Spec 9.1). `rule` is the rule that certifies the voted Node (Spec 3.4
   * step 3), or null while the Node is unknown: the vote is kept, and counted by
   * {@link VoteCollector.tryForm} once the Node is known.
   */
  add(vote: VoteMessage, rule: QuorumRule | null): CollectResult<QuorumCertificate> {
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
    if (rule === null) return { ignored: false };
    const certificate = this.tryForm(vote.view, vote.nodeHash, rule);
    return certificate === null ? { ignored: false } : { ignored: false, certificate };
  }

  /**
   * The QC of `nodeHash` in `view`, the first time the votes kept for it are a quorum of `rule`
   * (Spec 9.1 step 4); null otherwise.
   */
  tryForm(view: number, nodeHash: Uint8Array, rule: QuorumRule): QuorumCertificate | null {
    const byViewSigner = this.#views.get(view);
    if (byViewSigner === undefined || this.#formed.has(view)) return null;
    const hashId = toHex(nodeHash);
    const same = [...byViewSigner.values()].filter((v) => toHex(v.nodeHash) === hashId);
    // Only the rule's members count (a vote of another set is kept, never counted).
    const signatures = sortedSignatures(
      same.filter((v) => rule.isMember(v.signer)).map((v) => ({
        signer: v.signer,
        signature: v.signature,
      })),
    );
    // Spec 9.1 step 4: a QC when the votes for this Node hash reach a quorum.
    if (!rule.countQuorum(signatures).ok) return null;
    this.#formed.add(view);
    return { chainId: this.chainId, view, nodeHash, signatures };
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
 * const c = new NewViewCollector("chain", 64);
 * console.log(c); // add(newView, rule) takes NEW-VIEW messages the Engine has verified
 * ```
 */
export class NewViewCollector {
  readonly #views = new Map<number, Map<string, NewViewMessage>>();
  readonly #formed = new Set<number>();

  /**
   * @param chainId chain of the TCs formed
   * @param viewsMax most views tracked at once
   */
  constructor(
    readonly chainId: string,
    readonly viewsMax: number,
  ) {}

  /** Adds a verified NEW-VIEW; `rule` says whose NEW-VIEWs form a TC (Spec 3.4 step 5). */
  add(msg: NewViewMessage, rule: QuorumRule): CollectResult<TimeoutCertificate> {
    const byView = viewSlot(this.#views, this.#formed, msg.view, this.viewsMax);
    if (byView === null) return { ignored: true };
    const id = toHex(msg.signer);
    // Spec 9.2 step 4: one NEW-VIEW per signer per view counts (re-sends are duplicates).
    if (byView.has(id)) return { ignored: true };
    byView.set(id, msg);
    if (this.#formed.has(msg.view)) return { ignored: false };
    const signatures = sortedSignatures(
      [...byView.values()].filter((m) => rule.isMember(m.signer)).map((m) => ({
        signer: m.signer,
        signature: m.signature,
      })),
    );
    // Spec 9.2 step 4: a TC when the signers' power is a quorum.
    if (!rule.countQuorum(signatures).ok) return { ignored: false };
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
