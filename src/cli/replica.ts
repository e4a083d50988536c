/**
 * Runs one replica of a cluster from the command line, for any {@link CommandMachine}
 * (the key-value store's entry point, `examples/kv_store/replica.ts`, is one call to
 * {@link replicaMain}).
 *
 * ```
 * replica --config DIR/cluster.json --key KEYFILE --data DATADIR
 *         [--listen-consensus HOST:PORT] [--listen-http HOST:PORT]
 *         [--log-level debug|info|warn|error|silent] [--view-timeout-ms MS]
 *         [--state-sync] [--state-sync-lag N] [--state-checkpoint-interval N] [--prune-committed]
 * ```
 *
 * - `--state-sync`: a replica whose store has no committed Node joins from a peer's certified
 *   snapshot (SPECIFICATION.md 15.4) instead of replaying from genesis; so does one whose
 *   committed head is more than `--state-sync-lag` heights (default 4096; 0: never) below the
 *   newest snapshot (its state and Nodes are replaced, its votes and lock kept).
 * - `--state-checkpoint-interval N`: sign the state root every N committed heights (default 64;
 *   0: no state tree, proofs or snapshots). Every replica of a cluster should use the same N.
 * - `--prune-committed`: delete committed Nodes older than the kept snapshots need
 *   (SPECIFICATION.md 15.5); replicas that join later must then use `--state-sync`.
 *
 * - The key file decides which validator this is. The listen flags override that validator's own
 *   addresses from the cluster file (so a proxy can sit between replicas); peers are always
 *   dialed at the addresses in the cluster file.
 * - State lives in `DATADIR/replica.kv` (Deno KV). `DATADIR/lock` keeps a second process off the
 *   same data directory.
 * - SIGINT and SIGTERM stop the replica cleanly (exit 0). An Engine failure (a bug, or a storage
 *   error) is logged at level `fatal` and exits 1. Bad flags, a bad cluster file, a key file that
 *   matches no validator, or a data directory in use print one line and exit 2.
 *
 * @module
 */
import type { CommandMachine } from "../runtime/mempool.ts";
import { ed25519Signer } from "../crypto.ts";
import { ConfigError } from "../errors.ts";
import { configureJsonLogging, isLogLevel, type LogLevel } from "../runtime/log.ts";
import { type Replica, startReplica } from "../runtime/replica.ts";
import { DenoKvBatchStore } from "../storage/batches.ts";
import { DenoKvEvidenceStore } from "../evidence.ts";
import { DenoKvStorage } from "../storage/deno_kv.ts";
import {
  type ClusterConfig,
  formatHostPort,
  genesisSetOf,
  type HostPort,
  parseHostPort,
  readClusterConfig,
  readSecretKey,
  validatorSetOf,
} from "./config.ts";
import { intFlag, parseFlags, requireFlag } from "./flags.ts";

/**
 * The pacemaker's minimum view timeout for a LAN or loopback cluster, ms.
 *
 * @example
 * ```ts
 * import { LAN_VIEW_TIMEOUT_MAX_MS, LAN_VIEW_TIMEOUT_MIN_MS } from "./replica.ts";
 * console.log(LAN_VIEW_TIMEOUT_MIN_MS, LAN_VIEW_TIMEOUT_MAX_MS); // 500 8000
 * ```
 */
export const LAN_VIEW_TIMEOUT_MIN_MS = 500;
/**
 * The pacemaker's maximum view timeout, ms.
 *
 * @example
 * ```ts
 * import { LAN_VIEW_TIMEOUT_MAX_MS } from "./replica.ts";
 * console.log(LAN_VIEW_TIMEOUT_MAX_MS); // 8000
 * ```
 */
export const LAN_VIEW_TIMEOUT_MAX_MS = 8_000;

/**
 * What {@link replicaMain} runs.
 *
 * @example
 * ```ts
 * import { replicaMain, type ReplicaProgram } from "./replica.ts";
 * import { kvMachine } from "../../examples/kv_store/app.ts";
 * const program: ReplicaProgram = { program: "kv-replica", machine: kvMachine };
 * if (import.meta.main) Deno.exit(await replicaMain(Deno.args, program));
 * ```
 */
export interface ReplicaProgram {
  /** Program name for error lines. */
  readonly program: string;
  /** The application, or a function that makes it for the cluster (e.g. from its operator key). */
  readonly machine: CommandMachine | ((config: ClusterConfig) => CommandMachine);
  /** The application's HTTP routes. */
  readonly routes?: (request: Request, url: URL, replica: Replica) => Promise<Response | null>;
}

const FLAGS = {
  config: { type: "string" },
  key: { type: "string" },
  data: { type: "string" },
  "listen-consensus": { type: "string" },
  "listen-http": { type: "string" },
  "log-level": { type: "string" },
  "view-timeout-ms": { type: "string" },
  "state-sync": { type: "boolean" },
  "state-sync-lag": { type: "string" },
  "prune-committed": { type: "boolean" },
  "state-checkpoint-interval": { type: "string" },
} as const;

/**
 * Runs a replica until SIGINT or SIGTERM (returns 0) or an Engine failure (returns 1).
 *
 * @throws {ConfigError} on bad flags, a bad cluster or key file, or a data directory in use
 * @example
 * ```ts
 * import { replicaMain } from "./replica.ts";
 * import { runMain } from "./flags.ts";
 * import { kvMachine } from "../../examples/kv_store/app.ts";
 *
 * if (import.meta.main) {
 *   await runMain(() => replicaMain(Deno.args, { program: "kv-replica", machine: kvMachine }), "kv-replica");
 * }
 * ```
 */
export async function replicaMain(args: readonly string[], p: ReplicaProgram): Promise<number> {
  const f = parseFlags(args, FLAGS);
  const configPath = requireFlag(f, "config");
  const keyPath = requireFlag(f, "key");
  const dataDir = requireFlag(f, "data");
  const logLevel = (f["log-level"] ?? "info") as string;
  if (!isLogLevel(logLevel)) {
    throw new ConfigError("bad-flag", `--log-level must be debug, info, warn, error or silent`);
  }
  await configureJsonLogging(logLevel);
  const viewTimeoutMinMs = intFlag(f, "view-timeout-ms", 10, 60_000, LAN_VIEW_TIMEOUT_MIN_MS);
  const stateCheckpointInterval = intFlag(f, "state-checkpoint-interval", 0, 1_000_000, 64);
  const stateSyncLagHeights = intFlag(f, "state-sync-lag", 0, 1_000_000_000, 4096);
  const listenConsensus = optionalAddress(f["listen-consensus"], "--listen-consensus");
  const listenHttp = optionalAddress(f["listen-http"], "--listen-http");
  const config = await readClusterConfig(configPath);
  const { secretKey, index } = await readSecretKey(keyPath, config);
  await Deno.mkdir(dataDir, { recursive: true });
  const lock = await lockDataDir(dataDir);
  const me = config.validators[index]!;
  const storage = await DenoKvStorage.open(`${dataDir}/replica.kv`);
  const batchStore = await DenoKvBatchStore.open(`${dataDir}/batches.kv`);
  const evidence = await DenoKvEvidenceStore.open(`${dataDir}/evidence.kv`);
  const stop = new AbortController();
  let failed = false;
  const onSignal = (): void => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const replica = await startReplica({
      chainId: config.chainId,
      validators: validatorSetOf(config),
      genesisValidators: genesisSetOf(config),
      signer: ed25519Signer(secretKey),
      storage,
      batchStore,
      evidence,
      reputation: config.leaderReputation === false ? null : undefined,
      machine: typeof p.machine === "function" ? p.machine(config) : p.machine,
      routes: p.routes,
      listenConsensus: listenConsensus ?? me.consensus,
      listenHttp: listenHttp ?? me.http,
      peers: peersOf(config),
      pacemaker: { viewTimeoutMinMs, viewTimeoutMaxMs: LAN_VIEW_TIMEOUT_MAX_MS },
      network: { encryptLinks: config.links !== "plaintext" },
      stateSync: f["state-sync"] === true,
      stateSyncLagHeights,
      pruneCommitted: f["prune-committed"] === true,
      stateCheckpointInterval,
      logLevel: logLevel as LogLevel,
      name: me.name,
      signal: stop.signal,
      onFailure: () => {
        failed = true;
        stop.abort();
      },
    }).catch((e) => {
      if (e instanceof Deno.errors.AddrInUse) {
        throw new ConfigError("address-in-use", `cannot listen: ${(e as Error).message}`);
      }
      throw e;
    });
    await new Promise<void>((resolve) => {
      if (stop.signal.aborted) resolve();
      stop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await replica.close();
    return failed ? 1 : 0;
  } finally {
    evidence.close();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    lock.close();
  }
}

function optionalAddress(value: unknown, flag: string): HostPort | null {
  if (value === undefined) return null;
  return parseHostPort(value as string, flag, { allowZero: true });
}

/** Every validator of the cluster as a peer (the replica skips its own entry). */
function peersOf(config: ClusterConfig) {
  return config.validators.map((v) => ({
    publicKey: v.publicKey,
    consensus: v.consensus,
    httpUrl: `http://${formatHostPort(v.http)}`,
  }));
}

/** Takes an exclusive lock on `DIR/lock`; refuses when another process holds it. */
async function lockDataDir(dir: string): Promise<Deno.FsFile> {
  const file = await Deno.open(`${dir}/lock`, { create: true, write: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), 2_000);
  });
  const result = await Promise.race([file.lock(true).then(() => "locked" as const), timeout]);
  clearTimeout(timer);
  if (result === "timeout") {
    throw new ConfigError("data-dir-in-use", `${dir} is in use by another replica process`);
  }
  return file;
}
