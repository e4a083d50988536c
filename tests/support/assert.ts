/** Assertions shared by the network tests: plain Errors with the message, JSON equality. */
import { bytesEqual } from "../../src/types.ts";

/** Throws unless `condition` holds. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** Throws unless `actual` and `expected` are equal bytes, or have the same JSON form. */
export function assertEquals(actual: unknown, expected: unknown, message: string): void {
  if (actual instanceof Uint8Array && expected instanceof Uint8Array) {
    assert(bytesEqual(actual, expected), `${message}: bytes differ`);
    return;
  }
  const a = JSON.stringify(actual, replacer);
  const e = JSON.stringify(expected, replacer);
  if (a !== e) throw new Error(`${message}: expected ${e}, got ${a}`);
}

function replacer(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? `bytes(${Array.from(value).join(",")})` : value;
}
