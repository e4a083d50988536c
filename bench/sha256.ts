/**
 * `sha256Bytes` (JavaScript below `SHA256_NATIVE_BYTES_MIN`, native above) against the native
 * `node:crypto` call and @noble/hashes, per input size: process CPU time per hash, alternating, a few rounds.
 *
 * `deno run -A bench/sha256.ts [--rounds 4]`
 *
 * @module
 */
import { createHash } from "node:crypto";
import process from "node:process";
import { parseArgs } from "node:util";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { sha256Bytes } from "../src/crypto.ts";

const { values } = parseArgs({ args: Deno.args, options: { rounds: { type: "string" } } });
const rounds = Number(values.rounds ?? 4);
const native = (b: Uint8Array): Uint8Array =>
  new Uint8Array(createHash("sha256").update(b).digest());
const enc = new TextEncoder();
const inputs: [string, Uint8Array[]][] = [
  [
    "11 bytes",
    Array.from({ length: 100_000 }, (_, i) => enc.encode(`value-${i % 100_000}`.slice(0, 11))),
  ],
  ["64 bytes", Array.from({ length: 50_000 }, (_, i) => new Uint8Array(64).fill(i))],
  ["150 bytes", Array.from({ length: 20_000 }, (_, i) => new Uint8Array(150).fill(i))],
];
const load = (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
console.log(`load ${load}; µs of process CPU per hash`);
for (let round = 0; round < rounds; round++) {
  const row: string[] = [];
  for (const [name, list] of inputs) {
    const candidates = [["native", native], ["noble", nobleSha256], ["sha256Bytes", sha256Bytes]];
    for (const [how, f] of candidates as [string, (b: Uint8Array) => unknown][]) {
      const c = process.cpuUsage();
      for (const v of list) f(v);
      const u = process.cpuUsage(c);
      row.push(`${name} ${how} ${((u.user + u.system) / list.length).toFixed(2)}`);
    }
  }
  console.log(row.join("  "));
}
