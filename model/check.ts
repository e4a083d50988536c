/**
 * `deno task model-check [--plant BUG] [--views N] [--byz-proposals K] [--bitstate BITS]
 * [--agreement-only]`: checks the spin model of the core's safety rules (model/hotstuff.pml) and
 * ends with `model check: N states, 0 violations` (exit 0) or the counterexample and
 * `model check: N states, 1 violation` (exit 1). See docs/MODEL.md.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { checkModel, describeTrace, spinAvailable } from "./spin.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    plant: { type: "string" },
    views: { type: "string", default: "3" },
    "byz-proposals": { type: "string", default: "2" },
    bitstate: { type: "string" },
    "agreement-only": { type: "boolean", default: false },
  },
});
if (!(await spinAvailable())) {
  console.error("spin and a C compiler are needed (apt-get install -y spin gcc)");
  Deno.exit(2);
}
const options = {
  views: Number(values.views),
  byzProposals: Number(values["byz-proposals"]),
  ...(values.plant === undefined ? {} : { plant: values.plant }),
  ...(values.bitstate === undefined ? {} : { bitstateBits: Number(values.bitstate) }),
  agreementOnly: values["agreement-only"],
};
console.log(
  `model: 4 validators (1 Byzantine), views 1..${options.views}, ` +
    `${options.byzProposals} Byzantine proposals per view it leads` +
    (options.plant === undefined ? "" : `, planted bug ${options.plant}`) +
    (options.bitstateBits === undefined ? ", exhaustive" : `, bitstate 2^${options.bitstateBits}`),
);
const r = await checkModel(options);
if (r.violations > 0) {
  console.log("counterexample:");
  for (const line of describeTrace(r.trace)) console.log(line);
}
console.log(`time: ${r.seconds.toFixed(1)} s, transitions: ${r.transitions}`);
const n = r.violations === 0 ? "0 violations" : "1 violation";
console.log(`model check: ${r.states} states, ${n}`);
Deno.exit(r.violations === 0 ? 0 : 1);
