/** Reads a command's stderr (or the plugin's log file) as the structured log it must be. */
import { type LogLine, logLineSchema } from "../../src/log_schema.ts";

/** Every non-empty line of `text` as a log line; fails naming the first line that is not one. */
export function logLines(text: string): LogLine[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l, i) => {
    let raw: unknown;
    try {
      raw = JSON.parse(l);
    } catch {
      throw new Error(`log line ${i + 1} is not JSON: ${l}`);
    }
    const r = logLineSchema.safeParse(raw);
    if (!r.success) {
      throw new Error(`log line ${i + 1} breaks the schema: ${r.error.message}\n${l}`);
    }
    return r.data;
  });
}
