/**
 * The wire form of a snapshot chunk (`GET /state/chunk`, SPECIFICATION.md 15.4): canonical CBOR
 * `[[key, value], ...]`, both byte strings. Written and read here byte by byte rather than through
 * the general codec: a chunk holds thousands of small entries, and the general decoder copies each
 * byte string and builds a token per item, which made decoding a visible share of a join. The
 * bytes are the same as `encodeValue` gives (the tests check it), so either side may use either.
 *
 * @module
 */
import { assert } from "../errors.ts";
import type { StateEntry } from "./tree.ts";

/** CBOR major types used here, shifted into the initial byte. */
const MAJOR_BYTES = 0x40;
const MAJOR_ARRAY = 0x80;

/**
 * The canonical CBOR of `entries` as `[[key, value], ...]`.
 *
 * @example
 * ```ts
 * import { decodeChunk, encodeChunk } from "./chunk.ts";
 * const bytes = encodeChunk([{ key: new Uint8Array([1]), value: new Uint8Array([2]) }]);
 * decodeChunk(bytes)?.length; // 1
 * ```
 */
export function encodeChunk(entries: readonly StateEntry[]): Uint8Array {
  let size = headBytes(entries.length);
  for (const e of entries) {
    size += 1 + headBytes(e.key.length) + e.key.length + headBytes(e.value.length) +
      e.value.length;
  }
  const out = new Uint8Array(size);
  let at = writeHead(out, 0, MAJOR_ARRAY, entries.length);
  for (const e of entries) {
    out[at++] = MAJOR_ARRAY | 2;
    at = writeHead(out, at, MAJOR_BYTES, e.key.length);
    out.set(e.key, at);
    at = writeHead(out, at + e.key.length, MAJOR_BYTES, e.value.length);
    out.set(e.value, at);
    at += e.value.length;
  }
  return out;
}

/**
 * Reads a chunk answer: canonical CBOR `[[key, value], ...]` and nothing else (shortest length
 * forms, no indefinite lengths, no trailing bytes); null otherwise. Keys and values are views into
 * `bytes` (no copies), so `bytes` must not change afterwards.
 *
 * @example
 * ```ts
 * import { decodeChunk } from "./chunk.ts";
 * decodeChunk(new Uint8Array([0x80])); // []
 * decodeChunk(new Uint8Array([0x81])); // null: an item is missing
 * ```
 */
export function decodeChunk(bytes: Uint8Array): StateEntry[] | null {
  const count = readHead(bytes, 0, MAJOR_ARRAY);
  if (count === null) return null;
  // Each entry takes at least 3 bytes: a count beyond that is a lie, refused before any work.
  if (count.value > (bytes.length - count.next) / 3) return null;
  const out: StateEntry[] = [];
  let at = count.next;
  for (let i = 0; i < count.value; i++) {
    if (bytes[at] !== (MAJOR_ARRAY | 2)) return null;
    const key = readBytes(bytes, at + 1);
    if (key === null) return null;
    const value = readBytes(bytes, key.next);
    if (value === null) return null;
    out.push({ key: key.value, value: value.value });
    at = value.next;
  }
  return at === bytes.length ? out : null;
}

/** A byte string at `at`: a view of its bytes, and where the next item starts. */
function readBytes(b: Uint8Array, at: number): { value: Uint8Array; next: number } | null {
  const head = readHead(b, at, MAJOR_BYTES);
  if (head === null || head.next + head.value > b.length) return null;
  return { value: b.subarray(head.next, head.next + head.value), next: head.next + head.value };
}

/**
 * The argument of the item of major type `major` at `at` (lengths up to 2^32 - 1, in the
 * shortest form canonical CBOR allows), and where its content starts; null for anything else.
 */
function readHead(
  b: Uint8Array,
  at: number,
  major: number,
): { value: number; next: number } | null {
  const first = b[at];
  if (first === undefined || (first & 0xe0) !== major) return null;
  const info = first & 0x1f;
  if (info < 24) return { value: info, next: at + 1 };
  const width = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : 0;
  if (width === 0 || at + 1 + width > b.length) return null;
  let value = 0;
  for (let i = 1; i <= width; i++) value = value * 256 + b[at + i]!;
  // Canonical: the shortest form that holds the value.
  const least = width === 1 ? 24 : width === 2 ? 0x100 : 0x10000;
  return value < least ? null : { value, next: at + 1 + width };
}

/** Bytes of the head of an item whose argument is `n`. */
function headBytes(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** Writes the head of an item of major type `major` with argument `n`; returns the next offset. */
function writeHead(out: Uint8Array, at: number, major: number, n: number): number {
  assert(Number.isSafeInteger(n) && n >= 0 && n < 2 ** 32, `chunk item length ${n}`);
  if (n < 24) {
    out[at] = major | n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = major | 24;
    out[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    out[at] = major | 25;
    out[at + 1] = n >>> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  out[at] = major | 26;
  out[at + 1] = n >>> 24;
  out[at + 2] = (n >>> 16) & 0xff;
  out[at + 3] = (n >>> 8) & 0xff;
  out[at + 4] = n & 0xff;
  return at + 5;
}
