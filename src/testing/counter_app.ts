/**
 * The simulator's default Application: a counter. The leader proposes a small command; every
 * replica adds the command's first byte to a counter read through the pending-state view, so the
 * speculative-execution path is exercised on every Node.
 *
 * @module
 */
import type { Application } from "../app.ts";

const COUNT = new TextEncoder().encode("count");
const LAST = new TextEncoder().encode("last");

function decodeCount(bytes: Uint8Array | null): number {
  if (bytes === null || bytes.length !== 8) return 0;
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0));
}

function encodeCount(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/**
 * A deterministic counter Application.
 *
 * @example
 * ```ts
 * import { counterApp } from "./counter_app.ts";
 * const app = counterApp();
 * ```
 */
export function counterApp(): Application {
  return {
    produceCommand: ({ view }) => ({ command: new Uint8Array([1 + (view % 7), view & 0xff]) }),
    async validateNode({ node, state }) {
      if (node.command.length === 0) return { ok: false, reason: "empty command" };
      const count = decodeCount(await state.get(COUNT)) + node.command[0]!;
      return { ok: true, updates: [[COUNT, encodeCount(count)], [LAST, node.command]] };
    },
  };
}
