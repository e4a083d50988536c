/**
 * Progress of long work, reported every few seconds rather than per step, so no long step is
 * silent and no fast step floods the log.
 *
 * @module
 */

/**
 * How often progress is reported by default, ms.
 *
 * @example
 * ```ts
 * import { PROGRESS_INTERVAL_MS, ProgressTicker } from "./progress.ts";
 * const ticker = new ProgressTicker((n: number) => console.log(`${n} done`), PROGRESS_INTERVAL_MS);
 * ```
 */
export const PROGRESS_INTERVAL_MS = 2_000;

/**
 * Calls `report` at most once per `intervalMs` (the first call only after one interval has
 * passed: work that finishes sooner says nothing).
 *
 * @example
 * ```ts
 * import { ProgressTicker } from "./progress.ts";
 * const ticker = new ProgressTicker((done: number) => console.log(`${done} done`), 2_000);
 * for (let i = 0; i < 1_000; i++) ticker.tick(i + 1); // silent: it takes less than 2 s
 * ```
 */
export class ProgressTicker<T> {
  readonly #report: (value: T) => void;
  readonly #intervalMs: number;
  #last: number;

  /** Reports through `report`, at most once per `intervalMs`. */
  constructor(report: (value: T) => void, intervalMs: number = PROGRESS_INTERVAL_MS) {
    this.#report = report;
    this.#intervalMs = intervalMs;
    this.#last = performance.now();
  }

  /** Reports `value` if an interval has passed since the last report. */
  tick(value: T): void {
    const now = performance.now();
    if (now - this.#last < this.#intervalMs) return;
    this.#last = now;
    this.#report(value);
  }
}
