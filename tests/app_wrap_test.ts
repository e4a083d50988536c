/**
 * `wrapApplication` (src/app.ts): the runtime, the state tree and the simulator wrap the
 * Application; a wrapper passes every hook it does not replace through, so none is lost (three
 * wrappers once dropped `onEvidence`, and a user's `stateRoot` would have been dropped the same
 * way).
 */
import assert from "node:assert/strict";
import { type Application, wrapApplication } from "../src/app.ts";

Deno.test("wrapApplication passes every hook it does not replace, bound to the Application", async () => {
  const calls: string[] = [];
  class Full implements Application {
    readonly name = "full";
    produceCommand() {
      calls.push(`produce ${this.name}`);
      return { command: new Uint8Array() };
    }
    validateNode() {
      calls.push(`validate ${this.name}`);
      return { ok: true as const, updates: [] };
    }
    onCommit() {
      calls.push(`commit ${this.name}`);
    }
    stateRoot() {
      calls.push(`root ${this.name}`);
      return new Uint8Array(32);
    }
    onEvidence() {
      calls.push(`evidence ${this.name}`);
    }
  }
  const app = new Full();
  const wrapped = wrapApplication(app, {
    onCommit: async (n) => {
      calls.push("wrapper");
      await app.onCommit();
      void n;
    },
  });
  const request = {} as never;
  await wrapped.produceCommand(request);
  await wrapped.validateNode(request);
  await wrapped.stateRoot!(request);
  await wrapped.onEvidence!(request);
  await wrapped.onCommit!(request);
  assert.deepEqual(calls, [
    "produce full",
    "validate full",
    "root full",
    "evidence full",
    "wrapper",
    "commit full",
  ]);
  // Hooks the Application lacks stay absent.
  const bare = wrapApplication({
    produceCommand: () => ({ command: new Uint8Array() }),
    validateNode: () => ({ ok: true, updates: [] }),
  }, {});
  assert.equal(bare.stateRoot, undefined);
  assert.equal(bare.onEvidence, undefined);
  assert.equal(bare.onCommit, undefined);
});
