/**
 * The replica's own HTTP routes beside the NodeTree HTTP API's: client commands (`POST
 * /commands`) and batches for peers (`GET /batches/{digest}`). See `replica.ts` for the table of
 * answers and refusals.
 *
 * @module
 */
import { cborArrayLength, decodeValue } from "../codec.ts";
import { jsonResponse, readBodyLimited, readQuery, RouteError } from "../net/http.ts";
import { fromHex } from "../types.ts";
import { type Mempool, MempoolError } from "./mempool.ts";

/** What the command routes need from the replica. */
export interface CommandRouteContext {
  /** The pool (batches are read from it). */
  readonly mempool: Mempool;
  /** Most body bytes read. */
  readonly bodyBytesMax: number;
  /** Submits commands as the replica does. */
  submit(
    commands: readonly Uint8Array[],
    options: { wait?: boolean; signal?: AbortSignal; expires?: number },
  ): Promise<{ id: string; expires: number; height: number | null; node: string | null }[]>;
}

/** `POST /commands`: one raw command or a CBOR array of them. */
export async function postCommands(
  ctx: CommandRouteContext,
  request: Request,
  url: URL,
): Promise<Response> {
  requirePost(request);
  const { wait, expires } = readCommandParams(url);
  const type = mediaType(request);
  const body = await readBodyLimited(request, ctx.bodyBytesMax);
  let commands: Uint8Array[];
  let single = false;
  if (type === "application/cbor") commands = decodeCommandArray(body);
  else if (type === "application/octet-stream" || type === null) {
    commands = [body];
    single = true;
  } else {
    throw new RouteError(415, "unsupported-media-type", `Content-Type ${type} is not supported`);
  }
  if (commands.length === 0) throw new RouteError(400, "bad-command", "no commands given");
  // An abandoned request stops waiting: its waiters do not outlive the client.
  const results = await ctx.submit(commands, { wait, expires, signal: request.signal });
  if (!wait) {
    const ids = results.map((r) => r.id);
    const exp = results[0]!.expires;
    return jsonResponse(single ? { id: ids[0], expires: exp } : { ids, expires: exp }, 202);
  }
  return jsonResponse(single ? results[0] : results, 200);
}

/** `GET /batches/{digest}`. */
export async function getBatch(
  ctx: CommandRouteContext,
  request: Request,
  url: URL,
): Promise<Response> {
  if (request.method !== "GET") {
    throw new RouteError(405, "method-not-allowed", `${request.method} is not allowed`, "GET");
  }
  readQuery(url.searchParams, []);
  const hex = url.pathname.slice("/batches/".length);
  const digest = /^[0-9a-f]{64}$/.test(hex) ? fromHex(hex) : null;
  if (digest === null) {
    throw new RouteError(400, "bad-digest", "a batch digest is 64 lowercase hex digits");
  }
  const bytes = await ctx.mempool.batchBytes(digest);
  if (bytes === null) throw new RouteError(404, "not-found", `no batch ${hex} here`);
  return new Response(bytes as Uint8Array<ArrayBuffer>, {
    headers: { "content-type": "application/cbor" },
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

function requirePost(request: Request): void {
  if (request.method !== "POST") {
    throw new RouteError(
      405,
      "method-not-allowed",
      `${request.method} is not allowed; use POST`,
      "POST",
    );
  }
}

/** `?wait=commit` and `?expires=H` of `POST /commands`. */
function readCommandParams(url: URL): { wait: boolean; expires: number | undefined } {
  const query = readQuery(url.searchParams, ["wait", "expires"]);
  const wait = query.get("wait");
  if (wait !== undefined && wait !== "commit") {
    throw new RouteError(400, "bad-parameter", `wait must be "commit": ${JSON.stringify(wait)}`);
  }
  const expires = query.get("expires");
  if (expires !== undefined && !/^[0-9]{1,15}$/.test(expires)) {
    throw new RouteError(400, "bad-expiry", `expires must be a height: ${JSON.stringify(expires)}`);
  }
  return { wait: wait !== undefined, expires: expires === undefined ? undefined : Number(expires) };
}

function mediaType(request: Request): string | null {
  const header = request.headers.get("content-type");
  if (header === null) return null;
  return header.split(";")[0]!.trim().toLowerCase();
}

/** How long one peer may take to answer `GET /batches/{digest}`, ms, before the next is asked. */
/** Most commands in one CBOR array body. */
const SUBMIT_COMMANDS_MAX = 65_536;

function decodeCommandArray(body: Uint8Array): Uint8Array[] {
  // The count first: decoding allocates every item.
  const count = cborArrayLength(body);
  if (count !== null && count > SUBMIT_COMMANDS_MAX) {
    throw new RouteError(400, "bad-body", `${count} commands exceed ${SUBMIT_COMMANDS_MAX}`);
  }
  let value: unknown;
  try {
    value = decodeValue(body);
  } catch (e) {
    throw new RouteError(400, "bad-body", `body is not CBOR: ${(e as Error).message}`);
  }
  if (!Array.isArray(value) || !value.every((c) => c instanceof Uint8Array)) {
    throw new RouteError(400, "bad-body", "body must be a CBOR array of byte strings");
  }
  return value as Uint8Array[];
}

const MEMPOOL_STATUS: Record<string, number> = {
  "bad-command": 400,
  "command-too-large": 413,
  "command-rejected": 422,
  "bad-expiry": 400,
  "expired": 410,
  "pool-full": 503,
  "too-many-waiters": 503,
  "closed": 503,
  "wait-timeout": 504,
};

export function asRouteError(e: unknown): RouteError | null {
  if (e instanceof RouteError) return e;
  if (e instanceof MempoolError) {
    return new RouteError(MEMPOOL_STATUS[e.reason] ?? 500, e.reason, e.message);
  }
  return null;
}
