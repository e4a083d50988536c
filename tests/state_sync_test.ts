/**
 * Snapshot state sync (src/state/sync.ts): a wiped replica joins from an anchored snapshot while
 * peers serve corrupted chunks or a forged manifest (they are dropped, an honest peer is used),
 * then commits and votes; an install cut by a crash is undone at the next start; without any
 * snapshot the replica falls back to replay.
 */
import assert from "node:assert/strict";
import { decodeValue, encodeValue } from "../src/codec.ts";
import { type Replica, type ReplicaOptions, startReplica } from "../src/runtime/replica.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import {
  recoverSnapshotInstall,
  type SnapshotStore,
  SnapshotSyncError,
  syncSnapshot,
} from "../src/state/sync.ts";
import { AUTH_HEADER, signRequest } from "../src/net/admission.ts";
import { kvMachine, kvStateKey } from "../examples/kv_store/app.ts";
import { kvRoutes } from "../examples/kv_store/routes.ts";
import { type InProcessCluster, startInProcessCluster, waitUntil } from "./support/cluster.ts";

const enc = new TextEncoder();

/** A peer in front of `target` whose answers on `path` are rewritten by `tamper`. */
function proxy(
  target: string,
  path: string,
  tamper: (body: Uint8Array) => Uint8Array,
): { url: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const answer = await fetch(`${target}${url.pathname}${url.search}`, {
      method: req.method,
      headers: req.headers,
      body: req.body,
    });
    const body = new Uint8Array(await answer.arrayBuffer());
    const out = url.pathname === path && answer.status === 200 ? tamper(body) : body;
    return new Response(out as Uint8Array<ArrayBuffer>, {
      status: answer.status,
      headers: answer.headers,
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

function height(cluster: InProcessCluster, i: number): number {
  return (cluster.replicas[i]!.status().committed as { height: number }).height;
}

/** Waits until replica `i` offers a provable snapshot and has committed `minHeight`. */
async function provableSnapshot(
  cluster: InProcessCluster,
  i: number,
  minHeight: number,
): Promise<void> {
  await waitUntil("a provable checkpoint", async () => {
    const r = await fetch(`${cluster.peers[i]!.httpUrl}/state/snapshot`);
    await r.body?.cancel();
    return r.status === 200 && height(cluster, i) >= minHeight;
  }, 30_000);
}

async function writeKeys(cluster: InProcessCluster, n: number, prefix: string): Promise<void> {
  const url = cluster.peers[0]!.httpUrl;
  const commands = Array.from(
    { length: n },
    (_, i) => encodeValue(["set", enc.encode(`${prefix}-${i}`), enc.encode(`value-${i}`)]),
  );
  const r = await fetch(`${url}/commands?wait=commit`, {
    method: "POST",
    headers: { "content-type": "application/cbor" },
    body: encodeValue(commands) as Uint8Array<ArrayBuffer>,
  });
  assert.equal(r.status, 200, await r.clone().text());
  await r.body?.cancel();
}

/** Starts validator 3 of `cluster` on the store in `kvFile`, with state sync. */
function startJoiner(
  cluster: InProcessCluster,
  kvFile: string,
  options: Partial<ReplicaOptions> & { peers: ReplicaOptions["peers"] },
): Promise<Replica> {
  return DenoKvStorage.open(kvFile).then((storage) =>
    startReplica({
      chainId: cluster.chainId,
      validators: cluster.validators,
      signer: cluster.signers[3]!,
      storage,
      machine: kvMachine,
      routes: kvRoutes,
      listenConsensus: cluster.peers[3]!.consensus,
      listenHttp: { hostname: "127.0.0.1", port: Number(new URL(cluster.peers[3]!.httpUrl).port) },
      pacemaker: { viewTimeoutMinMs: 250, viewTimeoutMaxMs: 2_000 },
      stateSync: true,
      ...options,
    })
  );
}

Deno.test("a wiped replica joins by snapshot past a peer serving bad chunks and one with a forged manifest, then votes", async () => {
  const cluster = await startInProcessCluster({
    chainId: "state-sync",
    validators: 4,
    run: [0, 1, 2],
    stateCheckpointInterval: 8,
  });
  const badChunks = proxy(cluster.peers[0]!.httpUrl, "/state/chunk", (body) => {
    const entries = decodeValue(body) as [Uint8Array, Uint8Array][];
    if (entries.length === 0) return body;
    entries[0]![1] = enc.encode("forged");
    return encodeValue(entries);
  });
  const badManifest = proxy(cluster.peers[1]!.httpUrl, "/state/snapshot", (body) => {
    const m = decodeValue(body) as [Uint8Array, Uint8Array[]];
    m[1][0] = new Uint8Array(32); // another chunk under the same anchor
    return encodeValue(m);
  });
  const dir = await Deno.makeTempDir({ prefix: "state-sync-" });
  const lines: string[] = [];
  let joined: Replica | null = null;
  try {
    await writeKeys(cluster, 300, "a");
    await provableSnapshot(cluster, 2, 16);
    const peers = cluster.peers.map((p, i) =>
      i === 0 ? { ...p, httpUrl: badChunks.url } : i === 1 ? { ...p, httpUrl: badManifest.url } : p
    );
    // Client load while it joins.
    const load = writeKeys(cluster, 200, "b").then(() => null, (e) => e);
    joined = await startJoiner(cluster, `${dir}/joined.kv`, {
      peers,
      stateCheckpointInterval: 8,
      logLevel: "debug",
      logSink: (line) => lines.push(line),
    });
    const installed = lines.map((l) => JSON.parse(l)).find((l) => l.event === "sync:installed");
    assert.ok(installed !== undefined, lines.filter((l) => l.includes("sync")).join("\n"));
    assert.ok(installed.height >= 8, JSON.stringify(installed));
    const reasons = (installed.dropped as { reason: string }[]).map((d) => d.reason).join("; ");
    assert.match(reasons, /chunk \d+: chunk hash mismatch/);
    assert.match(reasons, /do not fold to the anchored root/);
    assert.equal(await load, null);
    // The committed Nodes below the snapshot's are stored too (the pool's recent ids).
    const below = await joined.committedRange(installed.height - 1, installed.height);
    assert.equal(below.length, 2);
    const voted = (): boolean => lines.some((l) => l.includes('"vote:send"'));
    await waitUntil("the joined replica votes", voted, 30_000);
    const target = height(cluster, 0);
    await waitUntil("the joined replica commits past the others' height", () => {
      const h = (joined!.status().committed as { height: number }).height;
      return h >= target;
    }, 30_000);
    // Its later checkpoints have the roots the others computed (and it votes only for Nodes
    // whose roots it computed itself, SPECIFICATION.md 7).
    const next = (Math.floor(installed.height / 8) + 1) * 8;
    await waitUntil("a checkpoint of the joined replica", () => {
      return joined!.state!.checkpoint(next) !== null;
    }, 30_000);
    const mine = joined.state!.checkpoint(next)!;
    const theirs = cluster.replicas[0]!.state!.checkpoint(next);
    assert.ok(theirs !== null);
    assert.deepEqual(mine.version.root, theirs.version.root);
    assert.deepEqual(mine.nodeHash, theirs.nodeHash);
    // Its state holds what was written before the snapshot and after it.
    for (const key of ["a-0", "a-299", "b-0", "b-199"]) {
      const v = await joined.committedState(kvStateKey(enc.encode(key)));
      assert.ok(v !== null, `${key} missing`);
    }
    assert.ok(lines.every((l) => !l.includes('"fatal"')));
  } finally {
    await joined?.close();
    await badChunks.close();
    await badManifest.close();
    await cluster.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("snapshot install: a crash mid-install is undone at the next start; no snapshot means replay", async () => {
  const dir = await Deno.makeTempDir({ prefix: "state-sync-crash-" });
  try {
    const store = await DenoKvStorage.open(`${dir}/s.kv`);
    await store.beginSnapshot(64);
    await store.putStateEntries([[enc.encode("k/x"), enc.encode("1")]]);
    await store.close();
    const again = await DenoKvStorage.open(`${dir}/s.kv`);
    await recoverSnapshotInstall(again);
    assert.equal(await again.snapshotMarker(), null);
    assert.equal(await again.getState(enc.encode("k/x")), null);
    const { ValidatorSet } = await import("../src/validators.ts");
    await assert.rejects(
      syncSnapshot({
        chainId: "none",
        validators: new ValidatorSet([{ publicKey: new Uint8Array(32), power: 1 }]),
        peers: ["http://127.0.0.1:1"],
        storage: again,
        requestTimeoutMs: 500,
      }),
      SnapshotSyncError,
    );
    assert.equal(await again.committedHead(), null);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("retention: committed Nodes older than the kept snapshots need are deleted; a wiped replica still joins by snapshot", async () => {
  const history = 8;
  const cluster = await startInProcessCluster({
    chainId: "state-retention",
    validators: 4,
    run: [0, 1, 2],
    stateCheckpointInterval: 4,
    replica: { pruneCommitted: true, stateHistoryHeights: history },
  });
  const dir = await Deno.makeTempDir({ prefix: "state-retention-" });
  const lines: string[] = [];
  let joined: Replica | null = null;
  try {
    await writeKeys(cluster, 100, "r");
    await waitUntil(
      "Nodes pruned",
      () => cluster.logs[0]!.lines.some((l) => l.event === "state:pruned"),
      60_000,
    );
    const head = height(cluster, 0);
    assert.deepEqual(await cluster.replicas[0]!.committedRange(1, 1), []);
    // What the kept checkpoints need is there: the last 4 checkpoints and `history` below them.
    const oldestKept = Math.floor(head / 4) * 4 - 3 * 4;
    const needed = await cluster.replicas[0]!.committedRange(oldestKept - history, head);
    assert.equal(needed.length, head - (oldestKept - history) + 1);
    joined = await startJoiner(cluster, `${dir}/joined.kv`, {
      peers: cluster.peers,
      stateCheckpointInterval: 4,
      stateHistoryHeights: history,
      logLevel: "info",
      logSink: (line) => lines.push(line),
    });
    assert.ok(lines.some((l) => l.includes('"sync:installed"')), lines.join("\n"));
    const target = height(cluster, 0);
    await waitUntil("the joined replica catches up", () => {
      return (joined!.status().committed as { height: number }).height >= target;
    }, 30_000);
    const v = await joined.committedState(kvStateKey(enc.encode("r-99")));
    assert.deepEqual(v, enc.encode("value-99"));
  } finally {
    await joined?.close();
    await cluster.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("snapshot serving: a checkpoint whose chunks are being fetched outlives newer checkpoints, two at most", async () => {
  const { StateService, STATE_CHECKPOINTS_KEPT, STATE_CHECKPOINTS_SERVING_MAX } = await import(
    "../src/state/service.ts"
  );
  assert.equal(STATE_CHECKPOINTS_KEPT, 4);
  assert.equal(STATE_CHECKPOINTS_SERVING_MAX, 2);
  const state = new StateService({ checkpointInterval: 1 });
  // Chunks are served without an anchor (the manifest carries it): no chain is read.
  const chain = {
    chainFrom: () => Promise.reject(new Error("not read")),
    certificateOf: () => Promise.reject(new Error("not read")),
  };
  await state.load((async function* () {})());
  const commit = (height: number): void => {
    state.onCommit({
      node: { height },
      hash: new Uint8Array(32).fill(height),
      updates: [[enc.encode(`k/${height}`), enc.encode(`v${height}`)]],
    });
  };
  const serves = async (height: number): Promise<boolean> => {
    const url = new URL(`http://x/state/chunk?height=${height}&index=0`);
    try {
      return (await state.route(new Request(url), url, chain))?.status === 200;
    } catch {
      return false; // 404 no-snapshot
    }
  };
  const kept = (): number[] => [...Array(20).keys()].filter((h) => state.checkpoint(h) !== null);
  for (let h = 1; h <= 4; h++) commit(h);
  assert.deepEqual(kept(), [1, 2, 3, 4]);
  assert.ok(await serves(1));
  for (let h = 5; h <= 7; h++) commit(h);
  // 1 is being served: kept beside the last 4; 2 and 3 were not.
  assert.deepEqual(kept(), [1, 4, 5, 6, 7]);
  assert.ok(await serves(4) && await serves(5));
  commit(8);
  assert.deepEqual(kept(), [1, 4, 5, 6, 7, 8]);
  // A third served one beyond the last 4 is one too many: the oldest goes.
  commit(9);
  assert.deepEqual(kept(), [4, 5, 6, 7, 8, 9]);
  assert.equal(await serves(1), false);
});

Deno.test("snapshot install: a crash while the state, the history or the head is written is undone at the next start (or finished, once the head is in)", async () => {
  const cluster = await startInProcessCluster({
    chainId: "state-sync-cut",
    validators: 4,
    run: [0, 1, 2],
    stateCheckpointInterval: 8,
  });
  const dir = await Deno.makeTempDir({ prefix: "state-sync-cut-" });
  const signer = cluster.signers[3]!;
  const authorize = async (method: string, url: URL) => ({
    [AUTH_HEADER]: await signRequest(signer, { chainId: cluster.chainId, method, url }),
  });
  class Crash extends Error {}
  try {
    await writeKeys(cluster, 300, "c");
    await provableSnapshot(cluster, 0, 24);
    const sync = (storage: SnapshotStore) =>
      syncSnapshot({
        chainId: cluster.chainId,
        validators: cluster.validators,
        peers: cluster.peers.slice(0, 3).map((p) => p.httpUrl),
        storage,
        authorize,
      });
    for (const cut of ["state", "history", "head", "end"] as const) {
      const path = `${dir}/${cut}.kv`;
      const store = await DenoKvStorage.open(path);
      let dead = false;
      const crash = (): never => {
        dead = true;
        throw new Crash(`power cut (${cut})`);
      };
      let states = 0;
      // The store dies at the cut: that call and every later one fail, so nothing is cleaned up.
      const dying = new Proxy(store, {
        get(target, name) {
          const value = Reflect.get(target, name, target);
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            if (dead) crash();
            if (name === "putSnapshotState" && cut === "state" && ++states === 2) crash();
            if (name === "installSnapshotChain" && cut === "history") crash();
            const commitsHead = name === "write" &&
              ((args[0] as { commits?: unknown[] }).commits?.length ?? 0) > 0;
            if (commitsHead && cut === "head") crash();
            if (name === "endSnapshot" && cut === "end") crash();
            return value.apply(target, args);
          };
        },
      }) as DenoKvStorage;
      await assert.rejects(sync(dying), Crash);
      await store.close();
      const again = await DenoKvStorage.open(path);
      const marker = await again.snapshotMarker();
      assert.ok(marker !== null, `${cut}: the marker is left`);
      // The history lands while the chunks are fetched, with the head below the marker's height.
      const cutHead = (await again.committedHead())?.height ?? null;
      const expected = { state: null, history: null, head: marker - 1, end: marker }[cut];
      if (cut !== "state") assert.equal(cutHead, expected, `${cut}: head at the cut`);
      await recoverSnapshotInstall(again);
      assert.equal(await again.snapshotMarker(), null, cut);
      const key = kvStateKey(enc.encode("c-0"));
      if (cut === "end") {
        // The head reached the snapshot's Node: the install was whole; only the marker was left.
        assert.equal((await again.committedHead())?.height, marker, cut);
        assert.deepEqual(await again.getState(key), enc.encode("value-0"), cut);
      } else {
        assert.equal(await again.committedHead(), null, `${cut}: no head`);
        assert.equal(await again.getState(key), null, `${cut}: no state`);
        // A second, complete install into the recovered store.
        const r = await sync(again);
        assert.deepEqual(await again.getState(key), enc.encode("value-0"), `${cut}: installed`);
        assert.equal((await again.committedHead())?.height, r.height, cut);
      }
      await again.close();
    }
  } finally {
    await cluster.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a replica far behind its peers (restarted after a long outage) replaces its store by a snapshot, keeps its votes and lock, and votes again", async () => {
  const cluster = await startInProcessCluster({
    chainId: "state-sync-behind",
    validators: 4,
    stateCheckpointInterval: 8,
  });
  const lines: string[] = [];
  let back: Replica | null = null;
  try {
    await writeKeys(cluster, 100, "x");
    await waitUntil("replica 3 commits", () => height(cluster, 3) >= 16, 30_000);
    await cluster.replicas[3]!.close();
    const path = cluster.kvPath(3);
    const before = await DenoKvStorage.open(path);
    const oldHead = (await before.committedHead())!.height;
    const oldSafety = (await before.loadSafety())!;
    await before.close();
    assert.ok(oldSafety.lastVotedView > 0);
    // The others go on without it: more than the lag beyond its head, with new keys.
    await writeKeys(cluster, 300, "y");
    await waitUntil("the others far ahead", () => height(cluster, 0) >= oldHead + 80, 60_000);
    await provableSnapshot(cluster, 0, oldHead + 80);
    back = await startJoiner(cluster, path, {
      peers: cluster.peers,
      stateCheckpointInterval: 8,
      stateSyncLagHeights: 32,
      stateHistoryHeights: 8,
      logLevel: "debug",
      logSink: (line) => lines.push(line),
    });
    const events = lines.map((l) => JSON.parse(l));
    const installed = events.find((l) => l.event === "sync:installed");
    assert.ok(installed !== undefined, lines.filter((l) => l.includes("sync")).join("\n"));
    assert.equal(installed.replaced, oldHead);
    assert.ok(installed.height > oldHead + 32, JSON.stringify(installed));
    assert.ok(events.some((l) => l.event === "sync:replacing"));
    // Its votes and lock survive the replacement: it never votes again in a view it voted in.
    const safety = back.engine.core.safety;
    assert.ok(safety.lastVotedView >= oldSafety.lastVotedView);
    assert.ok(safety.lockedQC.view >= oldSafety.lockedQC.view);
    // The old Nodes are gone (only the snapshot's history is stored); its state is the snapshot's.
    assert.deepEqual(await back.committedRange(1, 1), []);
    for (const key of ["x-0", "x-99", "y-0"]) {
      assert.ok(await back.committedState(kvStateKey(enc.encode(key))) !== null, `${key} missing`);
    }
    const target = height(cluster, 0);
    await waitUntil("it votes", () => lines.some((l) => l.includes('"vote:send"')), 30_000);
    await waitUntil("it commits past the others' height", () => {
      return (back!.status().committed as { height: number }).height >= target;
    }, 30_000);
    assert.ok(await back.committedState(kvStateKey(enc.encode("y-299"))) !== null);
    // Restarted again, it is not behind: it starts from its store.
    await back.close();
    lines.length = 0;
    back = await startJoiner(cluster, path, {
      peers: cluster.peers,
      stateCheckpointInterval: 8,
      stateSyncLagHeights: 32,
      logLevel: "info",
      logSink: (line) => lines.push(line),
    });
    const skipped = lines.map((l) => JSON.parse(l)).find((l) => l.event === "sync:skipped");
    assert.ok(skipped !== undefined && skipped.level === "info", lines.join("\n"));
    assert.match(skipped.reason, /is not above/);
    assert.ok(!lines.some((l) => l.includes('"sync:installed"')));
  } finally {
    await back?.close();
    await cluster.close();
  }
});

Deno.test("far behind: a crash after the install marker, with the old store still there, recovers to an empty store that keeps its safety state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "state-sync-behind-cut-" });
  try {
    const store = await DenoKvStorage.open(`${dir}/s.kv`);
    const { genesisNode, genesisQC, nodeHash } = await import("../src/codec.ts");
    const chainId = "behind-cut";
    const node = {
      view: 1,
      height: 1,
      parent: nodeHash(genesisNode(chainId)),
      justify: genesisQC(chainId),
      command: new Uint8Array([1]),
      proposer: new Uint8Array(32),
      stateRoot: new Uint8Array(32),
      configHash: new Uint8Array(32),
    };
    const safety = {
      currentView: 7,
      lastVotedView: 6,
      lockedQC: genesisQC(chainId),
      highQC: genesisQC(chainId),
      highTC: null,
    };
    const stored = { node, hash: nodeHash(node), updates: [[enc.encode("k/a"), enc.encode("1")]] };
    await store.write({ commits: [stored as never], safety });
    // The install marker of a snapshot far above, then the crash (before or while dropping).
    await store.beginSnapshot(5_000);
    await store.close();
    const again = await DenoKvStorage.open(`${dir}/s.kv`);
    await recoverSnapshotInstall(again);
    assert.equal(await again.snapshotMarker(), null);
    assert.equal(await again.committedHead(), null);
    assert.equal(await again.getState(enc.encode("k/a")), null);
    assert.deepEqual(await again.loadSafety(), safety);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
