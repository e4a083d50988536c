/**
 * Admission control of the NodeTree HTTP API: what keeps one client (or a crowd of them) from
 * starving the replica. Every request is admitted here before any work is done for it, or
 * refused at once with a cheap answer.
 *
 * 1. **Classes.** A request that carries a valid validator signature ({@link AUTH_HEADER}) is
 *    *catch-up*: it has its own in-flight limit and no per-client or global budget, so lagging
 *    validators are served first, whatever the public does. Otherwise `GET` and `HEAD` are
 *    *reads* and every other method a *submission*.
 * 2. **Cost before work.** A read's cost is computed from its query before it runs: one unit per
 *    Node of the range a `/committed` or `/chain` request asks for (a Node read, certified and
 *    encoded costs ~0.3 to 0.7 ms of CPU here), one unit for any other read.
 * 3. **Per client** (the remote IPv4 address, or the /64 prefix of an IPv6 address, since one
 *    host may hold a whole /64): a token bucket of read units
 *    (`clientReadRate`/s, burst `clientReadBurst`), a token bucket of submissions
 *    (`clientSubmitRate`/s, burst `clientSubmitBurst`) and at most `clientInFlightMax` requests
 *    in flight. Beyond them: `429 rate-limited` with `Retry-After` (seconds until the bucket
 *    holds the cost again).
 * 4. **Globally**: a token bucket of read units over all clients (`readRate`/s, burst
 *    `readBurst`), so a flood from many addresses is bounded too, and in-flight limits per class
 *    (`readInFlightMax`, `submitInFlightMax`, `catchUpInFlightMax`). Beyond them: `503 busy`
 *    with `Retry-After`.
 * 5. **Memory.** At most `clientsMax` clients are tracked; the oldest entry is forgotten first
 *    (it starts again with full buckets, which the global budget bounds).
 *
 * **Validator signatures.** The header is `x-hotstuff-validator: KEY.TIME.SIGNATURE` (hex public
 * key, decimal milliseconds since the epoch, hex Ed25519 signature) over CBOR
 * `["hotstuff/http/v1", chainId, method, pathAndQuery, TIME]`. It is accepted when the key is a
 * validator's, TIME is within `authSkewMs` of the replica's clock, and the signature verifies. A
 * header that fails is answered `401 bad-validator-auth` and costs its client one read unit and one
 * of its `clientAuthFailureRate` (10/s, burst 20) failures; beyond those, its signed requests are
 * refused (`429`) without being checked, so bogus signatures cannot buy signature checks. Each
 * header gives priority once: a header seen before (a replay; the HTTP API is plaintext, so an
 * eavesdropper can capture one) is admitted as a public request, with the public's budgets.
 *
 * @module
 */
import { PROOF_LOOKAHEAD_NODES } from "../light/commit_proof.ts";
import { encodeValue } from "../codec.ts";
import type { Signer, Verifier } from "../crypto.ts";
import { assert, ConfigError } from "../errors.ts";
import { fromHex, toHex } from "../types.ts";
import type { Membership } from "./handshake.ts";

/**
 * The request header that carries a validator's signature.
 *
 * @example
 * ```ts
 * import { AUTH_HEADER, signRequest } from "./admission.ts";
 * import { deriveSecretKey, ed25519Signer } from "../crypto.ts";
 * const url = new URL("http://10.0.0.2:9001/chain?from=1&limit=256");
 * const signer = ed25519Signer(deriveSecretKey("validator-0"));
 * const headers = { [AUTH_HEADER]: await signRequest(signer, { chainId: "c", method: "GET", url }) };
 * ```
 */
export const AUTH_HEADER = "x-hotstuff-validator";
/** The domain tag of a request signature. */
export const HTTP_AUTH_DOMAIN = "hotstuff/http/v1";
/** Validator headers remembered at once against replays. */
const SEEN_HEADERS_MAX = 65_536;
/** The most units one read is charged (ranges beyond `rangeMax` are refused by the route). */
const READ_COST_MAX = 4096;

/**
 * The class a request is admitted in.
 *
 * @example
 * ```ts
 * import type { RouteClass } from "./admission.ts";
 * const classOf = (path: string): RouteClass =>
 *   path === "/chain" ? "catchup" : path === "/commands" ? "submit" : "read";
 * ```
 */
export type RouteClass = "read" | "submit" | "catchup";

/**
 * Every limit of {@link Admission}; defaults in {@link DEFAULT_ADMISSION_LIMITS}.
 *
 * @example
 * ```ts
 * import { type AdmissionLimits, DEFAULT_ADMISSION_LIMITS } from "./admission.ts";
 * const stricter: AdmissionLimits = { ...DEFAULT_ADMISSION_LIMITS, clientReadRate: 50 };
 * ```
 */
export interface AdmissionLimits {
  /** Reads in flight, over all clients. Default 16. */
  readonly readInFlightMax: number;
  /** Submissions in flight (they may wait for a commit). Default 4096. */
  readonly submitInFlightMax: number;
  /** Validators' authenticated requests in flight. Default 16. */
  readonly catchUpInFlightMax: number;
  /** Requests in flight from one client, all classes but catch-up. Default 1024. */
  readonly clientInFlightMax: number;
  /** Read units one client earns per second. Default 200. */
  readonly clientReadRate: number;
  /** Read units one client may save up. Default 512 (two full ranges). */
  readonly clientReadBurst: number;
  /** Submissions one client may make per second. Default 10,000. */
  readonly clientSubmitRate: number;
  /** Submissions one client may save up. Default 20,000. */
  readonly clientSubmitBurst: number;
  /** Read units all clients together earn per second. Default 400. */
  readonly readRate: number;
  /** Read units all clients together may save up. Default 1,024. */
  readonly readBurst: number;
  /** Failed validator signatures one client may send per second (each costs a check). Default 10. */
  readonly clientAuthFailureRate: number;
  /** Failed validator signatures one client may save up. Default 20. */
  readonly clientAuthFailureBurst: number;
  /** Clients tracked at once. Default 10,000. */
  readonly clientsMax: number;
  /** Largest difference between a signature's time and ours, ms. Default 30 s. */
  readonly authSkewMs: number;
}

/**
 * The default {@link AdmissionLimits}.
 *
 * @example
 * ```ts
 * import { DEFAULT_ADMISSION_LIMITS } from "./admission.ts";
 * DEFAULT_ADMISSION_LIMITS.readInFlightMax; // 16
 * ```
 */
export const DEFAULT_ADMISSION_LIMITS: AdmissionLimits = {
  readInFlightMax: 16,
  submitInFlightMax: 4096,
  catchUpInFlightMax: 16,
  clientInFlightMax: 1024,
  clientReadRate: 200,
  clientReadBurst: 512,
  clientSubmitRate: 10_000,
  clientSubmitBurst: 20_000,
  readRate: 400,
  readBurst: 1024,
  clientAuthFailureRate: 10,
  clientAuthFailureBurst: 20,
  clientsMax: 10_000,
  authSkewMs: 30_000,
};

/**
 * Who may sign requests, and how to check them.
 *
 * @example
 * ```ts
 * import { Admission, type AdmissionAuth } from "./admission.ts";
 * import { ed25519Verifier } from "../crypto.ts";
 * import { ValidatorSet } from "../validators.ts";
 * const auth: AdmissionAuth = {
 *   chainId: "c",
 *   validators: new ValidatorSet([{ publicKey: new Uint8Array(32).fill(1), power: 1 }]),
 *   verifier: ed25519Verifier(),
 * };
 * const admission = new Admission({ auth });
 * ```
 */
export interface AdmissionAuth {
  /** Our chain. */
  readonly chainId: string;
  /** The validator set. */
  readonly validators: Membership;
  /** Checks signatures. */
  readonly verifier: Verifier;
}

/**
 * Options of {@link Admission}.
 *
 * @example
 * ```ts
 * import { Admission, type AdmissionOptions } from "./admission.ts";
 * const options: AdmissionOptions = { readInFlightMax: 8, clientReadRate: 100 };
 * const admission = new Admission(options);
 * ```
 */
export interface AdmissionOptions extends Partial<AdmissionLimits> {
  /** Validator authentication; without it every request is public. */
  readonly auth?: AdmissionAuth;
  /** Clock for buckets, ms (monotonic). Default `performance.now`. */
  readonly now?: () => number;
  /** Wall clock for signature times, ms since the epoch. Default `Date.now`. */
  readonly wallClock?: () => number;
}

/**
 * An admitted request: call `release` once it is answered.
 *
 * @example
 * ```ts
 * import { Admission } from "./admission.ts";
 * const admission = new Admission();
 * const answer = await admission.admit(new Request("http://127.0.0.1/status"), "10.0.0.9");
 * if ("release" in answer) answer.release(); // a Ticket: release it when the request is answered
 * ```
 */
export interface Ticket {
  /** Its class. */
  readonly routeClass: RouteClass;
  /** Ends the request's hold on its in-flight slots. Idempotent. */
  release(): void;
}

/**
 * A refused request: answer it with this status, reason and `Retry-After` (seconds).
 *
 * @example
 * ```ts
 * import { Admission, type Refusal } from "./admission.ts";
 * function isRefusal(a: Awaited<ReturnType<Admission["admit"]>>): a is Refusal {
 *   return "status" in a;
 * }
 * ```
 */
export interface Refusal {
  /** 401, 429 or 503. */
  readonly status: number;
  /** Machine-readable reason. */
  readonly reason: "rate-limited" | "busy" | "bad-validator-auth";
  /** What was exceeded. */
  readonly message: string;
  /** Seconds to wait, or null (401). */
  readonly retryAfterS: number | null;
}

/**
 * Counters for the status page.
 *
 * @example
 * ```ts
 * import { Admission, type AdmissionStats } from "./admission.ts";
 * const stats: AdmissionStats = new Admission().stats();
 * console.log(stats.admitted.read, stats.clients); // 0 0
 * ```
 */
export interface AdmissionStats {
  /** Requests admitted, by class. */
  readonly admitted: Record<RouteClass, number>;
  /** Requests refused, by reason. */
  readonly refused: Record<Refusal["reason"], number>;
  /** Requests in flight, by class. */
  readonly inFlight: Record<RouteClass, number>;
  /** Clients tracked. */
  readonly clients: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

interface Client {
  readonly read: Bucket;
  readonly submit: Bucket;
  readonly authFailures: Bucket;
  inFlight: number;
}

/**
 * Admission control for one HTTP server. See the module documentation.
 *
 * @example
 * ```ts
 * import { Admission } from "./admission.ts";
 * const admission = new Admission({ readInFlightMax: 1 });
 * const a = await admission.admit(new Request("http://x/status"), "10.0.0.1");
 * const b = await admission.admit(new Request("http://x/status"), "10.0.0.2");
 * console.log("release" in a, "status" in b); // true true: the second is 503 busy
 * ```
 */
export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #auth: AdmissionAuth | null;
  readonly #now: () => number;
  readonly #wall: () => number;
  readonly #clients = new Map<string, Client>();
  /** Validator headers already used, to the wall time they can be forgotten. */
  readonly #seen = new Map<string, number>();
  readonly #global: Bucket;
  readonly #inFlight: Record<RouteClass, number> = { read: 0, submit: 0, catchup: 0 };
  readonly #admitted: Record<RouteClass, number> = { read: 0, submit: 0, catchup: 0 };
  readonly #refused: Record<Refusal["reason"], number> = {
    "rate-limited": 0,
    busy: 0,
    "bad-validator-auth": 0,
  };

  /**
   * Creates the admission control.
   *
   * @throws {ConfigError} `bad-option` on a limit that is not a positive number
   */
  constructor(options: AdmissionOptions = {}) {
    const limits = { ...DEFAULT_ADMISSION_LIMITS };
    for (const key of Object.keys(limits) as Array<keyof AdmissionLimits>) {
      const v = options[key] ?? limits[key];
      if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
        throw new ConfigError("bad-option", `${key} must be a positive number: ${v}`);
      }
      limits[key] = v;
    }
    this.#limits = limits;
    this.#auth = options.auth ?? null;
    this.#now = options.now ?? (() => performance.now());
    this.#wall = options.wallClock ?? Date.now;
    this.#global = { tokens: limits.readBurst, at: this.#now() };
  }

  /**
   * Admits `request` from the client at `remote` (its IP address), or says why not. Does no
   * work for the request beyond parsing its query and, with a validator header, one signature
   * check.
   */
  async admit(request: Request, remote: string): Promise<Ticket | Refusal> {
    const header = request.headers.get(AUTH_HEADER);
    if (header !== null && this.#auth !== null) {
      // A client whose signatures keep failing is refused before we check another one.
      const client = this.#client(remote);
      const l = this.#limits;
      const wait = this.#wait(
        client.authFailures,
        1,
        l.clientAuthFailureRate,
        l.clientAuthFailureBurst,
      );
      if (wait > 0) return this.#rateLimited("failed validator signatures", wait);
      if (await this.#validSignature(request, header, this.#auth)) {
        // A header seen before is a replay (HTTP is plaintext): served as a public request.
        if (this.#firstUse(header)) return this.#take("catchup", null) ?? this.#busy("catchup");
        const read = request.method === "GET" || request.method === "HEAD";
        return read ? this.#admitRead(request, remote) : this.#admitSubmit(remote);
      }
      this.#charge(client.authFailures, 1);
      this.#charge(client.read, 1);
      return this.#refuse({
        status: 401,
        reason: "bad-validator-auth",
        message: `${AUTH_HEADER} does not verify (key, time or signature)`,
        retryAfterS: null,
      });
    }
    const read = request.method === "GET" || request.method === "HEAD";
    return read ? this.#admitRead(request, remote) : this.#admitSubmit(remote);
  }

  /** Counters for a status page. */
  stats(): AdmissionStats {
    return {
      admitted: { ...this.#admitted },
      refused: { ...this.#refused },
      inFlight: { ...this.#inFlight },
      clients: this.#clients.size,
    };
  }

  #admitRead(request: Request, remote: string): Ticket | Refusal {
    const cost = readCost(new URL(request.url));
    const client = this.#client(remote);
    const l = this.#limits;
    const own = this.#wait(client.read, cost, l.clientReadRate, l.clientReadBurst);
    if (own > 0 || client.inFlight >= l.clientInFlightMax) {
      return this.#rateLimited(`read of ${cost} units`, Math.max(own, 1));
    }
    const all = this.#wait(this.#global, cost, l.readRate, l.readBurst);
    if (all > 0) return this.#busy("read", all);
    const ticket = this.#take("read", client);
    if (ticket === null) return this.#busy("read");
    this.#charge(client.read, cost);
    this.#charge(this.#global, cost);
    return ticket;
  }

  #admitSubmit(remote: string): Ticket | Refusal {
    const client = this.#client(remote);
    const l = this.#limits;
    const own = this.#wait(client.submit, 1, l.clientSubmitRate, l.clientSubmitBurst);
    if (own > 0 || client.inFlight >= l.clientInFlightMax) {
      return this.#rateLimited("submission", Math.max(own, 1));
    }
    const ticket = this.#take("submit", client);
    if (ticket === null) return this.#busy("submit");
    this.#charge(client.submit, 1);
    return ticket;
  }

  /** A slot of `routeClass` (and of the client's), or null when the class is full. */
  #take(routeClass: RouteClass, client: Client | null): Ticket | null {
    const max = routeClass === "read"
      ? this.#limits.readInFlightMax
      : routeClass === "submit"
      ? this.#limits.submitInFlightMax
      : this.#limits.catchUpInFlightMax;
    if (this.#inFlight[routeClass] >= max) return null;
    this.#inFlight[routeClass]++;
    this.#admitted[routeClass]++;
    if (client !== null) client.inFlight++;
    let released = false;
    return {
      routeClass,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight[routeClass]--;
        if (client !== null) client.inFlight--;
        assert(this.#inFlight[routeClass] >= 0, "in-flight count below zero");
      },
    };
  }

  #client(address: string): Client {
    const remote = clientKey(address);
    let client = this.#clients.get(remote);
    if (client !== undefined) return client;
    if (this.#clients.size >= this.#limits.clientsMax) {
      // Forget the oldest idle client (one with requests in flight keeps its count).
      for (const [key, c] of this.#clients) {
        if (c.inFlight === 0) {
          this.#clients.delete(key);
          break;
        }
      }
    }
    const now = this.#now();
    client = {
      read: { tokens: this.#limits.clientReadBurst, at: now },
      submit: { tokens: this.#limits.clientSubmitBurst, at: now },
      authFailures: { tokens: this.#limits.clientAuthFailureBurst, at: now },
      inFlight: 0,
    };
    this.#clients.set(remote, client);
    return client;
  }

  /** Seconds until `bucket` holds `cost` (0: it does now), after refilling it. */
  #wait(bucket: Bucket, cost: number, rate: number, burst: number): number {
    const now = this.#now();
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) * rate) / 1000);
    bucket.at = now;
    if (bucket.tokens >= Math.min(cost, burst)) return 0;
    return Math.ceil((Math.min(cost, burst) - bucket.tokens) / rate);
  }

  #charge(bucket: Bucket, cost: number): void {
    bucket.tokens -= cost;
  }

  #rateLimited(what: string, retryAfterS: number): Refusal {
    return this.#refuse({
      status: 429,
      reason: "rate-limited",
      message: `too many requests from this client (${what})`,
      retryAfterS,
    });
  }

  #busy(routeClass: RouteClass, retryAfterS = 1): Refusal {
    return this.#refuse({
      status: 503,
      reason: "busy",
      message: `too many ${routeClass} requests at once`,
      retryAfterS,
    });
  }

  #refuse(refusal: Refusal): Refusal {
    this.#refused[refusal.reason]++;
    return refusal;
  }

  /**
   * True the first time a valid header is used. Headers are remembered until they are too old
   * to verify (`authSkewMs` past their time, checked by arrival order), at most
   * {@link SEEN_HEADERS_MAX} of them; when that many are remembered, none counts as a first use.
   */
  #firstUse(header: string): boolean {
    const now = this.#wall();
    for (const [h, expires] of this.#seen) {
      if (expires > now) break;
      this.#seen.delete(h);
    }
    if (this.#seen.has(header) || this.#seen.size >= SEEN_HEADERS_MAX) return false;
    const time = Number(header.split(".")[1]);
    this.#seen.set(header, Math.max(now, time) + this.#limits.authSkewMs);
    return true;
  }

  async #validSignature(request: Request, header: string, auth: AdmissionAuth): Promise<boolean> {
    const parts = header.split(".");
    if (parts.length !== 3) return false;
    const key = fromHex(parts[0]!);
    const time = /^[0-9]{1,16}$/.test(parts[1]!) ? Number(parts[1]) : NaN;
    const signature = fromHex(parts[2]!);
    if (key === null || key.length !== 32 || signature === null || signature.length !== 64) {
      return false;
    }
    if (!Number.isSafeInteger(time) || Math.abs(this.#wall() - time) > this.#limits.authSkewMs) {
      return false;
    }
    if (auth.validators.get(key) === undefined) return false;
    const url = new URL(request.url);
    const signed = requestSignedBytes(
      auth.chainId,
      request.method,
      url.pathname + url.search,
      time,
    );
    try {
      return await auth.verifier.verify(key, signed, signature);
    } catch {
      return false;
    }
  }
}

/**
 * The bytes a validator signs for a request: CBOR `["hotstuff/http/v1", chainId, method,
 * pathAndQuery, timeMs]`.
 *
 * @example
 * ```ts
 * import { requestSignedBytes } from "./admission.ts";
 * requestSignedBytes("c", "GET", "/chain?from=1&limit=256", 1_700_000_000_000);
 * ```
 */
export function requestSignedBytes(
  chainId: string,
  method: string,
  pathAndQuery: string,
  timeMs: number,
): Uint8Array {
  return encodeValue([HTTP_AUTH_DOMAIN, chainId, method, pathAndQuery, timeMs]);
}

/**
 * The {@link AUTH_HEADER} value that signs a request as validator `signer`.
 *
 * @example
 * ```ts
 * import { signRequest } from "./admission.ts";
 * import { deriveSecretKey, ed25519Signer } from "../crypto.ts";
 * const signer = ed25519Signer(deriveSecretKey("a"));
 * const header = await signRequest(signer, { chainId: "c", method: "GET", url: new URL("http://x/chain?from=1&limit=1") });
 * ```
 */
export async function signRequest(
  signer: Signer,
  request: { readonly chainId: string; readonly method: string; readonly url: URL },
  timeMs: number = Date.now(),
): Promise<string> {
  const path = request.url.pathname + request.url.search;
  const signature = await signer.sign(
    requestSignedBytes(request.chainId, request.method, path, timeMs),
  );
  return `${toHex(signer.publicKey)}.${timeMs}.${toHex(signature)}`;
}

/** The client an address belongs to: an IPv4 address, or the /64 prefix of an IPv6 one. */
function clientKey(address: string): string {
  if (!address.includes(":")) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  const [head = "", tail = ""] = address.toLowerCase().split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::")
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** A read's cost in units, from its query alone (before any work). */
function readCost(url: URL): number {
  const q = url.searchParams;
  let nodes = 1;
  if (url.pathname.endsWith("/committed")) {
    const from = Number(q.get("from"));
    const to = Number(q.get("to"));
    if (Number.isSafeInteger(from) && Number.isSafeInteger(to) && to >= from) nodes = to - from + 1;
  } else if (url.pathname.endsWith("/proof")) {
    const from = Number(q.get("from"));
    const to = q.has("to") ? Number(q.get("to")) : from;
    if (Number.isSafeInteger(from) && Number.isSafeInteger(to) && to >= from) {
      nodes = to - from + 1 + PROOF_LOOKAHEAD_NODES;
    }
  } else if (url.pathname.endsWith("/chain")) {
    const limit = Number(q.get("limit"));
    if (Number.isSafeInteger(limit) && limit > 0) nodes = limit;
  }
  return Math.min(nodes, READ_COST_MAX);
}
