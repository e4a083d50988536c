/**
 * `deno task model-check [--plant BUG] [--views N] [--byz-proposals K] [--powers a,b,c,d]
 * [--deaf R] [--bitstate BITS] [--agreement-only]`: checks the spin model of the core's safety
 * rules (model/hotstuff.pml) and ends with `model check: N states, 0 violations` (exit 0) or the
 * counterexample and `model check: N states, 1 violation` (exit 1). A planted bug is searched with
 * its own bounds (BUG_BOUNDS) unless flags say otherwise. See docs/MODEL.md.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { BUG_BOUNDS, checkModel, describeTrace, type ModelOptions, spinAvailable } from "./spin.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    plant: { type: "string" },
    views: { type: "string" },
    "byz-proposals": { type: "string" },
    powers: { type: "string" },
    deaf: { type: "string" },
    bitstate: { type: "string" },
    "agreement-only": { type: "boolean", default: false },
  },
});
if (!(await spinAvailable())) {
  console.error("spin and a C compiler are needed (apt-get install -y spin gcc)");
  Deno.exit(2);
}
const base: Omit<ModelOptions, "plant"> = values.plant === undefined
  ? { views: 2 }
  : BUG_BOUNDS[values.plant] ?? { views: 2 };
const powers = values.powers?.split(",").map(Number) as ModelOptions["powers"];
const options = {
  ...base,
  ...(values.views === undefined ? {} : { views: Number(values.views) }),
  ...(values["byz-proposals"] === undefined
    ? {}
    : { byzProposals: Number(values["byz-proposals"]) }),
  ...(powers === undefined ? {} : { powers }),
  ...(values.deaf === undefined ? {} : { deaf: Number(values.deaf) as 0 | 2 | 3 }),
  ...(values.plant === undefined ? {} : { plant: values.plant }),
  ...(values.bitstate === undefined ? {} : { bitstateBits: Number(values.bitstate) }),
  agreementOnly: values["agreement-only"],
};
console.log(
  `model: 4 validators (1 Byzantine), powers ${(options.powers ?? [1, 1, 1, 1]).join(",")}, ` +
    `views 1..${options.views}, ${
      options.byzProposals ?? 2
    } Byzantine proposals per view it leads` +
    (options.deaf === undefined ? "" : `, replica ${options.deaf} deaf`) +
    (options.plant === undefined ? "" : `, planted bug ${options.plant}`) +
    (options.bitstateBits === undefined ? ", exhaustive" : `, bitstate 2^${options.bitstateBits}`),
);
const started = performance.now();
const r = await checkModel(options);
if (r.violations > 0) {
  console.log("counterexample:");
  for (const line of describeTrace(r.trace)) console.log(line);
}
const total = (performance.now() - started) / 1000;
console.log(
  `time: search ${r.seconds.toFixed(1)} s, total ${total.toFixed(1)} s (with compiling); ` +
    `transitions: ${r.transitions}`,
);
const n = r.violations === 0 ? "0 violations" : "1 violation";
console.log(`model check: ${r.states} states, ${n}`);
Deno.exit(r.violations === 0 ? 0 : 1);
