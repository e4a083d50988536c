/**
 * The throughput-latency plot of section (a), as hand-written SVG (no dependencies): one line
 * per command size through its cases (more outstanding commands: further right and up), p50 as
 * a solid line with dots, p99 dashed with squares, each point labelled with its outstanding
 * count; latency on a log scale, with the 30 ms p50 target drawn.
 *
 * From a bench JSON report: `deno run --allow-read --allow-write --allow-run bench/plot.ts
 * REPORT.json [OUT.svg]` (default docs/throughput-latency.svg; `--allow-run` to `deno fmt` it).
 *
 * @module
 */
import type { SectionResult } from "./figures.ts";
import type { LoadResult } from "./load.ts";

/** Where the harness writes the plot by default: docs/throughput-latency.svg of this repository. */
export const DEFAULT_PLOT_PATH: string =
  new URL("../docs/throughput-latency.svg", import.meta.url).pathname;

/** One point of the plot. */
export interface PlotPoint {
  /** Command size, bytes. */
  readonly size: number;
  /** Commands outstanding. */
  readonly outstanding: number;
  /** Committed commands per second. */
  readonly commandsPerSecond: number;
  /** Latency p50, ms. */
  readonly p50: number;
  /** Latency p99, ms. */
  readonly p99: number;
}

/** Plot options. */
export interface PlotOptions {
  /** Title line. */
  readonly title?: string;
  /** Second line (setup, date). */
  readonly subtitle?: string;
  /** The p50 target, ms (a horizontal line). Default 30. */
  readonly p50TargetMs?: number;
  /** The throughput target, commands/s (a vertical line if it fits, else a note). */
  readonly throughputTarget?: number;
}

const W = 760;
const H = 470;
const M = { left: 78, right: 150, top: 62, bottom: 58 };
const COLORS = ["#1f5fbf", "#d9730d", "#2e8b57", "#9b3fb5", "#b22222"];

/**
 * The SVG text of a throughput-latency plot.
 *
 * @example
 * ```ts
 * import { throughputLatencySvg } from "./plot.ts";
 * const svg = throughputLatencySvg([
 *   { size: 32, outstanding: 1000, commandsPerSecond: 600, p50: 1600, p99: 2300 },
 * ]);
 * svg.startsWith("<svg"); // true
 * ```
 */
export function throughputLatencySvg(points: readonly PlotPoint[], o: PlotOptions = {}): string {
  const target = o.p50TargetMs ?? 30;
  const xMax = niceCeil(Math.max(1, ...points.map((p) => p.commandsPerSecond)) * 1.12);
  const lats = points.flatMap((p) => [p.p50, p.p99]).filter((v) => v > 0);
  const yLo = 10 ** Math.floor(Math.log10(Math.min(target, ...lats) * 0.8));
  const yHi = 10 ** Math.ceil(Math.log10(Math.max(target, ...lats) * 1.25));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (v: number): number => M.left + (v / xMax) * pw;
  const y = (v: number): number =>
    M.top + ph - ((Math.log10(Math.max(v, yLo)) - Math.log10(yLo)) /
        (Math.log10(yHi) - Math.log10(yLo))) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
    `viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    text(M.left, 24, o.title ?? "Throughput vs latency", { size: 15, weight: "bold" }),
  ];
  if (o.subtitle) out.push(text(M.left, 43, o.subtitle, { size: 11, fill: "#555" }));
  out.push(...xAxis(xMax, x, y(yLo)), ...yAxis(yLo, yHi, y, x(0), x(xMax)));
  // The p50 target.
  out.push(
    `<line x1="${x(0)}" y1="${f(y(target))}" x2="${x(xMax)}" y2="${f(y(target))}" ` +
      `stroke="#c00" stroke-width="1" stroke-dasharray="2 3"/>`,
    text(x(xMax) - 4, y(target) - 4, `p50 target ${target} ms`, { anchor: "end", fill: "#c00" }),
  );
  if (o.throughputTarget !== undefined) {
    out.push(
      o.throughputTarget <= xMax
        ? `<line x1="${f(x(o.throughputTarget))}" y1="${M.top}" x2="${f(x(o.throughputTarget))}" ` +
          `y2="${M.top + ph}" stroke="#c00" stroke-dasharray="2 3"/>`
        : text(W - M.right + 16, H - M.bottom - 20, `target ${group(o.throughputTarget)}/s:`, {
          size: 10,
          fill: "#c00",
        }) + "\n" +
          text(W - M.right + 16, H - M.bottom - 7, "off this chart →", { size: 10, fill: "#c00" }),
    );
  }
  const sizes = [...new Set(points.map((p) => p.size))].sort((a, b) => a - b);
  for (const [i, size] of sizes.entries()) {
    const color = COLORS[i % COLORS.length]!;
    const series = points.filter((p) => p.size === size).sort((a, b) =>
      a.outstanding - b.outstanding
    );
    out.push(...seriesSvg(series, color, x, y));
    const ly = M.top + 10 + i * 40;
    const lx = W - M.right + 16;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<circle cx="${lx + 11}" cy="${ly}" r="3.5" fill="${color}"/>`,
      text(lx + 28, ly + 4, `${sizeLabel(size)} p50`),
      `<line x1="${lx}" y1="${ly + 16}" x2="${lx + 22}" y2="${ly + 16}" stroke="${color}" ` +
        `stroke-width="1.5" stroke-dasharray="5 3"/>`,
      `<rect x="${lx + 8}" y="${ly + 13}" width="6" height="6" fill="${color}"/>`,
      text(lx + 28, ly + 20, `${sizeLabel(size)} p99`),
    );
  }
  out.push(
    text(W - M.right + 16, M.top + 10 + sizes.length * 40 + 8, "labels: commands", {
      size: 10,
      fill: "#555",
    }),
    text(W - M.right + 16, M.top + 10 + sizes.length * 40 + 21, "outstanding", {
      size: 10,
      fill: "#555",
    }),
    "</svg>",
  );
  return out.join("\n") + "\n";
}

function seriesSvg(
  series: readonly PlotPoint[],
  color: string,
  x: (v: number) => number,
  y: (v: number) => number,
): string[] {
  const out: string[] = [];
  const line = (key: "p50" | "p99"): string =>
    series.map((p) => `${f(x(p.commandsPerSecond))},${f(y(p[key]))}`).join(" ");
  if (series.length > 1) {
    out.push(
      `<polyline points="${line("p50")}" fill="none" stroke="${color}" stroke-width="2"/>`,
      `<polyline points="${line("p99")}" fill="none" stroke="${color}" stroke-width="1.5" ` +
        `stroke-dasharray="5 3"/>`,
    );
  }
  for (const p of series) {
    const px = x(p.commandsPerSecond);
    out.push(
      `<circle cx="${f(px)}" cy="${f(y(p.p50))}" r="3.5" fill="${color}"/>`,
      `<rect x="${f(px - 3)}" y="${f(y(p.p99) - 3)}" width="6" height="6" fill="${color}"/>`,
      text(px + 6, y(p.p50) + 14, group(p.outstanding), { size: 10, fill: color }),
    );
  }
  return out;
}

function xAxis(xMax: number, x: (v: number) => number, y0: number): string[] {
  const step = niceStep(xMax / 6);
  const out = [`<line x1="${x(0)}" y1="${y0}" x2="${x(xMax)}" y2="${y0}" stroke="#333"/>`];
  for (let v = 0; v <= xMax + 1e-9; v += step) {
    out.push(
      `<line x1="${f(x(v))}" y1="${y0}" x2="${f(x(v))}" y2="${y0 + 5}" stroke="#333"/>`,
      text(x(v), y0 + 19, group(v), { anchor: "middle" }),
    );
  }
  out.push(text((x(0) + x(xMax)) / 2, y0 + 42, "committed commands per second", {
    anchor: "middle",
  }));
  return out;
}

function yAxis(
  lo: number,
  hi: number,
  y: (v: number) => number,
  x0: number,
  x1: number,
): string[] {
  const out = [`<line x1="${x0}" y1="${f(y(lo))}" x2="${x0}" y2="${f(y(hi))}" stroke="#333"/>`];
  for (let decade = lo; decade <= hi * 1.0001; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const v = decade * m;
      if (v > hi * 1.0001) break;
      const major = m === 1;
      out.push(
        `<line x1="${x0}" y1="${f(y(v))}" x2="${x1}" y2="${f(y(v))}" stroke="#e4e4e4"/>`,
        `<line x1="${x0 - (major ? 6 : 3)}" y1="${f(y(v))}" x2="${x0}" y2="${f(y(v))}" ` +
          `stroke="#333"/>`,
        text(x0 - 9, y(v) + 4, group(v), { anchor: "end", fill: major ? "#000" : "#666" }),
      );
    }
  }
  const cy = (y(lo) + y(hi)) / 2;
  out.push(
    `<text x="18" y="${f(cy)}" transform="rotate(-90 18 ${f(cy)})" text-anchor="middle">` +
      `latency, submission to commit acknowledged (ms, log)</text>`,
  );
  return out;
}

function text(
  px: number,
  py: number,
  s: string,
  o: { size?: number; weight?: string; anchor?: string; fill?: string } = {},
): string {
  const attrs = [`x="${f(px)}"`, `y="${f(py)}"`];
  if (o.size !== undefined) attrs.push(`font-size="${o.size}"`);
  if (o.weight !== undefined) attrs.push(`font-weight="${o.weight}"`);
  if (o.anchor !== undefined) attrs.push(`text-anchor="${o.anchor}"`);
  if (o.fill !== undefined) attrs.push(`fill="${o.fill}"`);
  return `<text ${attrs.join(" ")}>${escapeXml(s)}</text>`;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function f(v: number): string {
  return (Math.round(v * 10) / 10).toString();
}

function group(v: number): string {
  return Math.round(v).toLocaleString("en-US");
}

function sizeLabel(size: number): string {
  return size % 1024 === 0 ? `${size / 1024} KiB` : `${size} B`;
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function niceCeil(v: number): number {
  const step = niceStep(v / 6);
  return Math.ceil(v / step) * step;
}

/**
 * The key-value store's points of a section (a) result (its `details.results`; the
 * ordering-only cases are left out).
 *
 * @example
 * ```ts
 * import { pointsOf } from "./plot.ts";
 * pointsOf({ section: "a", title: "", figures: [], notes: [] }); // []
 * ```
 */
export function pointsOf(section: SectionResult): PlotPoint[] {
  const results =
    (section.details as { results?: Array<LoadResult & { app?: string }> } | undefined)
      ?.results ?? [];
  const kv = results.filter((r) => (r.app ?? "kv") === "kv");
  return kv.filter((r) => r.latencyMs.p50 !== null && r.latencyMs.p99 !== null).map((r) => ({
    size: r.size,
    outstanding: r.outstanding,
    commandsPerSecond: r.commandsPerSecond,
    p50: r.latencyMs.p50!,
    p99: r.latencyMs.p99!,
  }));
}

/**
 * Writes the plot of a section (a) result to `path`, with section (b)'s point (one command
 * outstanding) on the 32-byte line when given. Returns false (and writes nothing) when (a) has
 * no points.
 *
 * @example
 * ```ts
 * import { plotFromSection } from "./plot.ts";
 * // await plotFromSection(sectionA, "docs/throughput-latency.svg", { light: sectionB });
 * ```
 */
export async function plotFromSection(
  section: SectionResult,
  path: string,
  extra: { light?: SectionResult; when?: Date } = {},
): Promise<boolean> {
  const saturated = pointsOf(section);
  if (saturated.length === 0) return false;
  const points = [...saturated, ...(extra.light === undefined ? [] : pointsOf(extra.light))];
  const when = extra.when ?? new Date();
  const o = (section.details as { options?: { clients?: number; batch?: number } } | undefined)
    ?.options;
  const svg = throughputLatencySvg(points, {
    title: "HotStuff for Deno: key-value store, throughput vs latency, 4 replicas on one machine",
    subtitle: `durable Deno KV, loopback, ${o?.clients ?? "?"} closed-loop client processes, ` +
      `batches of ${o?.batch ?? "?"}${points.length > saturated.length ? " (1: section b)" : ""}` +
      `; ${navigator.hardwareConcurrency} cores; ${when.toISOString().slice(0, 10)}`,
    throughputTarget: 30_000,
  });
  await Deno.writeTextFile(path, svg);
  await formatFile(path);
  return true;
}

/**
 * Runs `deno fmt` on the file (it formats SVG; the repository's `deno fmt --check` would refuse
 * the plot otherwise). Best effort: without `--allow-run` the file stays as written.
 */
async function formatFile(path: string): Promise<void> {
  try {
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--quiet", path],
      stdout: "null",
      stderr: "null",
    }).output();
  } catch {
    // No permission to run deno: the plot is still valid SVG.
  }
}

if (import.meta.main) {
  const [input, output = DEFAULT_PLOT_PATH] = Deno.args;
  if (input === undefined) {
    console.error(
      "usage: deno run --allow-read --allow-write --allow-run bench/plot.ts REPORT.json [OUT.svg]",
    );
    Deno.exit(2);
  }
  const report = JSON.parse(await Deno.readTextFile(input)) as {
    startedAt?: string;
    sections: SectionResult[];
  };
  const a = report.sections.find((s) => s.section === "a");
  const light = report.sections.find((s) => s.section === "b");
  const when = report.startedAt === undefined ? new Date() : new Date(report.startedAt);
  if (a === undefined || !(await plotFromSection(a, output, { light, when }))) {
    console.error(`${input} has no section (a) points`);
    Deno.exit(1);
  }
  console.log(`wrote ${output}`);
}
