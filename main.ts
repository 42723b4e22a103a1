/**
 * tsnproxy entry point. The CNI path is dispatched before anything heavy is imported:
 * runtimes exec the plugin once per pod and per verb, so its start-up is on the pod's
 * critical path. Everything else goes through the commander CLI in src/cli.ts.
 */
const args = Deno.args;
if (args[0] === "cni" || (args.length === 0 && Deno.env.get("CNI_COMMAND") !== undefined)) {
  const { runCni } = await import("./src/cni/main.ts");
  Deno.exit(await runCni());
}
const { runCli } = await import("./src/cli.ts");
Deno.exit(await runCli(args));
