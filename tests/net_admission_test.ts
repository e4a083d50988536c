/**
 * Admission control of the HTTP API (src/net/admission.ts): in-flight limits per class, read
 * cost from the query, per-client and global budgets with 429/503 and Retry-After, validator
 * requests first, bounded memory; and the same through a running NodeTreeHttpApi.
 */
import { deriveSecretKey, ed25519Signer, ed25519Verifier } from "../src/crypto.ts";
import { ValidatorSet } from "../src/validators.ts";
import {
  Admission,
  type AdmissionOptions,
  AUTH_HEADER,
  type Refusal,
  signRequest,
  type Ticket,
} from "../src/net/admission.ts";
import { NodeTreeHttpApi, type NodeTreeView } from "../src/net/http.ts";
import { assert, assertEquals } from "./support/assert.ts";

const CHAIN = "admission-test";
const validator = ed25519Signer(deriveSecretKey("v0"));
const outsider = ed25519Signer(deriveSecretKey("outsider"));
const validators = new ValidatorSet([{ publicKey: validator.publicKey, power: 1 }]);
const auth = { chainId: CHAIN, validators, verifier: ed25519Verifier() };

function get(path: string, headers: Record<string, string> = {}): Request {
  return new Request(`http://replica${path}`, { headers });
}

function refused(v: Ticket | Refusal): Refusal {
  assert("status" in v, "refused");
  return v;
}

function admitted(v: Ticket | Refusal): Ticket {
  assert("release" in v, `admitted, got ${JSON.stringify(v)}`);
  return v;
}

/** An Admission on a clock the test moves. */
function withClock(options: AdmissionOptions): { a: Admission; advance: (ms: number) => void } {
  let now = 0;
  const a = new Admission({ ...options, now: () => now, wallClock: () => 1_700_000_000_000 + now });
  return { a, advance: (ms) => (now += ms) };
}

async function signedGet(path: string, signer = validator, time = 1_700_000_000_000) {
  const url = new URL(`http://replica${path}`);
  const header = await signRequest(signer, { chainId: CHAIN, method: "GET", url }, time);
  return get(path, { [AUTH_HEADER]: header });
}

Deno.test("admission: reads in flight are bounded; a full class is 503 busy with Retry-After, a released slot is free again", async () => {
  const { a } = withClock({ readInFlightMax: 2 });
  const t1 = admitted(await a.admit(get("/status"), "10.0.0.1"));
  admitted(await a.admit(get("/status"), "10.0.0.2"));
  const r = refused(await a.admit(get("/status"), "10.0.0.3"));
  assertEquals([r.status, r.reason, r.retryAfterS], [503, "busy", 1], "third read");
  t1.release();
  t1.release(); // idempotent
  admitted(await a.admit(get("/status"), "10.0.0.3"));
  assertEquals(a.stats().inFlight.read, 2, "in flight");
  // Submissions have their own class.
  admitted(await a.admit(new Request("http://replica/kv/k", { method: "PUT" }), "10.0.0.3"));
});

Deno.test("admission: a read costs its range in Nodes before it runs; one client is limited with 429 and Retry-After, another is not", async () => {
  const { a, advance } = withClock({ clientReadRate: 100, clientReadBurst: 300 });
  admitted(await a.admit(get("/committed?from=1&to=256"), "10.0.0.1")).release();
  // 44 units left: another 256-Node range must wait (256 - 44) / 100 s, rounded up.
  const r = refused(await a.admit(get("/chain?from=1&limit=256"), "10.0.0.1"));
  assertEquals([r.status, r.reason, r.retryAfterS], [429, "rate-limited", 3], "second range");
  // Cheap reads still fit the remaining budget; other clients have their own.
  admitted(await a.admit(get("/status"), "10.0.0.1")).release();
  admitted(await a.admit(get("/committed?from=1&to=256"), "10.0.0.2")).release();
  advance(3_000);
  admitted(await a.admit(get("/chain?from=1&limit=256"), "10.0.0.1")).release();
});

Deno.test("admission: the global read budget bounds a flood from many addresses (503 busy)", async () => {
  const { a } = withClock({ readRate: 10, readBurst: 512 });
  admitted(await a.admit(get("/committed?from=1&to=256"), "10.0.0.1")).release();
  admitted(await a.admit(get("/committed?from=1&to=256"), "10.0.0.2")).release();
  const r = refused(await a.admit(get("/committed?from=1&to=256"), "10.0.0.3"));
  assertEquals([r.status, r.reason], [503, "busy"], "third client");
  assert(r.retryAfterS !== null && r.retryAfterS >= 25, `retry after ${r.retryAfterS}`);
});

Deno.test("admission: a validator's signed request is served while the public is refused; bad signatures are 401", async () => {
  const { a } = withClock({ auth, readInFlightMax: 1, clientReadBurst: 1, clientReadRate: 1 });
  admitted(await a.admit(get("/status"), "10.0.0.1")); // fills the read class
  refused(await a.admit(get("/chain?from=1&limit=256"), "10.0.0.1"));
  const ticket = admitted(await a.admit(await signedGet("/chain?from=1&limit=256"), "10.0.0.1"));
  assertEquals(ticket.routeClass, "catchup", "class");
  const bad = [
    await signedGet("/chain?from=1&limit=256", outsider), // not a validator
    await signedGet("/chain?from=1&limit=256", validator, 1_700_000_000_000 - 60_000), // stale
    get("/chain?from=1&limit=256", { [AUTH_HEADER]: "zz.1.zz" }), // malformed
  ];
  // A signature for another path does not carry over.
  const other = await signedGet("/chain?from=1&limit=1");
  bad.push(get("/chain?from=1&limit=256", { [AUTH_HEADER]: other.headers.get(AUTH_HEADER)! }));
  for (const [i, request] of bad.entries()) {
    const r = refused(await a.admit(request, "10.0.0.9"));
    assertEquals([r.status, r.reason], [401, "bad-validator-auth"], `bad header ${i}`);
  }
  assertEquals(a.stats().refused["bad-validator-auth"], 4, "counted");
});

Deno.test("admission: a client that keeps sending bad validator signatures is refused without a check", async () => {
  let checks = 0;
  const counting = {
    ...auth,
    verifier: {
      verify: (k: Uint8Array, m: Uint8Array, s: Uint8Array) => {
        checks++;
        return auth.verifier.verify(k, m, s);
      },
    },
  };
  const { a, advance } = withClock({ auth: counting, clientAuthFailureBurst: 3 });
  const bad = await signedGet("/chain?from=1&limit=1");
  const forged = get("/chain?from=1&limit=256", { [AUTH_HEADER]: bad.headers.get(AUTH_HEADER)! });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push(refused(await a.admit(forged, "10.0.0.5")).status);
  assertEquals(statuses, [401, 401, 401, 429, 429, 429], "statuses");
  assertEquals(checks, 3, "signature checks");
  // Another address, and the same one later, are checked again.
  admitted(await a.admit(await signedGet("/chain?from=1&limit=256"), "10.0.0.6"));
  advance(1_000);
  assertEquals(refused(await a.admit(forged, "10.0.0.5")).status, 401, "after a second");
});

Deno.test("admission: the addresses of one IPv6 /64 are one client; an IPv4-mapped address is its IPv4 client", async () => {
  const { a } = withClock({ clientReadRate: 1, clientReadBurst: 256 });
  admitted(await a.admit(get("/committed?from=1&to=256"), "2001:db8:0:1::1")).release();
  const r = refused(await a.admit(get("/status"), "2001:db8:0:1:ffff::2"));
  assertEquals(r.status, 429, "same /64");
  admitted(await a.admit(get("/status"), "2001:db8:0:2::1")).release();
  admitted(await a.admit(get("/committed?from=1&to=256"), "10.0.0.7")).release();
  assertEquals(refused(await a.admit(get("/status"), "::ffff:10.0.0.7")).status, 429, "mapped");
});

Deno.test("admission: a replayed validator header gets no priority: the replay is a public request", async () => {
  const { a } = withClock({ auth, readInFlightMax: 1 });
  admitted(await a.admit(get("/status"), "10.0.0.1")); // fills the read class
  const signed = await signedGet("/chain?from=1&limit=256");
  assertEquals(admitted(await a.admit(signed, "10.0.0.1")).routeClass, "catchup", "first use");
  const replay = get("/chain?from=1&limit=256", {
    [AUTH_HEADER]: signed.headers.get(AUTH_HEADER)!,
  });
  const r = refused(await a.admit(replay, "10.0.0.66"));
  assertEquals([r.status, r.reason], [503, "busy"], "the replay waits with the public");
});

Deno.test("admission: at most clientsMax clients are remembered", async () => {
  const { a } = withClock({ clientsMax: 3 });
  for (let i = 0; i < 50; i++) admitted(await a.admit(get("/status"), `10.0.1.${i}`)).release();
  assertEquals(a.stats().clients, 3, "clients tracked");
});

Deno.test("admission: limits must be positive numbers", () => {
  let error: unknown = null;
  try {
    new Admission({ readInFlightMax: 0 });
  } catch (e) {
    error = e;
  }
  assertEquals((error as { reason?: string } | null)?.reason, "bad-option", "refused");
});

Deno.test("http + admission: a client flooding /committed gets 429 with Retry-After; a validator's /chain is still answered", async () => {
  const view: NodeTreeView = {
    status: () => ({ view: 1 }),
    nodeByHash: () => Promise.resolve(null),
    committedRange: () => Promise.resolve([]),
    chainFrom: () => Promise.resolve([]),
  };
  const api = new NodeTreeHttpApi({
    hostname: "127.0.0.1",
    port: 0,
    view,
    log: () => {},
    admission: { auth, clientReadRate: 1, clientReadBurst: 300 },
  });
  await api.start();
  try {
    const base = `http://127.0.0.1:${api.port}`;
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${base}/committed?from=1&to=256`);
      statuses.push(r.status);
      if (r.status === 429) retryAfter = r.headers.get("retry-after");
      await r.body?.cancel();
    }
    assertEquals(statuses, [200, 429, 429, 429, 429], "flood statuses");
    assert(retryAfter !== null && Number(retryAfter) >= 200, `Retry-After ${retryAfter}`);
    const url = new URL(`${base}/chain?from=1&limit=256`);
    const header = await signRequest(validator, { chainId: CHAIN, method: "GET", url });
    const r = await fetch(url, { headers: { [AUTH_HEADER]: header } });
    await r.body?.cancel();
    assertEquals(r.status, 200, "validator's catch-up");
  } finally {
    await api.close();
  }
});

Deno.test("http: an announced oversized body is refused 413, late (the tarpit)", async () => {
  const view: NodeTreeView = {
    status: () => ({}),
    nodeByHash: () => Promise.resolve(null),
    committedRange: () => Promise.resolve([]),
    chainFrom: () => Promise.resolve([]),
  };
  const api = new NodeTreeHttpApi({ hostname: "127.0.0.1", port: 0, view, log: () => {} });
  await api.start();
  try {
    const started = performance.now();
    const r = await fetch(`http://127.0.0.1:${api.port}/kv/x`, {
      method: "PUT",
      body: new Uint8Array(1024 * 1024 + 1),
    });
    const body = await r.json();
    assertEquals([r.status, body.reason], [413, "body-too-large"], "refused");
    const ms = performance.now() - started;
    assert(ms >= 1_900, `answered after ${ms.toFixed(0)} ms, expected about 4 s`);
  } finally {
    await api.close();
  }
});
