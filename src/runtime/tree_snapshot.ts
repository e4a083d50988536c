/**
 * What the live NodeTree page draws (`GET /tree`): the Nodes of a recent window, each with its
 * parent and its confirmations, and the replica's view, leader, highest QC and lock.
 *
 * Confirmations follow the chained HotStuff picture: a Node has one once a QC certifies it, two
 * once a certified child carries that QC (the lock level), and it is committed at three (the
 * 3-chain rule). Abandoned Nodes are uncommitted branches that neither extend nor lead to the
 * locked Node: no honest replica votes for them again, and they stay visible until the next
 * commit prunes them.
 *
 * @module
 */
import type { NodeTree } from "../consensus/node_tree.ts";
import type { SafetyState } from "../storage/storage.ts";
import type { Hash, PublicKey } from "../types.ts";
import { toHex } from "../types.ts";

/** One Node as the page draws it (hashes in hex). */
export interface TreeNodeView {
  /** The Node's hash. */
  readonly hash: string;
  /** Its parent's hash, or null when the parent is outside the window. */
  readonly parent: string | null;
  /** Height. */
  readonly height: number;
  /** View it was proposed in. */
  readonly view: number;
  /** 0 (none), 1, 2, or 3 (committed). */
  readonly confirmations: 0 | 1 | 2 | 3;
  /** True for an uncommitted branch that conflicts with the lock (pruned at the next commit). */
  readonly abandoned: boolean;
}

/** The page's data: `GET /tree`. */
export interface TreeSnapshot {
  /** Current view. */
  readonly view: number;
  /** Its leader's key. */
  readonly leader: string;
  /** The highest QC known here. */
  readonly highQC: { readonly view: number; readonly node: string };
  /** The lock (locked QC). */
  readonly lock: { readonly view: number; readonly node: string };
  /** The committed head. */
  readonly committed: { readonly height: number; readonly hash: string };
  /** Committed Nodes of the window (oldest first), then the uncommitted NodeTree. */
  readonly nodes: readonly TreeNodeView[];
}

/** A committed Node the replica remembers for the page. */
export interface CommittedMark {
  /** Its hash, hex. */
  readonly hash: string;
  /** Height. */
  readonly height: number;
  /** View. */
  readonly view: number;
}

/** Most committed Nodes a snapshot may show. */
export const TREE_WINDOW_MAX = 256;

/**
 * Remembers the last {@link TREE_WINDOW_MAX} committed Nodes (from `node:commit` events).
 *
 * @example
 * ```ts
 * import { CommittedWindow } from "./tree_snapshot.ts";
 * const w = new CommittedWindow();
 * w.add(new Uint8Array(32), 1, 1);
 * console.log(w.last(10).length); // 1
 * ```
 */
export class CommittedWindow {
  readonly #marks: CommittedMark[] = [];

  /** Adds a committed Node; the oldest beyond the bound is forgotten. */
  add(hash: Hash, height: number, view: number): void {
    this.#marks.push({ hash: toHex(hash), height, view });
    if (this.#marks.length > TREE_WINDOW_MAX) this.#marks.shift();
  }

  /** The last `n` committed Nodes, oldest first. */
  last(n: number): CommittedMark[] {
    return this.#marks.slice(Math.max(0, this.#marks.length - n));
  }
}

/** What {@link treeSnapshot} reads. */
export interface SnapshotInput {
  /** The NodeTree (root: the committed head). */
  readonly tree: NodeTree;
  /** Safety state: lock and highest QC. */
  readonly safety: SafetyState;
  /** Current view. */
  readonly view: number;
  /** Its leader. */
  readonly leader: PublicKey;
  /** Recent committed Nodes, oldest first (the root among them when it was seen committing). */
  readonly committed: readonly CommittedMark[];
  /** Committed Nodes to show, the committed head included (1..{@link TREE_WINDOW_MAX}). */
  readonly window: number;
}

/**
 * The page's snapshot of a replica's NodeTree.
 *
 * @example
 * ```ts
 * import { treeSnapshot } from "./tree_snapshot.ts";
 * import { NodeTree } from "../consensus/node_tree.ts";
 * import { genesisNode, genesisQC, nodeHash } from "../codec.ts";
 * const g = genesisNode("c");
 * const tree = new NodeTree({ node: g, hash: nodeHash(g), updates: [] });
 * const qc = genesisQC("c");
 * const snap = treeSnapshot({
 *   tree,
 *   safety: { currentView: 1, lastVotedView: 0, lockedQC: qc, highQC: qc, highTC: null },
 *   view: 1,
 *   leader: new Uint8Array(32),
 *   committed: [],
 *   window: 48,
 * });
 * console.log(snap.nodes.length); // 1: the committed root
 * ```
 */
export function treeSnapshot(input: SnapshotInput): TreeSnapshot {
  const { tree, safety } = input;
  const root = tree.root;
  const nodes: TreeNodeView[] = [];
  let parent: string | null = null;
  let prevHeight = -1;
  const below = input.committed.filter((m) => m.height < root.node.height);
  for (const m of below.slice(Math.max(0, below.length - (input.window - 1)))) {
    nodes.push({
      hash: m.hash,
      parent: m.height === prevHeight + 1 ? parent : null,
      height: m.height,
      view: m.view,
      confirmations: 3,
      abandoned: false,
    });
    parent = m.hash;
    prevHeight = m.height;
  }
  const rootHex = toHex(root.hash);
  nodes.push({
    hash: rootHex,
    parent: root.node.height === prevHeight + 1 ? parent : null,
    height: root.node.height,
    view: root.node.view,
    confirmations: 3,
    abandoned: false,
  });
  nodes.push(...uncommittedViews(tree, safety));
  return {
    view: input.view,
    leader: toHex(input.leader),
    highQC: { view: safety.highQC.view, node: toHex(safety.highQC.nodeHash) },
    lock: { view: safety.lockedQC.view, node: toHex(safety.lockedQC.nodeHash) },
    committed: { height: root.node.height, hash: rootHex },
    nodes,
  };
}

/** The uncommitted entries of the tree, with confirmations and abandonment, by height. */
function uncommittedViews(tree: NodeTree, safety: SafetyState): TreeNodeView[] {
  const root = tree.root;
  const entries = [...tree.entries()].filter((e) => e !== root);
  // A QC for a Node: some Node's justify, or the highest QC.
  const certified = new Set<string>([toHex(safety.highQC.nodeHash)]);
  // The children that carry their parent's QC (the direct-parent chain of the 3-chain rule).
  const chainChildren = new Map<string, string[]>();
  for (const e of entries) {
    const justified = toHex(e.node.justify.nodeHash);
    certified.add(justified);
    if (justified === toHex(e.node.parent)) {
      const list = chainChildren.get(justified) ?? [];
      list.push(toHex(e.hash));
      chainChildren.set(justified, list);
    }
  }
  const memo = new Map<string, number>();
  const confirmations = (hex: string): number => {
    const known = memo.get(hex);
    if (known !== undefined) return known;
    let c = 0;
    if (certified.has(hex)) {
      c = 1;
      for (const child of chainChildren.get(hex) ?? []) c = Math.max(c, 1 + confirmations(child));
    }
    c = Math.min(c, 2);
    memo.set(hex, c);
    return c;
  };
  const lock = safety.lockedQC.nodeHash;
  const lockInTree = tree.has(lock) && tree.get(lock) !== root;
  return entries
    .sort((a, b) => a.node.height - b.node.height)
    .map((e) => {
      const hex = toHex(e.hash);
      const abandoned = lockInTree && !tree.extends(e.hash, lock) && !tree.extends(lock, e.hash);
      return {
        hash: hex,
        parent: toHex(e.node.parent),
        height: e.node.height,
        view: e.node.view,
        confirmations: confirmations(hex) as 0 | 1 | 2,
        abandoned,
      };
    });
}
