/**
 * Tests of the NodeTree HTTP API (src/net/http.ts) against a fake NodeTreeView holding a short
 * chain of real Nodes: every route in JSON and CBOR, every kind of bad parameter, body limits,
 * handler failures and timeouts. Servers listen on 127.0.0.1 with OS-chosen ports; every server,
 * timer and response body is closed.
 */
import {
  decodeNode,
  decodeQC,
  decodeValue,
  genesisNode,
  genesisQC,
  nodeHash,
} from "../src/codec.ts";
import { ConfigError, HotStuffError } from "../src/errors.ts";
import {
  errorResponse,
  type HttpApiOptions,
  NodeTreeHttpApi,
  type NodeTreeView,
  type NodeWithCertificate,
  readBodyLimited,
} from "../src/net/http.ts";
import type { Node, QuorumCertificate } from "../src/types.ts";
import { bytesEqual, toHex } from "../src/types.ts";
import { assert, assertEquals } from "./support/assert.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

async function assertRejects(
  f: () => Promise<unknown>,
  check: (e: unknown) => boolean,
  message: string,
): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (check(e)) return;
    throw new Error(`${message}: wrong error ${String(e)}`);
  }
  throw new Error(`${message}: did not throw`);
}

const CHAIN = "http-test";
const HOST = "127.0.0.1";
const utf8 = new TextEncoder();

function fakeQC(view: number, hash: Uint8Array): QuorumCertificate {
  return {
    chainId: CHAIN,
    view,
    nodeHash: hash,
    signatures: [{ signer: new Uint8Array(32).fill(7), signature: new Uint8Array(64).fill(9) }],
  };
}

/** Nodes of heights 1..n on top of genesis; Node h carries the (fake) QC of Node h-1. */
function buildChain(n: number): Node[] {
  const nodes: Node[] = [];
  let parent = nodeHash(genesisNode(CHAIN));
  let justify = genesisQC(CHAIN);
  for (let h = 1; h <= n; h++) {
    const node: Node = {
      view: h + 1,
      height: h,
      parent,
      justify,
      command: utf8.encode(`set k${h}=v${h}`),
      configHash: new Uint8Array(32),
      proposer: new Uint8Array(32).fill(h),
      stateRoot: new Uint8Array(0),
    };
    nodes.push(node);
    parent = nodeHash(node);
    justify = fakeQC(node.view, parent);
  }
  return nodes;
}

/** A NodeTree of 6 Nodes, 1..4 committed; the tip (6) has no certificate yet. */
class FakeView implements NodeTreeView {
  readonly nodes: Node[] = buildChain(6);
  readonly committedHeight = 4;
  statusThrows = false;

  status(): Record<string, unknown> {
    if (this.statusThrows) throw new Error("status exploded");
    const head = this.nodes[this.committedHeight - 1]!;
    return {
      view: 8,
      leader: toHex(new Uint8Array(32).fill(3)),
      committed: { height: head.height, hash: toHex(nodeHash(head)) },
      peers: [],
    };
  }

  withCertificate(node: Node): NodeWithCertificate {
    const child = this.nodes[node.height];
    return {
      node,
      hash: nodeHash(node),
      certificate: child === undefined ? null : child.justify,
      committed: node.height <= this.committedHeight,
    };
  }

  nodeByHash(hash: Uint8Array): Promise<NodeWithCertificate | null> {
    const node = this.nodes.find((n) => bytesEqual(nodeHash(n), hash));
    return Promise.resolve(node === undefined ? null : this.withCertificate(node));
  }

  committedRange(fromHeight: number, toHeight: number): Promise<NodeWithCertificate[]> {
    const hi = Math.min(toHeight, this.committedHeight);
    const out = this.nodes.filter((n) => n.height >= fromHeight && n.height <= hi);
    return Promise.resolve(out.map((n) => this.withCertificate(n)));
  }

  chainFrom(fromHeight: number, limit: number): Promise<Node[]> {
    return Promise.resolve(this.nodes.filter((n) => n.height >= fromHeight).slice(0, limit));
  }
}

interface Api {
  readonly base: string;
  readonly view: FakeView;
  readonly logs: { event: string; fields: Record<string, unknown> }[];
}

/** Runs `body` against a started API with a fresh FakeView; always closes the server. */
async function withApi(
  options: Partial<HttpApiOptions>,
  body: (api: Api) => Promise<void>,
): Promise<void> {
  const view = new FakeView();
  const logs: Api["logs"] = [];
  const server = new NodeTreeHttpApi({
    hostname: HOST,
    port: 0,
    view,
    rangeMax: 8,
    log: (event, fields) => logs.push({ event, fields }),
    // These tests are about the routes; admission has its own tests (net_admission_test.ts).
    admission: { clientReadRate: 1e6, clientReadBurst: 1e6, readRate: 1e6, readBurst: 1e6 },
    ...options,
  });
  await server.start();
  try {
    await body({ base: `http://${HOST}:${server.port}`, view, logs });
  } finally {
    await server.close();
  }
}

interface Answer {
  readonly status: number;
  readonly type: string;
  readonly headers: Headers;
  readonly bytes: Uint8Array;
}

/** One request; the body is always read to its end. */
async function request(base: string, path: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${base}${path}`, init);
  const bytes = new Uint8Array(await res.arrayBuffer());
  return {
    status: res.status,
    type: res.headers.get("content-type") ?? "",
    headers: res.headers,
    bytes,
  };
}

function json(answer: Answer): unknown {
  assert(answer.type.startsWith("application/json"), `JSON answer, got ${answer.type}`);
  return JSON.parse(new TextDecoder().decode(answer.bytes));
}

function cbor(answer: Answer): unknown {
  assertEquals(answer.type, "application/cbor", "CBOR content type");
  return decodeValue(answer.bytes);
}

const CBOR = { headers: { accept: "application/cbor" } };

function fromBase64(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

/** Checks a CBOR `[node bytes, qc bytes | null, committed]` triple against `expected`. */
function checkTriple(value: unknown, expected: NodeWithCertificate, what: string): void {
  assert(Array.isArray(value) && value.length === 3, `${what}: a triple`);
  const node = decodeNode(value[0] as Uint8Array);
  assert(node.ok, `${what}: the Node decodes`);
  assert(bytesEqual(nodeHash(node.value), expected.hash), `${what}: the same Node`);
  if (expected.certificate === null) {
    assertEquals(value[1], null, `${what}: no certificate`);
  } else {
    const qc = decodeQC(value[1] as Uint8Array);
    assert(qc.ok, `${what}: the QC decodes`);
    assert(bytesEqual(qc.value.nodeHash, expected.hash), `${what}: the QC certifies the Node`);
    assertEquals(qc.value.view, expected.certificate.view, `${what}: QC view`);
  }
  assertEquals(value[2], expected.committed, `${what}: committed`);
}

/** Checks the JSON form of a Node with its certificate. */
function checkJson(value: unknown, expected: NodeWithCertificate, what: string): void {
  const v = value as {
    node: Record<string, unknown> & { justify: Record<string, unknown> };
    certificate: Record<string, unknown> | null;
    committed: boolean;
  };
  const n = expected.node;
  assertEquals(v.node.hash, toHex(expected.hash), `${what}: hash`);
  assertEquals(v.node.view, n.view, `${what}: view`);
  assertEquals(v.node.height, n.height, `${what}: height`);
  assertEquals(v.node.parent, toHex(n.parent), `${what}: parent`);
  assertEquals(v.node.proposer, toHex(n.proposer), `${what}: proposer`);
  assertEquals(v.node.commandBytes, n.command.length, `${what}: command length`);
  assert(bytesEqual(fromBase64(v.node.command as string), n.command), `${what}: command`);
  assertEquals(v.node.justify, {
    view: n.justify.view,
    nodeHash: toHex(n.justify.nodeHash),
    signers: n.justify.signatures.map((s) => toHex(s.signer)),
  }, `${what}: justify`);
  const c = expected.certificate;
  assertEquals(
    v.certificate,
    c === null ? null : {
      view: c.view,
      nodeHash: toHex(c.nodeHash),
      signers: c.signatures.map((s) => toHex(s.signer)),
    },
    `${what}: certificate`,
  );
  assertEquals(v.committed, expected.committed, `${what}: committed`);
}

function hashOf(view: FakeView, height: number): string {
  return toHex(nodeHash(view.nodes[height - 1]!));
}

// ---------------------------------------------------------------------------------------------
// Routes

Deno.test("http: GET /status answers the view's status as JSON", async () => {
  await withApi({}, async ({ base, view }) => {
    const a = await request(base, "/status");
    assertEquals(a.status, 200, "status");
    const { http, ...rest } = json(a) as Record<string, unknown>;
    assertEquals(rest, view.status(), "body");
    assertEquals((http as { admitted: { read: number } }).admitted.read, 1, "admission counters");
  });
});

Deno.test("http: GET /nodes/{hash} answers JSON by default, for committed and tip Nodes", async () => {
  await withApi({}, async ({ base, view }) => {
    for (const height of [1, 4, 5, 6]) {
      const a = await request(base, `/nodes/${hashOf(view, height)}`);
      assertEquals(a.status, 200, `status of height ${height}`);
      checkJson(json(a), view.withCertificate(view.nodes[height - 1]!), `height ${height}`);
    }
  });
});

Deno.test("http: GET /nodes/{hash} accepts upper-case hex", async () => {
  await withApi({}, async ({ base, view }) => {
    const a = await request(base, `/nodes/${hashOf(view, 2).toUpperCase()}`);
    assertEquals(a.status, 200, "status");
    checkJson(json(a), view.withCertificate(view.nodes[1]!), "height 2");
  });
});

Deno.test("http: GET /nodes/{hash} with Accept: application/cbor answers the CBOR triple", async () => {
  await withApi({}, async ({ base, view }) => {
    for (const height of [3, 6]) {
      const a = await request(base, `/nodes/${hashOf(view, height)}`, CBOR);
      assertEquals(a.status, 200, "status");
      checkTriple(cbor(a), view.withCertificate(view.nodes[height - 1]!), `height ${height}`);
    }
  });
});

Deno.test("http: Accept negotiation: q=0 refuses CBOR, a list with CBOR in it gets CBOR", async () => {
  await withApi({}, async ({ base, view }) => {
    const path = `/nodes/${hashOf(view, 1)}`;
    const refused = await request(base, path, { headers: { accept: "application/cbor;q=0" } });
    assert(refused.type.startsWith("application/json"), "q=0: JSON");
    const listed = await request(base, path, {
      headers: { accept: "text/html, Application/CBOR; q=0.5" },
    });
    assertEquals(listed.type, "application/cbor", "listed: CBOR");
    assertEquals(listed.headers.get("vary"), "accept", "Vary header");
  });
});

Deno.test("http: GET /nodes/{hash} of an unknown Node is 404 not-found", async () => {
  await withApi({}, async ({ base }) => {
    const a = await request(base, `/nodes/${"ab".repeat(32)}`);
    assertEquals(a.status, 404, "status");
    assertEquals((json(a) as { reason: string }).reason, "not-found", "reason");
  });
});

Deno.test("http: GET /committed answers the committed Nodes of an inclusive range, JSON and CBOR", async () => {
  await withApi({}, async ({ base, view }) => {
    const a = await request(base, "/committed?from=2&to=3");
    assertEquals(a.status, 200, "status");
    const list = json(a) as unknown[];
    assertEquals(list.length, 2, "two Nodes");
    checkJson(list[0], view.withCertificate(view.nodes[1]!), "height 2");
    checkJson(list[1], view.withCertificate(view.nodes[2]!), "height 3");

    const c = cbor(await request(base, "/committed?from=1&to=4", CBOR)) as unknown[];
    assertEquals(c.length, 4, "four Nodes");
    c.forEach((t, i) => checkTriple(t, view.withCertificate(view.nodes[i]!), `height ${i + 1}`));
  });
});

Deno.test("http: GET /committed beyond the committed head answers fewer Nodes, or none", async () => {
  await withApi({}, async ({ base }) => {
    const some = json(await request(base, "/committed?from=3&to=10")) as {
      node: { height: number };
    }[];
    assertEquals(some.map((x) => x.node.height), [3, 4], "heights up to the head");
    assertEquals(json(await request(base, "/committed?from=5&to=5")), [], "above the head: none");
    const top = Number.MAX_SAFE_INTEGER;
    const a = await request(base, `/committed?from=${top}&to=${top}`);
    assertEquals(a.status, 200, "largest safe height is a valid height");
    assertEquals(json(a), [], "largest safe height: none");
  });
});

Deno.test("http: GET /chain answers CBOR Node encodings from a height, at most limit", async () => {
  await withApi({}, async ({ base, view }) => {
    // CBOR even when JSON is asked for: the route is for replicas.
    const a = await request(base, "/chain?from=2&limit=3", {
      headers: { accept: "application/json" },
    });
    assertEquals(a.status, 200, "status");
    const list = cbor(a) as Uint8Array[];
    assertEquals(list.length, 3, "limit respected");
    list.forEach((bytes, i) => {
      const d = decodeNode(bytes);
      assert(d.ok && bytesEqual(nodeHash(d.value), nodeHash(view.nodes[i + 1]!)), `Node ${i}`);
    });
    const all = cbor(await request(base, "/chain?from=0&limit=8")) as Uint8Array[];
    assertEquals(all.length, 6, "from 0: the whole chain, uncommitted tip included");
    assertEquals(cbor(await request(base, "/chain?from=7&limit=8")), [], "beyond the tip: none");
  });
});

Deno.test("http: answers stop before responseBytesMax but always hold one Node", async () => {
  await withApi({ responseBytesMax: 1 }, async ({ base }) => {
    assertEquals(
      (cbor(await request(base, "/chain?from=1&limit=5")) as unknown[]).length,
      1,
      "chain",
    );
    const c = json(await request(base, "/committed?from=1&to=4")) as unknown[];
    assertEquals(c.length, 1, "committed");
  });
});

// ---------------------------------------------------------------------------------------------
// Refusals

const H = "0123456789abcdef".repeat(4);

/** [what, method, path, status, reason] with rangeMax = 8. */
const REFUSALS: [string, string, string, number, string][] = [
  ["non-hex hash", "GET", `/nodes/${"zz".repeat(32)}`, 400, "bad-hash"],
  ["odd-length hash", "GET", `/nodes/${H.slice(0, 63)}`, 400, "bad-hash"],
  ["short hash", "GET", `/nodes/${H.slice(0, 62)}`, 400, "bad-hash"],
  ["long hash", "GET", `/nodes/${H}00`, 400, "bad-hash"],
  ["percent-encoded hash", "GET", `/nodes/%41${H.slice(2)}`, 400, "bad-hash"],
  ["hash with query", "GET", `/nodes/${H}?x=1`, 400, "unknown-parameter"],
  ["negative from", "GET", "/committed?from=-1&to=2", 400, "bad-range"],
  ["plus sign", "GET", "/committed?from=%2B1&to=2", 400, "bad-range"],
  ["plus as space", "GET", "/committed?from=+1&to=2", 400, "bad-range"],
  ["empty from", "GET", "/committed?from=&to=2", 400, "bad-range"],
  ["non-digit from", "GET", "/committed?from=abc&to=2", 400, "bad-range"],
  ["decimal point", "GET", "/committed?from=1.0&to=2", 400, "bad-range"],
  ["exponent", "GET", "/committed?from=1e2&to=200", 400, "bad-range"],
  ["hex number", "GET", "/committed?from=0x1&to=2", 400, "bad-range"],
  ["huge number", "GET", `/committed?from=1&to=${"9".repeat(40)}`, 400, "bad-range"],
  [
    "2^53 is not safe",
    "GET",
    "/committed?from=9007199254740992&to=9007199254740992",
    400,
    "bad-range",
  ],
  ["inverted range", "GET", "/committed?from=5&to=3", 400, "bad-range"],
  ["missing to", "GET", "/committed?from=1", 400, "bad-range"],
  ["missing both", "GET", "/committed", 400, "bad-range"],
  ["range too large", "GET", "/committed?from=1&to=9", 400, "range-too-large"],
  ["range far too large", "GET", "/committed?from=0&to=9007199254740991", 400, "range-too-large"],
  ["unknown parameter", "GET", "/committed?from=1&to=2&x=1", 400, "unknown-parameter"],
  ["repeated parameter", "GET", "/committed?from=1&from=2&to=3", 400, "duplicate-parameter"],
  ["status with query", "GET", "/status?verbose=1", 400, "unknown-parameter"],
  ["limit 0", "GET", "/chain?from=1&limit=0", 400, "bad-limit"],
  ["negative limit", "GET", "/chain?from=1&limit=-1", 400, "bad-limit"],
  ["missing limit", "GET", "/chain?from=1", 400, "bad-limit"],
  ["limit above rangeMax", "GET", "/chain?from=1&limit=9", 400, "range-too-large"],
  ["chain: bad from", "GET", "/chain?from=x&limit=1", 400, "bad-range"],
  ["chain: to is not a parameter", "GET", "/chain?from=1&limit=1&to=2", 400, "unknown-parameter"],
  ["unknown route", "GET", "/nope", 404, "not-found"],
  ["root", "GET", "/", 404, "not-found"],
  ["trailing slash", "GET", "/status/", 404, "not-found"],
  ["nodes without hash", "GET", "/nodes/", 404, "not-found"],
  ["nested path", "GET", `/nodes/${H}/x`, 404, "not-found"],
  ["POST /status", "POST", "/status", 405, "method-not-allowed"],
  ["DELETE /nodes", "DELETE", `/nodes/${H}`, 405, "method-not-allowed"],
  ["PUT /chain", "PUT", "/chain?from=1&limit=1", 405, "method-not-allowed"],
  ["POST to an unknown route", "POST", "/nope", 404, "not-found"],
];

Deno.test("http: every bad request is a JSON 4xx with the right reason", async (t) => {
  await withApi({}, async ({ base }) => {
    for (const [what, method, path, status, reason] of REFUSALS) {
      await t.step(`${what}: ${method} ${path} -> ${status} ${reason}`, async () => {
        const a = await request(base, path, { method });
        assertEquals(a.status, status, "status");
        const body = json(a) as { error: unknown; reason: unknown };
        assertEquals(body.reason, reason, "reason");
        assert(typeof body.error === "string" && body.error.length > 0, "an error message");
        if (status === 405) assertEquals(a.headers.get("allow"), "GET", "Allow header");
      });
    }
  });
});

Deno.test("http: a handler that throws gives 500, is logged, and the server keeps answering", async () => {
  await withApi({}, async ({ base, view, logs }) => {
    view.statusThrows = true;
    const a = await request(base, "/status");
    assertEquals(a.status, 500, "status");
    assertEquals(json(a), { error: "internal error", reason: "internal" }, "body");
    const logged = logs.find((l) => l.event === "http:handler-error");
    assert(logged !== undefined, "logged");
    assertEquals(logged.fields.message, "status exploded", "logged message");
    view.statusThrows = false;
    assertEquals((await request(base, "/status")).status, 200, "next request answered");
    assertEquals((await request(base, `/nodes/${hashOf(view, 1)}`)).status, 200, "other routes");
  });
});

// ---------------------------------------------------------------------------------------------
// Extra routes and bodies

/** An app route `POST /kv/echo` that reads its body with the limit and echoes its length. */
function echoRoutes(max: number, calls: { n: number }) {
  return async (req: Request, url: URL): Promise<Response | null> => {
    if (url.pathname === "/kv/boom") throw new Error("app exploded");
    if (url.pathname === "/kv/bad") return errorResponse(400, "bad-key", "key must be hex");
    if (url.pathname !== "/kv/echo") return null;
    calls.n++;
    const body = await readBodyLimited(req, max);
    return Response.json({ bytes: body.length });
  };
}

Deno.test("http: extra routes go first; null falls through to the built-in routes", async () => {
  const calls = { n: 0 };
  await withApi({ extraRoutes: echoRoutes(1024, calls) }, async ({ base, view }) => {
    const a = await request(base, "/kv/echo", { method: "POST", body: "hello" });
    assertEquals(a.status, 200, "extra route answered");
    assertEquals(json(a), { bytes: 5 }, "echo");
    const { http: _, ...status } = json(await request(base, "/status")) as Record<string, unknown>;
    assertEquals(status, view.status(), "built-in route");
    const bad = await request(base, "/kv/bad");
    assertEquals(
      [bad.status, (json(bad) as { reason: string }).reason],
      [400, "bad-key"],
      "app error",
    );
    const boom = await request(base, "/kv/boom");
    assertEquals(
      [boom.status, (json(boom) as { reason: string }).reason],
      [500, "internal"],
      "throw",
    );
  });
});

Deno.test("http: a body announced above bodyBytesMax is 413 before any route sees it", async () => {
  const calls = { n: 0 };
  await withApi({ bodyBytesMax: 1024, extraRoutes: echoRoutes(1024, calls) }, async ({ base }) => {
    const ok = await request(base, "/kv/echo", { method: "POST", body: new Uint8Array(1024) });
    assertEquals(ok.status, 200, "exactly the limit is fine");
    const a = await request(base, "/kv/echo", { method: "POST", body: new Uint8Array(1025) });
    assertEquals(a.status, 413, "status");
    assertEquals((json(a) as { reason: string }).reason, "body-too-large", "reason");
    assertEquals(calls.n, 1, "the route never ran for the oversized body");
    const b = await request(base, "/status", { method: "POST", body: new Uint8Array(5000) });
    assertEquals(b.status, 413, "also in front of the built-in routes");
  });
});

Deno.test("http: a streamed body that outgrows the limit is 413 from readBodyLimited", async () => {
  const calls = { n: 0 };
  await withApi(
    { bodyBytesMax: 1 << 20, extraRoutes: echoRoutes(1024, calls) },
    async ({ base }) => {
      let chunks = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (chunks++ < 3) c.enqueue(new Uint8Array(600));
          else c.close();
        },
      });
      const a = await request(base, "/kv/echo", { method: "POST", body });
      assertEquals(a.status, 413, "status");
      assertEquals((json(a) as { reason: string }).reason, "body-too-large", "reason");
      assertEquals(calls.n, 1, "the route ran and refused");
    },
  );
});

Deno.test("http: readBodyLimited reads up to max, refuses beyond it, and cancels the rest", async () => {
  const empty = await readBodyLimited(new Request("http://x/"), 10);
  assertEquals(empty.length, 0, "no body");
  const exact = await readBodyLimited(new Request("http://x/", { method: "POST", body: "abc" }), 3);
  assertEquals(Array.from(exact), [97, 98, 99], "exactly max");

  const declared = new Request("http://x/", {
    method: "POST",
    body: "0123456789",
    headers: { "content-length": "10" },
  });
  await assertRejects(
    () => readBodyLimited(declared, 9),
    (e) => e instanceof HotStuffError && e.reason === "body-too-large",
    "declared length",
  );

  let cancelled = false;
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(100));
    },
    cancel() {
      cancelled = true;
    },
  });
  await assertRejects(
    () => readBodyLimited(new Response(endless), 250),
    (e) => e instanceof HotStuffError && e.reason === "body-too-large",
    "endless stream",
  );
  assert(cancelled, "the stream was cancelled");
  assert(pulled <= 5, `stopped reading early (${pulled} chunks)`);
});

Deno.test("http: a request that takes longer than requestTimeoutMs is 503 timeout", async () => {
  let release = (): void => {};
  const hung = new Promise<void>((r) => release = r);
  const extraRoutes = async (_req: Request, url: URL): Promise<Response | null> => {
    if (url.pathname !== "/kv/slow") return null;
    await hung;
    return new Response("late");
  };
  await withApi({ requestTimeoutMs: 50, extraRoutes }, async ({ base, logs }) => {
    try {
      const a = await request(base, "/kv/slow");
      assertEquals(a.status, 503, "status");
      assertEquals((json(a) as { reason: string }).reason, "timeout", "reason");
      assert(logs.some((l) => l.event === "http:timeout"), "logged");
      assertEquals((await request(base, "/status")).status, 200, "server still answers");
    } finally {
      release();
    }
  });
});

Deno.test("http: errorResponse builds the API's JSON error shape", async () => {
  const r = errorResponse(405, "method-not-allowed", "no");
  assertEquals(r.status, 405, "status");
  assertEquals(r.headers.get("allow"), "GET", "Allow");
  assertEquals(await r.json(), { error: "no", reason: "method-not-allowed" }, "body");
});

// ---------------------------------------------------------------------------------------------
// Lifecycle and options

Deno.test("http: bad options are a ConfigError; port needs start; close is idempotent", async () => {
  const view = new FakeView();
  for (
    const bad of [
      { rangeMax: 0 },
      { rangeMax: 1.5 },
      { bodyBytesMax: -1 },
      { responseBytesMax: 0 },
      { requestTimeoutMs: 0 },
      { port: 70000 },
    ]
  ) {
    let threw = false;
    try {
      new NodeTreeHttpApi({ hostname: HOST, port: 0, view, ...bad });
    } catch (e) {
      threw = e instanceof ConfigError && e.reason === "bad-option";
    }
    assert(threw, `ConfigError for ${JSON.stringify(bad)}`);
  }
  const api = new NodeTreeHttpApi({ hostname: HOST, port: 0, view, log: () => {} });
  let notStarted = false;
  try {
    api.port;
  } catch (e) {
    notStarted = e instanceof HotStuffError && e.reason === "not-started";
  }
  assert(notStarted, "port before start");
  await api.close();
  await api.close();

  const live = new NodeTreeHttpApi({ hostname: HOST, port: 0, view, log: () => {} });
  await live.start();
  assert(live.port > 0, "an OS-chosen port");
  const taken = new NodeTreeHttpApi({ hostname: HOST, port: live.port, view, log: () => {} });
  await assertRejects(
    () => taken.start(),
    (e) => e instanceof Deno.errors.AddrInUse,
    "a port in use rejects start",
  );
  await assertRejects(
    () => live.start(),
    (e) => e instanceof HotStuffError && e.reason === "already-started",
    "start twice",
  );
  await Promise.all([live.close(), live.close()]);
  await taken.close();
});
