/**
 * The replica's log, through LogTape (`@logtape/logtape`), the library-first logger: the library
 * calls `getLogger(["hotstuff", "replica"])` and logs nothing anywhere until the application
 * configures sinks (LogTape's `configure`). Every record carries the properties `event` (a
 * `noun:verb` name), `replica` (its name, when given) and the event's fields; rejections carry a
 * `reason`. Repeated warnings are rate limited per event and reason before they reach LogTape.
 *
 * The replica programs configure {@link jsonLineSink}: one JSON object per line on stderr,
 * `{"time", "level", "event", ...fields}`, byte fields in hex ({@link configureJsonLogging}).
 * A replica given a `logSink` writes those lines to it instead (tests, embedded observers).
 *
 * @module
 */
import { configure, getLogger, type Logger, type LogLevel as LogTapeLevel } from "@logtape/logtape";
import { ConfigError } from "../errors.ts";
import type { ConsensusEvent } from "../events.ts";
import { evidenceOffender, evidenceView } from "../evidence.ts";
import { toHex } from "../types.ts";

/**
 * Log levels, quietest last. `fatal` lines (an Engine failure) are written unless `silent`.
 *
 * @example
 * ```ts
 * import type { LogLevel } from "./log.ts";
 * const quiet: LogLevel = "warn"; // debug < info < warn < error < silent
 * ```
 */
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
          offender: toHex(evidenceOffender(e.evidence)),
          view: evidenceView(e.evidence),
        },
      };
    case "evidence:record":
      return {
        level: "error",
        fields: { reason: e.kind, offender: toHex(e.offender), view: e.view },
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

/**
 * The LogTape category of every replica record.
 *
 * @example
 * ```ts
 * import { configure } from "@logtape/logtape";
 * import { jsonLineSink, LOG_CATEGORY } from "./log.ts";
 * await configure({
 *   sinks: { lines: jsonLineSink() },
 *   loggers: [{ category: [...LOG_CATEGORY], sinks: ["lines"], lowestLevel: "warning" }],
 * });
 * ```
 */
export const LOG_CATEGORY: readonly string[] = ["hotstuff", "replica"];

const TO_LOGTAPE: Record<LogLevel | "fatal", LogTapeLevel | null> = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
  fatal: "fatal",
  silent: null,
};

/**
 * A replica's log: level filter and rate limiting, then LogTape (or a JSON-line `sink`).
 *
 * @example
 * ```ts
 * import { ReplicaLog } from "./log.ts";
 * const lines: string[] = [];
 * const log = new ReplicaLog("info", (line) => lines.push(line), "replica-0");
 * log.write("info", "replica:start", { view: 1 });
 * log.write("debug", "vote:send", { view: 1 }); // below the level: dropped
 * console.log(lines.length); // 1
 * ```
 */
export class ReplicaLog {
  readonly #min: number;
  readonly #sink: ((line: string) => void) | undefined;
  readonly #name: string | undefined;
  readonly #logger: Logger;
  readonly #bursts = new Map<string, { start: number; count: number }>();

  /** Records at `level` or above; to `sink` as JSON lines when given, else to LogTape. */
  constructor(level: LogLevel, sink: ((line: string) => void) | undefined, name?: string) {
    if (!isLogLevel(level)) throw new ConfigError("bad-option", `unknown log level ${level}`);
    this.#min = LEVELS[level];
    this.#sink = sink;
    this.#name = name;
    this.#logger = getLogger([...LOG_CATEGORY]);
  }

  /** Logs one event; warnings beyond {@link LOG_BURST_MAX} per window are counted instead. */
  write(level: LogLevel | "fatal", event: string, fields: Record<string, unknown>): void {
    if (LEVELS[level] < this.#min || level === "silent") return;
    if (level === "warn" && !this.#admit(event, fields)) return;
    this.#emit(level, event, fields);
  }

  /** Reports the warnings still being counted. */
  flush(): void {
    for (const [key, b] of this.#bursts) {
      if (b.count > LOG_BURST_MAX) this.#emitSuppressed(key, b.count - LOG_BURST_MAX);
    }
    this.#bursts.clear();
  }

  #emit(level: LogLevel | "fatal", event: string, fields: Record<string, unknown>): void {
    try {
      if (this.#sink === undefined) {
        const properties: Record<string, unknown> = { event };
        if (this.#name !== undefined) properties.replica = this.#name;
        for (const [k, v] of Object.entries(fields)) properties[k] = jsonSafe(v);
        this.#logger.emit({
          level: TO_LOGTAPE[level]!,
          message: [event],
          rawMessage: event,
          properties,
          timestamp: Date.now(),
        });
        return;
      }
      const line: Record<string, unknown> = { time: new Date().toISOString(), level, event };
      if (this.#name !== undefined) line.replica = this.#name;
      for (const [k, v] of Object.entries(fields)) line[k] = jsonSafe(v);
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
    this.#emit("warn", "log:suppressed", { key, count });
  }
}

/**
 * The fields of a LogTape `LogRecord` that {@link jsonLineSink} writes.
 *
 * @example
 * ```ts
 * import { type JsonLineRecord, jsonLineSink } from "./log.ts";
 * const record: JsonLineRecord = { level: "info", message: ["replica:start"], timestamp: 0, properties: {} };
 * jsonLineSink((line) => console.log(line))(record);
 * ```
 */
export interface JsonLineRecord {
  /** The logger's category (not written). */
  readonly category?: readonly string[];
  /** LogTape's level: `trace`, `debug`, `info`, `warning`, `error` or `fatal`. */
  readonly level: string;
  /** The rendered message parts. */
  readonly message: readonly unknown[];
  /** Milliseconds since the epoch. */
  readonly timestamp: number;
  /** Structured fields (the replica's: `event`, `replica` and the event's fields). */
  readonly properties: Record<string, unknown>;
}

const FROM_LOGTAPE: Record<string, string> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "fatal",
};

/**
 * A LogTape sink that writes each record as the replica's JSON line:
 * `{"time", "level", "event", ...properties}` (levels as the replica names them: `warn`, not
 * `warning`). Default destination: stderr, written synchronously.
 *
 * @example
 * ```ts
 * import { jsonLineSink } from "./log.ts";
 * const lines: string[] = [];
 * const sink = jsonLineSink((line) => lines.push(line));
 * sink({
 *   category: ["hotstuff", "replica"],
 *   level: "warning",
 *   message: ["net:queue-full"],
 *   timestamp: Date.now(),
 *   properties: { event: "net:queue-full", reason: "send-queue-full" },
 * });
 * console.log(lines[0]); // {"time":"…","level":"warn","event":"net:queue-full","reason":"send-queue-full"}
 * ```
 */
export function jsonLineSink(
  write: (line: string) => void = stderrSink,
): (record: JsonLineRecord) => void {
  return (record: JsonLineRecord): void => {
    const line: Record<string, unknown> = {
      time: new Date(record.timestamp).toISOString(),
      level: FROM_LOGTAPE[record.level] ?? record.level,
    };
    if (record.properties.event === undefined) line.event = record.message.join("");
    for (const [k, v] of Object.entries(record.properties)) line[k] = jsonSafe(v);
    try {
      write(JSON.stringify(line));
    } catch {
      // A broken destination must not stop the program.
    }
  };
}

/**
 * Configures LogTape for a replica program: records of category `hotstuff` at `level` or above
 * go to {@link jsonLineSink} (stderr), and LogTape's own meta records only from warnings up.
 * Call once, before {@link startReplica}; it replaces an earlier configuration.
 *
 * @example
 * ```ts
 * import { configureJsonLogging } from "./log.ts";
 * await configureJsonLogging("info");
 * ```
 */
export async function configureJsonLogging(
  level: LogLevel,
  write?: (line: string) => void,
): Promise<void> {
  const lowest = TO_LOGTAPE[level];
  await configure({
    reset: true,
    sinks: { jsonLines: jsonLineSink(write) },
    loggers: [
      {
        category: ["hotstuff"],
        sinks: lowest === null ? [] : ["jsonLines"],
        lowestLevel: lowest ?? "fatal",
      },
      { category: ["logtape", "meta"], sinks: ["jsonLines"], lowestLevel: "warning" },
    ],
  });
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
