/**
 * The light client (src/light/client.ts, src/cli/light_client.ts): it follows a running cluster
 * from proofs, reports exactly the Nodes the replicas committed, refuses a source that tampers
 * with proofs or signs with other keys, and its task prints `verified N commits`.
 */
import assert from "node:assert/strict";
import { decodeValue, encodeValue } from "../src/codec.ts";
import { formatClusterConfig } from "../src/cli/config.ts";
import { LightClient, type SourceRefusal } from "../src/light/client.ts";
import { toHex } from "../src/types.ts";
import { deriveSecretKey, publicKeyOf } from "../src/crypto.ts";
import { ValidatorSet } from "../src/validators.ts";
import { type InProcessCluster, startInProcessCluster, waitUntil } from "./support/cluster.ts";

function committedHeight(cluster: InProcessCluster, i: number): number {
  return (cluster.replicas[i]!.status().committed as { height: number }).height;
}

/** A source in front of `target` that rewrites every `/proof` answer with `tamper`. */
function tamperingProxy(
  target: string,
  tamper: (proof: [Uint8Array[], Uint8Array]) => [Uint8Array[], Uint8Array],
): { url: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const answer = await fetch(`${target}${url.pathname}${url.search}`);
    const body = new Uint8Array(await answer.arrayBuffer());
    if (url.pathname !== "/proof" || answer.status !== 200) {
      return new Response(body, { status: answer.status, headers: answer.headers });
    }
    const proof = decodeValue(body) as [Uint8Array[], Uint8Array];
    return new Response(encodeValue(tamper(proof)) as Uint8Array<ArrayBuffer>, { status: 200 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test("the light client follows a cluster and verifies exactly what the replicas committed", async () => {
  const cluster = await startInProcessCluster({ chainId: "light-follow", validators: 4 });
  try {
    await waitUntil("a few commits", () => committedHeight(cluster, 0) >= 3, 30_000);
    const refusals: SourceRefusal[] = [];
    const client = new LightClient({
      chainId: cluster.chainId,
      validators: cluster.validators,
      sources: cluster.peers.map((p) => p.httpUrl),
      onRefusal: (r) => refusals.push(r),
    });
    const seen = new Map<number, string>();
    const until = Date.now() + 4_000;
    while (Date.now() < until) {
      for (const v of await client.step()) seen.set(v.height, toHex(v.hash));
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(client.verifiedCount >= 5, `verified ${client.verifiedCount} commits in 4 s`);
    assert.equal(seen.size, client.verifiedCount);
    const heights = [...seen.keys()].sort((a, b) => a - b);
    assert.equal(heights.at(-1)! - heights[0]! + 1, heights.length, "a contiguous run");
    const answer = await fetch(
      `${cluster.peers[1]!.httpUrl}/committed?from=${heights[0]}&to=${heights.at(-1)}`,
    );
    const committed = await answer.json() as Array<{ node: { height: number; hash: string } }>;
    assert.ok(committed.length > 0);
    for (const c of committed) assert.equal(seen.get(c.node.height), c.node.hash);
    assert.deepEqual(refusals, []);
  } finally {
    await cluster.close();
  }
});

Deno.test("the light client refuses tampered proofs and proofs of other keys, and uses an honest source", async () => {
  const cluster = await startInProcessCluster({ chainId: "light-hostile", validators: 4 });
  const honest = cluster.peers[0]!.httpUrl;
  const flipSignature = tamperingProxy(honest, ([nodes, qc]) => {
    const bad = new Uint8Array(qc);
    bad[bad.length - 1]! ^= 1; // the last byte of the last signature
    return [nodes, bad];
  });
  const dropNode = tamperingProxy(honest, ([nodes, qc]) => [nodes.slice(1), qc]);
  try {
    await waitUntil("a few commits", () => committedHeight(cluster, 0) >= 3, 30_000);
    const refusals: SourceRefusal[] = [];
    const hostile = [flipSignature.url, dropNode.url];
    const client = new LightClient({
      chainId: cluster.chainId,
      validators: cluster.validators,
      sources: [...hostile, honest],
      backoffMs: 0,
      onRefusal: (r) => refusals.push(r),
    });
    for (let i = 0; i < 30 && client.verifiedCount < 5; i++) {
      await client.step();
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(client.verifiedCount >= 5, `verified ${client.verifiedCount}`);
    const reasons = new Set(refusals.map((r) => `${r.source === flipSignature.url}:${r.reason}`));
    assert.ok(reasons.has("true:bad-signature"), JSON.stringify([...reasons]));
    assert.ok(
      refusals.some((r) => r.source === dropNode.url && r.reason !== "unreachable"),
      JSON.stringify(refusals),
    );
    assert.ok(refusals.every((r) => r.source !== honest), JSON.stringify(refusals));
    // A client that trusts other keys (another cluster's, same chain id) verifies nothing.
    const others = new ValidatorSet(
      [0, 1, 2, 3].map((i) => ({
        publicKey: publicKeyOf(deriveSecretKey(`other-${i}`)),
        power: 1,
      })),
    );
    const fooled = new LightClient({
      chainId: cluster.chainId,
      validators: others,
      sources: [honest],
      backoffMs: 0,
      onRefusal: (r) => refusals.push(r),
    });
    for (let i = 0; i < 5; i++) await fooled.step();
    assert.equal(fooled.verifiedCount, 0);
    assert.ok(refusals.some((r) => r.reason === "unknown-signer"), JSON.stringify(refusals));
  } finally {
    await flipSignature.close();
    await dropNode.close();
    await cluster.close();
  }
});

Deno.test("deno task light-client --config --follow [--key] prints verified N commits and proven values", async () => {
  const cluster = await startInProcessCluster({
    chainId: "light-cli",
    validators: 4,
    stateCheckpointInterval: 4,
  });
  const dir = await Deno.makeTempDir({ prefix: "light-client-" });
  try {
    const config = formatClusterConfig({
      chainId: cluster.chainId,
      validators: cluster.peers.map((p, i) => {
        const http = new URL(p.httpUrl);
        return {
          name: `replica-${i}`,
          publicKey: p.publicKey,
          power: 1,
          consensus: p.consensus,
          http: { hostname: http.hostname, port: Number(http.port) },
        };
      }),
    });
    await Deno.writeTextFile(`${dir}/cluster.json`, config);
    const run = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["task", "-q", "light-client", ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const ok = await run(["--config", `${dir}/cluster.json`, "--follow", "2"]);
    const out = new TextDecoder().decode(ok.stdout);
    assert.equal(ok.code, 0, out + new TextDecoder().decode(ok.stderr));
    const last = out.trim().split("\n").at(-1)!;
    const m = /^verified (\d+) commits$/.exec(last);
    assert.ok(m !== null && Number(m[1]) > 1, last);
    // --key: the proven value of a key written before, and the absence of another.
    const put = await fetch(`${cluster.peers[0]!.httpUrl}/kv/fruit`, {
      method: "PUT",
      body: "fig",
    });
    assert.equal(put.status, 200);
    const { height } = await put.json() as { height: number };
    const keyed = await run(["--config", `${dir}/cluster.json`, "--follow", "3", "--key", "fruit"]);
    const keyedOut = new TextDecoder().decode(keyed.stdout);
    assert.equal(keyed.code, 0, keyedOut);
    const proven = [...keyedOut.matchAll(/^key "fruit" = "fig", proven at height (\d+)/gm)];
    assert.ok(proven.length > 0, keyedOut);
    assert.ok(Number(proven.at(-1)![1]) >= height, keyedOut);
    assert.doesNotMatch(keyedOut, /refused/);
    const absent = await run(["--config", `${dir}/cluster.json`, "--key", "no-such-key"]);
    assert.match(new TextDecoder().decode(absent.stdout), /key "no-such-key" is absent, proven/);
    const bad = await run(["--config", `${dir}/missing.json`]);
    assert.equal(bad.code, 2);
    assert.match(new TextDecoder().decode(bad.stderr), /light-client: error: .*missing\.json/);
  } finally {
    await cluster.close();
    await Deno.remove(dir, { recursive: true });
  }
});
