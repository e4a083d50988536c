/**
 * Hostile peers on the wire, against real running replicas over TCP.
 *
 * Setup: 4 validators of power 1. Validators 0, 1 and 2 run here as real replicas
 * (`startReplica`, Deno KV, loopback TCP and HTTP); validator 3's key is held by the attacker, a
 * Byzantine validator (1 of 4: below 1/3 of the power, so the cluster must stay safe and live).
 * A second attacker holds no validator key at all. Every attack goes to replica 0's consensus
 * port over a raw `Deno.connect`; frames and handshakes are built by hand from the wire format
 * in `src/net/tcp.ts` (the legitimate handshake of the Byzantine validator uses
 * `src/net/handshake.ts`).
 *
 * After each attack the test checks that (a) replica 0 logged the rejection with its specific
 * reason, (b) every honest replica still answers `GET /status` and its committed height keeps
 * increasing, and at the end (c) memory and open sockets are back within bounds, no replica
 * failed, and no honest replica signed two different votes in one view (from its `vote:send`
 * log lines).
 *
 * A second scenario has the Byzantine validator lead a view for real (it is the next leader, so
 * the honest votes come to it and it forms the QC) and then keep proposing new Nodes for that
 * view after the cluster has moved on: Spec 4.1 step 4 allows at most two per view, and Nodes
 * on branches that can no longer commit must not pile up in storage.
 */
import assert from "node:assert/strict";
import {
  decodeMessage,
  encodeMessage,
  genesisNode,
  genesisQC,
  nodeHash,
  signedBytes,
} from "../src/codec.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier, type Signer } from "../src/crypto.ts";
import type { ConnectionLimits } from "../src/net/connections.ts";
import { encodeFrame, encodeFrames, FramedConn, FrameType, writeAll } from "../src/net/framing.ts";
import {
  decodeHello,
  encodeHello,
  encodeProof,
  handshake,
  handshakeSignedBytes,
} from "../src/net/handshake.ts";
import type {
  ConsensusMessage,
  NewViewMessage,
  Node,
  ProposeMessage,
  QuorumCertificate,
  VoteMessage,
} from "../src/types.ts";
import { bytesCompare, bytesEqual, SignatureDomain, toHex } from "../src/types.ts";
import { batchDigest, encodeBatch, encodeDigests } from "../src/runtime/mempool.ts";
import { encodeKvCommand } from "../examples/kv_store/app.ts";
import { committedHashes } from "../examples/kv_store/cluster.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { Random } from "../src/testing/random.ts";
import {
  connectionsTo,
  getStatus,
  HOST,
  type InProcessCluster,
  type LogBook,
  type LogLine,
  sleep,
  startInProcessCluster,
  waitUntil,
} from "./support/cluster.ts";
import { stableConfig, validatorConfigHash } from "../src/consensus/reconfig.ts";

const CHAIN = "hostile-peers";
/** The replica every attack is sent to. */
const TARGET = 0;
/** The validator whose key the Byzantine attacker holds (no replica runs it). */
const BYZANTINE = 3;
const HONEST = [0, 1, 2] as const;
/** Short timeouts so that each attack resolves in about a second. */
/**
 * Plaintext links: the attacks below write raw bytes after the handshake, so they test what the
 * replicas do with each message itself (encrypted links refuse every such frame before; see
 * net_tcp_test.ts for the relay that can neither read nor inject).
 */
const LIMITS: ConnectionLimits & { encryptLinks: boolean } = {
  encryptLinks: false,
  handshakeTimeoutMs: 1_500,
  readIdleTimeoutMs: 2_500,
  keepaliveIntervalMs: 1_000,
  keepaliveMissedMax: 5,
};
/** Connections in each flood: more than the default `inboundConnectionsMax` (256). */
const FLOOD_CONNECTIONS = 300;
/** Proposals of ~4 MiB each that the Byzantine validator sends in one burst. */
const BIG_FRAMES = 48;
/** Generous bound on this process's resident memory growth over the whole attack, bytes. */
const RSS_GROWTH_MAX = 384 * 1024 * 1024;
/** Bound on the growth that repeating the same garbage flood may add, bytes. */
const RSS_REPEAT_GROWTH_MAX = 64 * 1024 * 1024;

const outsider = ed25519Signer(deriveSecretKey("hostile-outsider"));
const random = new Random(20_240_601);

// ---------------------------------------------------------------------------------------------
// Raw sockets

function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: HOST, port });
}

/** Reads until the peer closes (true) or `timeoutMs` passes (false). Never throws. */
async function closedByPeer(conn: Deno.Conn, timeoutMs = 5_000): Promise<boolean> {
  const buf = new Uint8Array(64 * 1024);
  const deadline = performance.now() + timeoutMs;
  try {
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left));
      const n = await Promise.race([conn.read(buf), timeout]).finally(() => clearTimeout(timer));
      if (n === "timeout") return false;
      if (n === null) return true;
    }
  } catch {
    return true; // reset by the peer
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = random.int(256);
  return out;
}

function withType(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + body.length);
  out[0] = type;
  out.set(body, 1);
  return out;
}

function messageFrame(msg: ConsensusMessage): Uint8Array {
  return encodeFrame(withType(FrameType.message, encodeMessage(msg)));
}

// ---------------------------------------------------------------------------------------------
// The Byzantine validator's authenticated link

/**
 * An authenticated connection as validator 3: answers pings, records every message it receives
 * (bounded), and hands each to `onMessage`.
 */
class ByzantineLink {
  readonly received: ConsensusMessage[] = [];
  onMessage: (msg: ConsensusMessage) => void = () => {};
  /** While set, pings are not answered (a PONG would land inside a dripped frame). */
  quiet = false;
  readonly ended: Promise<void>;
  readonly #io: FramedConn;
  #writing: Promise<void> = Promise.resolve();

  private constructor(io: FramedConn) {
    this.#io = io;
    this.ended = this.#readLoop();
  }

  static async open(c: InProcessCluster, to: number): Promise<ByzantineLink> {
    const io = new FramedConn(await connect(c.peers[to]!.consensus.port));
    await handshake(io, {
      chainId: CHAIN,
      signer: c.signers[BYZANTINE]!,
      verifier: ed25519Verifier(),
      validators: c.validators,
      expectedPeer: c.signers[to]!.publicKey,
      encrypt: false,
    });
    return new ByzantineLink(io);
  }

  get closed(): boolean {
    return this.#io.closed;
  }

  send(...messages: ConsensusMessage[]): Promise<void> {
    return this.writeRaw(
      encodeFrames(messages.map((m) => withType(FrameType.message, encodeMessage(m)))),
    );
  }

  /** Writes `bytes` after every earlier write (a PONG must never land inside a frame). */
  writeRaw(bytes: Uint8Array): Promise<void> {
    const write = this.#writing.then(() => writeAll(this.#io.conn, bytes));
    this.#writing = write.catch(() => {});
    return write;
  }

  close(): void {
    this.#io.close();
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const frame = await this.#io.next();
        if (frame === null) break;
        if (frame[0] === FrameType.ping && !this.quiet) {
          void this.writeRaw(encodeFrame(new Uint8Array([FrameType.pong]))).catch(() => {});
        }
        if (frame[0] !== FrameType.message) continue;
        const decoded = decodeMessage(frame.subarray(1));
        if (!decoded.ok) continue;
        if (this.received.length < 5_000) this.received.push(decoded.value);
        this.onMessage(decoded.value);
      }
    } catch {
      // Closed by the replica (that is what several attacks are for) or by us.
    } finally {
      this.#io.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Signed messages

async function vote(signer: Signer, view: number, hash: Uint8Array): Promise<VoteMessage> {
  const signature = await signer.sign(signedBytes(SignatureDomain.vote, CHAIN, view, hash));
  return { type: "vote", view, nodeHash: hash, signer: signer.publicKey, signature };
}

async function newView(signer: Signer, view: number, highQC: QuorumCertificate): Promise<
  NewViewMessage
> {
  const signature = await signer.sign(signedBytes(SignatureDomain.newView, CHAIN, view));
  return {
    type: "new-view",
    view,
    highQC,
    highTC: null,
    vote: null,
    signer: signer.publicKey,
    signature,
  };
}

async function propose(signer: Signer, node: Node): Promise<ProposeMessage> {
  const signature = await signer.sign(
    signedBytes(SignatureDomain.propose, CHAIN, node.view, nodeHash(node)),
  );
  return { type: "propose", node, tc: null, signature };
}

/** A real QC (3 signatures) made into one that must be refused for `reason`. */
async function tamper(qc: QuorumCertificate, reason: string): Promise<QuorumCertificate> {
  const [s0, s1, s2] = qc.signatures as [
    QuorumCertificate["signatures"][0],
    QuorumCertificate["signatures"][0],
    QuorumCertificate["signatures"][0],
  ];
  switch (reason) {
    case "duplicate-signer":
      return { ...qc, signatures: [s0, s1, s0] };
    case "no-quorum":
      return { ...qc, signatures: [s0, s1] };
    case "unknown-signer": {
      const bytes = signedBytes(SignatureDomain.vote, CHAIN, qc.view, qc.nodeHash);
      const signature = await outsider.sign(bytes);
      return { ...qc, signatures: [s0, s1, { signer: outsider.publicKey, signature }] };
    }
    case "bad-signature": {
      const signature = s2.signature.slice();
      signature[10]! ^= 0x01;
      return { ...qc, signatures: [s0, s1, { signer: s2.signer, signature }] };
    }
  }
  throw new Error(`no tampering for ${reason}`);
}

// ---------------------------------------------------------------------------------------------
// The scenario's state and checks

interface Scene {
  readonly t: Deno.TestContext;
  readonly c: InProcessCluster;
  /** The target's log. */
  readonly log: LogBook;
  readonly byzantine: Signer;
  /** A real QC with 3 signatures, captured from a proposal. */
  realQC: QuorumCertificate | null;
  /** Links of the Byzantine validator to replicas 1 and 2 (they listen, and capture). */
  readonly taps: ByzantineLink[];
  /** Its link to the target, reopened whenever an attack gets it closed. */
  link: ByzantineLink | null;
  /** Every message the taps received, for replays (bounded). */
  readonly captured: ConsensusMessage[];
  /** Resident memory of this process (the three replicas and the attackers) at milestones. */
  readonly memory: Map<string, number>;
}

/** One attack and the log line it must produce at the target. */
interface Attack {
  /** What the attacker does. */
  readonly name: string;
  /** The event the target must log. */
  readonly event: string;
  /** The reason that line must carry. */
  readonly reason: string;
  /** The line must name the Byzantine validator as `from` (message rejections). */
  readonly fromByzantine?: boolean;
  /** Carries the attack out. */
  readonly run: () => Promise<void>;
}

const CAPTURED_MAX = 2_000;
const port = (s: Scene): number => s.c.peers[TARGET]!.consensus.port;
const key = (s: Scene, i: number): Uint8Array => s.c.signers[i]!.publicKey;
const targetView = (s: Scene): number => s.c.replicas[TARGET]!.engine.core.view;
const leaderOf = (s: Scene, view: number): Uint8Array => s.c.validators.leader(view).publicKey;
const rss = (): number => Deno.memoryUsage().rss;
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;

async function targetLink(s: Scene): Promise<ByzantineLink> {
  if (s.link === null || s.link.closed) s.link = await ByzantineLink.open(s.c, TARGET);
  return s.link;
}

/** Committed heights of the honest replicas, through `GET /status`. */
async function heights(s: Scene): Promise<number[]> {
  const statuses = await Promise.all(HONEST.map((i) => getStatus(s.c.peers[i]!.httpUrl)));
  return statuses.map((st, i) => {
    assert.ok(st !== null, `replica ${HONEST[i]} answers GET /status`);
    assert.equal(st.engine.failed, false, `replica ${HONEST[i]}'s Engine has not failed`);
    return st.committed.height;
  });
}

/** Every honest replica is alive and commits at least `nodes` more Nodes. */
async function assertCommitting(s: Scene, after: string, nodes = 2): Promise<void> {
  const before = await heights(s);
  await waitUntil(
    `every honest replica commits ${nodes} more Nodes after ${after} (from ${before})`,
    async () => (await heights(s)).every((h, i) => h >= before[i]! + nodes),
    15_000,
  );
  for (const i of HONEST) assert.equal(s.c.replicas[i]!.closed, false, `replica ${i} runs`);
}

/** Waits for the target to log `event` with `reason` after `since` (from the attacker if set). */
function expectLog(
  s: Scene,
  o: { event: string; reason: string; since: number; fromByzantine?: boolean },
): Promise<LogLine> {
  const byzantine = toHex(s.byzantine.publicKey);
  return s.log.waitFor({
    event: o.event,
    reason: o.reason,
    since: o.since,
    where: (l) => o.fromByzantine !== true || l.from === byzantine,
  });
}

/** Runs `a` as a test step: the target logs its reason and the cluster keeps committing. */
async function attackStep(s: Scene, a: Attack): Promise<void> {
  await s.t.step(`${a.name}: ${a.event} ${a.reason}`, async () => {
    const since = s.log.seq;
    await a.run();
    await expectLog(s, { ...a, since });
    await assertCommitting(s, a.name);
  });
}

// ---------------------------------------------------------------------------------------------
// Attack tools without a validator key

/** Sends `bytes` and expects the replica to close the connection. */
async function sendAndExpectClose(
  s: Scene,
  bytes: Uint8Array,
  o: { closeWrite?: boolean } = {},
): Promise<void> {
  const conn = await connect(port(s));
  await writeAll(conn, bytes).catch(() => {});
  if (o.closeWrite === true) await conn.closeWrite().catch(() => {});
  assert.ok(await closedByPeer(conn), "the replica closed the connection");
}

/** Drips `bytes` one byte every `gapMs` until the replica closes the connection. */
async function drip(conn: Deno.Conn, bytes: Uint8Array, o: { gapMs: number }): Promise<boolean> {
  const closed = closedByPeer(conn, 10_000);
  let gone = false;
  void closed.then(() => gone = true);
  for (let i = 0; i < bytes.length && !gone; i++) {
    try {
      await writeAll(conn, bytes.subarray(i, i + 1));
    } catch {
      break;
    }
    await sleep(o.gapMs);
  }
  return await closed;
}

function hello(chainId: string, publicKey: Uint8Array, o: { nonce?: Uint8Array } = {}): Uint8Array {
  return encodeFrame(encodeHello({ chainId, publicKey, nonce: o.nonce ?? randomBytes(32) }));
}

/**
 * A handshake by hand: reads the replica's HELLO, sends ours (`nonce: "echo"` returns the
 * replica's own nonce), then a PROOF from `prover` if given, and expects the connection closed.
 */
async function handshakeByHand(
  s: Scene,
  o: { chainId?: string; claim: Uint8Array; nonce?: "echo"; prover?: Signer },
): Promise<void> {
  const conn = await connect(port(s));
  const theirs = decodeHello((await new FramedConn(conn).next())!);
  assert.ok(theirs.ok, "the replica sends a well-formed HELLO first");
  const nonce = o.nonce === "echo" ? theirs.value.nonce : randomBytes(32);
  await writeAll(conn, hello(o.chainId ?? CHAIN, o.claim, { nonce }));
  if (o.prover !== undefined) {
    const signed = handshakeSignedBytes(CHAIN, theirs.value.nonce, o.claim);
    await writeAll(conn, encodeFrame(encodeProof(await o.prover.sign(signed)))).catch(() => {});
  }
  assert.ok(await closedByPeer(conn), "the replica refused the handshake and closed");
}

/** Opens `count` connections, 50 at a time, each sending `payload` (if any); returns them. */
async function flood(
  s: Scene,
  count: number,
  o: { payload?: () => Uint8Array } = {},
): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, () => connect(port(s))),
    );
    conns.push(...batch);
    const payload = o.payload;
    if (payload !== undefined) {
      await Promise.all(batch.map((c) => writeAll(c, payload()).catch(() => {})));
    }
  }
  return conns;
}

// ---------------------------------------------------------------------------------------------
// The phases

async function rawBytes(s: Scene): Promise<void> {
  const handshakeFailed = "net:handshake-failed";
  await attackStep(s, {
    name: "garbage bytes (a plausible length header, then 4 KiB of random bytes)",
    event: handshakeFailed,
    reason: "bad-hello",
    run: () => sendAndExpectClose(s, new Uint8Array([0, 0, 0, 200, ...randomBytes(4096)])),
  });
  await attackStep(s, {
    name: "a frame header announcing 4 GiB",
    event: handshakeFailed,
    reason: "frame-too-large",
    run: () => sendAndExpectClose(s, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x10])),
  });
  await attackStep(s, {
    name: "a truncated frame (the header says 500 bytes, 20 arrive, then FIN)",
    event: handshakeFailed,
    reason: "truncated-frame",
    run: () =>
      sendAndExpectClose(s, new Uint8Array([0, 0, 1, 244, ...randomBytes(20)]), {
        closeWrite: true,
      }),
  });
  await attackStep(s, {
    name: "a truncated header (2 of 4 bytes, then FIN)",
    event: handshakeFailed,
    reason: "truncated-frame",
    run: () => sendAndExpectClose(s, new Uint8Array([0, 0]), { closeWrite: true }),
  });
  await attackStep(s, {
    name: "a slow drip (one HELLO byte every 100 ms)",
    event: handshakeFailed,
    reason: "handshake-timeout",
    run: async () => {
      const started = performance.now();
      const conn = await connect(port(s));
      assert.ok(await drip(conn, hello(CHAIN, outsider.publicKey), { gapMs: 100 }), "closed");
      const took = performance.now() - started;
      assert.ok(took < LIMITS.handshakeTimeoutMs! + 1_000, `cut off after ${took} ms`);
    },
  });
}

async function badHandshakes(s: Scene): Promise<void> {
  const handshakeFailed = "net:handshake-failed";
  await attackStep(s, {
    name: "a HELLO from a key outside the validator set",
    event: handshakeFailed,
    reason: "unknown-key",
    run: () => handshakeByHand(s, { claim: outsider.publicKey, prover: outsider }),
  });
  await attackStep(s, {
    name: "a HELLO for another chain",
    event: handshakeFailed,
    reason: "wrong-chain",
    run: () => handshakeByHand(s, { chainId: "other-chain", claim: key(s, 1), prover: outsider }),
  });
  await attackStep(s, {
    name: "a HELLO claiming the replica's own key",
    event: handshakeFailed,
    reason: "own-key",
    run: () => handshakeByHand(s, { claim: key(s, TARGET) }),
  });
  await attackStep(s, {
    name: "a HELLO echoing the replica's nonce (reflection)",
    event: handshakeFailed,
    reason: "nonce-reuse",
    run: () => handshakeByHand(s, { claim: key(s, 1), nonce: "echo" }),
  });
  await attackStep(s, {
    name: "a validator's key claimed without its secret (forged PROOF)",
    event: handshakeFailed,
    reason: "bad-signature",
    run: () => handshakeByHand(s, { claim: key(s, 1), prover: outsider }),
  });
}

function capture(s: Scene, msg: ConsensusMessage): void {
  if (s.captured.length < CAPTURED_MAX) s.captured.push(msg);
  if (msg.type === "propose" && msg.node.justify.signatures.length >= 3) {
    s.realQC = msg.node.justify;
  }
}

async function listen(s: Scene): Promise<void> {
  await s.t.step(
    "the Byzantine validator connects to every honest replica and listens",
    async () => {
      for (const i of [1, 2]) {
        const tap = await ByzantineLink.open(s.c, i);
        s.taps.push(tap);
        tap.onMessage = (msg) => capture(s, msg);
      }
      await targetLink(s);
      await waitUntil("a proposal with a real QC is captured", () => s.realQC !== null, 15_000);
    },
  );
}

/** Well framed and authenticated by a validator's key, but refused for what they say. */
async function badMessages(s: Scene): Promise<void> {
  const send = async (m: ConsensusMessage | Promise<ConsensusMessage>): Promise<void> =>
    await (await targetLink(s)).send(await m);
  const rejected = { event: "message:reject", fromByzantine: true };
  const b = s.byzantine;
  await attackStep(s, {
    name: "a VOTE with a bad signature",
    ...rejected,
    reason: "bad-signature",
    run: async () => {
      const m = await vote(b, targetView(s), randomBytes(32));
      await send({ ...m, signature: randomBytes(64) });
    },
  });
  await attackStep(s, {
    name: "a VOTE signed by a key outside the validator set",
    ...rejected,
    reason: "unknown-signer",
    run: () => send(vote(outsider, targetView(s), randomBytes(32))),
  });
  for (const reason of ["duplicate-signer", "no-quorum", "unknown-signer", "bad-signature"]) {
    await attackStep(s, {
      name: `a NEW-VIEW carrying a real QC tampered for ${reason}`,
      ...rejected,
      reason,
      run: async () => send(newView(b, targetView(s), await tamper(s.realQC!, reason))),
    });
  }
  await viewAttacks(s, send);
}

async function viewAttacks(
  s: Scene,
  send: (m: ConsensusMessage | Promise<ConsensusMessage>) => Promise<void>,
): Promise<void> {
  const rejected = { event: "message:reject", fromByzantine: true };
  const b = s.byzantine;
  /** The nearest view from `from` (stepping by `step`) whose next leader is the target. */
  const collectedByTarget = (from: number, step: 1 | -1): number => {
    let v = from;
    while (!bytesEqual(leaderOf(s, v + 1), key(s, TARGET))) v += step;
    return v;
  };
  await attackStep(s, {
    name: "a NEW-VIEW 10,000 views ahead",
    ...rejected,
    reason: "far-future-view",
    run: () => send(newView(b, targetView(s) + 10_000, genesisQC(CHAIN))),
  });
  await attackStep(s, {
    name: "a NEW-VIEW at view 2^53-1",
    ...rejected,
    reason: "far-future-view",
    run: () => send(newView(b, Number.MAX_SAFE_INTEGER, genesisQC(CHAIN))),
  });
  await attackStep(s, {
    name: "a VOTE 2,000 views ahead",
    ...rejected,
    reason: "far-future-view",
    run: () => send(vote(b, collectedByTarget(targetView(s) + 2_000, 1), randomBytes(32))),
  });
  await attackStep(s, {
    name: "a VOTE for a stale view",
    ...rejected,
    reason: "stale-view",
    run: () => send(vote(b, collectedByTarget(targetView(s) - 3, -1), randomBytes(32))),
  });
  await attackStep(s, {
    name: "a PROPOSE for a view it does not lead",
    ...rejected,
    reason: "not-leader",
    run: async () => {
      let v = targetView(s) + 1;
      while (bytesEqual(leaderOf(s, v), b.publicKey)) v++;
      await send(propose(b, proposal(s, v, new Uint8Array([1, 2, 3]))));
    },
  });
}

/** A Node by the Byzantine validator on genesis, in `view`. */
function proposal(s: Scene, view: number, command: Uint8Array): Node {
  return {
    view,
    height: 1,
    parent: nodeHash(genesisNode(CHAIN)),
    justify: genesisQC(CHAIN),
    command,
    configHash: validatorConfigHash(stableConfig(s.c.validators)),
    proposer: s.byzantine.publicKey,
    stateRoot: new Uint8Array(0),
  };
}

/** Framing attacks on an authenticated link: each ends with the replica closing it. */
async function badFramesAfterHandshake(s: Scene): Promise<void> {
  await attackStep(s, {
    name: "a MESSAGE frame that is not CBOR",
    event: "net:bad-frame",
    reason: "bad-cbor",
    run: async () => {
      const frame = encodeFrame(new Uint8Array([FrameType.message, 0xff, 0xff]));
      await (await targetLink(s)).writeRaw(frame);
    },
  });
  await attackStep(s, {
    name: "after the handshake: a frame header announcing 4 GiB",
    event: "net:disconnected",
    reason: "frame-too-large",
    run: async () => {
      const link = await targetLink(s);
      await link.writeRaw(new Uint8Array([0xff, 0xff, 0xff, 0xff, FrameType.message]));
      await link.ended;
    },
  });
  await attackStep(s, {
    name: "after the handshake: a slow drip (one byte every 200 ms)",
    event: "net:disconnected",
    reason: "read-timeout",
    run: async () => {
      const link = await targetLink(s);
      link.quiet = true;
      const frame = messageFrame(await vote(s.byzantine, targetView(s), randomBytes(32)));
      for (let i = 0; i < frame.length && !link.closed; i++) {
        await link.writeRaw(frame.subarray(i, i + 1)).catch(() => {});
        await sleep(200);
      }
      await link.ended;
    },
  });
}

async function replays(s: Scene): Promise<void> {
  await s.t.step(
    "replays: fresh proposals re-sent at once, old messages re-sent later: no double vote, no view jump",
    async () => {
      const link = await targetLink(s);
      // Every proposal the taps see goes to the target three more times, at once.
      let echoed = 0;
      for (const tap of s.taps) {
        tap.onMessage = (msg) => {
          capture(s, msg);
          if (msg.type !== "propose" || link.closed) return;
          echoed++;
          void link.send(msg, msg, msg).catch(() => {});
        };
      }
      await assertCommitting(s, "proposals echoed three times", 4);
      assert.ok(echoed > 0, "some proposals were echoed");
      for (const tap of s.taps) tap.onMessage = () => {};
      await replayOld(s, link);
    },
  );
}

/** Everything captured so far, again, once the cluster has moved on. */
async function replayOld(s: Scene, link: ByzantineLink): Promise<void> {
  const old = [...s.captured];
  const kinds = new Set(old.map((m) => m.type));
  assert.ok(kinds.has("propose") && kinds.has("vote") && kinds.has("new-view"), `${[...kinds]}`);
  const newest = Math.max(...old.map((m) => m.type === "propose" ? m.node.view : m.view));
  await waitUntil(
    "the cluster is 8 views past the capture",
    () => targetView(s) > newest + 8,
    15_000,
  );
  const since = s.log.seq;
  for (let i = 0; i < old.length; i += 100) await link.send(...old.slice(i, i + 100));
  // Old proposals are refused as stale (Spec 4.1 step 2) before anything else is looked at.
  await expectLog(s, {
    event: "message:reject",
    reason: "stale-view",
    since,
    fromByzantine: true,
  });
  await expectLog(s, {
    event: "message:reject",
    reason: "not-next-leader",
    since,
    fromByzantine: true,
  });
  await assertCommitting(s, "the replay");
  const byzantine = toHex(s.byzantine.publicKey);
  const reasons = new Map<string, number>();
  for (
    const l of s.log.filter((l) => l.event === "message:reject" && l.from === byzantine, since)
  ) {
    const k = `${l.message} ${l.reason}`;
    reasons.set(k, (reasons.get(k) ?? 0) + 1);
  }
  const count = (type: string): number => old.filter((m) => m.type === type).length;
  console.log(
    `replayed ${count("propose")} PROPOSE, ${count("vote")} VOTE, ${count("new-view")} ` +
      `NEW-VIEW; logged (at most 20 per reason): ${[...reasons].map(([k, n]) => `${k} x${n}`)}`,
  );
  const views = HONEST.map((i) => s.c.replicas[i]!.engine.core.view);
  assert.ok(
    views[TARGET]! <= Math.max(...views.filter((_, i) => i !== TARGET)) + 1,
    `the replay did not push the target ahead of the others: views ${views}`,
  );
}

/**
 * The Byzantine validator leads a view for real: it collects the honest votes sent to it as the
 * next leader, forms the QC, and proposes two different Nodes on it: one to the target, the
 * other to replicas 1 and 2, and then that one to the target as well.
 */
async function equivocate(s: Scene): Promise<void> {
  await s.t.step(
    "an equivocating leader (two Nodes in its view): detected as double-proposal, nobody votes twice, the chains agree",
    async () => {
      const since = s.log.seq;
      const [target, ...taps] = [await targetLink(s), ...s.taps];
      const lead = await leadAView(s, [target!, ...taps]);
      const nodes = [1, 2].map((n) => byzantineNode(s, lead, n));
      await sendByzantineBatches([target!, ...taps], lead, 3);
      const [p1, p2] = await Promise.all(nodes.map((n) => propose(s.byzantine, n)));
      await Promise.all([target!.send(p1!, p2!), ...taps.map((t) => t.send(p2!))]);
      await s.log.waitFor({ event: "equivocation:detect", reason: "double-proposal", since });
      // SPECIFICATION.md 16.2: verified, stored, and logged naming the offender.
      const offender = toHex(s.byzantine.publicKey);
      await s.log.waitFor({
        event: "evidence:record",
        reason: "double-proposal",
        since,
        where: (l) => l.offender === offender && l.view === lead.view,
      });
      const page = await fetch(`${s.c.peers[TARGET]!.httpUrl}/evidence`).then((r) => r.json());
      assert.ok(
        page.records.some((r: { offender: string; view: number; kind: string }) =>
          r.offender === offender && r.view === lead.view && r.kind === "double-proposal"
        ),
        `GET /evidence: ${JSON.stringify(page).slice(0, 300)}`,
      );
      await assertCommitting(s, "the equivocation");
      const [first, second] = nodes.map((n) => toHex(nodeHash(n)));
      const votes = HONEST.map((i) => s.c.logs[i]!.votes.get(lead.view));
      assert.ok(votes[0] === undefined || votes[0] === first, `the target voted for the first`);
      for (const i of [1, 2]) {
        assert.ok([undefined, second].includes(votes[i]), `replica ${i} voted for what it got`);
      }
      const said = (v: string | undefined): string =>
        v === first ? "first" : v === second ? "second" : "none";
      console.log(
        `votes in the equivocated view ${lead.view}: ` +
          votes.map((v, i) => `replica ${i}: ${said(v)}`).join(", "),
      );
      await assertChainsAgree(s);
    },
  );
}

/** What the Byzantine validator needs to lead a view: the view, its parent and the QC on it. */
interface Leadership {
  readonly view: number;
  readonly parent: Node;
  readonly qc: QuorumCertificate;
}

/**
 * Resolves once the Byzantine validator, as the next leader, has received the three honest
 * votes of a view (and knows the Node they vote for): it may then propose in the next view.
 */
async function leadAView(s: Scene, links: readonly ByzantineLink[]): Promise<Leadership> {
  const known = new Map<string, Node>();
  const votes = new Map<string, VoteMessage[]>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await new Promise<Leadership>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error("no view to lead within 20 s")), 20_000);
      const receive = (msg: ConsensusMessage): void => {
        if (msg.type === "propose") known.set(toHex(nodeHash(msg.node)), msg.node);
        if (msg.type !== "vote") return;
        if (!bytesEqual(leaderOf(s, msg.view + 1), s.byzantine.publicKey)) return;
        const id = `${msg.view}/${toHex(msg.nodeHash)}`;
        const got = [...(votes.get(id) ?? []), msg];
        votes.set(id, got);
        const parent = known.get(toHex(msg.nodeHash));
        if (got.length < 3 || parent === undefined) return;
        const signatures = got.map((v) => ({ signer: v.signer, signature: v.signature }))
          .sort((a, b) => bytesCompare(a.signer, b.signer));
        const qc = { chainId: CHAIN, view: msg.view, nodeHash: msg.nodeHash, signatures };
        resolve({ view: msg.view + 1, parent, qc });
      };
      for (const link of links) link.onMessage = receive;
    });
  } finally {
    clearTimeout(timer);
    for (const link of links) link.onMessage = () => {};
  }
}

/** The batch that the `n`th Byzantine Node of `lead` names (one KV command). */
function byzantineBatch(lead: Leadership, n: number): Uint8Array {
  const key = new TextEncoder().encode(`byzantine-${lead.view}-${n}`);
  return encodeBatch([{
    command: encodeKvCommand({ op: "set", key, value: new Uint8Array(512) }),
    expires: lead.parent.height + 1,
  }]);
}

/**
 * The `n`th distinct Node the Byzantine validator proposes with `lead` (a valid KV Node: it names
 * {@link byzantineBatch}, which {@link sendByzantineBatches} gives the replicas first).
 */
function byzantineNode(s: Scene, lead: Leadership, n: number): Node {
  return {
    view: lead.view,
    height: lead.parent.height + 1,
    parent: nodeHash(lead.parent),
    justify: lead.qc,
    command: encodeDigests([batchDigest(byzantineBatch(lead, n))]),
    configHash: validatorConfigHash(stableConfig(s.c.validators)),
    proposer: s.byzantine.publicKey,
    stateRoot: new Uint8Array(0),
  };
}

/** Sends the batches of the Byzantine Nodes `0..count-1` of `lead` over every link, as BATCH frames. */
async function sendByzantineBatches(
  links: readonly ByzantineLink[],
  lead: Leadership,
  count: number,
): Promise<void> {
  const frames = Array.from(
    { length: count },
    (_, n) => encodeFrame(withType(FrameType.batch, byzantineBatch(lead, n))),
  );
  for (const l of links) for (const f of frames) await l.writeRaw(f);
}

/** The honest replicas' committed chains have the same hash at every common height. */
async function assertChainsAgree(s: Scene): Promise<void> {
  const urls = HONEST.map((i) => s.c.peers[i]!.httpUrl);
  const common = Math.min(...(await heights(s)));
  const chains = await Promise.all(urls.map((u) => committedHashes(u, 1, common)));
  for (const [i, chain] of chains.entries()) {
    assert.equal(chain.length, common, `replica ${HONEST[i]} serves heights 1..${common}`);
    assert.deepEqual(chain, chains[0], `replica ${HONEST[i]}'s chain is replica 0's`);
  }
}

async function floods(s: Scene): Promise<void> {
  const before = await connectionsTo(port(s));
  await s.t.step(`${FLOOD_CONNECTIONS} idle connections at once`, async () => {
    const since = s.log.seq;
    const conns = await flood(s, FLOOD_CONNECTIONS);
    const during = await connectionsTo(port(s));
    await expectLog(s, { event: "net:inbound-refused", reason: "inbound-limit", since });
    await expectLog(s, { event: "net:handshake-failed", reason: "handshake-timeout", since });
    const closed = await Promise.all(conns.map((conn) => closedByPeer(conn, 5_000)));
    assert.equal(closed.filter((x) => x).length, FLOOD_CONNECTIONS, "every one is closed");
    console.log(`connections to the target: before ${before}, during the flood ${during}`);
    await assertCommitting(s, "the connection flood");
    s.memory.set("after the idle flood", rss());
  });
  for (const round of [1, 2]) {
    await s.t.step(
      `${FLOOD_CONNECTIONS} connections sending 64 KiB of garbage each (round ${round})`,
      async () => {
        const since = s.log.seq;
        const garbage = randomBytes(64 * 1024);
        garbage[0]! |= 0x80; // a length header of 2 GiB or more
        const conns = await flood(s, FLOOD_CONNECTIONS, { payload: () => garbage });
        const closed = await Promise.all(conns.map((conn) => closedByPeer(conn, 5_000)));
        assert.equal(closed.filter((x) => x).length, FLOOD_CONNECTIONS, "every one is closed");
        const reasons = new Set(
          s.log.filter((l) => l.event === "net:handshake-failed", since).map((l) => l.reason),
        );
        // The log keeps 20 lines per event and reason per 10 s: round 2's are counted, not shown.
        if (round === 1) assert.ok(reasons.has("frame-too-large"), `reasons: ${[...reasons]}`);
        await assertCommitting(s, "the garbage flood");
        s.memory.set(`after garbage flood ${round}`, rss());
      },
    );
  }
  // A second flood reuses what the first one grew: memory does not grow with the attack.
  const again = s.memory.get("after garbage flood 2")! - s.memory.get("after garbage flood 1")!;
  assert.ok(again < RSS_REPEAT_GROWTH_MAX, `the second garbage flood grew rss by ${mib(again)}`);
  await bigFrames(s);
  await s.t.step("memory and connections are back within bounds", async () => {
    s.memory.set("at the end", rss());
    console.log(`rss: ${[...s.memory].map(([k, v]) => `${k} ${mib(v)}`).join(", ")}`);
    const growth = Math.max(...s.memory.values()) - s.memory.get("before the attacks")!;
    assert.ok(growth < RSS_GROWTH_MAX, `rss grew by ${mib(growth)} (bound ${mib(RSS_GROWTH_MAX)})`);
    await connectionsBackToNormal(s, before);
  });
}

async function bigFrames(s: Scene): Promise<void> {
  await s.t.step(
    `${BIG_FRAMES} proposals of 4 MiB with bad signatures from the Byzantine validator`,
    async () => {
      const since = s.log.seq;
      const link = await targetLink(s);
      const node = proposal(s, targetView(s) + 1, new Uint8Array(4 * 1024 * 1024 - 64));
      const frame = messageFrame({ type: "propose", node, tc: null, signature: randomBytes(64) });
      let peak = rss();
      const sampler = setInterval(() => peak = Math.max(peak, rss()), 25);
      try {
        for (let i = 0; i < BIG_FRAMES; i++) await link.writeRaw(frame);
        const reason = "bad-signature";
        await expectLog(s, { event: "message:reject", reason, since, fromByzantine: true });
        await assertCommitting(s, "the big frames");
      } finally {
        clearInterval(sampler);
      }
      s.memory.set("peak during the big frames", peak);
    },
  );
}

async function connectionsBackToNormal(s: Scene, before: number | null): Promise<void> {
  if (before !== null) {
    const now = async (): Promise<number> => (await connectionsTo(port(s)))!;
    await waitUntil(
      "connections to the target are back to where they were",
      async () => (await now()) <= before + 2,
      10_000,
    ).catch(async (e) => {
      throw new Error(`${e.message}: before ${before}, now ${await now()}`);
    });
    console.log(`connections to the target: at the end ${await now()}`);
  }
  // Every inbound slot the floods took is free again: 250 new connections are all served.
  const served = await Promise.all((await flood(s, 250)).map(async (conn) => {
    const got = await new FramedConn(conn).next().catch(() => null);
    conn.close();
    return got !== null && decodeHello(got).ok;
  }));
  assert.equal(served.filter((x) => x).length, 250, "250 new connections each get a HELLO");
  const peers = s.c.replicas[TARGET]!.status().peers as Array<
    { publicKey: string; connected: boolean }
  >;
  for (const i of [1, 2]) {
    const p = peers.find((x) => x.publicKey === toHex(key(s, i)));
    assert.ok(p?.connected === true, `the target is still connected to replica ${i}`);
  }
}

async function noFailureNoDoubleVote(s: Scene): Promise<void> {
  await s.t.step("no honest replica failed or signed two different votes in one view", () => {
    for (const i of HONEST) {
      const log = s.c.logs[i]!;
      assert.equal(s.c.replicas[i]!.failure, null, `replica ${i} has no Engine failure`);
      assert.equal(log.filter((l) => l.level === "fatal", 0).length, 0, `replica ${i}: no fatal`);
      assert.ok(log.votes.size > 10, `replica ${i} voted (${log.votes.size} views)`);
      assert.deepEqual(log.doubleVotes, [], `replica ${i} never voted twice in a view`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The scenario

/** Runs `body` with 3 honest replicas and the Byzantine validator's key; cleans up after. */
async function withScene(t: Deno.TestContext, body: (s: Scene) => Promise<void>): Promise<void> {
  const c = await startInProcessCluster({
    chainId: CHAIN,
    validators: 4,
    run: [...HONEST],
    network: LIMITS,
    // The Byzantine key leads its views of the plain schedule: with reputation it would never
    // vote, drop out of the window and lead only probation views (SPECIFICATION.md 3.5).
    reputation: null,
  });
  const s: Scene = {
    t,
    c,
    log: c.logs[TARGET]!,
    byzantine: c.signers[BYZANTINE]!,
    realQC: null,
    taps: [],
    link: null,
    captured: [],
    memory: new Map(),
  };
  try {
    await waitUntil(
      "the cluster commits",
      async () => (await heights(s)).every((h) => h >= 3),
      20_000,
    );
    await body(s);
  } finally {
    const links = [...s.taps, ...(s.link === null ? [] : [s.link])];
    for (const l of links) l.close();
    await Promise.all(links.map((l) => l.ended));
    await c.close();
  }
}

Deno.test(
  "hostile peers: 3 honest replicas + a Byzantine validator's key; garbage, bad handshakes, forged certificates, stale/future views, replays and floods are each rejected with a reason while the cluster keeps committing",
  (t) =>
    withScene(t, async (s) => {
      s.memory.set("before the attacks", rss());
      await rawBytes(s);
      await badHandshakes(s);
      await listen(s);
      await badMessages(s);
      await badFramesAfterHandshake(s);
      await replays(s);
      await equivocate(s);
      await floods(s);
      await noFailureNoDoubleVote(s);
    }),
);

/** Distinct Nodes the Byzantine validator proposes for one view it led. */
const PAST_VIEW_NODES = 100;

Deno.test(
  `a Byzantine leader sends ${PAST_VIEW_NODES} different Nodes for a view it led, after that view: each replica stores at most two of them (Spec 4.1 step 4), and no Node of an abandoned branch stays in storage below the committed head`,
  (t) =>
    withScene(t, async (s) => {
      await listen(s);
      const links = [await targetLink(s), ...s.taps];
      const lead = await leadAView(s, links);
      await sendByzantineBatches(links, lead, PAST_VIEW_NODES);
      const proposals = await Promise.all(
        Array.from({ length: PAST_VIEW_NODES }, (_, n) =>
          propose(s.byzantine, byzantineNode(s, lead, n))),
      );
      await Promise.all(links.map((l) =>
        l.send(...proposals.slice(0, 2))
      ));
      const view = (i: number): number => s.c.replicas[i]!.engine.core.view;
      await waitUntil(
        "the honest replicas two views past the Byzantine one's",
        () => HONEST.every((i) => view(i) >= lead.view + 2),
        15_000,
      );
      const root = s.c.replicas[TARGET]!.engine.core.tree.root.node.height;
      await Promise.all(links.map((l) => l.send(...proposals.slice(2))));
      await assertCommitting(s, "the past-view Nodes", 6);
      const stored = await Promise.all(HONEST.map((i) => storedNodes(s.c, i)));
      console.log(
        `view ${lead.view} (parent at height ${lead.parent.height}, committed head ${root} ` +
          `when the rest were sent): ` +
          stored.map((st, i) =>
            `replica ${i} stored ${st.filter((n) => n.view === lead.view).length} of its Nodes, ` +
            `${st.filter((n) => n.orphan).length} orphans`
          ).join("; "),
      );
      await s.t.step("each replica stores at most two Nodes of the view", () => {
        for (const [i, st] of stored.entries()) {
          const n = st.filter((x) => x.view === lead.view).length;
          assert.ok(n <= 2, `replica ${i} executed and stored ${n} Nodes of view ${lead.view}`);
        }
      });
      await s.t.step("no Node below the committed head is left in the uncommitted index", () => {
        for (const [i, st] of stored.entries()) {
          const orphans = st.filter((x) => x.orphan);
          assert.equal(orphans.length, 0, `replica ${i} keeps ${orphans.length} abandoned Nodes`);
        }
      });
    }),
);

/**
 * Every Node in replica `i`'s store (read through a second Deno KV handle): its view and whether
 * it is an orphan (uncommitted, at or below the committed head: on a branch that can never
 * commit).
 */
async function storedNodes(
  c: InProcessCluster,
  i: number,
): Promise<Array<{ view: number; orphan: boolean }>> {
  const kv = await DenoKvStorage.open(c.kvPath(i));
  try {
    const head = (await kv.committedHead())?.height ?? 0;
    const out = (await kv.uncommittedNodes()).map((n) => ({
      view: n.node.view,
      orphan: n.node.height <= head,
    }));
    for (let h = 1; h <= head; h++) {
      const hash = await kv.committedHash(h);
      const stored = hash === null ? null : await kv.getNode(hash);
      if (stored !== null) out.push({ view: stored.node.view, orphan: false });
    }
    return out;
  } finally {
    await kv.close();
  }
}
