/**
 * Runs the spin model of the core's safety rules (`model/hotstuff.pml`): an exhaustive (or
 * bitstate) check, a counterexample's trail, or a random simulation, and parses the model's
 * event lines. See docs/MODEL.md.
 *
 * @module
 */

/** The planted bugs of the model, by name (docs/MODEL.md). */
export const MODEL_BUGS: Readonly<Record<string, string>> = {
  "no-lock-check": "PLANT_NO_LOCK_CHECK",
  "non-consecutive-commit": "PLANT_NON_CONSECUTIVE_COMMIT",
  "double-count": "PLANT_DOUBLE_COUNT",
  "two-thirds-quorum": "PLANT_TWO_THIRDS",
};

/**
 * The bounds each planted bug is searched with by default (docs/MODEL.md says why): the smallest
 * that hold a counterexample and a search that reaches it in seconds to a minute or so.
 */
export const BUG_BOUNDS: Readonly<Record<string, Omit<ModelOptions, "plant">>> = {
  // Two certified Nodes in the Byzantine leader's view 1, after a few steps.
  "double-count": { views: 2 },
  // Only reachable when 2T/3 is a power and the Byzantine validator holds T/3.
  "two-thirds-quorum": { views: 2, powers: [1, 2, 1, 2] },
  // A commit needs four views; the conflicting Node, the Byzantine leader's view 5.
  "no-lock-check": { views: 5 },
  // Replica 3 misses views 1-2 and proposes on genesis in view 3; found with it deaf.
  "non-consecutive-commit": { views: 5, byzProposals: 1, deaf: 3 },
};

/** The bounds and switches of one model run. */
export interface ModelOptions {
  /** Views with proposals (1..views). */
  readonly views: number;
  /** Nodes the Byzantine leader may propose in each view it leads. Default 2. */
  readonly byzProposals?: number;
  /** Voting powers of validators 0..3 (validator 1 is Byzantine). Default 1,1,1,1. */
  readonly powers?: readonly [number, number, number, number];
  /** A search restriction: this honest replica receives no proposal, QC or fetched Node (its
   * messages are delayed past the bounds); it still times out and proposes. */
  readonly deaf?: 0 | 2 | 3;
  /** A planted bug, by name (a key of {@link MODEL_BUGS}). */
  readonly plant?: string;
  /** Check the agreement property only, not the locking invariants. */
  readonly agreementOnly?: boolean;
  /** Stop at a witness instead: a vote the lock refuses, or a 3-chain a view gap keeps from
   * committing (traces for the conformance tests). */
  readonly witness?: "lock" | "gap";
}

/** Options of an exhaustive or bitstate check. */
export interface CheckOptions extends ModelOptions {
  /** Bitstate hashing (a partial search) with 2^bits bits of memory instead of a full one. */
  readonly bitstateBits?: number;
  /** Memory limit of the search, MiB. Default 3000. */
  readonly memoryMiB?: number;
}

/** A Node made by a leader in the model. */
export interface ModelNode {
  readonly kind: "node";
  readonly n: number;
  readonly view: number;
  readonly parent: number;
  readonly justify: number;
  /** The proposer (validator index). */
  readonly by: number;
  /** The TC the proposal carries (its view), or 0 when the QC is of the previous view. */
  readonly tc: number;
}

/** What one honest replica's core holds after a step, in model terms (Node indices). */
export interface ModelReplicaState {
  readonly view: number;
  readonly voted: number;
  readonly lock: number;
  readonly hqc: number;
  /** The highest TC's view, 0 for none. */
  readonly htc: number;
  readonly root: number;
  /** True if the replica voted in this step. */
  readonly vote: boolean;
  /** The Node committed in this step, or null. */
  readonly commit: number | null;
}

/** One input handled by one honest replica, and the state the model says follows. */
export interface ModelStep {
  /** recv: the proposal of Node n; fetch: Node n from catch-up; qc: a QC of Node n relayed;
   * tc: a TC of view `tc` relayed. */
  readonly kind: "recv" | "fetch" | "qc" | "tc";
  readonly r: number;
  readonly n: number;
  readonly tc: number;
  readonly after: ModelReplicaState;
}

/** A property the model found violated. */
export interface ModelViolation {
  readonly kind: "violation";
  readonly property: string;
  readonly text: string;
}

/** One line of a model trace. */
export type ModelEvent = ModelNode | ModelStep | ModelViolation;

/** The outcome of a check. */
export interface CheckResult {
  /** States stored by the search. */
  readonly states: number;
  /** Transitions explored. */
  readonly transitions: number;
  /** Violations found (the search stops at the first). */
  readonly violations: number;
  /** Wall-clock seconds of the search alone (not compiling). */
  readonly seconds: number;
  /** The counterexample, when a property failed. */
  readonly trace: ModelEvent[];
  /** The search's own report, for the record. */
  readonly panOutput: string;
}

const MODEL_URL = new URL("./hotstuff.pml", import.meta.url);

/** True when `spin` and a C compiler are on the PATH. */
export async function spinAvailable(): Promise<boolean> {
  for (const [cmd, arg] of [["spin", "-V"], ["cc", "--version"]] as const) {
    try {
      const out = await new Deno.Command(cmd, { args: [arg], stdout: "null", stderr: "null" })
        .output();
      if (!out.success) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** The `-D` flags of a model run. */
export function modelDefines(o: ModelOptions): string[] {
  if (!Number.isInteger(o.views) || o.views < 1 || o.views > 10) {
    throw new RangeError(`views must be 1..10: ${o.views}`);
  }
  const byzp = o.byzProposals ?? 2;
  if (!Number.isInteger(byzp) || byzp < 1 || byzp > 2) {
    throw new RangeError(`byzProposals must be 1 or 2: ${byzp}`);
  }
  const flags = [`-DMAXV=${o.views}`, `-DBYZP=${byzp}`];
  const powers = o.powers ?? [1, 1, 1, 1];
  if (powers.length !== 4 || !powers.every((p) => Number.isInteger(p) && p >= 1 && p <= 9)) {
    throw new RangeError(`powers must be four integers 1..9: ${powers.join(",")}`);
  }
  powers.forEach((p, i) => {
    if (p !== 1) flags.push(`-DP${i}=${p}`);
  });
  if (o.deaf !== undefined) {
    if (![0, 2, 3].includes(o.deaf)) throw new RangeError(`deaf must be 0, 2 or 3: ${o.deaf}`);
    flags.push(`-DDEAF=${o.deaf}`);
  }
  if (o.plant !== undefined) {
    const macro = MODEL_BUGS[o.plant];
    if (macro === undefined) {
      throw new RangeError(
        `unknown bug ${o.plant}; one of: ${Object.keys(MODEL_BUGS).join(", ")}`,
      );
    }
    flags.push(`-D${macro}`);
  }
  if (o.agreementOnly === true) flags.push("-DAGREEMENT_ONLY");
  if (o.witness === "lock") flags.push("-DWITNESS_LOCK");
  if (o.witness === "gap") flags.push("-DWITNESS_GAP");
  return flags;
}

async function run(
  cmd: string,
  args: string[],
  cwd: string,
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function must(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, cwd);
  if (!r.ok) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

async function workDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "hotstuff-model-" });
  await Deno.copyFile(MODEL_URL, `${dir}/hotstuff.pml`);
  return dir;
}

/**
 * Generates the verifier, searches the state space and, on a violation, replays its trail.
 * Stops at the first violation.
 */
export async function checkModel(o: CheckOptions): Promise<CheckResult> {
  const defines = modelDefines(o);
  const dir = await workDir();
  try {
    await must("spin", [...defines, "-a", "hotstuff.pml"], dir);
    const memory = `-DMEMLIM=${o.memoryMiB ?? 3000}`;
    const cflags = ["-O1", "-DSAFETY", "-DCOLLAPSE", memory, "-w", "-o", "pan", "pan.c"];
    if (o.bitstateBits !== undefined) cflags.splice(2, 1, "-DBITSTATE");
    await must("cc", cflags, dir);
    const panArgs = ["-m100000"];
    if (o.bitstateBits !== undefined) panArgs.push(`-w${o.bitstateBits}`);
    const started = performance.now();
    const pan = await run("./pan", panArgs, dir);
    const seconds = (performance.now() - started) / 1000;
    const text = pan.stdout;
    const states = Number(text.match(/([\d.e+]+) states, stored/)?.[1] ?? NaN);
    const transitions = Number(text.match(/([\d.e+]+) transitions \(= stored\+matched\)/)?.[1]);
    const errors = Number(text.match(/errors: (\d+)/)?.[1] ?? NaN);
    if (!Number.isFinite(states) || !Number.isFinite(errors)) {
      throw new Error(`unexpected output of the search:\n${text}\n${pan.stderr}`);
    }
    if (/pan: out of memory|max search depth too small/.test(text)) {
      throw new Error(`the search did not complete:\n${text}`);
    }
    let trace: ModelEvent[] = [];
    if (errors > 0) {
      const trail = await must("spin", [...defines, "-t", "-T", "hotstuff.pml"], dir);
      trace = parseEvents(trail);
    }
    return { states, transitions, violations: errors, seconds, trace, panOutput: text };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** One random run of the model (spin's simulation with `seed`): its events. */
export async function simulateModel(o: ModelOptions & { seed: number }): Promise<ModelEvent[]> {
  const dir = await workDir();
  try {
    const out = await must("spin", [...modelDefines(o), `-n${o.seed}`, "-T", "hotstuff.pml"], dir);
    return parseEvents(out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function fields(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/(\w+)=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Parses the model's `@` lines (other output is ignored). */
export function parseEvents(output: string): ModelEvent[] {
  const events: ModelEvent[] = [];
  for (const raw of output.split("\n")) {
    const line = raw.trim();
    const kind = line.match(/^@(\w+)/)?.[1];
    if (kind === undefined || kind === "start") continue;
    if (kind === "violation") {
      const m = line.match(/^@violation ([\w-]+): (.*)$/);
      if (m) events.push({ kind: "violation", property: m[1]!, text: m[2]! });
      continue;
    }
    const f = fields(line);
    if (kind === "node") {
      events.push({
        kind: "node",
        n: f.n!,
        view: f.view!,
        parent: f.parent!,
        justify: f.justify!,
        by: f.by!,
        tc: f.tc!,
      });
      continue;
    }
    if (kind !== "recv" && kind !== "fetch" && kind !== "qc" && kind !== "tc") {
      throw new Error(`unknown model event: ${line}`);
    }
    events.push({
      kind,
      r: f.r!,
      n: f.n!,
      tc: f.tc!,
      after: {
        view: f.view!,
        voted: f.voted!,
        lock: f.lock!,
        hqc: f.hqc!,
        htc: f.htc!,
        root: f.root!,
        vote: f.vote === 1,
        commit: f.commit === 255 ? null : f.commit!,
      },
    });
  }
  return events;
}

/** One event as a sentence, for counterexamples. */
export function describeEvent(e: ModelEvent, nodes: ReadonlyMap<number, ModelNode>): string {
  const who = (v: number) => (v === BYZANTINE ? `B${v} (Byzantine)` : `r${v}`);
  const qc = (n: number) => `QC(N${n}, view ${nodes.get(n)?.view ?? 0})`;
  switch (e.kind) {
    case "node": {
      const tc = e.tc === 0 ? "" : ` and TC(view ${e.tc})`;
      return `${who(e.by)} proposes N${e.n} in view ${e.view}: parent N${e.parent}, ` +
        `justify ${qc(e.justify)}${tc}`;
    }
    case "violation":
      return `VIOLATION of ${e.property}: ${e.text}`;
    default: {
      const a = e.after;
      const what = e.kind === "recv"
        ? `receives the proposal of N${e.n}`
        : e.kind === "fetch"
        ? `fetches N${e.n} (catch-up)`
        : e.kind === "qc"
        ? `learns ${qc(e.n)} from a NEW-VIEW`
        : `learns TC(view ${e.tc})`;
      const did = [
        a.vote ? `votes for N${e.n}` : "",
        a.commit !== null ? `COMMITS N${a.commit}` : "",
      ].filter((s) => s !== "").join(", ");
      return `${who(e.r)} ${what}${did === "" ? "" : `: ${did}`} -> view ${a.view}, ` +
        `lock ${qc(a.lock)}, highQC ${qc(a.hqc)}, committed head N${a.root}`;
    }
  }
}

/** The Byzantine validator's index in the model (it leads views 1, 5, 9). */
export const BYZANTINE = 1;

/** A whole trace as numbered sentences. A violation is printed inside the step that makes it, before
 * that step's own line: it is told after the step. */
export function describeTrace(events: readonly ModelEvent[]): string[] {
  const nodes = new Map<number, ModelNode>();
  const lines: string[] = [];
  const ordered = [...events];
  for (let i = 0; i + 1 < ordered.length; i++) {
    const [a, b] = [ordered[i]!, ordered[i + 1]!];
    if (a.kind === "violation" && b.kind !== "node" && b.kind !== "violation") {
      [ordered[i], ordered[i + 1]] = [b, a];
      i++;
    }
  }
  for (const e of ordered) {
    if (e.kind === "node") nodes.set(e.n, e);
    lines.push(`${String(lines.length + 1).padStart(3)}. ${describeEvent(e, nodes)}`);
  }
  return lines;
}
