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
