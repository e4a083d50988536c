/**
 * One conformance suite for every {@link Storage}: MemoryStorage (the reference semantics) and
 * DenoKvStorage. Then the Deno KV specifics: crashes between its atomic operations, corrupt
 * bytes, batches larger than one atomic operation, refusals.
 */
import { encodeNode, encodeValue, genesisNode, genesisQC, nodeHash } from "../src/codec.ts";
import { AssertionError, HotStuffError } from "../src/errors.ts";
import { DENO_KV_LIMITS, DenoKvStorage } from "../src/storage/deno_kv.ts";
import type { DenoKvOptions, FinalCommitStep, SnapshotBucket } from "../src/storage/deno_kv.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import {
  readCommitted,
  type SafetyState,
  type StateUpdate,
  type Storage,
  type StoredNode,
  type WriteBatch,
} from "../src/storage/storage.ts";
import { bytesCompare, toHex } from "../src/types.ts";
import { bucketOf } from "../src/state/tree.ts";
import type { Node, QuorumCertificate } from "../src/types.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const CHAIN = "storage-test";
const GENESIS = genesisNode(CHAIN);
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A child of `parent`; `tag` tells siblings apart. */
function child(parent: Node, options: { command?: Uint8Array; tag?: number } = {}): Node {
  return {
    view: parent.view + 1 + (options.tag ?? 0),
    height: parent.height + 1,
    parent: nodeHash(parent),
    justify: genesisQC(CHAIN),
    command: options.command ?? new Uint8Array([parent.height + 1, options.tag ?? 0]),
    configHash: new Uint8Array(32),
    proposer: new Uint8Array(32),
    stateRoot: new Uint8Array(0),
  };
}

function stored(node: Node, updates: StateUpdate[] = []): StoredNode {
  return { node, hash: nodeHash(node), updates };
}

/** A chain of `n` stored Nodes above genesis. */
function chain(n: number, parent: Node = GENESIS): StoredNode[] {
  const out: StoredNode[] = [];
  for (let i = 0; i < n; i++) {
    const node = child(out.length === 0 ? parent : out[out.length - 1]!.node);
    out.push(stored(node));
  }
  return out;
}

function qc(view: number, signers: number): QuorumCertificate {
  const signatures = Array.from({ length: signers }, (_, i) => ({
    signer: new Uint8Array(32).fill(i % 256).map((b, j) => j === 0 ? i >> 8 : b),
    signature: new Uint8Array(64).fill(7),
  }));
  return { chainId: CHAIN, view, nodeHash: new Uint8Array(32).fill(view % 256), signatures };
}

function safety(view: number, signers = 3): SafetyState {
  return {
    currentView: view,
    lastVotedView: view - 1,
    lockedQC: qc(view - 2, signers),
    highQC: qc(view - 1, signers),
    highTC: { chainId: CHAIN, view: view - 1, signatures: qc(0, signers).signatures },
  };
}

/** A Node whose Deno KV record is exactly `bytes` long. */
function nodeWithRecordBytes(parent: Node, bytes: number): StoredNode {
  let length = bytes;
  for (let i = 0; i < 5; i++) {
    const s = stored(child(parent, { command: new Uint8Array(length).fill(0xab) }));
    const size = DenoKvStorage.recordBytes(s);
    if (size === bytes) return s;
    length += bytes - size;
  }
  throw new Error(`cannot build a record of exactly ${bytes} bytes`);
}

function equal(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && toHex(a) === toHex(b);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
      a.every((x, i) => equal(x, b[i]));
  }
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return equal(ka, kb) &&
      ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return Object.is(a, b);
}

function show(v: unknown): string {
  return JSON.stringify(v, (_, x) => x instanceof Uint8Array ? `0x${toHex(x.slice(0, 16))}` : x);
}

function assertEquals(actual: unknown, expected: unknown, what: string): void {
  if (!equal(actual, expected)) {
    throw new Error(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

function assert(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(what);
}

async function assertRejects<E extends Error>(
  f: () => Promise<unknown>,
  type: new (...args: never[]) => E,
  check: (e: E) => boolean = () => true,
): Promise<E> {
  try {
    await f();
  } catch (e) {
    if (e instanceof type && check(e)) return e;
    throw new Error(`unexpected error: ${e instanceof Error ? `${e.name} ${e.message}` : e}`);
  }
  throw new Error(`expected a ${type.name}, nothing was thrown`);
}

function isReason(reason: string): (e: HotStuffError) => boolean {
  return (e) => e.reason === reason;
}

/** Everything observable about `nodes`, `keys` and the first `heights` heights. */
async function snapshot(
  store: Storage,
  nodes: readonly StoredNode[],
  keys: readonly Uint8Array[],
  heights = 5,
): Promise<unknown> {
  const byHash = (a: StoredNode, b: StoredNode) => toHex(a.hash) < toHex(b.hash) ? -1 : 1;
  return {
    safety: await store.loadSafety(),
    head: await store.committedHead(),
    committed: await Promise.all(
      Array.from({ length: heights }, (_, i) => store.committedHash(i + 1)),
    ),
    nodes: await Promise.all(nodes.map((n) => store.getNode(n.hash))),
    state: await Promise.all(keys.map((k) => store.getState(k))),
    uncommitted: (await store.uncommittedNodes()).sort(byHash),
  };
}

function hashesOf(nodes: readonly StoredNode[]): string[] {
  return nodes.map((n) => toHex(n.hash)).sort();
}

// ---------------------------------------------------------------------------------------------
// The implementations under test

/** A store, and a way to "restart" it: close and open again over the same data. */
interface Harness {
  readonly store: Storage;
  reopen(): Promise<Storage>;
  dispose(): Promise<void>;
}

interface Implementation {
  readonly name: string;
  create(): Promise<Harness>;
}

const memory: Implementation = {
  name: "MemoryStorage",
  create(): Promise<Harness> {
    // The memory store models the disk: a restart keeps the same object.
    const store = new MemoryStorage();
    return Promise.resolve({
      store,
      reopen: () => Promise.resolve(store),
      dispose: () => store.close(),
    });
  },
};

const denoKv: Implementation = {
  name: "DenoKvStorage",
  async create(): Promise<Harness> {
    const dir = await Deno.makeTempDir({ prefix: "hotstuff-kv-" });
    const path = `${dir}/store.kv`;
    let store = await DenoKvStorage.open(path);
    let open = true;
    return {
      get store() {
        return store;
      },
      async reopen() {
        await store.close();
        open = false;
        store = await DenoKvStorage.open(path);
        open = true;
        return store;
      },
      async dispose() {
        if (open) await store.close();
        await Deno.remove(dir, { recursive: true });
      },
    };
  },
};

async function withStore(impl: Implementation, f: (h: Harness) => Promise<void>): Promise<void> {
  const h = await impl.create();
  try {
    await f(h);
  } finally {
    await h.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Conformance suite

for (const impl of [memory, denoKv]) {
  const test = (name: string, f: (h: Harness) => Promise<void>) =>
    Deno.test(`${impl.name}: ${name}`, () => withStore(impl, f));

  test("empty store: no safety state, no head, no nodes, no state", async ({ store }) => {
    assertEquals(await store.loadSafety(), null, "safety");
    assertEquals(await store.committedHead(), null, "head");
    assertEquals(await store.committedHash(1), null, "committed hash at 1");
    assertEquals(await store.committedHash(0), null, "committed hash at 0");
    assertEquals(await store.getNode(nodeHash(child(GENESIS))), null, "node");
    assertEquals(await store.getState(text("k")), null, "state");
    assertEquals(await store.uncommittedNodes(), [], "uncommitted");
    await store.write({}); // an empty batch is fine
    assertEquals(await store.committedHead(), null, "head after empty batch");
  });

  test("readCommitted: committed Nodes by height, in reads of 64, stopping at the head", async (h) => {
    const nodes = chain(150);
    await h.store.write({ commits: nodes });
    const heights = (ns: StoredNode[]) => ns.map((n) => n.node.height);
    assertEquals(
      heights(await readCommitted(h.store, 1, 150)),
      heights(nodes),
      "all, over 3 reads",
    );
    assertEquals(
      heights(await readCommitted(h.store, 60, 70)),
      heights(nodes.slice(59, 70)),
      "a range",
    );
    assertEquals(heights(await readCommitted(h.store, -5, 2)), [1, 2], "from below 1");
    assertEquals(
      heights(await readCommitted(h.store, 140, 400)),
      heights(nodes.slice(139)),
      "to the head",
    );
    assertEquals(await readCommitted(h.store, 151, 160), [], "above the head");
    assertEquals(await readCommitted(h.store, 9, 8), [], "an empty range");
  });

  test("safety state: round trip, overwrite, no TC, certificates over 64 KiB", async (h) => {
    await h.store.write({ safety: safety(5) });
    assertEquals(await h.store.loadSafety(), safety(5), "first");
    const noTC = { ...safety(9), highTC: null };
    await h.store.write({ safety: noTC });
    assertEquals(await h.store.loadSafety(), noTC, "overwritten, no TC");
    const large = safety(12, 1024); // three certificates of 1024 signatures: ~300 KiB
    await h.store.write({ safety: large });
    assertEquals(await h.store.loadSafety(), large, "large");
    await h.store.write({ safety: safety(13) });
    assertEquals(await (await h.reopen()).loadSafety(), safety(13), "small again, after reopen");
  });

  test("nodes: round trip incl. 300 KiB command and inline/chunk boundary sizes", async (h) => {
    const { inlineRecordBytesMax: inline, chunkBytes: chunk } = DENO_KV_LIMITS;
    const small = stored(child(GENESIS), [[text("a"), text("1")], [text("b"), null]]);
    const big = stored(child(GENESIS, { command: new Uint8Array(300 * 1024).fill(3), tag: 1 }));
    const sizes = [inline - 1, inline, inline + 1, chunk, 2 * chunk, 2 * chunk + 1];
    const boundary = sizes.map((n) => nodeWithRecordBytes(GENESIS, n));
    const all = [small, big, ...boundary];
    await h.store.write({ nodes: all });
    for (const n of all) assertEquals(await h.store.getNode(n.hash), n, `node ${n.node.height}`);
    assertEquals(hashesOf(await h.store.uncommittedNodes()), hashesOf(all), "uncommitted");
    const reopened = await h.reopen();
    for (const n of all) assertEquals(await reopened.getNode(n.hash), n, "after reopen");
  });

  test("commits: updates in order, head and heights move, committed leave uncommitted", async (h) => {
    const [n1, n2, n3, n4] = chain(4);
    const fork = stored(child(GENESIS, { tag: 9 }));
    const c1 = stored(n1!.node, [[text("x"), text("1")], [text("y"), text("2")]]);
    const c2 = stored(n2!.node, [[text("x"), null], [text("y"), text("3")], [text("z"), null]]);
    const c3 = stored(n3!.node, [[text("w"), text("4")], [text("w"), null], [
      text("v"),
      text("5"),
    ]]);
    await h.store.write({ nodes: [n1!, n2!, n3!, n4!, fork], safety: safety(4) });
    await h.store.write({ commits: [c1] });
    assertEquals(await h.store.committedHead(), { height: 1, hash: c1.hash }, "head 1");
    assertEquals(await h.store.getState(text("x")), text("1"), "x after c1");
    await h.store.write({ commits: [c2, c3], safety: safety(6) });
    assertEquals(await h.store.committedHead(), { height: 3, hash: c3.hash }, "head 3");
    for (const [i, c] of [c1, c2, c3].entries()) {
      assertEquals(await h.store.committedHash(i + 1), c.hash, `height ${i + 1}`);
      assertEquals(await h.store.getNode(c.hash), c, `committed node ${i + 1}`);
    }
    assertEquals(await h.store.committedHash(4), null, "height 4");
    assertEquals(await h.store.getState(text("x")), null, "x deleted by c2");
    assertEquals(await h.store.getState(text("y")), text("3"), "y overwritten by c2");
    assertEquals(await h.store.getState(text("w")), null, "w set then deleted in c3");
    assertEquals(await h.store.getState(text("v")), text("5"), "v");
    assertEquals(hashesOf(await h.store.uncommittedNodes()), hashesOf([n4!, fork]), "uncommitted");
    // Inserting a committed Node again does not make it uncommitted.
    await h.store.write({ nodes: [c2] });
    assertEquals(hashesOf(await h.store.uncommittedNodes()), hashesOf([n4!, fork]), "re-insert");
    // A Node inserted and committed in the same batch is committed.
    const n5 = stored(child(n4!.node), [[text("u"), text("6")]]);
    await h.store.write({ nodes: [n5], commits: [n4!, n5] });
    assertEquals(await h.store.committedHead(), { height: 5, hash: n5.hash }, "head 5");
    assertEquals(await h.store.getState(text("u")), text("6"), "u");
    assertEquals(hashesOf(await h.store.uncommittedNodes()), hashesOf([fork]), "only the fork");
  });

  test("a commit that does not extend the head is refused, store unchanged", async (h) => {
    const [n1, n2, n3] = chain(3);
    const fork2 = stored(child(n1!.node, { tag: 5 }));
    const sibling = stored(child(fork2.node), [[text("k"), text("bad")]]);
    await h.store.write({ nodes: [n1!, n2!, n3!], commits: [n1!, n2!], safety: safety(3) });
    const before = await snapshot(h.store, [n1!, n2!, n3!, fork2, sibling], [text("k")]);
    const refused: WriteBatch[] = [
      { commits: [sibling], nodes: [fork2], safety: safety(9) }, // height 3, wrong parent
      { commits: [n2!] }, // height 2 again
      { commits: [stored(child(n3!.node))] }, // height 4: skips 3
      { commits: [n3!, sibling] }, // the second one does not extend the first
    ];
    for (const batch of refused) await assertRejects(() => h.store.write(batch), AssertionError);
    assertEquals(
      await snapshot(h.store, [n1!, n2!, n3!, fork2, sibling], [text("k")]),
      before,
      "unchanged",
    );
    await h.store.write({ commits: [n3!] }); // the store still works
    assertEquals((await h.store.committedHead())?.height, 3, "head");
  });

  test("reopen: safety, nodes, commits and state survive a restart", async (h) => {
    const nodes = chain(3);
    const big = stored(child(nodes[2]!.node, { command: new Uint8Array(200_000).fill(1) }));
    const c1 = stored(nodes[0]!.node, [[text("a"), text("A")]]);
    await h.store.write({ nodes: [...nodes, big], safety: safety(7) });
    await h.store.write({ commits: [c1] });
    const keys = [text("a"), text("b")];
    const before = await snapshot(h.store, [...nodes, big], keys);
    const reopened = await h.reopen();
    assertEquals(await snapshot(reopened, [...nodes, big], keys), before, "after reopen");
    await reopened.write({ commits: [nodes[1]!] }); // and it keeps working
    assertEquals((await reopened.committedHead())?.height, 2, "head");
  });

  test("writes issued without waiting apply in call order", async ({ store }) => {
    const nodes = chain(3).map((n, i) => stored(n.node, [[text("n"), new Uint8Array([i])]]));
    await Promise.all(nodes.map((n) => store.write({ commits: [n] })));
    assertEquals(await store.committedHead(), { height: 3, hash: nodes[2]!.hash }, "head");
    assertEquals(await store.getState(text("n")), new Uint8Array([2]), "last update");
  });

  test("1,200 commits in one write: every height, Node and last update", async (h) => {
    const commits = counterChain(1_200);
    await h.store.write({ nodes: commits.slice(0, 600) }); // half of them stored before
    await h.store.write({ commits, safety: safety(1_201) });
    await assertCounterChain(h.store, commits);
    await assertCounterChain(await h.reopen(), commits);
  });

  test("one Node with 4,000 state updates: inserted, committed, read back", async (h) => {
    const [n1, n2] = chain(2);
    const wide = stored(n2!.node, wideUpdates(4_000, 1));
    await h.store.write({ nodes: [n1!, wide], commits: [n1!] });
    assertEquals(await h.store.getNode(wide.hash), wide, "uncommitted, with its updates");
    await h.store.write({ commits: [wide], safety: safety(3) });
    assertEquals(await h.store.committedHead(), { height: 2, hash: wide.hash }, "head");
    await assertWideState(h.store, 4_000, 1, 4_000);
    const reopened = await h.reopen();
    assertEquals(await reopened.getNode(wide.hash), wide, "committed Node after reopen");
    assertEquals(await reopened.uncommittedNodes(), [], "no uncommitted Node");
    await assertWideState(reopened, 4_000, 1, 4_000);
  });
}

/**
 * `n` chained Nodes, Node `k` setting `count` to `k` and `n/k` to `k` (the last of a key wins),
 * and deleting `gone` (set by Node 1).
 */
function counterChain(n: number): StoredNode[] {
  return chain(n).map((s, i): StoredNode => {
    const k = i + 1;
    const updates: StateUpdate[] = [[text("count"), text(`${k}`)], [
      text(`n/${k % 7}`),
      text(`${k}`),
    ]];
    updates.push(k === 1 ? [text("gone"), text("1")] : [text("gone"), null]);
    return stored(s.node, updates);
  });
}

async function assertCounterChain(store: Storage, commits: readonly StoredNode[]): Promise<void> {
  const n = commits.length;
  assertEquals(await store.committedHead(), { height: n, hash: commits[n - 1]!.hash }, "head");
  const hashes = await Promise.all(commits.map((c) => store.committedHash(c.node.height)));
  assertEquals(hashes, commits.map((c) => c.hash), "every height");
  for (const k of [1, 2, 250, 600, 601, 999, n]) {
    assertEquals(await store.getNode(commits[k - 1]!.hash), commits[k - 1], `node ${k}`);
  }
  assertEquals(await store.getState(text("count")), text(`${n}`), "count");
  for (let r = 0; r < 7; r++) {
    const last = n - ((n - r) % 7 + 7) % 7; // the highest k <= n with k % 7 === r
    assertEquals(await store.getState(text(`n/${r}`)), text(`${last}`), `n/${r}`);
  }
  assertEquals(await store.getState(text("gone")), null, "gone");
  assertEquals(await store.uncommittedNodes(), [], "none left uncommitted");
}

/** `count` updates of ~10-byte keys and 30-byte values; `tag` tells values of two Nodes apart. */
function wideUpdates(count: number, tag: number): StateUpdate[] {
  return Array.from({ length: count }, (_, i): StateUpdate => [wideKey(i), wideValue(i, tag)]);
}

function wideKey(i: number): Uint8Array {
  return text(`w${String(i).padStart(9, "0")}`);
}

function wideValue(i: number, tag: number): Uint8Array {
  return new Uint8Array(30).fill((i + tag) % 256);
}

/** Keys `0 .. count-1` of {@link wideUpdates}: the first `applied` hold `tag`'s values. */
async function assertWideState(
  store: Storage,
  count: number,
  tag: number,
  applied: number,
): Promise<void> {
  const values = await Promise.all(
    Array.from({ length: count }, (_, i) => store.getState(wideKey(i))),
  );
  for (const [i, v] of values.entries()) {
    assertEquals(v, i < applied ? wideValue(i, tag) : null, `wide key ${i}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Deno KV specifics

/** A KV file opened by hand, so that tests can see and damage the raw entries. */
class KvFile {
  private constructor(
    readonly dir: string,
    public kv: Deno.Kv,
    public store: DenoKvStorage,
  ) {}

  static async create(options: DenoKvOptions = {}): Promise<KvFile> {
    const dir = await Deno.makeTempDir({ prefix: "hotstuff-kv-" });
    const kv = await Deno.openKv(`${dir}/store.kv`);
    return new KvFile(dir, kv, DenoKvStorage.wrap(kv, options));
  }

  /** "Restart": drop the store and the KV handle, open the file again. */
  async reopen(options: DenoKvOptions = {}): Promise<DenoKvStorage> {
    await this.store.close();
    this.kv.close();
    this.kv = await Deno.openKv(`${this.dir}/store.kv`);
    this.store = DenoKvStorage.wrap(this.kv, options);
    return this.store;
  }

  async count(prefix: Deno.KvKey): Promise<number> {
    let n = 0;
    for await (const _ of this.kv.list({ prefix })) n++;
    return n;
  }

  async dispose(): Promise<void> {
    await this.store.close();
    this.kv.close();
    await Deno.remove(this.dir, { recursive: true });
  }
}

function kvTest(name: string, f: (file: KvFile) => Promise<void>, options?: DenoKvOptions): void {
  Deno.test(`DenoKvStorage: ${name}`, async () => {
    const file = await KvFile.create(options);
    try {
      await f(file);
    } finally {
      await file.dispose();
    }
  });
}

class Crash extends Error {}

kvTest("crash after the chunk writes, before the final atomic op: nothing visible", async (f) => {
  const [n1] = chain(1);
  const big = stored(child(n1!.node, { command: new Uint8Array(300 * 1024).fill(9) }));
  await f.store.write({ nodes: [n1!], safety: safety(2) });
  const before = await snapshot(f.store, [n1!, big], [text("s")]);
  const crashing = await f.reopen({
    beforeFinalCommit: () => {
      throw new Crash("power cut");
    },
  });
  const batch = { nodes: [big], commits: [stored(n1!.node, [[text("s"), text("v")]])] };
  await assertRejects(() => crashing.write({ ...batch, safety: safety(3) }), Crash);
  const restarted = await f.reopen();
  assert(await f.count(["chunk"]) >= 5, "the chunks of the 300 KiB node were written");
  assertEquals(await snapshot(restarted, [n1!, big], [text("s")]), before, "nothing visible");
  await restarted.write({ ...batch, safety: safety(3) }); // the same batch again now lands
  assertEquals(await restarted.getNode(big.hash), big, "big node");
  assertEquals(await restarted.getState(text("s")), text("v"), "state");
  assertEquals(hashesOf(await restarted.uncommittedNodes()), hashesOf([big]), "uncommitted");
  assertEquals(await restarted.loadSafety(), safety(3), "safety");
});

kvTest("corrupt bytes under a key give a corrupt-store error", async (f) => {
  const [n1, n2, n3] = chain(3);
  const big = stored(child(n3!.node, { command: new Uint8Array(150_000).fill(4) }));
  await f.store.write({ nodes: [n1!, n2!, n3!, big], commits: [n1!], safety: safety(3) });
  const before = await snapshot(f.store, [n1!, n2!, n3!, big], [text("k")]);
  const corruptions: [Deno.KvKey, unknown, () => Promise<unknown>][] = [
    [["node", n2!.hash], new Uint8Array([0xff, 0x00]), () => f.store.getNode(n2!.hash)],
    [["node", n2!.hash], "not bytes", () => f.store.getNode(n2!.hash)],
    [["node", n2!.hash], encodeValue([1, encodeValue([1, 2])]), () => f.store.getNode(n2!.hash)],
    [["node", n2!.hash], encodeValue([7, 1]), () => f.store.getNode(n2!.hash)],
    // A well-formed record of another Node under this hash.
    [["node", n2!.hash], null, () => f.store.getNode(n2!.hash)],
    [
      ["node", n3!.hash],
      encodeValue([2, new Uint8Array(32), 1, 10]),
      () => f.store.uncommittedNodes(),
    ],
    [["safety"], encodeValue([1]), () => f.store.loadSafety()],
    [["safety", 0], encodeValue([1, 2, 3, 4, 5]), () => f.store.loadSafety()],
    [["head"], encodeValue([1, new Uint8Array(3)]), () => f.store.committedHead()],
    [["committed", 1], new Uint8Array(5), () => f.store.committedHash(1)],
    [["app", text("k")], 42, () => f.store.getState(text("k"))],
  ];
  for (const [key, value, read] of corruptions) {
    const original = await f.kv.get(key);
    const damage = value ?? (await f.kv.get(["node", n3!.hash])).value;
    await f.kv.set(key, damage);
    await assertRejects(read, HotStuffError, isReason("corrupt-store"));
    if (original.value === null) await f.kv.delete(key);
    else await f.kv.set(key, original.value);
  }
  const after = await snapshot(f.store, [n1!, n2!, n3!, big], [text("k")]);
  assertEquals(after, before, "readable again once the bytes are restored");
  // A missing chunk of a chunked Node.
  for await (const entry of f.kv.list({ prefix: ["chunk", big.hash] })) {
    await f.kv.delete(entry.key);
    break;
  }
  await assertRejects(() => f.store.getNode(big.hash), HotStuffError, isReason("corrupt-store"));
});

kvTest(
  "a batch larger than one atomic op is split by commits; a crash keeps a prefix",
  async (f) => {
    // Each commit carries ~420 KiB of updates: two cannot share one atomic operation.
    const updates = (tag: number): StateUpdate[] =>
      Array.from({ length: 7 }, (_, i) => [text(`k${tag}-${i}`), new Uint8Array(60_000).fill(tag)]);
    const commits = chain(3).map((n, i) => stored(n.node, updates(i + 1)));
    const steps: string[] = [];
    const crashing = await f.reopen({
      beforeFinalCommit: ({ index, count }) => {
        steps.push(`${index}/${count}`);
        if (index === 2) throw new Crash("after two of three operations");
      },
    });
    await assertRejects(() => crashing.write({ commits, safety: safety(4) }), Crash);
    assertEquals(steps, ["0/3", "1/3", "2/3"], "three operations");
    const restarted = await f.reopen();
    assertEquals(await restarted.committedHead(), { height: 2, hash: commits[1]!.hash }, "prefix");
    assertEquals(await restarted.getState(text("k2-6")), new Uint8Array(60_000).fill(2), "c2");
    assertEquals(await restarted.getState(text("k3-0")), null, "c3 not applied");
    assertEquals(await restarted.loadSafety(), null, "safety comes last");
    await restarted.write({ commits: [commits[2]!], safety: safety(4) });
    assertEquals(await restarted.getState(text("k3-6")), new Uint8Array(60_000).fill(3), "c3");
    assertEquals(await restarted.loadSafety(), safety(4), "safety");
  },
);

kvTest("many large inline nodes are split by whole Nodes, none chunked", async (f) => {
  const steps: number[] = [];
  const store = await f.reopen({ beforeFinalCommit: ({ count }) => void steps.push(count) });
  // 20 records of ~50 KiB: about 1 MiB inline, more than one atomic operation holds.
  const nodes = Array.from(
    { length: 20 },
    (_, i) => stored(child(GENESIS, { command: new Uint8Array(50_000).fill(i), tag: i })),
  );
  await store.write({ nodes });
  assertEquals(steps, [2, 2], "two final operations");
  assertEquals(await f.count(["chunk"]), 0, "no chunks");
  for (const n of nodes) assertEquals(await store.getNode(n.hash), n, "node");
});

kvTest(
  "refusals: oversized record, key, value and command leave the store unchanged",
  async (f) => {
    const [n1] = chain(1);
    await f.store.write({ safety: safety(2) });
    const before = await snapshot(f.store, [n1!], [text("k")]);
    // 100 values of 64 KiB: a record over 6 MiB, more than a marker may announce.
    const huge = Array.from({ length: 100 }, (_, i): StateUpdate => [
      text(`k${i}`),
      new Uint8Array(65_536),
    ]);
    const cases: [WriteBatch, string][] = [
      [{ commits: [stored(n1!.node, huge)] }, "record-too-large"],
      [{ nodes: [stored(n1!.node, huge)] }, "record-too-large"],
      [{ nodes: [stored(n1!.node, [[new Uint8Array(1021), text("v")]])] }, "key-too-large"],
      [{ nodes: [stored(n1!.node, [[text("k"), new Uint8Array(65_537)]])] }, "value-too-large"],
      [
        { nodes: [stored(child(GENESIS, { command: new Uint8Array(4 * 1024 * 1024 + 1) }))] },
        "command-too-large",
      ],
    ];
    for (const [batch, reason] of cases) {
      await assertRejects(() => f.store.write(batch), HotStuffError, isReason(reason));
    }
    assertEquals(await snapshot(f.store, [n1!], [text("k")]), before, "unchanged");
    assertEquals(await f.count(["chunk"]), 0, "no chunks written");
    // The largest key and value that fit are accepted.
    const fits = stored(n1!.node, [[new Uint8Array(1020), new Uint8Array(65_536).fill(1)]]);
    await f.store.write({ commits: [fits] });
    assertEquals(
      await f.store.getState(new Uint8Array(1020)),
      new Uint8Array(65_536).fill(1),
      "ok",
    );
    assertEquals(await f.store.getState(new Uint8Array(3000)), null, "unstorable key reads null");
  },
);

kvTest("a commit of 840 KB of updates (once refused) is split and lands", async (f) => {
  const steps: string[] = [];
  const store = await f.reopen({
    beforeFinalCommit: ({ index, count, headHeight }) =>
      void steps.push(`${index}/${count}:${headHeight}`),
  });
  const [n1] = chain(1);
  const many = Array.from({ length: 14 }, (_, i): StateUpdate => [
    text(`k${i}`),
    new Uint8Array(60_000).fill(i),
  ]);
  const wide = stored(n1!.node, many);
  await store.write({ commits: [wide] });
  assertEquals(steps, ["0/2:null", "1/2:1"], "updates first, the head last");
  assertEquals(await store.getNode(wide.hash), wide, "node");
  for (const [i, [key]] of many.entries()) {
    assertEquals(await store.getState(key), new Uint8Array(60_000).fill(i), `k${i}`);
  }
});

kvTest("a Node of 4,000 updates commits in several operations, the head moving last", async (f) => {
  const steps: FinalCommitStep[] = [];
  const store = await f.reopen({ beforeFinalCommit: (step) => void steps.push(step) });
  const [n1, n2, n3] = chain(3);
  const wide = stored(n2!.node, wideUpdates(4_000, 7));
  await store.write({ nodes: [n1!, wide, n3!], safety: safety(4) });
  steps.length = 0;
  // The Node before it and the safety state ride along: every unit in order.
  await store.write({ commits: [n1!, wide], safety: safety(5) });
  assert(steps.length >= 5, `4,000 updates need 5 operations or more, got ${steps.length}`);
  const moves = steps.filter((s) => s.headHeight !== null).map((s) => [s.index, s.headHeight]);
  assertEquals(moves, [[0, 1], [steps.length - 1, 2]], "head moves to n1 first, to wide last");
  await assertWideState(store, 4_000, 7, 4_000);
  assertEquals(hashesOf(await store.uncommittedNodes()), hashesOf([n3!]), "only n3 left");
  assertEquals(await store.loadSafety(), safety(5), "safety");
});

kvTest(
  "crash between the operations of a split commit: head unmoved, Node uncommitted, recommitted",
  async (f) => {
    const [n1, n2, n3] = chain(3);
    await f.store.write({ nodes: [n1!, n3!], commits: [n1!] });
    // Never stored before: committed straight away, as after a catch-up.
    const wide = stored(n2!.node, wideUpdates(4_000, 3));
    const crashAt = 2;
    const steps: FinalCommitStep[] = [];
    const crashing = await f.reopen({
      beforeFinalCommit: (step) => {
        steps.push(step);
        if (step.index === crashAt) throw new Crash("power cut between split operations");
      },
    });
    await assertRejects(() => crashing.write({ commits: [wide], safety: safety(3) }), Crash);
    assertEquals(steps.map((s) => s.headHeight), [null, null, null], "no step moved the head yet");
    const restarted = await f.reopen();
    assertEquals(await restarted.committedHead(), { height: 1, hash: n1!.hash }, "head unmoved");
    assertEquals(await restarted.committedHash(2), null, "no commit record");
    assertEquals(await restarted.loadSafety(), null, "no safety state");
    // Stored uncommitted with its updates, so the restarted replica commits it again later.
    const uncommitted = await restarted.uncommittedNodes();
    assertEquals(hashesOf(uncommitted), hashesOf([wide, n3!]), "uncommitted");
    assertEquals(uncommitted.find((s) => s.node.height === 2), wide, "with all its updates");
    // Committed-state readers see the updates of the first operations (at most 1,000 each).
    const values = await Promise.all(wideUpdates(4_000, 3).map(([k]) => restarted.getState(k)));
    const applied = values.filter((v) => v !== null).length;
    assert(applied > 0 && applied < 4_000, `part of the updates landed: ${applied}`);
    await assertWideState(restarted, applied, 3, applied);
    // Committing it again (the same updates: idempotent) gives the whole state.
    await restarted.write({ commits: [wide, n3!], safety: safety(3) });
    assertEquals(await restarted.committedHead(), { height: 3, hash: n3!.hash }, "head");
    await assertWideState(restarted, 4_000, 3, 4_000);
    assertEquals(await restarted.uncommittedNodes(), [], "nothing uncommitted");
    assertEquals(await restarted.getNode(wide.hash), wide, "node");
  },
);

kvTest(
  "crash just before the head moves: the Node uncommitted, most updates on disk",
  async (f) => {
    const [n1] = chain(1);
    const wide = stored(n1!.node, wideUpdates(4_000, 5));
    const crashing = await f.reopen({
      beforeFinalCommit: ({ headHeight }) => {
        if (headHeight !== null) throw new Crash("before the head moves");
      },
    });
    await assertRejects(() => crashing.write({ commits: [wide] }), Crash);
    const restarted = await f.reopen();
    assertEquals(await restarted.committedHead(), null, "no head");
    assertEquals(await restarted.uncommittedNodes(), [wide], "uncommitted, with its updates");
    // The last operation holds the head and the updates that did not fit the ones before it.
    const values = await Promise.all(wideUpdates(4_000, 5).map(([k]) => restarted.getState(k)));
    const applied = values.filter((v) => v !== null).length;
    assert(applied >= 3_000 && applied < 4_000, `all but the last operation's: ${applied}`);
    await assertWideState(restarted, applied, 5, applied);
    await restarted.write({ commits: [wide] });
    assertEquals(await restarted.committedHead(), { height: 1, hash: wide.hash }, "head");
    await assertWideState(restarted, 4_000, 5, 4_000);
    assertEquals(await restarted.uncommittedNodes(), [], "committed");
  },
);

kvTest("records, markers and the head are stored in their documented CBOR layout", async (f) => {
  const lengths = [0, 1, 23, 24, 255, 256, 65_535, 65_536];
  let parent = GENESIS;
  for (const [i, length] of lengths.entries()) {
    const updates: StateUpdate[] = [
      [new Uint8Array(Math.min(length, 1_000)).fill(i), new Uint8Array(length % 60_000)],
      [text(`k${i}`), null],
    ];
    const many = Array.from({ length: length % 300 }, (_, j): StateUpdate => [text(`m${j}`), null]);
    const node = child(parent, { command: new Uint8Array(length % 20_000).fill(i) });
    const s = stored(node, [...updates, ...many]);
    const record = encodeValue([encodeNode(node), s.updates.map(([k, v]) => [k, v])]);
    await f.store.write({ commits: [s] });
    if (record.length <= DENO_KV_LIMITS.inlineRecordBytesMax) {
      assertEquals((await f.kv.get(["node", s.hash])).value, encodeValue([1, record]), "marker");
    }
    assertEquals(DenoKvStorage.recordBytes(s), record.length, "record size");
    assertEquals((await f.kv.get(["head"])).value, encodeValue([node.height, s.hash]), "head");
    parent = node;
  }
});

kvTest("one round trip per write once the head and the Nodes are known", async (f) => {
  const calls: string[] = [];
  const counting = new Proxy(f.kv, {
    get(kv, name) {
      const value = Reflect.get(kv, name, kv);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push(String(name));
        return value.apply(kv, args);
      };
    },
  });
  const nodes = chain(6);
  const store = DenoKvStorage.wrap(counting);
  await store.write({ nodes: nodes.slice(0, 3), safety: safety(3) });
  assertEquals(
    calls,
    ["get", "list", "list", "atomic"],
    "the first write reads the head, the index, and whether a snapshot base is stored",
  );
  for (let k = 3; k < 6; k++) {
    calls.length = 0;
    await store.write({ nodes: [nodes[k]!], commits: [nodes[k - 3]!], safety: safety(k + 1) });
    assertEquals(calls, ["atomic"], `write ${k}: insert a new Node, commit a known one`);
  }
  await store.close();
  // A restarted store does not know the markers of Nodes stored before it: it reads them.
  const restarted = DenoKvStorage.wrap(counting);
  calls.length = 0;
  await restarted.write({ commits: [nodes[3]!] });
  assertEquals(calls, ["get", "list", "list", "getMany", "atomic"], "after a restart");
  calls.length = 0;
  await restarted.write({ nodes: [nodes[3]!] }); // at or below the head: read
  assertEquals(calls, ["getMany", "atomic"], "a Node at the head");
  assertEquals(hashesOf(await restarted.uncommittedNodes()), hashesOf(nodes.slice(4)), "index");
  await restarted.close();
});

kvTest("the in-memory head still refuses a second writer", async (f) => {
  const nodes = chain(6);
  const first = f.store;
  await first.write({ commits: [nodes[0]!] });
  const second = DenoKvStorage.wrap(f.kv);
  const refused: WriteBatch[] = [
    { safety: safety(3) }, // no commit: only the check sees it
    { commits: [nodes[2]!] }, // extends the head the first store remembers
    { commits: [nodes[4]!] }, // extends the real head, not the remembered one
    { nodes: [nodes[5]!] },
  ];
  for (const [i, batch] of refused.entries()) {
    await first.write({}); // learns the current head (a refusal makes it read the store again)
    await second.write({ commits: [nodes[i + 1]!] }); // moves the head behind its back
    await assertRejects(() => first.write(batch), HotStuffError, isReason("concurrent-write"));
  }
  assertEquals(await first.committedHead(), { height: 5, hash: nodes[4]!.hash }, "second's head");
  assertEquals(await first.loadSafety(), null, "no safety state");
  assertEquals(await first.uncommittedNodes(), [], "nothing of the refused writes");
  await second.close();
});

kvTest(
  "after a restart, rewriting a chunked node with other updates replaces its chunks",
  async (f) => {
    const command = new Uint8Array(200_000).fill(6);
    const first = stored(child(GENESIS, { command }), [[text("a"), text("1")]]);
    const second = stored(first.node, [[text("a"), text("2")]]);
    await f.store.write({ nodes: [first] });
    const chunks = await f.count(["chunk"]);
    const restarted = await f.reopen();
    await restarted.write({ commits: [second] });
    assertEquals(await f.count(["chunk"]), chunks, "old chunks deleted with the new marker");
    assertEquals(await restarted.getNode(first.hash), second, "second record");
    assertEquals(await restarted.getState(text("a")), text("2"), "state");
  },
);

kvTest("rewriting a chunked node with other updates replaces its chunks", async (f) => {
  const command = new Uint8Array(200_000).fill(5);
  const first = stored(child(GENESIS, { command }), [[text("a"), text("1")]]);
  const second = stored(first.node, [[text("a"), text("2")]]);
  await f.store.write({ nodes: [first] });
  const chunks = await f.count(["chunk"]);
  await f.store.write({ nodes: [first] }); // the same record: nothing new
  assertEquals(await f.count(["chunk"]), chunks, "same record, same chunks");
  await f.store.write({ commits: [second] });
  assertEquals(await f.count(["chunk"]), chunks, "old chunks deleted with the new marker");
  assertEquals(await f.store.getNode(first.hash), second, "second record");
});

kvTest("another writer moving the head is detected", async (f) => {
  const [n1] = chain(1);
  let other: DenoKvStorage | null = null;
  const racing = await f.reopen({
    beforeFinalCommit: () => other!.write({ commits: [n1!] }),
  });
  other = DenoKvStorage.wrap(f.kv);
  await assertRejects(
    () => racing.write({ commits: [n1!] }),
    HotStuffError,
    isReason("concurrent-write"),
  );
  assertEquals(await racing.committedHead(), { height: 1, hash: n1!.hash }, "other's commit");
  await other!.close();
});

kvTest(
  "snapshot state packed by bucket: read through, hidden by later updates and deletes, also after a restart",
  async (f) => {
    // 3,000 small entries, a bucket's worth of large ones (several parts), one entry too large for
    // a part (an ordinary row), and an empty value.
    const entries: [Uint8Array, Uint8Array][] = [];
    for (let i = 0; i < 3000; i++) entries.push([text(`k/key-${i}`), text(`value-${i}`)]);
    const crowded = bucketOf(text("k/key-0"));
    for (let i = 0; entries.length < 3040; i++) {
      const key = text(`k/big-${i}`);
      if (bucketOf(key) === crowded) entries.push([key, new Uint8Array(3000).fill(i)]);
    }
    entries.push([text("k/huge"), new Uint8Array(60_000).fill(1)], [
      text("k/empty"),
      new Uint8Array(),
    ]);
    // As a snapshot install gives them: by bucket, then key.
    entries.sort((a, b) => bucketOf(a[0]) - bucketOf(b[0]) || bytesCompare(a[0], b[0]));
    await f.store.beginSnapshot(1);
    // In three calls, each of whole buckets; a bucket written again is refused.
    const inRange = (lo: number, hi: number): SnapshotBucket[] => {
      const buckets: SnapshotBucket[] = [];
      for (let b = lo; b < hi; b++) {
        const list = entries.filter((e) => bucketOf(e[0]) === b);
        if (list.length > 0) {
          buckets.push({ bucket: b, entries: list.map(([key, value]) => ({ key, value })) });
        }
      }
      return buckets;
    };
    await f.store.putSnapshotState(inRange(0, 1000));
    await f.store.putSnapshotState(inRange(2048, 4096));
    await f.store.putSnapshotState(inRange(1000, 2048));
    await assertRejects(
      () => f.store.putSnapshotState(inRange(crowded, crowded + 1)),
      AssertionError,
    );
    assert(await f.count(["base", crowded]) >= 5, "the crowded bucket spans several parts");
    assert(await f.count(["app"]) === 1, "only the huge entry is a row");
    assert(await f.count(["base"]) < 4096 + 20, "one part per bucket but the crowded one");
    const [n1, n2, n3] = chain(3);
    await f.store.installSnapshotChain([n1!]);
    await f.store.endSnapshot();
    for (const [key, value] of [entries[0]!, entries[1234]!, entries.at(-1)!]) {
      assertEquals(await f.store.getState(key), value, `state ${toHex(key)}`);
    }
    assertEquals(await f.store.getState(text("k/empty")), new Uint8Array(), "empty value");
    assertEquals(await f.store.getState(text("k/huge")), new Uint8Array(60_000).fill(1), "huge");
    assertEquals(await f.store.getState(text("k/absent")), null, "absent");
    const big = entries.find((e) => bucketOf(e[0]) === crowded && e[1].length === 3000)!;
    assertEquals(await f.store.getState(big[0]), big[1], "from a later part of its bucket");
    // Committed updates hide the base: a set, a delete of a base key, a delete of an absent key.
    await f.store.write({
      commits: [stored(n2!.node, [
        [text("k/key-1"), text("new")],
        [text("k/key-2"), null],
        [text("k/never"), null],
        [text("k/added"), text("a")],
      ])],
    });
    const check = async (store: DenoKvStorage, what: string): Promise<void> => {
      assertEquals(await store.getState(text("k/key-1")), text("new"), `${what}: updated`);
      assertEquals(await store.getState(text("k/key-2")), null, `${what}: deleted`);
      assertEquals(await store.getState(text("k/key-3")), text("value-3"), `${what}: untouched`);
      assertEquals(await store.getState(text("k/added")), text("a"), `${what}: added`);
      const all = new Map<string, string>();
      for await (const [k, v] of store.stateEntries()) {
        assert(!all.has(toHex(k)), `${what}: ${toHex(k)} listed once`);
        all.set(toHex(k), toHex(v));
      }
      assertEquals(all.size, entries.length, `${what}: every key but the deleted, plus the added`);
      assertEquals(all.get(toHex(text("k/key-1"))), toHex(text("new")), `${what}: listed new`);
      assert(!all.has(toHex(text("k/key-2"))), `${what}: the deleted key is not listed`);
    };
    await check(f.store, "before a restart");
    // A restarted store finds its base again, so a delete still hides it.
    const restarted = await f.reopen();
    await restarted.write({ commits: [stored(n3!.node, [[text("k/key-3"), null]])] });
    assertEquals(await restarted.getState(text("k/key-3")), null, "deleted after a restart");
    await restarted.write({
      commits: [stored(child(n3!.node), [[text("k/key-3"), text("back")]])],
    });
    assertEquals(await restarted.getState(text("k/key-3")), text("back"), "set again");
    // Clearing (a later install) takes the base and its overrides.
    await restarted.beginSnapshot(9);
    await restarted.clearSnapshot();
    assertEquals(await f.count(["base"]), 0, "base cleared");
    assertEquals(await restarted.getState(text("k/key-4")), null, "no base state");
  },
);
