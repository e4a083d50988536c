/**
 * Evidence handed to the Application becomes a validator-set change that removes the offender
 * (SPECIFICATION.md 3.4 and 16): the Application queues each record it is given, the leader
 * proposes a command carrying it, and every replica checks the record with `verifyEvidence`
 * against the set in force before returning the update that sets the offender's power to 0.
 */
import assert from "node:assert/strict";
import type { Application } from "../src/app.ts";
import { readValidatorConfig } from "../src/consensus/reconfig.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import {
  decodeEvidence,
  encodeEvidence,
  type EquivocationEvidence,
  evidenceOffender,
  verifyEvidence,
} from "../src/evidence.ts";
import { counterApp } from "../src/testing/counter_app.ts";
import { quietFaults } from "../src/testing/scenario.ts";
import { runSimulation } from "../src/testing/sim.ts";
import { bytesEqual, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";

const SLASH = 0xee;
const signers = [0, 1, 2, 3].map((i) => ed25519Signer(deriveSecretKey(`sim-validator-${i}`)));
const GENESIS = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));

/**
 * The simulator's counter, plus removal of proven equivocators: a command `[0xee, record]`
 * removes the record's offender when the record verifies against the set in force.
 */
function slashingApp(removed: string[]): Application {
  const base = counterApp();
  const pending: EquivocationEvidence[] = [];
  return {
    async produceCommand(request) {
      const config = await readValidatorConfig(request.state);
      const set = config?.set ?? GENESIS;
      while (pending.length > 0 && set.get(evidenceOffender(pending[0]!)) === undefined) {
        pending.shift(); // already removed
      }
      const e = pending[0];
      if (e !== undefined && (config === null || config.next === null)) {
        return { command: new Uint8Array([SLASH, ...encodeEvidence(e)]) };
      }
      return base.produceCommand(request);
    },
    async validateNode(request) {
      const command = request.node.command;
      if (command[0] !== SLASH) return base.validateNode(request);
      const evidence = decodeEvidence(command.subarray(1));
      if (evidence === null) return { ok: false, reason: "malformed evidence" };
      const config = await readValidatorConfig(request.state);
      if (config !== null && config.next !== null) {
        return { ok: false, reason: "validator change in progress" };
      }
      const set = config?.set ?? GENESIS;
      const verdict = await verifyEvidence(evidence, {
        chainId: "sim",
        validators: set,
        verifier: ed25519Verifier(),
      });
      if (!verdict.ok) return { ok: false, reason: `evidence refused: ${verdict.reason}` };
      const offender = evidenceOffender(evidence);
      removed.push(toHex(offender));
      return { ok: true, updates: [], validatorUpdates: [{ publicKey: offender, power: 0 }] };
    },
    onEvidence({ evidence }) {
      pending.push(evidence);
    },
  };
}

Deno.test("sim: a double-voter's evidence removes it from the validator set, and the rest stay safe and live", async () => {
  for (const behaviour of ["double-voter", "equivocator"] as const) {
    const removed: string[] = [];
    const r = await runSimulation({
      seed: 5,
      powers: [1, 1, 1, 1],
      behaviours: ["honest", "honest", "honest", behaviour],
      faults: quietFaults(6000),
      signatures: "ed25519",
      app: () => slashingApp(removed),
    });
    assert.deepEqual(r.safetyViolations, [], behaviour);
    assert.deepEqual(r.livenessFailures, [], behaviour);
    assert.ok(r.evidence.flat().length > 0, `${behaviour}: no evidence`);
    assert.ok(r.handovers.completed >= 1, `${behaviour}: the removal was not handed over`);
    const offender = toHex(signers[3]!.publicKey);
    assert.ok(removed.length > 0 && removed.every((k) => k === offender), removed.join(","));
  }
});

Deno.test("forged or foreign evidence removes no one", async () => {
  const removed: string[] = [];
  const app = slashingApp(removed);
  const state = { get: () => Promise.resolve(null) };
  const vote = async (signer = signers[1]!, view = 4, fill = 1) => {
    const nodeHash = new Uint8Array(32).fill(fill);
    const { signedBytes } = await import("../src/codec.ts");
    const { SignatureDomain } = await import("../src/types.ts");
    const signature = await signer.sign(signedBytes(SignatureDomain.vote, "sim", view, nodeHash));
    return { type: "vote" as const, view, nodeHash, signer: signer.publicKey, signature };
  };
  const validate = (evidence: EquivocationEvidence) =>
    Promise.resolve(app.validateNode({
      node: {
        view: 9,
        height: 3,
        parent: new Uint8Array(32),
        justify: { chainId: "sim", view: 8, nodeHash: new Uint8Array(32), signatures: [] },
        command: new Uint8Array([SLASH, ...encodeEvidence(evidence)]),
        configHash: new Uint8Array(32),
        proposer: signers[0]!.publicKey,
        stateRoot: new Uint8Array(0),
      },
      hash: new Uint8Array(32),
      state,
    }));
  // Genuine: two votes of validator 1 in view 4 for different Nodes.
  const genuine = {
    kind: "double-vote" as const,
    first: await vote(),
    second: await vote(undefined, 4, 2),
  };
  const ok = await validate(genuine);
  assert.ok(ok.ok && ok.validatorUpdates?.length === 1);
  assert.ok(ok.ok && bytesEqual(ok.validatorUpdates![0]!.publicKey, signers[1]!.publicKey));
  // The same vote twice, votes of different views, a bad signature, a stranger's votes.
  const bad = new Uint8Array(genuine.second.signature);
  bad[0]! ^= 1;
  const stranger = ed25519Signer(deriveSecretKey("stranger"));
  for (
    const forged of [
      { ...genuine, second: genuine.first },
      { ...genuine, second: await vote(undefined, 5, 2) },
      { ...genuine, second: { ...genuine.second, signature: bad } },
      {
        kind: "double-vote" as const,
        first: await vote(stranger),
        second: await vote(stranger, 4, 2),
      },
    ]
  ) {
    const verdict = await validate(forged);
    assert.equal(verdict.ok, false, JSON.stringify(verdict));
  }
  assert.equal(removed.length, 1);
});
