/**
 * `tsnproxy doctor`: checks this node and says how to fix what is wrong. Exit code 0 when
 * every check passed, 1 with warnings, 2 with failures. --json prints doctorReportSchema.
 */
import type { DoctorOptions } from "../options.ts";
import { detectStyle, renderDoctor } from "./render.ts";
import { collectReport } from "./report.ts";

export { doctorReportSchema } from "./schema.ts";
export { collectReport, exitCodeOf } from "./report.ts";

export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const report = await collectReport(opts);
  if (opts.json) console.log(JSON.stringify(report, null, 2));
  else console.log(renderDoctor(report, detectStyle()));
  return report.exitCode;
}
