/**
 * Runs tsnproxy as an operator (or a container runtime) does: the checkout's launcher,
 * scripts/tsnproxy, as a subprocess.
 */
import { run, type RunResult } from "../lib/run.ts";
export { logLines } from "../lib/logs.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const LAUNCHER = `${ROOT}/scripts/tsnproxy`;

export function tsnproxy(
  args: string[],
  o: { env?: Record<string, string>; stdin?: string } = {},
): Promise<RunResult> {
  return run([LAUNCHER, ...args], { allowFail: true, env: o.env, stdin: o.stdin });
}
