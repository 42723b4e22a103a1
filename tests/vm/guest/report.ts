/**
 * Shared by the programs tests/vm/*_test.ts run inside the test VMs: a result line the host
 * side reads back with guestJson() from scripts/vm/runner.ts, and a small command runner.
 */

/** Prints `TSNVM-JSON <tag> <json>` on its own line. */
export function report(tag: string, value: unknown): void {
  console.log(`\nTSNVM-JSON ${tag} ${JSON.stringify(value)}`);
}

export interface Ran {
  code: number;
  out: string;
}

/** Runs argv; output is stdout+stderr. With check (default), a failure throws with the output. */
export async function run(argv: string[], check = true): Promise<Ran> {
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  if (check && !out.success) {
    throw new Error(`${argv.join(" ")} failed (exit ${out.code}):\n${text}`);
  }
  return { code: out.code, out: text };
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
