/**
 * The strict CLI, through the real entry point (scripts/tsnproxy -> main.ts): bad flags and
 * bad environment variables are usage errors (exit 2, a message naming the flag or variable,
 * the value and what is accepted, nothing on stdout); --help works for every command,
 * `tsnproxy cni --help` included, while runtime-style calls still run the plugin and answer
 * CNI JSON only; docs/cli.md documents every command, variable and exit code.
 */
import assert from "node:assert/strict";
import { ENV_VARS } from "../../src/env.ts";
import { ExitCode } from "../../src/exit_codes.ts";
import { logLines, ROOT, tsnproxy } from "./_cli.ts";
import { nodeLogFile, removeNodePath } from "../lib/node_dirs.ts";

const COMMANDS = ["cni", "install", "uninstall", "agent", "doctor", "status", "version"];

/** Locations that exist nowhere: a command that got past validation would find nothing. */
function nowhere(): string[] {
  const dir = "/nonexistent/tsnproxy-cli-test";
  return [
    "--config",
    `${dir}/config.yaml`,
    "--cni-conf-dir",
    `${dir}/net.d`,
    "--cni-bin-dir",
    `${dir}/bin`,
  ];
}

interface UsageCase {
  args: string[];
  env?: Record<string, string>;
  /** Every one must match stderr. */
  says: RegExp[];
}

const USAGE: UsageCase[] = [
  // numbers
  { args: ["status", "--watch", "abc"], says: [/'--watch/, /'abc'/, /seconds from 0\.1 to/] },
  { args: ["status", "--watch", "0"], says: [/'--watch/, /'0'/] },
  { args: ["status", "--watch", "-1"], says: [/'--watch/] },
  {
    args: ["agent", "--reconcile-seconds", "abc"],
    says: [/'--reconcile-seconds/, /'abc'/, /integer from 1 to 86400/],
  },
  { args: ["agent", "--reconcile-seconds", "0"], says: [/'--reconcile-seconds/, /'0'/] },
  { args: ["agent", "--reconcile-seconds", "2.5"], says: [/'--reconcile-seconds/, /'2\.5'/] },
  // enums
  { args: ["install", "--attach-mode", "xdp"], says: [/'--attach-mode/, /'xdp'/, /auto, tcx/] },
  {
    args: ["install", "--restore-at", "nowhere"],
    says: [/'--restore-at/, /'nowhere'/, /tsn-egress, host-veth-ingress/],
  },
  { args: ["doctor", "--attach-mode", "TCX"], says: [/'--attach-mode/, /'TCX'/] },
  { args: ["doctor", "-o", "yaml"], says: [/--output/, /'yaml'/, /text, json/] },
  { args: ["version", "--json", "-o", "text"], says: [/'--json' cannot be used with/] },
  { args: ["--log-level", "loud", "version"], says: [/'--log-level/, /'loud'/, /debug, info/] },
  // values the node config checks: refused as flags, before the file is read
  {
    args: ["install", "--tsn-interface", "much-too-long-name", ...nowhere()],
    says: [/'--tsn-interface'/, /'much-too-long-name'/, /1-15 characters/],
  },
  {
    args: ["agent", "--metrics-address", "9489", ...nowhere()],
    says: [/'--metrics-address'/, /'9489'/, /host:port/],
  },
  { args: ["status", "--bpffs", "pins", ...nowhere()], says: [/'--bpffs'/, /absolute path/] },
  {
    args: ["uninstall", "--cni-conf-dir", "net.d", "--dry-run"],
    says: [/'--cni-conf-dir'/, /absolute path/],
  },
  // the command line itself
  { args: [], says: [/Usage: tsnproxy/] },
  { args: ["bogus"], says: [/unknown command 'bogus'/] },
  { args: ["install", "--bogus"], says: [/unknown option '--bogus'/] },
  { args: ["install", "--in-place", "extra"], says: [/too many arguments/] },
  { args: ["status", "--bpffs"], says: [/'--bpffs <dir>' argument missing/] },
  // the environment
  {
    args: ["version"],
    env: { TSNPROXY_LOG_LEVEL: "warning" },
    says: [/TSNPROXY_LOG_LEVEL/, /'warning'/, /debug, info, warn, error/],
  },
  { args: ["status"], env: { TSNPROXY_LOG_LEVEL: "verbose" }, says: [/TSNPROXY_LOG_LEVEL/] },
  {
    args: ["status"],
    env: { TSNPROXY_ATTACH_MODE: "xdp" },
    says: [/TSNPROXY_ATTACH_MODE/, /'xdp'/, /auto, tcx, clsact/],
  },
  { args: ["version"], env: { TSNPROXY_CNI_BUNDLE: "no" }, says: [/TSNPROXY_CNI_BUNDLE/] },
  { args: ["doctor"], env: { TSNPROXY_LIBBPF_DEBUG: "0" }, says: [/TSNPROXY_LIBBPF_DEBUG/] },
];

for (const c of USAGE) {
  const env = c.env ? ` (${Object.entries(c.env).map(([k, v]) => `${k}=${v}`).join(" ")})` : "";
  Deno.test(`usage error: tsnproxy ${c.args.join(" ")}${env} -> exit 2`, async () => {
    const r = await tsnproxy(c.args, { env: c.env });
    assert.equal(r.code, ExitCode.Usage, `${r.stdout}\n${r.stderr}`);
    assert.equal(r.stdout, "", "a usage error prints nothing on stdout");
    for (const re of c.says) assert.match(r.stderr, re);
  });
}

Deno.test("environment: documented log level names are accepted in any case", async () => {
  for (const level of ["WARN", "Debug", "error", "info"]) {
    const r = await tsnproxy(["version"], { env: { TSNPROXY_LOG_LEVEL: level } });
    assert.equal(r.code, 0, `${level}: ${r.stderr}`);
  }
  const r = await tsnproxy(["--log-level", "DEBUG", "version", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).version.length > 0, true);
});

Deno.test("environment: TSNPROXY_LOG_LEVEL=error silences info lines, debug shows debug", async () => {
  const args = ["doctor", "--json", ...nowhere(), "--bpffs", "/sys/fs/bpf/tsnp-none"];
  const quiet = await tsnproxy(args, { env: { TSNPROXY_LOG_LEVEL: "ERROR" } });
  assert.equal(quiet.stderr, "");
  const loud = await tsnproxy(args, { env: { TSNPROXY_LOG_LEVEL: "debug" } });
  const lines = logLines(loud.stderr);
  assert.ok(lines.some((l) => l.level === "debug" && l.cmd === "doctor"), loud.stderr);
  // --log-level beats the variable.
  const flag = await tsnproxy(["--log-level", "error", ...args], {
    env: { TSNPROXY_LOG_LEVEL: "debug" },
  });
  assert.equal(flag.stderr, "");
});

for (const cmd of COMMANDS) {
  for (const help of ["--help", "-h"]) {
    Deno.test(`help: tsnproxy ${cmd} ${help} -> usage on stdout, exit 0`, async () => {
      // CNI_COMMAND set as a runtime would: help must still not be taken for a plugin call.
      const env = cmd === "cni" ? { CNI_COMMAND: "ADD" } : undefined;
      const r = await tsnproxy([cmd, help], { env, stdin: "" });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: tsnproxy ${cmd} `));
      assert.equal(r.stderr, "");
    });
  }
}

Deno.test("help: top level names the exit codes and every environment variable", async () => {
  const r = await tsnproxy(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Exit codes: 0 success, 1 failure, 2 usage error.*3 doctor/);
  for (const v of ENV_VARS) assert.match(r.stdout, new RegExp(`\\b${v.name}\\b`));
  const cni = await tsnproxy(["help", "cni"]);
  assert.equal(cni.code, 0);
  assert.match(cni.stdout, /CNI_COMMAND/);
});

Deno.test("cni: runtime calls still run the plugin and answer CNI JSON only", async () => {
  const conf = '{"cniVersion":"1.1.0"}';
  // No arguments with CNI_COMMAND (how runtimes exec plugins), and `cni` alone.
  for (const args of [[], ["cni"]]) {
    // A log level that names nothing must not turn into a usage error here.
    for (const level of ["", "warning"]) {
      const env: Record<string, string> = { CNI_COMMAND: "VERSION" };
      if (level) env.TSNPROXY_LOG_LEVEL = level;
      const r = await tsnproxy(args, { env, stdin: conf });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      const out = JSON.parse(r.stdout);
      assert.equal(out.cniVersion, "1.1.0");
      assert.ok(out.supportedVersions.includes("1.1.0"));
    }
  }
});

Deno.test("cni: a bad TSNPROXY_LOG_LEVEL is a warning in the plugin's log, never on stdout", async () => {
  const logFile = nodeLogFile("cli");
  try {
    const entry = {
      cniVersion: "1.0.0",
      name: "n",
      type: "tsnproxy",
      bpffs: `/sys/fs/bpf/tsnp-test-none`,
      logFile,
    };
    const r = await tsnproxy([], {
      env: {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "cli-test",
        CNI_NETNS: "/proc/self/ns/net",
        CNI_IFNAME: "eth0",
        CNI_PATH: "/opt/cni/bin",
        TSNPROXY_LOG_LEVEL: "verbose",
      },
      stdin: JSON.stringify(entry),
    });
    // ADD without prevResult: the plugin's own error Result, on stdout, alone.
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "");
    const result = JSON.parse(r.stdout);
    assert.match(result.msg, /chained plugin/);
    const lines = logLines(await Deno.readTextFile(logFile));
    const warning = lines.find((l) => /TSNPROXY_LOG_LEVEL ignored/.test(l.msg));
    assert.ok(warning, JSON.stringify(lines));
    assert.equal(warning.level, "warn");
    assert.equal(warning.cmd, "cni");
    assert.equal(warning.value, "verbose");
  } finally {
    removeNodePath(logFile);
  }
});

Deno.test("docs/cli.md documents every command, environment variable and exit code", async () => {
  const doc = await Deno.readTextFile(`${ROOT}/docs/cli.md`);
  for (const cmd of COMMANDS) assert.match(doc, new RegExp(`tsnproxy ${cmd}\\b`), cmd);
  for (const v of ENV_VARS) assert.match(doc, new RegExp(`\\b${v.name}\\b`), v.name);
  for (const [name, code] of Object.entries(ExitCode)) {
    assert.match(doc, new RegExp(`\\| ${code} +\\|`), `exit code ${code} (${name})`);
  }
});
