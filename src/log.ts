/**
 * Structured logs: one JSON object per line on stderr (never stdout: stdout carries CNI
 * results and command output) and optionally appended to a file. Cheap to import: the CNI
 * path uses it.
 *
 * A line is `{"ts": ISO-8601 UTC, "level": "debug"|"info"|"warn"|"error", "msg": text,
 * "cmd": the tsnproxy command, ...event fields}`; ts, level, msg and cmd are reserved (an
 * event field of that name is dropped). The contract is src/log_schema.ts and docs/cli.md.
 */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = typeof LOG_LEVELS[number];
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** The environment variable that sets the level (the `--log-level` flag beats it). */
export const LOG_LEVEL_ENV = "TSNPROXY_LOG_LEVEL";

/** A level name, case-insensitively ("WARN" is "warn"); undefined for anything else. */
export function parseLogLevel(value: string): LogLevel | undefined {
  const v = value.trim().toLowerCase();
  return (LOG_LEVELS as readonly string[]).includes(v) ? v as LogLevel : undefined;
}

/**
 * What TSNPROXY_LOG_LEVEL asks for: the level, or `rejected` holding a value that names none
 * (the CLI refuses it with a usage error; the CNI plugin logs a warning and keeps its level).
 */
export function logLevelFromEnv(
  getEnv: (k: string) => string | undefined = (k) => Deno.env.get(k),
): { level?: LogLevel; rejected?: string } {
  const v = getEnv(LOG_LEVEL_ENV);
  if (v === undefined || v === "") return {};
  const level = parseLogLevel(v);
  return level ? { level } : { rejected: v };
}

export interface LogSink {
  level: LogLevel;
  /** Write to stderr too (false for the CNI plugin, whose stderr the runtime may surface). */
  stderr: boolean;
  file?: string;
  /** The command every line names (`cmd`): install, agent, cni, ... */
  cmd?: string;
}

const sink: LogSink = { level: logLevelFromEnv().level ?? "info", stderr: true };
const encoder = new TextEncoder();
const RESERVED = new Set(["ts", "level", "msg", "cmd"]);

export function configureLog(patch: Partial<LogSink>): void {
  Object.assign(sink, patch);
  if (patch.file !== undefined && !plainFileOrAbsent(patch.file)) sink.file = undefined;
}

/**
 * Only a regular file (or none yet) is appended to: a FIFO would block the writer until
 * someone reads it, and a symlink could lead out of the node's log directory.
 */
function plainFileOrAbsent(path: string): boolean {
  try {
    return Deno.lstatSync(path).isFile;
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
}

/** JSON.stringify that writes bigints (u64 counters, cookies) as decimal strings. */
function jsonLine(o: Record<string, unknown>): string {
  return JSON.stringify(o, (_k, v) => typeof v === "bigint" ? v.toString() : v);
}

export function log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
  if (rank[level] < rank[sink.level]) return;
  const line: Record<string, unknown> = { ts: new Date().toISOString(), level, msg };
  if (sink.cmd !== undefined) line.cmd = sink.cmd;
  for (const k in fields) {
    if (!RESERVED.has(k) && fields[k] !== undefined) line[k] = fields[k];
  }
  const bytes = encoder.encode(jsonLine(line) + "\n");
  if (sink.stderr) {
    for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
  }
  if (sink.file) {
    try {
      Deno.writeFileSync(sink.file, bytes, { append: true, create: true });
    } catch {
      // A log file we cannot write must never fail the operation being logged.
    }
  }
}
