/**
 * The NodeTree: every Node a replica knows above its committed head, as a tree rooted at the
 * committed head. See SPECIFICATION.md section 4.
 *
 * Invariants (asserted):
 * - every entry but the root has its parent in the tree, and its height is the parent's + 1;
 * - every entry descends from the committed head (the root);
 * - committed history leaves memory: only the root and a bounded window of recent committed
 *   hashes stay, the rest is in storage.
 *
 * @module
 */
import { assert } from "../errors.ts";
import type { StateUpdate, StoredNode } from "../storage/storage.ts";
import type { Hash, Node } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";

/** How many recent committed hashes are remembered (to resolve old QCs and locks). */
const COMMITTED_RECENT_MAX = 4096;

/**
 * The in-memory NodeTree.
 *
 * @example
 * ```ts
 * import { genesisNode, nodeHash } from "../codec.ts";
 * import { NodeTree } from "./node_tree.ts";
 * const g = genesisNode("c");
 * const tree = new NodeTree({ node: g, hash: nodeHash(g), updates: [] });
 * tree.size; // 1
 * ```
 */
export class NodeTree {
  readonly #entries = new Map<string, StoredNode>();
  #root: StoredNode;
  /** hash hex -> height of recently committed Nodes (including the root). */
  readonly #committedRecent = new Map<string, number>();

  /**
   * Starts a tree at its root.
   *
   * @param root the committed head (genesis on a fresh replica)
   */
  constructor(root: StoredNode) {
    this.#root = root;
    this.#entries.set(toHex(root.hash), root);
    this.#committedRecent.set(toHex(root.hash), root.node.height);
  }

  /** The committed head. */
  get root(): StoredNode {
    return this.#root;
  }

  /** Number of Nodes held (root included). */
  get size(): number {
    return this.#entries.size;
  }

  /** The entry for `hash` if it is in the tree (root included). */
  get(hash: Hash): StoredNode | undefined {
    return this.#entries.get(toHex(hash));
  }

  /** True iff `hash` is in the tree. */
  has(hash: Hash): boolean {
    return this.#entries.has(toHex(hash));
  }

  /** True iff `hash` is the root or a recently committed Node. */
  isCommitted(hash: Hash): boolean {
    return this.#committedRecent.has(toHex(hash));
  }

  /** Height of `hash` if it is in the tree or recently committed. */
  heightOf(hash: Hash): number | undefined {
    return this.get(hash)?.node.height ?? this.#committedRecent.get(toHex(hash));
  }

  /**
   * Inserts a Node whose parent is in the tree. Idempotent.
   * Precondition (checked by the caller as a guard, asserted here): parent present, height + 1.
   */
  insert(entry: StoredNode): void {
    const parent = this.get(entry.node.parent);
    assert(parent !== undefined, "insert: parent must be in the tree");
    assert(entry.node.height === parent.node.height + 1, "insert: height must be parent's + 1");
    this.#entries.set(toHex(entry.hash), entry);
  }

  /**
   * True iff `descendant` equals or descends from `ancestor`. Both must be in the tree or
   * committed; a committed `ancestor` is an ancestor of everything in the tree.
   */
  extends(descendant: Hash, ancestor: Hash): boolean {
    if (bytesEqual(descendant, ancestor)) return true;
    const anc = this.get(ancestor);
    if (anc === undefined || anc === this.#root) return this.isCommitted(ancestor);
    let cur = this.get(descendant);
    while (cur !== undefined && cur.node.height > anc.node.height) {
      cur = this.get(cur.node.parent);
    }
    return cur !== undefined && bytesEqual(cur.hash, anc.hash);
  }

  /**
   * The uncommitted ancestors of `hash` (inclusive), oldest first, down to but excluding the
   * root. Empty if `hash` is the root.
   */
  pathFromRoot(hash: Hash): StoredNode[] {
    const path: StoredNode[] = [];
    let cur = this.get(hash);
    while (cur !== undefined && cur !== this.#root) {
      path.push(cur);
      cur = this.get(cur.node.parent);
    }
    assert(cur === this.#root, "pathFromRoot: every entry descends from the root");
    return path.reverse();
  }

  /**
   * The pending state updates visible to a child of `parent`: the updates of every uncommitted
   * ancestor, newest first.
   */
  pendingUpdates(parent: Hash): (readonly StateUpdate[])[] {
    return this.pathFromRoot(parent).reverse().map((e) => e.updates);
  }

  /**
   * Makes `hash` the new root: returns the newly committed Nodes in height order and drops every
   * entry that does not descend from the new root.
   */
  commit(hash: Hash): { committed: StoredNode[]; pruned: Hash[] } {
    const path = this.pathFromRoot(hash);
    if (path.length === 0) return { committed: [], pruned: [] };
    const newRoot = path[path.length - 1]!;
    for (const e of path) this.#rememberCommitted(e);
    const oldRoot = this.#root;
    this.#root = newRoot;
    const dropped = this.#prune();
    const onPath = new Set([oldRoot, ...path].map((e) => toHex(e.hash)));
    // Abandoned branches: dropped, and never committed.
    const pruned = dropped.filter((e) => !onPath.has(toHex(e.hash))).map((e) => e.hash);
    for (const h of pruned) assert(!this.isCommitted(h), "a pruned Node is never committed");
    return { committed: path, pruned };
  }

  /** Every entry that does not attach to the root (for cleaning up a store after a restart). */
  static orphans(root: StoredNode, stored: readonly StoredNode[]): Hash[] {
    const tree = new NodeTree(root);
    for (const e of [...stored].sort((a, b) => a.node.height - b.node.height)) {
      if (tree.has(e.node.parent) && e.node.height === tree.get(e.node.parent)!.node.height + 1) {
        tree.insert(e);
      }
    }
    return stored.filter((e) => !tree.has(e.hash)).map((e) => e.hash);
  }

  /** All Nodes in the tree on the path from the root to `hash`, plus `hash`, oldest first. */
  chainTo(hash: Hash): Node[] {
    return this.pathFromRoot(hash).map((e) => e.node);
  }

  #rememberCommitted(e: StoredNode): void {
    this.#committedRecent.set(toHex(e.hash), e.node.height);
    if (this.#committedRecent.size > COMMITTED_RECENT_MAX) {
      const oldest = this.#committedRecent.keys().next().value!;
      this.#committedRecent.delete(oldest);
    }
  }

  /** Keeps exactly the root and its descendants; returns the dropped entries. */
  #prune(): StoredNode[] {
    const keep = new Set<string>([toHex(this.#root.hash)]);
    const sorted = [...this.#entries.values()].sort((a, b) => a.node.height - b.node.height);
    for (const e of sorted) {
      if (e.node.height <= this.#root.node.height) continue;
      if (keep.has(toHex(e.node.parent))) keep.add(toHex(e.hash));
    }
    const dropped: StoredNode[] = [];
    for (const [id, e] of [...this.#entries]) {
      if (keep.has(id)) continue;
      this.#entries.delete(id);
      dropped.push(e);
    }
    return dropped;
  }

  /** Every entry (root included), in no particular order. */
  entries(): IterableIterator<StoredNode> {
    return this.#entries.values();
  }
}
