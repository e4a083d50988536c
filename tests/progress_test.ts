/**
 * Long work shows progress: the ticker's pacing, the pool's restore from the store at start,
 * and the CatchUp flow of a replica that joins late (`catchup:progress` lines).
 *
 * @module
 */
import { MemoryStorage } from "../src/storage/memory.ts";
import type { Storage, StoredNode } from "../src/storage/storage.ts";
import { genesisNode, nodeHash } from "../src/codec.ts";
import { ProgressTicker } from "../src/runtime/progress.ts";
import { startReplica } from "../src/runtime/replica.ts";
import { restoreOf } from "../src/runtime/startup.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { kvMachine } from "../examples/kv_store/app.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { freePorts, HOST, sleep, startInProcessCluster, waitUntil } from "./support/cluster.ts";

Deno.test("ProgressTicker: silent within an interval, then at most one report per interval", async () => {
  const reports: number[] = [];
  const ticker = new ProgressTicker((n: number) => reports.push(n), 50);
  for (let i = 0; i < 100; i++) ticker.tick(i);
  assertEquals(reports.length, 0, "work shorter than an interval says nothing");
  await sleep(60);
  ticker.tick(100);
  ticker.tick(101);
  assertEquals(reports, [100], "one report per interval");
});

Deno.test("restoreOf reports progress after each step of 256 heights", async () => {
  // A store whose committed chain is 1,000 copies of one Node (only the reads matter here).
  const g = genesisNode("progress");
  const node: StoredNode = { node: g, hash: nodeHash(g), updates: [] };
  const inner = new MemoryStorage();
  const store: Storage = Object.assign(Object.create(inner), {
    committedHead: () => Promise.resolve({ height: 1000, hash: node.hash }),
    committedHash: () => Promise.resolve(node.hash),
    getNode: () => Promise.resolve(node),
    uncommittedNodes: () => Promise.resolve([]),
  });
  const seen: [number, number][] = [];
  const r = await restoreOf(store, 1024, (read, total) => seen.push([read, total]));
  assertEquals(r.committed.length, 1000, "every height read");
  assertEquals(JSON.stringify(seen), "[[256,1000],[512,1000],[768,1000],[1000,1000]]", "steps");
});

Deno.test({
  name: "a replica that joins 150 heights late logs catchup:progress lines while it catches up",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startInProcessCluster({
      chainId: "progress-catchup",
      validators: 4,
      run: [0, 1, 2],
      // The missing validator's views time out quickly: heights grow while it is away.
      pacemaker: { viewTimeoutMinMs: 50, viewTimeoutMaxMs: 200 },
    });
    const dir = await Deno.makeTempDir({ prefix: "hotstuff-late-" });
    const lines: string[] = [];
    let late: Awaited<ReturnType<typeof startReplica>> | null = null;
    try {
      await waitUntil(
        "height 150",
        () => (cluster.replicas[0]?.engine.core.tree.root.node.height ?? 0) >= 150,
        90_000,
      );
      const [httpPort] = freePorts(1);
      late = await startReplica({
        chainId: cluster.chainId,
        validators: cluster.validators,
        signer: cluster.signers[3]!,
        storage: await DenoKvStorage.open(`${dir}/late.kv`),
        machine: kvMachine,
        listenConsensus: cluster.peers[3]!.consensus,
        listenHttp: { hostname: HOST, port: httpPort! },
        peers: cluster.peers,
        logLevel: "info",
        logSink: (line) => lines.push(line),
        name: "late",
      });
      await waitUntil(
        "a catchup:progress line",
        () => lines.some((l) => l.includes('"catchup:progress"')),
        20_000,
      );
      const line = JSON.parse(lines.find((l) => l.includes('"catchup:progress"'))!);
      assert(line.nodesReceived > 0, `nodes received: ${JSON.stringify(line)}`);
      assert(line.committedHeight > 0, `committed height: ${JSON.stringify(line)}`);
      assert(typeof line.nodesPerSecond === "number", "a rate");
    } finally {
      await late?.close();
      await cluster.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
