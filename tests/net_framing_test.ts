/**
 * Unit tests of src/net/framing.ts: length-prefixed frames, their limits and timeouts.
 * Loopback TCP only; every socket and timer a test opens is closed before it ends.
 */
import {
  encodeFrame,
  encodeFrames,
  FramedConn,
  FrameError,
  FrameReader,
  streamSource,
} from "../src/net/framing.ts";
import { assert, assertEquals } from "./support/assert.ts";

async function assertFrameError(
  promise: Promise<unknown>,
  reason: string,
): Promise<FrameError> {
  try {
    await promise;
  } catch (e) {
    assert(e instanceof FrameError, `expected a FrameError, got ${e}`);
    assertEquals(e.reason, reason, "frame error reason");
    return e;
  }
  throw new Error(`expected FrameError ${reason}, but the read succeeded`);
}

/** A connected loopback pair. */
async function tcpPair(): Promise<{ server: Deno.TcpConn; client: Deno.TcpConn }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      listener.accept(),
    ]);
    return { server, client };
  } finally {
    listener.close();
  }
}

function bytesOf(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** A stream that yields `bytes` in pieces of `pieceBytes`. */
function chunked(bytes: Uint8Array, pieceBytes: number): ReadableStream<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += pieceBytes) {
    pieces.push(bytes.slice(i, i + pieceBytes));
  }
  return ReadableStream.from(pieces);
}

Deno.test("framing: frames round-trip through a stream in any chunking, sizes 0 to 200 KB", async () => {
  const small = [bytesOf(0, 1), bytesOf(1, 2), bytesOf(300, 3)];
  const all = [...small, bytesOf(200_000, 4)];
  const cases: [Uint8Array[], number][] = [[small, 1], [small, 3], [all, 4096], [all, 1 << 20]];
  for (const [payloads, pieceBytes] of cases) {
    const wire = encodeFrames(payloads);
    const reader = new FrameReader(streamSource(chunked(wire, pieceBytes)), {
      readBufferBytes: 64,
    });
    for (const p of payloads) {
      assertEquals(await reader.next(), p, `payload of ${p.length} bytes, pieces ${pieceBytes}`);
    }
    assertEquals(await reader.next(), null, "clean end of stream");
  }
});

Deno.test("framing: frames round-trip over loopback TCP in both directions", async () => {
  const { server, client } = await tcpPair();
  const a = new FramedConn(server);
  const b = new FramedConn(client);
  try {
    const big = bytesOf(1_000_000, 9);
    await Promise.all([a.writeBatch([bytesOf(5, 1), big]), b.write(bytesOf(7, 2))]);
    assertEquals(await b.next(), bytesOf(5, 1), "small frame a -> b");
    assertEquals(await b.next(), big, "1 MB frame a -> b");
    assertEquals(await a.next(), bytesOf(7, 2), "frame b -> a");
    assertEquals(a.remoteAddress, b.localAddress, "addresses match");
    b.close();
    assertEquals(await a.next(), null, "peer closed between frames: clean end");
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("framing: a 4 GiB header is refused before anything is allocated, and the connection closed", async () => {
  const { server, client } = await tcpPair();
  const io = new FramedConn(server);
  try {
    const external = Deno.memoryUsage().external;
    await client.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    const e = await assertFrameError(io.next(), "frame-too-large");
    assert(e.message.includes("4294967295"), `message names the size: ${e.message}`);
    const grown = Deno.memoryUsage().external - external;
    assert(grown < 16 * 1024 * 1024, `no large allocation (external memory grew ${grown} bytes)`);
    assert(io.closed, "the reader closed the connection");
    // The stream is out of step: every later read fails the same way.
    await assertFrameError(io.next(), "frame-too-large");
    const got = await client.read(new Uint8Array(16)).catch(() => null);
    assertEquals(got, null, "the client sees the connection closed");
  } finally {
    io.close();
    client.close();
  }
});

Deno.test("framing: a header above a tighter per-read limit is refused (handshake limit)", async () => {
  const wire = encodeFrame(bytesOf(2000, 1));
  const reader = new FrameReader(streamSource(ReadableStream.from([wire])));
  await assertFrameError(reader.next(1024), "frame-too-large");
});

Deno.test("framing: a stream that ends inside the header or the payload is truncated-frame", async () => {
  const wire = encodeFrame(bytesOf(100, 1));
  for (const cut of [2, 4, 50, wire.length - 1]) {
    const reader = new FrameReader(streamSource(chunked(wire.slice(0, cut), 7)));
    const e = await assertFrameError(reader.next(), "truncated-frame");
    assert(e.message.includes("end of stream"), `message says why: ${e.message}`);
  }
});

Deno.test("framing: a slow-drip sender is dropped after readIdleTimeoutMs (read-timeout)", async () => {
  const { server, client } = await tcpPair();
  const io = new FramedConn(server, { readIdleTimeoutMs: 150 });
  // The header announces 100 bytes; one byte follows every 20 ms, far too slowly.
  await client.write(new Uint8Array([0, 0, 0, 100]));
  let dripping = true;
  const drip = (async () => {
    while (dripping) {
      await new Promise((r) => setTimeout(r, 20));
      if (!dripping) break;
      await client.write(new Uint8Array([1])).catch(() => (dripping = false));
    }
  })();
  try {
    const started = performance.now();
    await assertFrameError(io.next(), "read-timeout");
    const took = performance.now() - started;
    assert(took >= 140 && took < 1000, `timed out after ~150 ms, took ${took}`);
    assert(io.closed, "the connection is closed");
  } finally {
    dripping = false;
    await drip;
    io.close();
    client.close();
  }
});

Deno.test("framing: an idle connection times out too (read-timeout)", async () => {
  const { server, client } = await tcpPair();
  const io = new FramedConn(server, { readIdleTimeoutMs: 50 });
  try {
    await assertFrameError(io.next(), "read-timeout");
  } finally {
    io.close();
    client.close();
  }
});

Deno.test("framing: the writer refuses payloads above frameBytesMax", () => {
  let error: unknown;
  try {
    encodeFrame(new Uint8Array(1025), 1024);
  } catch (e) {
    error = e;
  }
  assert(error instanceof FrameError && error.reason === "frame-too-large", "refused");
  assertEquals(Array.from(encodeFrame(new Uint8Array([9]))), [0, 0, 0, 1, 9], "layout");
});
