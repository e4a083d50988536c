/**
 * `deno task replica`: one replica of the replicated key-value store.
 *
 * ```
 * deno task replica --config DIR/cluster.json --key KEYFILE --data DATADIR
 *                   [--listen-consensus HOST:PORT] [--listen-http HOST:PORT]
 *                   [--log-level debug|info|warn|error|silent] [--view-timeout-ms MS]
 *                   [--state-sync] [--state-sync-lag N] [--state-checkpoint-interval N]
 *                   [--prune-committed]
 * ```
 *
 * Validator-set changes signed by the cluster's operator key are executed (`validators.ts`,
 * `deno task validators`). See `src/cli/replica.ts` for the flags and exit codes, `routes.ts` for
 * the key-value HTTP API and `src/runtime/replica.ts` for the command API (`POST /commands`) and
 * the NodeTree HTTP API.
 *
 * @module
 */
import { type ClusterConfig, ed25519Verifier, replicaMain, runMain } from "../../mod.ts";
import { kvMachine } from "./app.ts";
import { kvRoutes } from "./routes.ts";
import { withValidatorChanges } from "./validators.ts";

/** The key-value machine of a cluster: with validator-set changes signed by its operator. */
function machineOf(config: ClusterConfig) {
  return withValidatorChanges(kvMachine, {
    chainId: config.chainId,
    operator: config.operator,
    verifier: ed25519Verifier(),
  });
}

if (import.meta.main) {
  await runMain(
    () => replicaMain(Deno.args, { program: "replica", machine: machineOf, routes: kvRoutes }),
    "replica",
  );
}
