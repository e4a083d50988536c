/**
 * How concurrent reads slow a Deno KV atomic commit: a replica's commit-sized write (330 `set`s
 * of 40-byte values in one atomic operation) timed alone and with 1, 8 and 32 reader loops
 * running (each awaits one `get` of a random existing key at a time), on a fresh store in a temp
 * directory. Plain Deno KV: no library code.
 *
 * Usage: `deno run --allow-read --allow-write bench/kv_contention.ts [--writes 30]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { quantile } from "./figures.ts";

/** Mutations per timed commit (a Node of 250 key-value commands writes ~330 here). */
const MUTATIONS = 330;
/** Keys the readers pick from. */
const KEYS = 20_000;

/** One reader count's outcome. */
export interface ContentionRow {
  /** Reader loops running during the writes. */
  readonly readers: number;
  /** Median commit time, ms. */
  readonly writeP50Ms: number;
  /** Reads completed per second meanwhile. */
  readonly readsPerSecond: number;
}

/**
 * Times `writes` commits with each reader count in `readerCounts`.
 *
 * @example
 * ```ts
 * import { measureContention } from "./kv_contention.ts";
 * // const rows = await measureContention(kv, 30, [0, 32]);
 * ```
 */
export async function measureContention(
  kv: Deno.Kv,
  writes: number,
  readerCounts: readonly number[],
): Promise<ContentionRow[]> {
  const rows: ContentionRow[] = [];
  for (const readers of readerCounts) {
    let stop = false;
    let reads = 0;
    const loops = Array.from({ length: readers }, async () => {
      while (!stop) {
        await kv.get(["app", Math.floor(Math.random() * KEYS)]);
        reads++;
      }
    });
    const started = performance.now();
    const times: number[] = [];
    for (let w = 0; w < writes; w++) {
      const op = kv.atomic();
      for (let j = 0; j < MUTATIONS; j++) op.set(["w", readers, w, j], new Uint8Array(40));
      const t = performance.now();
      await op.commit();
      times.push(performance.now() - t);
    }
    const elapsed = performance.now() - started;
    stop = true;
    await Promise.all(loops);
    rows.push({
      readers,
      writeP50Ms: quantile(times, 0.5)!,
      readsPerSecond: (reads * 1000) / elapsed,
    });
  }
  return rows;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { writes: { type: "string", default: "30" } },
  });
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-" });
  const kv = await Deno.openKv(`${dir}/contention.kv`);
  try {
    for (let i = 0; i < KEYS; i += 500) {
      const op = kv.atomic();
      for (let j = i; j < i + 500; j++) op.set(["app", j], new Uint8Array(40));
      await op.commit();
    }
    for (const r of await measureContention(kv, Number(values.writes), [0, 1, 8, 32])) {
      console.log(
        `${String(r.readers).padStart(2)} readers: ${MUTATIONS}-mutation commit p50 ` +
          `${r.writeP50Ms.toFixed(2)} ms, ${Math.round(r.readsPerSecond)} reads/s`,
      );
    }
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
