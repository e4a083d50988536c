/**
 * The safety rules of chained HotStuff, as pure predicates over the NodeTree.
 * See SPECIFICATION.md section 5 and the paper's Algorithm 4 (event-driven HotStuff).
 *
 * @module
 */
import type { StoredNode } from "../storage/storage.ts";
import type { Node, QuorumCertificate } from "../types.ts";
import { bytesEqual } from "../types.ts";
import type { NodeTree } from "./node_tree.ts";

/**
 * Test-only switches that plant known bugs, so the simulator can show it catches them. They are
 * never reachable from production configuration: the replica runtime refuses to start when any is
 * on.
 */
export const plantedSafetyBugs: {
  /** Vote without checking the lock (Spec 5.1 step 2). */
  skipLockCheck: boolean;
  /** Commit on a 3-chain without direct parents / consecutive views (Spec 5.3 step 3). */
  commitWithoutDirectParents: boolean;
  /** Forget the last voted view when restarting from storage (Spec 6.2 step 1). */
  forgetLastVotedView: boolean;
  /** Vote without checking a Node's state root (Spec 7; in the Engine). */
  skipStateRootCheck: boolean;
  /** Propose Nodes whose state root has one bit flipped (Spec 7; in the Engine). */
  proposeWrongStateRoot: boolean;
} = {
  skipLockCheck: false,
  commitWithoutDirectParents: false,
  forgetLastVotedView: false,
  skipStateRootCheck: false,
  proposeWrongStateRoot: false,
};

/**
 * Spec 5.1 — the voting rule (paper, Algorithm 4 lines 17-18, by view instead of height).
 * A replica votes for `node` only if:
 *   1. `node.view > lastVotedView`, and
 *   2. `node` extends the locked Node, or `node.justify.view > lockedQC.view`.
 */
export function safeToVote(
  tree: NodeTree,
  node: StoredNode,
  lastVotedView: number,
  lockedQC: QuorumCertificate,
): boolean {
  // Spec 5.1 step 1: one vote per view, ever.
  if (node.node.view <= lastVotedView) return false;
  if (plantedSafetyBugs.skipLockCheck) return true;
  // Spec 5.1 step 2: safety (extends the lock) or liveness (a newer QC than the lock).
  return tree.extends(node.hash, lockedQC.nodeHash) || node.node.justify.view > lockedQC.view;
}

/** The 1-, 2- and 3-chain seen from a newly inserted Node `b*` (paper's notation). */
export interface Chain {
  /** `b''`: the Node certified by `b*.justify`. */
  readonly b2: StoredNode;
  /** `b'`: the Node certified by `b''.justify` (undefined if below the root's window). */
  readonly b1: StoredNode | undefined;
  /** `b`: the Node certified by `b'.justify` (undefined if unknown). */
  readonly b0: StoredNode | undefined;
}

/**
 * Spec 5.2 — the lock rule (paper, Algorithm 4 lines 8-9): on a Node `b*`, with
 * `b'' = b*.justify.node`, the new lock candidate is `b''.justify` (the head of a 2-chain). The
 * lock only ever moves to a higher view.
 */
export function lockCandidate(chain: Chain): QuorumCertificate {
  // Spec 5.2: the head of the 2-chain; the caller moves the lock only to a higher view.
  return chain.b2.node.justify;
}

/** True iff `child` is `parent`'s direct child (Spec 5.3 step 2) in the next view (step 3). */
function direct(child: Node, parent: StoredNode): boolean {
  if (plantedSafetyBugs.commitWithoutDirectParents) return bytesEqual(child.parent, parent.hash);
  return bytesEqual(child.parent, parent.hash) && child.view === parent.node.view + 1;
}

/**
 * Spec 5.3 — the commit rule (paper, Algorithm 4 lines 10-12, the "third confirmation"): with
 * `b'' = b*.justify.node`, `b' = b''.justify.node`, `b = b'.justify.node`, commit `b` iff
 * `b''.parent = b'` and `b'.parent = b`, each in the view right after its parent's (direct
 * parents: the paper's chained HotStuff fills view gaps with dummy Nodes, so a direct parent is
 * also the previous view). Returns the Node to commit, or undefined.
 */
export function commitCandidate(chain: Chain): StoredNode | undefined {
  const { b2, b1, b0 } = chain;
  // Spec 5.3 step 1: the whole 3-chain is known.
  if (b1 === undefined || b0 === undefined) return undefined;
  // Spec 5.3 steps 2-3: direct parents, consecutive views.
  if (!direct(b2.node, b1) || !direct(b1.node, b0)) return undefined;
  // Spec 5.3 step 4: the caller commits `b` if it is above the committed head.
  return b0;
}
