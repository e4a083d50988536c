// A replicated counter: four replicas on one machine, each Node adds one to a shared total.
// Run four of them: deno run -A --unstable-kv replica.ts 0 9100 (then 1, 2 and 3).
import {
  type Application,
  DenoKvStorage,
  deriveSecretKey,
  ed25519Signer,
  publicKeyOf,
  startReplica,
  ValidatorSet,
} from "../../mod.ts";

const me = Number(Deno.args[0] ?? 0), base = Number(Deno.args[1] ?? 9100), n = 4;
const keys = Array.from({ length: n }, (_, i) => deriveSecretKey(`counter-${i}`));
const TOTAL = new TextEncoder().encode("total");

const counter: Application = {
  produceCommand: () => ({ command: new Uint8Array([1]) }),
  async validateNode({ node, state }) {
    if (node.command.length !== 1) return { ok: false, reason: "one byte per Node" };
    const old = new TextDecoder().decode((await state.get(TOTAL)) ?? new Uint8Array());
    const total = String(Number(old) + node.command[0]!);
    return { ok: true, updates: [[TOTAL, new TextEncoder().encode(total)]] };
  },
};

const replica = await startReplica({
  chainId: "counter",
  validators: new ValidatorSet(keys.map((k) => ({ publicKey: publicKeyOf(k), power: 1 }))),
  signer: ed25519Signer(keys[me]!),
  storage: await DenoKvStorage.open(`counter-${me}.kv`),
  app: counter,
  listenConsensus: { hostname: "127.0.0.1", port: base + me },
  listenHttp: { hostname: "127.0.0.1", port: base + n + me },
  peers: keys.map((k, i) => ({
    publicKey: publicKeyOf(k),
    consensus: { hostname: "127.0.0.1", port: base + i },
    httpUrl: `http://127.0.0.1:${base + n + i}`,
  })),
  onCommit: ({ node }) => {
    if (node.height % 100 === 0) console.log(`committed height ${node.height}`);
  },
  onEvent: (e) => {
    if (e.type === "view:timeout") console.log(`view ${e.view} timed out`);
  },
});
console.log(`replica ${me}: NodeTree page at http://127.0.0.1:${replica.httpPort}/`);
Deno.addSignalListener("SIGINT", () => replica.close().then(() => Deno.exit(0)));
