/**
 * What every fuzz case must satisfy, read with the production listing code:
 *
 *   the reply: exit 0 iff stdout is the verb's Result (ADD: the prevResult in the config's
 *   version; VERSION: the version info; other verbs: nothing), else stdout is one CNI error
 *   object (integer code of the spec's or ours, string msg, cniVersion); no uncaught exception
 *   text (our "this is a bug" wrapper, TypeError & co.), nothing on stderr;
 *
 *   the node: pins under the pin root (src/bpf/pod.ts listPodAttachments and the rest of the
 *   root), tsnp_pods entries and counter slots (src/bpf/maps.ts), and every tsnproxy program
 *   on every interface of the node's and the pods' namespaces (src/bpf/hooks.ts programsOn)
 *   are as before a failed call, and as before the ADD once its DEL ran; the decoy files
 *   outside the bpf filesystem are all still there.
 */
import { DatapathMaps } from "../../src/bpf/maps.ts";
import { listPodAttachments, podCookie } from "../../src/bpf/pod.ts";
import { programsOn } from "../../src/bpf/hooks.ts";
import { listLinks } from "../../src/netlink/link.ts";
import { withNetns } from "../../src/util/netns.ts";
import { CniCode } from "../../src/errors.ts";
import type { Fixture, JsonObject } from "./fixture.ts";
import { isObject } from "./json.ts";

// ---- replies -----------------------------------------------------------------------------

export interface Reply {
  code: number;
  /** Exactly what the plugin wrote on stdout. */
  stdout: string;
  stderr: string;
  /** The process did not exit in time (killed). */
  timedOut?: boolean;
  signal?: string | null;
  ms: number;
}

const CODES = new Set<number>(Object.values(CniCode));
const SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const VERBS = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"];
const CRASH_TEXT =
  /this is a bug in tsnproxy|TypeError|ReferenceError|RangeError|Maximum call stack|Cannot read propert|is not a function|is not iterable|undefined is not|Uncaught|at file:\/\/|at async /;

/** What the config on stdin says, as far as JSON.parse can tell (for the Result's checks). */
export function parsedStdin(text: string): JsonObject | undefined {
  try {
    const v = JSON.parse(text);
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function sameIgnoringIpVersion(a: unknown, b: unknown): boolean {
  const strip = (r: unknown) => {
    if (!isObject(r)) return r;
    const { cniVersion: _v, ...rest } = r;
    if (Array.isArray(rest.ips)) {
      rest.ips = rest.ips.map((ip) => {
        if (!isObject(ip)) return ip;
        const { version: _iv, ...x } = ip;
        return x;
      });
    }
    return rest;
  };
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

/** Problems with one reply; `verb` is CNI_COMMAND as the plugin saw it. */
export function replyProblems(verb: string | undefined, stdinText: string, r: Reply): string[] {
  const out: string[] = [];
  if (r.timedOut) {
    return [`no answer in time: the plugin hung (killed after ${Math.round(r.ms)} ms)`];
  }
  if (r.signal) out.push(`killed by ${r.signal}`);
  if (r.stderr !== "") out.push(`stderr is not empty: ${clip(r.stderr)}`);
  if (r.code !== 0 && r.code !== 1) out.push(`exit code ${r.code} (expected 0 or 1)`);
  let json: unknown;
  const lines = r.stdout.split("\n");
  if (r.stdout !== "") {
    if (!r.stdout.endsWith("\n") || lines.length !== 2) {
      out.push(`stdout is not one JSON line: ${clip(r.stdout)}`);
    }
    try {
      json = JSON.parse(r.stdout);
    } catch {
      out.push(`stdout is not JSON: ${clip(r.stdout)}`);
      return out;
    }
  }
  const config = parsedStdin(stdinText);
  if (r.code === 0) {
    if (!VERBS.includes(verb ?? "")) out.push(`CNI_COMMAND=${JSON.stringify(verb)} succeeded`);
    if (verb === "ADD") {
      if (!isObject(json)) out.push(`ADD succeeded without a Result: ${clip(r.stdout)}`);
      else {
        if (typeof json.cniVersion !== "string" || !SUPPORTED.includes(json.cniVersion)) {
          out.push(`ADD's Result has cniVersion ${JSON.stringify(json.cniVersion)}`);
        }
        if (typeof config?.cniVersion === "string" && json.cniVersion !== config.cniVersion) {
          out.push(`ADD's Result is in ${json.cniVersion}, the config asked ${config.cniVersion}`);
        }
        if (config && !sameIgnoringIpVersion(json, config.prevResult)) {
          out.push("ADD's Result is not the prevResult it was given");
        }
        if (String(json.cniVersion).startsWith("1.") && Array.isArray(json.ips)) {
          if (json.ips.some((ip) => isObject(ip) && "version" in ip)) {
            out.push("a 1.x Result carries ips[].version");
          }
        }
      }
    } else if (verb === "VERSION") {
      if (
        !isObject(json) || typeof json.cniVersion !== "string" ||
        !Array.isArray(json.supportedVersions) || json.supportedVersions.length === 0
      ) {
        out.push(`VERSION answered ${clip(r.stdout)}`);
      }
    } else if (r.stdout !== "") {
      out.push(`${verb} succeeded with output ${clip(r.stdout)} (expected none)`);
    }
    return out;
  }
  if (!isObject(json)) {
    out.push(`failed (exit ${r.code}) without an error object on stdout: ${clip(r.stdout)}`);
    return out;
  }
  if (typeof json.code !== "number" || !Number.isInteger(json.code)) {
    out.push(`error code ${JSON.stringify(json.code)} is not an integer`);
  } else if (!CODES.has(json.code)) out.push(`error code ${json.code} is not one we define`);
  if (typeof json.msg !== "string" || json.msg === "") out.push("error without a msg");
  if (typeof json.cniVersion !== "string" || !SUPPORTED.includes(json.cniVersion)) {
    out.push(`error's cniVersion ${JSON.stringify(json.cniVersion)}`);
  }
  if (json.details !== undefined && typeof json.details !== "string") {
    out.push("error details is not a string");
  }
  const text = `${json.msg ?? ""} ${json.details ?? ""}`;
  if (CRASH_TEXT.test(text)) out.push(`internal error: ${clip(text)}`);
  return out;
}

function clip(s: string, n = 300): string {
  const t = JSON.stringify(s);
  return t.length > n ? `${t.slice(0, n)}...(${s.length} chars)` : t;
}

// ---- the node's state --------------------------------------------------------------------

export interface NodeState {
  /** Every file and directory under the pin root, relative. */
  pins: string[];
  /** tsnp_pods: "ifindex cookie". */
  entries: string[];
  /** Pods holding a counter slot: their cookies. */
  slots: string[];
  /** tsnproxy programs on hooks: "namespace interface direction hook program". */
  programs: string[];
  /** Decoy files outside the bpf filesystem still there. */
  decoy: string[];
}

function walk(root: string, rel = ""): string[] {
  const out: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(rel ? `${root}/${rel}` : root)];
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...walk(root, p));
  }
  return out;
}

/** The namespaces whose interfaces a case could reach, by label. */
function namespaces(f: Fixture): Array<[string, string | undefined]> {
  return [
    ["node", undefined],
    ...Object.values(f.pods).map((p) => [p.key, p.netns] as [string, string]),
    ["empty", f.paths.emptyNs],
    ["bridge-eth0", f.paths.bridgeEth0Ns],
    ["same-ns-veth", f.paths.sameNsVethNs],
  ];
}

export function snapshot(f: Fixture): NodeState {
  const pins = walk(f.bpffs).sort();
  // listPodAttachments parses the pods directory as DEL and GC do: a pin it cannot parse
  // would be one no verb ever removes.
  const parsed = new Set(listPodAttachments(f.bpffs).flatMap((a) => a.pins));
  for (const p of pins.filter((p) => /^pods\/./.test(p))) {
    if (!parsed.has(`${f.bpffs}/${p}`)) pins.push(`UNPARSED ${p}`);
  }
  let entries: string[], slots: string[];
  const maps = DatapathMaps.open(f.bpffs);
  try {
    entries = maps.pods().map((p) => `${p.ifindex} ${p.entry.cookie}`).sort();
    slots = maps.podCounters().map((c) => String(c.podCookie)).sort();
  } catch (e) {
    // A case may have destroyed the datapath itself: that is a finding, not the oracle's end.
    entries = slots = [`unreadable: ${(e as Error).message}`];
  } finally {
    maps.close();
  }
  const programs: string[] = [];
  for (const [label, ns] of namespaces(f)) {
    // One setns per namespace: programsOn runs synchronously in the caller's.
    withNetns(ns, () => {
      for (const l of listLinks()) {
        for (const dir of ["ingress", "egress"] as const) {
          for (const p of programsOn(l.name, dir)) {
            if (p.ours) programs.push(`${label} ${l.name} ${dir} ${p.hook} ${p.name}`);
          }
        }
      }
    });
  }
  programs.sort();
  const decoy = f.paths.decoyFiles.filter((p) => {
    try {
      Deno.lstatSync(p);
      return true;
    } catch {
      return false;
    }
  });
  return { pins, entries, slots, programs, decoy };
}

/** What changed, one line per category ("" when nothing). */
export function stateDiff(a: NodeState, b: NodeState): string[] {
  const out: string[] = [];
  for (const k of ["pins", "entries", "slots", "programs", "decoy"] as const) {
    const added = b[k].filter((x) => !a[k].includes(x));
    const removed = a[k].filter((x) => !b[k].includes(x));
    if (added.length || removed.length) {
      out.push(
        `${k}: ${added.map((x) => `+${x}`).concat(removed.map((x) => `-${x}`)).join(", ")}`,
      );
    }
  }
  return out;
}

/** The state without the bystander's own parts (GC may remove them when not listed). */
export function withoutBystander(f: Fixture, s: NodeState): NodeState {
  const b = f.pods.bystander;
  const cookie = String(podCookie(b.containerId));
  return {
    pins: s.pins.filter((p) => !p.includes(b.containerId)),
    entries: s.entries.filter((e) => !e.endsWith(` ${cookie}`)),
    slots: s.slots.filter((c) => c !== cookie),
    programs: s.programs.filter((p) =>
      !p.startsWith(`node ${b.hostVeth} `) && !p.startsWith("bystander ")
    ),
    decoy: s.decoy,
  };
}

/** True when the bystander's saver, admit, pins and entry are all in place. */
export function bystanderIntact(f: Fixture, s: NodeState): boolean {
  const b = f.pods.bystander;
  const cookie = String(podCookie(b.containerId));
  const base = `pods/${b.containerId}_eth0`;
  const side = (p: string, host: boolean) =>
    (p === base || p.startsWith(`${base}@`)) && p.startsWith(`${base}@host`) === host;
  return s.pins.some((p) => side(p, false)) && s.pins.some((p) => side(p, true)) &&
    s.entries.some((e) => e.endsWith(` ${cookie}`)) &&
    s.programs.some((p) => p.startsWith("bystander eth0 egress")) &&
    s.programs.some((p) => p.startsWith(`node ${b.hostVeth} ingress`));
}
