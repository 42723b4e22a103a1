/**
 * Shared by the programs tests/vm/*_test.ts run inside the test VMs: a result line the host
 * side reads back with guestJson() from scripts/vm/runner.ts, and the guest's kernel modules.
 * The guests run commands with tests/lib/run.ts (the checkout is shared with them).
 */
import { run } from "../../lib/run.ts";

/** Prints `TSNVM-JSON <tag> <json>` on its own line. */
export function report(tag: string, value: unknown): void {
  console.log(`\nTSNVM-JSON ${tag} ${JSON.stringify(value)}`);
}

const CHECKOUT = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Loads modules (and what they need) from the unpacked kernel in the checkout's VM cache:
 * the guest has no /lib/modules of its own.
 */
export async function loadModules(names: string[]): Promise<void> {
  const kernel = Deno.osRelease();
  const base = `${CHECKOUT}/.cache/vm/kernels`;
  let root = "";
  for (const e of Deno.readDirSync(base)) {
    try {
      Deno.statSync(`${base}/${e.name}/lib/modules/${kernel}/modules.dep`);
      root = `${base}/${e.name}`;
    } catch { /* another kernel */ }
  }
  if (!root) throw new Error(`no unpacked modules for ${kernel} under ${base}`);
  await run(["modprobe", "-d", root, "-a", ...names]);
}
