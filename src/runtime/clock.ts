/**
 * Real time for the runtime: a `setTimeout` {@link Clock} for the Engine, and an abortable sleep.
 *
 * @module
 */
import type { Clock } from "./engine.ts";

/**
 * A `setTimeout` clock with one timer: monotonic milliseconds (`performance.now`).
 *
 * @example
 * ```ts
 * import { systemClock } from "./clock.ts";
 * const clock = systemClock();
 * clock.setTimer(clock.now() + 10, () => console.log("tick"));
 * clock.clearTimer();
 * ```
 */
export function systemClock(): Clock {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return {
    now: () => performance.now(),
    setTimer(at: number, callback: () => void): void {
      clearTimeout(timer);
      // Never early: setTimeout truncates fractional delays and may fire a little before `at`,
      // and the core ignores a tick before its deadline (without arming a new timer).
      const delay = (): number => Math.max(0, Math.ceil(at - performance.now()));
      const fire = (): void => {
        if (performance.now() < at) {
          timer = setTimeout(fire, delay());
          return;
        }
        timer = undefined;
        callback();
      };
      timer = setTimeout(fire, delay());
    },
    clearTimer(): void {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

/**
 * Resolves after `ms` milliseconds, or as soon as `signal` aborts (at once if it already has).
 *
 * @example
 * ```ts
 * import { sleep } from "./clock.ts";
 * await sleep(1, new AbortController().signal);
 * ```
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
