/**
 * Running wrk (a Debian package) from the bench: whether it is installed, and one run with its
 * summary parsed. Sections (g) and (h) use it.
 *
 * @module
 */

/** What wrk reported. */
export interface WrkSummary {
  /** Requests completed. */
  readonly requests: number | null;
  /** Requests per second over the run. */
  readonly requestsPerSecond: number | null;
  /** Answers that were not 2xx or 3xx. */
  readonly non2xx: number | null;
  /** wrk's socket error line, if any. */
  readonly socketErrors: string | null;
  /** Latency quantiles, ms (with `latency`). */
  readonly latencyMs: { readonly p50: number | null; readonly p99: number | null };
  /** The start of wrk's output. */
  readonly text: string;
}

/** How to run wrk. */
export interface WrkOptions {
  /** Threads (`-t`). */
  readonly threads: number;
  /** Connections (`-c`). */
  readonly connections: number;
  /** Duration, seconds (`-d`). */
  readonly seconds: number;
  /** A Lua script (`-s`). */
  readonly script: string;
  /** Ask for latency quantiles (`--latency`). */
  readonly latency?: boolean;
  /** Environment of the wrk process (read by the script with os.getenv). */
  readonly env?: Record<string, string>;
}

/**
 * Whether `wrk` can be run.
 *
 * @example
 * ```ts
 * import { hasWrk } from "./wrk.ts";
 * // if (!(await hasWrk())) console.log("apt-get install wrk");
 * ```
 */
export async function hasWrk(): Promise<boolean> {
  try {
    const out = await new Deno.Command("wrk", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.code === 0 || out.code === 1; // wrk --version exits 1 after printing its version
  } catch {
    return false;
  }
}

/**
 * Runs wrk against `url` and parses its summary.
 *
 * @example
 * ```ts
 * import { runWrk } from "./wrk.ts";
 * // const s = await runWrk("http://127.0.0.1:9001", { threads: 1, connections: 10, seconds: 5, script });
 * ```
 */
export async function runWrk(url: string, o: WrkOptions): Promise<WrkSummary> {
  const args = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, "--timeout", "10s"];
  if (o.latency === true) args.push("--latency");
  args.push("-s", o.script, url);
  const out = await new Deno.Command("wrk", {
    args,
    env: o.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const num = (re: RegExp): number | null => {
    const m = re.exec(text);
    return m === null ? null : Number(m[1]);
  };
  return {
    requests: num(/(\d+) requests in/),
    requestsPerSecond: num(/Requests\/sec:\s+([\d.]+)/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    socketErrors: /Socket errors: (.*)/.exec(text)?.[1] ?? null,
    latencyMs: { p50: quantileMs(text, "50%"), p99: quantileMs(text, "99%") },
    text: text.slice(0, 2000),
  };
}

/** A `--latency` line such as `     50%   24.33ms`, in ms. */
function quantileMs(text: string, label: string): number | null {
  const m = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s)\\s*$`, "m").exec(text);
  if (m === null) return null;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}
