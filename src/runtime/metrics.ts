/**
 * Prometheus metrics of one replica, served at `GET /metrics` in the text exposition format.
 *
 * Built on `prom-client` (npm): the metric types, label handling and exposition format of the
 * Node.js ecosystem's standard client, on one {@link Registry} per replica (so replicas in one
 * process never share counters), without its default process metrics (they read Node-only
 * process internals). Deno's built-in OpenTelemetry was the other candidate; it exports over OTLP
 * to a collector and needs `OTEL_DENO=true` at process start, while an operator of a consensus
 * engine expects a plain pull endpoint (CometBFT's `/metrics`) that works in any process.
 *
 * Names follow CometBFT's where one exists (`consensus_height`, `consensus_rounds` → `view`,
 * `consensus_round_duration_seconds` → `view_duration_seconds`, `consensus_block_interval_seconds`
 * → `commit_latency_seconds`, `consensus_byzantine_validators` → `equivocations_total`,
 * `p2p_peers`, `consensus_block_syncing` → `catching_up`, `mempool_size`, `mempool_size_bytes`),
 * with the namespace `hotstuff_`.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ConsensusEvent } from "../events.ts";
import type { ConsensusMessage } from "../types.ts";

/**
 * What the metrics read at scrape time.
 *
 * @example
 * ```ts
 * import { type MetricsSource, ReplicaMetrics } from "./metrics.ts";
 * const source: MetricsSource = {
 *   peers: () => ({ connected: 0, connectedPower: 0, totalPower: 1, droppedFrames: 0 }),
 *   pool: () => ({ commands: 0, bytes: 0 }),
 *   chain: () => ({ view: 0, height: 0 }),
 * };
 * console.log((await new ReplicaMetrics(source).text()).includes("hotstuff_p2p_peers 0")); // true
 * ```
 */
export interface MetricsSource {
  /** Connected peers and their voting power, and frames dropped from full send queues. */
  peers(): { connected: number; connectedPower: number; totalPower: number; droppedFrames: number };
  /** The pool's commands and bytes. */
  pool(): { commands: number; bytes: number };
  /** Current view and committed height. */
  chain(): { view: number; height: number };
}

/** Histogram buckets of view and commit latencies, seconds. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Histogram buckets of storage writes, seconds. */
const WRITE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Inserted Nodes remembered for commit latency; older ones are forgotten. */
const INSERTED_MAX = 4_096;

/**
 * One replica's metrics: counters fed by its events, gauges read at scrape time.
 *
 * @example
 * ```ts
 * import { ReplicaMetrics } from "./metrics.ts";
 * const metrics = new ReplicaMetrics({
 *   peers: () => ({ connected: 3, connectedPower: 3, totalPower: 4, droppedFrames: 0 }),
 *   pool: () => ({ commands: 0, bytes: 0 }),
 *   chain: () => ({ view: 7, height: 5 }),
 * });
 * const text = await metrics.text();
 * console.log(text.includes("hotstuff_consensus_height 5"));
 * ```
 */
export class ReplicaMetrics {
  readonly #registry: Registry = new Registry();
  readonly #timeouts: Counter;
  readonly #sent: Counter;
  readonly #received: Counter;
  readonly #rejected: Counter;
  readonly #equivocations: Counter;
  readonly #evidence: Counter;
  readonly #catchUpNodes: Counter;
  readonly #catchUpRequests: Counter;
  readonly #viewDuration: Histogram;
  readonly #commitLatency: Histogram;
  readonly #storageWrite: Histogram;
  readonly #inserted = new Map<string, number>();
  #viewStart: number | null = null;
  #catchingUp = false;

  /** Metrics reading `source` at scrape time. */
  constructor(source: MetricsSource) {
    const registers = [this.#registry];
    const gauge = (name: string, help: string, read: () => number): Gauge =>
      new Gauge({
        name,
        help,
        registers,
        collect(this: Gauge) {
          this.set(read());
        },
      });
    gauge("hotstuff_consensus_height", "Committed height.", () => source.chain().height);
    gauge("hotstuff_consensus_view", "Current view.", () => source.chain().view);
    gauge(
      "hotstuff_p2p_peers",
      "Peers with an authenticated connection.",
      () => source.peers().connected,
    );
    gauge(
      "hotstuff_p2p_peers_power",
      "Voting power of the connected peers.",
      () => source.peers().connectedPower,
    );
    gauge(
      "hotstuff_consensus_validators_power",
      "Total voting power of the validator set.",
      () => source.peers().totalPower,
    );
    // A count since start that the connections keep: a counter, fed the increase at each scrape.
    let droppedSeen = 0;
    new Counter({
      name: "hotstuff_p2p_send_queue_dropped_frames_total",
      help: "Frames dropped from full per-peer send queues.",
      registers,
      collect(this: Counter) {
        const dropped = source.peers().droppedFrames;
        if (dropped <= droppedSeen) return;
        this.inc(dropped - droppedSeen);
        droppedSeen = dropped;
      },
    });
    gauge("hotstuff_mempool_size", "Commands in the pool.", () => source.pool().commands);
    gauge(
      "hotstuff_mempool_size_bytes",
      "Bytes of commands in the pool.",
      () => source.pool().bytes,
    );
    gauge(
      "hotstuff_consensus_catching_up",
      "1 while the CatchUp flow waits for Nodes, else 0.",
      () => this.#catchingUp ? 1 : 0,
    );
    this.#timeouts = new Counter({
      name: "hotstuff_consensus_timeouts_total",
      help: "Views that timed out here.",
      registers,
    });
    const byType = { labelNames: ["type"], registers };
    this.#sent = new Counter({
      name: "hotstuff_consensus_messages_sent_total",
      help: "Signed consensus messages sent, by type (a broadcast counts once).",
      ...byType,
    });
    this.#received = new Counter({
      name: "hotstuff_consensus_messages_received_total",
      help: "Consensus messages received from peers, by type.",
      ...byType,
    });
    this.#rejected = new Counter({
      name: "hotstuff_consensus_messages_rejected_total",
      help: "Consensus messages rejected, by type and reason.",
      labelNames: ["type", "reason"],
      registers,
    });
    this.#equivocations = new Counter({
      name: "hotstuff_consensus_equivocations_total",
      help: "Equivocations detected (double votes, double proposals), by kind.",
      labelNames: ["kind"],
      registers,
    });
    this.#evidence = new Counter({
      name: "hotstuff_evidence_records_total",
      help: "Verified evidence records of equivocation stored (SPECIFICATION.md 16.2), by kind.",
      labelNames: ["kind"],
      registers,
    });
    this.#catchUpRequests = new Counter({
      name: "hotstuff_catchup_requests_total",
      help: "Catch-up requests the CatchUp flow made.",
      registers,
    });
    this.#catchUpNodes = new Counter({
      name: "hotstuff_catchup_nodes_total",
      help: "Nodes received by the CatchUp flow (rate: catch-up speed).",
      registers,
    });
    this.#viewDuration = new Histogram({
      name: "hotstuff_consensus_view_duration_seconds",
      help: "Time spent in each view.",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#commitLatency = new Histogram({
      name: "hotstuff_consensus_commit_latency_seconds",
      help: "Time from a Node's insertion into the NodeTree here to its commit.",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#storageWrite = new Histogram({
      name: "hotstuff_storage_write_seconds",
      help: "Duration of storage write batches.",
      buckets: WRITE_BUCKETS,
      registers,
    });
  }

  /** Counts one event (`now`: ms, monotonic). */
  onEvent(e: ConsensusEvent, now: number): void {
    switch (e.type) {
      case "view:enter":
        if (this.#viewStart !== null) this.#viewDuration.observe((now - this.#viewStart) / 1000);
        this.#viewStart = now;
        return;
      case "view:timeout":
        return this.#timeouts.inc();
      case "node:insert":
        if (this.#inserted.size >= INSERTED_MAX) {
          this.#inserted.delete(this.#inserted.keys().next().value!);
        }
        this.#inserted.set(hashKey(e.hash), now);
        return;
      case "node:commit":
        return this.#committed(hashKey(e.hash), now);
      case "message:reject":
        return this.#rejected.inc({ type: e.message, reason: e.reason });
      case "equivocation:detect":
        return this.#equivocations.inc({ kind: e.evidence.kind });
      case "evidence:record":
        return this.#evidence.inc({ kind: e.kind });
      case "catchup:request":
        this.#catchingUp = true;
        return this.#catchUpRequests.inc();
      case "catchup:receive":
        this.#catchingUp = false;
        return this.#catchUpNodes.inc(e.nodes);
    }
  }

  /** Counts a message this replica signed and sent. */
  onSend(message: ConsensusMessage): void {
    this.#sent.inc({ type: message.type });
  }

  /** Counts a message from a peer. */
  onReceive(message: ConsensusMessage): void {
    this.#received.inc({ type: message.type });
  }

  /** Records one storage write's duration, ms. */
  onStorageWrite(ms: number): void {
    this.#storageWrite.observe(ms / 1000);
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string> {
    return this.#registry.metrics();
  }

  /** The exposition's content type. */
  get contentType(): string {
    return this.#registry.contentType;
  }

  #committed(key: string, now: number): void {
    const at = this.#inserted.get(key);
    if (at === undefined) return;
    this.#inserted.delete(key);
    this.#commitLatency.observe((now - at) / 1000);
  }
}

function hashKey(hash: Uint8Array): string {
  let s = "";
  for (let i = 0; i < 8 && i < hash.length; i++) s += hash[i]!.toString(16).padStart(2, "0");
  return s;
}
