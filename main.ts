/**
 * tsnproxy entry point. The CNI path is dispatched before anything heavy is imported:
 * runtimes exec the plugin once per pod and per verb, so its start-up is on the pod's
 * critical path. Everything else goes through the commander CLI in src/cli.ts.
 *
 * The CLI's specifier is deliberately not a string literal: `deno run` reads, hashes and
 * resolves every module reachable through literal imports (dynamic ones included) before
 * running anything, and through src/cli.ts that is install, doctor, the agent and the BPF
 * objects, on every CNI call. `deno compile` is told to include it (scripts/build.ts).
 */
const args = Deno.args;
if (args[0] === "cni" || (args.length === 0 && Deno.env.get("CNI_COMMAND") !== undefined)) {
  const { runCni } = await import("./src/cni/main.ts");
  Deno.exit(await runCni());
}
const cli = "./src/cli.ts";
const { runCli }: typeof import("./src/cli.ts") = await import(cli);
Deno.exit(await runCli(args));
