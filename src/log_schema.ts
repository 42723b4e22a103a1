/**
 * The contract of a log line (src/log.ts; documented in docs/cli.md): what a log shipper may
 * rely on. Event fields beyond the four reserved ones vary per event and are JSON values.
 */
import { z } from "zod";
import { LOG_LEVELS } from "./log.ts";

export const logLineSchema = z.looseObject({
  /** When the event happened, UTC, millisecond precision. */
  ts: z.iso.datetime(),
  level: z.enum(LOG_LEVELS),
  /** What happened, for humans; stable enough to match on. */
  msg: z.string().min(1),
  /** The tsnproxy command that logged it (absent only in embedders of the library code). */
  cmd: z.enum(["install", "uninstall", "agent", "doctor", "status", "version", "cni"]).optional(),
});
export type LogLine = z.infer<typeof logLineSchema>;
