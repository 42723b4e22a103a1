/**
 * Structured logs: one JSON object per line on stderr (never stdout: stdout carries CNI
 * results) and optionally appended to a file. Cheap to import: the CNI path uses it.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";
const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LogSink {
  level: LogLevel;
  /** Write to stderr too (false for the CNI plugin, whose stderr the runtime may surface). */
  stderr: boolean;
  file?: string;
}

const sink: LogSink = {
  level: (Deno.env.get("TSNPROXY_LOG_LEVEL") as LogLevel | undefined) ?? "info",
  stderr: true,
};
const encoder = new TextEncoder();

export function configureLog(patch: Partial<LogSink>): void {
  Object.assign(sink, patch);
}

export function log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
  if (rank[level] < rank[sink.level]) return;
  const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + "\n";
  const bytes = encoder.encode(line);
  if (sink.stderr) Deno.stderr.writeSync(bytes);
  if (sink.file) {
    try {
      Deno.writeFileSync(sink.file, bytes, { append: true, create: true });
    } catch {
      // A log file we cannot write must never fail the operation being logged.
    }
  }
}
