/**
 * Tests of the CatchUp flow's HTTP transport (src/net/catchup.ts): an HttpNodeSource fetching
 * from real NodeTree HTTP APIs (src/net/http.ts) on loopback. A good peer serves a real chain; a
 * bad peer serves garbage, broken chains, oversized or slow answers, and must be reported and
 * skipped. Then the whole flow (Spec 4.4 and 10.1): an Engine far behind catches up through an
 * HttpNodeSource with few storage writes, and a power loss in the middle loses no commit it
 * announced. Ports are chosen by the OS; every server, request and timer is closed.
 */
import {
  encodeNode,
  encodeValue,
  genesisNode,
  genesisQC,
  nodeHash,
  signedBytes,
} from "../src/codec.ts";
import { deriveSecretKey, type Signer } from "../src/crypto.ts";
import { Engine } from "../src/runtime/engine.ts";
import { AssertionError, ConfigError } from "../src/errors.ts";
import {
  type FetchTarget,
  HttpNodeSource,
  type HttpNodeSourceOptions,
} from "../src/net/catchup.ts";
import { NodeTreeHttpApi, type NodeTreeView } from "../src/net/http.ts";
import { signRequest } from "../src/net/admission.ts";
import { counterApp } from "../src/testing/counter_app.ts";
import { FastSignatures } from "../src/testing/fast_signatures.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import { type SafetyState, type Storage, wrapStorage } from "../src/storage/storage.ts";
import type { ConsensusMessage, Node, PublicKey, QuorumCertificate } from "../src/types.ts";
import { bytesEqual, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { sleep, waitUntil } from "./support/cluster.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

function assertThrows(f: () => unknown, check: (e: unknown) => boolean, message: string): void {
  try {
    f();
  } catch (e) {
    if (check(e)) return;
    throw new Error(`${message}: wrong error ${String(e)}`);
  }
  throw new Error(`${message}: did not throw`);
}

const CHAIN = "catchup-test";
const HOST = "127.0.0.1";
const GOOD_KEY = new Uint8Array(32).fill(0x60);
const BAD_KEY = new Uint8Array(32).fill(0xba);

function fakeQC(view: number, hash: Uint8Array): QuorumCertificate {
  return {
    chainId: CHAIN,
    view,
    nodeHash: hash,
    signatures: [{ signer: new Uint8Array(32).fill(7), signature: new Uint8Array(64).fill(9) }],
  };
}

/** Nodes of heights 1..n on top of genesis; `salt` makes a different chain. */
function buildChain(n: number, salt = ""): Node[] {
  const nodes: Node[] = [];
  let parent = nodeHash(genesisNode(CHAIN));
  let justify = genesisQC(CHAIN);
  for (let h = 1; h <= n; h++) {
    const node: Node = {
      view: h,
      height: h,
      parent,
      justify,
      command: new TextEncoder().encode(`cmd ${salt}${h}`),
      configHash: new Uint8Array(32),
      proposer: new Uint8Array(32),
      stateRoot: new Uint8Array(0),
    };
    nodes.push(node);
    parent = nodeHash(node);
    justify = fakeQC(h, parent);
  }
  return nodes;
}

const CHAIN_A = buildChain(6);
const CHAIN_B = buildChain(6, "fork ");

/** A view that serves `chain()` as its chain; the other routes are not used here. */
function chainView(chain: () => Node[]): NodeTreeView {
  return {
    status: () => ({}),
    nodeByHash: () => Promise.resolve(null),
    committedRange: () => Promise.resolve([]),
    chainFrom: (from, limit) =>
      Promise.resolve(chain().filter((n) => n.height >= from).slice(0, limit)),
  };
}

/** Records what the source reports, in order. */
class Target implements FetchTarget {
  readonly events: { kind: "nodes" | "failure"; from: string | null; nodes: readonly Node[] }[] =
    [];

  receiveNodes(from: PublicKey, nodes: readonly Node[]): void {
    this.events.push({ kind: "nodes", from: toHex(from), nodes });
  }

  receiveFetchFailure(from: PublicKey | null): void {
    this.events.push({ kind: "failure", from: from === null ? null : toHex(from), nodes: [] });
  }

  /** Waits for the `n`th event (1-based) and returns it. */
  async nth(n: number): Promise<Target["events"][number]> {
    await waitUntil(`event ${n}`, () => this.events.length >= n);
    return this.events[n - 1]!;
  }
}

/** What the bad peer does with a `/chain` request. */
type Misbehaviour =
  | "garbage"
  | "not-an-array"
  | "bad-node"
  | "unlinked"
  | "gap"
  | "below-from"
  | "too-many"
  | "oversized"
  | "oversized-stream"
  | "html"
  | "status-400"
  | "hang";

interface Peers {
  readonly good: NodeTreeHttpApi;
  readonly bad: NodeTreeHttpApi;
  /** What the bad peer does next. */
  mode: Misbehaviour;
  /** Frees requests the bad peer holds in "hang" mode. */
  release(): void;
}

/**
 * Starts the good peer (serving CHAIN_A) and the bad peer (misbehaving as `peers.mode` says; its
 * own view serves broken chains), runs `body`, then releases and closes everything.
 */
async function withPeers(body: (peers: Peers) => Promise<void>): Promise<void> {
  const hung: (() => void)[] = [];
  const peers: Peers = {
    good: new NodeTreeHttpApi({
      hostname: HOST,
      port: 0,
      view: chainView(() => CHAIN_A),
      rangeMax: 16,
      log: () => {},
    }),
    bad: new NodeTreeHttpApi({
      hostname: HOST,
      port: 0,
      view: {
        ...chainView(() => []),
        chainFrom: (from, limit) => Promise.resolve(brokenChain(peers.mode, from).slice(0, limit)),
      },
      rangeMax: 16,
      log: () => {},
      extraRoutes: (req, url) => misbehave(peers.mode, req, url, hung),
    }),
    mode: "garbage",
    release: () => hung.splice(0).forEach((r) => r()),
  };
  await peers.good.start();
  await peers.bad.start();
  try {
    await body(peers);
  } finally {
    peers.release();
    await peers.good.close();
    await peers.bad.close();
  }
}

/** The bad peer's chain from `from`: well-formed Nodes that do not make a valid answer. */
function brokenChain(mode: Misbehaviour, from: number): Node[] {
  switch (mode) {
    case "unlinked": // heights 1, 2, 3, but Node 2 is from another chain
      return [CHAIN_A[0]!, CHAIN_B[1]!, CHAIN_A[2]!];
    case "gap":
      return [CHAIN_A[0]!, CHAIN_A[2]!];
    case "below-from": // ignores `from`
      return CHAIN_A;
    default:
      return CHAIN_A.filter((n) => n.height >= from);
  }
}

function cborResponse(bytes: Uint8Array | ReadableStream<Uint8Array>): Response {
  return new Response(bytes as BodyInit, { headers: { "content-type": "application/cbor" } });
}

async function misbehave(
  mode: Misbehaviour,
  _req: Request,
  url: URL,
  hung: (() => void)[],
): Promise<Response | null> {
  if (url.pathname !== "/chain") return null;
  switch (mode) {
    case "garbage":
      return cborResponse(new Uint8Array([0xff, 0x00, 0x13, 0x37]));
    case "not-an-array":
      return cborResponse(encodeValue({ nodes: 3 }));
    case "bad-node":
      return cborResponse(encodeValue([encodeNode(CHAIN_A[0]!), new Uint8Array([0x82, 1, 2])]));
    case "too-many":
      return cborResponse(encodeValue(CHAIN_A.map(encodeNode)));
    case "oversized":
      return cborResponse(new Uint8Array(4096));
    case "oversized-stream":
      return cborResponse(
        new ReadableStream<Uint8Array>({ pull: (c) => c.enqueue(new Uint8Array(1024)) }),
      );
    case "html":
      return new Response("<html>hello</html>", { headers: { "content-type": "text/html" } });
    case "status-400":
      return null; // the built-in route refuses the limit (rangeMax 16)
    case "hang":
      await new Promise<void>((r) => hung.push(r));
      return cborResponse(encodeValue([]));
    default:
      return null; // the built-in route serves brokenChain(mode)
  }
}

function source(
  peers: Peers,
  target: Target,
  options: Partial<HttpNodeSourceOptions> = {},
): HttpNodeSource {
  const s = new HttpNodeSource({
    peers: [
      { publicKey: BAD_KEY, url: `http://${HOST}:${peers.bad.port}` },
      { publicKey: GOOD_KEY, url: `http://${HOST}:${peers.good.port}/` },
    ],
    timeoutMs: 2000,
    responseBytesMax: 2048,
    skipMs: 60_000,
    random: () => 0, // the first usable peer: the bad one, unless it is skipped or busy
    log: () => {},
    ...options,
  });
  s.attach(target);
  return s;
}

function heights(nodes: readonly Node[]): number[] {
  return nodes.map((n) => n.height);
}

// ---------------------------------------------------------------------------------------------
// Good peer

Deno.test("catchup: a good peer's Nodes reach the target, decoded and in order", async () => {
  await withPeers(async (peers) => {
    const target = new Target();
    const s = source(peers, target);
    try {
      s.fetch({ from: GOOD_KEY, fromHeight: 2, limit: 3 });
      const e = await target.nth(1);
      assertEquals([e.kind, e.from], ["nodes", toHex(GOOD_KEY)], "answer from the good peer");
      assertEquals(heights(e.nodes), [2, 3, 4], "heights");
      e.nodes.forEach((n, i) => {
        assert(bytesEqual(nodeHash(n), nodeHash(CHAIN_A[i + 1]!)), `Node ${i} is the served one`);
      });
    } finally {
      await s.close();
    }
  });
});

Deno.test("catchup: an empty answer is delivered, not a failure, and skips no one", async () => {
  await withPeers(async (peers) => {
    const target = new Target();
    const s = source(peers, target);
    try {
      s.fetch({ from: GOOD_KEY, fromHeight: 100, limit: 8 });
      const e = await target.nth(1);
      assertEquals([e.kind, e.nodes.length], ["nodes", 0], "empty answer");
      await waitUntil("request done", () => !s.status()[1]!.busy);
      assertEquals(s.status()[1]!.skippedForMs, 0, "not skipped");
    } finally {
      await s.close();
    }
  });
});

Deno.test("catchup: an unknown requested peer falls back to a random usable one", async () => {
  await withPeers(async (peers) => {
    const target = new Target();
    const s = source(peers, target, { random: () => 0.99 });
    try {
      s.fetch({ from: new Uint8Array(32).fill(1), fromHeight: 1, limit: 2 });
      const e = await target.nth(1);
      assertEquals([e.kind, e.from], ["nodes", toHex(GOOD_KEY)], "random 0.99: the last peer");
      assertEquals(heights(e.nodes), [1, 2], "heights");
    } finally {
      await s.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Bad peer

/** [misbehaviour, expected logged reason, extra source options] */
const BAD_ANSWERS: [Misbehaviour, string, Partial<HttpNodeSourceOptions>][] = [
  ["garbage", "bad-cbor", {}],
  ["not-an-array", "bad-body", {}],
  ["bad-node", "bad-node", {}],
  ["unlinked", "not-linked", {}],
  ["gap", "bad-height", {}],
  ["below-from", "bad-height", {}],
  ["too-many", "too-many-nodes", {}],
  ["oversized", "response-too-large", { responseBytesMax: 1024 }],
  ["oversized-stream", "response-too-large", { responseBytesMax: 4096 }],
  ["html", "bad-content-type", {}],
  ["status-400", "bad-status", {}],
  ["hang", "timeout", { timeoutMs: 150 }],
];

Deno.test("catchup: a bad answer is a failure; the peer is skipped on the next fetch", async (t) => {
  await withPeers(async (peers) => {
    for (const [mode, reason, options] of BAD_ANSWERS) {
      await t.step(`${mode}: ${reason}`, async () => {
        peers.mode = mode;
        const target = new Target();
        const logs: { event: string; fields: Record<string, unknown> }[] = [];
        const s = source(peers, target, {
          ...options,
          log: (event, fields) => logs.push({ event, fields }),
        });
        try {
          const fromHeight = mode === "below-from" ? 2 : 1;
          const limit = mode === "status-400" ? 17 : 3;
          s.fetch({ from: BAD_KEY, fromHeight, limit });
          const failed = await target.nth(1);
          assertEquals([failed.kind, failed.from], ["failure", toHex(BAD_KEY)], "failure");
          const skipped = logs.find((l) => l.event === "catchup:peer-skipped");
          assertEquals(skipped?.fields.reason, reason, "logged reason");
          assert(s.status()[0]!.skippedForMs > 0, "the bad peer is skipped");

          // random() = 0 would pick the bad peer first; it is skipped, so the good one answers.
          s.fetch({ from: null, fromHeight: 1, limit: 3 });
          const next = await target.nth(2);
          assertEquals([next.kind, next.from], ["nodes", toHex(GOOD_KEY)], "next fetch");
          assertEquals(heights(next.nodes), [1, 2, 3], "heights");

          // Asking the skipped peer by name goes elsewhere too.
          s.fetch({ from: BAD_KEY, fromHeight: 4, limit: 3 });
          const named = await target.nth(3);
          assertEquals([named.kind, named.from], ["nodes", toHex(GOOD_KEY)], "named fetch");
          assertEquals(heights(named.nodes), [4, 5, 6], "heights");
        } finally {
          peers.release();
          await s.close();
        }
      });
    }
  });
});

Deno.test("catchup: a peer that does not listen is a network-error failure and is skipped", async () => {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const port = listener.addr.port;
  listener.close();
  const target = new Target();
  const logs: string[] = [];
  const s = new HttpNodeSource({
    peers: [{ publicKey: BAD_KEY, url: `http://${HOST}:${port}` }],
    log: (_e, f) => logs.push(String(f.reason)),
  });
  s.attach(target);
  try {
    s.fetch({ from: BAD_KEY, fromHeight: 1, limit: 4 });
    assertEquals(await target.nth(1), { kind: "failure", from: toHex(BAD_KEY), nodes: [] }, "fail");
    assertEquals(logs, ["network-error"], "reason");
    s.fetch({ from: null, fromHeight: 1, limit: 4 });
    assertEquals((await target.nth(2)).kind, "failure", "no usable peer left");
    assertEquals(logs, ["network-error", "no-peer"], "no request was made");
  } finally {
    await s.close();
  }
});

Deno.test("catchup: a skipped peer is used again once skipMs has passed", async () => {
  await withPeers(async (peers) => {
    peers.mode = "garbage";
    let now = 1000;
    const target = new Target();
    const s = source(peers, target, { skipMs: 500, now: () => now });
    try {
      s.fetch({ from: null, fromHeight: 1, limit: 2 });
      assertEquals((await target.nth(1)).from, toHex(BAD_KEY), "the bad peer was chosen");
      assertEquals(s.status()[0]!.skippedForMs, 500, "skipped for skipMs");
      now = 1499;
      s.fetch({ from: null, fromHeight: 1, limit: 2 });
      assertEquals((await target.nth(2)).from, toHex(GOOD_KEY), "still skipped");
      now = 1500;
      await waitUntil("good request done", () => !s.status()[1]!.busy);
      s.fetch({ from: null, fromHeight: 1, limit: 2 });
      const again = await target.nth(3);
      assertEquals([again.kind, again.from], ["failure", toHex(BAD_KEY)], "tried again");
    } finally {
      await s.close();
    }
  });
});

Deno.test("catchup: at most one request per peer; close aborts it and nothing follows", async () => {
  await withPeers(async (peers) => {
    peers.mode = "hang";
    const target = new Target();
    const s = new HttpNodeSource({
      peers: [{ publicKey: BAD_KEY, url: `http://${HOST}:${peers.bad.port}` }],
      timeoutMs: 60_000,
      log: () => {},
    });
    s.attach(target);
    s.fetch({ from: BAD_KEY, fromHeight: 1, limit: 2 });
    assert(s.status()[0]!.busy, "in flight");
    s.fetch({ from: BAD_KEY, fromHeight: 1, limit: 2 });
    const second = await target.nth(1);
    assertEquals(
      [second.kind, second.from],
      ["failure", toHex(BAD_KEY)],
      "busy: no second request",
    );
    assertEquals(s.status()[0]!.skippedForMs, 0, "busy is not bad");
    await s.close();
    assert(!s.status()[0]!.busy, "aborted");
    s.fetch({ from: null, fromHeight: 1, limit: 2 });
    await sleep(20);
    assertEquals(target.events.length, 1, "no answer after close");
  });
});

// ---------------------------------------------------------------------------------------------
// Configuration

Deno.test("catchup: bad peers and limits are a ConfigError; fetch needs a target", () => {
  const key = new Uint8Array(32);
  const bad: HttpNodeSourceOptions[] = [
    { peers: [{ publicKey: new Uint8Array(31), url: "http://127.0.0.1:1" }] },
    { peers: [{ publicKey: key, url: "not a url" }] },
    { peers: [{ publicKey: key, url: "ftp://127.0.0.1/" }] },
    { peers: [{ publicKey: key, url: "http://127.0.0.1:1/?x=1" }] },
    { peers: [{ publicKey: key, url: "http://a:1" }, { publicKey: key, url: "http://b:1" }] },
    { peers: [], timeoutMs: 0 },
    { peers: [], responseBytesMax: 0.5 },
    { peers: [], skipMs: -1 },
  ];
  for (const options of bad) {
    assertThrows(() => new HttpNodeSource(options), (e) => e instanceof ConfigError, "config");
  }
  const s = new HttpNodeSource({ peers: [] });
  assertThrows(
    () => s.fetch({ from: null, fromHeight: 1, limit: 1 }),
    (e) => e instanceof AssertionError,
    "fetch before attach is a bug",
  );
  s.attach(new Target());
  assertThrows(() => s.attach(new Target()), (e) => e instanceof AssertionError, "attach twice");
});

// ---------------------------------------------------------------------------------------------
// The whole CatchUp flow: an Engine far behind

const FAR_CHAIN = "catchup-engine-test";
const FAST = new FastSignatures();
const FAR_SIGNERS: Signer[] = [0, 1, 2, 3].map((i) =>
  FAST.signer(deriveSecretKey(`catchup-engine-${i}`))
);
const FAR_VALIDATORS = new ValidatorSet(
  FAR_SIGNERS.map((s) => ({ publicKey: s.publicKey, power: 1 })),
);

function signerOf(key: PublicKey): Signer {
  return FAR_SIGNERS.find((s) => bytesEqual(s.publicKey, key))!;
}

/** Heights 1..n in views 1..n, each certified by 3 of the 4 validators; and the next PROPOSE. */
async function certifiedChain(n: number): Promise<{ nodes: Node[]; next: ConsensusMessage }> {
  const nodes: Node[] = [];
  let parent = nodeHash(genesisNode(FAR_CHAIN));
  let justify = genesisQC(FAR_CHAIN);
  const certify = async (view: number, hash: Uint8Array): Promise<QuorumCertificate> => ({
    chainId: FAR_CHAIN,
    view,
    nodeHash: hash,
    signatures: await Promise.all(
      FAR_SIGNERS.slice(0, 3).map(async (s) => ({
        signer: s.publicKey,
        signature: await s.sign(signedBytes(SignatureDomain.vote, FAR_CHAIN, view, hash)),
      })),
    ),
  });
  for (let view = 1; view <= n + 1; view++) {
    const node: Node = {
      view,
      height: view,
      parent,
      justify,
      command: new Uint8Array([1 + (view % 7), view & 0xff]),
      configHash: validatorConfigHash(stableConfig(FAR_VALIDATORS)),
      proposer: FAR_VALIDATORS.leader(view).publicKey,
      stateRoot: new Uint8Array(0),
    };
    if (view === n + 1) {
      const bytes = signedBytes(SignatureDomain.propose, FAR_CHAIN, view, nodeHash(node));
      const signature = await signerOf(node.proposer).sign(bytes);
      return { nodes, next: { type: "propose", node, tc: null, signature } };
    }
    nodes.push(node);
    parent = nodeHash(node);
    justify = await certify(view, parent);
  }
  throw new Error("unreachable");
}

/** What one Engine announced and wrote while catching up. */
interface FarRun {
  /** Heights announced by `onCommit`, in order; each was checked to be durable by then. */
  readonly announced: number[];
  /** Nodes per storage write that landed. */
  readonly writes: number[];
  /** Whether the vote on the proposal left (after its safety state was durable). */
  voted: boolean;
}

/**
 * An Engine for a validator that is not the proposal's leader, on `inner` (through `wrap`),
 * fetching over HTTP from a peer that serves `nodes`; it is handed the `next` PROPOSE.
 */
async function farReplica(
  chain: { nodes: Node[]; next: ConsensusMessage },
  inner: MemoryStorage,
  body: (engine: Engine, run: FarRun) => Promise<void>,
  wrap: (write: Storage["write"]) => Storage["write"] = (write) => write,
): Promise<FarRun> {
  const leader = chain.next.type === "propose" ? chain.next.node.proposer : new Uint8Array();
  const me = FAR_SIGNERS.find((s) => !bytesEqual(s.publicKey, leader))!;
  const run: FarRun = { announced: [], writes: [], voted: false };
  let durable: SafetyState | null = await inner.loadSafety();
  const storage = wrapStorage(inner, {
    write: wrap(async (batch) => {
      await inner.write(batch);
      durable = batch.safety ?? durable;
      run.writes.push((batch.nodes?.length ?? 0) + (batch.commits?.length ?? 0));
    }),
  });
  const api = new NodeTreeHttpApi({
    hostname: HOST,
    port: 0,
    view: chainView(() => chain.nodes),
    log: () => {},
    // As replicas do: the catch-up requests are signed, so the public read budget (which 1,000
    // Nodes exceed) does not apply to them.
    admission: {
      auth: { chainId: FAR_CHAIN, validators: FAR_VALIDATORS, verifier: FAST.verifier },
    },
  });
  await api.start();
  const source = new HttpNodeSource({
    peers: [{ publicKey: leader, url: `http://${HOST}:${api.port}` }],
    log: () => {},
    sign: (method, url) => signRequest(me, { chainId: FAR_CHAIN, method, url }),
  });
  const app = counterApp();
  const engine = await Engine.open({
    chainId: FAR_CHAIN,
    validators: FAR_VALIDATORS,
    signer: me,
    verifier: FAST.verifier,
    storage,
    app: {
      ...app,
      async onCommit(notice) {
        // Spec 10.1 step 3: announced only once durable.
        const stored = await inner.committedHash(notice.node.height);
        assert(stored !== null && bytesEqual(stored, notice.hash), "announced before durable");
        run.announced.push(notice.node.height);
      },
    },
    network: { send: () => {}, broadcast: () => {} },
    nodeSource: source,
    clock: { now: () => performance.now(), setTimer: () => {}, clearTimer: () => {} },
    onSend: (m) => {
      if (m.type !== "vote") return;
      // Spec 10.1 step 1: the vote leaves after the safety state that records it is durable.
      assert((durable?.lastVotedView ?? 0) >= m.view, "vote sent before its safety state");
      run.voted = true;
    },
  });
  source.attach(engine);
  try {
    engine.start();
    await engine.idle();
    engine.receive(leader, chain.next);
    await body(engine, run);
  } finally {
    await engine.stop({ flush: false });
    await source.close();
    await api.close();
  }
  return run;
}

/** Every height 1..`height` is committed in `storage` as the chain's Node. */
async function assertCommitted(storage: Storage, nodes: Node[], height: number): Promise<void> {
  for (let h = 1; h <= height; h++) {
    const hash = await storage.committedHash(h);
    assert(hash !== null && bytesEqual(hash, nodeHash(nodes[h - 1]!)), `height ${h} committed`);
  }
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

Deno.test("catchup: 1,000 Nodes behind, an Engine fetches in answers of 256, persists them in a few writes, commits every Node and votes", async () => {
  const chain = await certifiedChain(1000);
  const inner = new MemoryStorage();
  const run = await farReplica(chain, inner, async (engine, run) => {
    await waitUntil("the vote on the proposal", () => run.voted || engine.failure !== null);
    await engine.idle();
  });
  // The proposal of view 1,001 commits height 998 (3-chain 999, 1000, 1001).
  assertEquals(run.announced, range(1, 998), "every height announced once, in order");
  await assertCommitted(inner, chain.nodes, 998);
  assert(run.writes.length <= 12, `${run.writes.length} writes for 1,000 Nodes`);
  assert(Math.max(...run.writes) >= 256, `a whole answer in one write: ${run.writes}`);
});

Deno.test("catchup: a power loss in the middle of catching up loses no announced commit; the restarted Engine finishes", async (t) => {
  const chain = await certifiedChain(700);
  for (const when of ["before", "after"] as const) {
    await t.step(`the second write of Nodes fails ${when} it lands`, async () => {
      const inner = new MemoryStorage();
      let withNodes = 0;
      const first = await farReplica(chain, inner, async (engine) => {
        await waitUntil("the power loss", () => engine.failure !== null);
      }, (write) => async (batch) => {
        const crash = (batch.nodes ?? batch.commits ?? []).length > 0 && ++withNodes === 2;
        if (crash && when === "before") throw new Error("power loss before the write");
        await write(batch);
        if (crash) throw new Error("power loss after the write");
      });
      const head = (await inner.committedHead())?.height ?? 0;
      assert(head > 0 && head < 697, `the crash came mid-way (head ${head})`);
      assert(first.announced.length > 0, "commits were announced before the crash");
      assert(first.announced.length <= head, "nothing announced that is not durable");
      assertEquals(first.announced, range(1, first.announced.length), "announced in order");
      await assertCommitted(inner, chain.nodes, head);
      // Restarted from the same store: it resumes above its durable head and finishes.
      const second = await farReplica(chain, inner, async (engine, run) => {
        await waitUntil("the vote after restart", () => run.voted || engine.failure !== null);
        await engine.idle();
      });
      assertEquals(second.announced, range(head + 1, 698), "resumed above the durable head");
      await assertCommitted(inner, chain.nodes, 698);
    });
  }
});
