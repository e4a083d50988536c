/**
 * Tests of the key-value store's application logic (examples/kv_store/app.ts, routes.ts) and the
 * batching Application of the mempool (src/mempool.ts): command format, at-most-once (dedupe
 * inside a batch, against committed state and against uncommitted ancestors), batch limits, bad
 * commands, the pool's bounds and the leader's batching. No network, no disk: state views are
 * plain maps.
 */
import assert from "node:assert/strict";
import { encodeValue } from "../src/codec.ts";
import { genesisQC } from "../src/codec.ts";
import {
  commandId,
  commandIdKey,
  type CommittedCommand,
  decodeBatch,
  decodeCommittedRecord,
  encodeBatch,
  Mempool,
  MempoolError,
  type MempoolOptions,
} from "../src/mempool.ts";
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
import { RouteError } from "../src/replica.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const enc = new TextEncoder();
const dec = new TextDecoder();

function set(key: string, value: string, nonce?: number): Uint8Array {
  const n = nonce === undefined ? undefined : new Uint8Array([nonce]);
  return encodeKvCommand({ op: "set", key: enc.encode(key), value: enc.encode(value) }, n);
}

/** A state view over a map (hex key -> value): committed state and pending ancestors alike. */
function stateOf(entries: Map<string, Uint8Array | null> = new Map()): StateView {
  return { get: (key) => Promise.resolve(entries.get(toHex(key)) ?? null) };
}

/** Applies a validation's updates to a state map (as a commit would). */
function apply(
  state: Map<string, Uint8Array | null>,
  updates: readonly (readonly [Uint8Array, Uint8Array | null])[],
): void {
  for (const [k, v] of updates) state.set(toHex(k), v);
}

let nextHash = 1;
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
    proposer: new Uint8Array(32),
  };
  return { node, hash: new Uint8Array(32).fill(nextHash++ & 0xff) };
}

function pool(options: MempoolOptions = {}): Mempool {
  return new Mempool(kvMachine, { idleProposeDelayMs: 0, ...options });
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

async function produce(m: Mempool, parent: Uint8Array, state = stateOf(), height = 2) {
  const r = await m.application.produceCommand({ view: 2, height, parent, state });
  const d = decodeBatch(r.command);
  assert.ok(d.ok, "a produced batch decodes");
  return d.commands;
}

function rejectReason(r: unknown): string {
  const v = r as { ok: boolean; reason?: string };
  assert.equal(v.ok, false, "expected a rejection");
  return v.reason!;
}

// ---------------------------------------------------------------------------------------------
// Command format

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
// Validating batches: at most once, limits, bad commands

Deno.test("batch: a valid batch updates the keys and records each command id with [height, node]", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2")];
  const { result, hash } = await validate(m, encodeBatch(cmds), stateOf(), { height: 7 });
  assert.ok(result.ok);
  const byKey = new Map(result.updates.map(([k, v]) => [toHex(k), v]));
  assert.equal(dec.decode(byKey.get(toHex(kvStateKey(enc.encode("a"))))!), "1");
  for (const c of cmds) {
    const id = commandId(c);
    const record = decodeCommittedRecord(toHex(id), byKey.get(toHex(commandIdKey(id)))!);
    assert.deepEqual(record, { id: toHex(id), height: 7, node: toHex(hash) });
  }
  m.close();
});

Deno.test("batch: later commands of a batch see the earlier ones; the last write of a key wins", async () => {
  const m = pool();
  const { result } = await validate(m, encodeBatch([set("a", "1"), set("a", "2", 1)]));
  assert.ok(result.ok);
  const updates = result.updates.filter(([k]) => toHex(k) === toHex(kvStateKey(enc.encode("a"))));
  assert.equal(updates.length, 1, "one update per key");
  assert.equal(dec.decode(updates[0]![1]!), "2");
  m.close();
});

Deno.test("batch: the same command twice in one batch is rejected", async () => {
  const m = pool();
  const { result } = await validate(m, encodeBatch([set("a", "1"), set("b", "2"), set("a", "1")]));
  assert.match(rejectReason(result), /command 2 repeats/);
  m.close();
});

Deno.test("batch: a command already committed is rejected (at most once)", async () => {
  const m = pool();
  const state = new Map<string, Uint8Array | null>();
  const first = await validate(m, encodeBatch([set("a", "1")]), stateOf(state), { height: 1 });
  assert.ok(first.result.ok);
  apply(state, first.result.updates); // committed
  const again = await validate(m, encodeBatch([set("b", "2"), set("a", "1")]), stateOf(state));
  assert.match(rejectReason(again.result), /command 1 .* already committed or pending/);
  // The same key and value with another nonce is another command: fine.
  assert.ok((await validate(m, encodeBatch([set("a", "1", 9)]), stateOf(state))).result.ok);
  m.close();
});

Deno.test("batch: a command in an uncommitted ancestor is rejected (the state view shows it)", async () => {
  const m = pool();
  const parent = await validate(m, encodeBatch([set("a", "1")]), stateOf(), { height: 1 });
  assert.ok(parent.result.ok);
  // The Engine's state view for a child overlays the parent's pending updates.
  const overlay = new Map<string, Uint8Array | null>();
  apply(overlay, parent.result.updates);
  const child = await validate(m, encodeBatch([set("a", "1")]), stateOf(overlay), {
    height: 2,
    parent: parent.hash,
  });
  assert.match(rejectReason(child.result), /already committed or pending/);
  m.close();
});

Deno.test("batch: bad batches are rejected with a reason", async () => {
  const m = pool({ batchCommandsMax: 3, batchBytesMax: 4096 });
  const cases: Array<[Uint8Array, RegExp]> = [
    [new Uint8Array([0xff]), /not CBOR/],
    [encodeValue({ a: 1 }), /must be a CBOR array/],
    [encodeValue(["not bytes"]), /command 0 is not bytes/],
    [encodeValue([new Uint8Array(0)]), /command 0 is empty/],
    [
      encodeBatch([set("a", "1"), set("b", "2"), set("c", "3"), set("d", "4")]),
      /4 commands exceeds 3/,
    ],
    [encodeBatch([set("a", "x".repeat(5000))]), /bytes exceeds 4096/],
    [
      encodeBatch([set("a", "1"), encodeValue(["frob", "k", "v"])]),
      /command 1 rejected: unknown op/,
    ],
    [encodeBatch([new Uint8Array([1, 2, 3])]), /command 0 rejected: not CBOR/],
  ];
  for (const [command, reason] of cases) {
    assert.match(rejectReason((await validate(m, command)).result), reason);
  }
  m.close();
});

Deno.test("batch: a batch over its update limits is rejected; the empty batch is valid", async () => {
  // Each set command makes 2 updates (its key and its id record).
  const m = pool({ batchUpdatesMax: 5 });
  const three = encodeBatch([set("a", "1"), set("b", "2"), set("c", "3")]);
  assert.match(rejectReason((await validate(m, three)).result), /too many state updates/);
  assert.ok((await validate(m, encodeBatch([set("a", "1"), set("b", "2")]))).result.ok);
  assert.deepEqual((await validate(m, encodeBatch([]))).result, { ok: true, updates: [] });
  m.close();
  assert.throws(() => pool({ batchUpdatesMax: 991 }), /at most 990/);
  assert.throws(() => pool({ batchBytesMax: 0 }), /positive integer/);
});

Deno.test("batch: a machine that writes a reserved c/ key is refused", async () => {
  const m = new Mempool({
    apply: () => ({ ok: true, updates: [[enc.encode("c/forged"), new Uint8Array([1])]] }),
  }, { idleProposeDelayMs: 0 });
  assert.match(
    rejectReason((await validate(m, encodeBatch([new Uint8Array([1])]))).result),
    /reserved-key/,
  );
  m.close();
});

// ---------------------------------------------------------------------------------------------
// The pool

Deno.test("pool: dedupes by id, bounds commands and bytes, refuses bad commands", async () => {
  const m = pool({ poolCommandsMax: 3, poolBytesMax: 10_000, commandBytesMax: 2000 });
  const r = await m.submit([set("a", "1"), set("a", "1"), set("b", "2")]);
  assert.equal(r.ids.length, 3);
  assert.equal(r.ids[0], r.ids[1]);
  assert.equal(r.ids[0], toHex(commandId(set("a", "1"))));
  assert.equal(r.added.length, 2, "the duplicate is added once");
  assert.equal(m.size, 2);
  assert.equal((await m.submit([set("a", "1")])).added.length, 0, "already in the pool");
  await assert.rejects(m.submit([set("c", "3"), set("d", "4")]), (e: unknown) => {
    assert.ok(e instanceof MempoolError);
    assert.equal(e.reason, "pool-full");
    assert.match(e.message, /holds 2 of at most 3 commands/);
    return true;
  });
  assert.equal(m.size, 2, "all or nothing");
  await assert.rejects(m.submit([set("c", "x".repeat(3000))]), { reason: "command-too-large" });
  await assert.rejects(m.submit([new Uint8Array([1])]), { reason: "bad-command" });
  await assert.rejects(m.submit([new Uint8Array(0)]), { reason: "bad-command" });
  m.close();
  await assert.rejects(m.submit([set("z", "1")]), { reason: "closed" });
});

Deno.test("pool: the byte bound refuses with pool-full too", async () => {
  const m = pool({ poolBytesMax: 100 });
  await m.submit([set("a", "x".repeat(60))]);
  await assert.rejects(m.submit([set("b", "y".repeat(60))]), { reason: "pool-full" });
  m.close();
});

Deno.test("pool: commit drops the ids and answers the waiting clients with height and node", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2")];
  const { ids } = await m.submit(cmds);
  const waits = ids.map((id) => m.waitForCommit(id, { timeoutMs: 5000 }));
  const { node, hash } = nodeOf(encodeBatch(cmds), { height: 5 });
  const v = await m.application.validateNode({ node, hash, state: stateOf() });
  assert.ok(v.ok);
  await m.application.onCommit!({ node, hash, updates: v.updates });
  const done: CommittedCommand[] = await Promise.all(waits);
  assert.deepEqual(done.map((d) => [d.height, d.node]), [[5, toHex(hash)], [5, toHex(hash)]]);
  assert.equal(m.size, 0);
  assert.equal(m.committedCommands, 2);
  // A late copy (a forward that arrives after the commit) does not re-enter the pool.
  const late = await m.submit([cmds[0]!]);
  assert.equal(late.added.length, 0);
  assert.equal(late.committed.get(0)?.height, 5);
  assert.equal((await m.waitForCommit(ids[0]!)).height, 5, "answered at once");
  m.close();
});

Deno.test("pool: a wait times out with wait-timeout, and close() fails the rest with closed", async () => {
  const m = pool();
  const { ids } = await m.submit([set("a", "1"), set("b", "2")]);
  await assert.rejects(m.waitForCommit(ids[0]!, { timeoutMs: 10 }), { reason: "wait-timeout" });
  const pending = m.waitForCommit(ids[1]!, { timeoutMs: 5000 });
  assert.equal(m.waiting, 1);
  m.close();
  await assert.rejects(pending, { reason: "closed" });
  assert.equal(m.waiting, 0);
});

Deno.test("pool: waiters are bounded (too-many-waiters)", async () => {
  const m = pool({ waitersMax: 1 });
  const { ids } = await m.submit([set("a", "1")]);
  const first = m.waitForCommit(ids[0]!, { timeoutMs: 5000 });
  await assert.rejects(m.waitForCommit(ids[0]!), { reason: "too-many-waiters" });
  m.close();
  await assert.rejects(first, { reason: "closed" });
});

// ---------------------------------------------------------------------------------------------
// The leader's batches

Deno.test("leader: batches pool commands oldest first, up to the byte limit", async () => {
  const m = pool({ batchBytesMax: 1000 });
  const cmds = Array.from({ length: 40 }, (_, i) => set(`key-${i}`, "v".repeat(30)));
  await m.submit(cmds);
  const batch = await produce(m, new Uint8Array(32).fill(7));
  assert.ok(batch.length > 5 && batch.length < 40, `a partial batch: ${batch.length}`);
  assert.ok(encodeBatch(batch).length <= 1000);
  assert.deepEqual(batch, cmds.slice(0, batch.length), "oldest first");
  // What the leader produces, every replica accepts.
  assert.ok((await validate(m, encodeBatch(batch))).result.ok);
  m.close();
});

Deno.test("leader: skips commands already in the uncommitted ancestors it extends", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2"), set("c", "3")];
  await m.submit(cmds);
  // Node 1 carries a and b; a leader extending node 1 must not propose them again.
  const n1 = await validate(m, encodeBatch(cmds.slice(0, 2)), stateOf(), { height: 1 });
  assert.ok(n1.result.ok);
  assert.deepEqual(await produce(m, n1.hash), [cmds[2]]);
  // On another branch (extending genesis) they are fair game again.
  assert.deepEqual(await produce(m, new Uint8Array(32).fill(99)), cmds);
  m.close();
});

Deno.test("leader: skips committed commands (the state says so) and drops invalid ones", async () => {
  const dropped: string[] = [];
  const m = new Mempool({
    check: () => null, // let anything in, so that apply refuses it
    apply: (r) => kvMachine.apply(r),
  }, { idleProposeDelayMs: 0, onDropped: (id, reason) => dropped.push(`${id}:${reason}`) });
  const good = set("a", "1");
  const committed = set("b", "2");
  const junk = encodeValue(["frob", "k", "v"]);
  await m.submit([committed, junk, good]);
  const state = new Map<string, Uint8Array | null>([
    [toHex(commandIdKey(commandId(committed))), encodeValue([1, new Uint8Array(32)])],
  ]);
  assert.deepEqual(await produce(m, new Uint8Array(32), stateOf(state)), [good]);
  assert.equal(dropped.length, 1);
  assert.match(dropped[0]!, /unknown op/);
  assert.equal(
    m.size,
    2,
    "the junk left the pool; the committed one stays until its commit is seen",
  );
  m.close();
});

Deno.test("leader: with nothing to propose it waits up to idleProposeDelayMs; a command ends the wait", async () => {
  const m = new Mempool(kvMachine, { idleProposeDelayMs: 200 });
  const t0 = performance.now();
  const empty = await produce(m, new Uint8Array(32));
  assert.deepEqual(empty, []);
  assert.ok(performance.now() - t0 >= 190, "waited for a command");
  const t1 = performance.now();
  const waiting = produce(m, new Uint8Array(32));
  await new Promise((r) => setTimeout(r, 20));
  await m.submit([set("a", "1")]);
  assert.equal((await waiting).length, 1);
  assert.ok(performance.now() - t1 < 150, "woken by the submission");
  m.close();
});

Deno.test("leader: a batch stops at the update limits, and the rest waits for the next Node", async () => {
  const m = pool({ batchUpdatesMax: 6 });
  await m.submit([set("a", "1"), set("b", "2"), set("c", "3"), set("d", "4")]);
  const batch = await produce(m, new Uint8Array(32));
  assert.equal(batch.length, 3, "3 commands x 2 updates");
  assert.equal(m.size, 4, "nothing leaves the pool before it commits");
  m.close();
});

Deno.test("leader: a pool command the state shows committed (a copy forwarded after a restart) leaves the pool and answers its waiters", async () => {
  const m = pool();
  const old = set("old", "1");
  const { ids } = await m.submit([old]);
  const waiting = m.waitForCommit(ids[0]!, { timeoutMs: 5000 });
  // This replica sees a commit at height 3 (of other commands)...
  const { node, hash } = nodeOf(encodeBatch([set("x", "1")]), { height: 3 });
  await m.application.onCommit!({ node, hash, updates: [] });
  // ...and the state says `old` was committed at height 2 (before this replica restarted).
  const state = new Map<string, Uint8Array | null>([
    [toHex(commandIdKey(commandId(old))), encodeValue([2, new Uint8Array(32).fill(5)])],
  ]);
  assert.deepEqual(await produce(m, new Uint8Array(32), stateOf(state)), []);
  assert.equal(m.size, 0);
  const done = await waiting;
  assert.equal(done.height, 2);
  assert.equal(done.node, toHex(new Uint8Array(32).fill(5)));
  m.close();
});
