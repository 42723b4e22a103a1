/**
 * tsnproxy entry point. The CNI path is dispatched before anything heavy is imported:
 * runtimes exec the plugin once per pod and per verb, so its start-up is on the pod's
 * critical path. Everything else goes through the commander CLI in src/cli.ts.
 *
 * The CLI's and the CNI code's specifiers are deliberately not string literals: `deno run`
 * reads, hashes and resolves every module reachable through literal imports (dynamic ones
 * included) before running anything, and through src/cli.ts that is install, doctor, the
 * agent and the BPF objects, on every CNI call. `deno compile` is told to include both
 * (scripts/build.ts).
 */
const args = Deno.args;
// The plugin: exactly how runtimes call it (no arguments, CNI_COMMAND set) or `tsnproxy cni`
// alone. Anything else, `tsnproxy cni --help` included, is the CLI's.
if (
  (args.length === 1 && args[0] === "cni") ||
  (args.length === 0 && Deno.env.get("CNI_COMMAND") !== undefined)
) {
  // The node agent runs the verb when the entry names it (src/cni/handoff.ts); else the CNI
  // path's modules, or their bundle while it is fresh (src/cni/entry.ts), run it here.
  const { handOff } = await import("./src/cni/handoff.ts");
  const input = await handOff((k) => Deno.env.get(k));
  if ("served" in input) Deno.exit(input.served);
  const { cniEntry } = await import("./src/cni/entry.ts");
  const entry = cniEntry();
  const { runCni }: typeof import("./src/cni/main.ts") = await import(entry.specifier);
  Deno.exit(await runCni(entry, input));
}
const cli = "./src/cli.ts";
const { runCli }: typeof import("./src/cli.ts") = await import(cli);
Deno.exit(await runCli(args));
