/**
 * The command-line building blocks of the replica programs: flag parsing with one-line errors
 * and exit code 2, cluster files and key files, `init` and the replica main. The example
 * key-value store's entry points are built on them (`examples/kv_store/`).
 *
 * @example
 * ```ts
 * import { initCluster } from "./mod.ts";
 * await initCluster({ replicas: 4, dir: await Deno.makeTempDir() });
 * ```
 *
 * @module
 */
export { EXIT_USAGE, type FlagSpec, intFlag, parseFlags, requireFlag, runMain } from "./flags.ts";
export { initCluster, initMain, type InitOptions, type InitResult } from "./init.ts";
export {
  type ClusterConfig,
  type ClusterValidator,
  formatClusterConfig,
  formatHostPort,
  genesisSetOf,
  type HostPort,
  parseClusterConfig,
  parseHostPort,
  parseSecretKey,
  readClusterConfig,
  readSecretKey,
  VALIDATORS_MAX,
  validatorSetOf,
} from "./config.ts";
export {
  LAN_VIEW_TIMEOUT_MAX_MS,
  LAN_VIEW_TIMEOUT_MIN_MS,
  replicaMain,
  type ReplicaProgram,
} from "./replica.ts";
