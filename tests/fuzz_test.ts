import assert from "node:assert/strict";
import { decodeMessage } from "../src/codec.ts";
import { ConfigError } from "../src/errors.ts";
import { fuzzDecoders, type FuzzReport } from "../src/testing/fuzz.ts";
import { main } from "../src/testing/fuzz_cli.ts";

const SEED = 20_240_611;

/** The report without the timings (which input was slowest, too), which differ from run to run. */
const untimed = (r: FuzzReport) => ({ ...r, elapsedMs: 0, slowest: null });

Deno.test(`fuzz: 20000 mutated frames (seed ${SEED}): no uncaught exception, every acceptance round-trips`, async () => {
  const r = await fuzzDecoders({ runs: 20_000, seed: SEED });
  const failure = r.failures[0];
  const context = `seed ${SEED}${
    failure ? `: ${failure.kind} ${failure.detail} ${failure.inputHex}` : ""
  }`;
  assert.equal(r.inputs, 20_000, context);
  assert.equal(r.uncaughtExceptions, 0, context);
  assert.equal(r.badResults, 0, context);
  assert.equal(r.roundTripFailures, 0, context);
  assert.deepStrictEqual(r.failures, []);
  const rejected = Object.values(r.rejected).reduce((s, n) => s + n, 0);
  assert.equal(r.accepted + rejected, r.inputs);
  // The mutations reach past the CBOR layer into every check of the decoder.
  assert.ok(r.accepted > 100, `only ${r.accepted} accepted`);
  for (
    const reason of [
      "bad-cbor",
      "bad-type",
      "bad-length",
      "bad-integer",
      "bad-height",
      "unknown-type",
      "too-many",
      "too-large",
      "non-canonical",
    ]
  ) {
    assert.ok((r.rejected[reason] ?? 0) > 0, `no input was rejected as ${reason}`);
  }
  assert.ok(r.slowest.ms >= 0 && r.slowest.run >= 0 && r.slowest.run < r.inputs);
});

Deno.test("fuzz: the same seed replays the same inputs; another seed does not", async () => {
  const a = await fuzzDecoders({ runs: 2_000, seed: 5 });
  const b = await fuzzDecoders({ runs: 2_000, seed: 5 });
  const c = await fuzzDecoders({ runs: 2_000, seed: 6 });
  assert.deepStrictEqual(untimed(a), untimed(b));
  assert.notDeepStrictEqual(untimed(a).rejected, untimed(c).rejected);
});

Deno.test("fuzz: a decoder that throws is counted as uncaught exceptions, with the input", async () => {
  let calls = 0;
  const throwing = (bytes: Uint8Array) => {
    calls++;
    if (bytes.length % 2 === 0) throw new RangeError("planted decoder bug");
    return decodeMessage(bytes);
  };
  const r = await fuzzDecoders({ runs: 2_000, seed: SEED, decoders: { message: throwing } });
  assert.ok(calls > 0);
  assert.ok(r.uncaughtExceptions > 0, "the fuzzer must see the throws");
  assert.equal(r.inputs, 2_000);
  const f = r.failures[0];
  assert.ok(f !== undefined);
  assert.equal(f.kind, "uncaught-exception");
  assert.equal(f.target, "message");
  assert.match(f.detail, /RangeError: planted decoder bug/);
  assert.equal(f.inputHex.length % 4, 0, "an even number of bytes, in hex");
  assert.equal(r.failures.length, 10, "failuresMax defaults to 10");
});

Deno.test("fuzz: a decoder that returns a malformed result is counted as a bad result", async () => {
  const r = await fuzzDecoders({
    runs: 500,
    seed: SEED,
    decoders: { qc: () => ({ ok: false, error: new Error("not a DecodeError") }) },
    failuresMax: 1,
  });
  assert.ok(r.badResults > 0);
  assert.equal(r.uncaughtExceptions, 0);
  assert.equal(r.failures.length, 1);
  assert.equal(r.failures[0]!.kind, "bad-result");
});

Deno.test("fuzz: a decoder that accepts a value which does not re-encode to its input fails the round trip", async () => {
  // Adds 1 to every vote's view: accepted, but the re-encoding is another vote.
  const skewed = (bytes: Uint8Array) => {
    const r = decodeMessage(bytes);
    if (!r.ok || r.value.type !== "vote") return r;
    return { ok: true, value: { ...r.value, view: r.value.view + 1 } };
  };
  const r = await fuzzDecoders({ runs: 3_000, seed: SEED, decoders: { message: skewed } });
  assert.ok(r.roundTripFailures > 0);
  assert.equal(r.uncaughtExceptions, 0);
  assert.ok(r.failures.some((f) => f.kind === "round-trip"));
});

Deno.test("fuzz: zero runs is an empty report; bad runs and seeds are refused", async () => {
  const r = await fuzzDecoders({ runs: 0, seed: 1 });
  assert.equal(r.inputs, 0);
  assert.equal(r.accepted, 0);
  assert.deepStrictEqual(r.rejected, {});
  for (const runs of [-1, 1.5, NaN, 2 ** 53]) {
    await assert.rejects(fuzzDecoders({ runs, seed: 1 }), ConfigError);
  }
  for (const seed of [0.5, Infinity]) {
    await assert.rejects(fuzzDecoders({ runs: 1, seed }), ConfigError);
  }
});

// ---------------------------------------------------------------------------------------------
// The command line, run in process

async function cli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

Deno.test("fuzz cli: prints `N inputs, E uncaught exceptions` and exits 0 when clean", async () => {
  const { code, out, err } = await cli(["--runs", "300", "--seed", "9"]);
  assert.equal(code, 0);
  assert.deepStrictEqual(err, []);
  assert.match(out[0]!, /^300 inputs, 0 uncaught exceptions, /);
  assert.match(out[0]!, /seed 9/);
});

Deno.test("fuzz cli: bad flags print one line and exit 2", async () => {
  const bad = [
    ["--runs"],
    ["--runs", "abc"],
    ["--runs", "-5"],
    ["--runs", "1e3"],
    ["--runs", "99999999999999999999"],
    ["--seed", "x"],
    ["--seed", "1.5"],
    ["--bogus"],
    ["positional"],
  ];
  for (const args of bad) {
    const { code, out, err } = await cli(args);
    assert.equal(code, 2, args.join(" "));
    assert.deepStrictEqual(out, []);
    assert.equal(err.length, 1, args.join(" "));
    assert.ok(!err[0]!.includes("\n"), "one line");
    assert.match(err[0]!, /^fuzz: /);
  }
});

Deno.test("fuzz cli: a negative seed is allowed (as --seed=-3) and echoed", async () => {
  const { code, out } = await cli(["--runs", "10", "--seed=-3"]);
  assert.equal(code, 0);
  assert.match(out[0]!, /seed -3/);
});
