/**
 * Tests of the handshake (src/net/handshake.ts), the Connection Manager's rules
 * (src/net/connections.ts) and scenario tests of the Consensus TCP API (src/net/tcp.ts) with real
 * replicas on loopback. Ports are chosen by the OS; every listener, socket and timer is closed.
 */
import { encodeMessage, genesisQC, nodeHash, signedBytes } from "../src/codec.ts";
import type { Signer } from "../src/crypto.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import type {
  ConsensusMessage,
  NewViewMessage,
  ProposeMessage,
  VoteMessage,
} from "../src/types.ts";
import { bytesCompare, bytesEqual, SignatureDomain, toHex } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import {
  backoffDelayMs,
  FrameQueue,
  keepsNewConnection,
  type PeerStatus,
} from "../src/net/connections.ts";
import { encodeFrames, FramedConn, FrameType } from "../src/net/framing.ts";
import {
  encodeHello,
  handshake,
  HandshakeError,
  type HandshakeOptions,
} from "../src/net/handshake.ts";
import { ConsensusTcp, type ConsensusTcpOptions } from "../src/net/tcp.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { freePorts, sleep, waitUntil } from "./support/cluster.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const CHAIN = "net-test";
const HOST = "127.0.0.1";
/** r0..r2 run as replicas; r3 is a validator that tests impersonate with raw sockets. */
const signers: Signer[] = ["r0", "r1", "r2", "r3"].map((s) => ed25519Signer(deriveSecretKey(s)));
const validators = new ValidatorSet(signers.map((s) => ({ publicKey: s.publicKey, power: 1 })));
const outsider = ed25519Signer(deriveSecretKey("not-a-validator"));
const verifier = ed25519Verifier();

function signer(i: number): Signer {
  const s = signers[i];
  assert(s !== undefined, `signer ${i}`);
  return s;
}

async function tcpPair(): Promise<{ server: Deno.TcpConn; client: Deno.TcpConn }> {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: HOST, port: listener.addr.port }),
      listener.accept(),
    ]);
    return { server, client };
  } finally {
    listener.close();
  }
}

async function vote(view: number, from: Signer): Promise<VoteMessage> {
  const hash = new Uint8Array(32).fill(view & 0xff);
  return {
    type: "vote",
    view,
    nodeHash: hash,
    signer: from.publicKey,
    signature: await from.sign(signedBytes(SignatureDomain.vote, CHAIN, view, hash)),
  };
}

async function propose(view: number, from: Signer): Promise<ProposeMessage> {
  const justify = genesisQC(CHAIN);
  const node = {
    view,
    height: 1,
    parent: justify.nodeHash,
    justify,
    command: new TextEncoder().encode(`command ${view}`),
    configHash: validatorConfigHash(stableConfig(validators)),
    proposer: from.publicKey,
    stateRoot: new Uint8Array(0),
  };
  return {
    type: "propose",
    node,
    tc: null,
    signature: await from.sign(signedBytes(SignatureDomain.propose, CHAIN, view, nodeHash(node))),
  };
}

async function newView(view: number, from: Signer): Promise<NewViewMessage> {
  return {
    type: "new-view",
    view,
    highQC: genesisQC(CHAIN),
    highTC: null,
    vote: null,
    signer: from.publicKey,
    signature: await from.sign(signedBytes(SignatureDomain.newView, CHAIN, view)),
  };
}

interface LogEntry {
  readonly event: string;
  readonly fields: Record<string, unknown>;
}

interface Received {
  readonly from: string;
  readonly msg: ConsensusMessage;
}

/** A running replica's transport, with its log and inbox. */
interface Replica {
  readonly tcp: ConsensusTcp;
  readonly log: LogEntry[];
  readonly inbox: Received[];
  readonly index: number;
}

/** Small timeouts so that the scenarios run in well under a second each. */
const FAST = {
  handshakeTimeoutMs: 1000,
  readIdleTimeoutMs: 2000,
  keepaliveIntervalMs: 100,
  dialBackoffMinMs: 10,
  dialBackoffMaxMs: 200,
} as const;

function replicaOptions(
  index: number,
  port: number,
  peers: ConsensusTcpOptions["peers"],
  extra: Partial<ConsensusTcpOptions> = {},
): ConsensusTcpOptions {
  return {
    chainId: CHAIN,
    signer: signer(index),
    verifier,
    validators,
    listen: { hostname: HOST, port },
    peers,
    random: () => 0.5,
    ...FAST,
    ...extra,
  };
}

async function startReplica(options: ConsensusTcpOptions, index: number): Promise<Replica> {
  const log: LogEntry[] = [];
  const inbox: Received[] = [];
  const tcp = new ConsensusTcp({ ...options, log: (event, fields) => log.push({ event, fields }) });
  tcp.onMessage((from, msg) => inbox.push({ from: toHex(from), msg }));
  await tcp.start();
  return { tcp, log, inbox, index };
}

/** n replicas that all know (and dial) each other. */
async function startCluster(
  n: number,
  extra: Partial<ConsensusTcpOptions> = {},
): Promise<{ replicas: Replica[]; ports: number[]; peers: ConsensusTcpOptions["peers"] }> {
  const ports = freePorts(n);
  const peers = ports.map((port, i) => ({ publicKey: signer(i).publicKey, hostname: HOST, port }));
  const replicas = await Promise.all(
    ports.map((port, i) => startReplica(replicaOptions(i, port, peers, extra), i)),
  );
  return { replicas, ports, peers };
}

function statusOf(r: Replica, peer: number): PeerStatus {
  const hex = toHex(signer(peer).publicKey);
  const s = r.tcp.status().find((p) => p.publicKey === hex);
  assert(s !== undefined, `replica ${r.index} has a status line for ${peer}`);
  return s;
}

function fullyConnected(replicas: Replica[]): boolean {
  return replicas.every((r) => replicas.every((o) => o === r || statusOf(r, o.index).connected));
}

/** Both ends of every pair report the same TCP connection. */
function samePairConnections(replicas: Replica[]): boolean {
  return replicas.every((r) =>
    replicas.every((o) => {
      if (o === r) return true;
      const mine = statusOf(r, o.index);
      const theirs = statusOf(o, r.index);
      return mine.connected && theirs.connected &&
        mine.localAddress === theirs.remoteAddress && mine.remoteAddress === theirs.localAddress;
    })
  );
}

function events(r: Replica, event: string, reason?: string): LogEntry[] {
  return r.log.filter((e) =>
    e.event === event && (reason === undefined || e.fields.reason === reason)
  );
}

function inboxFrom(r: Replica, from: number): ConsensusMessage[] {
  const hex = toHex(signer(from).publicKey);
  return r.inbox.filter((m) => m.from === hex).map((m) => m.msg);
}

function sameMessage(a: ConsensusMessage, b: ConsensusMessage): boolean {
  return bytesEqual(encodeMessage(a), encodeMessage(b));
}

async function closeAll(replicas: Replica[]): Promise<void> {
  await Promise.all(replicas.map((r) => r.tcp.close()));
}

/** Reads until the connection closes; true if it did within `timeoutMs`. */
async function closedByPeer(conn: Deno.Conn, timeoutMs = 3000): Promise<boolean> {
  const buf = new Uint8Array(4096);
  const deadline = performance.now() + timeoutMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((
    r,
  ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  try {
    while (performance.now() < deadline) {
      const n = await Promise.race([conn.read(buf).catch(() => null), timeout]);
      if (n === "timeout") return false;
      if (n === null) return true;
    }
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function handshakeOptions(me: Signer, extra: Partial<HandshakeOptions> = {}): HandshakeOptions {
  return { chainId: CHAIN, signer: me, verifier, validators, handshakeTimeoutMs: 1000, ...extra };
}

/** Runs both sides of a handshake over a loopback pair; returns each side's outcome. */
async function handshakeBoth(
  left: HandshakeOptions,
  right: HandshakeOptions,
): Promise<[Uint8Array | HandshakeError, Uint8Array | HandshakeError]> {
  const { server, client } = await tcpPair();
  const a = new FramedConn(server);
  const b = new FramedConn(client);
  const outcome = (
    p: Promise<Uint8Array>,
    own: FramedConn,
  ): Promise<Uint8Array | HandshakeError> =>
    p.catch((e) => {
      assert(e instanceof HandshakeError, `a HandshakeError, got ${e}`);
      // A refusal closes its own end, as the Connection Manager does (closing the other end too
      // here, in the same process, made the other side's pending read fail as read-failed).
      own.close();
      return e;
    });
  try {
    return await Promise.all([outcome(handshake(a, left), a), outcome(handshake(b, right), b)]);
  } finally {
    a.close();
    b.close();
  }
}

function reasonOf(x: Uint8Array | HandshakeError): string {
  return x instanceof HandshakeError ? x.reason : "ok";
}

// ---------------------------------------------------------------------------------------------
// Handshake

Deno.test("handshake: two validators on the same chain learn each other's key", async () => {
  const [a, b] = await handshakeBoth(handshakeOptions(signer(0)), handshakeOptions(signer(1)));
  assert(a instanceof Uint8Array && bytesEqual(a, signer(1).publicKey), "left sees r1");
  assert(b instanceof Uint8Array && bytesEqual(b, signer(0).publicKey), "right sees r0");
});

Deno.test("handshake: a peer on another chain is refused (wrong-chain)", async () => {
  const [a] = await handshakeBoth(
    handshakeOptions(signer(0)),
    handshakeOptions(signer(1), { chainId: "other-chain" }),
  );
  assertEquals(reasonOf(a), "wrong-chain", "left refuses");
});

Deno.test("handshake: a key outside the validator set is refused (unknown-key)", async () => {
  const [a] = await handshakeBoth(handshakeOptions(signer(0)), handshakeOptions(outsider));
  assertEquals(reasonOf(a), "unknown-key", "left refuses the outsider");
});

Deno.test("handshake: a proof signed by another key is refused (bad-signature)", async () => {
  // Claims r1's key, but signs with the outsider's.
  const impostor: Signer = { publicKey: signer(1).publicKey, sign: (m) => outsider.sign(m) };
  const [a] = await handshakeBoth(handshakeOptions(signer(0)), handshakeOptions(impostor));
  assertEquals(reasonOf(a), "bad-signature", "left refuses the impostor");
});

Deno.test("handshake: a peer claiming our own key is refused (own-key)", async () => {
  const mirror: Signer = { publicKey: signer(0).publicKey, sign: (m) => outsider.sign(m) };
  const [a] = await handshakeBoth(handshakeOptions(signer(0)), handshakeOptions(mirror));
  assertEquals(reasonOf(a), "own-key", "left refuses its own key");
});

Deno.test("handshake: reaching another validator than the one dialed is refused (unexpected-peer)", async () => {
  const [a] = await handshakeBoth(
    handshakeOptions(signer(0), { expectedPeer: signer(2).publicKey }),
    handshakeOptions(signer(1)),
  );
  assertEquals(reasonOf(a), "unexpected-peer", "dialer refuses");
});

Deno.test("handshake: malformed handshake frames are refused (bad-hello, frame-too-large)", async () => {
  const cases: [Uint8Array, string][] = [
    [encodeFrames([new Uint8Array([FrameType.hello, 0xff, 0x00])]), "bad-hello"],
    [encodeFrames([new Uint8Array([FrameType.ping])]), "bad-hello"],
    [
      encodeFrames([
        encodeHello({ chainId: CHAIN, publicKey: new Uint8Array(31), nonce: new Uint8Array(32) }),
      ]),
      "bad-hello",
    ],
    [new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "frame-too-large"],
  ];
  for (const [bytes, reason] of cases) {
    const { server, client } = await tcpPair();
    const io = new FramedConn(server);
    try {
      await client.write(bytes);
      const error = await handshake(io, handshakeOptions(signer(0))).catch((e) => e);
      assert(error instanceof HandshakeError, `refused: ${error}`);
      assertEquals(error.reason, reason, "reason");
    } finally {
      io.close();
      client.close();
    }
  }
});

Deno.test("handshake: a silent peer is refused after handshakeTimeoutMs (handshake-timeout)", async () => {
  const { server, client } = await tcpPair();
  const io = new FramedConn(server);
  try {
    const started = performance.now();
    const error = await handshake(io, handshakeOptions(signer(0), { handshakeTimeoutMs: 100 }))
      .catch((e) => e);
    const took = performance.now() - started;
    assert(error instanceof HandshakeError, `refused: ${error}`);
    assertEquals(error.reason, "handshake-timeout", "reason");
    assert(took >= 90 && took < 1000, `took ~100 ms: ${took}`);
    assert(io.closed, "the connection is closed");
  } finally {
    io.close();
    client.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Connection Manager rules (pure)

Deno.test("connections: backoff doubles from min to max, with jitter in [50 %, 100 %]", () => {
  const opts = (r: number) => ({ dialBackoffMinMs: 100, dialBackoffMaxMs: 1000, random: () => r });
  assertEquals([1, 2, 3, 4, 5, 30].map((a) => backoffDelayMs(a, opts(1))), [
    100,
    200,
    400,
    800,
    1000,
    1000,
  ], "ceilings");
  assertEquals([1, 5].map((a) => backoffDelayMs(a, opts(0))), [50, 500], "floor is half");
});

Deno.test("connections: both ends keep the connection dialed by the lower key", () => {
  const [low, high] = [signer(0).publicKey, signer(1).publicKey].sort(bytesCompare) as [
    Uint8Array,
    Uint8Array,
  ];
  const byLow = { dialer: low, quiet: false };
  const byHigh = { dialer: high, quiet: false };
  // Whichever order the two connections complete in, the lower key's dial survives.
  assert(keepsNewConnection(byHigh, byLow, [low, high]), "low's dial replaces high's");
  assert(!keepsNewConnection(byLow, byHigh, [high, low]), "high's dial does not replace low's");
  assert(keepsNewConnection(byLow, byLow, [low, high]), "a newer dial by the same side wins");
  assert(keepsNewConnection(byHigh, byHigh, [low, high]), "also for the higher side");
  assert(keepsNewConnection({ dialer: low, quiet: true }, byHigh, [low, high]), "quiet loses");
});

Deno.test("connections: the send queue drops the oldest frames beyond its frame and byte limits", () => {
  const q = new FrameQueue(3, 10);
  const f = (n: number, len = 1) => new Uint8Array(len).fill(n);
  assertEquals([q.push(f(1)), q.push(f(2)), q.push(f(3))], [0, 0, 0], "room for three");
  assertEquals(q.push(f(4)), 1, "the fourth drops one");
  assertEquals(q.shift()?.[0], 2, "frame 1 was the one dropped");
  // Holds [3, 4] (2 bytes); a 9-byte frame needs 11 > 10 bytes: frame 3 goes.
  assertEquals(q.push(f(5, 9)), 1, "a 9-byte frame needs room for its bytes");
  assertEquals([q.length, q.bytes], [2, 10], "two frames, ten bytes");
  assertEquals([q.shift()?.[0], q.shift()?.[0], q.shift(), q.length], [4, 5, undefined, 0], "fifo");
});

Deno.test("connections: the queue holds any item sized by sizeOf, and peek leaves it in place", () => {
  const q = new FrameQueue<{ n: number; size: number }>(10, 10, (x) => x.size);
  assertEquals([q.push({ n: 1, size: 4 }), q.push({ n: 2, size: 4 })], [0, 0], "8 bytes");
  assertEquals(q.push({ n: 3, size: 4 }), 1, "12 bytes do not fit: the oldest goes");
  assertEquals([q.peek()?.n, q.length, q.bytes], [2, 2, 8], "peek does not remove");
  assertEquals([q.shift()?.n, q.bytes], [2, 4], "shift removes and frees its bytes");
});

// ---------------------------------------------------------------------------------------------
// Consensus TCP scenarios

Deno.test("tcp: 3 replicas dialing each other at once keep exactly one connection per pair", async () => {
  const { replicas } = await startCluster(3);
  try {
    await waitUntil(
      "one link per pair",
      () => fullyConnected(replicas) && samePairConnections(replicas),
    );
    // Let duplicate connections from the simultaneous dials finish closing, then check again.
    await sleep(150);
    assert(samePairConnections(replicas), "still the same connection on both ends");
    for (const r of replicas) {
      // Every connection that was established and not closed again is one of the two kept.
      const live = events(r, "net:connected").length - events(r, "net:disconnected").length;
      assertEquals(live, 2, `replica ${r.index} has two live connections`);
    }
  } finally {
    await closeAll(replicas);
  }
});

Deno.test("tcp: messages broadcast at start-up, while duplicate connections are sorted out, all arrive", async () => {
  const { replicas } = await startCluster(3);
  try {
    const sent = await Promise.all(
      replicas.map((r) =>
        Promise.all(Array.from({ length: 50 }, (_, i) => vote(i, signer(r.index))))
      ),
    );
    // Before any connection is up: everything waits in the queues.
    replicas.forEach((r, i) => sent[i]!.forEach((m) => r.tcp.broadcast(m)));
    await waitUntil("100 votes each", () => replicas.every((r) => r.inbox.length === 100));
    for (const r of replicas) {
      for (const o of replicas) {
        if (o === r) continue;
        const got = inboxFrom(r, o.index);
        assert(got.every((m, i) => sameMessage(m, sent[o.index]![i]!)), "all, in order");
      }
    }
  } finally {
    await closeAll(replicas);
  }
});

Deno.test("tcp: send and broadcast deliver every message type with the sender's key", async () => {
  const { replicas } = await startCluster(3);
  const [r0, r1, r2] = replicas as [Replica, Replica, Replica];
  try {
    await waitUntil("fully connected", () => fullyConnected(replicas));
    const p = await propose(1, signer(0));
    const v = await vote(1, signer(1));
    const nv = await newView(2, signer(2));
    r0.tcp.broadcast(p);
    assert(r1.tcp.send(signer(2).publicKey, v), "r1 -> r2 queued");
    assert(r2.tcp.send(signer(0).publicKey, nv), "r2 -> r0 queued");
    assert(!r0.tcp.send(signer(0).publicKey, v), "sending to ourselves is refused");
    assert(!r0.tcp.send(outsider.publicKey, v), "sending to a non-validator is refused");
    await waitUntil(
      "all messages delivered",
      () => r1.inbox.length === 1 && r2.inbox.length === 2 && r0.inbox.length === 1,
    );
    assert(sameMessage(inboxFrom(r1, 0)[0]!, p), "r1 got the proposal from r0");
    assert(inboxFrom(r2, 0).some((m) => sameMessage(m, p)), "r2 got the proposal from r0");
    assert(inboxFrom(r2, 1).some((m) => sameMessage(m, v)), "r2 got the vote from r1");
    assert(sameMessage(inboxFrom(r0, 2)[0]!, nv), "r0 got the new-view from r2");
    // Many messages in a row arrive complete and in order.
    const votes = await Promise.all(Array.from({ length: 200 }, (_, i) => vote(i, signer(1))));
    for (const m of votes) r1.tcp.send(signer(0).publicKey, m);
    await waitUntil("200 votes delivered", () => inboxFrom(r0, 1).length === 200);
    assert(inboxFrom(r0, 1).every((m, i) => sameMessage(m, votes[i]!)), "in order");
  } finally {
    await closeAll(replicas);
  }
});

Deno.test("tcp: a replica that goes away is redialed, and messages flow after it restarts on its port", async () => {
  const { replicas, ports, peers } = await startCluster(3);
  const [r0, r1] = replicas as [Replica, Replica, Replica];
  let restarted: Replica | null = null;
  try {
    await waitUntil("fully connected", () => fullyConnected(replicas));
    await replicas[2]!.tcp.close();
    await waitUntil(
      "r0 and r1 notice r2 is gone",
      () => !statusOf(r0, 2).connected && !statusOf(r1, 2).connected,
    );
    // Sent while r2 is down: it waits in the queue.
    const early = await vote(7, signer(0));
    assert(r0.tcp.send(signer(2).publicKey, early), "queued for the absent r2");
    await waitUntil("r0 keeps redialing", () => events(r0, "net:dial-failed").length >= 2);
    restarted = await startReplica(replicaOptions(2, ports[2]!, peers), 2);
    const all = [r0, r1, restarted];
    await waitUntil("reconnected", () => fullyConnected(all) && samePairConnections(all));
    await waitUntil("the queued vote arrives", () => inboxFrom(restarted!, 0).length === 1);
    assert(sameMessage(inboxFrom(restarted, 0)[0]!, early), "it is the queued vote");
    const late = await vote(8, signer(1));
    r1.tcp.broadcast(late);
    await waitUntil("new messages flow", () => inboxFrom(restarted!, 1).length === 1);
    assert(statusOf(r0, 2).connects >= 2, "r0 connected to r2 twice");
  } finally {
    await closeAll(restarted === null ? replicas : [...replicas, restarted]);
  }
});

Deno.test("tcp: the send queue to a dead peer stays at sendQueueMax; the oldest are dropped and counted", async () => {
  const deadPort = freePorts(1)[0]!;
  const r0 = await startReplica(
    replicaOptions(0, 0, [{ publicKey: signer(1).publicKey, hostname: HOST, port: deadPort }], {
      sendQueueMax: 8,
    }),
    0,
  );
  try {
    const results: boolean[] = [];
    for (let i = 0; i < 100; i++) {
      results.push(r0.tcp.send(signer(1).publicKey, await vote(i, signer(0))));
    }
    assertEquals(results.filter((ok) => ok).length, 8, "the first 8 fit");
    const s = statusOf(r0, 1);
    assertEquals([s.connected, s.queuedFrames, s.droppedFrames], [false, 8, 92], "bounded");
    // Drops are logged at 1, 2, 4, ... 64, not 92 times.
    assertEquals(events(r0, "net:queue-full").length, 7, "drop log is rate limited");
    await waitUntil("dial fails", () => events(r0, "net:dial-failed", "dial-failed").length >= 1);
    assert(statusOf(r0, 1).lastError?.startsWith("dial-failed") === true, "last error shown");
  } finally {
    await r0.tcp.close();
  }
});

Deno.test("tcp: garbage, a client that never handshakes and a peer sending bad frames are refused and logged; good replicas keep talking", async () => {
  const { replicas } = await startCluster(2, { handshakeTimeoutMs: 300, badFramesMax: 5 });
  const [r0, r1] = replicas as [Replica, Replica];
  const raw: Deno.Conn[] = [];
  let fake: FramedConn | null = null;
  try {
    await waitUntil("connected", () => fullyConnected(replicas));
    const port = r0.tcp.port;
    // 1. Garbage instead of a HELLO: "GET " announces a 1.2 GB frame.
    const garbage = await Deno.connect({ hostname: HOST, port });
    raw.push(garbage);
    await garbage.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    assert(await closedByPeer(garbage), "garbage client disconnected");
    // 2. A client that connects and never says anything.
    const silent = await Deno.connect({ hostname: HOST, port });
    raw.push(silent);
    assert(await closedByPeer(silent), "silent client disconnected after the handshake timeout");
    await waitUntil(
      "logged",
      () => events(r0, "net:handshake-failed", "handshake-timeout").length === 1,
    );
    assertEquals(events(r0, "net:handshake-failed", "frame-too-large").length, 1, "garbage logged");
    // 3. An authenticated validator (r3) that sends bad frames after the handshake.
    const conn = await Deno.connect({ hostname: HOST, port });
    fake = new FramedConn(conn);
    const key = await handshake(fake, handshakeOptions(signer(3)));
    assert(bytesEqual(key, signer(0).publicKey), "r3 reached r0");
    await waitUntil("r0 accepted r3", () => statusOf(r0, 3).connected);
    const badFrames = [
      new Uint8Array([FrameType.message, 0xff]), // not CBOR
      new Uint8Array([FrameType.message, 0x80]), // an empty array
      new Uint8Array([0x7f]), // unknown type
      new Uint8Array([]), // no type at all
      new Uint8Array([FrameType.ping, 1]), // ping with a body
      new Uint8Array([FrameType.hello, 0x80]), // a second hello
    ];
    await fake.writeBatch(badFrames);
    assert(await closedByPeer(conn), "r0 closed r3 after more than 5 bad frames");
    const bad = events(r0, "net:bad-frame");
    assertEquals(bad.length, 6, "each bad frame logged");
    assertEquals(
      bad.map((e) => e.fields.reason),
      [
        "bad-cbor",
        "bad-type",
        "unknown-frame-type",
        "empty-frame",
        "bad-keepalive",
        "unknown-frame-type",
      ],
      "with its reason",
    );
    assertEquals(statusOf(r0, 3).badFrames, 6, "counted per peer");
    assertEquals(events(r0, "net:disconnected", "too-many-bad-frames").length, 1, "closed");
    // The good replicas never noticed.
    const m = await vote(3, signer(1));
    r1.tcp.send(signer(0).publicKey, m);
    await waitUntil("r1 -> r0 still works", () => inboxFrom(r0, 1).length === 1);
    assertEquals(statusOf(r0, 1).connects, 1, "the r0-r1 connection never dropped");
    assertEquals(r0.inbox.length, 1, "nothing from the bad peers was delivered");
  } finally {
    for (const c of raw) c.close();
    fake?.close();
    await closeAll(replicas);
  }
});

Deno.test("tcp: an authenticated peer that stops answering is closed by the keepalive", async () => {
  const r0 = await startReplica(
    replicaOptions(0, 0, [], { keepaliveIntervalMs: 30, keepaliveMissedMax: 2 }),
    0,
  );
  const conn = await Deno.connect({ hostname: HOST, port: r0.tcp.port });
  const fake = new FramedConn(conn);
  try {
    await handshake(fake, handshakeOptions(signer(3)));
    // r3 reads r0's pings but never answers.
    let pings = 0;
    for (;;) {
      const frame = await fake.next().catch(() => null);
      if (frame === null) break;
      if (frame[0] === FrameType.ping) pings++;
    }
    assert(pings >= 2, `r0 pinged before giving up (${pings})`);
    assertEquals(events(r0, "net:disconnected", "keepalive-timeout").length, 1, "logged");
    assert(statusOf(r0, 3).lastError?.startsWith("keepalive-timeout") === true, "status");
  } finally {
    fake.close();
    await r0.tcp.close();
  }
});

Deno.test("tcp: inbound connections beyond inboundConnectionsMax are refused at once", async () => {
  const r0 = await startReplica(
    replicaOptions(0, 0, [], { inboundConnectionsMax: 2, handshakeTimeoutMs: 5000 }),
    0,
  );
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      conns.push(await Deno.connect({ hostname: HOST, port: r0.tcp.port }));
      // Each gets r0's HELLO: it is being served.
      const hello = new Uint8Array(256);
      assert((await conns[i]!.read(hello) ?? 0) > 4, "served connection receives a HELLO");
    }
    const third = await Deno.connect({ hostname: HOST, port: r0.tcp.port });
    conns.push(third);
    const started = performance.now();
    assert(await closedByPeer(third), "the third is closed");
    assert(performance.now() - started < 1000, "at once, not after a timeout");
    const refused = events(r0, "net:inbound-refused", "inbound-limit");
    assertEquals(refused.length, 1, "refusal logged");
    assertEquals(events(r0, "net:handshake-failed").length, 0, "the first two are still waiting");
  } finally {
    for (const c of conns) c.close();
    await r0.tcp.close();
  }
});
