/**
 * A scripted Byzantine leader that exploits a commit rule which accepts a 3-chain with a view gap
 * (SPECIFICATION.md 5.3 step 3). Validators: 0 = F (Byzantine), 1 = A, 2 = B, 3 = C.
 *
 * 1. View 1 (A): A proposes `b`. F collects the votes (it leads view 2) and proposes nothing,
 *    so the others time out; from their NEW-VIEWs F builds TC(1).
 * 2. View 2 (F): F proposes `c`, a sibling of `b` on the genesis QC, with TC(1). Everyone votes
 *    (their lock is still genesis); F forms QC(c) and proposes nothing in view 3 yet.
 * 3. View 3 (F): from the NEW-VIEWs of view 2, F builds TC(2) and proposes `b'` on QC(b): a
 *    child of `b` in view 3 — a gap after `b`'s view 1. Everyone votes again (legal).
 * 4. View 4 (B): B proposes `b''` on QC(b'). View 5 (F): F's real proposal `b*` carries
 *    QC(b'') and goes to C only. A correct C does not commit `b` (views 1 and 3 are not
 *    consecutive); a buggy C does.
 * 5. View 6 (F): with TC(5), F proposes `d` on QC(c). A and B are locked on QC(b) (view 1) only,
 *    and QC(c) is of view 2, so they vote; F votes for everything from now on. Views 7-9 (B, A,
 *    B) extend `d` and commit `c`: at height 1, where the buggy C committed `b`.
 */
import { stableConfig, validatorConfigHash } from "../../src/consensus/reconfig.ts";
import { genesisNode, genesisQC, nodeHash } from "../../src/codec.ts";
import type { Adversary, AdversaryApi } from "../../src/testing/sim.ts";
import type {
  ConsensusMessage,
  NewViewMessage,
  Node,
  QuorumCertificate,
  TimeoutCertificate,
} from "../../src/types.ts";
import { bytesCompare, toHex } from "../../src/types.ts";

/** Leaders of views 1.. (validator indices), then the default schedule. */
export const GAP_ATTACK_LEADERS: readonly number[] = [1, 0, 0, 2, 0, 0, 2, 1, 2];

const CHAIN = "sim";

/** A fresh adversary (it keeps state). */
export function gapAttacker(): Adversary {
  const nodes = new Map<number, Node>(); // proposals seen, by view
  const qcs = new Map<number, QuorumCertificate>(); // QCs its Engine formed, by view
  const newViews = new Map<number, Map<string, NewViewMessage>>();
  const done = new Set<string>();
  let c: Node | null = null;

  const tc = (api: AdversaryApi, view: number): TimeoutCertificate | null => {
    const got = [...(newViews.get(view)?.values() ?? [])];
    const signatures = got.map((m) => ({ signer: m.signer, signature: m.signature }))
      .sort((a, b) => bytesCompare(a.signer, b.signer));
    if (!api.validators.countQuorum(signatures).ok) return null;
    return { chainId: CHAIN, view, signatures };
  };

  const once = async (step: string, f: () => Promise<boolean>): Promise<void> => {
    if (!done.has(step) && (await f())) done.add(step);
  };

  const step = async (api: AdversaryApi): Promise<void> => {
    const high = api.engine?.core.safety.highQC;
    if (high !== undefined && high.view > 0) qcs.set(high.view, high);
    await once("c", async () => {
      const t = tc(api, 1);
      if (t === null) return false;
      const g = genesisNode(CHAIN);
      const root = api.stateRoot(nodeHash(g));
      if (root === null) return false;
      c = {
        view: 2,
        height: 1,
        parent: nodeHash(g),
        justify: genesisQC(CHAIN),
        command: new Uint8Array([1, 0xcc]),
        configHash: validatorConfigHash(stableConfig(api.validators)),
        proposer: api.validators.leader(2).publicKey,
        stateRoot: root,
      };
      api.broadcast(await api.propose(c, t));
      return true;
    });
    await once("b'", async () => {
      const b = nodes.get(1);
      const qcB = qcs.get(1);
      const t = tc(api, 2);
      if (b === undefined || qcB === undefined || t === null) return false;
      const root = api.stateRoot(nodeHash(b));
      if (root === null) return false;
      const b1: Node = {
        view: 3,
        height: 2,
        parent: nodeHash(b),
        justify: qcB,
        command: new Uint8Array([1, 0xb1]),
        configHash: validatorConfigHash(stableConfig(api.validators)),
        proposer: api.validators.leader(3).publicKey,
        stateRoot: root,
      };
      api.broadcast(await api.propose(b1, t));
      return true;
    });
    await once("d", async () => {
      const qcC = qcs.get(2);
      const t = tc(api, 5);
      if (c === null || qcC === undefined || t === null) return false;
      const root = api.stateRoot(nodeHash(c));
      if (root === null) return false;
      const d: Node = {
        view: 6,
        height: 2,
        parent: nodeHash(c),
        justify: qcC,
        command: new Uint8Array([1, 0xdd]),
        configHash: validatorConfigHash(stableConfig(api.validators)),
        proposer: api.validators.leader(6).publicKey,
        stateRoot: root,
      };
      const m = await api.propose(d, t);
      api.broadcast(m);
      await voteFor(api, d);
      return true;
    });
  };

  const voteFor = async (api: AdversaryApi, n: Node): Promise<void> => {
    const leader = api.validators.leader(n.view + 1).publicKey;
    const v = await api.vote(n.view, nodeHash(n));
    for (const id of api.endpointsOf(leader)) api.send(id, v);
  };

  const record = (m: NewViewMessage): void => {
    const byView = newViews.get(m.view) ?? new Map<string, NewViewMessage>();
    byView.set(toHex(m.signer), m);
    newViews.set(m.view, byView);
  };

  return {
    // deno-lint-ignore require-await
    async onSend(api, m: ConsensusMessage) {
      // Its Engine's own proposals are replaced by the script, except view 5's real one, which
      // only C (endpoint 3) sees.
      if (m.type === "propose") {
        if (m.node.view === 5) api.send(3, m);
        return;
      }
      // Its NEW-VIEWs would show the others QCs it keeps to itself: they only count here. Its
      // Engine's votes are not sent either: the script votes.
      if (m.type === "new-view") record(m);
    },
    async onDeliver(api, _from, m) {
      if (m.type === "propose") {
        if (!nodes.has(m.node.view)) nodes.set(m.node.view, m.node);
        if (m.node.view >= 7) await voteFor(api, m.node);
      }
      if (m.type === "new-view") record(m);
      await step(api);
    },
  };
}
