/**
 * Tests of the replica runtime (src/runtime/replica.ts) with real sockets on loopback and Deno KV in
 * temporary directories: clusters commit and agree, the command API answers as documented,
 * close() leaves nothing running (Deno's test sanitizers check every socket, timer and KV),
 * planted bugs and Engine failures stop a replica loudly. Also the cluster file rules of the CLI
 * (src/cli/config.ts).
 */
import assert from "node:assert/strict";
import { decodeValue, encodeValue } from "../src/codec.ts";
import { deriveSecretKey, ed25519Signer, publicKeyOf, type Signer } from "../src/crypto.ts";
import type { Application } from "../src/app.ts";
import { ConfigError } from "../src/errors.ts";
import { commandId } from "../src/runtime/mempool.ts";
import { plantedSafetyBugs } from "../src/consensus/safety.ts";
import { systemClock } from "../src/runtime/clock.ts";
import type { LogLevel } from "../src/runtime/log.ts";
import {
  type Replica,
  type ReplicaEvent,
  type ReplicaOptions,
  startReplica,
} from "../src/runtime/replica.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { type Storage, wrapStorage, type WriteBatch } from "../src/storage/storage.ts";
import { toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import {
  formatClusterConfig,
  parseClusterConfig,
  parseHostPort,
  readSecretKey,
} from "../src/cli/config.ts";
import { initCluster } from "../src/cli/init.ts";
import { encodeKvCommand, kvMachine } from "../examples/kv_store/app.ts";
import { kvRoutes } from "../examples/kv_store/routes.ts";
import { freePorts, sleep, waitUntil } from "./support/cluster.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const HOST = "127.0.0.1";
const enc = new TextEncoder();
const height = (r: Replica): number => r.engine.core.tree.root.node.height;

interface TestCluster {
  readonly replicas: Replica[];
  readonly urls: string[];
  readonly logs: string[][];
  close(): Promise<void>;
}

/**
 * `n` replicas of the key-value store on loopback. Storage: Deno KV in `dir` (or memory).
 * `replicaOptions(i)` overrides options of replica `i`.
 */
async function startCluster(
  n: number,
  options: {
    dir?: string;
    logLevel?: LogLevel;
    replicaOptions?: (i: number) => Partial<ReplicaOptions>;
  } = {},
): Promise<TestCluster> {
  const signers: Signer[] = Array.from(
    { length: n },
    (_, i) => ed25519Signer(deriveSecretKey(`replica-test-${i}`)),
  );
  const validators = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
  const ports = freePorts(2 * n);
  const peers = signers.map((s, i) => ({
    publicKey: s.publicKey,
    consensus: { hostname: HOST, port: ports[2 * i]! },
    httpUrl: `http://${HOST}:${ports[2 * i + 1]}`,
  }));
  const logs: string[][] = signers.map(() => []);
  const replicas: Replica[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(replicas.map((r) => r.close()));
  };
  try {
    for (let i = 0; i < n; i++) {
      const storage: Storage = options.dir === undefined
        ? new MemoryStorage()
        : await DenoKvStorage.open(`${options.dir}/replica-${i}.kv`);
      replicas.push(
        await startReplica({
          chainId: "replica-test",
          validators,
          signer: signers[i]!,
          storage,
          machine: kvMachine,
          routes: kvRoutes,
          listenConsensus: peers[i]!.consensus,
          listenHttp: { hostname: HOST, port: ports[2 * i + 1]! },
          peers,
          pacemaker: { viewTimeoutMinMs: 500, viewTimeoutMaxMs: 4000 },
          logLevel: options.logLevel ?? "warn",
          logSink: (line) => logs[i]!.push(line),
          name: `replica-${i}`,
          ...options.replicaOptions?.(i),
        }),
      );
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  return { replicas, urls: peers.map((p) => p.httpUrl), logs, close: closeAll };
}

async function post(
  url: string,
  body: Uint8Array,
  contentType = "application/octet-stream",
): Promise<{ status: number; json: unknown; headers: Headers }> {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": contentType },
    body: body as Uint8Array<ArrayBuffer>,
  });
  return { status: r.status, json: await r.json(), headers: r.headers };
}

function kvSet(key: string, value: string): Uint8Array {
  return encodeKvCommand(
    { op: "set", key: enc.encode(key), value: enc.encode(value) },
    crypto.getRandomValues(new Uint8Array(8)),
  );
}

// ---------------------------------------------------------------------------------------------
// Clusters

Deno.test("4 replicas on loopback with Deno KV: they commit, agree, and close() leaves nothing running", async () => {
  const dir = await Deno.makeTempDir({ prefix: "replica-test-" });
  try {
    await fourReplicasCommitAndAgree(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Deno's sanitizers now check that no socket, timer or KV of the cluster is left.
});

async function fourReplicasCommitAndAgree(dir: string): Promise<void> {
  const cluster = await startCluster(4, { dir });
  try {
    await waitUntil(
      "every replica commits 10 Nodes",
      () => cluster.replicas.every((r) => height(r) >= 10),
    );
    // Commands given to any replica are committed (forwarded to whoever leads).
    const results = await Promise.all(
      cluster.urls.map((url, i) =>
        post(
          `${url}/commands?wait=commit`,
          encodeValue([kvSet(`k${i}`, `v${i}`)]),
          "application/cbor",
        )
      ),
    );
    for (const r of results) {
      assert.equal(r.status, 200, JSON.stringify(r.json));
      const [done] = r.json as Array<{ id: string; height: number; node: string }>;
      assert.ok(done!.height >= 1);
      assert.match(done!.node, /^[0-9a-f]{64}$/);
    }
    const top = Math.max(...results.map((r) => (r.json as Array<{ height: number }>)[0]!.height));
    await waitUntil(
      "every replica reaches the last write",
      () => cluster.replicas.every((r) => height(r) >= top),
    );
    // The same committed chain on every replica, and every write readable everywhere.
    const common = Math.min(...cluster.replicas.map(height));
    const chains = await Promise.all(cluster.urls.map(async (url) => {
      const r = await fetch(`${url}/committed?from=1&to=${Math.min(common, 256)}`);
      return ((await r.json()) as Array<{ node: { hash: string } }>).map((n) => n.node.hash);
    }));
    for (const c of chains) assert.deepEqual(c, chains[0]);
    for (const url of cluster.urls) {
      for (let i = 0; i < 4; i++) {
        const r = await fetch(`${url}/kv/k${i}`);
        assert.equal(r.status, 200);
        assert.equal(await r.text(), `v${i}`);
      }
    }
  } finally {
    await cluster.close();
  }
}

Deno.test("1 replica: the command API answers as documented", async (t) => {
  const cluster = await startCluster(1, {
    replicaOptions: () => ({ mempool: { poolCommandsMax: 5 } }),
  });
  const url = cluster.urls[0]!;
  try {
    await t.step(
      "a raw command: 202 with its id; with ?wait=commit: 200 with height and node",
      async () => {
        const c = kvSet("raw", "1");
        const accepted = await post(`${url}/commands`, c);
        assert.equal(accepted.status, 202);
        const a = accepted.json as { id: string; expires: number };
        assert.ok(a.expires > 0, "the replica gave it an expiry height");
        assert.deepEqual(a, { id: toHex(commandId(c, a.expires)), expires: a.expires });
        const c2 = kvSet("raw", "2");
        const done = await post(`${url}/commands?wait=commit`, c2);
        assert.equal(done.status, 200);
        const j = done.json as { id: string; expires: number; height: number; node: string };
        assert.equal(j.id, toHex(commandId(c2, j.expires)));
        assert.ok(j.height <= j.expires, "committed by its expiry");
        assert.ok(j.height >= 1);
        // The node is committed and carries the command.
        const n = await (await fetch(`${url}/nodes/${j.node}`)).json();
        assert.equal(n.committed, true);
        assert.equal(n.node.height, j.height);
      },
    );
    await t.step("a CBOR batch with ?wait=commit: one {id, height, node} per command", async () => {
      const cmds = [kvSet("a", "1"), kvSet("b", "2"), kvSet("c", "3")];
      const r = await post(`${url}/commands?wait=commit`, encodeValue(cmds), "application/cbor");
      assert.equal(r.status, 200);
      const list = r.json as Array<{ id: string; expires: number; height: number }>;
      assert.deepEqual(
        list.map((x) => x.id),
        cmds.map((c) => toHex(commandId(c, list[0]!.expires))),
      );
      const noWait = await post(
        `${url}/commands`,
        encodeValue([kvSet("d", "4")]),
        "application/cbor",
      );
      assert.equal(noWait.status, 202);
      assert.equal((noWait.json as { ids: string[] }).ids.length, 1);
    });
    await t.step(
      "resubmitting a committed command with its expiry answers where it was committed (at most once)",
      async () => {
        const c = kvSet("once", "1");
        const first = await post(`${url}/commands?wait=commit`, c);
        const { expires } = first.json as { expires: number };
        const again = await post(`${url}/commands?wait=commit&expires=${expires}`, c);
        assert.deepEqual(again.json, first.json);
        // An expiry already passed can never commit: a definite answer.
        const past = await post(`${url}/commands?expires=1`, kvSet("past", "1"));
        assert.equal(past.status, 410);
        assert.equal((past.json as { reason: string }).reason, "expired");
      },
    );
    await t.step("bad requests are refused with a status and a reason", async () => {
      const getJson = async (u: string) => {
        const r = await fetch(u);
        return { status: r.status, json: await r.json() };
      };
      const cases: Array<[Promise<{ status: number; json: unknown }>, number, string]> = [
        [post(`${url}/commands`, new Uint8Array([1, 2])), 400, "bad-command"],
        [post(`${url}/commands`, new Uint8Array(0)), 400, "bad-command"],
        [post(`${url}/commands`, new Uint8Array([0xff]), "application/cbor"), 400, "bad-body"],
        [post(`${url}/commands`, encodeValue(["x"]), "application/cbor"), 400, "bad-body"],
        [post(`${url}/commands`, encodeValue([]), "application/cbor"), 400, "bad-command"],
        [post(`${url}/commands`, kvSet("k", "v"), "text/plain"), 415, "unsupported-media-type"],
        [post(`${url}/commands?wait=soon`, kvSet("k", "v")), 400, "bad-parameter"],
        [post(`${url}/commands?x=1`, kvSet("k", "v")), 400, "unknown-parameter"],
        [post(`${url}/commands?expires=-1`, kvSet("k", "v")), 400, "bad-expiry"],
        [post(`${url}/commands?expires=99999999`, kvSet("k", "v")), 400, "bad-expiry"],
        [
          post(`${url}/commands?wait=commit&wait=commit`, kvSet("k", "v")),
          400,
          "duplicate-parameter",
        ],
        [post(`${url}/commands`, new Uint8Array(70_000)), 413, "command-too-large"],
        [getJson(`${url}/batches/xyz`), 400, "bad-digest"],
        [getJson(`${url}/batches/${"AB".repeat(32)}`), 400, "bad-digest"],
        [getJson(`${url}/batches/${"ab".repeat(32)}`), 404, "not-found"],
        [getJson(`${url}/batches/${"ab".repeat(32)}?x=1`), 400, "unknown-parameter"],
        [post(`${url}/batches/${"ab".repeat(32)}`, new Uint8Array(1)), 405, "method-not-allowed"],
        [
          post(`${url}/mempool`, encodeValue([kvSet("k", "v")]), "application/cbor"),
          404,
          "not-found",
        ],
      ];
      for (const [request, status, reason] of cases) {
        const r = await request;
        assert.equal(r.status, status, JSON.stringify(r.json));
        assert.equal((r.json as { reason: string }).reason, reason);
      }
      const get = await fetch(`${url}/commands`);
      assert.equal(get.status, 405);
      assert.equal(get.headers.get("allow"), "POST");
      await get.body?.cancel();
    });
    await t.step("a full pool answers 503 pool-full with Retry-After", async () => {
      // Stop the leader from draining the pool, then overfill it (poolCommandsMax 5).
      await cluster.replicas[0]!.engine.stop();
      const cmds = Array.from({ length: 6 }, (_, i) => kvSet(`full${i}`, "x"));
      const r = await post(`${url}/commands`, encodeValue(cmds), "application/cbor");
      assert.equal(r.status, 503);
      assert.equal((r.json as { reason: string }).reason, "pool-full");
      assert.match((r.json as { error: string }).error, /at most 5 commands/);
      assert.equal(r.headers.get("retry-after"), "1");
    });
  } finally {
    await cluster.close();
  }
});

Deno.test("1 replica: key-value routes: PUT answers after commit, GET reads the committed value", async () => {
  const cluster = await startCluster(1);
  const url = cluster.urls[0]!;
  try {
    const put = await fetch(`${url}/kv/caf%C3%A9`, { method: "PUT", body: "crème" });
    assert.equal(put.status, 200);
    const done = await put.json() as { height: number; node: string };
    assert.ok(done.height >= 1);
    const get = await fetch(`${url}/kv/caf%C3%A9`);
    assert.equal(get.status, 200);
    assert.equal(await get.text(), "crème");
    // Writing the same value again is a new command (a nonce is added) and commits again.
    const again = await fetch(`${url}/kv/caf%C3%A9`, { method: "PUT", body: "crème" });
    assert.ok((await again.json()).height > done.height);
    const del = await fetch(`${url}/kv/caf%C3%A9`, { method: "DELETE" });
    assert.equal(del.status, 200);
    await del.body?.cancel();
    const missing = await fetch(`${url}/kv/caf%C3%A9`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).reason, "not-found");
    const largest = new Uint8Array(61_440).fill(7);
    const ok = await fetch(`${url}/kv/largest`, { method: "PUT", body: largest });
    assert.equal(ok.status, 200, "the largest value is accepted");
    await ok.body?.cancel();
    const back = new Uint8Array(await (await fetch(`${url}/kv/largest`)).arrayBuffer());
    assert.deepEqual(back, largest);
    const big = await fetch(`${url}/kv/big`, { method: "PUT", body: new Uint8Array(61_441) });
    assert.equal(big.status, 413);
    await big.body?.cancel();
    const badKey = await fetch(`${url}/kv/${"x".repeat(257)}`);
    assert.equal(badKey.status, 400);
    assert.equal((await badKey.json()).reason, "bad-key");
    const post = await fetch(`${url}/kv/k`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await cluster.close();
  }
});

Deno.test("status and certificates: a committed Node's certificate is the next committed Node's justify", async () => {
  const cluster = await startCluster(1);
  const url = cluster.urls[0]!;
  try {
    await waitUntil("a few commits", () => height(cluster.replicas[0]!) >= 5);
    const status = await (await fetch(`${url}/status`)).json();
    for (const field of ["view", "leader", "committed", "lock", "highQC", "peers", "mempool"]) {
      assert.ok(field in status, `status has ${field}`);
    }
    const list = await (await fetch(`${url}/committed?from=1&to=4`)).json() as Array<{
      node: { hash: string; justify: { nodeHash: string } };
      certificate: { nodeHash: string } | null;
      committed: boolean;
    }>;
    assert.equal(list.length, 4);
    for (let i = 0; i < 3; i++) {
      assert.equal(list[i]!.committed, true);
      // With one replica every view makes progress: each Node certifies its parent.
      assert.equal(list[i]!.certificate?.nodeHash, list[i]!.node.hash);
      assert.equal(list[i + 1]!.node.justify.nodeHash, list[i]!.node.hash);
    }
    const chain = decodeValue(
      new Uint8Array(await (await fetch(`${url}/chain?from=1&limit=3`)).arrayBuffer()),
    );
    assert.ok(Array.isArray(chain) && chain.length === 3);
  } finally {
    await cluster.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Failure handling

/** A Node-level Application: each Node carries one byte, its height mod 256. */
const heightApp: Application = {
  produceCommand: ({ height }) => ({ command: new Uint8Array([height % 256]) }),
  validateNode: ({ node }) =>
    node.command.length === 1 && node.command[0] === node.height % 256
      ? { ok: true, updates: [[enc.encode("last"), node.command]] }
      : { ok: false, reason: "wrong byte" },
};

Deno.test("a Node-level Application: 4 replicas commit it; onCommit sees heights in order, onEvent sees typed events; no command pool", async () => {
  const commits: number[][] = [[], [], [], []];
  const events: ReplicaEvent[][] = [[], [], [], []];
  const cluster = await startCluster(4, {
    replicaOptions: (i) => ({
      machine: undefined,
      routes: undefined,
      app: heightApp,
      onCommit: ({ node }) => void commits[i]!.push(node.height),
      onEvent: (e) => void events[i]!.push(e),
    }),
  });
  try {
    await waitUntil("30 commits everywhere", () => commits.every((c) => c.length >= 30));
    for (const c of commits) {
      assert.deepEqual(c.slice(0, 30), c.slice(0, 30).map((_, k) => c[0]! + k), "in height order");
    }
    const types = new Set(events[0]!.map((e) => e.type));
    for (const t of ["node:commit", "view:enter", "peer:connect", "qc:form"]) {
      assert.ok(types.has(t as ReplicaEvent["type"]), `no ${t} event`);
    }
    const committedEvents = events[0]!.filter((e) => e.type === "node:commit").length;
    assert.ok(committedEvents >= 30, `${committedEvents} node:commit events`);
    assert.equal(cluster.replicas[0]!.mempool, null);
    const r = await post(`${cluster.urls[0]}/commands`, new Uint8Array([1]));
    assert.equal(r.status, 404);
    await assert.rejects(cluster.replicas[0]!.submit([new Uint8Array([1])]), ConfigError);
    const value = await cluster.replicas[0]!.committedState(enc.encode("last"));
    assert.ok(value !== null && value.length === 1);
  } finally {
    await cluster.close();
  }
});

Deno.test("startReplica takes exactly one of machine and app", async () => {
  for (const extra of [{ app: heightApp }, { machine: undefined }]) {
    await assert.rejects(startCluster(1, { replicaOptions: () => extra }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.reason, "bad-option");
      assert.match(e.message, /exactly one of `machine` and `app`/);
      return true;
    });
  }
});

Deno.test("batch limits that leave no room for the largest command are a ConfigError", async () => {
  await assert.rejects(
    startCluster(1, { replicaOptions: () => ({ mempool: { batchBytesMax: 1024 } }) }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.reason, "bad-option");
      assert.match(e.message, /must leave room/);
      return true;
    },
  );
});

Deno.test("a replica refuses to start while a planted-bug switch is on", async () => {
  plantedSafetyBugs.skipLockCheck = true;
  try {
    await assert.rejects(startCluster(1), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.reason, "planted-bug");
      assert.match(e.message, /skipLockCheck/);
      return true;
    });
  } finally {
    plantedSafetyBugs.skipLockCheck = false;
  }
});

Deno.test("an Engine failure (a storage error) is logged as fatal, reported, and closes the replica", async () => {
  const failures: unknown[] = [];
  let writes = 0;
  const inner = new MemoryStorage();
  const failing: Storage = wrapStorage(inner, {
    write: (batch: WriteBatch) => {
      if (++writes > 10) return Promise.reject(new Error("disk on fire"));
      return inner.write(batch);
    },
  });
  const cluster = await startCluster(1, {
    replicaOptions: () => ({ storage: failing, onFailure: (e) => failures.push(e) }),
  });
  try {
    await waitUntil("the failure", () => failures.length > 0);
    await waitUntil("the replica closes itself", () => cluster.replicas[0]!.closed);
    assert.match(String(failures[0]), /disk on fire/);
    const fatal = cluster.logs[0]!.map((l) => JSON.parse(l)).find((l) => l.level === "fatal");
    assert.ok(fatal !== undefined, "a fatal log line");
    assert.equal(fatal.event, "engine:failure");
    assert.match(fatal.error, /disk on fire/);
  } finally {
    await cluster.close();
  }
});

Deno.test("logs: one JSON object per line with time, level and event; the level filters", async () => {
  const cluster = await startCluster(1, { logLevel: "debug" });
  try {
    await waitUntil("some commits", () => height(cluster.replicas[0]!) >= 3);
  } finally {
    await cluster.close();
  }
  const lines = cluster.logs[0]!.map((l) => JSON.parse(l));
  assert.ok(
    lines.every((l) =>
      typeof l.time === "string" && typeof l.level === "string" && typeof l.event === "string"
    ),
  );
  assert.ok(
    lines.some((l) => l.event === "node:commit" && /^[0-9a-f]{64}$/.test(l.hash)),
    "hex hashes",
  );
  assert.ok(lines.some((l) => l.event === "replica:start"));
  assert.ok(lines.some((l) => l.event === "replica:closed"));
  const quiet = await startCluster(1, { logLevel: "silent" });
  try {
    await waitUntil("some commits", () => height(quiet.replicas[0]!) >= 3);
  } finally {
    await quiet.close();
  }
  assert.deepEqual(quiet.logs[0], []);
});

Deno.test("systemClock: the timer never fires before its time", async () => {
  const clock = systemClock();
  for (let i = 0; i < 30; i++) {
    const at = clock.now() + 3.7;
    const firedAt = await new Promise<number>((resolve) =>
      clock.setTimer(at, () => resolve(clock.now()))
    );
    assert.ok(firedAt >= at, `fired ${at - firedAt} ms early`);
  }
  let fired = false;
  clock.setTimer(clock.now() + 5, () => fired = true);
  clock.clearTimer();
  await sleep(20);
  assert.equal(fired, false, "cleared");
});

// ---------------------------------------------------------------------------------------------
// Cluster files (src/cli/config.ts)

const KEY_A = publicKeyOf(deriveSecretKey("a"));
const KEY_B = publicKeyOf(deriveSecretKey("b"));

function validatorJson(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "replica-0",
    publicKey: toHex(KEY_A),
    power: 1,
    consensus: "127.0.0.1:9000",
    http: "127.0.0.1:9001",
    ...overrides,
  };
}

function configText(validators: unknown[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ chainId: "c", validators, ...extra });
}

Deno.test("cluster file: a valid file parses and formats back to itself", () => {
  const text = configText([
    validatorJson(),
    validatorJson({
      name: "replica-1",
      publicKey: toHex(KEY_B),
      consensus: "[::1]:9002",
      http: "localhost:9003",
      power: 2,
    }),
  ]);
  const config = parseClusterConfig(text, "cluster.json");
  assert.equal(config.validators.length, 2);
  assert.deepEqual(config.validators[1]!.consensus, { hostname: "::1", port: 9002 });
  assert.deepEqual(parseClusterConfig(formatClusterConfig(config), "again"), config);
});

Deno.test("cluster file: every kind of mistake is refused with the file, field and value", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["{", "bad-json", /not valid JSON/],
    ["[]", "bad-type", /top level must be an object/],
    [configText([validatorJson()], { extra: 1 }), "unknown-field", /unknown field "extra"/],
    [JSON.stringify({ validators: [validatorJson()] }), "missing-field", /missing field chainId/],
    [JSON.stringify({ chainId: "", validators: [validatorJson()] }), "bad-chain-id", /chainId/],
    [configText([]), "bad-validators", /1\.\.256/],
    [
      configText([validatorJson({ publicKey: "abc" })]),
      "bad-key",
      /publicKey must be 64 hex digits/,
    ],
    [configText([validatorJson({ publicKey: toHex(KEY_A) + "00" })]), "bad-key", /64 hex digits/],
    [configText([validatorJson({ power: 0 })]), "bad-power", /positive integer: 0/],
    [configText([validatorJson({ power: 1.5 })]), "bad-power", /positive integer/],
    [configText([validatorJson({ power: "1" })]), "bad-power", /positive integer/],
    [configText([validatorJson({ name: "bad name" })]), "bad-name", /name/],
    [configText([validatorJson({ consensus: "127.0.0.1" })]), "bad-address", /host:port/],
    [configText([validatorJson({ consensus: "127.0.0.1:70000" })]), "bad-address", /1\.\.65535/],
    [configText([validatorJson({ http: "127.0.0.1:0" })]), "bad-address", /1\.\.65535/],
    [configText([validatorJson({ http: 9001 })]), "bad-address", /must be a string/],
    [
      configText([validatorJson({ foo: 1 })]),
      "unknown-field",
      /validators\[0\]: unknown field "foo"/,
    ],
    [
      configText([
        validatorJson(),
        validatorJson({ name: "replica-1", consensus: "127.0.0.1:1", http: "127.0.0.1:2" }),
      ]),
      "duplicate-key",
      /validators\[1\]: duplicate publicKey/,
    ],
    [
      configText([
        validatorJson(),
        validatorJson({ publicKey: toHex(KEY_B), consensus: "127.0.0.1:1", http: "127.0.0.1:2" }),
      ]),
      "duplicate-name",
      /duplicate name/,
    ],
    [
      configText([
        validatorJson(),
        validatorJson({ name: "replica-1", publicKey: toHex(KEY_B), http: "127.0.0.1:2" }),
      ]),
      "duplicate-address",
      /127\.0\.0\.1:9000 is used twice/,
    ],
  ];
  for (const [text, reason, message] of cases) {
    assert.throws(() => parseClusterConfig(text, "cluster.json"), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.reason, reason, e.message);
      assert.match(e.message, /^cluster\.json: /);
      assert.match(e.message, message);
      return true;
    }, text);
  }
  assert.throws(() => parseHostPort("host:", "--listen-http"), /--listen-http/);
  assert.deepEqual(parseHostPort("0.0.0.0:0", "--listen-http", { allowZero: true }), {
    hostname: "0.0.0.0",
    port: 0,
  });
});

Deno.test("init: writes the cluster file and 0600 key files that match its validators", async () => {
  const dir = await Deno.makeTempDir({ prefix: "init-test-" });
  try {
    const r = await initCluster({ replicas: 3, dir, basePort: 9100, powers: [1, 2, 3] });
    const config = parseClusterConfig(await Deno.readTextFile(r.configPath), r.configPath);
    assert.deepEqual(config.validators.map((v) => [v.consensus.port, v.http.port, v.power]), [
      [9100, 9101, 1],
      [9102, 9103, 2],
      [9104, 9105, 3],
    ]);
    for (const [i, path] of r.keyPaths.entries()) {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      assert.equal((await readSecretKey(path, config)).index, i);
    }
    await assert.rejects(initCluster({ replicas: 3, dir }), { reason: "exists" });
    await Deno.writeTextFile(`${dir}/stranger.key`, toHex(deriveSecretKey("stranger")));
    await assert.rejects(readSecretKey(`${dir}/stranger.key`, config), { reason: "unknown-key" });
    await Deno.writeTextFile(`${dir}/bad.key`, "zz");
    await assert.rejects(readSecretKey(`${dir}/bad.key`, config), { reason: "bad-key-file" });
    await assert.rejects(initCluster({ replicas: 2, dir: `${dir}/x`, powers: [1] }), {
      reason: "bad-flag",
    });
    await assert.rejects(initCluster({ replicas: 2, dir: `${dir}/y`, basePort: 65534 }), {
      reason: "bad-flag",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
