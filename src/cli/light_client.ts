/**
 * `deno task light-client --config DIR/cluster.json [--follow SECONDS] [--key K]`: follows a
 * running cluster from commit proofs alone, trusting only the genesis validator set of the
 * cluster file (its members without `"joins": true`). It follows validator-set changes from the
 * proofs (SPECIFICATION.md 15.1-15.2): when the genesis set no longer certifies the chain at the
 * replicas' height, it starts from height 1 and prints `validators after height H: ...` at every
 * change it verifies. It prints a line per verified step, and last `verified N commits`. With `--key K` it also
 * proves the key-value example's key `K` (`GET /kv/K?proof`, SPECIFICATION.md 15.3) and prints
 * `key "K" = "value", proven at height H (node ...)` (or `is absent`) whenever the proven height
 * moves. Exit code 0 when at least one
 * commit was verified, 1 when none was, 2 for bad flags or a bad cluster file.
 *
 * @module
 */
import { LightClient, type ProvenValue } from "../light/client.ts";
import { kvStateKey } from "../../examples/kv_store/app.ts";
import { toHex } from "../types.ts";
import { genesisSetOf, readClusterConfig } from "./config.ts";
import { type ValidatorConfig, validatorConfigHash } from "../consensus/reconfig.ts";
import { intFlag, parseFlags, requireFlag, runMain } from "./flags.ts";

/** Options of {@link followCluster}. */
export interface FollowOptions {
  /** Path of the cluster file. */
  readonly config: string;
  /** How long to follow after the first verified commit, seconds (0: verify once and stop). */
  readonly followSeconds: number;
  /** Pause between rounds, ms. Default 200. */
  readonly intervalMs?: number;
  /** Where lines go (default: stdout). */
  readonly print?: (line: string) => void;
  /** Stops following early. */
  readonly signal?: AbortSignal;
  /** A key of the key-value example whose value is proven and printed (`GET /kv/{key}?proof`). */
  readonly key?: string;
}

/**
 * Follows the cluster of a cluster file; resolves to the number of commits verified.
 *
 * @example
 * ```ts
 * import { followCluster } from "./light_client.ts";
 * const n = await followCluster({ config: "cluster/cluster.json", followSeconds: 10 });
 * console.log(`verified ${n} commits`);
 * ```
 */
export async function followCluster(options: FollowOptions): Promise<number> {
  const print = options.print ?? ((line: string) => console.log(line));
  const config = await readClusterConfig(options.config);
  const client = new LightClient({
    chainId: config.chainId,
    // The genesis validators (members that join later are not trusted until a change adds them).
    validators: genesisSetOf(config),
    sources: config.validators.map((v) => `http://${hostForUrl(v.http.hostname)}:${v.http.port}`),
    onRefusal: (r) => print(`refused ${r.source}: ${r.reason}: ${r.detail}`),
  });
  const interval = options.intervalMs ?? 200;
  // Up to 30 s to reach the first verified commit, then `followSeconds` more.
  let deadline = Date.now() + 30_000;
  let started = false;
  let lastProven = 0;
  let configId = toHex(validatorConfigHash(client.config));
  while (Date.now() < deadline && options.signal?.aborted !== true) {
    const verified = await client.step();
    if (verified.length > 0) {
      const head = client.head!;
      print(
        `verified heights ${verified[0]!.height}..${head.height} (head ${
          toHex(head.hash).slice(0, 16)
        }), ${client.verifiedCount} commits so far`,
      );
      if (toHex(validatorConfigHash(client.config)) !== configId) {
        configId = toHex(validatorConfigHash(client.config));
        print(describeConfig(client.config, head.height));
      }
      if (!started) {
        started = true;
        deadline = Date.now() + options.followSeconds * 1000;
      }
    }
    if (options.key !== undefined && started) {
      const proven = await client.proveState(
        `/kv/${encodeURIComponent(options.key)}?proof`,
        kvStateKey(new TextEncoder().encode(options.key)),
      );
      if (proven !== null && proven.height !== lastProven) {
        lastProven = proven.height;
        print(describe(options.key, proven));
      }
    }
    if (started && options.followSeconds === 0 && (options.key === undefined || lastProven > 0)) {
      break;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  print(`verified ${client.verifiedCount} commits`);
  return client.verifiedCount;
}

function describe(key: string, p: ProvenValue): string {
  const where = `proven at height ${p.height} (node ${toHex(p.nodeHash).slice(0, 16)})`;
  if (p.value === null) return `key ${JSON.stringify(key)} is absent, ${where}`;
  const text = new TextDecoder("utf-8", { fatal: true });
  let shown: string;
  try {
    shown = JSON.stringify(text.decode(p.value));
  } catch {
    shown = `0x${toHex(p.value)}`;
  }
  return `key ${JSON.stringify(key)} = ${shown}, ${where}`;
}

/** A line for a validator configuration learned from a verified proof. */
function describeConfig(c: ValidatorConfig, height: number): string {
  const size = (n: number) => `${n} validator${n === 1 ? "" : "s"}`;
  return c.next === null
    ? `validators after height ${height}: ${size(c.set.validators.length)}`
    : `validators after height ${height}: handing over from ${size(c.set.validators.length)} to ${
      size(c.next.validators.length)
    }`;
}

function hostForUrl(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    config: { type: "string" },
    follow: { type: "string" },
    key: { type: "string" },
  });
  const key = flags.key;
  const n = await followCluster({
    config: requireFlag(flags, "config"),
    followSeconds: intFlag(flags, "follow", 0, 365 * 24 * 3600, 0),
    key: typeof key === "string" ? key : undefined,
  });
  return n > 0 ? 0 : 1;
}

if (import.meta.main) runMain(() => main(Deno.args), "light-client");
