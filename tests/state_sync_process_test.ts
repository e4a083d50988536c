/**
 * Snapshot state sync with real processes: a replica whose data directory is wiped restarts with
 * `--state-sync` while a client keeps writing, installs an anchored snapshot, and then its votes
 * are needed: another replica is stopped, and the cluster (3 of 4, quorum 3) keeps committing. A
 * replica stopped and restarted far behind replaces its store by a snapshot the same way.
 * Every child is stopped (and every directory removed) in `finally`.
 */
import assert from "node:assert/strict";
import {
  compareChains,
  getKv,
  ProcessCluster,
  putKv,
  sleep,
} from "../examples/kv_store/cluster.ts";
import { committedHeights, pollUntil } from "./support/process_cluster.ts";

/** Nodes committed before the wiped replica joins. */
const NODES_BEFORE = 300;
const SYNC_ARGS = ["--state-checkpoint-interval", "32"];

/** Replica 2 stops: 0, 1 and 3 are exactly a quorum, so commits continue only with 3's votes. */
async function commitsNeedReplica3(cluster: ProcessCluster): Promise<void> {
  await cluster.kill(2, "SIGTERM");
  const before = Math.max(...(await committedHeights(cluster, [0, 1, 3])));
  await pollUntil(
    "commits continue with replica 3's votes",
    async () => Math.min(...(await committedHeights(cluster, [0, 1, 3]))) >= before + 5,
    { timeoutMs: 60_000, cluster },
  );
}

Deno.test("4 replica processes: a wiped replica joins by snapshot under client load, then its votes carry the cluster", async () => {
  const cluster = await ProcessCluster.create({ replicas: 4, prefix: "it-sync-" });
  const acked = new Map<string, string>();
  const stop = new AbortController();
  let writer: Promise<void> = Promise.resolve();
  try {
    for (let i = 0; i < 4; i++) cluster.start(i, SYNC_ARGS);
    await cluster.waitReady();
    await putKv(cluster.urls[0]!, "early", new TextEncoder().encode("bird"));
    await pollUntil(
      `the cluster commits ${NODES_BEFORE} Nodes`,
      async () => Math.min(...(await committedHeights(cluster, [0, 1, 2]))) >= NODES_BEFORE,
      { timeoutMs: 240_000, cluster },
    );
    writer = (async () => {
      for (let n = 0; !stop.signal.aborted; n++) {
        const url = cluster.urls[n % 2]!; // replicas 0 and 1 stay up throughout
        const value = `value ${n}`;
        try {
          await putKv(url, `w-${n}`, new TextEncoder().encode(value), 20_000);
          acked.set(`w-${n}`, value);
        } catch {
          await sleep(50);
        }
      }
    })();
    await cluster.kill(3, "SIGKILL");
    await cluster.wipe(3);
    const t0 = performance.now();
    cluster.start(3, [...SYNC_ARGS, "--state-sync"]);
    await cluster.waitReady(60_000, [3]);
    const readyMs = performance.now() - t0;
    const log = await Deno.readTextFile(cluster.logPath(3));
    const installed = log.split("\n").filter((l) => l.includes('"sync:installed"'));
    assert.equal(installed.length, 1, `no sync:installed line:\n${await cluster.logTail(3, 20)}`);
    const at = JSON.parse(installed[0]!) as { height: number; keys: number };
    assert.ok(at.height >= NODES_BEFORE - 64, installed[0]);
    const target = Math.max(...(await committedHeights(cluster, [0, 1, 2])));
    await pollUntil(
      `the joined replica reaches height ${target}`,
      async () => (await committedHeights(cluster, [3]))[0]! >= target,
      { timeoutMs: 60_000, cluster },
    );
    await commitsNeedReplica3(cluster);
    stop.abort();
    await writer;
    assert.ok(acked.size > 0, "some writes were acknowledged during the join");
    assert.equal(new TextDecoder().decode((await getKv(cluster.urls[3]!, "early"))!), "bird");
    await pollUntil(
      "replica 3 holds every acknowledged write",
      async () => {
        for (const [key, value] of acked) {
          const got = await getKv(cluster.urls[3]!, key);
          if (got === null || new TextDecoder().decode(got) !== value) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, cluster },
    );
    const chains = await compareChains([0, 1, 3].map((i) => cluster.urls[i]!));
    assert.ok(chains.agree, JSON.stringify(chains));
    console.log(
      `joined by snapshot at height ${at.height} (${at.keys} keys) in ${Math.round(readyMs)} ms`,
    );
  } finally {
    stop.abort();
    await writer;
    await cluster.close();
  }
});

Deno.test("4 replica processes: a replica restarted far behind replaces its store by a snapshot, keeps its votes, and its votes carry the cluster", async () => {
  const cluster = await ProcessCluster.create({ replicas: 4, prefix: "it-sync-behind-" });
  const lag = 64;
  try {
    for (let i = 0; i < 4; i++) cluster.start(i, SYNC_ARGS);
    await cluster.waitReady();
    await putKv(cluster.urls[0]!, "before", new TextEncoder().encode("outage"));
    await pollUntil(
      "the cluster commits 100 Nodes",
      async () => Math.min(...(await committedHeights(cluster, [0, 1, 2, 3]))) >= 100,
      { timeoutMs: 240_000, cluster },
    );
    // Its height when asked, a little below the height it stops at.
    const [stoppedAt] = await committedHeights(cluster, [3]);
    await cluster.stop(3);
    await putKv(cluster.urls[1]!, "during", new TextEncoder().encode("the outage"));
    await pollUntil(
      `the others ${lag + 3 * 32} heights beyond it`,
      async () =>
        Math.min(...(await committedHeights(cluster, [0, 1, 2]))) >= stoppedAt! + lag + 3 * 32,
      { timeoutMs: 240_000, cluster },
    );
    cluster.start(3, [...SYNC_ARGS, "--state-sync", "--state-sync-lag", String(lag)]);
    await cluster.waitReady(60_000, [3]);
    const log = await Deno.readTextFile(cluster.logPath(3));
    const installed = log.split("\n").filter((l) => l.includes('"sync:installed"'));
    assert.equal(installed.length, 1, `no sync:installed line:\n${await cluster.logTail(3, 20)}`);
    const at = JSON.parse(installed[0]!) as { height: number; replaced: number };
    assert.ok(at.replaced >= 100 && at.height > at.replaced + lag, installed[0]);
    assert.ok(log.includes('"sync:replacing"'));
    await commitsNeedReplica3(cluster);
    const expected: [string, string][] = [["before", "outage"], ["during", "the outage"]];
    for (const [key, value] of expected) {
      assert.equal(new TextDecoder().decode((await getKv(cluster.urls[3]!, key))!), value);
    }
    const chains = await compareChains([0, 1, 3].map((i) => cluster.urls[i]!));
    assert.ok(chains.agree, JSON.stringify(chains));
  } finally {
    await cluster.close();
  }
});
