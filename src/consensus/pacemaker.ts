/**
 * The Pacemaker's timing: view timeouts with exponential backoff that resets on progress.
 * See SPECIFICATION.md section 8. Time enters as numbers (milliseconds) passed in by the caller.
 *
 * @module
 */

/**
 * Pacemaker timing options.
 *
 * @example
 * ```ts
 * import type { PacemakerOptions } from "./pacemaker.ts";
 * const lan: PacemakerOptions = { viewTimeoutMinMs: 250, viewTimeoutMaxMs: 4_000 };
 * ```
 */
export interface PacemakerOptions {
  /** Timeout of a view after progress, ms. Default 1000. */
  readonly viewTimeoutMinMs: number;
  /** Largest view timeout, ms. Default 30000. */
  readonly viewTimeoutMaxMs: number;
}

/**
 * The default {@link PacemakerOptions}.
 *
 * @example
 * ```ts
 * import { DEFAULT_PACEMAKER_OPTIONS } from "./pacemaker.ts";
 * console.log(DEFAULT_PACEMAKER_OPTIONS.viewTimeoutMinMs); // 1000
 * ```
 */
export const DEFAULT_PACEMAKER_OPTIONS: PacemakerOptions = {
  viewTimeoutMinMs: 1000,
  viewTimeoutMaxMs: 30_000,
};

/**
 * Spec 8.1: the timeout of a view entered after `failures` consecutive views without a QC is
 * `min(viewTimeoutMinMs * 2^failures, viewTimeoutMaxMs)`.
 *
 * @example
 * ```ts
 * import { DEFAULT_PACEMAKER_OPTIONS, viewTimeout } from "./pacemaker.ts";
 * viewTimeout(DEFAULT_PACEMAKER_OPTIONS, 2); // 4000
 * ```
 */
export function viewTimeout(options: PacemakerOptions, failures: number): number {
  const exp = Math.min(failures, 30);
  return Math.min(options.viewTimeoutMinMs * 2 ** exp, options.viewTimeoutMaxMs);
}
