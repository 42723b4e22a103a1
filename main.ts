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
if (args[0] === "cni" || (args.length === 0 && Deno.env.get("CNI_COMMAND") !== undefined)) {
  // The CNI path's modules, or their bundle while it is fresh (src/cni/entry.ts).
  const { cniEntry } = await import("./src/cni/entry.ts");
  const entry = cniEntry();
  const { runCni }: typeof import("./src/cni/main.ts") = await import(entry.specifier);
  Deno.exit(await runCni(entry));
}
const cli = "./src/cli.ts";
const { runCli }: typeof import("./src/cli.ts") = await import(cli);
Deno.exit(await runCli(args));
