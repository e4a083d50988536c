/**
 * The replicated key-value store's state machine and its command format.
 *
 * A command is the CBOR array `[op, key, value]`, optionally followed by a nonce:
 *
 * | op | key | value | effect |
 * |---|---|---|---|
 * | `"set"` (or `"put"`) | 1..256 bytes (byte or text string) | bytes or text, at most {@link KV_VALUE_BYTES_MAX} | sets `key` |
 * | `"del"` (or `"delete"`) | 1..256 bytes | `null` | deletes `key` |
 *
 * The optional fourth element is a nonce (a byte string of at most 32 bytes). A command with a
 * given expiry height is committed at most once (its id covers its bytes and expiry), so a client
 * that writes the same value to the same key twice should make the two commands differ: the HTTP
 * API adds a random nonce to every `PUT`.
 *
 * State: the value of key `k` is the state key `"k/" + k`.
 *
 * @module
 */
import { type ApplyResult, type CommandMachine, decodeValue, encodeValue } from "../../mod.ts";

/** Longest key, bytes. */
export const KV_KEY_BYTES_MAX = 256;
/** Largest value, bytes (fits one Deno KV value with room to spare). */
export const KV_VALUE_BYTES_MAX = 60 * 1024;
/** Longest nonce, bytes. */
export const KV_NONCE_BYTES_MAX = 32;

/** One key-value operation. */
export type KvCommand =
  | { readonly op: "set"; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly op: "del"; readonly key: Uint8Array };

const encoder = new TextEncoder();
const STATE_PREFIX = encoder.encode("k/");

/**
 * Encodes a command, with a nonce if given.
 *
 * @example
 * ```ts
 * import { encodeKvCommand } from "./app.ts";
 * const k = new TextEncoder().encode("k");
 * encodeKvCommand({ op: "set", key: k, value: new Uint8Array([1]) });
 * ```
 */
export function encodeKvCommand(command: KvCommand, nonce?: Uint8Array): Uint8Array {
  const value = command.op === "set" ? command.value : null;
  const parts: unknown[] = [command.op, command.key, value];
  if (nonce !== undefined) parts.push(nonce);
  return encodeValue(parts);
}

/**
 * Decodes and checks a command; never throws.
 *
 * @param bytes the command
 * @param options `fast: false` uses the generic CBOR decoder alone (the fast path for the common
 *   shape gives the same results; tests compare the two)
 * @example
 * ```ts
 * import { decodeKvCommand } from "./app.ts";
 * decodeKvCommand(new Uint8Array([0x80])).ok; // false: an empty array
 * ```
 */
export function decodeKvCommand(
  bytes: Uint8Array,
  options: { readonly fast?: boolean } = {},
): { ok: true; command: KvCommand } | { ok: false; reason: string } {
  // The common shape is read directly (every replica decodes every command it executes); anything
  // else goes to the generic decoder, which gives the same result on what the fast path reads.
  let v: unknown = options.fast === false ? null : readCommonShape(bytes);
  if (v === null) {
    try {
      v = decodeValue(bytes);
    } catch (e) {
      return { ok: false, reason: `not CBOR: ${(e as Error).message}` };
    }
  }
  if (!Array.isArray(v) || (v.length !== 3 && v.length !== 4)) {
    return { ok: false, reason: "command must be [op, key, value] or [op, key, value, nonce]" };
  }
  const [op, rawKey, rawValue, nonce] = v as unknown[];
  const key = asBytes(rawKey);
  if (key === null || key.length < 1 || key.length > KV_KEY_BYTES_MAX) {
    return { ok: false, reason: `key must be 1..${KV_KEY_BYTES_MAX} bytes` };
  }
  if (v.length === 4 && (!(nonce instanceof Uint8Array) || nonce.length > KV_NONCE_BYTES_MAX)) {
    return { ok: false, reason: `nonce must be at most ${KV_NONCE_BYTES_MAX} bytes` };
  }
  if (op === "set" || op === "put") {
    const value = asBytes(rawValue);
    if (value === null) return { ok: false, reason: "set needs a bytes or text value" };
    if (value.length > KV_VALUE_BYTES_MAX) {
      return { ok: false, reason: `value of ${value.length} bytes exceeds ${KV_VALUE_BYTES_MAX}` };
    }
    return { ok: true, command: { op: "set", key, value } };
  }
  if (op === "del" || op === "delete") {
    if (rawValue !== null) return { ok: false, reason: "del takes a null value" };
    return { ok: true, command: { op: "del", key } };
  }
  return { ok: false, reason: `unknown op ${JSON.stringify(String(op)).slice(0, 40)}` };
}

/**
 * `["set" | "del", key bytes, value bytes or null(, nonce bytes)]` in canonical CBOR (shortest
 * heads, nothing after it), decoded to what the generic decoder gives (byte strings copied); null
 * for any other input.
 */
function readCommonShape(b: Uint8Array): unknown[] | null {
  const n = b[0] === 0x83 ? 3 : b[0] === 0x84 ? 4 : 0;
  if (n === 0 || b[1] !== 0x63) return null;
  const set = b[2] === 0x73 && b[3] === 0x65 && b[4] === 0x74; // "set"
  const del = b[2] === 0x64 && b[3] === 0x65 && b[4] === 0x6c; // "del"
  if (!set && !del) return null;
  const out: unknown[] = [set ? "set" : "del"];
  let pos = 5;
  for (let i = 1; i < n; i++) {
    if (i === 2 && del) {
      if (b[pos] !== 0xf6) return null;
      out.push(null);
      pos++;
      continue;
    }
    const item = readByteString(b, pos);
    if (item === null) return null;
    out.push(item.bytes);
    pos = item.end;
  }
  return pos === b.length ? out : null;
}

/** A canonical CBOR byte string at `pos` (a copy), and where it ends; null if it is not one. */
function readByteString(b: Uint8Array, pos: number): { bytes: Uint8Array; end: number } | null {
  const head = b[pos];
  if (head === undefined || head >> 5 !== 2) return null;
  const info = head & 0x1f;
  let len: number;
  let start = pos + 1;
  if (info < 24) len = info;
  else if (info === 24) {
    len = b[pos + 1] ?? -1;
    if (len < 24) return null;
    start = pos + 2;
  } else if (info === 25) {
    if (pos + 3 > b.length) return null;
    len = (b[pos + 1]! << 8) | b[pos + 2]!;
    if (len < 256) return null;
    start = pos + 3;
  } else return null;
  const end = start + len;
  if (end > b.length) return null;
  return { bytes: b.slice(start, end), end };
}

function asBytes(v: unknown): Uint8Array | null {
  if (v instanceof Uint8Array) return v;
  if (typeof v === "string") return encoder.encode(v);
  return null;
}

/**
 * The state key that holds the value of `key`.
 *
 * @example
 * ```ts
 * import { kvStateKey } from "./app.ts";
 * kvStateKey(new TextEncoder().encode("a")); // bytes of "k/a"
 * ```
 */
export function kvStateKey(key: Uint8Array): Uint8Array {
  const out = new Uint8Array(STATE_PREFIX.length + key.length);
  out.set(STATE_PREFIX);
  out.set(key, STATE_PREFIX.length);
  return out;
}

/**
 * The key-value state machine: each command sets or deletes one key.
 *
 * @example
 * ```ts
 * import { encodeKvCommand, kvMachine } from "./app.ts";
 * const command = encodeKvCommand({ op: "del", key: new TextEncoder().encode("k") }, new Uint8Array(8));
 * console.log(kvMachine.check?.(command)); // null: well formed
 * ```
 */
export const kvMachine: CommandMachine = {
  check(command: Uint8Array): string | null {
    const r = decodeKvCommand(command);
    return r.ok ? null : r.reason;
  },
  apply({ command }): ApplyResult {
    const r = decodeKvCommand(command);
    if (!r.ok) return r;
    const c = r.command;
    return { ok: true, updates: [[kvStateKey(c.key), c.op === "set" ? c.value : null]] };
  },
};
