/**
 * Logging through LogTape: without a `logSink`, a replica's records go to the sinks the
 * application configured (category `hotstuff.replica`, property `event`); the replica programs'
 * JSON lines keep their shape, levels and rate limiting of repeated warnings.
 *
 * @module
 */
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  configureJsonLogging,
  jsonLineSink,
  LOG_CATEGORY,
  ReplicaLog,
} from "../src/runtime/log.ts";
import { assert, assertEquals } from "./support/assert.ts";
import { startInProcessCluster, waitUntil } from "./support/cluster.ts";

Deno.test("a replica without logSink logs through LogTape to the application's sinks", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (r: LogRecord) => void records.push(r) },
    loggers: [
      { category: ["hotstuff"], sinks: ["memory"], lowestLevel: "info" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
    ],
  });
  const cluster = await startInProcessCluster({
    chainId: "log-test",
    validators: 4,
    run: [0],
    logSinkless: true,
  });
  try {
    await waitUntil(
      "replica:start",
      () => records.some((r) => r.properties.event === "replica:start"),
    );
    const start = records.find((r) => r.properties.event === "replica:start")!;
    assertEquals(start.category.join("."), LOG_CATEGORY.join("."), "category");
    assertEquals(start.level, "info", "level");
    assertEquals(start.properties.replica, "replica-0", "replica name");
    assert(typeof start.properties.publicKey === "string", "byte fields in hex");
    assert(!records.some((r) => r.level === "debug"), "the level filters");
  } finally {
    await cluster.close();
    await reset();
  }
});

Deno.test("replica programs' JSON lines: time, level (warn, not warning), event, fields; repeated warnings rate limited", async () => {
  const lines: string[] = [];
  await configureJsonLogging("info", (line) => lines.push(line));
  try {
    const log = new ReplicaLog("info", undefined, "replica-7");
    log.write("debug", "vote:send", { view: 1 });
    log.write("info", "replica:start", { view: 1, key: new Uint8Array([0xab, 0xcd]) });
    for (let i = 0; i < 50; i++) log.write("warn", "net:bad-frame", { reason: "bad-type" });
    log.flush();
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assertEquals(parsed[0]!.event, "replica:start", "debug is below the level");
    assertEquals(parsed[0]!.level, "info", "level");
    assertEquals(parsed[0]!.key, "abcd", "bytes in hex");
    assertEquals(parsed[0]!.replica, "replica-7", "replica name");
    assert(
      typeof parsed[0]!.time === "string" && !Number.isNaN(Date.parse(parsed[0]!.time)),
      "time",
    );
    const warnings = parsed.filter((p) => p.event === "net:bad-frame");
    assertEquals(warnings.length, 20, "a burst of 20 lines, then counted");
    assertEquals(warnings[0]!.level, "warn", "LogTape's warning is written warn");
    const suppressed = parsed.find((p) => p.event === "log:suppressed");
    assertEquals(suppressed?.count, 30, "the other 30 counted");
  } finally {
    await reset();
  }
});

Deno.test("jsonLineSink: a record without an event property is named by its message", () => {
  const lines: string[] = [];
  jsonLineSink((l) => lines.push(l))({
    category: ["app"],
    level: "error",
    message: ["disk ", "full"],
    timestamp: 0,
    properties: { what: "full" },
  });
  assertEquals(
    lines[0],
    '{"time":"1970-01-01T00:00:00.000Z","level":"error","event":"disk full","what":"full"}',
    "line",
  );
});
