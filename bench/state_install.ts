/**
 * The joiner's side of a snapshot install without the network: 256 chunk answers of a state of
 * `keys` keys (`"k/key-N"` = `"value-N"`, as in section j) are decoded, checked, adopted by a
 * tree and written to a durable Deno KV store, once packed by bucket
 * (`DenoKvStorage.putSnapshotState`, what an install does) and once as one entry per key
 * (`putStateEntries`, what it did before), alternating. Prints wall and CPU time (all threads of
 * the process) per step; the atomic operations and mutations each way.
 *
 * `deno run -A bench/state_install.ts [--keys 100000] [--rounds 3]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { decodeChunk, encodeChunk } from "../src/state/chunk.ts";
import {
  BUCKETS_PER_CHUNK,
  type CheckedChunk,
  SNAPSHOT_CHUNKS,
  StateTree,
  verifyChunk,
} from "../src/state/tree.ts";
import { DenoKvStorage, type SnapshotBucket } from "../src/storage/deno_kv.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { keys: { type: "string" }, rounds: { type: "string" } },
});
const keys = Number(values.keys ?? 100_000);
const rounds = Number(values.rounds ?? 3);
const enc = new TextEncoder();
const source = new StateTree();
for (let i = 0; i < keys; i++) source.apply([[enc.encode(`k/key-${i}`), enc.encode(`value-${i}`)]]);
const version = source.freeze();
const hashes = version.chunkHashes();
const answers = Array.from({ length: SNAPSHOT_CHUNKS }, (_, c) => encodeChunk(version.chunk(c)));
/** Chunks written per call, and calls in flight, as `src/state/sync.ts` does. */
const CHUNKS_PER_WRITE = 32;
const WRITES_IN_FLIGHT = 3;

function bucketsOf(chunks: readonly CheckedChunk[]): SnapshotBucket[] {
  return chunks.flatMap((c) =>
    Array.from({ length: BUCKETS_PER_CHUNK }, (_, i) => ({
      bucket: c.index * BUCKETS_PER_CHUNK + i,
      entries: c.entries.slice(c.bucketStarts[i], c.bucketStarts[i + 1]),
    })).filter((b) => b.entries.length > 0)
  );
}

async function install(dir: string, packed: boolean): Promise<Record<string, number>> {
  const kv = await Deno.openKv(`${dir}/${packed ? "packed" : "rows"}-${crypto.randomUUID()}.kv`);
  const counts = { operations: 0, mutations: 0 };
  const counting = new Proxy(kv, {
    get(target, name) {
      if (name !== "atomic") {
        const value = Reflect.get(target, name, target);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return () => {
        const op = target.atomic();
        const set = op.set.bind(op);
        const commit = op.commit.bind(op);
        op.set = (key, value) => (counts.mutations++, set(key, value));
        op.commit = () => (counts.operations++, commit());
        return op;
      };
    },
  });
  const store = DenoKvStorage.wrap(counting);
  const ms = { decode: 0, check: 0, adopt: 0, write: 0 };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const tree = new StateTree();
  const writes: Promise<void>[] = [];
  let held: CheckedChunk[] = [];
  for (let c = 0; c < SNAPSHOT_CHUNKS; c++) {
    let t = performance.now();
    const entries = decodeChunk(answers[c]!)!;
    ms.decode += performance.now() - t;
    t = performance.now();
    const r = verifyChunk(c, entries, hashes[c]!);
    if (!r.ok) throw new Error(r.reason);
    ms.check += performance.now() - t;
    t = performance.now();
    tree.adoptChunk(r.chunk);
    ms.adopt += performance.now() - t;
    t = performance.now();
    held.push(r.chunk);
    if (held.length === CHUNKS_PER_WRITE || c === SNAPSHOT_CHUNKS - 1) {
      if (writes.length >= WRITES_IN_FLIGHT) await writes.shift();
      writes.push(
        packed
          ? store.putSnapshotState(bucketsOf(held))
          : store.putStateEntries(held.flatMap((h) => h.entries.map((e) => [e.key, e.value]))),
      );
      held = [];
    }
    ms.write += performance.now() - t;
  }
  const t = performance.now();
  await Promise.all(writes);
  ms.write += performance.now() - t;
  tree.root();
  const cpu = process.cpuUsage(cpu0);
  const out = {
    wallMs: performance.now() - t0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    ...Object.fromEntries(Object.entries(ms).map(([k, v]) => [`${k}Ms`, v])),
    ...counts,
  };
  await store.close();
  kv.close();
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round(v)]));
}

const dir = await Deno.makeTempDir({ prefix: "hotstuff-bench-install-" });
try {
  const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
  console.log(`${keys} keys, 256 chunks, load ${load}`);
  for (let round = 0; round < rounds; round++) {
    for (const packed of [true, false]) {
      console.log(`${packed ? "packed" : "rows  "} ${JSON.stringify(await install(dir, packed))}`);
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
