/**
 * `deno task replica`: one replica of the replicated key-value store.
 *
 * ```
 * deno task replica --config DIR/cluster.json --key KEYFILE --data DATADIR
 *                   [--listen-consensus HOST:PORT] [--listen-http HOST:PORT]
 *                   [--log-level debug|info|warn|error|silent] [--view-timeout-ms MS]
 *                   [--state-sync] [--state-checkpoint-interval N] [--prune-committed]
 * ```
 *
 * See `src/cli/replica.ts` for the flags and exit codes, `routes.ts` for the key-value HTTP API
 * and `src/runtime/replica.ts` for the command API (`POST /commands`) and the NodeTree HTTP API.
 *
 * @module
 */
import { replicaMain, runMain } from "../../mod.ts";
import { kvMachine } from "./app.ts";
import { kvRoutes } from "./routes.ts";

if (import.meta.main) {
  await runMain(
    () => replicaMain(Deno.args, { program: "replica", machine: kvMachine, routes: kvRoutes }),
    "replica",
  );
}
