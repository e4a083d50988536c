/**
 * JSR hygiene: every symbol the package exports (`mod.ts` and `./cli`) has an `@example`, and no
 * example in the published code is commented-out code. (`deno task ok` type-checks the examples
 * with `deno check --doc`.)
 *
 * @module
 */
import { assertEquals } from "./support/assert.ts";

const ROOT = new URL("../", import.meta.url).pathname;

interface DocNode {
  readonly name: string;
  readonly declarations?: ReadonlyArray<{
    readonly kind: string;
    readonly jsDoc?: { readonly tags?: ReadonlyArray<{ readonly kind: string }> };
  }>;
}

Deno.test("every exported symbol of mod.ts and ./cli has an @example", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "mod.ts", "src/cli/mod.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.success, true, new TextDecoder().decode(out.stderr));
  const doc = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nodes: Record<string, { symbols?: DocNode[] }>;
  };
  const missing: string[] = [];
  let count = 0;
  for (const file of Object.values(doc.nodes)) {
    for (const symbol of file.symbols ?? []) {
      const decls = symbol.declarations ?? [];
      if (decls[0]?.kind === "reference") continue; // a re-export: documented where it is defined
      count++;
      const has = decls.some((d) => (d.jsDoc?.tags ?? []).some((t) => t.kind === "example"));
      if (!has) missing.push(symbol.name);
    }
  }
  assertEquals(missing.join(", "), "", `symbols without @example (of ${count})`);
});

Deno.test("no JSDoc example in the published code is commented-out code", async () => {
  const offenders: string[] = [];
  const commentedCode = /^\s*\* \/\/ (const|let|await|new|if|for|return|[A-Za-z.]+\()/;
  for (const dir of ["src", "examples"]) {
    for await (const path of walk(`${ROOT}${dir}`)) {
      const lines = (await Deno.readTextFile(path)).split("\n");
      let inExample = false;
      for (const [i, line] of lines.entries()) {
        if (/^\s*\* ```ts/.test(line)) inExample = true;
        else if (/^\s*\* ```/.test(line)) inExample = false;
        else if (inExample && commentedCode.test(line)) {
          offenders.push(`${path.slice(ROOT.length)}:${i + 1}`);
        }
      }
    }
  }
  assertEquals(offenders.join(", "), "", "commented-out example code");
});

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walk(path);
    else if (e.name.endsWith(".ts")) yield path;
  }
}
