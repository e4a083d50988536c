/**
 * Integration tests with real processes: replicas of the key-value store run as `deno run
 * examples/kv_store/replica.ts` children in temporary directories on free ports, and are killed
 * with SIGKILL, restarted from their data directories, or started with a wiped one. Every child
 * is stopped (and every directory removed) in `finally`, whatever happens.
 */
import assert from "node:assert/strict";
import { Writer } from "./support/writer.ts";
import {
  compareChains,
  getKv,
  ProcessCluster,
  putKv,
  tryStatus,
} from "../examples/kv_store/cluster.ts";
import { committedHeights, pollUntil } from "./support/process_cluster.ts";

/** Nodes the cluster commits before a replica with a wiped data directory joins. */
const CATCHUP_NODES = 2000;
/** Nodes the live replicas must commit while one is down, to show they keep going. */
const PROGRESS_NODES = 5;

const ENTRY_REPLICA = new URL("../examples/kv_store/replica.ts", import.meta.url).pathname;
const ENTRY_INIT = new URL("../src/cli/init.ts", import.meta.url).pathname;
const ENTRY_DEMO = new URL("../examples/kv_store/demo.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Index of the current leader, as replica `asked` sees it. */
async function leaderIndex(cluster: ProcessCluster, asked: number): Promise<number> {
  const s = await tryStatus(cluster.urls[asked]!);
  assert.ok(s !== null, `replica ${asked} answers`);
  const i = cluster.config.validators.findIndex((v) => toHexKey(v.publicKey) === s.leader);
  assert.ok(i >= 0, "the leader is a validator");
  return i;
}

function toHexKey(key: Uint8Array): string {
  return Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");
}

const others = (n: number, i: number): number[] =>
  Array.from({ length: n }, (_, j) => j).filter((j) => j !== i);

/** Every acknowledged write reads back, with its value, from every replica. */
async function assertWritesEverywhere(cluster: ProcessCluster, writer: Writer): Promise<void> {
  const all = cluster.urls.map((_, i) => i);
  await pollUntil(
    "every replica commits the last acknowledged write",
    async () => (await committedHeights(cluster, all)).every((h) => h >= writer.maxHeight),
    { timeoutMs: 20_000, cluster },
  );
  for (const [key, value] of writer.acked) {
    for (const url of cluster.urls) {
      const got = await getKv(url, key);
      assert.ok(got !== null, `${key} is missing at ${url}`);
      assert.equal(new TextDecoder().decode(got), value, `${key} at ${url}`);
    }
  }
}

async function run(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), { args, stdin: "null" }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function replicaArgs(...args: string[]): string[] {
  return [
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-net",
    "--config",
    DENO_JSON,
    ENTRY_REPLICA,
    ...args,
  ];
}

// ---------------------------------------------------------------------------------------------
// Scenarios

Deno.test(
  "4 replicas: kill -9 of the leader, then of a follower: the other three keep committing, the killed one restarts from its data dir and catches up, and every acknowledged write is readable everywhere",
  async () => {
    const cluster = await ProcessCluster.create({ replicas: 4, prefix: "it-kill-" });
    let writer: Writer | null = null;
    try {
      for (let i = 0; i < 4; i++) cluster.start(i);
      await cluster.waitReady();
      await pollUntil(
        "the cluster commits",
        async () => (await committedHeights(cluster, [0, 1, 2, 3])).every((h) => h >= 5),
        { timeoutMs: 20_000, cluster },
      );
      writer = new Writer(cluster);

      for (const role of ["leader", "follower"] as const) {
        const leader = await leaderIndex(cluster, 0);
        const victim = role === "leader" ? leader : (leader + 1) % 4;
        await cluster.kill(victim, "SIGKILL");
        const live = others(4, victim);
        const atKill = Math.max(...(await committedHeights(cluster, live)));
        await pollUntil(
          `the three live replicas commit ${PROGRESS_NODES} Nodes after the ${role} (${victim}) died`,
          async () =>
            (await committedHeights(cluster, live)).every((h) => h >= atKill + PROGRESS_NODES),
          { timeoutMs: 30_000, cluster },
        );
        const acksBefore = writer.acked.size;
        await pollUntil(
          "writes are acknowledged without it",
          () => Promise.resolve(writer!.acked.size > acksBefore),
          { timeoutMs: 20_000, cluster },
        );

        cluster.start(victim);
        await cluster.waitReady(30_000, [victim]);
        const target = Math.max(...(await committedHeights(cluster, live)));
        await pollUntil(
          `the restarted ${role} catches up to height ${target}`,
          async () => (await committedHeights(cluster, [victim]))[0]! >= target,
          { timeoutMs: 30_000, cluster },
        );
      }

      await writer.stop();
      assert.ok(writer.acked.size > 0, "some writes were acknowledged");
      await assertWritesEverywhere(cluster, writer);
      const chains = await compareChains(cluster.urls);
      assert.ok(chains.agree, `the replicas' committed chains agree: ${JSON.stringify(chains)}`);
    } finally {
      await writer?.stop();
      await cluster.close();
    }
  },
);

Deno.test(
  `4 replicas: a replica with a wiped data dir joins after ${CATCHUP_NODES} committed Nodes and catches up`,
  async () => {
    const cluster = await ProcessCluster.create({ replicas: 4, prefix: "it-fresh-" });
    try {
      for (let i = 0; i < 4; i++) cluster.start(i);
      await cluster.waitReady();
      const early = await putKv(cluster.urls[0]!, "early", new TextEncoder().encode("bird"));
      await pollUntil(
        `the cluster commits ${CATCHUP_NODES} Nodes`,
        async () => Math.min(...(await committedHeights(cluster, [0, 1, 2]))) >= CATCHUP_NODES,
        { timeoutMs: 240_000, cluster },
      );
      await cluster.kill(3, "SIGKILL");
      await cluster.wipe(3);
      cluster.start(3);
      await cluster.waitReady(30_000, [3]);
      const target = Math.max(...(await committedHeights(cluster, [0, 1, 2])));
      assert.ok(target >= CATCHUP_NODES);
      await pollUntil(
        `the fresh replica catches up to height ${target}`,
        async () => (await committedHeights(cluster, [3]))[0]! >= target,
        { timeoutMs: 120_000, cluster },
      );
      assert.equal(new TextDecoder().decode((await getKv(cluster.urls[3]!, "early"))!), "bird");
      assert.ok(early.height >= 1);
      const log = await Deno.readTextFile(cluster.logPath(3));
      assert.match(log, /"event":"catchup:receive"/, "it caught up through the CatchUp flow");
      const chains = await compareChains(cluster.urls);
      assert.ok(chains.agree, JSON.stringify(chains));
    } finally {
      await cluster.close();
    }
  },
);

// ---------------------------------------------------------------------------------------------
// The command line

Deno.test("replica CLI: bad flags, a bad cluster file, a foreign key file or a busy data dir print one line and exit 2", async () => {
  const cluster = await ProcessCluster.create({ replicas: 4, prefix: "it-cli-" });
  const d = cluster.dir;
  try {
    const key0 = `${d}/replica-0.key`;
    await Deno.writeTextFile(`${d}/bad.json`, JSON.stringify({ chainId: "c", validators: [] }));
    const dup = JSON.parse(await Deno.readTextFile(cluster.configPath));
    dup.validators[1].publicKey = dup.validators[0].publicKey;
    await Deno.writeTextFile(`${d}/dup.json`, JSON.stringify(dup));
    await Deno.writeTextFile(`${d}/stranger.key`, "11".repeat(32));
    const cases: Array<[string[], RegExp]> = [
      [replicaArgs("--config", cluster.configPath, "--key", key0), /missing required flag --data/],
      [replicaArgs("--bogus"), /--bogus/],
      [
        replicaArgs(
          "--config",
          cluster.configPath,
          "--key",
          key0,
          "--data",
          `${d}/x`,
          "--listen-http",
          "nowhere",
        ),
        /--listen-http/,
      ],
      [
        replicaArgs(
          "--config",
          cluster.configPath,
          "--key",
          key0,
          "--data",
          `${d}/x`,
          "--log-level",
          "loud",
        ),
        /--log-level/,
      ],
      [
        replicaArgs("--config", `${d}/missing.json`, "--key", key0, "--data", `${d}/x`),
        /cannot read/,
      ],
      [
        replicaArgs("--config", `${d}/bad.json`, "--key", key0, "--data", `${d}/x`),
        /validators must be/,
      ],
      [
        replicaArgs("--config", `${d}/dup.json`, "--key", key0, "--data", `${d}/x`),
        /duplicate publicKey/,
      ],
      [
        replicaArgs(
          "--config",
          cluster.configPath,
          "--key",
          `${d}/stranger.key`,
          "--data",
          `${d}/x`,
        ),
        /not a validator/,
      ],
      [[
        "run",
        "--allow-read",
        "--allow-write",
        "--config",
        DENO_JSON,
        ENTRY_INIT,
        "--replicas",
        "0",
        "--dir",
        `${d}/i`,
      ], /--replicas/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    for (const [i, r] of results.entries()) {
      assert.equal(r.code, 2, `exit code of case ${i}: ${r.stderr}`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, cases[i]![1]);
    }
    // A second process on a data dir in use is refused.
    cluster.start(0);
    await cluster.waitReady(30_000, [0]);
    const busy = await run(
      replicaArgs("--config", cluster.configPath, "--key", key0, "--data", cluster.dataDir(0)),
    );
    assert.equal(busy.code, 2, busy.stderr);
    assert.match(busy.stderr, /in use by another replica/);
  } finally {
    await cluster.close();
  }
});

Deno.test("replica CLI: SIGTERM stops a replica cleanly (exit 0); the listen flags override the cluster file's addresses", async () => {
  const cluster = await ProcessCluster.create({ replicas: 1, prefix: "it-term-" });
  try {
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (free.addr as Deno.NetAddr).port;
    free.close();
    const child = new Deno.Command(Deno.execPath(), {
      args: replicaArgs(
        "--config",
        cluster.configPath,
        "--key",
        `${cluster.dir}/replica-0.key`,
        "--data",
        cluster.dataDir(0),
        "--listen-http",
        `127.0.0.1:${port}`,
        "--listen-consensus",
        "127.0.0.1:0",
      ),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    try {
      await pollUntil(
        "it answers on the overriding port",
        async () => (await tryStatus(`http://127.0.0.1:${port}`)) !== null,
        { timeoutMs: 30_000 },
      );
      await pollUntil(
        "it commits alone (1 of 1)",
        async () => ((await tryStatus(`http://127.0.0.1:${port}`))?.committed.height ?? 0) >= 3,
        { timeoutMs: 20_000 },
      );
    } finally {
      child.kill("SIGTERM");
    }
    const status = await child.status;
    assert.equal(status.code, 0);
    const lines = (await stderr).trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.event === "replica:closed"), "logged its clean stop");
    assert.ok(lines.every((l) => typeof l.event === "string"), "every line is a JSON event");
  } finally {
    await cluster.close();
  }
});

Deno.test("demo: a short run with 4 replicas ends with agreement, exit 0, and no temp dir or child left", async () => {
  const r = await run([
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-net",
    "--allow-run",
    "--allow-env",
    "--config",
    DENO_JSON,
    ENTRY_DEMO,
    "--duration",
    "4",
    "--clients",
    "4",
    "--batch",
    "50",
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /every replica has the same Node at common height \d+/);
  assert.match(r.stdout, /live NodeTree page: http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(r.stdout, /closing check: comparing the committed heads/);
  assert.match(r.stdout, /result: OK/);
  const dir = r.stdout.match(/cluster of 4 replicas in (\S+)/)?.[1];
  assert.ok(dir !== undefined);
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, "the temp dir is removed");
});
