/**
 * The simulator's default Application: a counter. The leader proposes a small command; every
 * replica adds the command's first byte to a counter read through the pending-state view, so the
 * speculative-execution path is exercised on every Node. Given a plan, it also changes the
 * validator set (SPECIFICATION.md 3.4) at planned heights.
 *
 * @module
 */
import type { Application } from "../app.ts";
import type { ValidatorUpdate } from "../consensus/reconfig.ts";
import { readValidatorConfig } from "../consensus/reconfig.ts";

const COUNT = new TextEncoder().encode("count");
const LAST = new TextEncoder().encode("last");
const CHANGES = new TextEncoder().encode("changes");

function decodeCount(bytes: Uint8Array | null): number {
  if (bytes === null || bytes.length !== 8) return 0;
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0));
}

function encodeCount(n: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/** One planned validator-set change: made by the first Node at or above `atHeight` that may. */
export interface PlannedChange {
  /** The lowest height of the Node that makes it. */
  readonly atHeight: number;
  /** The updates (new powers by key; 0 removes). */
  readonly updates: readonly ValidatorUpdate[];
}

/**
 * A deterministic counter Application. With `plan`, the first Node at or above each change's
 * height that is not inside a handover makes that change (changes are made in plan order; the
 * index of the next one is application state, so every replica agrees).
 *
 * @example
 * ```ts
 * import { counterApp } from "./counter_app.ts";
 * const app = counterApp();
 * ```
 */
export function counterApp(plan: readonly PlannedChange[] = []): Application {
  return {
    produceCommand: ({ view }) => ({ command: new Uint8Array([1 + (view % 7), view & 0xff]) }),
    async validateNode({ node, state }) {
      if (node.command.length === 0) return { ok: false, reason: "empty command" };
      const count = decodeCount(await state.get(COUNT)) + node.command[0]!;
      const updates: [Uint8Array, Uint8Array][] = [[COUNT, encodeCount(count)], [
        LAST,
        node.command,
      ]];
      if (plan.length === 0) return { ok: true, updates };
      const done = decodeCount(await state.get(CHANGES));
      const change = plan[done];
      if (change === undefined || node.height < change.atHeight) return { ok: true, updates };
      const config = await readValidatorConfig(state);
      if (config !== null && config.next !== null) return { ok: true, updates };
      updates.push([CHANGES, encodeCount(done + 1)]);
      return { ok: true, updates, validatorUpdates: change.updates };
    },
  };
}
