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
 * @example
 * ```ts
 * import { decodeKvCommand } from "./app.ts";
 * decodeKvCommand(new Uint8Array([0x80])).ok; // false: an empty array
 * ```
 */
export function decodeKvCommand(
  bytes: Uint8Array,
): { ok: true; command: KvCommand } | { ok: false; reason: string } {
  let v: unknown;
  try {
    v = decodeValue(bytes);
  } catch (e) {
    return { ok: false, reason: `not CBOR: ${(e as Error).message}` };
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
 * import { kvMachine } from "./app.ts";
 * // new Mempool(kvMachine) or startReplica({ machine: kvMachine, ... })
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
