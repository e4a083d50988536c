/**
 * Named error classes. Every rejection of outside input (a peer's frame, an HTTP request, a
 * file, a flag, an Application result) is one of these, with a machine-readable `reason`.
 *
 * An {@link AssertionError} is different: it means *our* code is wrong, and the replica stops.
 *
 * @module
 */

/**
 * Base class of every error this library throws on purpose.
 *
 * @example
 * ```ts
 * import { ConfigError, HotStuffError } from "./errors.ts";
 * try {
 *   throw new ConfigError("bad-option", "window must be positive");
 * } catch (e) {
 *   if (e instanceof HotStuffError) console.log(e.name, e.reason); // "ConfigError" "bad-option"
 * }
 * ```
 */
export class HotStuffError extends Error {
  /** Machine-readable reason, e.g. `"bad-length"`. */
  readonly reason: string;

  /**
   * Creates an error with a reason and a message.
   *
   * @param reason machine-readable reason
   * @param message what was wrong, with the offending value
   * @example
   * ```ts
   * const e = new HotStuffError("bad-thing", "the thing was bad: 3");
   * console.log(e.reason);
   * ```
   */
  constructor(reason: string, message: string) {
    super(message);
    this.name = "HotStuffError";
    this.reason = reason;
  }
}

/**
 * Bytes that do not decode to a well-formed value of the expected type.
 *
 * @example
 * ```ts
 * import { decodeMessage } from "./codec.ts";
 * import { DecodeError } from "./errors.ts";
 * const r = decodeMessage(new Uint8Array([0xff]));
 * if (!r.ok) console.log(r.error instanceof DecodeError, r.error.reason);
 * ```
 */
export class DecodeError extends HotStuffError {
  /**
   * Creates the error.
   *
   * @param reason machine-readable reason
   * @param message what was wrong
   */
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "DecodeError";
  }
}

/**
 * A well-formed value that breaks a protocol rule (bad signature, no quorum, unknown signer...).
 *
 * @example
 * ```ts
 * const e = new ValidationError("no-quorum", "QC power 2 of 4 is not a quorum");
 * console.log(e.name, e.reason);
 * ```
 */
export class ValidationError extends HotStuffError {
  /**
   * Creates the error.
   *
   * @param reason machine-readable reason
   * @param message what was wrong
   */
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "ValidationError";
  }
}

/**
 * Bad configuration: options, flags, config files.
 *
 * @example
 * ```ts
 * throw new ConfigError("bad-power", "power must be a positive integer: -1");
 * ```
 */
export class ConfigError extends HotStuffError {
  /**
   * Creates the error.
   *
   * @param reason machine-readable reason
   * @param message what was wrong
   */
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "ConfigError";
  }
}

/**
 * An invariant of our own code failed. This is a bug; the replica must stop.
 *
 * @example
 * ```ts
 * import { assert } from "./errors.ts";
 * assert(1 + 1 === 2, "arithmetic");
 * ```
 */
export class AssertionError extends Error {
  /**
   * Creates the error.
   *
   * @param message the invariant that failed
   */
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

/**
 * Throws an {@link AssertionError} unless `condition` holds.
 *
 * @example
 * ```ts
 * assert([1, 2].length === 2, "two items");
 * ```
 */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
