/**
 * Model-based conformance: a trace of the spin model (`model/hotstuff.pml`) replayed against the
 * TypeScript core (`src/consensus/`). Each honest replica of the model is a real {@link Core};
 * each model step becomes the core input it stands for (a PROPOSE, a fetched Node, a NEW-VIEW
 * relaying a QC or a TC), and after it the core must hold what the model says: its view, last
 * voted view, lock, highest QC and TC, committed head, whether it voted and what it committed.
 * See docs/MODEL.md.
 *
 * @module
 */
import { genesisNode, genesisQC, nodeHash } from "../src/codec.ts";
import { Core, type CoreInput, type CoreOutput } from "../src/consensus/core.ts";
import type { StoredNode } from "../src/storage/storage.ts";
import type { Hash, Node, PublicKey, QuorumCertificate, TimeoutCertificate } from "../src/types.ts";
import { toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";
import { BYZANTINE, type ModelEvent, type ModelNode, type ModelStep } from "./spin.ts";

const CHAIN = "model";
/** Keys sorted as the model numbers validators: validator i has key [i + 1, i + 1, ...]. */
const KEYS: PublicKey[] = [0, 1, 2, 3].map((i) => new Uint8Array(32).fill(i + 1));
const SIG = new Uint8Array(64);

/** A step where the core and the model disagree. */
export interface Divergence {
  /** Index of the model event. */
  readonly index: number;
  /** What differs. */
  readonly what: string;
}

/** The model's validator set: four equal powers, leader of view v = validator v mod 4. */
export function modelValidators(): ValidatorSet {
  const set = new ValidatorSet(KEYS.map((publicKey) => ({ publicKey, power: 1 })));
  for (let v = 0; v < 8; v++) {
    if (set.leader(v).publicKey !== set.validators[v % 4]!.publicKey) {
      throw new Error("the model's leader schedule (v mod 4) is not the core's");
    }
  }
  return set;
}

class Replay {
  readonly set = modelValidators();
  readonly nodes = new Map<number, { node: Node; hash: Hash; model: ModelNode }>();
  readonly byHash = new Map<string, number>();
  readonly cores = new Map<number, Core>();
  now = 1;

  constructor() {
    const g = genesisNode(CHAIN);
    const hash = nodeHash(g);
    this.nodes.set(0, {
      node: g,
      hash,
      model: { kind: "node", n: 0, view: 0, parent: 0, justify: 0, by: 0, tc: 0 },
    });
    this.byHash.set(toHex(hash), 0);
    const root: StoredNode = { node: g, hash, updates: [] };
    for (let r = 0; r < 4; r++) {
      if (r === BYZANTINE) continue;
      const core = new Core(
        { chainId: CHAIN, validators: this.set, me: KEYS[r]! },
        { safety: null, root, uncommitted: [] },
      );
      core.step({ type: "start", now: 0 });
      this.cores.set(r, core);
    }
  }

  qc(n: number): QuorumCertificate {
    if (n === 0) return genesisQC(CHAIN);
    const e = this.nodes.get(n)!;
    const signatures = KEYS.slice(0, 3).map((signer) => ({ signer, signature: SIG }));
    return { chainId: CHAIN, view: e.node.view, nodeHash: e.hash, signatures };
  }

  tc(view: number): TimeoutCertificate {
    const signatures = KEYS.slice(0, 3).map((signer) => ({ signer, signature: SIG }));
    return { chainId: CHAIN, view, signatures };
  }

  addNode(m: ModelNode): void {
    const parent = this.nodes.get(m.parent)!;
    const node: Node = {
      view: m.view,
      height: parent.node.height + 1,
      parent: parent.hash,
      justify: this.qc(m.justify),
      command: new Uint8Array([m.n]),
      configHash: validatorConfigHash(stableConfig(this.set)),
      proposer: KEYS[m.by]!,
      stateRoot: new Uint8Array(0),
    };
    const hash = nodeHash(node);
    this.nodes.set(m.n, { node, hash, model: m });
    this.byHash.set(toHex(hash), m.n);
  }

  /** Feeds one input and answers every execution it asks for with "ok". */
  feed(core: Core, input: CoreInput): CoreOutput[] {
    const outs = [core.step(input)];
    for (let i = 0; i < outs.length; i++) {
      for (const x of outs[i]!.execute) {
        const now = this.now++;
        outs.push(
          core.step({ type: "executed", hash: x.hash, result: { ok: true, updates: [] }, now }),
        );
      }
    }
    return outs;
  }

  input(s: ModelStep): CoreInput {
    const now = this.now++;
    const byz = KEYS[BYZANTINE]!;
    switch (s.kind) {
      case "recv": {
        const e = this.nodes.get(s.n)!;
        const tc = e.model.tc === 0 ? null : this.tc(e.model.tc);
        const message = { type: "propose" as const, node: e.node, tc, signature: SIG };
        return { type: "message", from: e.node.proposer, message, now };
      }
      case "fetch":
        return { type: "fetched", from: byz, nodes: [this.nodes.get(s.n)!.node], now };
      case "qc":
      case "tc": {
        // A NEW-VIEW for view 0 is stale at every replica: it only relays its certificates.
        const message = {
          type: "new-view" as const,
          view: 0,
          highQC: s.kind === "qc" ? this.qc(s.n) : genesisQC(CHAIN),
          highTC: s.kind === "tc" ? this.tc(s.tc) : null,
          vote: null,
          signer: byz,
          signature: SIG,
        };
        return { type: "message", from: byz, message, now };
      }
    }
  }

  id(hash: Hash): number | string {
    return this.byHash.get(toHex(hash)) ?? `unknown ${toHex(hash).slice(0, 8)}`;
  }

  /** Replays one step; returns what differs (empty when the core agrees). */
  step(s: ModelStep): string[] {
    const core = this.cores.get(s.r)!;
    const outs = this.feed(core, this.input(s));
    const votes = outs.flatMap((o) => o.sends).filter((x) => x.message.type === "vote");
    const commits = outs.flatMap((o) => o.committed).map((c) => this.id(c.hash));
    const safety = core.safety;
    const got = {
      view: core.view,
      voted: safety.lastVotedView,
      lock: this.id(safety.lockedQC.nodeHash),
      hqc: this.id(safety.highQC.nodeHash),
      htc: safety.highTC?.view ?? 0,
      root: this.id(core.tree.root.hash),
      vote: votes.length > 0,
      commit: commits.length === 0 ? null : commits[commits.length - 1]!,
    };
    const want = s.after;
    const diffs: string[] = [];
    for (const k of Object.keys(got) as (keyof typeof got)[]) {
      if (got[k] !== want[k]) diffs.push(`${k}: core ${got[k]}, model ${want[k]}`);
    }
    return diffs;
  }
}

/**
 * Replays a model trace against three fresh cores (the honest replicas 0, 2, 3). Returns the
 * first divergence, or null when every core took the model's decision at every step.
 */
export function replayTrace(events: readonly ModelEvent[]): Divergence | null {
  const replay = new Replay();
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    if (e.kind === "violation") continue;
    if (e.kind === "node") {
      replay.addNode(e);
      continue;
    }
    const diffs = replay.step(e);
    if (diffs.length > 0) {
      return { index: i, what: `r${e.r} ${e.kind} ${e.n}: ${diffs.join("; ")}` };
    }
  }
  return null;
}
