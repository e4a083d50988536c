/**
 * The restarting replica of section (e), run as its own process by bench/restart.ts: it opens a
 * durable Deno KV store, restores its Engine from it, starts, is handed the next view's PROPOSE
 * (as bytes, as it would read it from a socket), and exits after it signs its first vote. It
 * prints one JSON line of wall-clock instants (`Date.now()`, ms since the epoch).
 *
 * Usage: `deno run --allow-read --allow-write bench/restart_child.ts --store FILE
 * --proposal FILE --validator INDEX [--no-wait] [--trace]` (or `--warm` to load the modules and
 * exit). `--no-wait` hands the proposal over right after `Engine.start` without waiting for the
 * start input to be handled; `--trace` prints every event to stderr.
 *
 * @module
 */
// Module evaluation starts only after every import has loaded.
const modulesLoadedAt = Date.now();

import { parseArgs } from "node:util";
import { decodeMessage } from "../src/codec.ts";
import { ed25519Verifier } from "../src/crypto.ts";
import { Engine } from "../src/runtime/engine.ts";
import type { ConsensusEvent } from "../src/events.ts";
import { counterApp } from "../src/testing/counter_app.ts";
import { DenoKvStorage } from "../src/storage/deno_kv.ts";
import { BENCH_CHAIN_ID, benchValidators } from "./chain.ts";

/** What the child reports. */
export interface RestartTimes {
  /** `performance.timeOrigin`: when this process's runtime started. */
  readonly timeOrigin: number;
  /** Every module loaded. */
  readonly modulesLoadedAt: number;
  /** Deno KV store open. */
  readonly storeOpenAt: number;
  /** Engine restored from the store (safety state, head, uncommitted Nodes). */
  readonly engineOpenAt: number;
  /** The first vote signed (`vote:send`). */
  readonly voteAt: number;
  /** Committed height restored from the store. */
  readonly restoredHeight: number;
  /** View of the vote. */
  readonly votedView: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      store: { type: "string" },
      proposal: { type: "string" },
      validator: { type: "string" },
      warm: { type: "boolean", default: false },
      trace: { type: "boolean", default: false },
      // Hand the proposal over while the start input may still be in the Engine's pump.
      "no-wait": { type: "boolean", default: false },
    },
  });
  if (values.warm) return;
  if (values.store === undefined || values.proposal === undefined) {
    throw new Error("--store and --proposal are required");
  }
  const validators = benchValidators(4);
  const signer = validators.signers[Number(values.validator ?? "0")];
  if (signer === undefined) throw new Error(`no validator ${values.validator}`);
  const storage = await DenoKvStorage.open(values.store);
  const storeOpenAt = Date.now();
  let voted: (view: number) => void = () => {};
  const vote = new Promise<number>((resolve) => voted = resolve);
  const onEvent = (e: ConsensusEvent): void => {
    if (values.trace) console.error(Date.now() - performance.timeOrigin, e.type);
    if (e.type === "vote:send") voted(e.view);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const engine = await Engine.open({
    chainId: BENCH_CHAIN_ID,
    validators: validators.set,
    signer,
    verifier: ed25519Verifier(),
    storage,
    app: counterApp(),
    network: { send: () => {}, broadcast: () => {} },
    nodeSource: { fetch: () => {} },
    clock: {
      now: () => performance.now(),
      setTimer: (at, callback) => {
        clearTimeout(timer);
        timer = setTimeout(callback, Math.max(0, at - performance.now()));
      },
      clearTimer: () => clearTimeout(timer),
    },
    onEvent,
  });
  const engineOpenAt = Date.now();
  const restoredHeight = engine.core.tree.root.node.height;
  engine.start();
  // A replica's peers reconnect after its start is handled; waiting also avoids the Engine's
  // lost wake-up (a job pushed while the pump is finishing waits for the next push).
  if (!values["no-wait"]) await engine.idle();
  const decoded = decodeMessage(await Deno.readFile(values.proposal));
  if (!decoded.ok) throw new Error(`proposal: ${decoded.error.message}`);
  if (decoded.value.type !== "propose") throw new Error("not a proposal");
  const leader = validators.set.leader(decoded.value.node.view).publicKey;
  engine.receive(leader, decoded.value);
  const guard = setTimeout(() => voted(-1), 60_000);
  const votedView = await vote;
  const voteAt = Date.now();
  clearTimeout(guard);
  const times: RestartTimes = {
    timeOrigin: performance.timeOrigin,
    modulesLoadedAt,
    storeOpenAt,
    engineOpenAt,
    voteAt,
    restoredHeight,
    votedView,
  };
  console.log(JSON.stringify(times));
  await engine.stop();
  await storage.close();
}

if (import.meta.main) await main();
