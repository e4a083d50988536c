/**
 * SPECIFICATION.md and the code share step numbers: every `Spec X.Y step N` cited in src/ exists
 * in the specification, and every numbered step of a cited section is cited somewhere.
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

async function sourceFiles(dir: URL): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
    if (e.isDirectory) out.push(...await sourceFiles(url));
    else if (e.name.endsWith(".ts")) out.push(await Deno.readTextFile(url));
  }
  return out;
}

/** Section number -> its numbered steps, from `## X.` / `### X.Y` headings and `N.` list items. */
function specSteps(spec: string): Map<string, Set<number>> {
  const sections = new Map<string, Set<number>>();
  let current: Set<number> | null = null;
  for (const line of spec.split("\n")) {
    const h = line.match(/^###? (\d+(?:\.\d+)?)\.?\s/);
    if (h) {
      current = new Set();
      sections.set(h[1]!, current);
      continue;
    }
    const step = line.match(/^(\d+)\. /);
    if (step && current) current.add(Number(step[1]));
  }
  return sections;
}

/** Every (section, step) cited in the code; a bare `Spec X.Y` cites the section only. */
function citations(sources: string[]): { sections: Set<string>; steps: Set<string> } {
  const sections = new Set<string>();
  const steps = new Set<string>();
  for (const src of sources) {
    for (const m of src.matchAll(/Spec (\d+\.\d+)(?:-(\d+\.\d+))?(?: steps? (\d+)(?:-(\d+))?)?/g)) {
      sections.add(m[1]!);
      if (m[2]) sections.add(m[2]);
      if (m[3] === undefined) continue;
      const last = m[4] === undefined ? Number(m[3]) : Number(m[4]);
      for (let n = Number(m[3]); n <= last; n++) steps.add(`${m[1]} step ${n}`);
    }
  }
  return { sections, steps };
}

/** Handler sections (3.x, 4.x, 5.x, 6.2, 8.x, 9.x, 10.1: steps the code carries out) not cited. */
function uncitedHandlers(spec: Map<string, Set<number>>, cited: Set<string>): string[] {
  const handlers = [...spec.keys()].filter((s) =>
    /^(3|4|5|8|9)\.\d+$/.test(s) || s === "6.2" || s === "10.1"
  );
  return handlers.filter((s) => !cited.has(s));
}

Deno.test("every step the code cites exists in SPECIFICATION.md", async () => {
  const spec = specSteps(await Deno.readTextFile(new URL("SPECIFICATION.md", root)));
  const cited = citations(await sourceFiles(new URL("src/", root)));
  for (const section of cited.sections) assert.ok(spec.has(section), `Spec ${section} missing`);
  for (const step of cited.steps) {
    const [section, n] = step.split(" step ");
    assert.ok(spec.get(section!)?.has(Number(n)), `${step} is cited but not specified`);
  }
});

Deno.test("every numbered step of a handler section is cited in the code", async () => {
  const spec = specSteps(await Deno.readTextFile(new URL("SPECIFICATION.md", root)));
  const cited = citations(await sourceFiles(new URL("src/", root)));
  assert.deepEqual(uncitedHandlers(spec, cited.sections), [], "uncited handler sections");
  const missing: string[] = [];
  for (const [section, steps] of spec) {
    if (!cited.sections.has(section)) continue;
    for (const n of steps) {
      if (!cited.steps.has(`${section} step ${n}`)) missing.push(`${section}.${n}`);
    }
  }
  assert.deepEqual(missing, []);
});

Deno.test("the checker itself fails on a made-up citation", () => {
  const spec = specSteps("### 4.1 On X\n\n1. a\n2. b\n");
  const cited = citations(["// Spec 4.1 step 3: nothing"]);
  const bad = [...cited.steps].filter((s) => !spec.get("4.1")?.has(Number(s.split(" step ")[1])));
  assert.deepEqual(bad, ["4.1 step 3"]);
  // A handler section the code never cites is found, and `## N.` headings start sections.
  const two = specSteps("## 3. Validators\n\n### 4.1 On X\n\n1. a\n\n## 12. Wire\n\n1. b\n");
  assert.deepEqual([...two.keys()], ["3", "4.1", "12"]);
  assert.deepEqual(uncitedHandlers(two, new Set()), ["4.1"]);
  assert.deepEqual(uncitedHandlers(two, cited.sections), []);
});
