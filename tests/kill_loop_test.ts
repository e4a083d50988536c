/**
 * The kill loop (`src/testing/kill_loop.ts`, `deno task kill-loop`) with a bounded count for CI: 4
 * replica processes of the key-value store with Deno KV data directories, client load through
 * `PUT /kv/{key}` and `POST /commands?wait=commit`, and SIGKILLs of random replicas at random
 * moments, each restarted from its data directory. Then: no acknowledged write lost, every
 * replica has the same committed chain, and no validator signed two different votes in one view
 * (from every replica's `vote:send` log lines and the signers of every committed QC).
 *
 * `KILL_LOOP_SEED` replays another seed; `deno task kill-loop --kills N` runs long loops.
 */
import assert from "node:assert/strict";
import {
  chainDisagreements,
  formatKillLoopSummary,
  killLoopMain,
  runKillLoop,
  VoteBook,
} from "../src/testing/kill_loop.ts";
import { ConfigError } from "../src/errors.ts";

const KILLS = 6;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;
const SEED = Number(Deno.env.get("KILL_LOOP_SEED") ?? "20240601");

Deno.test(
  `kill loop: 4 replica processes under client load, ${KILLS} SIGKILLs at random moments (seed ${SEED}): no acknowledged write lost, the committed chains agree, no validator voted twice in a view`,
  async () => {
    const started = performance.now();
    const lines: string[] = [];
    const report = await runKillLoop({
      kills: KILLS,
      seed: SEED,
      keepDir: "never",
      log: (line) => lines.push(line),
    });
    const summary = formatKillLoopSummary(report);
    console.log(
      `${summary} (seed ${SEED}, ${((performance.now() - started) / 1000).toFixed(0)} s)`,
    );
    const context = `seed ${SEED}\n${lines.join("\n")}\n${summary}`;
    assert.equal(report.kills, KILLS, context);
    assert.ok(report.acknowledgedWrites >= 50, `enough load: ${context}`);
    assert.ok(report.commonHeight >= 20, `enough committed: ${context}`);
    assert.ok(report.voteLogLines >= 4 * 10, `vote:send lines were read: ${report.voteLogLines}`);
    assert.ok(
      report.certificateVotes >= 3 * 10,
      `QC signers were read: ${report.certificateVotes}`,
    );
    assert.deepEqual(report.lost, [], `no acknowledged write lost: ${context}`);
    assert.deepEqual(report.disagreements, [], `the chains agree: ${context}`);
    assert.deepEqual(report.doubleVotes, [], `no double vote: ${context}`);
    assert.deepEqual(report.fatal, [], `no replica failed: ${context}`);
    assert.equal(report.keptDir, null, "the temporary directory is removed");
  },
);

Deno.test("kill loop: its checkers see a double vote in a log, a QC that contradicts it, and a fork", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kill-loop-test-" });
  try {
    const path = `${dir}/replica-1.log`;
    const line = (view: number, nodeHash: string): string =>
      JSON.stringify({ level: "debug", event: "vote:send", replica: "replica-1", view, nodeHash });
    // Two lives of one replica: the second votes again in view 8, for another Node.
    await Deno.writeTextFile(
      path,
      [line(7, "aa"), line(8, "bb"), '{"event":"replica:start"}', line(8, "cc"), line(9, "dd")]
        .join("\n") + "\n",
    );
    const book = new VoteBook(["replica-0", "replica-1"]);
    await book.readLog(path, 1);
    const keys = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];
    const hex = (k: Uint8Array): string =>
      Array.from(k, (b) => b.toString(16).padStart(2, "0")).join("");
    book.readCertificates([
      { hash: "n1", height: 1, justify: { view: 9, nodeHash: "ee", signers: [hex(keys[1]!)] } },
      { hash: "n2", height: 2, justify: { view: 7, nodeHash: "aa", signers: [hex(keys[0]!)] } },
    ], keys.map((publicKey) => ({ publicKey })));
    const doubles = book.doubleVotes().map((d) => [d.validator, d.view, d.votes.length]);
    assert.deepEqual(doubles, [["replica-1", 8, 2], ["replica-1", 9, 2]]);
    assert.equal(book.size, 4);

    const qc = { view: 1, nodeHash: "00", signers: [] };
    const chain = (hashes: string[]) =>
      hashes.map((hash, i) => ({ hash, height: i + 1, justify: qc }));
    assert.deepEqual(chainDisagreements([chain(["a", "b", "c"]), chain(["a", "b"])]), []);
    assert.deepEqual(
      chainDisagreements([chain(["a", "b"]), chain(["a", "x"])]).map((d) => d.height),
      [2],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill-loop CLI: bad flags are refused before anything starts", async () => {
  await assert.rejects(killLoopMain(["--kills", "-1"]), ConfigError);
  await assert.rejects(killLoopMain(["--replicas", "3"]), ConfigError);
  await assert.rejects(killLoopMain(["--bogus"]), ConfigError);
});

Deno.test("kill-loop CLI: `deno task kill-loop --kills 1` prints the summary line and exits 0", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--config", DENO_JSON, "kill-loop", "--kills", "1", "--seed", "5"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stdout + stderr);
  assert.match(
    stdout,
    /^1 kills, [1-9]\d* acknowledged writes, 0 lost, 0 disagreements, 0 double votes$/m,
  );
});
