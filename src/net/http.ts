/**
 * The NodeTree HTTP API: serves the NodeTree to lagging replicas (CBOR, for the CatchUp flow in
 * `catchup.ts`) and to people (JSON), on `Deno.serve`. It only reads: nothing a client sends can
 * change the replica. The application may add its own routes in front (`extraRoutes`).
 *
 * ## Routes
 *
 * | method and path | answer |
 * |---|---|
 * | `GET /status` | JSON: the replica's status object (view, leader, committed height and hash, lock, highest QC, peers), and `http`: the admission counters |
 * | `GET /nodes/{hash}` | the Node with that hash, with the QC that certifies it and whether it is committed |
 * | `GET /committed?from=H&to=H2` | committed Nodes of heights `H..H2` (inclusive), ascending, each as above |
 * | `GET /chain?from=H&limit=N` | CBOR only: up to `N` Nodes of the replica's chain from height `H` (the catch-up endpoint) |
 * | `GET /evidence?after=S&limit=N` | JSON: up to `N` (default and at most `evidencePageMax`, 32) stored evidence records with sequence number above `S` (default 0), and `next`, the `after` of the next page or null |
 *
 * **Parameters.**
 *
 * - `{hash}`: exactly 64 hex digits, lower or upper case; anything else is `400 bad-hash`.
 * - `from`, `to`: heights, `1` to `16` decimal digits (no sign, no spaces, no exponent), a safe
 *   integer; otherwise, or when missing, `400 bad-range`. `from > to` is `400 bad-range`;
 *   `to - from + 1 > rangeMax` is `400 range-too-large`.
 * - `limit`: `1` to `rangeMax`, same digits rule; `0` or malformed is `400 bad-limit`, above
 *   `rangeMax` is `400 range-too-large`.
 * - A query parameter a route does not take is `400 unknown-parameter`; one given twice is
 *   `400 duplicate-parameter`.
 *
 * An evidence record in JSON is `{"seq", "kind", "offender", "view", "nodes": [hash, hash],
 * "record"}`: `kind` is `"double-vote"` or `"double-proposal"`, `offender` the key (hex), `nodes`
 * the two conflicting Node hashes (hex), and `record` the canonical CBOR of both signed messages
 * (`encodeEvidence`, hex), which anyone can check with `verifyEvidence` (SPECIFICATION.md 16).
 * A replica without an evidence store answers `404 not-found`.
 *
 * **Formats.** `/nodes` and `/committed` answer JSON unless the `Accept` header lists
 * `application/cbor` (with a non-zero `q`); `/chain` always answers CBOR. CBOR answers are
 * canonical CBOR (`codec.ts`):
 *
 * | route | CBOR body |
 * |---|---|
 * | `/nodes/{hash}` | `[encodeNode(node): bytes, encodeQC(certificate): bytes or null, committed: bool]` |
 * | `/committed` | an array of the triples above |
 * | `/chain` | an array of `encodeNode(node)`: bytes |
 *
 * In JSON, a Node with its certificate is
 * `{"node": NODE, "certificate": QC or null, "committed": bool}`, where
 * `NODE = {"hash", "view", "height", "parent", "proposer", "command", "commandBytes", "justify": QC}`
 * and `QC = {"view", "nodeHash", "signers": [...]}`; hashes and keys are lower-case hex, `command` is
 * base64. `/committed` answers a JSON array of these.
 *
 * **Short answers.** `/committed` and `/chain` stop early, and answer fewer Nodes than asked,
 * where the replica has no more, and before the Nodes' encodings would exceed `responseBytesMax`
 * (the first Node is always included). Ask again from the next height.
 *
 * **Errors** are JSON `{"error": message, "reason": reason}`:
 *
 * | status | reason | when |
 * |---|---|---|
 * | 400 | `bad-hash`, `bad-range`, `bad-limit`, `range-too-large`, `unknown-parameter`, `duplicate-parameter` | bad parameters, above |
 * | 404 | `not-found` | no such route, or no Node with that hash |
 * | 405 | `method-not-allowed` | a method other than `GET` on a route above (with `Allow: GET`) |
 * | 413 | `body-too-large` | a request whose `Content-Length` exceeds `bodyBytesMax`, or whose body outgrows it while an extra route reads it with {@link readBodyLimited} |
 * | 401 | `bad-validator-auth` | a validator header that does not verify (`admission.ts`) |
 * | 429 | `rate-limited` | the client is over its budget (`admission.ts`), with `Retry-After` |
 * | 500 | `internal` | a handler threw (logged as `http:handler-error`; the server keeps running) |
 * | 503 | `timeout`, `busy` | no answer within `requestTimeoutMs` (logged as `http:timeout`); `busy`: a class in flight or the global read budget is full (`admission.ts`), with `Retry-After` |
 *
 * **Limits** (options of {@link NodeTreeHttpApi}, defaults in {@link DEFAULT_HTTP_API_LIMITS}):
 * `rangeMax` 256 Nodes per request, `bodyBytesMax` 1 MiB per request body, `responseBytesMax`
 * 32 MiB of encoded Nodes per answer, `requestTimeoutMs` 10 s per request.
 *
 * **Admission and oversized bodies.** Before any route, a request whose `Content-Length` exceeds
 * `bodyBytesMax` is answered `413`, two seconds late per MiB announced (2 to 10 s), and every other
 * request is admitted or refused by `admission.ts` (in-flight limits per class, read cost from
 * the query, per-client and global budgets, validators' signed catch-up first). `/committed`
 * reads 32 Nodes at a time and stops once the answer is full.
 *
 * **Extra routes.** Every request goes first to `extraRoutes(request, url)` (after admission and
 * the `Content-Length` check); when it answers `null`, the routes above apply. It may answer its own
 * errors in the same shape with {@link errorResponse}.
 *
 * @module
 */
import { encodeNode, encodeQC, encodeValue, nodeHash } from "../codec.ts";
import {
  buildCommitProof,
  encodeCommitProof,
  PROOF_LOOKAHEAD_NODES,
} from "../light/commit_proof.ts";
import { encodeEvidence, type EvidenceEntry, evidenceOffender, evidenceView } from "../evidence.ts";
import { assert, ConfigError, HotStuffError } from "../errors.ts";
import type { NodeConfig } from "../consensus/reconfig.ts";
import type { Node, QuorumCertificate } from "../types.ts";
import { toHex } from "../types.ts";
import type { NetLog } from "./connections.ts";
import { Admission, type AdmissionOptions, type Refusal } from "./admission.ts";

/**
 * A Node of the NodeTree with what a reader needs to trust it.
 *
 * @example
 * ```ts
 * import type { NodeWithCertificate } from "./http.ts";
 * import { genesisNode, nodeHash } from "../codec.ts";
 * const g = genesisNode("c");
 * const entry: NodeWithCertificate = { node: g, hash: nodeHash(g), certificate: null, committed: true };
 * ```
 */
export interface NodeWithCertificate {
  /** The Node. */
  readonly node: Node;
  /** Its hash (`nodeHash(node)`). */
  readonly hash: Uint8Array;
  /** The QC that certifies this Node (a child's `justify`, or the highest QC), if one is known. */
  readonly certificate: QuorumCertificate | null;
  /** Whether the Node is committed. */
  readonly committed: boolean;
}

/**
 * `source.chainWithConfigs`, or, for a source without it, its chain with no configuration records
 * (proofs built from it then neither stop at changes nor carry a configuration, 15.1).
 *
 * @example
 * ```ts
 * import { readChainWithConfigs } from "./http.ts";
 * const none = { chainFrom: () => Promise.resolve([]) };
 * console.log((await readChainWithConfigs(none, 1, 10)).nodes.length); // 0
 * ```
 */
export async function readChainWithConfigs(
  source: Pick<NodeTreeView, "chainFrom" | "chainWithConfigs">,
  fromHeight: number,
  limit: number,
): Promise<ChainWithConfigs> {
  return source.chainWithConfigs === undefined
    ? { nodes: await source.chainFrom(fromHeight, limit), configs: [] }
    : await source.chainWithConfigs(fromHeight, limit);
}

/**
 * A run of a replica's chain and the configuration record of each Node (null: none written).
 *
 * @example
 * ```ts
 * import type { ChainWithConfigs } from "./http.ts";
 * const empty: ChainWithConfigs = { nodes: [], configs: [] };
 * ```
 */
export interface ChainWithConfigs {
  /** Consecutive heights. */
  readonly nodes: readonly Node[];
  /** `configs[i]`: the record of `nodes[i]`, or null. */
  readonly configs: readonly (NodeConfig | null)[];
}

/**
 * What the HTTP API reads from the replica. Implemented by the replica runtime; tests use a fake.
 * Every method may be called concurrently with consensus and must not change anything.
 *
 * @example
 * ```ts
 * import type { NodeTreeView } from "./http.ts";
 * const empty: NodeTreeView = {
 *   status: () => ({ view: 0 }),
 *   nodeByHash: () => Promise.resolve(null),
 *   committedRange: () => Promise.resolve([]),
 *   chainFrom: () => Promise.resolve([]),
 * }; // a Replica implements it
 * ```
 */
export interface NodeTreeView {
  /** A JSON-ready status object: view, leader (hex), committed `{height, hash}`, lock, highQC, peers... */
  status(): Record<string, unknown>;
  /** The Node with this hash, committed or not, or null. */
  nodeByHash(hash: Uint8Array): Promise<NodeWithCertificate | null>;
  /** Committed Nodes of heights `fromHeight..toHeight` (inclusive), ascending; may stop early. */
  committedRange(fromHeight: number, toHeight: number): Promise<NodeWithCertificate[]>;
  /** The replica's chain from `fromHeight`, at most `limit` Nodes: `Engine.serveNodes`. */
  chainFrom(fromHeight: number, limit: number): Promise<Node[]>;
  /**
   * {@link chainFrom} with each Node's configuration record (its parent's and its own validator
   * configuration) or null when it wrote none (optional; without it, commit proofs carry no
   * configuration and do not stop at changes: fine for a chain whose set never changes).
   */
  chainWithConfigs?(fromHeight: number, limit: number): Promise<ChainWithConfigs>;
  /** Stored evidence records with `seq > after`, at most `limit`, ascending (optional). */
  evidence?(after: number, limit: number): Promise<EvidenceEntry[]>;
}

/**
 * The limits of the HTTP API.
 *
 * @example
 * ```ts
 * import { DEFAULT_HTTP_API_LIMITS, type HttpApiLimits } from "./http.ts";
 * const limits: HttpApiLimits = { ...DEFAULT_HTTP_API_LIMITS, requestTimeoutMs: 60_000 };
 * ```
 */
export interface HttpApiLimits {
  /** Most Nodes per `/committed` or `/chain` request. Default 256. */
  readonly rangeMax: number;
  /** Largest request body, in bytes, refused with 413 beyond it. Default 1 MiB. */
  readonly bodyBytesMax: number;
  /** Largest total of encoded Nodes in one answer (at least one Node is sent). Default 32 MiB. */
  readonly responseBytesMax: number;
  /** Longest a request may take before it is answered `503 timeout`. Default 10 s. */
  readonly requestTimeoutMs: number;
}

/**
 * The default {@link HttpApiLimits}. `rangeMax` equals the core's default `catchUpNodesMax`: a
 * replica asks its peers for `catchUpNodesMax` Nodes at once, which must not exceed their
 * `rangeMax`. `responseBytesMax` is half the catch-up client's default `responseBytesMax`.
 *
 * @example
 * ```ts
 * import { DEFAULT_HTTP_API_LIMITS } from "./http.ts";
 * console.log(DEFAULT_HTTP_API_LIMITS.rangeMax); // 256 Nodes per /committed answer
 * ```
 */
export const DEFAULT_HTTP_API_LIMITS: HttpApiLimits = {
  rangeMax: 256,
  bodyBytesMax: 1024 * 1024,
  responseBytesMax: 32 * 1024 * 1024,
  requestTimeoutMs: 10_000,
};

/**
 * Options of {@link NodeTreeHttpApi}.
 *
 * @example
 * ```ts
 * import { type HttpApiOptions, NodeTreeHttpApi } from "./http.ts";
 * const options: HttpApiOptions = {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   view: {
 *     status: () => ({ view: 0 }),
 *     nodeByHash: () => Promise.resolve(null),
 *     committedRange: () => Promise.resolve([]),
 *     chainFrom: () => Promise.resolve([]),
 *   },
 * };
 * const api = new NodeTreeHttpApi(options);
 * await api.start();
 * await api.close();
 * ```
 */
export interface HttpApiOptions extends Partial<HttpApiLimits> {
  /** Address to listen on, e.g. `"127.0.0.1"`. */
  readonly hostname: string;
  /** TCP port, or 0 for one the OS chooses. */
  readonly port: number;
  /** The replica's NodeTree. */
  readonly view: NodeTreeView;
  /**
   * The application's routes, tried before the built-in ones; `null` means "not mine". A
   * `body-too-large` error from {@link readBodyLimited} is answered 413; any other throw, 500.
   */
  readonly extraRoutes?: (request: Request, url: URL) => Promise<Response | null>;
  /** Log sink for `http:*` events. Default: `console.error`. */
  readonly log?: NetLog;
  /**
   * Admission control (`admission.ts`): in-flight limits per route class, read costs, per-client
   * limits, validator authentication. Default: {@link DEFAULT_ADMISSION_LIMITS}, no validators.
   */
  readonly admission?: AdmissionOptions;
}

/**
 * Reads a request's (or response's) body, refusing it once it exceeds `max` bytes: at once if its
 * `Content-Length` says so, otherwise as soon as the bytes read pass `max`. Either way the rest of
 * the body is cancelled, never buffered. A missing body reads as empty.
 *
 * @param message the request or response whose body to read
 * @param max most bytes accepted
 * @throws {HotStuffError} `body-too-large` beyond `max` (the HTTP API answers it with 413)
 * @example
 * ```ts
 * import { readBodyLimited } from "./http.ts";
 * const body = await readBodyLimited(new Request("http://x/", { method: "POST", body: "hi" }), 1024);
 * console.log(body.length); // 2
 * ```
 */
export async function readBodyLimited(
  message: Request | Response,
  max: number,
): Promise<Uint8Array> {
  assert(Number.isSafeInteger(max) && max >= 0, `readBodyLimited: bad max ${max}`);
  const body = message.body;
  if (body === null) return new Uint8Array(0);
  const declared = contentLength(message.headers);
  if (declared !== null && declared > max) {
    await body.cancel().catch(() => {});
    throw tooLarge(`body of ${declared} bytes (Content-Length) exceeds ${max}`);
  }
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        await reader.cancel().catch(() => {});
        throw tooLarge(`body of more than ${max} bytes`);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return concat(chunks, total);
}

/**
 * The NodeTree HTTP API of one replica. See the module documentation for routes and limits.
 *
 * @example
 * ```ts
 * import { NodeTreeHttpApi, type NodeTreeView } from "./http.ts";
 * const view: NodeTreeView = {
 *   status: () => ({ view: 1 }),
 *   nodeByHash: () => Promise.resolve(null),
 *   committedRange: () => Promise.resolve([]),
 *   chainFrom: () => Promise.resolve([]),
 * };
 * const api = new NodeTreeHttpApi({ hostname: "127.0.0.1", port: 0, view, log: () => {} });
 * await api.start();
 * const res = await fetch(`http://127.0.0.1:${api.port}/status`);
 * console.log(await res.json()); // { view: 1 }
 * await api.close();
 * ```
 */
export class NodeTreeHttpApi {
  readonly #o: HttpApiOptions;
  readonly #limits: HttpApiLimits;
  readonly #log: NetLog;
  readonly #admission: Admission;
  #tarpitted = 0;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #closing: Promise<void> | null = null;

  /**
   * Creates the API; nothing listens until {@link NodeTreeHttpApi.start}.
   *
   * @param options address, the NodeTree view, limits, extra routes and log
   * @throws {ConfigError} `bad-option` on a limit or port that is not a valid integer
   */
  constructor(options: HttpApiOptions) {
    this.#o = options;
    this.#limits = {
      rangeMax: options.rangeMax ?? DEFAULT_HTTP_API_LIMITS.rangeMax,
      bodyBytesMax: options.bodyBytesMax ?? DEFAULT_HTTP_API_LIMITS.bodyBytesMax,
      responseBytesMax: options.responseBytesMax ?? DEFAULT_HTTP_API_LIMITS.responseBytesMax,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_HTTP_API_LIMITS.requestTimeoutMs,
    };
    checkInteger("rangeMax", this.#limits.rangeMax, 1);
    checkInteger("bodyBytesMax", this.#limits.bodyBytesMax, 0);
    checkInteger("responseBytesMax", this.#limits.responseBytesMax, 1);
    checkInteger("requestTimeoutMs", this.#limits.requestTimeoutMs, 1, 2 ** 31 - 1);
    checkInteger("port", options.port, 0, 65535);
    this.#admission = new Admission(options.admission);
    const log = options.log ?? defaultLog;
    this.#log = (event, fields) => {
      try {
        log(event, fields);
      } catch {
        // A broken log sink must not break the server.
      }
    };
  }

  /**
   * Starts listening. Resolves once the port is bound; rejects if it cannot be (e.g.
   * `Deno.errors.AddrInUse`).
   *
   * @throws {HotStuffError} `already-started` when called twice, or after close
   */
  start(): Promise<void> {
    try {
      this.#listen();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * The port actually listened on (the OS's choice when `port` is 0).
   *
   * @throws {HotStuffError} `not-started` before {@link NodeTreeHttpApi.start}
   */
  get port(): number {
    if (this.#server === null) {
      throw new HotStuffError("not-started", "the HTTP API is not started");
    }
    return this.#server.addr.port;
  }

  /** Stops accepting, lets requests in progress finish, and resolves when the server is down. */
  close(): Promise<void> {
    if (this.#closing === null) {
      const server = this.#server;
      this.#closing = server === null ? Promise.resolve() : server.shutdown().then(() => {
        this.#log("http:closed", {});
      });
    }
    return this.#closing;
  }

  // -------------------------------------------------------------------------------------------

  #listen(): void {
    if (this.#server !== null || this.#closing !== null) {
      throw new HotStuffError("already-started", "the HTTP API was already started");
    }
    this.#server = Deno.serve({
      hostname: this.#o.hostname,
      port: this.#o.port,
      onListen: () => {},
      onError: (e) => this.#internalError("serve", e),
    }, (request, info) => this.#admit(request, info.remoteAddr.hostname));
    const addr = this.#server.addr;
    this.#log("http:listening", { address: `${addr.hostname}:${addr.port}` });
  }

  /** Admission first (`admission.ts`): a refused request costs next to nothing. */
  async #admit(request: Request, remote: string): Promise<Response> {
    const declared = contentLength(request.headers);
    if (declared !== null && declared > this.#limits.bodyBytesMax) return this.#tarpit(declared);
    const verdict = await this.#admission.admit(request, remote);
    if ("status" in verdict) {
      await request.body?.cancel().catch(() => {});
      return refusalResponse(verdict);
    }
    try {
      return await this.#handle(request);
    } finally {
      verdict.release();
    }
  }

  /**
   * `413` for an announced oversized body, answered two seconds late per MiB announced (2 to 10
   * s) while fewer than {@link TARPIT_MAX} such answers wait (at once otherwise). The server reads a refused body to its end
   * once it has answered (`Deno.serve` drains it to keep the connection), so the delay is what
   * keeps a client from streaming oversized bodies at the rate of the link: while it waits, its
   * connection stalls once the socket buffers are full.
   */
  async #tarpit(declared: number): Promise<Response> {
    if (this.#tarpitted < TARPIT_MAX) {
      this.#tarpitted++;
      try {
        const delayMs = Math.min(
          OVERSIZE_DELAY_MAX_MS,
          Math.max(1, Math.ceil(declared / MIB)) * OVERSIZE_DELAY_PER_MIB_MS,
        );
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      } finally {
        this.#tarpitted--;
      }
    }
    const e = tooLarge(`body of ${declared} bytes exceeds ${this.#limits.bodyBytesMax}`);
    return errorResponse(e.status, e.reason, e.message);
  }

  /** Every request ends here in a response: a refusal, an error, or a timeout, never a throw. */
  async #handle(request: Request): Promise<Response> {
    const work = this.#dispatch(request).catch((e) => this.#failure(request, e));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<Response>((resolve) => {
      timer = setTimeout(() => {
        this.#log("http:timeout", { reason: "timeout", method: request.method, url: request.url });
        resolve(
          errorResponse(503, "timeout", `no answer within ${this.#limits.requestTimeoutMs} ms`),
        );
      }, this.#limits.requestTimeoutMs);
    });
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #dispatch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    // Refuse an announced oversized body before anyone reads it.
    const declared = contentLength(request.headers);
    if (declared !== null && declared > this.#limits.bodyBytesMax) {
      throw tooLarge(`body of ${declared} bytes exceeds ${this.#limits.bodyBytesMax}`);
    }
    if (this.#o.extraRoutes !== undefined) {
      const answer = await this.#o.extraRoutes(request, url);
      if (answer !== null) return answer;
    }
    return await this.#route(request, url);
  }

  #route(request: Request, url: URL): Promise<Response> {
    const match = matchRoute(url.pathname);
    if (match === null) throw new RouteError(404, "not-found", `no route ${clip(url.pathname)}`);
    if (request.method !== "GET") {
      throw new RouteError(
        405,
        "method-not-allowed",
        `${clip(request.method)} ${match.route.name}`,
        "GET",
      );
    }
    const query = readQuery(url.searchParams, match.route.query);
    switch (match.route.name) {
      case "status":
        return Promise.resolve(
          jsonResponse({ ...this.#o.view.status(), http: this.#admission.stats() }),
        );
      case "node":
        return this.#node(request, match.params.hash ?? "");
      case "committed":
        return this.#committed(request, query);
      case "chain":
        return this.#chain(query);
      case "proof":
        return this.#proof(query);
      case "evidence":
        return this.#evidence(query);
    }
  }

  /** Spec 16.3: one bounded page of stored evidence. */
  async #evidence(query: Map<string, string>): Promise<Response> {
    const read = this.#o.view.evidence?.bind(this.#o.view);
    if (read === undefined) throw new RouteError(404, "not-found", "no evidence store");
    const after = query.has("after") ? parseInteger(query, "after", "bad-range") : 0;
    const limit = query.has("limit")
      ? parseInteger(query, "limit", "bad-limit")
      : EVIDENCE_PAGE_MAX;
    if (limit === 0) throw new RouteError(400, "bad-limit", "limit must be at least 1");
    if (limit > EVIDENCE_PAGE_MAX) {
      throw new RouteError(
        400,
        "range-too-large",
        `limit ${limit} is above ${EVIDENCE_PAGE_MAX} per request`,
      );
    }
    const page = (await read(after, limit)).slice(0, limit);
    const last = page[page.length - 1];
    return jsonResponse({
      records: page.map(evidenceJson),
      next: page.length === limit && last !== undefined ? last.seq : null,
    });
  }

  async #node(request: Request, hex: string): Promise<Response> {
    const hash = parseHash(hex);
    const found = await this.#o.view.nodeByHash(hash);
    if (found === null) throw new RouteError(404, "not-found", `no Node with hash ${hex}`);
    if (acceptsCbor(request)) return cborResponse(encodeValue(nodeWithCertificateCbor(found)));
    return jsonResponse(nodeWithCertificateJson(found));
  }

  async #committed(request: Request, query: Map<string, string>): Promise<Response> {
    const from = parseInteger(query, "from", "bad-range");
    const to = parseInteger(query, "to", "bad-range");
    if (from > to) throw new RouteError(400, "bad-range", `from ${from} is above to ${to}`);
    if (to - from + 1 > this.#limits.rangeMax) {
      throw new RouteError(
        400,
        "range-too-large",
        `${to - from + 1} Nodes asked, at most ${this.#limits.rangeMax} per request`,
      );
    }
    const fits = await this.#committedFitting(from, to);
    if (acceptsCbor(request)) return cborResponse(encodeValue(fits.map(nodeWithCertificateCbor)));
    return jsonResponse(fits.map(nodeWithCertificateJson));
  }

  /**
   * Committed Nodes `from..to` that fit `responseBytesMax`, read a chunk at a time, so a
   * request never reads much beyond what it answers.
   */
  async #committedFitting(from: number, to: number): Promise<NodeWithCertificate[]> {
    const out: NodeWithCertificate[] = [];
    let bytes = 0;
    for (let h = from; h <= to;) {
      const end = Math.min(to, h + COMMITTED_CHUNK_NODES - 1);
      const chunk = (await this.#o.view.committedRange(h, end)).slice(0, end - h + 1);
      for (const n of chunk) {
        bytes += encodeNode(n.node).length +
          (n.certificate === null ? 0 : encodeQC(n.certificate).length);
        if (bytes > this.#limits.responseBytesMax && out.length > 0) return out;
        out.push(n);
      }
      if (chunk.length < end - h + 1) return out; // the replica has no more
      h = end + 1;
    }
    return out;
  }

  /**
   * A commit proof (`src/light/commit_proof.ts`) that the Nodes of heights `from..to` are
   * committed: the replica's chain from `from`, cut after the first direct chain in consecutive
   * views at `to` or above with a known QC.
   */
  async #proof(query: Map<string, string>): Promise<Response> {
    const from = parseInteger(query, "from", "bad-range");
    const to = query.has("to") ? parseInteger(query, "to", "bad-range") : from;
    if (from < 1) throw new RouteError(400, "bad-range", "from must be at least 1");
    if (from > to) throw new RouteError(400, "bad-range", `from ${from} is above to ${to}`);
    if (to - from + 3 > this.#limits.rangeMax) {
      throw new RouteError(
        400,
        "range-too-large",
        `a proof of ${to - from + 1} Nodes needs more than ${this.#limits.rangeMax} Nodes`,
      );
    }
    // Read only what the request was charged for (admission: `to - from + 1 + lookahead`).
    const read = Math.min(this.#limits.rangeMax, to - from + 1 + PROOF_LOOKAHEAD_NODES);
    const view = this.#o.view;
    const { nodes, configs } = await readChainWithConfigs(view, from, read);
    const proof = await buildCommitProof(
      nodes,
      from,
      to,
      async (hash) => (await view.nodeByHash(hash))?.certificate ?? null,
      configs,
    );
    if (proof === null) {
      throw new RouteError(404, "no-proof", `no commit at height ${to} or above is known yet`);
    }
    return cborResponse(encodeCommitProof(proof));
  }

  async #chain(query: Map<string, string>): Promise<Response> {
    const from = parseInteger(query, "from", "bad-range");
    const limit = parseInteger(query, "limit", "bad-limit");
    if (limit === 0) throw new RouteError(400, "bad-limit", "limit must be at least 1");
    if (limit > this.#limits.rangeMax) {
      throw new RouteError(
        400,
        "range-too-large",
        `limit ${limit} is above ${this.#limits.rangeMax} per request`,
      );
    }
    const nodes = await this.#o.view.chainFrom(from, limit);
    const encoded = fitting(
      nodes.slice(0, limit).map(encodeNode),
      this.#limits.responseBytesMax,
      (b) => b.length,
    );
    return cborResponse(encodeValue(encoded));
  }

  #failure(request: Request, e: unknown): Response {
    if (e instanceof RouteError) return errorResponse(e.status, e.reason, e.message, e.allow);
    return this.#internalError(`${request.method} ${clip(new URL(request.url).pathname)}`, e);
  }

  #internalError(where: string, e: unknown): Response {
    this.#log("http:handler-error", {
      reason: "internal",
      where,
      message: e instanceof Error ? e.message : String(e),
    });
    return errorResponse(500, "internal", "internal error");
  }
}

// ---------------------------------------------------------------------------------------------
// Routes and parameters

/**
 * A refusal of an HTTP request, by the built-in routes or an application's: answered as JSON
 * `{"error", "reason"}` with this status (see {@link errorResponse}).
 *
 * @example
 * ```ts
 * import { RouteError } from "./http.ts";
 * throw new RouteError(405, "method-not-allowed", "PATCH is not allowed", "GET, PUT");
 * ```
 */
export class RouteError extends HotStuffError {
  /** HTTP status, 400 to 599. */
  readonly status: number;
  /** For a 405: the methods the route takes (the `Allow` header). */
  readonly allow: string | undefined;

  /**
   * A refusal with this status, reason and message.
   *
   * @param status HTTP status, 400 to 599
   * @param reason machine-readable reason
   * @param message what was wrong, with the offending value
   * @param allow for a 405, the methods the route takes
   */
  constructor(status: number, reason: string, message: string, allow?: string) {
    super(reason, message);
    assert(Number.isInteger(status) && status >= 400 && status <= 599, `status ${status}`);
    this.name = "RouteError";
    this.status = status;
    this.allow = allow;
  }
}

type RouteName = "status" | "node" | "committed" | "chain" | "proof" | "evidence";

interface Route {
  readonly name: RouteName;
  readonly pattern: URLPattern;
  /** The query parameters the route takes; any other is refused. */
  readonly query: readonly string[];
}

const ROUTES: readonly Route[] = [
  { name: "status", pattern: new URLPattern({ pathname: "/status" }), query: [] },
  { name: "node", pattern: new URLPattern({ pathname: "/nodes/:hash" }), query: [] },
  { name: "committed", pattern: new URLPattern({ pathname: "/committed" }), query: ["from", "to"] },
  { name: "chain", pattern: new URLPattern({ pathname: "/chain" }), query: ["from", "limit"] },
  { name: "proof", pattern: new URLPattern({ pathname: "/proof" }), query: ["from", "to"] },
  {
    name: "evidence",
    pattern: new URLPattern({ pathname: "/evidence" }),
    query: ["after", "limit"],
  },
];

/** Most evidence records per `GET /evidence` page (each holds two signed messages). */
export const EVIDENCE_PAGE_MAX = 32;

function evidenceJson(entry: EvidenceEntry): Record<string, unknown> {
  const e = entry.evidence;
  const nodes = e.kind === "double-vote"
    ? [e.first.nodeHash, e.second.nodeHash]
    : [nodeHash(e.first.node), nodeHash(e.second.node)];
  return {
    seq: entry.seq,
    kind: e.kind,
    offender: toHex(evidenceOffender(e)),
    view: evidenceView(e),
    nodes: nodes.map(toHex),
    record: toHex(encodeEvidence(e)),
  };
}

function matchRoute(
  pathname: string,
): { route: Route; params: Record<string, string | undefined> } | null {
  for (const route of ROUTES) {
    const m = route.pattern.exec({ pathname });
    if (m !== null) return { route, params: m.pathname.groups };
  }
  return null;
}

/**
 * The query as a map, refusing parameters the route does not take and repeated ones.
 *
 * @example
 * ```ts
 * import { readQuery } from "./http.ts";
 * readQuery(new URLSearchParams("wait=commit"), ["wait"]).get("wait"); // "commit"
 * ```
 */
export function readQuery(
  params: URLSearchParams,
  allowed: readonly string[],
): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, value] of params) {
    if (!allowed.includes(name)) {
      throw new RouteError(400, "unknown-parameter", `unknown query parameter ${clip(name)}`);
    }
    if (out.has(name)) {
      throw new RouteError(400, "duplicate-parameter", `query parameter ${name} given twice`);
    }
    out.set(name, value);
  }
  return out;
}

const DIGITS = /^[0-9]{1,16}$/;
const MIB = 1024 * 1024;
/** How late an announced oversized body is refused, per MiB announced, ms. */
const OVERSIZE_DELAY_PER_MIB_MS = 2_000;
/** ... and at most, ms. */
const OVERSIZE_DELAY_MAX_MS = 10_000;
/** Refusals of oversized bodies waiting at once, at most (beyond: answered at once). */
const TARPIT_MAX = 256;
/** `/committed` reads this many Nodes at a time, and stops once the answer is full. */
const COMMITTED_CHUNK_NODES = 32;
const HASH_HEX = /^[0-9a-fA-F]{64}$/;

/** A required non-negative decimal safe integer. */
function parseInteger(query: Map<string, string>, name: string, reason: string): number {
  const value = query.get(name);
  if (value === undefined) throw new RouteError(400, reason, `missing query parameter ${name}`);
  const n = DIGITS.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) {
    throw new RouteError(400, reason, `${name} must be a decimal safe integer: ${clip(value)}`);
  }
  return n;
}

function parseHash(hex: string): Uint8Array {
  if (!HASH_HEX.test(hex)) {
    throw new RouteError(400, "bad-hash", `hash must be 64 hex digits: ${clip(hex)}`);
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Whether the `Accept` header lists `application/cbor` with a non-zero quality. */
function acceptsCbor(request: Request): boolean {
  const accept = request.headers.get("accept");
  if (accept === null) return false;
  return accept.split(",").some((item) => {
    const [type, ...params] = item.split(";").map((s) => s.trim().toLowerCase());
    if (type !== "application/cbor") return false;
    const q = params.find((p) => p.startsWith("q="));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/** A strict `Content-Length`, or null when absent or not a plain decimal number. */
function contentLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  if (value === null || !DIGITS.test(value)) return null;
  return Number(value);
}

// ---------------------------------------------------------------------------------------------
// Encodings

function nodeWithCertificateCbor(n: NodeWithCertificate): unknown[] {
  return [encodeNode(n.node), n.certificate === null ? null : encodeQC(n.certificate), n.committed];
}

function nodeWithCertificateJson(n: NodeWithCertificate): Record<string, unknown> {
  return {
    node: nodeJson(n.node, n.hash),
    certificate: n.certificate === null ? null : qcJson(n.certificate),
    committed: n.committed,
  };
}

function nodeJson(node: Node, hash: Uint8Array): Record<string, unknown> {
  return {
    hash: toHex(hash),
    view: node.view,
    height: node.height,
    parent: toHex(node.parent),
    proposer: toHex(node.proposer),
    stateRoot: toHex(node.stateRoot),
    command: toBase64(node.command),
    commandBytes: node.command.length,
    justify: qcJson(node.justify),
  };
}

function qcJson(qc: QuorumCertificate): Record<string, unknown> {
  return {
    view: qc.view,
    nodeHash: toHex(qc.nodeHash),
    signers: qc.signatures.map((s) => toHex(s.signer)),
  };
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The longest prefix of `items` whose sizes sum to at most `max`; never empty unless `items` is. */
function fitting<T>(items: readonly T[], max: number, size: (item: T) => number): T[] {
  const out: T[] = [];
  let total = 0;
  for (const item of items) {
    total += size(item);
    if (total > max && out.length > 0) break;
    out.push(item);
  }
  return out;
}

/**
 * A JSON response; a 503 tells the client to retry after a second.
 *
 * @example
 * ```ts
 * import { jsonResponse } from "./http.ts";
 * jsonResponse({ ok: true }).headers.get("content-type"); // "application/json; charset=utf-8"
 * ```
 */
export function jsonResponse(value: unknown, status = 200): Response {
  const headers: Record<string, string> = {
    "content-type": "application/json; charset=utf-8",
    vary: "accept",
  };
  if (status === 503) headers["retry-after"] = "1";
  return new Response(JSON.stringify(value), { status, headers });
}

function cborResponse(bytes: Uint8Array): Response {
  // Our encoder's bytes always sit on a plain ArrayBuffer.
  return new Response(bytes as Uint8Array<ArrayBuffer>, {
    headers: { "content-type": "application/cbor", vary: "accept" },
  });
}

/**
 * A JSON error answer in the API's shape, `{"error": message, "reason": reason}`, for extra
 * routes to refuse requests the same way the built-in routes do.
 *
 * @param status HTTP status, 400 to 599
 * @param reason machine-readable reason
 * @param message what was wrong, with the offending value
 * @param allow for a 405, the methods the route takes (default `GET`)
 * @example
 * ```ts
 * import { errorResponse } from "./http.ts";
 * const res = errorResponse(400, "bad-key", "key must be hex: zz");
 * console.log(res.status, await res.json()); // 400 { error: "key must be hex: zz", reason: "bad-key" }
 * ```
 */
export function errorResponse(
  status: number,
  reason: string,
  message: string,
  allow = "GET",
): Response {
  assert(Number.isInteger(status) && status >= 400 && status <= 599, `status ${status}`);
  const response = jsonResponse({ error: message, reason }, status);
  if (status === 405) response.headers.set("allow", allow);
  return response;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function refusalResponse(refusal: Refusal): Response {
  const response = errorResponse(refusal.status, refusal.reason, refusal.message);
  if (refusal.retryAfterS === null) response.headers.delete("retry-after");
  else response.headers.set("retry-after", String(refusal.retryAfterS));
  return response;
}

function tooLarge(message: string): RouteError {
  return new RouteError(413, "body-too-large", message);
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** At most 64 characters of client input, for error messages. */
function clip(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s);
}

function checkInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER) {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError("bad-option", `${name} must be an integer in ${min}..${max}: ${value}`);
  }
}

function defaultLog(event: string, fields: Record<string, unknown>): void {
  console.error(event, fields);
}
