/**
 * Verification of everything a peer signs: messages, QCs, TCs and fetched Nodes. The shell runs
 * it before a message reaches the core (signatures are async Web Crypto work). See
 * SPECIFICATION.md section 3.2.
 *
 * @module
 */
import { genesisQC, nodeHash, signedBytes } from "../codec.ts";
import type { Verifier } from "../crypto.ts";
import type {
  ConsensusMessage,
  Node,
  QuorumCertificate,
  SignerSignature,
  TimeoutCertificate,
} from "../types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../types.ts";
import type { QuorumRule } from "./reconfig.ts";

/**
 * The outcome of a verification. `message`, when present, is what to use instead of the message
 * verified (a NEW-VIEW without a highest TC that no set this replica knows signed).
 */
export type Verdict =
  | { ok: true; message?: ConsensusMessage }
  | { ok: false; reason: string; detail: string };

const OK: Verdict = { ok: true };

function fail(reason: string, detail: string): Verdict {
  return { ok: false, reason, detail };
}

/**
 * Verifies messages of one chain against the validator sets recently in force (Spec 3.4): a
 * certificate must be a quorum of one of the rules `rules()` gives, with valid signatures; the
 * core then checks it against the rule of the Node it certifies. Caches QCs whose signatures
 * verified (a QC's signatures are checked once, however many messages carry it): a QC hits the
 * cache only when its view, Node hash and signatures (in order) equal a verified one's, which is
 * to say its encoding does. The quorum is counted on every check.
 *
 * @example
 * ```ts
 * import { MessageVerifier } from "./verify.ts";
 * import { QuorumRule } from "./reconfig.ts";
 * import { ed25519Verifier } from "../crypto.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const key = new Uint8Array(32).fill(1);
 * const rule = new QuorumRule([new ValidatorSet([{ publicKey: key, power: 1 }])]);
 * const v = new MessageVerifier("chain", () => [rule], ed25519Verifier());
 * const verdict = await v.verifyMessage({
 *   type: "vote",
 *   view: 1,
 *   nodeHash: new Uint8Array(32),
 *   signer: key,
 *   signature: new Uint8Array(64),
 * });
 * console.log(verdict.ok); // false: the signature does not verify
 * ```
 */
export class MessageVerifier {
  /** Verified QCs of this chain by `view:nodeHash` (hex): the last one verified for each. */
  readonly #verified = new Map<string, QuorumCertificate>();
  readonly #cacheMax: number;

  /**
   * @param chainId the chain every certificate must name
   * @param rules the rules recently in force (who may sign, with what power)
   * @param verifier signature checks
   * @param cacheMax most verified QCs remembered (default 4096)
   */
  constructor(
    readonly chainId: string,
    readonly rules: () => readonly QuorumRule[],
    readonly verifier: Verifier,
    cacheMax = 4096,
  ) {
    this.#cacheMax = cacheMax;
  }

  /**
   * Spec 3.2 step 1: a QC, a quorum of `rule` (Spec 3.4 step 3) or, without one, of one of the
   * rules recently in force.
   */
  async verifyQC(qc: QuorumCertificate, rule?: QuorumRule): Promise<Verdict> {
    if (qc.chainId !== this.chainId) return fail("wrong-chain", `qc chain ${qc.chainId}`);
    if (qc.view === 0) {
      // The genesis QC is valid by rule, and it is the only QC of view 0.
      const g = genesisQC(this.chainId);
      if (bytesEqual(qc.nodeHash, g.nodeHash) && qc.signatures.length === 0) return OK;
      return fail("bad-genesis-qc", "a view-0 QC must be the genesis QC");
    }
    // Keyed cheaply (no encoding, no hash: a fetched answer's QCs are all new); a hit must
    // equal the verified QC field by field (the chain id is checked above).
    const count = this.#count(qc.signatures, rule);
    if (!count.ok) return fail(count.reason, `qc: ${count.detail}`);
    const key = `${qc.view}:${toHex(qc.nodeHash)}`;
    const known = this.#verified.get(key);
    if (known !== undefined && sameSignatures(known.signatures, qc.signatures)) return OK;
    const v = await this.#verifySignatures(
      qc.signatures,
      signedBytes(SignatureDomain.vote, this.chainId, qc.view, qc.nodeHash),
      "qc",
    );
    if (v.ok) this.#remember(key, qc);
    return v;
  }

  /** Spec 3.2 step 2: a TC. */
  verifyTC(tc: TimeoutCertificate): Promise<Verdict> {
    if (tc.chainId !== this.chainId) {
      return Promise.resolve(fail("wrong-chain", `tc chain ${tc.chainId}`));
    }
    const count = this.#count(tc.signatures);
    if (!count.ok) return Promise.resolve(fail(count.reason, `tc: ${count.detail}`));
    return this.#verifySignatures(
      tc.signatures,
      signedBytes(SignatureDomain.newView, this.chainId, tc.view),
      "tc",
    );
  }

  /**
   * Membership, distinct signers and quorum power (cheap, before any signature): by `rule`, or
   * by the first of the recent rules that counts a quorum (else the newest one's reason).
   */
  #count(
    signatures: readonly SignerSignature[],
    rule?: QuorumRule,
  ): { ok: true } | { ok: false; reason: string; detail: string } {
    if (rule !== undefined) return rule.countQuorum(signatures);
    const rules = this.rules();
    let last: { ok: false; reason: string; detail: string } = {
      ok: false,
      reason: "unknown-signer",
      detail: "no validator set",
    };
    for (let i = rules.length - 1; i >= 0; i--) {
      const c = rules[i]!.countQuorum(signatures);
      if (c.ok) return c;
      if (i === rules.length - 1) last = c;
    }
    return last;
  }

  async #verifySignatures(
    signatures: readonly SignerSignature[],
    bytes: Uint8Array,
    what: string,
  ): Promise<Verdict> {
    const results = await Promise.all(
      signatures.map((s) => this.verifier.verify(s.signer, bytes, s.signature)),
    );
    const bad = results.indexOf(false);
    if (bad >= 0) return fail("bad-signature", `${what} signer ${toHex(signatures[bad]!.signer)}`);
    return OK;
  }

  #remember(key: string, qc: QuorumCertificate): void {
    if (this.#verified.size >= this.#cacheMax) this.#verified.clear();
    this.#verified.set(key, qc);
  }

  async #verifySigned(
    signer: Uint8Array,
    bytes: Uint8Array,
    signature: Uint8Array,
    what: string,
  ): Promise<Verdict> {
    if (!this.rules().some((r) => r.isMember(signer))) {
      return fail("unknown-signer", `${what} from ${toHex(signer)}`);
    }
    if (!(await this.verifier.verify(signer, bytes, signature))) {
      return fail("bad-signature", `${what} from ${toHex(signer)}`);
    }
    return OK;
  }

  /** Spec 3.2 step 3: a Node's justify QC (for fetched Nodes, which carry no signature). */
  verifyNode(node: Node): Promise<Verdict> {
    return this.verifyQC(node.justify);
  }

  /** Spec 3.2 step 4: a consensus message, with every certificate it carries. */
  async verifyMessage(msg: ConsensusMessage): Promise<Verdict> {
    switch (msg.type) {
      case "propose": {
        const n = msg.node;
        const sig = await this.#verifySigned(
          n.proposer,
          signedBytes(SignatureDomain.propose, this.chainId, n.view, nodeHash(n)),
          msg.signature,
          "propose",
        );
        if (!sig.ok) return sig;
        const qc = await this.verifyQC(n.justify);
        if (!qc.ok || msg.tc === null) return qc;
        return this.verifyTC(msg.tc);
      }
      case "vote":
        if (msg.view === 0) return fail("bad-view", "no votes in view 0");
        return this.#verifySigned(
          msg.signer,
          signedBytes(SignatureDomain.vote, this.chainId, msg.view, msg.nodeHash),
          msg.signature,
          "vote",
        );
      case "new-view": {
        const sig = await this.#verifySigned(
          msg.signer,
          signedBytes(SignatureDomain.newView, this.chainId, msg.view),
          msg.signature,
          "new-view",
        );
        if (!sig.ok) return sig;
        if (msg.vote !== null) {
          const vote = await this.#verifySigned(
            msg.signer,
            signedBytes(SignatureDomain.vote, this.chainId, msg.view, msg.vote.nodeHash),
            msg.vote.signature,
            "new-view vote",
          );
          if (!vote.ok) return vote;
        }
        const qc = await this.verifyQC(msg.highQC);
        if (!qc.ok || msg.highTC === null) return qc;
        const tc = await this.verifyTC(msg.highTC);
        // An old TC of a set this replica no longer knows (Spec 3.4 step 7) says nothing about
        // the message's view: NEW-VIEW signs its view only, so the rest of it still counts.
        if (!tc.ok && (tc.reason === "unknown-signer" || tc.reason === "no-quorum")) {
          return { ok: true, message: { ...msg, highTC: null } };
        }
        return tc;
      }
    }
  }
}

/** Same signers and signatures, in the same order. */
function sameSignatures(a: readonly SignerSignature[], b: readonly SignerSignature[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!bytesEqual(x.signer, y.signer) || !bytesEqual(x.signature, y.signature)) return false;
  }
  return true;
}
