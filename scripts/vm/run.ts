/**
 * Run a command in a test VM (see runner.ts):
 *
 *   deno run -A scripts/vm/run.ts --kernel 6.12 -- bash -c 'uname -r; tc qdisc help'
 *   deno run -A scripts/vm/run.ts --kernel 6.1 --script tests/vm/some.sh
 *
 * Options: --kernel 6.1|6.12 (default 6.12), --timeout SEC (120), --cwd DIR (the checkout),
 * --env K=V (repeatable), --script FILE (bash script instead of a command), --retries N (2),
 * --quiet (print only the command's output, not the kernel console), --rebuild (rebuild the
 * initramfs first). Exits with the command's exit code (124 timeout, 125 no exit marker).
 */
import { TsnproxyError } from "../../src/errors.ts";
import { ensureImage, isKernelName, type KernelName, KERNELS } from "./images.ts";
import { runVm } from "./runner.ts";

function usage(msg: string): never {
  console.error(`run.ts: ${msg}`);
  console.error(
    "usage: deno run -A scripts/vm/run.ts [--kernel 6.1|6.12] [--timeout SEC] [--cwd DIR] " +
      "[--env K=V]... [--retries N] [--quiet] [--rebuild] (--script FILE | -- CMD ARGS...)",
  );
  Deno.exit(2);
}

async function main(argv: string[]): Promise<number> {
  let kernel: KernelName = "6.12";
  let timeoutSec = 120;
  let cwd: string | undefined;
  let scriptFile: string | undefined;
  let retries = 2;
  let quiet = false;
  let rebuild = false;
  const env: Record<string, string> = {};
  let command: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === "--") {
      command = argv.slice(i + 1);
      break;
    } else if (a === "--kernel") {
      const k = value();
      if (!isKernelName(k)) usage(`unknown kernel ${k} (${Object.keys(KERNELS).join(", ")})`);
      kernel = k;
    } else if (a === "--timeout") timeoutSec = Number(value());
    else if (a === "--cwd") cwd = value();
    else if (a === "--script") scriptFile = value();
    else if (a === "--retries") retries = Number(value());
    else if (a === "--quiet") quiet = true;
    else if (a === "--rebuild") rebuild = true;
    else if (a === "--env") {
      const kv = value();
      const eq = kv.indexOf("=");
      if (eq <= 0) usage(`--env wants K=V, got ${kv}`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else usage(`unknown option ${a}`);
  }
  if (!Number.isFinite(timeoutSec) || timeoutSec <= 0) usage("--timeout wants seconds");
  if (command.length === 0 && !scriptFile) usage("nothing to run");
  if (rebuild) await ensureImage(kernel, { rebuild: true });

  const r = await runVm({
    kernel,
    command: command.length > 0 ? command : undefined,
    script: scriptFile ? await Deno.readTextFile(scriptFile) : undefined,
    cwd,
    env,
    timeoutSec,
    retries,
    verbose: !quiet,
  });
  if (quiet) console.log(r.output);
  console.error(
    `vm: ${r.kernel} (${r.kver}) exit ${r.exitCode}; boot ${(r.bootMs / 1000).toFixed(1)} s, ` +
      `command ${(r.testMs / 1000).toFixed(1)} s, total ${(r.totalMs / 1000).toFixed(1)} s` +
      (r.attempts > 1 ? `, ${r.attempts} boots` : ""),
  );
  return r.exitCode;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (e instanceof TsnproxyError) {
      console.error(`run.ts: ${e.oneLine()}`);
      Deno.exit(1);
    }
    throw e;
  }
}
