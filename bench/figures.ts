/**
 * What every benchmark section returns, and the table and JSON the harness prints. A figure the
 * harness could not measure has `value: null` and says why in `note`: the bench reports, it never
 * invents a number and never passes or fails.
 *
 * @module
 */

/** One measured figure. */
export interface Figure {
  /** Section letter of the issue: `a` ... `f`. */
  readonly section: string;
  /** What was measured, e.g. `n=16 throughput (steady)`. */
  readonly name: string;
  /** The value, or null when not measured. */
  readonly value: number | null;
  /** Unit of `value`. */
  readonly unit: string;
  /** The target, in words (e.g. `≥ 10000`), if it names one for this figure. */
  readonly target?: string;
  /** Whether `value` meets `target`; null when there is no target or no value. */
  readonly met?: boolean | null;
  /** Why a value is missing, or how to read it. */
  readonly note?: string;
}

/** The outcome of one section. */
export interface SectionResult {
  /** Section letter. */
  readonly section: string;
  /** Title, e.g. `Scaling`. */
  readonly title: string;
  /** The figures, in display order. */
  readonly figures: Figure[];
  /** Free-form notes: method, caveats, what bounds the figure. */
  readonly notes: string[];
  /** Everything else worth keeping (per-case raw numbers), written to the JSON file only. */
  readonly details?: unknown;
  /**
   * The section's headline numbers for the report's top-level `summary` (see bench/main.ts),
   * null where not measured.
   */
  readonly summary?: Readonly<Record<string, number | null>>;
  /** Wall time the section took, ms. */
  readonly elapsedMs?: number;
}

/** What a section gets from the harness. */
export interface BenchContext {
  /** `--quick`: the short subset (the whole run stays under 60 s). */
  readonly quick: boolean;
  /** `--long`: the long memory run. */
  readonly long: boolean;
  /** Progress lines (stderr). */
  readonly log: (line: string) => void;
}

/** A section of the bench. */
export interface Section {
  /** Letter, as in the issue. */
  readonly id: string;
  /** Title. */
  readonly title: string;
  /** Runs it. */
  readonly run: (ctx: BenchContext) => Promise<SectionResult>;
}

/**
 * A figure with a `≥`/`<`/`≤` target, `met` filled in.
 *
 * @example
 * ```ts
 * import { withTarget } from "./figures.ts";
 * withTarget({ section: "d", name: "rate", value: 12000, unit: "Nodes/s" }, ">=", 10000);
 * ```
 */
export function withTarget(
  figure: Figure,
  op: ">=" | "<" | "<=",
  bound: number,
): Figure {
  const target = `${op === ">=" ? "≥" : op === "<" ? "<" : "≤"} ${bound}`;
  const v = figure.value;
  const met = v === null ? null : op === ">=" ? v >= bound : op === "<" ? v < bound : v <= bound;
  return { ...figure, target, met };
}

/**
 * A figure that could not be measured.
 *
 * @example
 * ```ts
 * import { notMeasured } from "./figures.ts";
 * notMeasured("a", "throughput", "commands/s", "needs the replica runtime");
 * ```
 */
export function notMeasured(section: string, name: string, unit: string, why: string): Figure {
  return { section, name, value: null, unit, note: `not measured: ${why}` };
}

/** Rounds for display: 3 significant digits below 100, whole numbers above. */
export function formatValue(value: number | null): string {
  if (value === null) return "—";
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toLocaleString("en-US");
  if (abs >= 1) return value.toFixed(value % 1 === 0 ? 0 : 2);
  if (abs === 0) return "0";
  return value.toPrecision(3);
}

/**
 * The results as a plain-text table: section, figure, value, unit, target, met.
 *
 * @example
 * ```ts
 * import { formatTable } from "./figures.ts";
 * console.log(formatTable([]));
 * ```
 */
export function formatTable(results: readonly SectionResult[]): string {
  const header = ["section", "figure", "value", "unit", "target", "met"];
  const rows: string[][] = [];
  for (const r of results) {
    for (const f of r.figures) {
      const met = f.met === true ? "yes" : f.met === false ? "NO" : "";
      rows.push([
        `${r.section} ${r.title}`,
        f.name,
        formatValue(f.value),
        f.unit,
        f.target ?? "",
        met,
      ]);
    }
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ")
      .trimEnd();
  const out = [line(header), widths.map((w) => "-".repeat(w)).join("  ")];
  for (const row of rows) out.push(line(row));
  const notes = results.flatMap((r) =>
    r.figures.filter((f) => f.note !== undefined).map((f) => `  ${r.section} ${f.name}: ${f.note}`)
  );
  if (notes.length > 0) out.push("", "notes:", ...notes);
  return out.join("\n");
}

/** The `p`-quantile (0..1) of `values` (nearest rank), or null when empty. */
export function quantile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank]!;
}
