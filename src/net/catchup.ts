/**
 * The CatchUp flow's transport: a {@link NodeSource} that fetches missing Nodes from peers'
 * NodeTree HTTP APIs (`GET /chain?from=H&limit=N`, see `http.ts`).
 *
 * ## Rules
 *
 * 1. **Which peer.** The peer the Engine names, unless it is unknown, skipped or already busy;
 *    then a random peer that is neither skipped nor busy. When there is none, the fetch fails at
 *    once (`no-peer`) without skipping anyone.
 * 2. **One request per peer.** At most one request is in flight to each peer, so at most one per
 *    peer in total. A peer is free again as soon as its answer (or failure) is delivered, so the
 *    Engine may ask it for the next answer at once.
 * 3. **Bounded.** Each request has `timeoutMs` (default 5 s) for the whole exchange, body
 *    included, and its body may hold at most `responseBytesMax` bytes (default 64 MiB), counted
 *    while the stream is read; redirects are refused.
 * 4. **Strict answer.** `200`, `Content-Type: application/cbor`, a canonical CBOR array of at
 *    most `limit` byte strings, each a Node that {@link decodeNode} accepts; heights ascending by
 *    one from at least `fromHeight`; each Node's `parent` the hash of the Node before it. An empty
 *    array is a valid answer ("nothing newer").
 * 5. **Bad peers are skipped.** Any failure (network error, timeout, another status, a bad body,
 *    a broken chain) skips the peer for `skipMs` (default 10 s) and reports
 *    `receiveFetchFailure(peer)`, logged as `catchup:peer-skipped` with a `reason`.
 *
 * **Why a Byzantine peer can do little.** This transport checks only the shape of an answer. The
 * Engine then verifies every fetched Node's QC against the validator set of the Node it certifies
 * before that Node executes (Spec 4.4 step 0, Spec 3.4 step 7: the sets come from the fetched
 * chain itself, in height order), and the core asks only for heights it learned of from signed
 * QCs. So a
 * peer that lies (a false height in its status, Nodes that were never certified, a fork) can at
 * worst waste one request, after which it is skipped; it cannot make the replica accept a Node or
 * move to a height it has no signed evidence for. Nothing a peer advertises is used to choose
 * what to fetch.
 *
 * A peer's `rangeMax` must be at least the core's `catchUpNodesMax` (both default 256), or it
 * refuses the requests (`range-too-large`) and is skipped.
 *
 * @module
 */
import { AUTH_HEADER } from "./admission.ts";
import type { FetchRequest } from "../consensus/core.ts";
import { cborArrayLength, decodeNode, decodeValue, nodeHash } from "../codec.ts";
import type { NodeSource } from "../runtime/engine.ts";
import { assert, ConfigError, HotStuffError } from "../errors.ts";
import type { Node, PublicKey } from "../types.ts";
import { bytesEqual, toHex } from "../types.ts";
import type { NetLog } from "./connections.ts";
import { readBodyLimited } from "./http.ts";

/**
 * A peer's NodeTree HTTP API.
 *
 * @example
 * ```ts
 * import type { HttpPeer } from "./catchup.ts";
 * const peer: HttpPeer = { publicKey: new Uint8Array(32), url: "http://10.0.0.2:9001" };
 * ```
 */
export interface HttpPeer {
  /** The peer's validator key: the `from` of the Nodes it serves. */
  readonly publicKey: PublicKey;
  /** Base URL of its HTTP API, e.g. `http://10.0.0.2:8080` (the routes are appended). */
  readonly url: string;
}

/**
 * Where fetched Nodes go: the Engine.
 *
 * @example
 * ```ts
 * import type { FetchTarget } from "./catchup.ts";
 * const target: FetchTarget = {
 *   receiveNodes: (_from, nodes) => console.log(`${nodes.length} Nodes`),
 *   receiveFetchFailure: () => console.log("no answer"),
 * }; // a replica passes its Engine
 * ```
 */
export interface FetchTarget {
  /** The Nodes a peer answered, already decoded and checked for shape. */
  receiveNodes(from: PublicKey, nodes: readonly Node[]): void;
  /** A fetch that failed; `from` is the peer asked, or the peer requested when none was asked. */
  receiveFetchFailure(from: PublicKey | null): void;
}

/**
 * Options of {@link HttpNodeSource}.
 *
 * @example
 * ```ts
 * import { HttpNodeSource, type HttpNodeSourceOptions } from "./catchup.ts";
 * const options: HttpNodeSourceOptions = {
 *   peers: [{ publicKey: new Uint8Array(32), url: "http://127.0.0.1:9001" }],
 *   timeoutMs: 2_000,
 * };
 * await new HttpNodeSource(options).close();
 * ```
 */
export interface HttpNodeSourceOptions {
  /** The peers to fetch from (never this replica itself). */
  readonly peers: readonly HttpPeer[];
  /** Longest one request may take, body included. Default 5000 ms. */
  readonly timeoutMs?: number;
  /** Largest response body accepted, in bytes. Default 64 MiB. */
  readonly responseBytesMax?: number;
  /** How long a peer that failed is skipped. Default 10000 ms. */
  readonly skipMs?: number;
  /** Random numbers in [0, 1) to choose a peer. Default `Math.random`. */
  readonly random?: () => number;
  /** Clock for skipping, in ms. Default `performance.now`. */
  readonly now?: () => number;
  /** Log sink for `catchup:*` events. Default: `console.error`. */
  readonly log?: NetLog;
  /**
   * Signs each request as this replica's validator (`admission.ts`'s `signRequest`), so peers
   * serve it before the public. Default: requests go unsigned.
   */
  readonly sign?: (method: string, url: URL) => Promise<string>;
}

/** The defaults of {@link HttpNodeSourceOptions}. */
export const DEFAULT_CATCHUP_OPTIONS: {
  readonly timeoutMs: number;
  readonly responseBytesMax: number;
  readonly skipMs: number;
} = {
  timeoutMs: 5000,
  responseBytesMax: 64 * 1024 * 1024,
  skipMs: 10_000,
};

/**
 * One peer's state, for a status page.
 *
 * @example
 * ```ts
 * import { HttpNodeSource, type HttpPeerStatus } from "./catchup.ts";
 * const source = new HttpNodeSource({ peers: [{ publicKey: new Uint8Array(32), url: "http://127.0.0.1:9001" }] });
 * const statuses: HttpPeerStatus[] = source.status();
 * console.log(statuses[0]?.busy); // false
 * await source.close();
 * ```
 */
export interface HttpPeerStatus {
  /** The peer's key, hex. */
  readonly publicKey: string;
  /** Its base URL. */
  readonly url: string;
  /** Whether a request to it is in flight. */
  readonly busy: boolean;
  /** Milliseconds it remains skipped, 0 if it is not. */
  readonly skippedForMs: number;
}

interface Peer {
  readonly publicKey: PublicKey;
  readonly id: string;
  readonly url: URL;
  skippedUntil: number;
  inFlight: { readonly controller: AbortController; readonly done: Promise<void> } | null;
}

/** Why an answer was refused: a machine-readable reason and the detail. */
class Refused extends HotStuffError {
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "Refused";
  }
}

/**
 * Fetches Nodes from peers' NodeTree HTTP APIs for the Engine's CatchUp flow.
 *
 * @example
 * ```ts
 * import { HttpNodeSource } from "./catchup.ts";
 * const source = new HttpNodeSource({
 *   peers: [{ publicKey: new Uint8Array(32).fill(1), url: "http://127.0.0.1:8080" }],
 * });
 * source.attach({
 *   receiveNodes: (from, nodes) => console.log(nodes.length, "Nodes"),
 *   receiveFetchFailure: (from) => console.log("failed"),
 * }); // the Engine, in a replica
 * source.fetch({ from: null, fromHeight: 1, limit: 256 }); // the answer goes to receiveNodes
 * await source.close();
 * ```
 */
export class HttpNodeSource implements NodeSource {
  readonly #peers: Peer[];
  readonly #timeoutMs: number;
  readonly #responseBytesMax: number;
  readonly #skipMs: number;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #log: NetLog;
  readonly #sign: ((method: string, url: URL) => Promise<string>) | null;
  #target: FetchTarget | null = null;
  #closed = false;

  /**
   * Creates the source; nothing is fetched until {@link HttpNodeSource.fetch}.
   *
   * @param options peers, limits, clock, random source and log
   * @throws {ConfigError} `bad-peer` on a bad key, URL or a repeated key; `bad-option` on a bad limit
   */
  constructor(options: HttpNodeSourceOptions) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CATCHUP_OPTIONS.timeoutMs;
    this.#responseBytesMax = options.responseBytesMax ?? DEFAULT_CATCHUP_OPTIONS.responseBytesMax;
    this.#skipMs = options.skipMs ?? DEFAULT_CATCHUP_OPTIONS.skipMs;
    checkInteger("timeoutMs", this.#timeoutMs, 1);
    checkInteger("responseBytesMax", this.#responseBytesMax, 1);
    checkInteger("skipMs", this.#skipMs, 0);
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? (() => performance.now());
    this.#sign = options.sign ?? null;
    const log = options.log ?? defaultLog;
    this.#log = (event, fields) => {
      try {
        log(event, fields);
      } catch {
        // A broken log sink must not break catch-up.
      }
    };
    this.#peers = options.peers.map(toPeer);
    const ids = new Set(this.#peers.map((p) => p.id));
    if (ids.size !== this.#peers.length) {
      throw new ConfigError("bad-peer", "a peer key is repeated");
    }
  }

  /** Sets where answers go (the Engine, which is created after this source). Call once. */
  attach(target: FetchTarget): void {
    assert(this.#target === null, "HttpNodeSource.attach: already attached");
    this.#target = target;
  }

  /**
   * Starts fetching `limit` Nodes from `fromHeight` and returns at once; the answer goes to the
   * attached target, never synchronously. Ignored after {@link HttpNodeSource.close}.
   */
  fetch(request: FetchRequest): void {
    assert(this.#target !== null, "HttpNodeSource.fetch: no target attached");
    assert(Number.isSafeInteger(request.fromHeight) && request.fromHeight >= 0, "fromHeight");
    assert(Number.isSafeInteger(request.limit) && request.limit >= 1, "limit");
    if (this.#closed) return;
    const peer = this.#choose(request.from);
    if (peer === null) {
      this.#log("catchup:no-peer", { reason: "no-peer", fromHeight: request.fromHeight });
      const target = this.#target;
      queueMicrotask(() => {
        if (!this.#closed) target.receiveFetchFailure(request.from);
      });
      return;
    }
    const controller = new AbortController();
    const done = this.#run(peer, request, controller).finally(() => release(peer, controller));
    peer.inFlight = { controller, done };
  }

  /** One line per peer: busy, and how long it remains skipped. */
  status(): HttpPeerStatus[] {
    const now = this.#now();
    return this.#peers.map((p) => ({
      publicKey: p.id,
      url: p.url.href,
      busy: p.inFlight !== null,
      skippedForMs: Math.max(0, p.skippedUntil - now),
    }));
  }

  /** Aborts every request in flight and resolves once they are all done. No answer follows. */
  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#peers.flatMap((p) => p.inFlight === null ? [] : [p.inFlight]);
    for (const f of pending) f.controller.abort();
    await Promise.all(pending.map((f) => f.done));
  }

  // -------------------------------------------------------------------------------------------

  /** Rule 1: the requested peer if usable, else a random usable one, else null. */
  #choose(from: PublicKey | null): Peer | null {
    const now = this.#now();
    const usable = (p: Peer) => p.inFlight === null && p.skippedUntil <= now;
    const wanted = from === null
      ? undefined
      : this.#peers.find((p) => bytesEqual(p.publicKey, from));
    if (wanted !== undefined && usable(wanted)) return wanted;
    const candidates = this.#peers.filter(usable);
    if (candidates.length === 0) return null;
    const i = Math.min(candidates.length - 1, Math.floor(this.#random() * candidates.length));
    return candidates[i] ?? null;
  }

  /**
   * Never throws: every outcome ends in exactly one call to the target, unless closed. The peer
   * is free again before that call, so the target may ask it again at once (the CatchUp flow
   * asks for the next answer while it executes this one).
   */
  async #run(peer: Peer, request: FetchRequest, controller: AbortController): Promise<void> {
    const fields = { peer: peer.id.slice(0, 16), fromHeight: request.fromHeight };
    let nodes: Node[];
    try {
      nodes = await this.#get(peer, request, controller.signal);
    } catch (e) {
      if (this.#closed) return;
      release(peer, controller);
      const reason = e instanceof HotStuffError ? e.reason : failureReason(e);
      const message = e instanceof Error ? e.message : String(e);
      peer.skippedUntil = this.#now() + this.#skipMs;
      this.#log("catchup:peer-skipped", { ...fields, reason, message, skipMs: this.#skipMs });
      this.#target?.receiveFetchFailure(peer.publicKey);
      return;
    }
    if (this.#closed) return;
    release(peer, controller);
    this.#log("catchup:received", { ...fields, nodes: nodes.length });
    this.#target?.receiveNodes(peer.publicKey, nodes);
  }

  /** Rules 3 and 4. Throws on any failure. */
  async #get(peer: Peer, request: FetchRequest, abort: AbortSignal): Promise<Node[]> {
    const url = new URL(peer.url);
    url.pathname = `${url.pathname.replace(/\/+$/, "")}/chain`;
    url.search = `?from=${request.fromHeight}&limit=${request.limit}`;
    const signal = AbortSignal.any([abort, AbortSignal.timeout(this.#timeoutMs)]);
    const headers: Record<string, string> = { accept: "application/cbor" };
    if (this.#sign !== null) headers[AUTH_HEADER] = await this.#sign("GET", url);
    const response = await fetch(url, {
      headers,
      redirect: "error",
      signal,
    });
    if (response.status !== 200) {
      throw new Refused("bad-status", `status ${response.status}${await errorReason(response)}`);
    }
    const type = response.headers.get("content-type");
    if (type?.split(";")[0]?.trim().toLowerCase() !== "application/cbor") {
      await response.body?.cancel().catch(() => {});
      throw new Refused("bad-content-type", `content type ${String(type)}`);
    }
    const body = await readBodyLimited(response, this.#responseBytesMax).catch((e) => {
      if (e instanceof HotStuffError) throw new Refused("response-too-large", e.message);
      throw e;
    });
    return checkChain(decodeChain(body, request.limit), request.fromHeight);
  }
}

/** Rule 2: the peer's request `controller` is over (a later request of the peer stays). */
function release(peer: Peer, controller: AbortController): void {
  if (peer.inFlight?.controller === controller) peer.inFlight = null;
}

// ---------------------------------------------------------------------------------------------
// Checking an answer (rule 4)

/** The Nodes of a `/chain` body, at most `limit`, each strictly decoded. */
function decodeChain(body: Uint8Array, limit: number): Node[] {
  // The count first: decoding allocates every item.
  const count = cborArrayLength(body);
  if (count !== null && count > limit) {
    throw new Refused("too-many-nodes", `${count} Nodes answered, ${limit} asked`);
  }
  const value = decodeValue(body);
  if (!Array.isArray(value)) throw new Refused("bad-body", "the answer is not a CBOR array");
  return value.map((item, i) => {
    if (!(item instanceof Uint8Array)) throw new Refused("bad-body", `item ${i} is not bytes`);
    const decoded = decodeNode(item);
    if (!decoded.ok) {
      throw new Refused("bad-node", `Node ${i}: ${decoded.error.reason}: ${decoded.error.message}`);
    }
    return decoded.value;
  });
}

/** Heights ascending by one from at least `fromHeight`, each Node the parent of the next. */
function checkChain(nodes: Node[], fromHeight: number): Node[] {
  let prev: Node | null = null;
  for (const node of nodes) {
    if (prev === null && node.height < fromHeight) {
      throw new Refused("bad-height", `first Node at height ${node.height}, asked ${fromHeight}`);
    }
    if (prev !== null && node.height !== prev.height + 1) {
      throw new Refused("bad-height", `height ${node.height} follows ${prev.height}`);
    }
    if (prev !== null && !bytesEqual(node.parent, nodeHash(prev))) {
      throw new Refused(
        "not-linked",
        `Node at height ${node.height} is not the child of the one before`,
      );
    }
    prev = node;
  }
  return nodes;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function toPeer(p: HttpPeer, i: number): Peer {
  if (!(p.publicKey instanceof Uint8Array) || p.publicKey.length !== 32) {
    throw new ConfigError("bad-peer", `peer ${i}: the public key must be 32 bytes`);
  }
  let url: URL;
  try {
    url = new URL(p.url);
  } catch {
    throw new ConfigError("bad-peer", `peer ${i}: not a URL: ${p.url}`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.search || url.hash) {
    throw new ConfigError(
      "bad-peer",
      `peer ${i}: want an http(s) base URL without query: ${p.url}`,
    );
  }
  return {
    publicKey: p.publicKey,
    id: toHex(p.publicKey),
    url,
    skippedUntil: -Infinity,
    inFlight: null,
  };
}

/** The `reason` of a JSON error answer, for the log; the body is read up to 4 KiB. */
async function errorReason(response: Response): Promise<string> {
  try {
    const body = await readBodyLimited(response, 4096);
    const reason = (JSON.parse(new TextDecoder().decode(body)) as { reason?: unknown }).reason;
    return typeof reason === "string" ? ` (${reason.slice(0, 64)})` : "";
  } catch {
    return "";
  }
}

function failureReason(e: unknown): string {
  if (e instanceof DOMException && e.name === "TimeoutError") return "timeout";
  if (e instanceof DOMException && e.name === "AbortError") return "aborted";
  return "network-error";
}

function checkInteger(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError("bad-option", `${name} must be an integer of at least ${min}: ${value}`);
  }
}

function defaultLog(event: string, fields: Record<string, unknown>): void {
  console.error(event, fields);
}
