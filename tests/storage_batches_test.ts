/**
 * Tests of DenoKvBatchStore (src/storage/batches.ts): grouped writes, reads, deletes, and that a
 * put made while (or right as) a group is being committed is never left waiting.
 */
import assert from "node:assert/strict";
import { DenoKvBatchStore } from "../src/storage/batches.ts";

const digest = (i: number) => new Uint8Array(32).fill(i);

/** `p`, or a rejection after `ms`: a put that is never committed must fail the test, not hang. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<T>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

Deno.test("batch store: puts are grouped, read back, deleted; a large batch is refused", async () => {
  const store = await DenoKvBatchStore.open(":memory:");
  try {
    await Promise.all(
      Array.from({ length: 25 }, (_, i) => store.put(digest(i), new Uint8Array([i]))),
    );
    assert.ok(store.writes <= 4, `25 puts in a few operations: ${store.writes}`);
    assert.deepEqual(await store.get(digest(7)), new Uint8Array([7]));
    await store.delete(digest(7));
    assert.equal(await store.get(digest(7)), null);
    await assert.rejects(store.put(digest(99), new Uint8Array(70_000)), RangeError);
  } finally {
    await store.close();
  }
});

Deno.test("batch store: a put made from a put's own callback, as its group lands, is committed", async () => {
  const store = await DenoKvBatchStore.open(":memory:");
  try {
    for (let i = 0; i < 20; i++) {
      // The second put is queued by the first one's continuation, right as the drain that wrote
      // the first looks at an empty queue.
      await within(
        store.put(digest(i), new Uint8Array([i])).then(() =>
          store.put(digest(100 + i), new Uint8Array([i]))
        ),
        5_000,
        `chained put ${i}`,
      );
    }
    assert.deepEqual(await store.get(digest(119)), new Uint8Array([19]));
  } finally {
    await store.close();
  }
});
