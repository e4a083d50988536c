/**
 * State roots for Nodes (SPECIFICATION.md 7): the `stateRoot` hook of the Application, computed
 * with the {@link StateTree} of committed state. The root as of a Node's parent is the root of
 * the committed tree overlaid with the pending Nodes' updates; an overlay hashes only the buckets
 * those updates change and their 12-level paths, and the overlay of each Node is kept (until its
 * height is committed), so a child's root costs the child's parent's updates only and each
 * Node's root is computed about once.
 *
 * @module
 */
import {
  type Application,
  type CommitNotice,
  type StateRootRequest,
  wrapApplication,
} from "../app.ts";
import type { Hash } from "../types.ts";
import { toHex } from "../types.ts";
import type { StateOverlay, StateTree } from "./tree.ts";

/**
 * Most Node overlays kept; beyond it the oldest is dropped (a root is then computed from an older
 * base, a commit rehashes instead of taking the overlay's hashes: slower, never wrong). An overlay
 * holds up to 4,096 buckets and 8,191 hashes (shared, not copied), about 0.5 MB at most: a
 * catch-up answer of 256 large Nodes would otherwise keep one per Node.
 *
 * @example
 * ```ts
 * import { STATE_ROOT_OVERLAYS_MAX } from "./roots.ts";
 * console.log(STATE_ROOT_OVERLAYS_MAX); // 64
 * ```
 */
export const STATE_ROOT_OVERLAYS_MAX = 64;

/** The state after one Node, as an overlay of the committed tree. */
interface Kept {
  readonly height: number;
  readonly overlay: StateOverlay;
  /**
   * The hash (hex) at each height of the Nodes the overlay holds that were not committed into
   * the tree when it was built: the overlay stays valid while the tree commits only these.
   */
  readonly chain: Map<number, string>;
}

/**
 * Computes and keeps the state roots of uncommitted Nodes over a committed {@link StateTree}.
 * Call {@link StateRoots.committed} after each committed Node's updates enter the tree.
 *
 * @example
 * ```ts
 * import { StateRoots } from "./roots.ts";
 * import { StateTree } from "./tree.ts";
 * const tree = new StateTree();
 * const roots = new StateRoots(() => tree);
 * const k = new TextEncoder().encode("k/a");
 * const a = { hash: new Uint8Array(32).fill(1), height: 1, updates: [[k, new Uint8Array([1])] as const] };
 * const root = roots.root({ parent: a.hash, height: 1, pending: [a] });
 * tree.apply(a.updates); // a is committed
 * roots.committed(a.hash, 1);
 * console.log(root.join() === tree.root().join()); // true
 * ```
 */
export class StateRoots {
  readonly #tree: () => StateTree;
  readonly #kept = new Map<string, Kept>();
  /** Height of the last committed Node whose updates the tree holds (see `committed`). */
  #applied = 0;

  /** Roots over the tree `tree()` returns (a snapshot install may replace it). */
  constructor(tree: () => StateTree) {
    this.#tree = tree;
  }

  /** Number of Node overlays kept. */
  get size(): number {
    return this.#kept.size;
  }

  /** The root of the state after `request.parent` (see {@link StateRootRequest}). */
  root(request: StateRootRequest): Hash {
    const known = this.#kept.get(toHex(request.parent));
    if (known !== undefined) return known.overlay.root!;
    const pending = request.pending;
    if (pending.length === 0) return this.#tree().root();
    // Start from the newest pending Node whose overlay is kept (usually the parent's parent).
    let from = pending.length - 1;
    while (from >= 0 && !this.#kept.has(toHex(pending[from]!.hash))) from--;
    const base = from < 0 ? undefined : this.#kept.get(toHex(pending[from]!.hash));
    const overlay = this.#tree().overlay(base?.overlay ?? null, this.#applied);
    const chain = new Map(base?.chain);
    for (const n of pending.slice(from + 1)) {
      overlay.apply(n.updates, n.height);
      chain.set(n.height, toHex(n.hash));
    }
    const root = overlay.seal();
    this.#keep(toHex(request.parent), { height: request.height, overlay, chain });
    return root;
  }

  /**
   * The committed Node `hash` at `height` has entered the tree: drops the overlays it makes
   * stale (of Nodes at or below it, and of Nodes that do not descend from it). Called again for
   * the same Node (or a lower height), it does nothing.
   */
  committed(hash: Hash, height: number): void {
    if (height <= this.#applied) return;
    const hex = toHex(hash);
    // The Node's own overlay is the tree's state now: its hashes need not be computed again.
    const own = this.#kept.get(hex);
    if (own !== undefined) this.#tree().absorb(own.overlay);
    this.#applied = height;
    for (const [key, kept] of this.#kept) {
      if (kept.height <= height || kept.chain.get(height) !== hex) this.#kept.delete(key);
      else kept.chain.delete(height);
    }
  }

  /** Forgets every overlay (the tree was replaced). */
  clear(): void {
    this.#kept.clear();
    this.#applied = 0;
  }

  #keep(key: string, kept: Kept): void {
    this.#kept.set(key, kept);
    if (this.#kept.size > STATE_ROOT_OVERLAYS_MAX) {
      this.#kept.delete(this.#kept.keys().next().value!);
    }
  }
}

/**
 * `app` with the `stateRoot` hook of `roots`, and its commits applied by `apply` (which must put
 * the Node's updates into the tree `roots` reads) after its own `onCommit`, even one that throws.
 *
 * @example
 * ```ts
 * import { StateRoots, withStateRoots } from "./roots.ts";
 * import { StateTree } from "./tree.ts";
 * const tree = new StateTree();
 * const app = withStateRoots(
 *   { produceCommand: () => ({ command: new Uint8Array() }), validateNode: () => ({ ok: true, updates: [] }) },
 *   new StateRoots(() => tree),
 *   (notice) => tree.apply(notice.updates),
 * );
 * ```
 */
export function withStateRoots(
  app: Application,
  roots: StateRoots,
  apply: (notice: CommitNotice) => void,
): Application {
  return wrapApplication(app, {
    stateRoot: (request) => roots.root(request),
    onCommit: async (notice) => {
      try {
        await app.onCommit?.(notice);
      } finally {
        apply(notice);
        roots.committed(notice.hash, notice.node.height);
      }
    },
  });
}
