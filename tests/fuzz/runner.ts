/**
 * Runs fuzz cases against the fixture and judges them (./oracle.ts). Most run the production
 * entry in-process (src/cni/main.ts handleCni, what the plugin process and the agent both
 * call); a sample runs the real plugin process (`deno run -A main.ts cni`, the launcher
 * scripts/tsnproxy, or main.ts with no argument as an installed binary), so process-level
 * crashes and stdout/stderr discipline are checked too.
 *
 * For each case: the node's state before; for an "after-add" case a valid ADD of the target
 * first; the case's call; its reply checked. A successful ADD is followed by CHECK (which
 * must agree, from 0.4.0) and DEL with the same input, after which the node must be exactly
 * as before; a failed call must have changed nothing (an "after-add" case's target is then
 * cleaned up by its valid DEL, which must leave the node as before too).
 */
import { handleCni } from "../../src/cni/main.ts";
import { attachBystander, type Fixture, type JsonObject } from "./fixture.ts";
import { type Case, type Invocation, PROCESS_VIAS, type Via, withVerb } from "./generate.ts";
import {
  bystanderIntact,
  type NodeState,
  parsedStdin,
  type Reply,
  replyProblems,
  snapshot,
  stateDiff,
  withoutBystander,
} from "./oracle.ts";
import { isObject } from "./json.ts";
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { podCookie } from "../../src/bpf/pod.ts";
import { run } from "../lib/run.ts";
import { pathProblem } from "../../src/config/paths.ts";
import { PLUGIN_DEFAULTS } from "../../src/cni/entry_fields.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
export const MAIN = `${ROOT}main.ts`;
export const LAUNCHER = `${ROOT}scripts/tsnproxy`;
const DECODER = new TextDecoder();

export interface RunOptions {
  /** A process that has not answered after this long is a hang. */
  processTimeoutMs: number;
  /** Where failing cases are saved (one JSON file each). */
  saveDir: string;
  log: (s: string) => void;
}

export interface Failure {
  seed: number;
  index: number;
  via: Via;
  problems: string[];
  mutations: string[];
  env: Record<string, string>;
  stdin: string;
  saved?: string;
}

export interface Tally {
  cases: number;
  byVia: Record<string, number>;
  /** Calls that answered 0 / an error, by verb as sent. */
  ok: Record<string, number>;
  errors: Record<string, number>;
  /** Error codes seen. */
  codes: Record<string, number>;
  /** Pristine (unmutated) cases: each must succeed. */
  pristine: number;
  /** Cases whose node state matched only after waiting (kernel-side deferred detach). */
  settled: Record<string, number>;
  /** Time spent in the case's call, by where it ran (ms). */
  callMs: Record<string, number>;
  /** One example of each distinct error message (ids and numbers folded), by code. */
  messages: Record<string, string>;
  /** The longest error message seen (chars) and its case. */
  longestMessage: { chars: number; index: number };
  /** Tolerated, documented behaviour seen. */
  notes: Record<string, number>;
  failures: Failure[];
}

export function newTally(): Tally {
  return {
    cases: 0,
    byVia: {},
    ok: {},
    errors: {},
    codes: {},
    pristine: 0,
    settled: {},
    callMs: {},
    messages: {},
    longestMessage: { chars: 0, index: -1 },
    notes: {},
    failures: [],
  };
}

const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

/** One call of the production entry in this process. */
async function inProcess(inv: Invocation): Promise<Reply> {
  const started = performance.now();
  const text = DECODER.decode(inv.stdin);
  const out = await handleCni(text, (k) => inv.env[k]);
  let stdout = "";
  try {
    if (out.stdout !== undefined) stdout = JSON.stringify(out.stdout) + "\n";
  } catch (e) {
    return {
      code: out.code,
      stdout: "",
      stderr: `the result cannot be written as JSON: ${(e as Error).message}`,
      ms: performance.now() - started,
    };
  }
  return { code: out.code, stdout, stderr: "", ms: performance.now() - started };
}

/** One call of the real plugin process, as a runtime execs it. */
export async function asProcess(inv: Invocation, via: Via, timeoutMs: number): Promise<Reply> {
  const started = performance.now();
  const deno = Deno.execPath();
  const cmd = via === "launcher"
    ? [LAUNCHER]
    : [deno, "run", "-A", "--quiet", MAIN, ...(via === "no-subcommand" ? [] : ["cni"])];
  const env: Record<string, string> = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ...inv.env,
  };
  // The launcher prefers a compiled dist/tsnproxy, which may be another build.
  if (via === "launcher") env.TSNPROXY_DENO_RUN = "1";
  // A plugin that stops reading its stdin tells by its reply.
  const out = await run(cmd, {
    env,
    clearEnv: true,
    cwd: "/",
    stdin: inv.stdin,
    timeoutMs,
    allowFail: true,
  });
  return { ...out, ms: performance.now() - started };
}

function verbOf(inv: Invocation): string | undefined {
  return inv.env.CNI_COMMAND;
}

function versionAtLeast(v: unknown, min: string): boolean {
  if (typeof v !== "string") return false;
  const p = (s: string) => s.split(".").map(Number);
  const [a, b] = [p(v), p(min)];
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

/**
 * The pin root a call would act on: its entry's when confined to the bpf filesystem (a valid
 * entry's, or an invalid one's for DEL: src/cni/main.ts), else the plugin's default.
 */
function effectiveRoot(text: string): string {
  const raw = parsedStdin(text);
  return pathProblem("bpffs", raw?.bpffs) === undefined
    ? raw?.bpffs as string
    : PLUGIN_DEFAULTS.bpffs;
}

/**
 * Whether the call could touch a pin root or socket that is not the fixture's: the default
 * root of a real installation, another test's. Such a case is skipped (counted), never run.
 */
export function foreignTarget(f: Fixture, inv: Invocation): string | undefined {
  const text = DECODER.decode(inv.stdin);
  const root = effectiveRoot(text).replace(/\/+/g, "/").replace(/\/(\.\/)+/g, "/")
    .replace(/\/+$/, "");
  const ours = [f.bpffs, f.paths.missingRoot, f.paths.emptyRoot, f.paths.decoyRoot];
  const inside = ours.some((o) => root === o || root.startsWith(`${o}/`));
  if (!inside) {
    try {
      Deno.lstatSync(root);
      return `pin root ${root} exists and is not the fixture's`;
    } catch { /* absent: the call fails without touching anything */ }
  }
  return undefined;
}

export async function call(inv: Invocation, via: Via, o: RunOptions): Promise<Reply> {
  return via === "in-process"
    ? await inProcess(inv)
    : await asProcess(inv, via, o.processTimeoutMs);
}

/** Runs one case; its problems (empty: passed). */
export async function runCase(f: Fixture, c: Case, o: RunOptions, t: Tally): Promise<string[]> {
  const problems: string[] = [];
  const skip = foreignTarget(f, c.main);
  if (skip) return [`SKIP ${skip}`];
  const before = snapshot(f);
  const drift = stateDiff(f.baseline, before);
  if (drift.length) {
    return [`the node was not in its baseline state before the case: ${drift.join("; ")}`];
  }
  if (c.kind === "after-add") {
    const r = await call(c.valid, "in-process", o);
    const p = replyProblems("ADD", DECODER.decode(c.valid.stdin), r);
    if (r.code !== 0) p.push(`the target's valid ADD failed: ${r.stdout}`);
    if (p.length) return p.map((x) => `setup: ${x}`);
  }
  const text = DECODER.decode(c.main.stdin);
  const verb = verbOf(c.main);
  const connections = f.outsideConnections;
  const reply = await call(c.main, c.via, o);
  if (f.outsideConnections !== connections) {
    problems.push(
      `the plugin connected to the agent socket ${f.paths.deadSocket}, outside /run/tsnproxy/ ` +
        "(an entry's agentSocket must be confined like its other paths)",
    );
  }
  bump(t.byVia, c.via);
  t.callMs[c.via] = (t.callMs[c.via] ?? 0) + reply.ms;
  problems.push(...replyProblems(verb, text, reply));
  if (reply.code === 0) bump(t.ok, c.verb);
  else {
    bump(t.errors, c.verb);
    try {
      const { code, msg } = JSON.parse(reply.stdout);
      bump(t.codes, String(code));
      const chars = String(msg).length;
      if (chars > t.longestMessage.chars) t.longestMessage = { chars, index: c.index };
      const key = `${code} ${String(msg).replace(/[0-9a-f]{12,}/g, "<id>").replace(/\d+/g, "N")}`
        .slice(0, 160);
      if (Object.keys(t.messages).length < 400 && !(key in t.messages)) {
        t.messages[key] = `${c.seed}/${c.index}: ${String(msg).slice(0, 400)}`;
      }
    } catch { /* reported */ }
  }
  const config = parsedStdin(text);
  // An unmutated call must succeed, but for CHECK of nothing, or below 0.4.0.
  const mustSucceed = c.mutations.length === 0 &&
    (c.verb !== "CHECK" || (c.kind === "after-add" && versionAtLeast(config?.cniVersion, "0.4.0")));
  if (mustSucceed && reply.code !== 0) {
    problems.push(`an unmutated ${c.verb} failed: ${reply.stdout.trim()}`);
  }
  if (c.mutations.length === 0) t.pristine++;

  // Follow-ups run in-process, but for a case that may block there (a FIFO it names).
  const follow: Via = c.mayBlock ? "process" : "in-process";
  const ok = reply.code === 0 && !reply.timedOut;
  if (ok && verb === "ADD") {
    // The attachment must satisfy CHECK and go away with DEL.
    if (versionAtLeast(config?.cniVersion, "0.4.0")) {
      const r = await call(withVerb(c.main, "CHECK"), follow, o);
      problems.push(...replyProblems("CHECK", text, r).map((p) => `CHECK after ADD: ${p}`));
      if (r.code !== 0) problems.push(`CHECK after a successful ADD failed: ${r.stdout.trim()}`);
    }
    const d = await call(withVerb(c.main, "DEL"), follow, o);
    problems.push(...replyProblems("DEL", text, d).map((p) => `DEL after ADD: ${p}`));
    if (d.code !== 0) problems.push(`DEL after a successful ADD failed: ${d.stdout.trim()}`);
  }
  if (c.kind === "after-add") {
    const d = await call(withVerb(c.valid, "DEL"), "in-process", o);
    if (d.code !== 0) problems.push(`the target's valid DEL failed: ${d.stdout.trim()}`);
  }
  const gc = verb === "GC" && ok;
  const norm = (s: NodeState) => gc ? withoutBystander(f, s) : s;
  // A DEL that named no namespace, or another one, and GC cannot reach the target's clsact
  // saver: it stays until the namespace goes (src/bpf/pod.ts detachPodPrograms, verbs.ts
  // cmdGc), by design. The fixture's namespaces live on, so the fuzzer removes it.
  const pod = f.pods[c.target];
  const strandedSaver = `${c.target} eth0 egress clsact tsnp_save`;
  const mayStrand = c.kind === "after-add" && ok &&
    ((verb === "DEL" && c.main.env.CNI_NETNS !== pod.netns) ||
      (verb === "GC" && !listedForGc(config, pod.containerId)));
  if (
    mayStrand && !before.programs.includes(strandedSaver) &&
    snapshot(f).programs.includes(strandedSaver)
  ) {
    await run(["tc", "-n", pod.netnsName, "filter", "del", "dev", "eth0", "egress"]);
    bump(t.notes, `a ${verb} that could not name the pod's namespace left its clsact saver`);
  }
  const settled = await settle(f, norm(before), norm);
  if (settled.waitedMs > 0) bump(t.settled, `<= ${settled.bucket} ms`);
  const after = settled.state;
  if (gc && !bystanderIntact(f, after) && listedForGc(config, f.pods.bystander.containerId)) {
    problems.push("GC removed the bystander, which its valid attachments list");
  }
  if (settled.diff.length) {
    const what = ok && verb === "ADD"
      ? "ADD then DEL did not leave the node as before"
      : `a ${ok ? "successful" : "failed"} ${verb ?? "call"} changed the node`;
    problems.push(`${what}: ${settled.diff.join("; ")}`);
  }
  if (!bystanderIntact(f, after)) {
    // Repair, so that one failure does not fail every later case.
    await repair(f, o);
    if (!bystanderIntact(f, snapshot(f))) problems.push("the bystander could not be re-attached");
  }
  return problems;
}

/** Whether a GC's "cni.dev/valid-attachments" (as the plugin parses it) keeps a container. */
function listedForGc(config: JsonObject | undefined, containerId: string): boolean {
  const valid = config?.["cni.dev/valid-attachments"];
  return Array.isArray(valid) && valid.some((v) => isObject(v) && v.containerID === containerId);
}

const SETTLE_MS = 2000;

/**
 * The node's state once it matches `want` or SETTLE_MS passed. Unpinning a tcx link drops its
 * last reference, and the kernel frees (detaches) it from a workqueue: right after a DEL the
 * program can still be on its hook for a few milliseconds.
 */
async function settle(
  f: Fixture,
  want: NodeState,
  norm: (s: NodeState) => NodeState,
): Promise<{ state: NodeState; diff: string[]; waitedMs: number; bucket: number }> {
  const started = performance.now();
  let pause = 2, slept = false;
  for (;;) {
    const state = snapshot(f);
    const diff = stateDiff(want, norm(state));
    const elapsed = performance.now() - started;
    if (!diff.length || elapsed > SETTLE_MS) {
      const waitedMs = slept ? elapsed : 0;
      const bucket = [10, 100, 1000].find((b) => waitedMs <= b) ?? SETTLE_MS;
      return { state, diff, waitedMs, bucket };
    }
    await new Promise((r) => setTimeout(r, pause));
    slept = true;
    pause = Math.min(pause * 2, 200);
  }
}

/** Puts the bystander back after a GC (or a bug) removed it. */
async function repair(f: Fixture, o: RunOptions): Promise<void> {
  try {
    await attachBystander(f);
  } catch (e) {
    o.log(`repair: ${(e as Error).message}`);
  }
}

/**
 * After a failing case: the node back to its state after the fixture was built (baseline),
 * whatever the case left, so that one failure does not cascade into the next cases. The
 * targets' valid DELs first, then by hand what they could not reach: stray pins, tsnp_pods
 * entries and counter slots of anyone but the bystander, clsact filters on the fixture's
 * interfaces; the bystander re-attached if it was hurt.
 */
export async function resetNode(f: Fixture, c: Case, o: RunOptions): Promise<string[]> {
  for (const inv of [c.valid, c.main]) {
    try {
      await call(withVerb(inv, "DEL"), inv === c.main && c.mayBlock ? "process" : "in-process", o);
    } catch { /* best effort */ }
  }
  for (const file of f.paths.decoyFiles) Deno.writeTextFileSync(file, "decoy\n");
  const bystander = podCookie(f.pods.bystander.containerId);
  const dir = `${f.bpffs}/pods`;
  for (
    const e of (() => {
      try {
        return [...Deno.readDirSync(dir)];
      } catch {
        return [];
      }
    })()
  ) {
    if (!e.name.startsWith(f.pods.bystander.containerId)) Deno.removeSync(`${dir}/${e.name}`);
  }
  const maps = DatapathMaps.open(f.bpffs);
  try {
    for (const p of maps.pods()) if (p.entry.cookie !== bystander) maps.deletePod(p.ifindex);
    for (const c of maps.podCounters()) {
      if (c.podCookie !== bystander) maps.releaseSlot(c.podCookie);
    }
  } finally {
    maps.close();
  }
  const state = await settle(f, f.baseline, (s) => s);
  for (const line of state.diff.filter((d) => d.startsWith("programs:"))) {
    for (const item of line.slice("programs: ".length).split(", ")) {
      const [label, ifname, direction, hook] = item.slice(1).split(" ");
      if (!item.startsWith("+") || hook !== "clsact") continue;
      const ns = label === "node" ? [] : ["-n", nsName(f, label)];
      await run(["tc", ...ns, "filter", "del", "dev", ifname, direction], { allowFail: true });
    }
  }
  if (!bystanderIntact(f, snapshot(f))) {
    await call(withVerb(invocationOf(f.bystanderInput), "DEL"), "in-process", o);
    await repair(f, o);
  }
  return (await settle(f, f.baseline, (s) => s)).diff;
}

function nsName(f: Fixture, label: string): string {
  const pod = (f.pods as Record<string, { netnsName: string } | undefined>)[label];
  if (pod) return pod.netnsName;
  const path = label === "empty"
    ? f.paths.emptyNs
    : label === "bridge-eth0"
    ? f.paths.bridgeEth0Ns
    : f.paths.sameNsVethNs;
  return path.slice("/run/netns/".length);
}

function invocationOf(i: Fixture["bystanderInput"]): Invocation {
  return { env: i.env, stdin: new TextEncoder().encode(i.stdin) };
}

export function isProcessVia(v: Via): boolean {
  return PROCESS_VIAS.includes(v);
}
