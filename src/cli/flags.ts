/**
 * Command-line helpers shared by the CLI entry points: strict flag parsing (`node:util`
 * `parseArgs`) where every problem is one line naming the flag, and exit code 2 for bad usage.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ConfigError } from "../errors.ts";

/**
 * Exit code for bad flags or a bad configuration file.
 *
 * @example
 * ```ts
 * import { EXIT_USAGE } from "./flags.ts";
 * console.log(EXIT_USAGE); // 2: bad flags or configuration
 * ```
 */
export const EXIT_USAGE = 2;

/**
 * How each flag is given: a value (`string`) or present/absent (`boolean`).
 *
 * @example
 * ```ts
 * import { type FlagSpec, parseFlags } from "./flags.ts";
 * const spec: FlagSpec = { dir: { type: "string" }, force: { type: "boolean" } };
 * console.log(parseFlags(["--dir", "out", "--force"], spec)); // { dir: "out", force: true }
 * ```
 */
export type FlagSpec = Record<string, { type: "string" | "boolean" }>;

/**
 * Parses `args` strictly: unknown flags, missing values and positional arguments are refused.
 *
 * @throws {ConfigError} `bad-flag` with a one-line message naming the flag
 * @example
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * parseFlags(["--replicas", "4"], { replicas: { type: "string" } }); // { replicas: "4" }
 * ```
 */
export function parseFlags(
  args: readonly string[],
  spec: FlagSpec,
): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({ args: [...args], options: spec, strict: true });
    return values as Record<string, string | boolean | undefined>;
  } catch (e) {
    const message = (e as Error).message.split("\n")[0]!.replace(/\. To specify.*$/, "");
    throw new ConfigError("bad-flag", message);
  }
}

/**
 * A required flag's string value.
 *
 * @throws {ConfigError} `bad-flag` when missing or empty
 * @example
 * ```ts
 * import { requireFlag } from "./flags.ts";
 * requireFlag({ dir: "x" }, "dir"); // "x"
 * ```
 */
export function requireFlag(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v.length === 0) {
    throw new ConfigError("bad-flag", `missing required flag --${name}`);
  }
  return v;
}

/**
 * An integer flag in `min..max`, or `fallback` when absent.
 *
 * @throws {ConfigError} `bad-flag` naming the flag and the value
 * @example
 * ```ts
 * import { intFlag } from "./flags.ts";
 * intFlag({ replicas: "4" }, "replicas", 1, 100, 4); // 4
 * ```
 */
export function intFlag(
  values: Record<string, unknown>,
  name: string,
  min: number,
  max: number,
  fallback: number,
): number {
  const v = values[name];
  if (v === undefined) return fallback;
  const n = typeof v === "string" && /^[0-9]{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(
      "bad-flag",
      `--${name} must be an integer ${min}..${max}: ${JSON.stringify(v)}`,
    );
  }
  return n;
}

/**
 * Runs a CLI main: a {@link ConfigError} prints `error: message` (one line) and exits with
 * {@link EXIT_USAGE}; another error prints its stack and exits 1; otherwise exits with the code
 * `main` returns.
 *
 * @example
 * ```ts
 * import { runMain } from "./flags.ts";
 * import { initMain } from "./init.ts";
 * if (import.meta.main) await runMain(() => initMain(Deno.args), "init");
 * ```
 */
export async function runMain(main: () => Promise<number>, program: string): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`${program}: error: ${e.message}`);
      code = EXIT_USAGE;
    } else {
      console.error(`${program}: failed:`, e);
      code = 1;
    }
  }
  Deno.exit(code);
}
