/**
 * Four replicas on four hosts made as network namespaces (`src/testing/multihost.ts`): link down,
 * a partition and a crash, then every acknowledged write on every replica. Skipped, with the
 * reason printed, where namespaces cannot be made (not root, no iproute2, not Linux).
 */
import assert from "node:assert/strict";
import {
  formatMultihostSummary,
  namespacesUnavailable,
  runMultihost,
} from "../src/testing/multihost.ts";

const unavailable = await namespacesUnavailable();
if (unavailable !== null) console.log(`multihost_test: skipped: ${unavailable}`);

Deno.test({
  name: "4 hosts as namespaces, link down, partition of one host from two, a crash: nothing lost",
  ignore: unavailable !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const report = await runMultihost({ durationS: 12 });
    console.log(formatMultihostSummary(report));
    assert.deepEqual(report.faults.length, 3);
    assert.equal(report.links, "encrypted");
    assert.ok(report.acknowledgedWrites > 0, "no write was acknowledged");
    assert.equal(report.lost, 0);
    assert.equal(report.disagreements, 0);
    const namespaces = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout,
    );
    assert.ok(!namespaces.includes(`hs${Deno.pid % 100_000}-`), "a namespace was left behind");
  },
});
