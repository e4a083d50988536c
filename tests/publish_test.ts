/**
 * The JSR package as `deno publish --dry-run` would publish it (no network needed): it succeeds,
 * carries the LICENSE, and leaves out tests, benchmarks, CI, the model and git metadata.
 *
 * @module
 */
import { assert } from "./support/assert.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("deno publish --dry-run: succeeds; LICENSE in; tests, bench, .ci, model and .git out", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, text);
  const files = [...text.matchAll(/file:\/\/(\S+)/g)].map((m) => m[1]!.slice(ROOT.length));
  assert(files.includes("LICENSE"), `no LICENSE in ${files.length} files`);
  assert(files.includes("mod.ts"), "no mod.ts");
  const leaked = files.filter((f) => /^(tests|bench|\.ci|model)\/|^\.git$|\.kv$/.test(f));
  assert(leaked.length === 0, `published by mistake: ${leaked.join(", ")}`);
});
