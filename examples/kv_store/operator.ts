/**
 * `deno task validators`: the operator proposes a validator-set change to the key-value cluster
 * (SPECIFICATION.md 3.4) and waits until the Node that makes it commits.
 *
 * ```
 * deno task validators --config DIR/cluster.json --operator-key DIR/operator.key
 *                      --set NAME_OR_KEY=POWER[,NAME_OR_KEY=POWER...] [--url http://HOST:PORT]
 * ```
 *
 * `--set` gives new powers by validator name (from the cluster file) or 64-hex-digit key; power 0
 * removes. A member listed with `"joins": true` is added by giving it a power; start its replica
 * first, so that it has caught up when the change commits. The command is signed with the
 * operator key (the cluster file's `"operator"`) and sent to `--url` (default: the first
 * validator's HTTP API) as `POST /commands?wait=commit`. The handover to the new set completes a
 * few Nodes after that commit (`GET /status` shows `validators.next` until then). Prints the
 * answer; exits 0 when the change committed, 1 when it was refused, 2 on bad flags.
 *
 * @module
 */
import { ConfigError, ed25519Signer, fromHex, toHex, type ValidatorUpdate } from "../../mod.ts";
import {
  formatHostPort,
  parseFlags,
  parseSecretKey,
  readClusterConfig,
  requireFlag,
  runMain,
} from "../../src/cli/mod.ts";
import { validatorsCommand } from "./validators.ts";

async function main(): Promise<number> {
  const f = parseFlags(Deno.args, {
    config: { type: "string" },
    "operator-key": { type: "string" },
    set: { type: "string" },
    url: { type: "string" },
  });
  const config = await readClusterConfig(requireFlag(f, "config"));
  const keyPath = requireFlag(f, "operator-key");
  const secret = parseSecretKey(await Deno.readTextFile(keyPath), keyPath);
  const operator = ed25519Signer(secret);
  if (config.operator === undefined || toHex(config.operator) !== toHex(operator.publicKey)) {
    throw new ConfigError("not-operator", `${keyPath} is not the cluster's operator key`);
  }
  const updates: ValidatorUpdate[] = requireFlag(f, "set").split(",").map((item) => {
    const [who, power] = item.split("=");
    const entry = config.validators.find((v) => v.name === who?.trim());
    const publicKey = entry?.publicKey ?? fromHex(who?.trim() ?? "");
    const n = /^[0-9]{1,15}$/.test(power?.trim() ?? "") ? Number(power) : NaN;
    if (publicKey === null || publicKey.length !== 32 || !Number.isSafeInteger(n)) {
      throw new ConfigError("bad-flag", `--set wants NAME_OR_KEY=POWER: ${JSON.stringify(item)}`);
    }
    return { publicKey, power: n };
  });
  const first = config.validators.find((v) => v.joins !== true)!;
  const url = typeof f.url === "string" ? f.url : `http://${formatHostPort(first.http)}`;
  const command = await validatorsCommand(operator, { chainId: config.chainId, updates });
  const r = await fetch(`${url}/commands?wait=commit`, {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: command.slice(),
  });
  console.log(`${r.status} ${await r.text()}`);
  return r.status === 200 ? 0 : 1;
}

if (import.meta.main) await runMain(main, "validators");
