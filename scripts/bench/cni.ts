/**
 * Sections 3 and 4: CNI ADD/DEL latency and scale.
 *
 * Latency: fresh pod network namespaces with a veth (tests/cni/helpers.ts), a bridge-shaped
 * prevResult, and the plugins exec'd as a runtime does (env + stdin, result on stdout), in
 * rotating order per pod: tsnproxy (scripts/tsnproxy, the launcher a node without a compiled
 * binary uses) doing the work itself, the same with an agentSocket in its entry (the node's
 * `tsnproxy agent`, started through the same launcher as deploy/ starts it, with its own node
 * config, conf dir, bin dir and TSN interface, runs the verbs), Debian's Go
 * /usr/lib/cni/tuning (one sysctl), and the research design's process-per-step bash plugin
 * (scripts/bench/research_plugin.sh). With a compiled dist/tsnproxy of this checkout (built
 * first when DENORT_BIN names a mirrored denort) the binary gets a row of its own.
 *
 * Scale: N pods ADD then DEL at concurrency 1 and 16, tsnproxy alone and with the agent
 * running the verbs, each plugin process under /usr/bin/time for its peak RSS, and the
 * agent's resident set (VmRSS once ready, VmHWM after each run, the anonymous and file-backed
 * parts), then a leftover census (pins, pod entries, tcx/cls_bpf programs on the pods'
 * interfaces) that must be all zero.
 */
import { CLSACT_HANDLES, clsactProgId, queryTcx } from "../../src/bpf/attach.ts";
import { ifNameToIndex } from "../../src/ffi/libc.ts";
import { withNetns } from "../../src/util/netns.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { MAPS, PinLayout } from "../../src/bpf/pins.ts";
import { closeFd, mapInfo, objGetRequired, objPin } from "../../src/bpf/sys.ts";
import { createPod, deletePod, prevResultFor, type TestPod } from "../../tests/cni/helpers.ts";
import { onCleanup, sleep, summarize, type Summary } from "./common.ts";
import { run, type RunResult, spawn } from "../../tests/lib/run.ts";
import { addVeth, deleteLink } from "../../tests/lib/netns.ts";
import { setUpNode, tearDownNode } from "../../tests/lib/node.ts";
import { freePort } from "../../tests/lib/wait.ts";
import { ResearchDatapath } from "./research_dp.ts";
import { udp4 } from "./progcost.ts";
import { type VersionInfo, versionInfo } from "../../src/build_info.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
export const LAUNCHER = `${ROOT}/scripts/tsnproxy`;
export const RESEARCH_PLUGIN = `${ROOT}/scripts/bench/research_plugin.sh`;
export const GO_TUNING = "/usr/lib/cni/tuning";

export type Plugin =
  | "runtime-floor"
  | "tsnproxy"
  | "tsnproxy-binary"
  | "tsnproxy-agent"
  | "go-tuning"
  | "research";
/**
 * The rows every run has; "tsnproxy-binary" joins them when there is a binary to measure.
 * "runtime-floor" is `deno run` of an empty module with the launcher's flags on the CNI path,
 * exec'd like the plugins, in the same rotation: what any plugin run by `deno run` pays.
 */
export const PLUGINS: readonly Plugin[] = [
  "runtime-floor",
  "tsnproxy",
  "tsnproxy-agent",
  "go-tuning",
  "research",
];
export const BINARY = `${ROOT}/dist/tsnproxy`;

/** The verbs the agent ran, by verb and result, from its metrics. */
export type AgentServed = Record<string, { ok: number; error: number }>;

interface Fixture {
  id: string;
  bpffs: string;
  researchPins: string;
  tmp: string;
  dummy: string;
  agentSocket: string;
  /** Stops the agent; what it served. */
  stopAgent: () => Promise<AgentServed>;
  agentPid: number;
  /** The agent's resident set once it was ready (its first reconcile done). */
  agentReady: AgentMemory;
  /** Verbs the "tsnproxy-agent" row asked, each of which the agent must have served. */
  agentAsked: Record<"ADD" | "DEL", number>;
}

/** A process's resident set now and at its peak, and what of it is anonymous memory. */
export interface AgentMemory {
  rssMiB: number;
  peakMiB: number;
  /** RssAnon: the heaps (V8, malloc); the rest is file-backed, mostly deno's own code. */
  anonMiB: number;
  fileMiB: number;
}

/** /proc/<pid>/status's VmRSS, VmHWM, RssAnon and RssFile. */
export function processMemory(pid: number): AgentMemory {
  const st = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, "m").exec(st)?.[1] ?? NaN);
  return {
    rssMiB: kib("VmRSS") / 1024,
    peakMiB: kib("VmHWM") / 1024,
    anonMiB: kib("RssAnon") / 1024,
    fileMiB: kib("RssFile") / 1024,
  };
}

/** tsnproxy installed on a private pin root; the research programs pinned on a bpffs that
 * `ip netns exec` does not hide; a veth standing in for its TSN NIC. */
async function fixture(): Promise<Fixture> {
  const id = crypto.randomUUID().slice(0, 6);
  const f: Fixture = {
    id,
    bpffs: `/sys/fs/bpf/tsnp-bench-cni-${id}`,
    researchPins: `/run/tsnp-bench-bpf-${id}`,
    tmp: await Deno.makeTempDir({ prefix: "tsnp-bench-" }),
    dummy: `tsnpb${id}`,
    agentSocket: "",
    stopAgent: () => Promise.reject(new Error("no agent")),
    agentPid: 0,
    agentReady: { rssMiB: NaN, peakMiB: NaN, anonMiB: NaN, fileMiB: NaN },
    agentAsked: { ADD: 0, DEL: 0 },
  };
  // The plugin accepts an agentSocket only under /run/tsnproxy/ (src/config/paths.ts).
  const agentDir = `/run/tsnproxy/bench-${id}`;
  f.agentSocket = `${agentDir}/cni.sock`;
  onCleanup(`temp dir ${f.tmp}`, () => Deno.removeSync(f.tmp, { recursive: true }));
  Deno.mkdirSync(agentDir, { recursive: true });
  onCleanup(`agent dir ${agentDir}`, () => Deno.removeSync(agentDir, { recursive: true }));
  setUpNode({ bpffs: f.bpffs });
  onCleanup(`pin root ${f.bpffs}`, () => tearDownNode({ bpffs: f.bpffs }));
  Deno.mkdirSync(f.researchPins, { recursive: true });
  await run(["mount", "-t", "bpf", "bpf", f.researchPins]);
  onCleanup(`bpffs ${f.researchPins}`, async () => {
    await run(["umount", f.researchPins], { allowFail: true });
    Deno.removeSync(f.researchPins, { recursive: true });
  });
  const r = ResearchDatapath.load(`${f.tmp}/unused-pins`);
  try {
    for (const p of ["save", "restore", "gc_start"] as const) {
      objPin(r.prog(p), `${f.researchPins}/rsch_${p}`);
    }
  } finally {
    r.close(); // the pins keep the programs (and their maps) alive
  }
  await Deno.writeFile(`${f.tmp}/pkt`, udp4(1));
  await Deno.writeTextFile(`${f.tmp}/empty.ts`, "");
  await addVeth(f.dummy, `${f.dummy}p`, { up: false });
  onCleanup(`dummy ${f.dummy}`, () => deleteLink(f.dummy));
  await run(["ip", "link", "set", f.dummy, "up"]);
  const agent = await startAgent(f);
  f.stopAgent = agent.stop;
  f.agentPid = agent.pid;
  f.agentReady = processMemory(agent.pid);
  return f;
}

const CONFLIST = new URL("../../tests/fixtures/cni/bridge/10-bridge.conflist", import.meta.url)
  .pathname;

/**
 * `tsnproxy agent` as deploy/ runs it (through the launcher here: scripts/tsnproxy), serving
 * f.agentSocket for the node set up on f.bpffs, with a conf dir, a bin dir and a TSN interface
 * of its own (a veth: the research plugin has f.dummy), until cleanup or the stop it returns.
 * Ready (its first reconcile done, /readyz 200) before the first pod.
 */
async function startAgent(
  f: Fixture,
): Promise<{ stop: () => Promise<AgentServed>; pid: number }> {
  const tsn = `tsnpa${f.id}`;
  await addVeth(tsn, `${tsn}p`);
  onCleanup(`agent's TSN interface ${tsn}`, () => deleteLink(tsn));
  const dir = `${f.tmp}/agent`;
  for (const d of ["net.d", "bin", "state"]) Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
  Deno.copyFileSync(CONFLIST, `${dir}/net.d/10-bridge.conflist`);
  Deno.writeTextFileSync(
    `${dir}/config.yaml`,
    [
      `bpffs: ${f.bpffs}`,
      `tsnInterface: ${tsn}`,
      "qdisc:",
      "  kind: keep",
      "cni:",
      `  confDir: ${dir}/net.d`,
      `  binDir: ${dir}/bin`,
      `  agentSocket: ${f.agentSocket}`,
      "",
    ].join("\n"),
  );
  const env = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
  const where = ["--config", `${dir}/config.yaml`, "--state-dir", `${dir}/state`];
  // The init container's step: the plugin in the bin dir and the conflist entry, which the
  // agent's readiness requires (the datapath is setUpNode's, the same build's).
  await run([LAUNCHER, "install", ...where], { env, clearEnv: true });
  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const proc = spawn([
    LAUNCHER,
    "agent",
    ...where,
    "--metrics-address",
    `127.0.0.1:${port}`,
    "--reconcile-seconds",
    "86400",
    "--log-level",
    "warn",
  ], { env, clearEnv: true, stdout: "null", stderr: "inherit" });
  let stopped: Promise<AgentServed> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      const served = parseServed(await (await fetch(`${base}/metrics`)).text());
      await proc.stop("SIGTERM");
      return served;
    })();
  onCleanup("agent", async () => {
    await stop().catch(() => {
      try {
        proc.kill("SIGKILL");
      } catch { /* gone */ }
    });
  });
  let last = "";
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`${base}/readyz`);
      last = await r.text();
      if (r.status === 200) {
        (await Deno.connect({ transport: "unix", path: f.agentSocket })).close();
        return { stop, pid: proc.pid };
      }
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`the agent was not ready on ${base} with its socket ${f.agentSocket}: ${last}`);
}

/** tsnproxy_agent_cni_requests_total's verbs (src/agent/metrics.ts). */
function parseServed(metrics: string): AgentServed {
  const out: AgentServed = {};
  const re = /^tsnproxy_agent_cni_requests_total\{command="(\w+)",result="(\w+)"\} (\d+)$/gm;
  for (const m of metrics.matchAll(re)) {
    const v = (out[m[1]] ??= { ok: 0, error: 0 });
    if (m[2] === "ok") v.ok = Number(m[3]);
    else if (m[2] === "error") v.error = Number(m[3]);
  }
  return out;
}

function stdinFor(plugin: Plugin, f: Fixture, pod: TestPod, extra: Record<string, unknown> = {}) {
  if (plugin.startsWith("tsnproxy")) {
    return {
      cniVersion: "1.1.0",
      name: "bench",
      type: "tsnproxy",
      bpffs: f.bpffs,
      ...(plugin === "tsnproxy-agent" ? { agentSocket: f.agentSocket } : {}),
      ...extra,
      prevResult: prevResultFor(pod, "1.1.0"),
    };
  }
  if (plugin === "go-tuning") {
    return {
      cniVersion: "1.0.0",
      name: "bench",
      type: "tuning",
      sysctl: { "net.ipv4.conf.eth0.log_martians": "1" },
      prevResult: prevResultFor(pod, "1.0.0"),
    };
  }
  return {
    cniVersion: "1.0.0",
    name: "bench",
    type: "tsn",
    tsnIfname: f.dummy,
    tsnIngressOrEgress: "egress",
    prevResult: prevResultFor(pod, "1.0.0"),
  };
}

export interface ExecResult {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

/** Execs a plugin as a runtime does: a clean environment, config on stdin. */
export async function execPlugin(
  argv: string[],
  cmd: string,
  pod: TestPod,
  stdin: unknown,
  extraEnv: Record<string, string> = {},
): Promise<ExecResult> {
  const env: Record<string, string> = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: pod.netns,
    CNI_IFNAME: pod.ifname,
    CNI_PATH: "/usr/lib/cni",
    ...extraEnv,
  };
  // The launcher measures `deno run` even where a compiled dist/tsnproxy exists (its own row).
  if (argv.includes(LAUNCHER)) env.TSNPROXY_DENO_RUN = "1";
  const t0 = performance.now();
  const r = await run(argv, {
    env,
    clearEnv: true,
    stdin: JSON.stringify(stdin),
    allowFail: true,
  });
  return { ms: performance.now() - t0, ...r };
}

function argvFor(plugin: Plugin, f?: Fixture): string[] {
  if (plugin === "runtime-floor") {
    if (!f) throw new Error("the runtime floor needs the fixture's empty module");
    return [DENO, ...CNI_DENO_ARGS, `${f.tmp}/empty.ts`];
  }
  if (plugin === "tsnproxy-binary") return [BINARY];
  return plugin.startsWith("tsnproxy") ? [LAUNCHER] : plugin === "go-tuning" ? [GO_TUNING] : [
    "/bin/bash",
    RESEARCH_PLUGIN,
  ];
}

function envFor(plugin: Plugin, f: Fixture): Record<string, string> {
  if (plugin === "runtime-floor") return DENO_ENV;
  return plugin === "research"
    ? { RSCH_PINS: f.researchPins, RSCH_LOG: `${f.tmp}/research.log`, RSCH_PKT: `${f.tmp}/pkt` }
    : {};
}

async function invoke(plugin: Plugin, cmd: "ADD" | "DEL", f: Fixture, pod: TestPod) {
  if (plugin === "tsnproxy-agent") f.agentAsked[cmd]++;
  const r = await execPlugin(
    argvFor(plugin, f),
    cmd,
    pod,
    stdinFor(plugin, f, pod),
    envFor(plugin, f),
  );
  if (r.code !== 0) {
    throw new Error(`${plugin} ${cmd} failed (${r.code}): ${r.stdout.trim()} ${r.stderr.trim()}`);
  }
  return r;
}

/** Creates pods with bounded parallelism; each one is deleted on cleanup. */
async function makePods(n: number, parallel = 4): Promise<TestPod[]> {
  const pods: TestPod[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < n) {
      next++;
      const pod = await createPod();
      pods.push(pod);
      onCleanup(`pod ${pod.name}`, () => deletePod(pod));
    }
  }));
  return pods;
}

async function deletePods(pods: TestPod[], parallel = 4): Promise<void> {
  const queue = [...pods];
  await Promise.all(Array.from({ length: parallel }, async () => {
    for (let p = queue.pop(); p; p = queue.pop()) await deletePod(p);
  }));
}

export interface LatencyResult {
  pods: number;
  /** The rows measured, in table order (reports before the binary row: PLUGINS). */
  plugins?: Plugin[];
  add: Partial<Record<Plugin, Summary>>;
  del: Partial<Record<Plugin, Summary>>;
  /** ADD p50 of tsnproxy doing the work itself, and via the agent, over the baselines. */
  ratios: {
    tsnproxyVsResearch: number;
    tsnproxyVsGo: number;
    agentVsResearch: number;
    agentVsGo: number;
    binaryVsResearch?: number;
    binaryVsGo?: number;
  };
  /** Whether the compiled binary was measured, and if not why. */
  binary?: { measured: boolean; note: string };
  profile: Profile;
}

export interface Profile {
  /** `deno run` of an empty module with the launcher's flags: the runtime's floor. */
  denoEmptyMs: number;
  /** tsnproxy VERSION through the launcher: start-up + main.ts + src/cni/main.ts. */
  versionMs: number;
  /** tsnproxy ADD through `deno run` directly (no sh launcher). */
  addDirectMs: number;
  /** ADD wall time through the launcher, and the part the plugin itself logs (runCni). */
  addWallMs: number;
  addInPluginMs: number;
  /** ADD through the launcher with the CNI code as modules (TSNPROXY_CNI_BUNDLE=0). */
  addModulesMs: number;
  /** Inside one process, medians: importing src/cni/main.ts, then src/cni/verbs.ts (the
   * datapath modules); importing build/cni.js (all of it, bundled); opening libbpf. */
  importMs: { cniMain: number; verbs: number; bundle: number; libbpfOpen: number };
  /** Processes exec'd per ADD (strace -f execve). */
  execsPerAdd: Partial<Record<Plugin, number>>;
  /** strace -f -c of one tsnproxy ADD: top syscalls by count. */
  syscalls: Array<{ name: string; calls: number; seconds: number }>;
  syscallsTotal: number;
}

const DENO = `${ROOT}/tools/deno/node_modules/deno/deno`;
/** The launcher's flags on the CNI path (scripts/tsnproxy). */
const CNI_DENO_ARGS = [
  "run",
  "--quiet",
  "--allow-all",
  "--no-lock",
  "--no-config",
  "--v8-flags=--no-lazy",
] as const;
const DENO_ENV = {
  DENO_DIR: `${ROOT}/.cache/deno`,
  DENO_NO_UPDATE_CHECK: "1",
  DENO_NO_PROMPT: "1",
};

async function profile(
  f: Fixture,
  pods: TestPod[],
  reps: number,
  plugins: readonly Plugin[],
): Promise<Profile> {
  const med = (xs: number[]) => summarize(xs).p50;
  const empty = `${f.tmp}/empty.ts`;
  const denoArgs = CNI_DENO_ARGS;
  const pod0 = pods[0];
  const emptyMs: number[] = [];
  const versionMs: number[] = [];
  const direct: number[] = [];
  const wall: number[] = [];
  const inPlugin: number[] = [];
  const modules: number[] = [];
  // The plugin accepts a logFile only under /var/log/tsnproxy/ (src/config/paths.ts).
  const logFile = `/var/log/tsnproxy/bench-${f.id}.log`;
  Deno.mkdirSync("/var/log/tsnproxy", { recursive: true });
  onCleanup(`log ${logFile}`, () => Deno.removeSync(logFile));
  for (let i = 0; i < reps; i++) {
    emptyMs.push((await execPlugin([DENO, ...denoArgs, empty], "VERSION", pod0, {}, DENO_ENV)).ms);
    versionMs.push((await execPlugin([LAUNCHER], "VERSION", pod0, { cniVersion: "1.1.0" })).ms);
    const pod = pods[i % pods.length];
    const d = await execPlugin(
      [DENO, ...denoArgs, `${ROOT}/main.ts`],
      "ADD",
      pod,
      stdinFor("tsnproxy", f, pod),
      DENO_ENV,
    );
    if (d.code !== 0) throw new Error(`tsnproxy ADD failed: ${d.stdout}`);
    direct.push(d.ms);
    await invoke("tsnproxy", "DEL", f, pod);
    const w = await execPlugin(
      [LAUNCHER],
      "ADD",
      pod,
      stdinFor("tsnproxy", f, pod, { logFile, logLevel: "debug" }),
    );
    if (w.code !== 0) throw new Error(`tsnproxy ADD failed: ${w.stdout}`);
    wall.push(w.ms);
    const lines = (await Deno.readTextFile(logFile)).trim().split("\n");
    const done = JSON.parse(lines[lines.length - 1]) as {
      msg: string;
      ms?: number;
      entry?: string;
    };
    if (done.msg === "done" && typeof done.ms === "number") inPlugin.push(done.ms);
    if (done.entry !== "bundle") {
      throw new Error(`the CNI bundle is not in use (${JSON.stringify(done)}): deno task bundle`);
    }
    await invoke("tsnproxy", "DEL", f, pod);
    const m = await execPlugin([LAUNCHER], "ADD", pod, stdinFor("tsnproxy", f, pod), {
      TSNPROXY_CNI_BUNDLE: "0",
    });
    if (m.code !== 0) throw new Error(`tsnproxy ADD failed: ${m.stdout}`);
    modules.push(m.ms);
    await invoke("tsnproxy", "DEL", f, pod);
  }
  const probe = `${f.tmp}/import_probe.ts`;
  await Deno.writeTextFile(
    probe,
    [
      "const t0 = performance.now();",
      `await import(${JSON.stringify(`file://${ROOT}/src/cni/main.ts`)});`,
      "const t1 = performance.now();",
      `await import(${JSON.stringify(`file://${ROOT}/src/cni/verbs.ts`)});`,
      "const t2 = performance.now();",
      `const m = await import(${JSON.stringify(`file://${ROOT}/src/ffi/libbpf.ts`)});`,
      "m.libbpf();",
      "const t3 = performance.now();",
      "console.log(JSON.stringify([t1 - t0, t2 - t1, t3 - t2]));",
    ].join("\n"),
  );
  // The bundle in a process of its own: its first import pays what main.ts's did above.
  const bundleProbe = `${f.tmp}/import_bundle_probe.ts`;
  await Deno.writeTextFile(
    bundleProbe,
    [
      "const t0 = performance.now();",
      `await import(${JSON.stringify(`file://${ROOT}/build/cni.js`)});`,
      "console.log(JSON.stringify([performance.now() - t0]));",
    ].join("\n"),
  );
  const imports: number[][] = [];
  for (let i = 0; i < reps; i++) {
    const r = await execPlugin([DENO, ...denoArgs, probe], "VERSION", pod0, {}, DENO_ENV);
    const b = await execPlugin([DENO, ...denoArgs, bundleProbe], "VERSION", pod0, {}, DENO_ENV);
    if (r.code === 0 && b.code === 0) {
      imports.push([...JSON.parse(r.stdout), ...JSON.parse(b.stdout)]);
    }
  }
  const importMs = {
    cniMain: med(imports.map((x) => x[0])),
    verbs: med(imports.map((x) => x[1])),
    libbpfOpen: med(imports.map((x) => x[2])),
    bundle: med(imports.map((x) => x[3])),
  };
  // Processes per ADD and the syscall profile, with strace following forks.
  const execsPerAdd: Partial<Record<Plugin, number>> = {};
  for (const plugin of plugins) {
    const out = `${f.tmp}/strace-${plugin}`;
    const r = await execPlugin(
      ["strace", "-f", "-qq", "-e", "trace=execve", "-o", out, ...argvFor(plugin, f)],
      "ADD",
      pod0,
      stdinFor(plugin, f, pod0),
      envFor(plugin, f),
    );
    if (plugin === "tsnproxy-agent") f.agentAsked.ADD++;
    if (r.code !== 0) throw new Error(`${plugin} ADD under strace failed: ${r.stdout}`);
    execsPerAdd[plugin] = (await Deno.readTextFile(out)).split("\n")
      .filter((l) => /execve\(/.test(l) && / = 0$/.test(l)).length;
    await invoke(plugin, "DEL", f, pod0);
  }
  const cOut = `${f.tmp}/strace-c`;
  await execPlugin(
    ["strace", "-f", "-c", "-o", cOut, LAUNCHER],
    "ADD",
    pod0,
    stdinFor("tsnproxy", f, pod0),
  );
  await invoke("tsnproxy", "DEL", f, pod0);
  const syscalls: Profile["syscalls"] = [];
  let syscallsTotal = 0;
  for (const line of (await Deno.readTextFile(cOut)).split("\n")) {
    const m = /^\s*[\d.]+\s+([\d.]+)\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && m[3] !== "total") {
      syscalls.push({ name: m[3], calls: Number(m[2]), seconds: Number(m[1]) });
    }
    const t = /^\S+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total/.exec(line);
    if (t) syscallsTotal = Number(t[1]);
  }
  syscalls.sort((a, b) => b.calls - a.calls);
  return {
    denoEmptyMs: med(emptyMs),
    versionMs: med(versionMs),
    addDirectMs: med(direct),
    addWallMs: med(wall),
    addInPluginMs: inPlugin.length ? med(inPlugin) : NaN,
    addModulesMs: med(modules),
    importMs,
    execsPerAdd,
    syscalls: syscalls.slice(0, 12),
    syscallsTotal,
  };
}

export async function runLatency(
  o: { pods: number; warmup: number; profileReps: number; log: (s: string) => void },
): Promise<LatencyResult> {
  const binary = await compiledBinary(o.log);
  const plugins: Plugin[] = binary.measured
    ? ["runtime-floor", "tsnproxy", "tsnproxy-binary", "tsnproxy-agent", "go-tuning", "research"]
    : [...PLUGINS];
  const f = await fixture();
  o.log(`cni latency: creating ${o.pods} pod namespaces`);
  const pods = await makePods(o.pods + o.warmup);
  const none = () => Object.fromEntries(plugins.map((p) => [p, [] as number[]]));
  const add = none() as Record<Plugin, number[]>;
  const del = none() as Record<Plugin, number[]>;
  try {
    for (let i = 0; i < pods.length; i++) {
      const order = plugins.map((_, k) => plugins[(i + k) % plugins.length]);
      for (const plugin of order) {
        const a = await invoke(plugin, "ADD", f, pods[i]);
        const d = await invoke(plugin, "DEL", f, pods[i]);
        if (i >= o.warmup) {
          add[plugin].push(a.ms);
          del[plugin].push(d.ms);
        }
      }
      if ((i + 1) % 50 === 0) o.log(`cni latency: ${i + 1}/${pods.length} pods`);
    }
    o.log("cni latency: profiling tsnproxy");
    const prof = await profile(f, pods.slice(0, 8), o.profileReps, plugins);
    await agentServedAll(f);
    const s = (m: Record<Plugin, number[]>) =>
      Object.fromEntries(plugins.map((p) => [p, summarize(m[p])])) as Record<Plugin, Summary>;
    const addS = s(add);
    const p50 = (p: Plugin) => addS[p].p50;
    return {
      pods: o.pods,
      plugins,
      add: addS,
      del: s(del),
      ratios: {
        tsnproxyVsResearch: p50("tsnproxy") / p50("research"),
        tsnproxyVsGo: p50("tsnproxy") / p50("go-tuning"),
        agentVsResearch: p50("tsnproxy-agent") / p50("research"),
        agentVsGo: p50("tsnproxy-agent") / p50("go-tuning"),
        ...(binary.measured
          ? {
            binaryVsResearch: p50("tsnproxy-binary") / p50("research"),
            binaryVsGo: p50("tsnproxy-binary") / p50("go-tuning"),
          }
          : {}),
      },
      binary,
      profile: prof,
    };
  } finally {
    await deletePods(pods);
  }
}

/** Stops the agent: its rows are the agent's only if it ran every verb they asked of it. */
async function agentServedAll(f: Fixture): Promise<void> {
  const served = await f.stopAgent();
  for (const verb of ["ADD", "DEL"] as const) {
    const ok = served[verb]?.ok ?? 0;
    if (ok !== f.agentAsked[verb]) {
      throw new Error(
        `the agent ran ${ok} of the ${f.agentAsked[verb]} ${verb}s asked of it ` +
          `(${JSON.stringify(served)}): the plugin ran the rest itself, its figures would ` +
          "not be the agent's",
      );
    }
  }
}

/**
 * dist/tsnproxy, if it can be measured: built first when DENORT_BIN is set (scripts/build.ts
 * fails with its own message otherwise), and only if it is this checkout's build (a stale
 * binary would put another version's figures beside this one's).
 */
async function compiledBinary(
  log: (s: string) => void,
): Promise<{ measured: boolean; note: string }> {
  if (Deno.env.get("DENORT_BIN")) {
    log("cni latency: building dist/tsnproxy (DENORT_BIN is set)");
    const b = await spawn([DENO, "run", "--allow-all", `${ROOT}/scripts/build.ts`], {
      env: DENO_ENV,
      stdout: "inherit",
      stderr: "inherit",
    }).wait();
    if (b.code !== 0) throw new Error("scripts/build.ts failed with DENORT_BIN set (see above)");
  }
  let out: RunResult;
  try {
    out = await run([BINARY, "version", "--json"], { allowFail: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return {
        measured: false,
        note:
          "no dist/tsnproxy: `DENORT_BIN=<mirrored denort> deno task bench` builds and measures it",
      };
    }
    throw e;
  }
  const me = versionInfo();
  let got: Partial<VersionInfo> = {};
  try {
    got = JSON.parse(out.stdout);
  } catch {
    // reported below
  }
  if (
    out.code !== 0 || got.version !== me.version || got.bpfObjectsSha256 !== me.bpfObjectsSha256
  ) {
    return {
      measured: false,
      note: `dist/tsnproxy is not this checkout's build (${got.version ?? "no version"}, bpf ` +
        `${got.bpfObjectsSha256?.slice(0, 12) ?? "?"}): \`deno task build\` it again`,
    };
  }
  return { measured: true, note: `dist/tsnproxy ${got.version}, compiled: ${got.compiled}` };
}

// ---- scale ------------------------------------------------------------------------------

export type ScalePlugin = "tsnproxy" | "tsnproxy-agent";

export interface ScaleRun {
  /** Absent in reports from before the agent rows: "tsnproxy". */
  plugin?: ScalePlugin;
  concurrency: number;
  addTotalS: number;
  delTotalS: number;
  addP50Ms: number;
  delP50Ms: number;
  /** The largest plugin process. */
  peakRssMiB: number;
  /** The agent's peak so far (VmHWM), for the agent's runs. */
  agentPeakRssMiB?: number;
  /** The agent's resident set right after the run (its peak so far included). */
  agentMemory?: AgentMemory;
  failures: number;
  /** hookPrograms: tcx programs and our cls_bpf filter on the pods' egress hooks. */
  leftovers: { pins: number; policies: number; hookPrograms: number; podCounters: number };
}

export interface ScaleResult {
  pods: number;
  runs: ScaleRun[];
  maps: Array<
    {
      name: string;
      type: number;
      keySize: number;
      valueSize: number;
      maxEntries: number;
      memlockKiB: number;
    }
  >;
  mapMemlockKiBTotal: number;
  leftoversAfterTeardown: { pinRootExists: boolean };
  /** The agent's resident set once ready, before the first pod (its steady state idle). */
  agentReady?: AgentMemory;
}

async function timed(
  f: Fixture,
  plugin: ScalePlugin,
  cmd: "ADD" | "DEL",
  pod: TestPod,
): Promise<{ ms: number; rssKiB: number; ok: boolean }> {
  const out = `${f.tmp}/time-${pod.name}-${cmd}`;
  if (plugin === "tsnproxy-agent") f.agentAsked[cmd]++;
  const r = await execPlugin(
    ["/usr/bin/time", "-f", "%M", "-o", out, LAUNCHER],
    cmd,
    pod,
    stdinFor(plugin, f, pod),
  );
  const rss = Number((await Deno.readTextFile(out)).trim().split("\n").pop());
  await Deno.remove(out);
  return { ms: r.ms, rssKiB: rss, ok: r.code === 0 };
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x);
  }));
}

function memlockKiB(fd: number): number {
  const text = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  const m = /memlock:\s*(\d+)/.exec(text);
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function runScale(
  o: { pods: number; concurrency: number[]; log: (s: string) => void },
): Promise<ScaleResult> {
  const f = await fixture();
  o.log(`scale: creating ${o.pods} pod namespaces`);
  const pods = await makePods(o.pods);
  const runs: ScaleRun[] = [];
  const pins = new PinLayout(f.bpffs);
  const plan = o.concurrency.flatMap((c) =>
    (["tsnproxy", "tsnproxy-agent"] as const).map((plugin) => ({ c, plugin }))
  );
  try {
    for (const { c, plugin } of plan) {
      const adds: number[] = [];
      const dels: number[] = [];
      let rss = 0;
      let failures = 0;
      const step = async (cmd: "ADD" | "DEL", into: number[]) => {
        const t0 = performance.now();
        await pool(pods, c, async (pod) => {
          const r = await timed(f, plugin, cmd, pod);
          into.push(r.ms);
          rss = Math.max(rss, r.rssKiB);
          if (!r.ok) failures++;
        });
        return (performance.now() - t0) / 1000;
      };
      o.log(`scale: ${o.pods} pods, ${plugin}, concurrency ${c}: ADD`);
      const addTotalS = await step("ADD", adds);
      o.log(`scale: ${o.pods} pods, ${plugin}, concurrency ${c}: DEL`);
      const delTotalS = await step("DEL", dels);
      const maps = DatapathMaps.open(f.bpffs);
      let policies = 0;
      let podCounters = 0;
      try {
        policies = maps.pods().length;
        podCounters = maps.podCounters().length;
      } finally {
        maps.close();
      }
      let pinCount = 0;
      try {
        pinCount = [...Deno.readDirSync(pins.podsDir)].length;
      } catch {
        // no pods dir: nothing left
      }
      let hooked = 0;
      for (const pod of pods) {
        hooked += queryTcx(pod.ifname, "egress", pod.netns).length;
        const onHook = withNetns(
          pod.netns,
          () => clsactProgId(ifNameToIndex(pod.ifname), "egress"),
        );
        if (onHook !== undefined) hooked++;
        // admit, on the host side
        hooked += queryTcx(pod.hostVeth, "ingress").length;
        if (clsactProgId(ifNameToIndex(pod.hostVeth), "ingress", CLSACT_HANDLES.admit)) hooked++;
      }
      runs.push({
        plugin,
        concurrency: c,
        addTotalS,
        delTotalS,
        addP50Ms: summarize(adds).p50,
        delP50Ms: summarize(dels).p50,
        peakRssMiB: rss / 1024,
        ...(plugin === "tsnproxy-agent"
          ? (() => {
            const m = processMemory(f.agentPid);
            return { agentPeakRssMiB: m.peakMiB, agentMemory: m };
          })()
          : {}),
        failures,
        leftovers: { pins: pinCount, policies, hookPrograms: hooked, podCounters },
      });
    }
    const maps: ScaleResult["maps"] = [];
    for (const name of MAPS) {
      const fd = objGetRequired(pins.map(name));
      try {
        const i = mapInfo(fd);
        maps.push({
          name,
          type: i.type,
          keySize: i.keySize,
          valueSize: i.valueSize,
          maxEntries: i.maxEntries,
          memlockKiB: memlockKiB(fd),
        });
      } finally {
        closeFd(fd);
      }
    }
    await agentServedAll(f);
    await sleep(0);
    return {
      pods: o.pods,
      runs,
      maps,
      mapMemlockKiBTotal: maps.reduce((a, m) => a + m.memlockKiB, 0),
      leftoversAfterTeardown: { pinRootExists: false },
      agentReady: f.agentReady,
    };
  } finally {
    await deletePods(pods);
  }
}
