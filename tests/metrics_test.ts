/**
 * `GET /metrics`: the exposition passes `promtool check metrics`, and a real Prometheus server
 * (Debian's `prometheus` package) scrapes a 4-replica cluster and sees the height rise through its
 * HTTP query API. Both parts are skipped, saying so, where the binaries are missing (`.ci/run`
 * installs them).
 *
 * @module
 */
import { ReplicaMetrics } from "../src/runtime/metrics.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { freePorts, HOST, sleep, startInProcessCluster, waitUntil } from "./support/cluster.ts";

function has(binary: string): boolean {
  try {
    return new Deno.Command(binary, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const PROMTOOL = has("promtool");
const PROMETHEUS = has("prometheus");

Deno.test("metrics: events feed counters and histograms; gauges are read at scrape time", async () => {
  let height = 5;
  let droppedFrames = 7;
  const m = new ReplicaMetrics({
    peers: () => ({ connected: 2, connectedPower: 3, totalPower: 5, droppedFrames }),
    pool: () => ({ commands: 11, bytes: 352 }),
    chain: () => ({ view: 9, height }),
  });
  const hash = new Uint8Array(32).fill(1);
  m.onEvent({ type: "view:enter", view: 1, leader: hash, reason: "start" }, 0);
  m.onEvent({ type: "node:insert", hash, height: 6, view: 1 }, 10);
  m.onEvent({ type: "view:enter", view: 2, leader: hash, reason: "qc" }, 250);
  m.onEvent({ type: "node:commit", hash, height: 6, view: 1 }, 510);
  m.onEvent({ type: "view:timeout", view: 2 }, 600);
  m.onEvent(
    { type: "message:reject", from: null, message: "vote", reason: "stale-view", detail: "" },
    600,
  );
  m.onEvent({ type: "catchup:request", from: null, fromHeight: 3 }, 700);
  height = 6;
  const text = await m.text();
  for (
    const line of [
      "hotstuff_consensus_height 6",
      "hotstuff_consensus_view 9",
      "hotstuff_p2p_peers 2",
      "hotstuff_p2p_peers_power 3",
      "hotstuff_consensus_validators_power 5",
      "hotstuff_p2p_send_queue_dropped_frames_total 7",
      "hotstuff_mempool_size 11",
      "hotstuff_mempool_size_bytes 352",
      "hotstuff_consensus_catching_up 1",
      "hotstuff_consensus_timeouts_total 1",
      'hotstuff_consensus_messages_rejected_total{type="vote",reason="stale-view"} 1',
      "hotstuff_consensus_view_duration_seconds_count 1",
      "hotstuff_consensus_view_duration_seconds_sum 0.25",
      "hotstuff_consensus_commit_latency_seconds_sum 0.5",
      'hotstuff_consensus_commit_latency_seconds_bucket{le="0.5"} 1',
      'hotstuff_consensus_commit_latency_seconds_bucket{le="0.25"} 0',
      "hotstuff_catchup_requests_total 1",
    ]
  ) {
    assert(text.split("\n").includes(line), `missing line: ${line}`);
  }
  // The dropped-frames count is a counter: the next scrape carries on from the last.
  droppedFrames = 9;
  const next = (await m.text()).split("\n");
  assert(next.includes("# TYPE hotstuff_p2p_send_queue_dropped_frames_total counter"), "counter");
  assert(next.includes("hotstuff_p2p_send_queue_dropped_frames_total 9"), "follows the count");
});

Deno.test({
  name: "metrics: a scrape of a running replica passes promtool check metrics",
  ignore: !PROMTOOL,
  async fn() {
    const cluster = await startInProcessCluster({ chainId: "metrics-promtool", validators: 4 });
    try {
      const url = cluster.peers[0]!.httpUrl;
      await waitUntil(
        "commits",
        () => (cluster.replicas[0]?.engine.core.tree.root.node.height ?? 0) > 5,
      );
      const r = await fetch(`${url}/metrics`);
      assertEquals(r.status, 200, "status");
      assert(r.headers.get("content-type")!.startsWith("text/plain"), "content type");
      const body = await r.text();
      const check = new Deno.Command("promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = check.stdin.getWriter();
      await writer.write(new TextEncoder().encode(body));
      await writer.close();
      const out = await check.output();
      const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert(out.success, `promtool check metrics failed: ${said}`);
      assertEquals(said.trim(), "", "promtool found lint problems");
      const bad = await fetch(`${url}/metrics?x=1`);
      assertEquals(bad.status, 400, "an unknown parameter is refused");
      await bad.body?.cancel();
      const post = await fetch(`${url}/metrics`, { method: "POST" });
      assertEquals(post.status, 405, "POST is refused");
      await post.body?.cancel();
    } finally {
      await cluster.close();
    }
  },
});

Deno.test({
  name: "metrics: a real Prometheus server scrapes 4 replicas and sees the height rise",
  ignore: !PROMETHEUS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startInProcessCluster({ chainId: "metrics-prometheus", validators: 4 });
    const dir = await Deno.makeTempDir({ prefix: "hotstuff-prometheus-" });
    const [port] = freePorts(1);
    const targets = cluster.peers.map((p) => `"${new URL(p.httpUrl).host}"`).join(", ");
    await Deno.writeTextFile(
      `${dir}/prometheus.yml`,
      `global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n` +
        `scrape_configs:\n  - job_name: hotstuff\n    static_configs:\n      - targets: [${targets}]\n`,
    );
    const server = new Deno.Command("prometheus", {
      args: [
        `--config.file=${dir}/prometheus.yml`,
        `--storage.tsdb.path=${dir}/data`,
        `--web.listen-address=${HOST}:${port}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const api = `http://${HOST}:${port}`;
    const query = async (
      q: string,
    ): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
      const r = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = await r.json() as { status: string; data: { result: [] } };
      assertEquals(body.status, "success", `query ${q}`);
      return body.data.result;
    };
    try {
      let first = -1;
      await waitUntil("Prometheus sees all 4 replicas up", async () => {
        try {
          const up = await query('up{job="hotstuff"} == 1');
          if (up.length !== 4) return false;
          const h = await query("min(hotstuff_consensus_height)");
          if (h.length !== 1) return false;
          first = Number(h[0]!.value[1]);
          return true;
        } catch {
          return false;
        }
      }, 60_000);
      await sleep(2_500);
      await waitUntil("the height rises in Prometheus", async () => {
        const h = await query("min(hotstuff_consensus_height)");
        return h.length === 1 && Number(h[0]!.value[1]) > first;
      }, 30_000);
      const series = await query("hotstuff_consensus_height");
      assertEquals(series.length, 4, "one height series per replica");
    } finally {
      server.kill("SIGTERM");
      await server.status;
      await cluster.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
