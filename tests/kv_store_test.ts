/**
 * Tests of the key-value store's application logic (examples/kv_store/app.ts, routes.ts) and the
 * batching Application of the mempool (src/mempool.ts): command format, expiry heights,
 * at-most-once (dedupe inside a batch, against committed Nodes of the horizon and against
 * uncommitted ancestors, after a restore too), batch limits, bad commands, the pool's bounds and
 * the leader's batching. No network, no disk: state views are plain maps.
 */
import assert from "node:assert/strict";
import { encodeValue } from "../src/codec.ts";
import { genesisQC } from "../src/codec.ts";
import {
  commandId,
  type CommittedCommand,
  decodeBatch,
  decodeEntryList,
  encodeBatch,
  Mempool,
  MempoolError,
  type MempoolOptions,
  type PoolCommand,
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

/** Batch entries for commands, all with one expiry height. */
function entries(commands: readonly Uint8Array[], expires = 100): PoolCommand[] {
  return commands.map((command) => ({ command, expires }));
}

/** A batch of commands, all with one expiry height. */
function batch(commands: readonly Uint8Array[], expires = 100): Uint8Array {
  return encodeBatch(entries(commands, expires));
}

/** The hex id of a command with its expiry. */
function idOf(command: Uint8Array, expires = 100): string {
  return toHex(commandId(command, expires));
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

async function produce(m: Mempool, parent: Uint8Array, state = stateOf(), height = 1) {
  const r = await m.application.produceCommand({ view: 2, height, parent, state });
  const d = decodeBatch(r.command);
  assert.ok(d.ok, "a produced batch decodes");
  return d.entries.map((e) => e.command);
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
// Validating batches: expiry, at most once, limits, bad commands

/** Commits a validated Node in the pool (as the Engine's onCommit would). */
async function commit(m: Mempool, v: { node: Node; hash: Uint8Array }): Promise<void> {
  await m.application.onCommit!({ node: v.node, hash: v.hash, updates: [] });
}

Deno.test("batch: a valid batch updates the keys, and nothing else", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1"), set("b", "2")]));
  assert.ok(result.ok);
  const byKey = new Map(result.updates.map(([k, v]) => [toHex(k), v]));
  assert.equal(dec.decode(byKey.get(toHex(kvStateKey(enc.encode("a"))))!), "1");
  assert.equal(result.updates.length, 2, "no per-command records: ids live in memory");
  m.close();
});

Deno.test("batch: later commands of a batch see the earlier ones; the last write of a key wins", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1"), set("a", "2", 1)]));
  assert.ok(result.ok);
  const updates = result.updates.filter(([k]) => toHex(k) === toHex(kvStateKey(enc.encode("a"))));
  assert.equal(updates.length, 1, "one update per key");
  assert.equal(dec.decode(updates[0]![1]!), "2");
  m.close();
});

Deno.test("batch: the same command twice in one batch is rejected; another expiry is another command", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1"), set("b", "2"), set("a", "1")]));
  assert.match(rejectReason(result), /command 2 repeats/);
  const twoExpiries = encodeBatch([
    { command: set("a", "1"), expires: 100 },
    { command: set("a", "1"), expires: 101 },
  ]);
  assert.ok((await validate(m, twoExpiries)).result.ok);
  m.close();
});

Deno.test("batch: a command committed within the horizon is rejected (at most once)", async () => {
  const m = pool();
  const first = await validate(m, batch([set("a", "1")]), stateOf(), { height: 1 });
  assert.ok(first.result.ok);
  await commit(m, first);
  const again = await validate(m, batch([set("b", "2"), set("a", "1")]), stateOf(), {
    height: 2,
    parent: first.hash,
  });
  assert.match(rejectReason(again.result), /command 1 .* already committed or pending/);
  // The same key and value with another nonce is another command: fine.
  const other = await validate(m, batch([set("a", "1", 9)]), stateOf(), {
    height: 2,
    parent: first.hash,
  });
  assert.ok(other.result.ok);
  m.close();
});

Deno.test("batch: a command in an uncommitted ancestor is rejected", async () => {
  const m = pool();
  const parent = await validate(m, batch([set("a", "1")]), stateOf(), { height: 1 });
  assert.ok(parent.result.ok);
  const child = await validate(m, batch([set("a", "1")]), stateOf(), {
    height: 2,
    parent: parent.hash,
  });
  assert.match(rejectReason(child.result), /already committed or pending/);
  // A sibling of the parent (another branch from genesis) may carry it.
  assert.ok((await validate(m, batch([set("a", "1")]), stateOf(), { height: 1 })).result.ok);
  m.close();
});

Deno.test("batch: every command must be live at the Node's height: h <= expires < h + horizon", async () => {
  const m = pool({ commandHorizon: 10 });
  m.restore({ committedHeight: 4, committed: [], uncommitted: [] });
  const at5 = (expires: number) =>
    validate(m, batch([set("a", "1")], expires), stateOf(), {
      height: 5,
    });
  assert.match(rejectReason((await at5(4)).result), /expires at 4, outside \[5, 14\]/);
  assert.ok((await at5(5)).result.ok);
  assert.ok((await at5(14)).result.ok);
  assert.match(rejectReason((await at5(15)).result), /expires at 15, outside \[5, 14\]/);
  m.close();
});

Deno.test("batch: a Node whose uncommitted ancestors were never validated here is refused", async () => {
  const m = pool();
  const { result } = await validate(m, batch([set("a", "1")]), stateOf(), {
    height: 3,
    parent: new Uint8Array(32).fill(0xee),
  });
  assert.match(rejectReason(result), /ancestors-unknown/);
  m.close();
});

Deno.test("batch: at most once holds past the horizon, with only the horizon's ids in memory", async () => {
  const m = pool({ commandHorizon: 4 });
  const cmd = set("a", "1");
  // Committed at height 1 with expiry 4: it could only ever be in Nodes of heights 1 to 4.
  let prev = await validate(m, batch([cmd], 4), stateOf(), { height: 1 });
  assert.ok(prev.result.ok);
  await commit(m, prev);
  assert.equal(m.rememberedIds, 1);
  for (let h = 2; h <= 5; h++) {
    const copy = await validate(m, batch([cmd], 4), stateOf(), { height: h, parent: prev.hash });
    // Inside the horizon the id is remembered; beyond it the expiry refuses the copy.
    assert.match(rejectReason(copy.result), h <= 4 ? /already committed/ : /expires at 4/);
    prev = await validate(m, batch([]), stateOf(), { height: h, parent: prev.hash });
    await commit(m, prev);
  }
  assert.equal(m.rememberedIds, 0, "height 1 left memory once height 5 committed");
  m.close();
});

Deno.test("batch: bad batches are rejected with a reason", async () => {
  const m = pool({ batchCommandsMax: 3, batchBytesMax: 4096 });
  const cases: Array<[Uint8Array, RegExp]> = [
    [new Uint8Array([0xff]), /not CBOR/],
    [encodeValue({ a: 1 }), /must be a CBOR array/],
    [encodeValue([new Uint8Array(1)]), /entry 0 is not \[expires, command\]/],
    [encodeValue([[0, new Uint8Array(1)]]), /expires must be a height >= 1/],
    [encodeValue([[5, "not bytes"]]), /command 0 is not bytes/],
    [encodeValue([[5, new Uint8Array(0)]]), /command 0 is empty/],
    [batch([set("a", "1"), set("b", "2"), set("c", "3"), set("d", "4")]), /4 commands exceeds 3/],
    [batch([set("a", "x".repeat(5000))]), /bytes exceeds 4096/],
    [batch([set("a", "1"), encodeValue(["frob", "k", "v"])]), /command 1 rejected: unknown op/],
    [batch([new Uint8Array([1, 2, 3])]), /command 0 rejected: not CBOR/],
  ];
  for (const [command, reason] of cases) {
    assert.match(rejectReason((await validate(m, command)).result), reason);
  }
  m.close();
});

Deno.test("batch: a batch over its update limits is rejected; the empty batch is valid", async () => {
  const m = pool({ batchUpdatesMax: 2 });
  const three = batch([set("a", "1"), set("b", "2"), set("c", "3")]);
  assert.match(rejectReason((await validate(m, three)).result), /too many state updates/);
  assert.ok((await validate(m, batch([set("a", "1"), set("b", "2")]))).result.ok);
  assert.deepEqual((await validate(m, batch([]))).result, { ok: true, updates: [] });
  m.close();
  assert.throws(() => pool({ batchUpdatesMax: 65_537 }), /at most 65536/);
  assert.throws(() => pool({ updateValueBytesMax: 64 * 1024 }), /at most 61440/);
  assert.throws(() => pool({ batchBytesMax: 0 }), /positive integer/);
  assert.throws(() => pool({ commandHorizon: 0 }), /positive integer/);
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
  assert.equal(r.added.length, 2, "the duplicate is added once");
  assert.equal(m.size, 2);
  assert.equal(m.submit([set("a", "1")]).added.length, 0, "already in the pool");
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

Deno.test("pool: the client's expiry must lie in (committed height, committed height + horizon]", () => {
  const m = pool({ commandHorizon: 10 });
  m.restore({ committedHeight: 20, committed: [], uncommitted: [] });
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

Deno.test("pool: commit drops the ids and answers the waiting clients with height and node", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2")];
  const { ids, expires } = m.submit(cmds);
  const waits = ids.map((id) => m.waitForCommit(id, expires, { timeoutMs: 5000 }));
  const v = await validate(m, batch(cmds, expires));
  assert.ok(v.result.ok);
  await commit(m, v);
  const done: CommittedCommand[] = await Promise.all(waits);
  assert.deepEqual(done.map((d) => [d.height, d.node]), [[1, toHex(v.hash)], [1, toHex(v.hash)]]);
  assert.equal(m.size, 0);
  assert.equal(m.committedCommands, 2);
  // A late copy (a client's retry, a forward that arrives after the commit) is known committed.
  const late = m.submit([cmds[0]!], { expires });
  assert.equal(late.added.length, 0);
  assert.equal(late.committed.get(0)?.height, 1);
  assert.equal((await m.waitForCommit(ids[0]!, expires)).height, 1, "answered at once");
  m.close();
});

Deno.test("pool: a command not committed by its expiry leaves the pool; its clients get expired", async () => {
  const dropped: string[] = [];
  const m = pool({ onDropped: (id, reason) => dropped.push(`${id}:${reason}`) });
  const { ids } = m.submit([set("late", "1")], { expires: 2 });
  const waiting = m.waitForCommit(ids[0]!, 2, { timeoutMs: 5000 });
  const n1 = await validate(m, batch([]), stateOf(), { height: 1 });
  await commit(m, n1);
  assert.equal(m.size, 1, "still live at height 2");
  const n2 = await validate(m, batch([]), stateOf(), { height: 2, parent: n1.hash });
  await commit(m, n2);
  await assert.rejects(waiting, { reason: "expired" });
  assert.equal(m.size, 0);
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

Deno.test("pool: forwarded entries keep their expiry; expired ones are skipped, far ones refused", () => {
  const m = pool({ commandHorizon: 10 });
  m.restore({ committedHeight: 5, committed: [], uncommitted: [] });
  assert.equal(m.addForwarded(entries([set("a", "1"), set("b", "2")], 12)), 2);
  assert.equal(m.addForwarded(entries([set("c", "3")], 5)), 0, "expired here: skipped");
  assert.equal(m.addForwarded(entries([set("d", "4")], 25)), 1, "ahead of this replica: kept");
  assert.throws(() => m.addForwarded(entries([set("e", "5")], 26)), { reason: "bad-expiry" });
  assert.equal(m.size, 3);
  m.close();
});

Deno.test("pool: restore brings back the horizon's committed ids and the uncommitted Nodes", async () => {
  const before = pool();
  const n1 = await validate(before, batch([set("a", "1")]), stateOf(), { height: 1 });
  const n2 = await validate(before, batch([set("b", "2")]), stateOf(), {
    height: 2,
    parent: n1.hash,
  });
  before.close();
  // A restarted replica: n1 committed, n2 stored uncommitted.
  const m = pool();
  m.restore({ committedHeight: 1, committed: [n1], uncommitted: [n2] });
  assert.equal(m.submit([set("a", "1")], { expires: 100 }).committed.get(0)?.height, 1);
  const child = await validate(m, batch([set("b", "2")]), stateOf(), {
    height: 3,
    parent: n2.hash,
  });
  assert.match(rejectReason(child.result), /already committed or pending/);
  const fresh = await validate(m, batch([set("c", "3")]), stateOf(), {
    height: 3,
    parent: n2.hash,
  });
  assert.ok(fresh.result.ok, "n2 is a known ancestor");
  m.close();
});

// ---------------------------------------------------------------------------------------------
// The leader's batches

Deno.test("leader: batches pool commands oldest first, up to the byte limit", async () => {
  const m = pool({ batchBytesMax: 1000 });
  const cmds = Array.from({ length: 40 }, (_, i) => set(`key-${i}`, "v".repeat(30)));
  const { expires } = m.submit(cmds);
  const got = await produce(m, new Uint8Array(32).fill(7));
  assert.ok(got.length > 5 && got.length < 40, `a partial batch: ${got.length}`);
  assert.ok(batch(got, expires).length <= 1000);
  assert.deepEqual(got, cmds.slice(0, got.length), "oldest first");
  // What the leader produces, every replica accepts.
  assert.ok((await validate(m, batch(got, expires))).result.ok);
  m.close();
});

Deno.test("leader: skips commands already in the uncommitted ancestors it extends", async () => {
  const m = pool();
  const cmds = [set("a", "1"), set("b", "2"), set("c", "3")];
  const { expires } = m.submit(cmds);
  // Node 1 carries a and b; a leader extending node 1 must not propose them again.
  const n1 = await validate(m, batch(cmds.slice(0, 2), expires), stateOf(), { height: 1 });
  assert.ok(n1.result.ok);
  assert.deepEqual(await produce(m, n1.hash, stateOf(), 2), [cmds[2]]);
  // On another branch (extending genesis) they are fair game again.
  assert.deepEqual(await produce(m, new Uint8Array(32).fill(99)), cmds);
  // Extending a Node it never validated, it cannot know what is pending: an empty batch.
  assert.deepEqual(await produce(m, new Uint8Array(32).fill(98), stateOf(), 3), []);
  m.close();
});

Deno.test("leader: drops commands the machine refuses; skips commands not live yet", async () => {
  const dropped: string[] = [];
  const m = new Mempool({
    check: () => null, // let anything in, so that apply refuses it
    apply: (r) => kvMachine.apply(r),
  }, {
    idleProposeDelayMs: 0,
    commandHorizon: 10,
    onDropped: (id, reason) => dropped.push(`${id}:${reason}`),
  });
  const good = set("a", "1");
  const junk = encodeValue(["frob", "k", "v"]);
  m.submit([junk, good]);
  m.addForwarded(entries([set("later", "1")], 15)); // live from height 6 on
  assert.deepEqual(await produce(m, new Uint8Array(32)), [good]);
  assert.equal(dropped.length, 1);
  assert.match(dropped[0]!, /unknown op/);
  assert.equal(m.size, 2, "the junk left the pool; the rest stays until it commits");
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
  m.submit([set("a", "1")]);
  assert.equal((await waiting).length, 1);
  assert.ok(performance.now() - t1 < 150, "woken by the submission");
  m.close();
});

Deno.test("leader: a batch stops at the update limits, and the rest waits for the next Node", async () => {
  const m = pool({ batchUpdatesMax: 3 });
  m.submit([set("a", "1"), set("b", "2"), set("c", "3"), set("d", "4")]);
  const got = await produce(m, new Uint8Array(32));
  assert.equal(got.length, 3, "3 commands x 1 update");
  assert.equal(m.size, 4, "nothing leaves the pool before it commits");
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

Deno.test("batch: ids found by bytes for pool commands agree with computed ids, short and long", async () => {
  const m = pool();
  const short = set("s", "1");
  const long = set("l", "x".repeat(400)); // over the size whose ids are found by bytes
  const { ids, expires } = m.submit([short, long]);
  assert.deepEqual(ids, [idOf(short, expires), idOf(long, expires)]);
  const parent = await validate(m, batch([short, long], expires), stateOf(), { height: 1 });
  assert.ok(parent.result.ok);
  for (const c of [short, long]) {
    const child = await validate(m, batch([c], expires), stateOf(), {
      height: 2,
      parent: parent.hash,
    });
    assert.match(rejectReason(child.result), /already committed or pending/);
  }
  // Committed (and so out of the pool), the ids are computed again and still match.
  await commit(m, parent);
  assert.equal(m.size, 0);
  const late = m.submit([short, long], { expires });
  assert.deepEqual([...late.committed.values()].map((c) => c.id), ids);
  m.close();
});

Deno.test("leader: validating the batch it just built gives what any replica computes; another batch is checked in full", async () => {
  const leader = pool();
  const other = pool();
  const cmds = [set("a", "1"), set("b", "2"), set("a", "3", 1)];
  const { expires } = leader.submit(cmds);
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
  // Built, then a different batch on the same parent: no shortcut, the bad command is found.
  await leader.application.produceCommand({
    view: 1,
    height: 1,
    parent: new Uint8Array(32),
    state: stateOf(),
  });
  const forged = nodeOf(
    encodeBatch([{ command: encodeValue(["frob", "k", "v"]), expires }]),
    { height: 1 },
  );
  const v = await leader.application.validateNode({ ...forged, state: stateOf() });
  assert.match(rejectReason(v), /unknown op/);
  leader.close();
  other.close();
});

Deno.test("batch: an array announcing more entries than allowed is refused from its head, undecoded", () => {
  // A head announcing 2^20 entries, then nothing: decoding it would fail; the count refuses first.
  const head = new Uint8Array([0x9a, 0x00, 0x10, 0x00, 0x00]);
  const r = decodeEntryList(head, 65_536, 1024);
  assert.deepEqual(r, { ok: false, reason: "batch of 1048576 commands exceeds 65536" });
});
