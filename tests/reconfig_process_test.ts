/**
 * Validator-set changes with real processes (SPECIFICATION.md 3.4, 15.2, 15.4): replicas of the key-value
 * store run as `deno run examples/kv_store/replica.ts` children; the operator's signed change
 * commands go through `POST /commands` like any client command. Every child is stopped and every
 * directory removed in `finally`.
 */
import assert from "node:assert/strict";
import {
  compareChains,
  compareHeads,
  getKv,
  ProcessCluster,
  tryStatus,
} from "../examples/kv_store/cluster.ts";
import { committedHeights, pollUntil } from "./support/process_cluster.ts";
import { validatorsCommand } from "../examples/kv_store/validators.ts";
import { Writer } from "./support/writer.ts";
import { ed25519Signer, toHex } from "../mod.ts";
import { parseSecretKey } from "../src/cli/config.ts";

/** The committed validator keys (hex) of replica `i`, once no change is being handed over. */
async function settledSet(cluster: ProcessCluster, i: number): Promise<string[] | null> {
  const s = await tryStatus(cluster.urls[i]!);
  if (s?.validators === undefined || s.validators.next !== null) return null;
  return s.validators.set.map((v) => v.publicKey).sort();
}

Deno.test(
  "4 replicas under client load add a 5th (started later: it catches up, joins and votes) and remove one: every acknowledged write is on every replica that remains",
  async () => {
    const cluster = await ProcessCluster.create({ replicas: 4, joining: 1, prefix: "it-reconf-" });
    let load: Writer | null = null;
    try {
      for (let i = 0; i < 4; i++) cluster.start(i);
      await cluster.waitReady(30_000, [0, 1, 2, 3]);
      load = new Writer(cluster);
      await pollUntil("100 writes", () => Promise.resolve(load!.acked.size >= 100), {
        timeoutMs: 60_000,
        cluster,
      });
      // The fifth member starts late, catches up as a follower.
      cluster.start(4);
      await cluster.waitReady(30_000, [4]);
      const keyPath = `${cluster.dir}/operator.key`;
      const operator = ed25519Signer(parseSecretKey(await Deno.readTextFile(keyPath), keyPath));
      const change = async (via: number, name: string, power: number): Promise<void> => {
        const v = cluster.config.validators.find((x) => x.name === name)!;
        const command = await validatorsCommand(operator, {
          chainId: cluster.config.chainId,
          updates: [{ publicKey: v.publicKey, power }],
        });
        const r = await fetch(`${cluster.urls[via]}/commands?wait=commit`, {
          method: "POST",
          headers: { "content-type": "application/octet-stream" },
          body: command.slice(),
        });
        assert.equal(r.status, 200, `${name}=${power}: ${await r.text()}`);
      };
      const keys = cluster.config.validators.map((v) => toHex(v.publicKey));

      await change(1, "replica-4", 1);
      const five = [...keys].sort();
      await pollUntil(
        "all five hand over to the five-validator set",
        async () => {
          const sets = await Promise.all([0, 1, 2, 3, 4].map((i) => settledSet(cluster, i)));
          return sets.every((s) => JSON.stringify(s) === JSON.stringify(five));
        },
        { timeoutMs: 60_000, cluster },
      );
      const votedAt = (await tryStatus(cluster.urls[4]!))!.lastVotedView ?? 0;
      await pollUntil(
        "replica-4 votes",
        async () => {
          return ((await tryStatus(cluster.urls[4]!))?.lastVotedView ?? 0) > votedAt;
        },
        { timeoutMs: 30_000, cluster },
      );

      await change(2, "replica-0", 0);
      const rest = keys.slice(1).sort();
      await pollUntil(
        "replicas 1-4 hand over to the set without replica-0",
        async () => {
          const sets = await Promise.all([1, 2, 3, 4].map((i) => settledSet(cluster, i)));
          return sets.every((s) => JSON.stringify(s) === JSON.stringify(rest));
        },
        { timeoutMs: 60_000, cluster },
      );
      // A light client trusting only the genesis set (the cluster file) follows both changes
      // from proofs (SPECIFICATION.md 15.1-15.2): the genesis set no longer certifies the chain
      // at the replicas' height, so it starts from height 1 and verifies every change.
      const headNow = (await tryStatus(cluster.urls[1]!))!.committed.height;
      const light = await new Deno.Command(Deno.execPath(), {
        args: [
          "task",
          "-q",
          "light-client",
          "--config",
          `${cluster.dir}/cluster.json`,
          "--follow",
          "20",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const lightOut = new TextDecoder().decode(light.stdout);
      assert.equal(light.code, 0, lightOut + new TextDecoder().decode(light.stderr));
      assert.match(lightOut, /validators after height \d+: handing over from 4 validators to 5/);
      assert.match(lightOut, /validators after height \d+: handing over from 5 validators to 4/);
      const lastLine = lightOut.trim().split("\n").at(-1)!;
      const verified = Number(/^verified (\d+) commits$/.exec(lastLine)?.[1] ?? 0);
      assert.ok(verified >= headNow - 20, `${lastLine} (the replicas were at ${headNow})`);
      assert.doesNotMatch(lightOut, /refused .*: (bad-|not-linked|config-mismatch .*carried)/);

      // A validator of the new set is wiped and joins by snapshot (SPECIFICATION.md 15.4): the
      // genesis set no longer certifies the snapshots, so it learns the set from commit proofs
      // first, as the light client did, then installs and votes again.
      await cluster.kill(3, "SIGKILL");
      await cluster.wipe(3);
      cluster.start(3, ["--state-sync"]);
      await cluster.waitReady(120_000, [3]);
      const joinLog = await Deno.readTextFile(cluster.logPath(3));
      const syncLines = joinLog.split("\n").filter((l) => l.includes('"sync:')).join("\n");
      assert.match(joinLog, /"sync:followed-validators"/, syncLines);
      assert.match(joinLog, /"sync:installed"/, syncLines);

      await cluster.kill(0, "SIGTERM");
      const remaining = [1, 2, 3, 4];
      const acked = load.acked.size;
      await pollUntil(
        "writes are acknowledged by the four remaining validators",
        () => Promise.resolve(load!.acked.size >= acked + 50),
        { timeoutMs: 60_000, cluster },
      );
      await load.stop();

      await pollUntil(
        "every remaining replica commits the last acknowledged write",
        async () => (await committedHeights(cluster, remaining)).every((h) => h >= load!.maxHeight),
        { timeoutMs: 30_000, cluster },
      );
      for (const [key, value] of load.acked) {
        for (const i of remaining) {
          const got = await getKv(cluster.urls[i]!, key);
          assert.equal(
            got === null ? null : new TextDecoder().decode(got),
            value,
            `${key} at ${i}`,
          );
        }
      }
      // Replica 3 holds the Nodes from its snapshot's history on, so whole chains are compared
      // without it, and the committed heads with it.
      const chains = await compareChains([1, 2, 4].map((i) => cluster.urls[i]!));
      assert.ok(chains.agree, `the remaining replicas' chains agree: ${JSON.stringify(chains)}`);
      const heads = await compareHeads(remaining.map((i) => cluster.urls[i]!));
      assert.ok(heads.agree && heads.commonHeight > 0, JSON.stringify(heads));
    } finally {
      await load?.stop();
      await cluster.close();
    }
  },
);
