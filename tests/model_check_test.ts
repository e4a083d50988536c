/**
 * The model check (docs/MODEL.md): the correct model has no violation within the CI bounds, and
 * each planted bug of the model yields a counterexample through `deno task model-check --plant`
 * (exit code 1, the trace printed, last line `model check: N states, 1 violation`). Skips, saying
 * so, when spin or a C compiler is missing.
 */
import assert from "node:assert/strict";
import { BUG_BOUNDS, checkModel, MODEL_BUGS, spinAvailable } from "../model/spin.ts";

const available = await spinAvailable();
if (!available) console.log("model check tests skipped: spin or a C compiler is missing");

const CHECK = new URL("../model/check.ts", import.meta.url).pathname;

Deno.test({
  name: "model check: the correct model, 2 views, equivocating Byzantine leader: 0 violations",
  ignore: !available,
  fn: async () => {
    const r = await checkModel({ views: 2 });
    assert.equal(r.violations, 0, r.panOutput);
    assert.ok(r.states > 1_000_000, `${r.states} states`);
  },
});

for (const bug of Object.keys(MODEL_BUGS)) {
  Deno.test({
    name: `model check: planted bug ${bug} yields a counterexample (exit 1, 1 violation)`,
    ignore: !available,
    fn: async () => {
      assert.ok(BUG_BOUNDS[bug] !== undefined);
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--allow-run",
          "--allow-env",
          CHECK,
          "--plant",
          bug,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 1, text + new TextDecoder().decode(out.stderr));
      const lines = text.trimEnd().split("\n");
      assert.match(lines[lines.length - 1]!, /^model check: \d+ states, 1 violation$/);
      assert.ok(lines.includes("counterexample:"), text);
      assert.match(text, /VIOLATION of [\w-]+: /);
      assert.match(text, /proposes N\d+ in view \d+/);
    },
  });
}
