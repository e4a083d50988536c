/**
 * Encrypted consensus links (src/net/link_cipher.ts, handshake version 2) against a
 * man-in-the-middle relay on loopback: it sees every byte between two replicas and may change,
 * add or replace them. Each attack is also run on plaintext links, where it succeeds, so the
 * tests can fail.
 */
import { encodeMessage, signedBytes } from "../src/codec.ts";
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import type { ConsensusMessage, VoteMessage } from "../src/types.ts";
import { SignatureDomain } from "../src/types.ts";
import { ValidatorSet } from "../src/validators.ts";
import { encodeFrames, FrameType } from "../src/net/framing.ts";
import { ConsensusTcp } from "../src/net/tcp.ts";
import { deriveLinkCipher, generateEphemeralKey } from "../src/net/link_cipher.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { sleep, waitUntil } from "./support/cluster.ts";

const CHAIN = "cipher-test";
const HOST = "127.0.0.1";
const alice = ed25519Signer(deriveSecretKey("alice"));
const bob = ed25519Signer(deriveSecretKey("bob"));
const validators = new ValidatorSet(
  [alice, bob].map((s) => ({ publicKey: s.publicKey, power: 1 })),
);

/** What the relay does to the bytes from the dialer (alice) to the listener (bob). */
type Tamper = (chunk: Uint8Array, index: number) => Uint8Array;

/** A TCP relay: records both directions and may rewrite alice-to-bob chunks or inject bytes. */
class Relay {
  readonly toBob: Uint8Array[] = [];
  readonly toAlice: Uint8Array[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #conns: Deno.TcpConn[] = [];
  readonly #tasks: Promise<void>[] = [];
  #bobSide: Deno.TcpConn | null = null;

  constructor(target: number, tamper: Tamper = (c) => c) {
    this.#listener = Deno.listen({ hostname: HOST, port: 0 });
    this.#tasks.push(this.#accept(target, tamper));
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /** Writes `bytes` to bob as if alice had sent them. */
  async inject(bytes: Uint8Array): Promise<void> {
    assert(this.#bobSide !== null, "relay connected");
    await this.#bobSide.write(bytes);
  }

  /** Whether `needle` occurs in what the relay saw, either way. */
  saw(needle: Uint8Array): boolean {
    return [...this.toBob, ...this.toAlice].some((c) => indexOf(c, needle) >= 0) ||
      indexOf(concat([...this.toBob]), needle) >= 0 ||
      indexOf(concat([...this.toAlice]), needle) >= 0;
  }

  async close(): Promise<void> {
    this.#listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
    await Promise.allSettled(this.#tasks);
  }

  async #accept(target: number, tamper: Tamper): Promise<void> {
    for (;;) {
      let a: Deno.TcpConn;
      try {
        a = await this.#listener.accept();
      } catch {
        return;
      }
      const b = await Deno.connect({ hostname: HOST, port: target });
      this.#conns.push(a, b);
      this.#bobSide = b;
      this.#tasks.push(pump(a, b, this.toBob, tamper), pump(b, a, this.toAlice, (c) => c));
    }
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn, record: Uint8Array[], tamper: Tamper) {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (let i = 0;; i++) {
      const n = await from.read(buf);
      if (n === null) break;
      const chunk = buf.slice(0, n);
      record.push(chunk);
      const out = tamper(chunk, i);
      for (let at = 0; at < out.length;) at += await to.write(out.subarray(at));
    }
  } catch {
    // Either side closed.
  }
  try {
    to.close();
  } catch {
    // Already closed.
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

async function voteWith(hash: Uint8Array, view = 5): Promise<VoteMessage> {
  return {
    type: "vote",
    view,
    nodeHash: hash,
    signer: alice.publicKey,
    signature: await alice.sign(signedBytes(SignatureDomain.vote, CHAIN, view, hash)),
  };
}

interface Scene {
  a: ConsensusTcp;
  b: ConsensusTcp;
  relay: Relay;
  inbox: ConsensusMessage[];
  log: Array<{ event: string; reason: unknown }>;
}

/** bob listens; alice dials bob through the relay. */
async function scene(encryptLinks: boolean, tamper?: Tamper): Promise<Scene> {
  const inbox: ConsensusMessage[] = [];
  const log: Scene["log"] = [];
  const common = {
    chainId: CHAIN,
    verifier: ed25519Verifier(),
    validators,
    encryptLinks,
    dialBackoffMinMs: 5_000, // one dial per test: a redial would muddle what the relay saw
    dialBackoffMaxMs: 5_000,
  };
  const b = new ConsensusTcp({
    ...common,
    signer: bob,
    listen: { hostname: HOST, port: 0 },
    peers: [],
    log: (event, fields) => log.push({ event, reason: fields.reason }),
  });
  b.onMessage((_, msg) => inbox.push(msg));
  await b.start();
  const relay = new Relay(b.port, tamper);
  const a = new ConsensusTcp({
    ...common,
    signer: alice,
    listen: { hostname: HOST, port: 0 },
    peers: [{ publicKey: bob.publicKey, hostname: HOST, port: relay.port }],
    log: () => {},
  });
  await a.start();
  return { a, b, relay, inbox, log };
}

async function end(s: Scene): Promise<void> {
  await s.a.close();
  await s.b.close();
  await s.relay.close();
}

function connected(s: Scene): boolean {
  return s.b.status().some((p) => p.connected);
}

function messageFrame(msg: ConsensusMessage): Uint8Array {
  const body = encodeMessage(msg);
  const frame = new Uint8Array(1 + body.length);
  frame[0] = FrameType.message;
  frame.set(body, 1);
  return encodeFrames([frame]);
}

// ---------------------------------------------------------------------------------------------

for (const encrypt of [true, false]) {
  const mode = encrypt ? "encrypted" : "plaintext";
  Deno.test(`${mode} link through a relay: the relay ${encrypt ? "cannot" : "can"} read a vote`, async () => {
    const s = await scene(encrypt);
    try {
      await waitUntil("connected through the relay", () => connected(s), 5_000);
      const marker = crypto.getRandomValues(new Uint8Array(32));
      const vote = await voteWith(marker);
      s.a.send(bob.publicKey, vote);
      await waitUntil("vote delivered", () => s.inbox.length > 0, 5_000);
      assertEquals(s.inbox[0]!.type, "vote", "the vote arrived");
      // The relay saw the whole conversation; the vote's Node hash is in it only in the clear.
      assertEquals(s.relay.saw(marker), !encrypt, "the relay saw the Node hash");
      assertEquals(s.relay.saw(vote.signature), !encrypt, "the relay saw the signature");
    } finally {
      await end(s);
    }
  });

  Deno.test(`${mode} link through a relay: an injected vote is ${encrypt ? "refused and the link closed" : "delivered"}`, async () => {
    const s = await scene(encrypt);
    try {
      await waitUntil("connected through the relay", () => connected(s), 5_000);
      const forged = await voteWith(new Uint8Array(32).fill(9), 7);
      await s.relay.inject(messageFrame(forged));
      if (encrypt) {
        await waitUntil(
          "decrypt-failed logged",
          () => s.log.some((e) => e.reason === "decrypt-failed"),
          5_000,
        );
        await sleep(100);
        assertEquals(s.inbox.length, 0, "messages delivered");
      } else {
        await waitUntil("injected vote delivered", () => s.inbox.length > 0, 5_000);
        assertEquals((s.inbox[0] as VoteMessage).view, 7, "the injected vote's view");
      }
    } finally {
      await end(s);
    }
  });
}

Deno.test("encrypted link: a relay that flips a bit of a sealed frame gets the link closed, nothing delivered", async () => {
  // Chunk 0 is alice's HELLO and chunk 1 her PROOF (each one write); later ones are sealed.
  const s = await scene(true, (chunk, i) => {
    if (i < 2) return chunk;
    const out = chunk.slice();
    out[out.length - 1]! ^= 1;
    return out;
  });
  try {
    await waitUntil("connected through the relay", () => connected(s), 5_000);
    s.a.send(bob.publicKey, await voteWith(new Uint8Array(32).fill(3)));
    await waitUntil(
      "decrypt-failed logged",
      () => s.log.some((e) => e.reason === "decrypt-failed"),
      5_000,
    );
    assertEquals(s.inbox.length, 0, "messages delivered");
  } finally {
    await end(s);
  }
});

Deno.test("encrypted link: a relay that replaces alice's ephemeral key fails the handshake (bad-signature)", async () => {
  // The ephemeral key is the last 32 bytes of the HELLO frame, alice's first write.
  const s = await scene(true, (chunk, i) => {
    if (i !== 0) return chunk;
    const out = chunk.slice();
    out.set(crypto.getRandomValues(new Uint8Array(32)), out.length - 32);
    return out;
  });
  try {
    await waitUntil(
      "bad-signature logged",
      () => s.log.some((e) => e.reason === "bad-signature"),
      5_000,
    );
    assert(!connected(s), "no link with a substituted key");
  } finally {
    await end(s);
  }
});

Deno.test("encrypted and plaintext replicas refuse each other: link-mode-mismatch", async () => {
  const log: string[] = [];
  const common = { chainId: CHAIN, verifier: ed25519Verifier(), validators };
  const b = new ConsensusTcp({
    ...common,
    signer: bob,
    listen: { hostname: HOST, port: 0 },
    peers: [],
    log: (_, f) => log.push(String(f.reason)),
  });
  await b.start();
  const a = new ConsensusTcp({
    ...common,
    signer: alice,
    encryptLinks: false,
    listen: { hostname: HOST, port: 0 },
    peers: [{ publicKey: bob.publicKey, hostname: HOST, port: b.port }],
    log: () => {},
  });
  await a.start();
  try {
    await waitUntil("mismatch logged", () => log.includes("link-mode-mismatch"), 5_000);
    assert(!b.status().some((p) => p.connected), "no link");
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("link cipher: each direction has its own key; a frame opens once, in order, on the other side only", async () => {
  const ea = await generateEphemeralKey();
  const eb = await generateEphemeralKey();
  const n = (x: number) => new Uint8Array(32).fill(x);
  const ab = await deriveLinkCipher({
    chainId: CHAIN,
    own: ea,
    peerEphemeral: eb.publicKey,
    ownKey: alice.publicKey,
    peerKey: bob.publicKey,
    ownNonce: n(1),
    peerNonce: n(2),
  });
  const ba = await deriveLinkCipher({
    chainId: CHAIN,
    own: eb,
    peerEphemeral: ea.publicKey,
    ownKey: bob.publicKey,
    peerKey: alice.publicKey,
    ownNonce: n(2),
    peerNonce: n(1),
  });
  const first = await ab.seal(new Uint8Array([1, 2, 3]));
  const second = await ab.seal(new Uint8Array([1, 2, 3]));
  assert(indexOf(first, second) < 0, "same payload, different ciphertexts");
  // Out of order: the second frame does not open as the first.
  const reordered = await ba.open(second).then(() => "opened", (e) => e.reason);
  assertEquals(reordered, "decrypt-failed", "reordered frame");
  // A frame sent by alice does not open as one of bob's own (reflection).
  const reflected = await ab.open(first).then(() => "opened", (e) => e.reason);
  assertEquals(reflected, "decrypt-failed", "reflected frame");
  // A low-order ephemeral key (all zeros) is refused.
  const zero = await deriveLinkCipher({
    chainId: CHAIN,
    own: ea,
    peerEphemeral: new Uint8Array(32),
    ownKey: alice.publicKey,
    peerKey: bob.publicKey,
    ownNonce: n(1),
    peerNonce: n(2),
  }).then(() => "derived", (e) => e.reason);
  assertEquals(zero, "bad-key-exchange", "all-zero ephemeral key");
});
