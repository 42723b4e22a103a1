/**
 * `tsnproxy doctor`: checks this node and says how to fix what is wrong. Exit code 0 when
 * every check passed, 3 with warnings only, 1 with failures (src/exit_codes.ts; 2 stays the
 * usage error's). --json prints doctorReportSchema; its exitCode is the process's.
 */
import { log } from "../log.ts";
import type { DoctorOptions } from "../options.ts";
import { detectStyle, renderDoctor } from "./render.ts";
import { collectReport } from "./report.ts";

export { doctorReportSchema } from "./schema.ts";
export { collectReport, exitCodeOf } from "./report.ts";

export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const report = await collectReport(opts);
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  else console.log(renderDoctor(report, detectStyle()));
  log("debug", "doctor finished", { summary: report.summary, exitCode: report.exitCode });
  return report.exitCode;
}
