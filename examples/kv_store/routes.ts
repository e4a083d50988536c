/**
 * The key-value store's HTTP API, served by each replica next to the library's routes:
 *
 * | method and path | body | answer |
 * |---|---|---|
 * | `PUT /kv/{key}` | the value (at most {@link KV_VALUE_BYTES_MAX} bytes) | after commit: `200 {"id", "height", "node"}` |
 * | `DELETE /kv/{key}` | none | after commit: `200 {"id", "height", "node"}` |
 * | `GET /kv/{key}` | none | the committed value (`200`, raw bytes), or `404 {"error", "reason": "not-found"}` |
 * | `GET /kv/{key}?proof` | none | a key proof (`application/cbor`, SPECIFICATION.md 15.3) of the value or absence of state key `"k/" + key` at the newest provable checkpoint, or `404 no-proof` |
 *
 * `{key}` is one URL path segment (percent-encoding allowed) of 1 to 256 UTF-8 bytes; anything
 * else is `400 bad-key`. Refusals are JSON `{"error", "reason"}` (see `src/runtime/replica.ts` for the
 * mempool's: `503 pool-full`, `504 wait-timeout`, ...).
 *
 * @module
 */
import {
  encodeKeyProof,
  errorResponse,
  readBodyLimited,
  type Replica,
  RouteError,
} from "../../mod.ts";
import { encodeKvCommand, KV_KEY_BYTES_MAX, KV_VALUE_BYTES_MAX, kvStateKey } from "./app.ts";

const encoder = new TextEncoder();
const PREFIX = "/kv/";

/**
 * Parses the key of a `/kv/{key}` path, or null when the path is not under `/kv/`.
 *
 * @throws {RouteError} 400 `bad-key` for an empty, malformed or too long key
 * @example
 * ```ts
 * import { parseKeyPath } from "./routes.ts";
 * parseKeyPath("/kv/hello"); // bytes of "hello"
 * ```
 */
export function parseKeyPath(pathname: string): Uint8Array | null {
  if (!pathname.startsWith(PREFIX)) return null;
  const segment = pathname.slice(PREFIX.length);
  if (segment.length === 0 || segment.includes("/")) {
    throw new RouteError(400, "bad-key", "the key must be one non-empty path segment");
  }
  let text: string;
  try {
    text = decodeURIComponent(segment);
  } catch {
    throw new RouteError(400, "bad-key", `the key is not valid percent-encoded UTF-8`);
  }
  const key = encoder.encode(text);
  if (key.length > KV_KEY_BYTES_MAX) {
    throw new RouteError(400, "bad-key", `key of ${key.length} bytes exceeds ${KV_KEY_BYTES_MAX}`);
  }
  return key;
}

/**
 * The key-value routes, for {@link ReplicaOptions.routes}.
 *
 * @example
 * ```ts
 * import { kvRoutes } from "./routes.ts";
 * import { kvMachine } from "./app.ts";
 * import { type ReplicaOptions, startReplica } from "../../mod.ts";
 * async function start(options: Omit<ReplicaOptions, "machine" | "routes">): Promise<void> {
 *   await startReplica({ ...options, machine: kvMachine, routes: kvRoutes });
 * }
 * ```
 */
export async function kvRoutes(
  request: Request,
  url: URL,
  replica: Replica,
): Promise<Response | null> {
  const key = parseKeyPath(url.pathname);
  if (key === null) return null;
  if (url.search === "?proof" && request.method === "GET") return await proveKey(replica, key);
  if (url.search !== "") {
    throw new RouteError(400, "unknown-parameter", "no query parameters but ?proof on GET");
  }
  switch (request.method) {
    case "GET":
    case "HEAD": {
      const value = await replica.committedState(kvStateKey(key));
      if (value === null) {
        return errorResponse(404, "not-found", `no value for key ${url.pathname}`);
      }
      return new Response(request.method === "HEAD" ? null : value as Uint8Array<ArrayBuffer>, {
        headers: { "content-type": "application/octet-stream" },
      });
    }
    case "PUT": {
      const value = await readBodyLimited(request, KV_VALUE_BYTES_MAX);
      return await write(replica, encodeKvCommand({ op: "set", key, value }, nonce()));
    }
    case "DELETE":
      return await write(replica, encodeKvCommand({ op: "del", key }, nonce()));
    default:
      throw new RouteError(
        405,
        "method-not-allowed",
        `${request.method} is not allowed`,
        "GET, PUT, DELETE",
      );
  }
}

/**
 * `GET /kv/{key}?proof`: a key proof (`src/light/state_proof.ts`) of the key's value or absence
 * in the newest provable checkpoint.
 */
async function proveKey(replica: Replica, key: Uint8Array): Promise<Response> {
  if (replica.state === null) {
    throw new RouteError(404, "no-proof", "this replica keeps no state tree");
  }
  const proof = await replica.state.keyProof(kvStateKey(key), replica);
  if (proof === null) throw new RouteError(404, "no-proof", "no provable checkpoint yet");
  return new Response(encodeKeyProof(proof) as Uint8Array<ArrayBuffer>, {
    headers: { "content-type": "application/cbor" },
  });
}

async function write(replica: Replica, command: Uint8Array): Promise<Response> {
  const [done] = await replica.submit([command], { wait: true });
  return new Response(JSON.stringify(done), {
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}

function nonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(16));
}
