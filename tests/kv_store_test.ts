/**
 * Tests of the key-value store's application logic (examples/kv_store/app.ts, routes.ts) and the
 * batching Application of the mempool (src/runtime/mempool.ts): command format, batches named by digest,
 * execution (SPECIFICATION.md 13.2: live entries not consumed before are delivered once; the rest
 * skipped), expiry heights, at most once against committed Nodes of the horizon and uncommitted
 * ancestors (after a restore too), Node limits, missing batches, the pool's bounds and the leader's
 * choice of batches. No network, no disk: state views are plain maps, batches in memory.
 */
import assert from "node:assert/strict";
import { encodeValue } from "../src/codec.ts";
import { genesisQC } from "../src/codec.ts";
import {
  batchDigest,
  commandId,
  type CommittedCommand,
  decodeDigests,
  decodeEntryList,
  encodeBatch,
  encodeDigests,
  MemoryBatchStore,
  Mempool,
  MempoolError,
  type MempoolOptions,
} from "../src/runtime/mempool.ts";
import type { StateView } from "../src/app.ts";
import type { Node } from "../src/types.ts";
import { toHex } from "../src/types.ts";
import {
  decodeKvCommand,
  encodeKvCommand,
  KV_KEY_BYTES_MAX,
  KV_VALUE_BYTES_MAX,
  kvMachine,
  kvStateKey,
} from "../examples/kv_store/app.ts";
import { parseKeyPath } from "../examples/kv_store/routes.ts";
import { RouteError } from "../src/net/http.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const enc = new TextEncoder();
const dec = new TextDecoder();

function set(key: string, value: string, nonce?: number): Uint8Array {
  const n = nonce === undefined ? undefined : new Uint8Array([nonce]);
  return encodeKvCommand({ op: "set", key: enc.encode(key), value: enc.encode(value) }, n);
}

/** A state view over a map (hex key -> value): committed state and pending ancestors alike. */
function stateOf(values: Map<string, Uint8Array | null> = new Map()): StateView {
  return { get: (key) => Promise.resolve(values.get(toHex(key)) ?? null) };
}

/** Every batch the tests make, as if every replica had stored it. */
const STORE = new MemoryBatchStore();

/** Stores a batch of commands (all with one expiry height) and returns its bytes and digest. */
function makeBatch(commands: readonly Uint8Array[], expires = 100): {
  bytes: Uint8Array;
  digest: Uint8Array;
} {
  const bytes = encodeBatch(commands.map((command) => ({ command, expires })));
  const digest = batchDigest(bytes);
  void STORE.put(digest, bytes);
  return { bytes, digest };
}

/** A Node command naming one stored batch of these commands. */
function batch(commands: readonly Uint8Array[], expires = 100): Uint8Array {
  return encodeDigests([makeBatch(commands, expires).digest]);
}

/** The hex id of a command with its expiry. */
function idOf(command: Uint8Array, expires = 100): string {
  return toHex(commandId(command, expires));
}

let nextHash = 1;
const PROPOSER = new Uint8Array(32).fill(0x77);
function nodeOf(command: Uint8Array, options: { height?: number; parent?: Uint8Array } = {}): {
  node: Node;
  hash: Uint8Array;
} {
  const node: Node = {
    view: 1,
    height: options.height ?? 1,
    parent: options.parent ?? new Uint8Array(32),
    justify: genesisQC("kv-test"),
    command,
    configHash: new Uint8Array(32),
    proposer: PROPOSER,
    stateRoot: new Uint8Array(0),
  };
  return { node, hash: new Uint8Array(32).fill(nextHash++ & 0xff) };
}

function pool(options: MempoolOptions = {}): Mempool {
  return new Mempool(kvMachine, {
    idleProposeDelayMs: 0,
    batchDelayMs: 0,
    batchStore: STORE,
    ...options,
  });
}

async function validate(
  m: Mempool,
  command: Uint8Array,
  state = stateOf(),
  options: { height?: number; parent?: Uint8Array } = {},
) {
  const { node, hash } = nodeOf(command, options);
  return { result: await m.application.validateNode({ node, hash, state }), node, hash };
}

/** The commands of the batches a leader names, in order. */
async function produce(m: Mempool, parent: Uint8Array, state = stateOf(), height = 1) {
  const r = await m.application.produceCommand({ view: 2, height, parent, state });
  const d = decodeDigests(r.command, 64);
  assert.ok(d.ok, "a produced command decodes");
  const out: Uint8Array[] = [];
  for (const digest of d.digests) {
    const bytes = await m.batchBytes(digest);
    assert.ok(bytes !== null, "the leader holds what it names");
    const list = decodeEntryList(bytes, 1 << 16, 1 << 16);
    assert.ok(list.ok);
    out.push(...list.entries.map((e) => e.command));
  }
  return out;
}

function rejectReason(r: unknown): string {
  const v = r as { ok: boolean; reason?: string };
  assert.equal(v.ok, false, "expected a rejection");
  return v.reason!;
}

/** The keys (text, without the k/ prefix) a validation result updates, sorted. */
function keysOf(r: unknown): string[] {
  const v = r as { ok: boolean; updates: ReadonlyArray<readonly [Uint8Array, unknown]> };
  assert.ok(v.ok, "expected a valid Node");
  return v.updates.map(([k]) => dec.decode(k.subarray(2))).sort();
}

/** Commits a validated Node in the pool (as the Engine's onCommit would). */
async function commit(m: Mempool, v: { node: Node; hash: Uint8Array }): Promise<void> {
  await m.application.onCommit!({ node: v.node, hash: v.hash, updates: [] });
}

// ---------------------------------------------------------------------------------------------
// The key-value machine

Deno.test("kv command: [set, key, value] and [del, key, null] decode, with or without a nonce", () => {
  const a = decodeKvCommand(set("k", "v"));
  assert.ok(a.ok);
  assert.equal(a.command.op, "set");
  const b = decodeKvCommand(
    encodeKvCommand({ op: "del", key: enc.encode("k") }, new Uint8Array(8)),
  );
  assert.ok(b.ok);
  assert.equal(b.command.op, "del");
  // Text keys and values are their UTF-8 bytes; "put" and "delete" are accepted too.
  const c = decodeKvCommand(encodeValue(["put", "ké", "vé"]));
  assert.ok(c.ok && c.command.op === "set");
  assert.equal(dec.decode(c.command.key), "ké");
  assert.ok(decodeKvCommand(encodeValue(["delete", "k", null])).ok);
});

Deno.test("kv command: malformed commands are refused with a reason", () => {
  const bad: Array<[unknown, RegExp]> = [
    [["set", "k"], /command must be/],
    [["set", "k", "v", new Uint8Array(1), 5], /command must be/],
    [{ op: "set" }, /command must be/],
    [["frob", "k", "v"], /unknown op/],
    [["set", "", "v"], /key must be/],
    [["set", "k".repeat(KV_KEY_BYTES_MAX + 1), "v"], /key must be/],
    [["set", 7, "v"], /key must be/],
    [["set", "k", null], /set needs/],
    [["set", "k", new Uint8Array(KV_VALUE_BYTES_MAX + 1)], /exceeds/],
    [["del", "k", "v"], /del takes a null value/],
    [["set", "k", "v", "nonce"], /nonce/],
    [["set", "k", "v", new Uint8Array(33)], /nonce/],
  ];
  for (const [value, reason] of bad) {
    const r = decodeKvCommand(encodeValue(value));
    assert.equal(
      r.ok,
      false,
      JSON.stringify(value, (_, v) => v instanceof Uint8Array ? "bytes" : v),
    );
    assert.match((r as { reason: string }).reason, reason);
  }
  assert.match((decodeKvCommand(new Uint8Array([0xff])) as { reason: string }).reason, /not CBOR/);
  assert.ok(decodeKvCommand(set("k".repeat(KV_KEY_BYTES_MAX), "v")).ok, "256-byte key is fine");
});

Deno.test("kv machine: set and del become state updates of k/ + key", async () => {
  const r = await kvMachine.apply({ command: set("a", "1"), state: stateOf(), height: 1 });
  assert.ok(r.ok);
  assert.deepEqual(r.updates, [[kvStateKey(enc.encode("a")), enc.encode("1")]]);
  const d = await kvMachine.apply({
    command: encodeKvCommand({ op: "del", key: enc.encode("a") }),
    state: stateOf(),
    height: 1,
  });
  assert.ok(d.ok);
  assert.deepEqual(d.updates, [[kvStateKey(enc.encode("a")), null]]);
});

Deno.test("kv routes: keys are one path segment of 1..256 UTF-8 bytes", () => {
  assert.equal(parseKeyPath("/status"), null);
  assert.equal(dec.decode(parseKeyPath("/kv/hello")!), "hello");
  assert.equal(dec.decode(parseKeyPath("/kv/a%2Fb%20c")!), "a/b c");
  assert.equal(parseKeyPath(`/kv/${"x".repeat(256)}`)!.length, 256);
  for (const bad of ["/kv/", "/kv/a/b", "/kv/%ff", `/kv/${"x".repeat(257)}`, "/kv/%E2%82"]) {
    assert.throws(() => parseKeyPath(bad), (e: unknown) => {
      assert.ok(e instanceof RouteError);
      assert.equal(e.status, 400);
      assert.equal(e.reason, "bad-key");
      return true;
    }, bad);
  }
});

// ---------------------------------------------------------------------------------------------
// Executing a Node: its batches' live entries, each delivered once (SPECIFICATION.md 13.2)

Deno.test("execute: a Node naming a batch updates its keys, and nothing else", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1"), set("b", "2")]));
  assert.ok(result.ok);
  const byKey = new Map(result.updates.map(([k, v]) => [toHex(k), v]));
  assert.equal(dec.decode(byKey.get(toHex(kvStateKey(enc.encode("a"))))!), "1");
  assert.equal(result.updates.length, 2, "no per-command records: ids live in memory");
  m.close();
});

Deno.test("execute: later commands see the earlier ones, across batches; the last write of a key wins", async () => {
  const m = pool();
  const two = encodeDigests([
    makeBatch([set("a", "1")]).digest,
    makeBatch([set("a", "2", 1)]).digest,
  ]);
  const { result } = await validate(m, two);
  assert.ok(result.ok);
  const updates = result.updates.filter(([k]) => toHex(k) === toHex(kvStateKey(enc.encode("a"))));
  assert.equal(updates.length, 1, "one update per key");
  assert.equal(dec.decode(updates[0]![1]!), "2");
  m.close();
});

Deno.test("execute: a command twice in one Node is delivered once; another expiry is another command", async () => {
  const m = pool();
  const dup = encodeDigests([
    makeBatch([set("a", "1"), set("b", "2")]).digest,
    makeBatch([set("a", "1"), set("c", "3")]).digest,
  ]);
  const v = await validate(m, dup);
  assert.deepEqual(keysOf(v.result), ["a", "b", "c"]);
  await commit(m, v);
  assert.equal(m.committedCommands, 3, "a once, b, c");
  const twoExpiries = encodeDigests([
    makeBatch([set("x", "1")], 100).digest,
    makeBatch([set("x", "1")], 101).digest,
  ]);
  const w = await validate(m, twoExpiries, stateOf(), { height: 2, parent: v.hash });
  await commit(m, w);
  assert.equal(m.committedCommands, 5, "two expiries: two commands");
  m.close();
});

Deno.test("execute: a command committed within the horizon is skipped (at most once)", async () => {
  const m = pool();
  const first = await validate(m, batch([set("a", "1")]), stateOf(), { height: 1 });
  assert.deepEqual(keysOf(first.result), ["a"]);
  await commit(m, first);
  const again = await validate(m, batch([set("b", "2"), set("a", "1")]), stateOf(), {
    height: 2,
    parent: first.hash,
  });
  assert.deepEqual(keysOf(again.result), ["b"], "a was committed: skipped");
  // The same key and value with another nonce is another command: delivered.
  const other = await validate(m, batch([set("a", "1", 9)]), stateOf(), {
    height: 2,
    parent: first.hash,
  });
  assert.deepEqual(keysOf(other.result), ["a"]);
  m.close();
});

Deno.test("execute: a command consumed by an uncommitted ancestor is skipped; a sibling branch may deliver it", async () => {
  const m = pool();
  const parent = await validate(m, batch([set("a", "1")]), stateOf(), { height: 1 });
  assert.deepEqual(keysOf(parent.result), ["a"]);
  const child = await validate(m, batch([set("a", "1"), set("z", "0")]), stateOf(), {
    height: 2,
    parent: parent.hash,
  });
  assert.deepEqual(keysOf(child.result), ["z"]);
  assert.deepEqual(keysOf((await validate(m, batch([set("a", "1")]))).result), ["a"]);
  m.close();
});

Deno.test("execute: only entries live at the Node's height are delivered: h <= expires < h + horizon", async () => {
  const m = pool({ commandHorizon: 10 });
  await m.restore({ committedHeight: 4, committed: [], uncommitted: [] });
  const at5 = async (expires: number) =>
    keysOf((await validate(m, batch([set("a", "1")], expires), stateOf(), { height: 5 })).result);
  assert.deepEqual(await at5(4), [], "expired at 4");
  assert.deepEqual(await at5(5), ["a"]);
  assert.deepEqual(await at5(14), ["a"]);
  assert.deepEqual(await at5(15), [], "not live before height 6");
  m.close();
});

Deno.test("execute: a Node whose uncommitted ancestors were never validated here is refused", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1")]), stateOf(), {
    height: 3,
    parent: new Uint8Array(32).fill(0xee),
  });
  assert.match(rejectReason(result), /ancestors-unknown/);
  m.close();
});

Deno.test("execute: at most once holds past the horizon, with only the horizon's ids in memory", async () => {
  const m = pool({ commandHorizon: 4 });
  const cmd = set("a", "1");
  // Committed at height 1 with expiry 4: it could only ever be in Nodes of heights 1 to 4.
  let prev = await validate(m, batch([cmd], 4), stateOf(), { height: 1 });
  assert.deepEqual(keysOf(prev.result), ["a"]);
  await commit(m, prev);
  assert.equal(m.rememberedIds, 1);
  for (let h = 2; h <= 5; h++) {
    const copy = await validate(m, batch([cmd], 4), stateOf(), { height: h, parent: prev.hash });
    // Inside the horizon the id is remembered; beyond it the expiry skips the copy.
    assert.deepEqual(keysOf(copy.result), [], `height ${h}`);
    prev = await validate(m, batch([]), stateOf(), { height: h, parent: prev.hash });
    await commit(m, prev);
  }
  assert.equal(m.rememberedIds, 0, "height 1 left memory once height 5 committed");
  m.close();
});

Deno.test("execute: a command the machine refuses is consumed without effect; its client learns why", async () => {
  const m = new Mempool({ check: () => null, apply: (r) => kvMachine.apply(r) }, {
    idleProposeDelayMs: 0,
    batchDelayMs: 0,
    batchStore: STORE,
  });
  const junk = encodeValue(["frob", "k", "v"]);
  const { ids, expires } = m.submit([junk, set("a", "1")]);
  const [bad, good] = ids.map((id) => m.waitForCommit(id, expires, { timeoutMs: 5000 }));
  const v = await validate(m, batch([junk, set("a", "1")], expires));
  assert.deepEqual(keysOf(v.result), ["a"]);
  await commit(m, v);
  await assert.rejects(bad!, (e: unknown) => {
    assert.ok(e instanceof MempoolError);
    assert.equal(e.reason, "command-rejected");
    assert.match(e.message, /unknown op/);
    return true;
  });
  assert.equal((await good!).height, 1);
  assert.equal(m.committedCommands, 1);
  m.close();
});

Deno.test("execute: malformed Node commands are refused with a reason", async () => {
  const m = pool({ nodeBatchesMax: 2 });
  const d = (n: number) => makeBatch([set(`k${n}`, "v")]).digest;
  const cases: Array<[Uint8Array, RegExp]> = [
    [new Uint8Array([0xff]), /not CBOR/],
    [encodeValue({ a: 1 }), /must be a CBOR array/],
    [encodeValue([new Uint8Array(31)]), /digest 0 is not 32 bytes/],
    [encodeValue(["x"]), /digest 0 is not 32 bytes/],
    [encodeDigests([d(1), d(1)]), /digest 1 repeats/],
    [encodeDigests([d(1), d(2), d(3)]), /naming 3 batches exceeds 2/],
  ];
  for (const [command, reason] of cases) {
    assert.match(rejectReason((await validate(m, command)).result), reason);
  }
  m.close();
});

Deno.test("execute: a Node over its update limits is refused; the empty Node is valid", async () => {
  const m = pool({ batchUpdatesMax: 2 });
  const three = batch([set("a", "1"), set("b", "2"), set("c", "3")]);
  assert.match(rejectReason((await validate(m, three)).result), /too many state updates/);
  assert.ok((await validate(m, batch([set("a", "1"), set("b", "2")]))).result.ok);
  assert.deepEqual((await validate(m, batch([]))).result, { ok: true, updates: [] });
  assert.deepEqual((await validate(m, encodeDigests([]))).result, { ok: true, updates: [] });
  m.close();
  assert.throws(() => pool({ batchUpdatesMax: 65_537 }), /at most 65536/);
  assert.throws(() => pool({ updateValueBytesMax: 64 * 1024 }), /at most 61440/);
  assert.throws(() => pool({ batchBytesMax: 0 }), /positive integer/);
  assert.throws(() => pool({ commandHorizon: 0 }), /positive integer/);
  assert.throws(() => pool({ commandBytesMax: 64_000 }), /must leave room/);
});

// ---------------------------------------------------------------------------------------------
// Batches: sealing, sending, receiving, missing ones

Deno.test("batches: own commands are sealed into batches, stored and sent once; peers take them whole", async () => {
  const sent: Uint8Array[] = [];
  const store = new MemoryBatchStore();
  const a = pool({
    batchStore: store,
    batchBytesMax: 1000,
    commandBytesMax: 900,
    onBatch: (b) => sent.push(b),
  });
  const cmds = Array.from({ length: 40 }, (_, i) => set(`key-${i}`, "v".repeat(30)));
  a.submit(cmds);
  await new Promise((r) => setTimeout(r, 5));
  assert.ok(sent.length >= 2, `several batches of at most 1000 bytes: ${sent.length}`);
  assert.ok(sent.every((b) => b.length <= 1000));
  assert.equal(store.batches.size, sent.length, "each stored");
  assert.equal(a.batches, sent.length);
  const b = pool({ batchStore: new MemoryBatchStore(), batchBytesMax: 1000, commandBytesMax: 900 });
  for (const bytes of sent) b.addBatch(bytes);
  for (const bytes of sent) b.addBatch(bytes); // a copy is ignored
  assert.equal(b.size, 40);
  assert.equal(b.batches, sent.length);
  assert.throws(() => b.addBatch(new Uint8Array([0xff])), { reason: "bad-batch" });
  assert.throws(() => b.addBatch(encodeBatch([{ command: set("x", "1"), expires: 5000 }])), {
    reason: "bad-batch",
  });
  a.close();
  b.close();
});

Deno.test("batches: a missing batch is fetched (its digest checked) before the vote; one nobody has refuses the Node", async () => {
  const store = new MemoryBatchStore();
  const { bytes, digest } = makeBatch([set("f", "1")]);
  const asked: string[] = [];
  let serve: Uint8Array | null = encodeBatch([{ command: set("forged", "1"), expires: 100 }]);
  const m = new Mempool(kvMachine, {
    idleProposeDelayMs: 0,
    batchStore: store,
    batchFetchTimeoutMs: 200,
    fetchBatch: (d, _signal, from) => {
      asked.push(toHex(d));
      assert.deepEqual(from, PROPOSER, "the Node's proposer is asked first");
      return Promise.resolve(serve);
    },
  });
  const command = encodeDigests([digest]);
  assert.match(rejectReason((await validate(m, command)).result), /batch-unavailable/);
  serve = bytes;
  const v = await validate(m, command);
  assert.deepEqual(keysOf(v.result), ["f"]);
  assert.deepEqual(asked, [toHex(digest), toHex(digest)]);
  assert.ok(store.batches.has(toHex(digest)), "stored before the vote");
  serve = null;
  const never = encodeDigests([new Uint8Array(32).fill(3)]);
  assert.match(rejectReason((await validate(m, never)).result), /batch-unavailable/);
  m.close();
});

Deno.test("batches: validation waits until the batches it names are durable", async () => {
  let release = (): void => {};
  const slow = new MemoryBatchStore();
  const put = slow.put.bind(slow);
  slow.put = (d, b) => put(d, b).then(() => new Promise<void>((r) => release = r));
  const m = pool({ batchStore: slow });
  const peerBatch = encodeBatch([{ command: set("d", "1"), expires: 100 }]);
  m.addBatch(peerBatch);
  let done = false;
  const v = validate(m, encodeDigests([batchDigest(peerBatch)])).then((r) => (done = true, r));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(done, false, "not before the batch is durable");
  release();
  assert.deepEqual(keysOf((await v).result), ["d"]);
  m.close();
});

// ---------------------------------------------------------------------------------------------
// The pool

Deno.test("pool: dedupes by id, bounds commands and bytes, refuses bad commands", () => {
  const m = pool({ poolCommandsMax: 3, poolBytesMax: 10_000, commandBytesMax: 2000 });
  const r = m.submit([set("a", "1"), set("a", "1"), set("b", "2")]);
  assert.equal(r.ids.length, 3);
  assert.equal(r.ids[0], r.ids[1]);
  assert.equal(r.expires, 1024, "default: committed height (0) + commandHorizon");
  assert.equal(r.ids[0], idOf(set("a", "1"), 1024));
  assert.equal(r.added, 2, "the duplicate is added once");
  assert.equal(m.size, 2);
  assert.equal(m.submit([set("a", "1")]).added, 0, "already submitted here");
  assert.throws(() => m.submit([set("c", "3"), set("d", "4")]), (e: unknown) => {
    assert.ok(e instanceof MempoolError);
    assert.equal(e.reason, "pool-full");
    assert.match(e.message, /holds 2 of at most 3 commands/);
    return true;
  });
  assert.equal(m.size, 2, "all or nothing");
  assert.throws(() => m.submit([set("c", "x".repeat(3000))]), { reason: "command-too-large" });
  assert.throws(() => m.submit([new Uint8Array([1])]), { reason: "bad-command" });
  assert.throws(() => m.submit([new Uint8Array(0)]), { reason: "bad-command" });
  m.close();
  assert.throws(() => m.submit([set("z", "1")]), { reason: "closed" });
});

Deno.test("pool: the client's expiry must lie in (committed height, committed height + horizon]", async () => {
  const m = pool({ commandHorizon: 10 });
  await m.restore({ committedHeight: 20, committed: [], uncommitted: [] });
  assert.equal(m.submit([set("a", "1")]).expires, 30);
  assert.equal(m.submit([set("a", "1")], { expires: 21 }).expires, 21);
  assert.throws(() => m.submit([set("a", "1")], { expires: 20 }), { reason: "expired" });
  assert.throws(() => m.submit([set("a", "1")], { expires: 31 }), { reason: "bad-expiry" });
  assert.throws(() => m.submit([set("a", "1")], { expires: 1.5 }), { reason: "bad-expiry" });
  m.close();
});

Deno.test("pool: the byte bound refuses with pool-full too", () => {
  const m = pool({ poolBytesMax: 100 });
  m.submit([set("a", "x".repeat(60))]);
  assert.throws(() => m.submit([set("b", "y".repeat(60))]), { reason: "pool-full" });
  m.close();
});

Deno.test("pool: commit answers the waiting clients with height and node; the batch leaves memory", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2")];
  const { ids, expires } = m.submit(cmds);
  const waits = ids.map((id) => m.waitForCommit(id, expires, { timeoutMs: 5000 }));
  const command = (await m.application.produceCommand({
    view: 1,
    height: 1,
    parent: new Uint8Array(32),
    state: stateOf(),
  })).command;
  const v = await validate(m, command);
  assert.ok(v.result.ok);
  await commit(m, v);
  const done: CommittedCommand[] = await Promise.all(waits);
  assert.deepEqual(done.map((d) => [d.height, d.node]), [[1, toHex(v.hash)], [1, toHex(v.hash)]]);
  assert.equal(m.size, 0);
  assert.equal(m.batches, 0);
  assert.equal(m.committedCommands, 2);
  // A late copy (a client's retry) is known committed.
  const late = m.submit([cmds[0]!], { expires });
  assert.equal(late.added, 0);
  assert.equal(late.committed.get(0)?.height, 1);
  assert.equal((await m.waitForCommit(ids[0]!, expires)).height, 1, "answered at once");
  m.close();
});

Deno.test("pool: a command not committed by its expiry leaves; its clients get expired", async () => {
  const dropped: string[] = [];
  const m = pool({ onDropped: (id, reason) => dropped.push(`${id}:${reason}`) });
  const { ids } = m.submit([set("late", "1")], { expires: 2 });
  const waiting = m.waitForCommit(ids[0]!, 2, { timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 5));
  const n1 = await validate(m, batch([]), stateOf(), { height: 1 });
  await commit(m, n1);
  assert.equal(m.size, 1, "still live at height 2");
  const n2 = await validate(m, batch([]), stateOf(), { height: 2, parent: n1.hash });
  await commit(m, n2);
  await assert.rejects(waiting, { reason: "expired" });
  assert.equal(m.size, 0, "its batch can deliver nothing more");
  assert.deepEqual(dropped, [`${ids[0]}:expired`]);
  await assert.rejects(m.waitForCommit(ids[0]!, 2), { reason: "expired" });
  m.close();
});

Deno.test("pool: a wait times out with wait-timeout, stops on abort, and close() fails the rest with closed", async () => {
  const m = pool();
  const { ids, expires } = m.submit([set("a", "1"), set("b", "2")]);
  await assert.rejects(m.waitForCommit(ids[0]!, expires, { timeoutMs: 10 }), {
    reason: "wait-timeout",
  });
  const abort = new AbortController();
  const aborted = m.waitForCommit(ids[0]!, expires, { timeoutMs: 5000, signal: abort.signal });
  assert.equal(m.waiting, 1);
  abort.abort();
  await assert.rejects(aborted, { reason: "closed" });
  assert.equal(m.waiting, 0, "an abandoned wait leaves at once");
  const pending = m.waitForCommit(ids[1]!, expires, { timeoutMs: 5000 });
  assert.equal(m.waiting, 1);
  m.close();
  await assert.rejects(pending, { reason: "closed" });
  assert.equal(m.waiting, 0);
});

Deno.test("pool: waiters are bounded (too-many-waiters)", async () => {
  const m = pool({ waitersMax: 1 });
  const { ids, expires } = m.submit([set("a", "1")]);
  const first = m.waitForCommit(ids[0]!, expires, { timeoutMs: 5000 });
  await assert.rejects(m.waitForCommit(ids[0]!, expires), { reason: "too-many-waiters" });
  m.close();
  await assert.rejects(first, { reason: "closed" });
});

Deno.test("pool: restore brings back, from the stored batches, the horizon's committed ids and the uncommitted Nodes", async () => {
  const before = pool();
  const n1 = await validate(before, batch([set("a", "1")]), stateOf(), { height: 1 });
  const n2 = await validate(before, batch([set("b", "2")]), stateOf(), {
    height: 2,
    parent: n1.hash,
  });
  before.close();
  // A restarted replica: n1 committed, n2 stored uncommitted.
  const m = pool();
  await m.restore({ committedHeight: 1, committed: [n1], uncommitted: [n2] });
  assert.equal(m.submit([set("a", "1")], { expires: 100 }).committed.get(0)?.height, 1);
  const child = await validate(m, batch([set("b", "2"), set("c", "3")]), stateOf(), {
    height: 3,
    parent: n2.hash,
  });
  assert.deepEqual(keysOf(child.result), ["c"], "n2 is a known ancestor that consumed b");
  m.close();
});

Deno.test("pool: waitForCommits answers a whole submission once all of it committed, in order", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2")];
  const { ids, expires } = m.submit(cmds);
  let done: CommittedCommand[] | null = null;
  const all = m.waitForCommits(ids, expires, { timeoutMs: 5000 }).then((r) => done = r);
  const n1 = await validate(m, batch([cmds[1]!], expires), stateOf(), { height: 1 });
  await commit(m, n1);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(done, null, "one of two committed: still waiting");
  assert.equal(m.waiting, 1);
  const n2 = await validate(m, batch([cmds[0]!], expires), stateOf(), {
    height: 2,
    parent: n1.hash,
  });
  await commit(m, n2);
  await all;
  assert.deepEqual(done!.map((c) => [c.id, c.height]), [[ids[0], 2], [ids[1], 1]]);
  assert.equal(m.waiting, 0);
  // One timer for the lot: a timeout fails the whole wait and leaves no waiter behind.
  const more = m.submit([set("c", "3"), set("d", "4")]);
  await assert.rejects(m.waitForCommits(more.ids, more.expires, { timeoutMs: 10 }), {
    reason: "wait-timeout",
  });
  assert.equal(m.waiting, 0);
  m.close();
});

// ---------------------------------------------------------------------------------------------
// The leader's choice of batches

Deno.test("leader: names held batches oldest first, seals its own commands first", async () => {
  const m = pool({ batchBytesMax: 1000, commandBytesMax: 900, batchDelayMs: 10_000 });
  const peer = encodeBatch([{ command: set("peer", "1"), expires: 100 }]);
  m.addBatch(peer);
  const cmds = Array.from({ length: 40 }, (_, i) => set(`key-${i}`, "v".repeat(30)));
  m.submit(cmds);
  assert.ok(m.batches >= 2, "full batches are sealed at once");
  m.submit([set("last", "1")]);
  const held = m.batches;
  assert.equal(m.size, 42, "the last one waits for the batch delay, unsealed");
  const got = await produce(m, new Uint8Array(32).fill(7));
  assert.deepEqual(got, [set("peer", "1"), ...cmds, set("last", "1")], "oldest first");
  assert.equal(m.batches, held + 1, "the leader sealed the waiting command to name it");
  m.close();
});

Deno.test("leader: skips batches its uncommitted ancestors name, and over nodeBatchesMax", async () => {
  const m = pool({ nodeBatchesMax: 2 });
  const bs = [0, 1, 2].map((i) => encodeBatch([{ command: set(`k${i}`, "v"), expires: 100 }]));
  for (const b of bs) m.addBatch(b);
  const first = await produce(m, new Uint8Array(32));
  assert.deepEqual(first, [set("k0", "v"), set("k1", "v")], "two batches at most");
  const n1 = await validate(m, encodeDigests([batchDigest(bs[0]!), batchDigest(bs[1]!)]));
  assert.ok(n1.result.ok);
  assert.deepEqual(await produce(m, n1.hash, stateOf(), 2), [set("k2", "v")]);
  // Extending a Node it never validated, it cannot know what is pending: an empty Node.
  assert.deepEqual(await produce(m, new Uint8Array(32).fill(98), stateOf(), 3), []);
  m.close();
});

Deno.test("leader: with nothing to propose it waits up to idleProposeDelayMs; a batch ends the wait", async () => {
  const m = new Mempool(kvMachine, { idleProposeDelayMs: 200, batchDelayMs: 0 });
  const t0 = performance.now();
  const empty = await produce(m, new Uint8Array(32));
  assert.deepEqual(empty, []);
  assert.ok(performance.now() - t0 >= 190, "waited for a command");
  const t1 = performance.now();
  const waiting = produce(m, new Uint8Array(32));
  await new Promise((r) => setTimeout(r, 20));
  m.submit([set("a", "1")]);
  assert.equal((await waiting).length, 1);
  assert.ok(performance.now() - t1 < 150, "woken by the batch");
  m.close();
});

Deno.test("leader: batches beyond the update limits wait for the next Node; one that never fits leaves", async () => {
  const dropped: string[] = [];
  const m = pool({ batchUpdatesMax: 3, onDropped: (_, reason) => dropped.push(reason) });
  for (const k of ["a", "b"]) m.addBatch(encodeBatch([{ command: set(k, "1"), expires: 100 }]));
  m.addBatch(
    encodeBatch(["c", "d", "e", "f"].map((k) => ({ command: set(k, "1"), expires: 100 }))),
  );
  m.addBatch(encodeBatch([{ command: set("g", "1"), expires: 100 }]));
  assert.deepEqual((await produce(m, new Uint8Array(32))).length, 2, "a, b; c-f do not fit");
  assert.equal(m.batches, 4, "nothing leaves before it commits");
  const alone = pool({ batchUpdatesMax: 3, onDropped: (_, reason) => dropped.push(reason) });
  alone.addBatch(
    encodeBatch(["c", "d", "e", "f"].map((k) => ({ command: set(k, "1"), expires: 100 }))),
  );
  assert.deepEqual(await produce(alone, new Uint8Array(32)), []);
  assert.equal(alone.batches, 0);
  assert.match(dropped.join(), /alone in a Node/);
  m.close();
  alone.close();
});

Deno.test("leader: validating the Node it just built gives what any replica computes; another Node is executed in full", async () => {
  const leader = pool();
  const other = pool();
  const cmds = [set("a", "1"), set("b", "2"), set("a", "3", 1)];
  leader.submit(cmds);
  const r = await leader.application.produceCommand({
    view: 1,
    height: 1,
    parent: new Uint8Array(32),
    state: stateOf(),
  });
  const { node, hash } = nodeOf(r.command, { height: 1 });
  const mine = await leader.application.validateNode({ node, hash, state: stateOf() });
  const theirs = await other.application.validateNode({ node, hash, state: stateOf() });
  assert.ok(mine.ok && theirs.ok);
  assert.deepEqual(mine.updates, theirs.updates);
  // Built, then a different Node on the same parent: no shortcut.
  await leader.application.produceCommand({
    view: 1,
    height: 1,
    parent: new Uint8Array(32),
    state: stateOf(),
  });
  const forged = nodeOf(batch([set("q", "1")]), { height: 1 });
  const v = await leader.application.validateNode({ ...forged, state: stateOf() });
  assert.deepEqual(keysOf(v), ["q"]);
  leader.close();
  other.close();
});

Deno.test("batch: an array announcing more entries than allowed is refused from its head, undecoded", () => {
  // A head announcing 2^20 entries, then nothing: decoding it would fail; the count refuses first.
  const head = new Uint8Array([0x9a, 0x00, 0x10, 0x00, 0x00]);
  const r = decodeEntryList(head, 65_536, 1024);
  assert.deepEqual(r, { ok: false, reason: "batch of 1048576 commands exceeds 65536" });
  assert.deepEqual(decodeDigests(head, 64), {
    ok: false,
    reason: "a Node naming 1048576 batches exceeds 64",
  });
});

Deno.test("batches: a Node's missing batches are fetched at once; a batch read from the store is not written again", async () => {
  const store = new MemoryBatchStore();
  let puts = 0;
  const put = store.put.bind(store);
  store.put = (d, b) => (puts++, put(d, b));
  const stored = encodeBatch([{ command: set("s", "1"), expires: 100 }]);
  await put(batchDigest(stored), stored);
  const far = [1, 2, 3].map((i) => encodeBatch([{ command: set(`f${i}`, "1"), expires: 100 }]));
  let inFlight = 0;
  let most = 0;
  const m = new Mempool(kvMachine, {
    idleProposeDelayMs: 0,
    batchStore: store,
    fetchBatch: async (d) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
      return far.find((b) => toHex(batchDigest(b)) === toHex(d)) ?? null;
    },
  });
  const command = encodeDigests([stored, ...far].map(batchDigest));
  assert.deepEqual(keysOf((await validate(m, command)).result), ["f1", "f2", "f3", "s"]);
  assert.equal(most, 3, "the three fetches were in flight together");
  assert.equal(puts, 3, "the fetched ones were stored; the stored one was not written again");
  m.close();
});

Deno.test("kv command: the fast path for the common shape decodes exactly as the generic decoder does", () => {
  const rand = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
  const inputs: Uint8Array[] = [];
  for (const keyLen of [1, 23, 24, 255, 256, 257, 300]) {
    for (const valueLen of [0, 23, 24, 255, 256, 61_440, 61_441, 65_535, 65_536]) {
      for (const nonce of [undefined, new Uint8Array(0), rand(32, 5), rand(33, 6)]) {
        inputs.push(
          encodeKvCommand({ op: "set", key: rand(keyLen, 1), value: rand(valueLen, 2) }, nonce),
        );
      }
    }
    inputs.push(encodeKvCommand({ op: "del", key: rand(keyLen, 3) }));
    inputs.push(encodeKvCommand({ op: "del", key: rand(keyLen, 3) }, rand(4, 4)));
  }
  inputs.push(
    encodeValue(["set", "text key", "text value"]),
    encodeValue(["put", new Uint8Array([1]), new Uint8Array([2])]),
    encodeValue(["delete", new Uint8Array([1]), null]),
    encodeValue(["del", new Uint8Array([1]), new Uint8Array([2])]),
    encodeValue(["set", new Uint8Array([1]), null]),
    encodeValue(["set", new Uint8Array([1])]),
    encodeValue(["set", new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3]), 4]),
    new Uint8Array([0x83, 0x63, 0x73, 0x65, 0x74, 0x58, 0x01, 0x61, 0x41, 0x62]), // long head
    new Uint8Array([0x83, 0x63, 0x73, 0x65, 0x74, 0x41, 0x61, 0x41, 0x62, 0x00]), // trailing byte
    new Uint8Array([0x83, 0x63, 0x73, 0x65, 0x74, 0x41, 0x61, 0x42, 0x62]), // truncated
  );
  // Every valid command cut short and with one byte changed.
  let seed = 7;
  for (const base of inputs.slice(0, 60)) {
    inputs.push(base.subarray(0, base.length - 1));
    const flipped = base.slice();
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const at = seed % flipped.length;
    flipped[at] = flipped[at]! ^ (1 << (seed % 8));
    inputs.push(flipped);
  }
  let fast = 0;
  for (const bytes of inputs) {
    const a = decodeKvCommand(bytes);
    const b = decodeKvCommand(bytes, { fast: false });
    assert.deepEqual(a, b, `input ${toHex(bytes.subarray(0, 16))}...`);
    if (a.ok) fast++;
  }
  assert.ok(fast > 100, `many valid commands compared: ${fast}`);
});
