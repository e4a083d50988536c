/**
 * A client for tests with real processes: it keeps writing to the running replicas of a
 * {@link ProcessCluster} and remembers every acknowledged write.
 *
 * @module
 */
import { type ProcessCluster, putKv, sleep } from "../../examples/kv_store/cluster.ts";

/** A client that keeps writing to live replicas and remembers every acknowledged write. */
export class Writer {
  readonly acked = new Map<string, string>();
  maxHeight = 0;
  failures = 0;
  readonly #stop = new AbortController();
  readonly #done: Promise<void>;

  constructor(cluster: ProcessCluster) {
    this.#done = this.#run(cluster);
  }

  async #run(cluster: ProcessCluster): Promise<void> {
    for (let n = 0; !this.#stop.signal.aborted; n++) {
      const live = cluster.urls.map((_, i) => i).filter((i) => cluster.running(i));
      const url = cluster.urls[live[n % live.length]!]!;
      const key = `w-${n}`;
      const value = `value ${n} ${Date.now()}`;
      try {
        const r = await putKv(url, key, new TextEncoder().encode(value), 20_000);
        this.acked.set(key, value);
        this.maxHeight = Math.max(this.maxHeight, r.height);
      } catch {
        // Not acknowledged (the replica was killed, or busy): the client may retry elsewhere.
        this.failures++;
        await sleep(50);
      }
    }
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }
}
