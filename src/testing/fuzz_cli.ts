/**
 * Command line for the decoder fuzzer: `deno task fuzz [--runs N] [--seed S]`.
 *
 * Prints a summary line `N inputs, E uncaught exceptions, ...` and exits with 1 if any decoder
 * threw, returned a malformed result or accepted an input that does not round-trip; with 2 on
 * bad flags; else with 0. Without `--seed` a random seed is used and printed, so that any failure
 * can be replayed.
 *
 * @example
 * ```sh
 * deno task fuzz --runs 1000000 --seed 42
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { fuzzDecoders, type FuzzReport } from "./fuzz.ts";

/** Inputs decoded when `--runs` is not given. */
export const FUZZ_RUNS_DEFAULT = 100_000;

/** Where {@link main} writes: one call per line. */
export interface CliOutput {
  /** Standard output. */
  readonly out: (line: string) => void;
  /** Standard error. */
  readonly err: (line: string) => void;
}

const USAGE = "usage: deno task fuzz [--runs N] [--seed S]";

/**
 * Runs the fuzzer as the command line would, and resolves to the exit code.
 *
 * @example
 * ```ts
 * import { main } from "./fuzz_cli.ts";
 * const code = await main(["--runs", "1000", "--seed", "1"]);
 * ```
 */
export async function main(
  args: readonly string[],
  output: CliOutput = { out: console.log, err: console.error },
): Promise<number> {
  const flags = parseFlags(args);
  if (flags === "help") {
    output.out(USAGE);
    return 0;
  }
  if (typeof flags === "string") {
    output.err(`fuzz: ${flags} (${USAGE})`);
    return 2;
  }
  const report = await fuzzDecoders(flags);
  for (const line of summary(report)) output.out(line);
  for (const f of report.failures) {
    output.err(`${f.kind} in decode ${f.target}, input ${f.run}: ${f.detail}`);
    output.err(`  input: ${clip(f.inputHex)}`);
  }
  const failed = report.uncaughtExceptions + report.badResults + report.roundTripFailures;
  return failed > 0 ? 1 : 0;
}

/** The validated flags, "help", or a one-line error. */
function parseFlags(args: readonly string[]): { runs: number; seed: number } | "help" | string {
  let values: { runs?: string; seed?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        runs: { type: "string" },
        seed: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).replaceAll("\n", " ");
  }
  if (values.help === true) return "help";
  const runs = values.runs === undefined ? FUZZ_RUNS_DEFAULT : parseInteger(values.runs, false);
  if (runs === null) {
    return `--runs must be a non-negative integer, got ${JSON.stringify(values.runs)}`;
  }
  const seed = values.seed === undefined ? randomSeed() : parseInteger(values.seed, true);
  if (seed === null) return `--seed must be an integer, got ${JSON.stringify(values.seed)}`;
  return { runs, seed };
}

function parseInteger(text: string, signed: boolean): number | null {
  if (!(signed ? /^-?\d+$/ : /^\d+$/).test(text)) return null;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : null;
}

/** Hex longer than this is cut in the output; the seed replays the full input. */
const HEX_CHARS_MAX = 512;

function clip(hex: string): string {
  if (hex.length <= HEX_CHARS_MAX) return hex;
  return `${hex.slice(0, HEX_CHARS_MAX)}... (${hex.length / 2} bytes)`;
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

function summary(r: FuzzReport): string[] {
  const rate = r.elapsedMs > 0 ? Math.round(r.inputs / (r.elapsedMs / 1000)) : 0;
  const reasons = Object.entries(r.rejected).map(([k, v]) => `${k} ${v}`).join(", ");
  return [
    `${r.inputs} inputs, ${r.uncaughtExceptions} uncaught exceptions, ` +
    `${r.badResults} bad results, ${r.roundTripFailures} round-trip failures ` +
    `(seed ${r.seed}, ${rate} inputs/s, slowest ${r.slowest.ms.toFixed(2)} ms)`,
    `accepted ${r.accepted}; rejected: ${reasons || "none"}`,
  ];
}

if (import.meta.main) Deno.exit(await main(Deno.args));
