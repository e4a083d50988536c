/**
 * The replica's log: one JSON object per line (to stderr by default), `{"time", "level",
 * "event", ...fields}`, byte fields in hex, warnings rate limited per event and reason.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { ConsensusEvent } from "../events.ts";
import { toHex } from "../types.ts";

/** Log levels, quietest last. `fatal` lines (an Engine failure) are written unless `silent`. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const LEVELS: Record<LogLevel | "fatal", number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
  fatal: 50,
  silent: 100,
};

/**
 * Whether `value` names a {@link LogLevel}.
 *
 * @example
 * ```ts
 * import { isLogLevel } from "./log.ts";
 * isLogLevel("warn"); // true
 * ```
 */
export function isLogLevel(value: string): value is LogLevel {
  return value !== "fatal" && Object.hasOwn(LEVELS, value);
}

/** Another replica, as this one reaches it. */
// ---------------------------------------------------------------------------------------------
// Logging

/** Events that come in floods (one per view) log at debug; rejections are rate limited. */
export function eventLog(
  e: ConsensusEvent,
): { level: LogLevel | "fatal"; fields: Record<string, unknown> } {
  const { type: _type, ...rest } = e;
  switch (e.type) {
    case "message:reject":
      return { level: "warn", fields: rest };
    case "equivocation:detect":
      return {
        level: "error",
        fields: {
          reason: e.evidence.kind,
          view: e.evidence.kind === "double-vote"
            ? e.evidence.first.view
            : e.evidence.first.node.view,
        },
      };
    case "view:timeout":
    case "tc:form":
    case "catchup:request":
    case "catchup:receive":
      return { level: "info", fields: rest };
    default:
      return { level: "debug", fields: rest };
  }
}

export function netLevel(event: string): LogLevel {
  switch (event) {
    case "net:dial-failed":
    case "catchup:peer-skipped":
      return "debug";
    case "net:handshake-failed":
    case "net:bad-frame":
    case "net:queue-full":
    case "net:disconnected":
    case "net:handler-error":
    case "http:timeout":
      return "warn";
    case "net:task-failed":
    case "http:handler-error":
      return "error";
    default:
      return "info";
  }
}

/** Lines per event and reason in one window before the rest are counted instead. */
const LOG_BURST_MAX = 20;
const LOG_WINDOW_MS = 10_000;

/** One JSON object per line; warnings rate limited per event and reason. */
export class ReplicaLog {
  readonly #min: number;
  readonly #sink: (line: string) => void;
  readonly #name: string | undefined;
  readonly #bursts = new Map<string, { start: number; count: number }>();

  constructor(level: LogLevel, sink: ((line: string) => void) | undefined, name?: string) {
    if (!isLogLevel(level)) throw new ConfigError("bad-option", `unknown log level ${level}`);
    this.#min = LEVELS[level];
    this.#sink = sink ?? stderrSink;
    this.#name = name;
  }

  write(level: LogLevel | "fatal", event: string, fields: Record<string, unknown>): void {
    if (LEVELS[level] < this.#min || level === "silent") return;
    if (level === "warn" && !this.#admit(event, fields)) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, event };
    if (this.#name !== undefined) line.replica = this.#name;
    for (const [k, v] of Object.entries(fields)) line[k] = jsonSafe(v);
    try {
      this.#sink(JSON.stringify(line));
    } catch {
      // A broken log sink must not stop the replica.
    }
  }

  #admit(event: string, fields: Record<string, unknown>): boolean {
    const key = `${event}/${String(fields.reason ?? "")}`;
    const now = performance.now();
    let b = this.#bursts.get(key);
    if (b === undefined || now - b.start > LOG_WINDOW_MS) {
      if (b !== undefined && b.count > LOG_BURST_MAX) {
        this.#emitSuppressed(key, b.count - LOG_BURST_MAX);
      }
      if (this.#bursts.size > 1000) this.#bursts.clear();
      this.#bursts.set(key, b = { start: now, count: 0 });
    }
    b.count++;
    return b.count <= LOG_BURST_MAX;
  }

  #emitSuppressed(key: string, count: number): void {
    const line = {
      time: new Date().toISOString(),
      level: "warn",
      event: "log:suppressed",
      key,
      count,
    };
    try {
      this.#sink(JSON.stringify(line));
    } catch {
      // ignore
    }
  }

  flush(): void {
    for (const [key, b] of this.#bursts) {
      if (b.count > LOG_BURST_MAX) this.#emitSuppressed(key, b.count - LOG_BURST_MAX);
    }
    this.#bursts.clear();
  }
}

const lineEncoder = new TextEncoder();

function stderrSink(line: string): void {
  const bytes = lineEncoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

function jsonSafe(v: unknown): unknown {
  if (v instanceof Uint8Array) return toHex(v);
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  return v;
}
