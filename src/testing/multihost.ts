/**
 * `deno task multihost`: four replicas of the key-value store on four hosts made as network
 * namespaces, under client load and real network faults; then every acknowledged write must be
 * on every replica.
 *
 * ```
 * deno task multihost [--duration S] [--keep]
 * ```
 *
 * 1. **Hosts.** Four network namespaces, each joined to one bridge in the default namespace by a
 *    veth pair, each with its own address in a private /24 (`10.231.X.1` .. `10.231.X.4`, X from
 *    the process id; the bridge is `.254`). Traffic goes only to these addresses.
 * 2. **Cluster.** `deno task init --replicas 4 --hosts <the four addresses>` (the ordinary CLI,
 *    as a subprocess; its default, encrypted consensus links), then one `examples/kv_store/replica.ts` per host under
 *    `ip netns exec`, with the ordinary flags.
 * 3. **Load.** Four clients in the default namespace write through random replicas (as the kill
 *    loop's clients do: each key once, every 200 remembered as acknowledged).
 * 4. **Faults**, each for a quarter of `--duration` (default 60 s), each followed by a check that
 *    the cluster commits and that the faulty host catches up:
 *    - *link down*: host 3's veth is set down (`ip link set ... down`), then up;
 *    - *partition*: host 0 is cut off from hosts 1 and 2 (blackhole routes on both sides: the
 *      packets are dropped at the IP layer), while it still reaches host 3 and the clients;
 *    - *crash*: replica 1 is SIGKILLed and restarted from its data directory.
 * 5. **Check.** The clients stop; every replica must reach the last acknowledged height, return
 *    every acknowledged write with its value, and agree on the committed chain.
 *
 * Ends with `multihost: N acknowledged writes, L lost` (exit 1 when L > 0 or a check fails, 2 on
 * bad flags, 3 when network namespaces cannot be made here: not root, no `ip`). Every process and
 * namespace it made is removed at the end, on failure too (and on SIGINT/SIGTERM).
 *
 * @module
 */
import { intFlag, parseFlags, runMain } from "../cli/flags.ts";
import {
  chainDisagreements,
  Clients,
  committedChain,
  heightsOf,
  logTails,
  lostWrites,
  waitForAll,
} from "./kill_loop.ts";
import { ProcessCluster, sleep } from "../../examples/kv_store/cluster.ts";

/** Number of hosts (and replicas). */
export const MULTIHOST_HOSTS = 4;
/** Default `--duration`, seconds. */
export const MULTIHOST_DURATION_DEFAULT_S = 60;
/** Exit code when network namespaces cannot be made. */
export const EXIT_SKIPPED = 3;

/** How long a phase may wait for commits, ms. */
const PROGRESS_TIMEOUT_MS = 60_000;
const INIT_ENTRY = new URL("../cli/init.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;

/** Options of {@link runMultihost}. */
export interface MultihostOptions {
  /** Total time of the fault phases, seconds (at least 8). */
  readonly durationS: number;
  /** Keep the cluster directory afterwards (it is kept on failure anyway). */
  readonly keep?: boolean;
  /** Progress lines. Default: none. */
  readonly log?: (line: string) => void;
}

/** What {@link runMultihost} found. */
export interface MultihostReport {
  /** Writes answered 200. */
  readonly acknowledgedWrites: number;
  /** Acknowledged writes missing or wrong on some replica (count of (key, replica) pairs). */
  readonly lost: number;
  /** Heights where the replicas' committed chains differ. */
  readonly disagreements: number;
  /** Client requests not acknowledged (expected while a host is cut off). */
  readonly clientErrors: number;
  /** Height every replica committed. */
  readonly commonHeight: number;
  /** Faults injected, in order. */
  readonly faults: readonly string[];
  /** The consensus links, as the cluster file says (`deno task init`'s default: encrypted). */
  readonly links: "encrypted" | "plaintext";
}

// ---------------------------------------------------------------------------------------------
// Hosts as network namespaces

/**
 * Four hosts as network namespaces on one bridge. {@link VirtualHosts.remove} deletes them all.
 *
 * @example
 * ```ts
 * import { VirtualHosts } from "./multihost.ts";
 * const hosts = await VirtualHosts.create(4); // needs root and `ip`
 * await hosts.remove();
 * ```
 */
export class VirtualHosts {
  /** Each host's address. */
  readonly addresses: readonly string[];
  /** Each host's namespace name. */
  readonly namespaces: readonly string[];
  readonly #tag: string;
  readonly #subnet: string;

  private constructor(n: number) {
    // Unique per process, so runs side by side do not collide; interface names stay <= 15 bytes.
    this.#tag = `hs${Deno.pid % 100_000}`;
    this.#subnet = `10.231.${Deno.pid % 256}`;
    this.addresses = Array.from({ length: n }, (_, i) => `${this.#subnet}.${i + 1}`);
    this.namespaces = Array.from({ length: n }, (_, i) => `${this.#tag}-h${i}`);
  }

  /**
   * Makes `n` hosts. On failure, removes what it made and throws.
   *
   * @throws {Error} when a namespace, link or address cannot be made
   */
  static async create(n: number): Promise<VirtualHosts> {
    const hosts = new VirtualHosts(n);
    try {
      const bridge = hosts.#bridge;
      await ip("link", "add", bridge, "type", "bridge");
      await ip("addr", "add", `${hosts.#subnet}.254/24`, "dev", bridge);
      await ip("link", "set", bridge, "up");
      for (let i = 0; i < n; i++) {
        const ns = hosts.namespaces[i]!;
        await ip("netns", "add", ns);
        await ip("link", "add", hosts.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns);
        await ip("link", "set", hosts.veth(i), "master", bridge);
        await ip("link", "set", hosts.veth(i), "up");
        await ip("-n", ns, "addr", "add", `${hosts.addresses[i]}/24`, "dev", "eth0");
        await ip("-n", ns, "link", "set", "eth0", "up");
        await ip("-n", ns, "link", "set", "lo", "up");
      }
      return hosts;
    } catch (e) {
      await hosts.remove();
      throw e;
    }
  }

  get #bridge(): string {
    return `${this.#tag}b`;
  }

  /** The default-namespace end of host `i`'s veth pair. */
  veth(i: number): string {
    return `${this.#tag}v${i}`;
  }

  /** Sets host `i`'s link down or up. */
  async setLink(i: number, up: boolean): Promise<void> {
    await ip("link", "set", this.veth(i), up ? "up" : "down");
  }

  /**
   * Cuts (or heals) the path between hosts `a` and `b` in both directions: blackhole routes in
   * both namespaces, so packets either way are dropped at the IP layer.
   */
  async setPartition(a: number, b: number, cut: boolean): Promise<void> {
    const verb = cut ? "add" : "del";
    await ip("-n", this.namespaces[a]!, "route", verb, "blackhole", `${this.addresses[b]}/32`);
    await ip("-n", this.namespaces[b]!, "route", verb, "blackhole", `${this.addresses[a]}/32`);
  }

  /**
   * Whether a TCP connection to `address:port` opens within a second, from host `from`'s
   * namespace (or from the default namespace when `from` is null): a check that a fault is real.
   */
  async reaches(from: number | null, address: string, port: number): Promise<boolean> {
    const connect = `exec 3<>/dev/tcp/${address}/${port}`;
    const command = from === null
      ? ["timeout", "1", "bash", "-c", connect]
      : ["ip", "netns", "exec", this.namespaces[from]!, "timeout", "1", "bash", "-c", connect];
    const out = await new Deno.Command(command[0]!, {
      args: command.slice(1),
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  }

  /** Deletes every namespace and the bridge (the veth pairs go with them). Never throws. */
  async remove(): Promise<void> {
    for (const ns of this.namespaces) await ip("netns", "del", ns).catch(() => {});
    for (let i = 0; i < this.namespaces.length; i++) {
      await ip("link", "del", this.veth(i)).catch(() => {});
    }
    await ip("link", "del", this.#bridge).catch(() => {});
  }
}

/**
 * Null when network namespaces can be made here, or why not.
 *
 * @example
 * ```ts
 * import { namespacesUnavailable } from "./multihost.ts";
 * const why = await namespacesUnavailable();
 * if (why !== null) console.log(`skipped: ${why}`);
 * ```
 */
export async function namespacesUnavailable(): Promise<string | null> {
  if (Deno.build.os !== "linux") return `network namespaces need Linux (this is ${Deno.build.os})`;
  const probe = `hs${Deno.pid % 100_000}-probe`;
  try {
    await ip("netns", "add", probe);
  } catch (e) {
    return `cannot make a network namespace (root and iproute2 needed): ${(e as Error).message}`;
  }
  await ip("netns", "del", probe).catch(() => {});
  return null;
}

async function ip(...args: string[]): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("ip", { args, stdout: "null", stderr: "piped" }).output();
  } catch (e) {
    throw new Error(`ip ${args.join(" ")}: ${(e as Error).message}`);
  }
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`ip ${args.join(" ")}: ${why}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The run

/**
 * Runs the multi-host scenario. Removes every process and namespace it made, even on failure.
 *
 * @throws {Error} when namespaces cannot be made, or the cluster stops committing
 * @example
 * ```ts
 * import { formatMultihostSummary, runMultihost } from "./multihost.ts";
 * const report = await runMultihost({ durationS: 30 }); // needs root and `ip`
 * console.log(formatMultihostSummary(report));
 * ```
 */
export async function runMultihost(options: MultihostOptions): Promise<MultihostReport> {
  const log = options.log ?? (() => {});
  const hosts = await VirtualHosts.create(MULTIHOST_HOSTS);
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-multihost-" });
  let cluster: ProcessCluster | null = null;
  let clients: Clients | null = null;
  let passed = false;
  const onSignal = (): void => {
    cluster?.killAllNow();
    void hosts.remove().then(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    await initWithCli(dir, hosts.addresses);
    cluster = await ProcessCluster.fromDir({
      logLevel: "info",
      viewTimeoutMs: 300,
      command: (i) => ["ip", "netns", "exec", hosts.namespaces[i]!],
    }, dir);
    log(`hosts ${hosts.addresses.join(" ")}; cluster in ${dir}`);
    for (let i = 0; i < MULTIHOST_HOSTS; i++) cluster.start(i);
    await cluster.waitReady(60_000);
    await waitForProgress(cluster, [0, 1, 2, 3], 0);
    clients = new Clients(cluster, 4, 1);
    const faults = await injectFaults(cluster, hosts, options.durationS * 1000, log);
    await clients.stop();
    const report = await check(cluster, clients, faults);
    passed = report.lost === 0 && report.disagreements === 0;
    return report;
  } finally {
    await clients?.stop();
    const keep = options.keep === true || !passed;
    await cluster?.close({ keepDir: keep });
    if (cluster === null && !keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
    await hosts.remove();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (keep) log(`kept ${dir} (cluster file, keys, data directories, logs)`);
  }
}

/** `deno task init --replicas 4 --hosts ...`, as a subprocess: the operator's own command. */
async function initWithCli(dir: string, addresses: readonly string[]): Promise<void> {
  const args = ["run", "--allow-read", "--allow-write", "--config", DENO_JSON, INIT_ENTRY];
  args.push("--replicas", String(addresses.length), "--hosts", addresses.join(","));
  args.push("--dir", dir, "--force");
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`deno task init failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function injectFaults(
  cluster: ProcessCluster,
  hosts: VirtualHosts,
  durationMs: number,
  log: (line: string) => void,
): Promise<string[]> {
  const phase = Math.max(2_000, Math.floor(durationMs / 4));
  const faults: string[] = [];
  const all = [0, 1, 2, 3];
  await sleep(phase);

  faults.push("link down: host 3");
  log(`fault: link of host 3 (${hosts.addresses[3]}) down for ${phase} ms`);
  let before = await maxHeightOf(cluster, [0, 1, 2]);
  await hosts.setLink(3, false);
  try {
    await expectReach(hosts, null, 3, cluster, false);
    await waitForProgress(cluster, [0, 1, 2], before);
    await sleep(phase);
  } finally {
    await hosts.setLink(3, true);
  }
  await catchUp(cluster, all);

  faults.push("partition: host 0 from hosts 1 and 2");
  log(`fault: host 0 cut off from hosts 1 and 2 for ${phase} ms`);
  before = await maxHeightOf(cluster, [1, 2, 3]);
  await hosts.setPartition(0, 1, true);
  await hosts.setPartition(0, 2, true);
  try {
    await expectReach(hosts, 0, 1, cluster, false);
    await expectReach(hosts, 2, 0, cluster, false);
    await expectReach(hosts, 0, 3, cluster, true);
    await waitForProgress(cluster, [1, 2, 3], before);
    await sleep(phase);
  } finally {
    await hosts.setPartition(0, 1, false);
    await hosts.setPartition(0, 2, false);
  }
  await catchUp(cluster, all);

  faults.push("crash: replica 1 killed and restarted");
  log(`fault: replica 1 SIGKILLed, restarted after ${phase} ms`);
  before = await maxHeightOf(cluster, [0, 2, 3]);
  await cluster.kill(1, "SIGKILL");
  await waitForProgress(cluster, [0, 2, 3], before);
  await sleep(phase);
  cluster.start(1);
  await cluster.waitReady(60_000, [1]);
  await catchUp(cluster, all);
  return faults;
}

/** Throws unless host `to`'s HTTP port is (or is not) reachable from `from`. */
async function expectReach(
  hosts: VirtualHosts,
  from: number | null,
  to: number,
  cluster: ProcessCluster,
  reachable: boolean,
): Promise<void> {
  const http = cluster.config.validators[to]!.http;
  if ((await hosts.reaches(from, http.hostname, http.port)) === reachable) return;
  const where = from === null ? "the default namespace" : `host ${from}`;
  throw new Error(
    `the fault is not real: host ${to} is ${reachable ? "not " : ""}reachable from ${where}`,
  );
}

async function maxHeightOf(cluster: ProcessCluster, which: readonly number[]): Promise<number> {
  const heights = await heightsOf(cluster);
  return Math.max(...which.map((i) => heights[i]!));
}

/** Waits until one of `which` has committed beyond `height`. */
async function waitForProgress(
  cluster: ProcessCluster,
  which: readonly number[],
  height: number,
): Promise<void> {
  const deadline = performance.now() + PROGRESS_TIMEOUT_MS;
  while ((await maxHeightOf(cluster, which)) <= height) {
    if (performance.now() > deadline) {
      throw new Error(
        `replicas ${which.join(",")} committed nothing beyond height ${height} within ` +
          `${PROGRESS_TIMEOUT_MS} ms${await logTails(cluster)}`,
      );
    }
    await sleep(100);
  }
}

/** Waits until every replica in `which` has committed the highest height any has now. */
async function catchUp(cluster: ProcessCluster, which: readonly number[]): Promise<void> {
  const target = await maxHeightOf(cluster, which);
  await waitForAll(cluster, target);
}

async function check(
  cluster: ProcessCluster,
  clients: Clients,
  faults: readonly string[],
): Promise<MultihostReport> {
  await waitForAll(cluster, clients.maxHeight);
  const lost = await lostWrites(cluster, clients.acked);
  const chains = await Promise.all(cluster.urls.map((u) => committedChain(u)));
  return {
    acknowledgedWrites: clients.acked.size,
    lost: lost.length,
    disagreements: chainDisagreements(chains).length,
    clientErrors: clients.errors,
    commonHeight: Math.min(...chains.map((c) => c.length)),
    faults,
    links: cluster.config.links ?? "encrypted",
  };
}

/**
 * The report's last line, `multihost: N acknowledged writes, L lost`.
 *
 * @example
 * ```ts
 * import { formatMultihostSummary, type MultihostReport } from "./multihost.ts";
 * function summary(report: MultihostReport): string {
 *   return formatMultihostSummary(report);
 * }
 * ```
 */
export function formatMultihostSummary(report: MultihostReport): string {
  return `multihost: ${report.acknowledgedWrites} acknowledged writes, ${report.lost} lost`;
}

const FLAGS = {
  duration: { type: "string" },
  keep: { type: "boolean" },
} as const;

/**
 * The `multihost` command. Returns the exit code.
 *
 * @throws {ConfigError} on bad flags
 * @example
 * ```ts
 * import { multihostMain } from "./multihost.ts";
 * if (import.meta.main) Deno.exit(await multihostMain(["--duration", "30"]));
 * ```
 */
export async function multihostMain(args: readonly string[]): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const durationS = intFlag(f, "duration", 8, 3_600, MULTIHOST_DURATION_DEFAULT_S);
  const why = await namespacesUnavailable();
  if (why !== null) {
    console.log(`multihost: skipped: ${why}`);
    return EXIT_SKIPPED;
  }
  const report = await runMultihost({
    durationS,
    keep: f.keep === true,
    log: (line) => console.log(line),
  });
  console.log(
    `${report.links} links; faults: ${
      report.faults.join("; ")
    }; ${report.commonHeight} common committed heights, ` +
      `${report.disagreements} disagreements, ${report.clientErrors} client requests not ` +
      `acknowledged`,
  );
  console.log(formatMultihostSummary(report));
  return report.lost === 0 && report.disagreements === 0 && report.acknowledgedWrites > 0 ? 0 : 1;
}

if (import.meta.main) await runMain(() => multihostMain(Deno.args), "multihost");
