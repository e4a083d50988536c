/**
 * The NodeTree page's data (`treeSnapshot`): confirmations follow the 3-chain picture, a branch
 * that conflicts with the lock is abandoned, the committed window links parents and is bounded.
 *
 * @module
 */
import { genesisNode, genesisQC, nodeHash } from "../src/codec.ts";
import { NodeTree } from "../src/consensus/node_tree.ts";
import { CommittedWindow, TREE_WINDOW_MAX, treeSnapshot } from "../src/runtime/tree_snapshot.ts";
import type { Hash, Node, QuorumCertificate } from "../src/types.ts";
import { toHex } from "../src/types.ts";
import { assertEquals } from "./support/assert.ts";

const CHAIN = "snapshot";
const proposer = new Uint8Array(32).fill(9);

function qc(view: number, hash: Hash): QuorumCertificate {
  return { chainId: CHAIN, view, nodeHash: hash, signatures: [] };
}

function child(parent: Node, view: number, justify: QuorumCertificate, tag: number): Node {
  return {
    view,
    height: parent.height + 1,
    parent: nodeHash(parent),
    justify,
    command: new Uint8Array([tag]),
    configHash: new Uint8Array(32),
    proposer,
    stateRoot: new Uint8Array(0),
  };
}

Deno.test("treeSnapshot: confirmations 2/2/1 along the chain, 0 and abandoned on a branch that conflicts with the lock", () => {
  const g = genesisNode(CHAIN);
  const tree = new NodeTree({ node: g, hash: nodeHash(g), updates: [] });
  const a = child(g, 1, genesisQC(CHAIN), 1);
  const b = child(a, 2, qc(1, nodeHash(a)), 2);
  const c = child(b, 3, qc(2, nodeHash(b)), 3);
  const x = child(g, 4, genesisQC(CHAIN), 4); // a fork off the root
  for (const n of [a, b, c, x]) tree.insert({ node: n, hash: nodeHash(n), updates: [] });
  const snap = treeSnapshot({
    tree,
    safety: {
      currentView: 5,
      lastVotedView: 4,
      lockedQC: qc(2, nodeHash(b)),
      highQC: qc(3, nodeHash(c)),
      highTC: null,
    },
    view: 5,
    leader: proposer,
    committed: [],
    window: 8,
  });
  const by = new Map(snap.nodes.map((n) => [n.hash, n]));
  const of = (n: Node) => by.get(toHex(nodeHash(n)))!;
  assertEquals(
    of(a).confirmations,
    2,
    "a: certified, with a certified child (capped below commit)",
  );
  assertEquals(of(b).confirmations, 2, "b: certified by c, and c is certified");
  assertEquals(of(c).confirmations, 1, "c: certified by the highest QC only");
  assertEquals(of(x).confirmations, 0, "x: no QC");
  assertEquals(of(x).abandoned, true, "x conflicts with the lock on b");
  assertEquals([a, b, c].map((n) => of(n).abandoned).join(), "false,false,false", "the chain");
  assertEquals(of(a).parent, toHex(nodeHash(g)), "linked to its parent");
  assertEquals(snap.nodes[0]!.confirmations, 3, "the committed root first");
  assertEquals(snap.lock.node, toHex(nodeHash(b)), "lock");
  assertEquals(snap.highQC.view, 3, "highest QC");
});

Deno.test("CommittedWindow keeps the last TREE_WINDOW_MAX; the snapshot shows `window` committed Nodes, the head included", () => {
  const w = new CommittedWindow();
  for (let h = 1; h <= TREE_WINDOW_MAX + 10; h++) w.add(new Uint8Array(32).fill(h % 256), h, h);
  assertEquals(w.last(10_000).length, TREE_WINDOW_MAX, "bounded");
  assertEquals(
    w.last(3).map((m) => m.height).join(),
    `${TREE_WINDOW_MAX + 8},${TREE_WINDOW_MAX + 9},${TREE_WINDOW_MAX + 10}`,
    "newest last",
  );
  const g = genesisNode(CHAIN);
  // A root at height 300: the window's marks below it come first, linked by consecutive heights.
  const root = { ...g, height: 300 };
  const tree = new NodeTree({ node: root, hash: nodeHash(root), updates: [] });
  const marks = Array.from(
    { length: 5 },
    (_, i) => ({ hash: `h${295 + i}`, height: 295 + i, view: 295 + i }),
  );
  const qc0 = genesisQC(CHAIN);
  const snap = treeSnapshot({
    tree,
    safety: { currentView: 301, lastVotedView: 300, lockedQC: qc0, highQC: qc0, highTC: null },
    view: 301,
    leader: proposer,
    committed: marks,
    window: 3,
  });
  assertEquals(snap.nodes.map((n) => n.height).join(), "298,299,300", "3 committed, the head last");
  assertEquals(snap.nodes[1]!.parent, "h298", "consecutive heights are linked");
  assertEquals(snap.nodes[0]!.parent, null, "the window's first parent is outside it");
});
