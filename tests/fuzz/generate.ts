/**
 * Case generation: a real runtime input for one of the fixture's pods (./corpus.ts), then 0-6
 * mutations, structure-aware (fields dropped, retyped, duplicated or unknown, wrong versions,
 * huge and deep JSON, unicode and NULs, out-of-range numbers, policy layers with bad or
 * raising values, annotations with bad rules, paths outside the node's directories, odd
 * CNI_* values including FIFOs, regular files and /proc paths, CNI_ARGS junk) and byte-level
 * (flips, inserts, cuts, truncation, BOMs). Case N of seed S depends on nothing else: the
 * fixture enters only through strings of fixed length.
 */
import { Rng } from "./prng.ts";
import type { Fixture, FuzzPod, JsonObject, PodKey } from "./fixture.ts";
import { TARGETS } from "./fixture.ts";
import {
  ANNOTATION_KEYS,
  ANNOTATIONS_CAPABILITY,
  BPFFS_PLACEHOLDER,
  CNI_ARGS_JUNK,
  COMMANDS,
  CONTAINER_IDS,
  GOOD_ANNOTATIONS,
  IFNAMES,
  type Network,
  ODD_NUMBERS,
  ODD_STRINGS,
  POLICY_OBJECTS,
  POLICY_STRINGS,
  type Runtime,
  runtimeEnv,
  VERSIONS,
} from "./corpus.ts";
import {
  allPaths,
  clone,
  deleteAt,
  getAt,
  isObject,
  type Path,
  RawFragments,
  setAt,
  setOwn,
  sortKeys,
} from "./json.ts";

export type Verb = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION";
export type Via = "in-process" | "process" | "launcher" | "no-subcommand";
export const PROCESS_VIAS: readonly Via[] = ["process", "launcher", "no-subcommand"];

/** One plugin call: the environment's CNI_* variables and stdin. */
export interface Invocation {
  env: Record<string, string>;
  stdin: Uint8Array;
}

export interface Case {
  seed: number;
  index: number;
  /** "after-add": a valid ADD of the target runs first, the case's call then meets it. */
  kind: "single" | "after-add";
  target: PodKey;
  verb: Verb;
  network: string;
  runtime: Runtime;
  main: Invocation;
  /** The target's unmutated ADD (after-add cases, and to clean up). */
  valid: Invocation;
  via: Via;
  mutations: string[];
  /** The case may block an in-process call (a FIFO to open): only run it as a process. */
  mayBlock: boolean;
  /** An environment value a process cannot carry (NUL): only run it in-process. */
  inProcessOnly: boolean;
}

export interface GenerateOptions {
  /** Share of cases run as a real plugin process (the rest call handleCni in-process). */
  processShare: number;
  /** Force where the case runs (replay). */
  via?: Via;
}

interface Draft {
  rng: Rng;
  f: Fixture;
  pod: FuzzPod;
  verb: Verb;
  stdin: JsonObject;
  env: Record<string, string | undefined>;
  raw: RawFragments;
  /** Text-level edits, applied in order to the serialized stdin. */
  textEdits: Array<(s: string) => string>;
  /** Byte-level edits, applied after the text edits. */
  byteEdits: Array<(b: Uint8Array) => Uint8Array>;
  notes: string[];
  mayBlock: boolean;
}

const enc = new TextEncoder();

// ---- the unmutated input ------------------------------------------------------------------

/** A Result converted to another version as libcni's types do (ips[].version in 0.x only). */
export function resultIn(result: JsonObject, version: string): JsonObject {
  const out = clone(result);
  out.cniVersion = version;
  if (Array.isArray(out.ips)) {
    out.ips = out.ips.map((ip) => {
      if (!isObject(ip)) return ip;
      const { version: _v, ...rest } = ip;
      if (!version.startsWith("0.")) return rest;
      const addr = String(ip.address ?? "");
      return { version: addr.includes(":") ? "6" : "4", ...rest };
    });
  }
  return out;
}

/** What the admin's entry declares and the runtime passes for it: shared by a case's calls. */
interface Capabilities {
  capabilities?: JsonObject;
  runtimeConfig?: JsonObject;
}

function pickCapabilities(rng: Rng): Capabilities {
  if (rng.chance(0.3)) {
    return {
      capabilities: { [ANNOTATIONS_CAPABILITY]: true },
      runtimeConfig: { [ANNOTATIONS_CAPABILITY]: clone(rng.pick(GOOD_ANNOTATIONS)) },
    };
  }
  if (rng.chance(0.1)) {
    return {
      capabilities: { tsnproxy: true },
      runtimeConfig: { tsnproxy: { maxPriority: rng.range(0, 6) } },
    };
  }
  return {};
}

function baseStdin(
  f: Fixture,
  pod: FuzzPod,
  net: Network,
  verb: Verb,
  caps: Capabilities,
  secondDel: boolean,
): JsonObject {
  const entry = clone(net.entry);
  for (const k of Object.keys(entry)) {
    if (entry[k] === BPFFS_PLACEHOLDER) entry[k] = f.bpffs;
  }
  if (verb === "VERSION") return { cniVersion: net.cniVersion };
  const version = verb === "GC" || verb === "STATUS" ? "1.1.0" : net.cniVersion;
  const out: JsonObject = { ...entry, cniVersion: version, name: net.name, ...clone(caps) };
  if (verb === "GC") {
    out["cni.dev/valid-attachments"] = [
      { containerID: f.pods.bystander.containerId, ifname: "eth0" },
      { containerID: pod.containerId, ifname: "eth0" },
    ];
  }
  if ((verb === "ADD" || verb === "CHECK" || verb === "DEL") && !secondDel) {
    out.prevResult = resultIn(pod.result, version);
  }
  return out;
}

function baseEnv(
  f: Fixture,
  pod: FuzzPod,
  verb: Verb,
  runtime: Runtime,
  secondDel: boolean,
): Record<string, string | undefined> {
  const rt = runtimeEnv(runtime, pod.containerId, `web-${f.id}`);
  if (verb === "VERSION" || verb === "STATUS" || verb === "GC") {
    return { CNI_COMMAND: verb, CNI_PATH: rt.CNI_PATH };
  }
  return {
    CNI_COMMAND: verb,
    CNI_CONTAINERID: pod.containerId,
    // containerd's second DEL (RemovePodSandbox) has no namespace any more.
    CNI_NETNS: secondDel ? "" : pod.netns,
    CNI_IFNAME: pod.ifname,
    CNI_ARGS: rt.CNI_ARGS,
    CNI_PATH: rt.CNI_PATH,
  };
}

/** The stdin bytes as libcni writes them: keys sorted (Go maps), prevResult as printed. */
function serialize(stdin: JsonObject, raw: RawFragments): string {
  const out: JsonObject = {};
  for (const k of Object.keys(stdin).sort()) {
    setOwn(out, k, k === "prevResult" ? stdin[k] : sortKeys(stdin[k]));
  }
  return raw.splice(JSON.stringify(out));
}

function finish(d: Draft): Invocation {
  let text = serialize(d.stdin, d.raw);
  for (const e of d.textEdits) text = e(text);
  let bytes: Uint8Array = enc.encode(text);
  for (const e of d.byteEdits) bytes = e(bytes);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(d.env)) if (v !== undefined) env[k] = v;
  return { env, stdin: bytes };
}

// ---- values -------------------------------------------------------------------------------

function oddValue(d: Draft): unknown {
  const r = d.rng;
  switch (r.int(12)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick(ODD_NUMBERS);
    case 3:
      return r.pick(ODD_STRINGS);
    case 4:
      return [];
    case 5:
      return {};
    case 6:
      return [r.pick(ODD_STRINGS), r.pick(ODD_NUMBERS)];
    case 7:
      return { [r.pick(ODD_STRINGS)]: r.pick(ODD_NUMBERS) };
    case 8:
      return d.raw.marker(r.pick(["1e999", "-1e999", "-0", "1.0", "12345678901234567890", "1E2"]));
    case 9:
      return "x".repeat(r.pick([1000, 65536, 1 << 20]));
    case 10: {
      const depth = r.pick([64, 1000, 20000]);
      return d.raw.marker("[".repeat(depth) + "]".repeat(depth));
    }
    default: {
      const depth = r.pick([64, 5000]);
      return d.raw.marker('{"a":'.repeat(depth) + "1" + "}".repeat(depth));
    }
  }
}

function mutateString(r: Rng, s: string): string {
  const chars = [...s];
  switch (r.int(6)) {
    case 0:
      chars.splice(r.int(chars.length + 1), 0, r.pick(["\u0000", "/", "é", "🦕", " ", "%", "."]));
      break;
    case 1:
      if (chars.length) chars.splice(r.int(chars.length), 1);
      break;
    case 2:
      if (chars.length) chars[r.int(chars.length)] = String.fromCharCode(r.range(0, 0x2fff));
      break;
    case 3:
      return s + s;
    case 4:
      return s.toUpperCase();
    default:
      return s.slice(0, r.int(s.length + 1));
  }
  return chars.join("");
}

function pickPath(d: Draft, root: unknown, prefix: Path): Path | undefined {
  const paths = allPaths(root).filter((p) => p.length > 0);
  if (!paths.length) return undefined;
  return [...prefix, ...d.rng.pick(paths)];
}

// ---- mutators ------------------------------------------------------------------------------

type Mutator = (d: Draft) => string | undefined;

const dropField: Mutator = (d) => {
  const top = d.rng.chance(0.6);
  const p = top
    ? d.rng.pick(Object.keys(d.stdin).map((k) => [k] as Path).concat([["cniVersion"]]))
    : pickPath(d, d.stdin, []);
  if (!p || !deleteAt(d.stdin, p)) return undefined;
  return `drop ${p.join(".")}`;
};

const retype: Mutator = (d) => {
  const keys = Object.keys(d.stdin);
  const p = keys.length && d.rng.chance(0.5) ? [d.rng.pick(keys)] : pickPath(d, d.stdin, []);
  if (!p || p.length === 0) return undefined;
  const v = oddValue(d);
  setAt(d.stdin, p, v);
  return `retype ${p.join(".")} = ${short(v, d.raw)}`;
};

const oddString: Mutator = (d) => {
  const strings = allPaths(d.stdin).filter((p) => typeof getAt(d.stdin, p) === "string");
  if (!strings.length) return undefined;
  const p = d.rng.pick(strings);
  const old = getAt(d.stdin, p) as string;
  const v = d.rng.chance(0.5) ? d.rng.pick(ODD_STRINGS) : mutateString(d.rng, old);
  setAt(d.stdin, p, v);
  return `string ${p.join(".")} = ${short(v)}`;
};

const oddNumber: Mutator = (d) => {
  const nums = allPaths(d.stdin).filter((p) => typeof getAt(d.stdin, p) === "number");
  const p = nums.length && d.rng.chance(0.6)
    ? d.rng.pick(nums)
    : pickPath(d, d.stdin, []) ?? ["cniVersion"];
  const v = d.rng.chance(0.7)
    ? d.rng.pick(ODD_NUMBERS)
    : d.raw.marker(d.rng.pick(["1e999", "-0", "2.0", "1e-999", "0.0000001e7"]));
  setAt(d.stdin, p, v);
  return `number ${p.join(".")} = ${short(v, d.raw)}`;
};

const UNKNOWN_KEYS = [
  "x-vendor",
  "__proto__",
  "constructor",
  "hasOwnProperty",
  "cni.dev/attachment",
  "cni.dev/valid-attachments",
  "TsnInterface",
  "bpfFS",
  "",
  "é",
  "policy ",
  "dns",
  "ipam",
  "plugins",
];

const unknownField: Mutator = (d) => {
  const where = d.rng.chance(0.6) ? [] : pickPath(d, d.stdin, []) ?? [];
  const target = getAt(d.stdin, where);
  if (!isObject(target)) return undefined;
  const k = d.rng.pick(UNKNOWN_KEYS);
  setOwn(target, k, d.rng.chance(0.5) ? oddValue(d) : "x");
  return `unknown ${[...where, k].join(".")}`;
};

const duplicate: Mutator = (d) => {
  // A duplicate key as text: JSON.parse keeps the last, Go's decoder too.
  const keys = Object.keys(d.stdin);
  if (!keys.length) return undefined;
  const k = d.rng.pick(keys);
  const v = d.rng.chance(0.5) ? oddValue(d) : d.stdin[k];
  const frag = `${JSON.stringify(k)}:${d.raw.splice(JSON.stringify(v) ?? "null")}`;
  const atEnd = d.rng.chance(0.5);
  d.textEdits.push((s) => {
    if (atEnd) {
      const i = s.lastIndexOf("}");
      return i < 0 ? s : `${s.slice(0, i)}${s.length > 2 ? "," : ""}${frag}${s.slice(i)}`;
    }
    const i = s.indexOf("{");
    return i < 0 ? s : `${s.slice(0, i + 1)}${frag}${s.length > 2 ? "," : ""}${s.slice(i + 1)}`;
  });
  // An element duplicated in a list, too.
  const lists = allPaths(d.stdin).filter((p) => Array.isArray(getAt(d.stdin, p)));
  if (lists.length && d.rng.chance(0.5)) {
    const p = d.rng.pick(lists);
    const arr = getAt(d.stdin, p) as unknown[];
    if (arr.length) arr.push(clone(arr[d.rng.int(arr.length)]));
    return `duplicate key ${k} (${atEnd ? "last" : "first"}), element of ${p.join(".")}`;
  }
  return `duplicate key ${k} (${atEnd ? "last wins" : "first"})`;
};

const version: Mutator = (d) => {
  const v = d.rng.pick(VERSIONS);
  switch (d.rng.int(5)) {
    case 0:
      d.stdin.cniVersion = v;
      return `cniVersion ${JSON.stringify(v)}`;
    case 1:
      delete d.stdin.cniVersion;
      d.stdin.cniVersions = [v, d.rng.pick(VERSIONS)];
      return `cniVersions only ${JSON.stringify(d.stdin.cniVersions)}`;
    case 2:
      d.stdin.cniVersions = d.rng.chance(0.5) ? v : [1, null];
      return `cniVersions ${JSON.stringify(d.stdin.cniVersions)}`;
    case 3:
      if (isObject(d.stdin.prevResult)) {
        d.stdin.prevResult.cniVersion = v;
        return `prevResult.cniVersion ${JSON.stringify(v)}`;
      }
      return undefined;
    default:
      if (isObject(d.stdin.prevResult)) {
        d.stdin.prevResult = resultIn(d.stdin.prevResult, d.rng.pick(VERSIONS.slice(2, 7)));
        return `prevResult in ${(d.stdin.prevResult as JsonObject).cniVersion}`;
      }
      return undefined;
  }
};

const prevResult: Mutator = (d) => {
  const r = d.rng;
  const prev = isObject(d.stdin.prevResult) ? d.stdin.prevResult : undefined;
  const ifs = prev && Array.isArray(prev.interfaces) ? prev.interfaces as JsonObject[] : [];
  const ips = prev && Array.isArray(prev.ips) ? prev.ips as JsonObject[] : [];
  switch (r.int(12)) {
    case 0: {
      const other = d.f.pods[r.pick(["bridge", "ptp", "podman", "bystander"] as const)];
      d.stdin.prevResult = resultIn(other.result, String(d.stdin.cniVersion ?? "1.0.0"));
      return `prevResult of ${other.key}`;
    }
    case 1:
      if (!prev) return undefined;
      prev.interfaces = [];
      return "prevResult.interfaces []";
    case 2:
      if (!prev) return undefined;
      prev.interfaces = ifs.filter((i) => i.sandbox);
      return "prevResult without host interfaces";
    case 3:
      for (const i of ifs) delete i.sandbox;
      return "prevResult without sandbox";
    case 4:
      for (const i of ifs) {
        if (i.sandbox) {
          i.sandbox = r.pick([
            d.f.pods.bystander.netns,
            d.f.paths.fifo,
            "/proc/self/ns/net",
            "",
            d.f.paths.missing,
          ]);
        }
      }
      return "prevResult sandbox elsewhere";
    case 5:
      for (const ip of ips) ip.interface = r.pick([-1, 99, 1.5, "2", null, 2 ** 53]);
      return "prevResult ips[].interface out of range";
    case 6:
      for (const ip of ips) {
        ip.address = r.pick(["10.250.1.2", "10.250.1.2/33", "", "::/0", "x/y", "/"]);
      }
      return "prevResult odd addresses";
    case 7:
      if (!prev) return undefined;
      prev.interfaces = Array.from(
        { length: r.pick([100, 5000]) },
        (_, i) => ({ name: `v${i}`, mac: "00:00:00:00:00:00" }),
      );
      return "prevResult with many interfaces";
    case 8:
      d.stdin.prevResult = r.pick([null, [], "prevResult", 1, true, {}] as unknown[]) as JsonObject;
      return `prevResult = ${short(d.stdin.prevResult)}`;
    case 9:
      for (const i of ifs) {
        if (!i.sandbox) i.name = r.pick([d.f.pods.bystander.hostVeth, "lo", "fzbr0", "", "x/y"]);
      }
      return "prevResult host interface renamed";
    case 10:
      if (!prev) return undefined;
      delete prev.ips;
      return "prevResult without ips";
    default:
      for (const i of ifs) i.name = r.pick([7, null, ["eth0"], { name: "eth0" }] as unknown[]);
      return "prevResult interfaces[].name retyped";
  }
};

const policy: Mutator = (d) => {
  const r = d.rng;
  const obj = clone(r.pick(POLICY_OBJECTS));
  switch (r.int(4)) {
    case 0:
      d.stdin.policy = obj as JsonObject;
      return `entry policy ${short(obj)}`;
    case 1: {
      d.stdin.capabilities = { ...(isObject(d.stdin.capabilities) ? d.stdin.capabilities : {}) };
      (d.stdin.capabilities as JsonObject).tsnproxy = true;
      const rc = isObject(d.stdin.runtimeConfig) ? d.stdin.runtimeConfig : {};
      rc.tsnproxy = obj;
      d.stdin.runtimeConfig = rc;
      return `runtimeConfig.tsnproxy ${short(obj)}`;
    }
    case 2: {
      const rc = isObject(d.stdin.runtimeConfig) ? d.stdin.runtimeConfig : {};
      const ann = isObject(rc[ANNOTATIONS_CAPABILITY]) ? rc[ANNOTATIONS_CAPABILITY] : {};
      const k = r.pick(ANNOTATION_KEYS);
      ann[k] = r.chance(0.85) ? r.pick(POLICY_STRINGS) : r.pick([5, null, ["7"], {}] as unknown[]);
      rc[ANNOTATIONS_CAPABILITY] = ann;
      d.stdin.runtimeConfig = rc;
      return `annotation ${k}=${short(ann[k])}`;
    }
    default: {
      const rc = r.pick([[], "annotations", null, { [ANNOTATIONS_CAPABILITY]: "x" }] as unknown[]);
      d.stdin.runtimeConfig = rc as JsonObject;
      return `runtimeConfig = ${short(rc)}`;
    }
  }
};

const paths: Mutator = (d) => {
  const r = d.rng;
  const f = d.f;
  switch (r.int(4)) {
    case 0: {
      const v = r.pick([
        f.paths.missingRoot,
        f.paths.emptyRoot,
        "/sys/fs/bpf/",
        "/sys/fs/bpf",
        "/sys/fs/bpf/../../tmp",
        `/sys/fs/bpf/./${f.bpffs.slice("/sys/fs/bpf/".length)}`,
        f.paths.decoyRoot,
        f.paths.decoyRoot,
        "/tmp",
        "sys/fs/bpf/x",
        `${f.bpffs}/`,
        `${f.bpffs}/v2`,
        `${f.bpffs}/pods`,
        `${f.bpffs}\u0000`,
        `/sys/fs/bpf//${f.bpffs.slice("/sys/fs/bpf/".length)}`,
      ]);
      d.stdin.bpffs = v;
      return `bpffs ${JSON.stringify(v)}`;
    }
    case 1: {
      const v = r.pick([
        `${f.logDir}/plugin.log`,
        f.paths.logFifo,
        f.logDir,
        "/tmp/tsnproxy-fuzz.log",
        `${f.logDir}/../escape.log`,
        "plugin.log",
        "/var/log/tsnproxy/",
        `${f.logDir}/none/plugin.log`,
      ]);
      if (v === f.paths.logFifo) d.mayBlock = true;
      d.stdin.logFile = v;
      return `logFile ${JSON.stringify(v)}`;
    }
    case 2: {
      const v = r.pick([
        `/run/tsnproxy/fuzz-${f.id}/absent.sock`,
        f.paths.insideSocket,
        f.paths.deadSocket,
        f.paths.fifo,
        f.paths.file,
        f.paths.dir,
        "relative.sock",
        "",
        "/run/tsnproxy/",
      ]);
      d.stdin.agentSocket = v;
      return `agentSocket ${JSON.stringify(v)}`;
    }
    default: {
      const k = r.pick(["tsnInterface", "restoreAt", "attachMode", "logLevel", "type", "name"]);
      const v = r.pick([
        "tsn0",
        "tcx",
        "clsact",
        "netkit",
        "auto",
        "host-veth-ingress",
        "debug",
        "DEBUG",
        "tsnproxy",
        "",
        "x".repeat(16),
      ]);
      d.stdin[k] = v;
      return `${k} ${JSON.stringify(v)}`;
    }
  }
};

function netnsValue(d: Draft): string {
  const f = d.f;
  const v = d.rng.pick([
    f.paths.fifo,
    f.paths.file,
    f.paths.dir,
    f.paths.missing,
    f.paths.emptyNs,
    f.paths.bridgeEth0Ns,
    f.paths.sameNsVethNs,
    f.pods.bystander.netns,
    f.pods[d.rng.pick(TARGETS)].netns,
    "/proc/self/ns/net",
    "/proc/thread-self/ns/net",
    "/proc/self/ns/mnt",
    "/proc/self/ns/uts",
    "/proc/self/ns",
    "/proc/self/status",
    "/dev/null",
    "/dev/zero",
    "",
    "run/netns/x",
    `/var/run/netns/${d.pod.netnsName}`,
    `${d.pod.netns}/`,
    `${d.pod.netns}/.`,
    `/run/netns/../netns/${d.pod.netnsName}`,
    `/${"x".repeat(5000)}`,
  ]);
  if (v === f.paths.fifo) d.mayBlock = true;
  return v;
}

const envVar: Mutator = (d) => {
  const r = d.rng;
  const k = r.pick([
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_ARGS",
    "CNI_PATH",
  ]);
  if (r.chance(0.12)) {
    d.env[k] = undefined;
    return `unset ${k}`;
  }
  let v: string;
  switch (k) {
    case "CNI_COMMAND":
      v = r.chance(0.6)
        ? r.pick(COMMANDS)
        : r.pick(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]);
      break;
    case "CNI_CONTAINERID":
      v = r.chance(0.7) ? r.pick(CONTAINER_IDS) : mutateString(r, d.env[k] ?? d.pod.containerId);
      break;
    case "CNI_NETNS":
      v = netnsValue(d);
      break;
    case "CNI_IFNAME":
      v = r.chance(0.15) ? r.pick([d.pod.hostVeth, d.f.pods.bystander.hostVeth]) : r.pick(IFNAMES);
      break;
    case "CNI_ARGS":
      v = r.chance(0.6) ? r.pick(CNI_ARGS_JUNK) : `${d.env[k] ?? ""};${r.pick(CNI_ARGS_JUNK)}`;
      break;
    default:
      v = r.pick(["", "/nonexistent", ":", "x".repeat(10000)]);
  }
  d.env[k] = v;
  return `${k}=${short(v)}`;
};

/** Byte-level: the serialized stdin, flipped, cut, grown or replaced. */
const bytes: Mutator = (d) => {
  const r = d.rng;
  const op = r.int(10);
  const a = r.float(), b = r.float();
  const byte = r.pick([
    0x00,
    0xff,
    0x80,
    0xc3,
    0x22,
    0x5c,
    0x7b,
    0x7d,
    0x2c,
    0x0a,
    r.range(0, 255),
  ]);
  const names = [
    "flip a byte",
    "insert a byte",
    "delete a range",
    "duplicate a range",
    "truncate",
    "BOM first",
    "junk after",
    "two documents",
    "replace all",
    "whitespace",
  ];
  d.byteEdits.push((s) => {
    const n = s.length;
    const i = Math.floor(a * n), j = Math.min(n, i + 1 + Math.floor(b * 64));
    const cat = (...parts: Uint8Array[]) => {
      const out = new Uint8Array(parts.reduce((x, p) => x + p.length, 0));
      let o = 0;
      for (const p of parts) {
        out.set(p, o);
        o += p.length;
      }
      return out;
    };
    switch (op) {
      case 0: {
        const out = s.slice();
        if (n) out[i] ^= 1 << Math.floor(b * 8);
        return out;
      }
      case 1:
        return cat(s.subarray(0, i), new Uint8Array([byte]), s.subarray(i));
      case 2:
        return cat(s.subarray(0, i), s.subarray(j));
      case 3:
        return cat(s.subarray(0, j), s.subarray(i, j), s.subarray(j));
      case 4:
        return s.subarray(0, i);
      case 5:
        return cat(new Uint8Array([0xef, 0xbb, 0xbf]), s);
      case 6:
        return cat(s, enc.encode(["x", "\u0000", "}", ",", "garbage"][Math.floor(b * 5)]));
      case 7:
        return cat(s, s);
      case 8:
        return enc.encode(
          ["", "null", "[]", "{}", '"x"', "0", "true", " ", "\u0000"][
            Math.floor(b * 9)
          ],
        );
      default:
        return cat(enc.encode(" \n\t\r"), s, enc.encode("\n\n"));
    }
  });
  return `bytes: ${names[op]}`;
};

const MUTATORS: ReadonlyArray<readonly [number, Mutator]> = [
  [10, dropField],
  [8, retype],
  [8, oddString],
  [5, oddNumber],
  [5, unknownField],
  [4, duplicate],
  [7, version],
  [10, prevResult],
  [12, policy],
  [10, paths],
  [18, envVar],
  [7, bytes],
];

function short(v: unknown, raw?: RawFragments): string {
  const json = JSON.stringify(v) ?? String(v);
  const s = raw ? raw.splice(json) : json;
  return s.length > 60 ? `${s.slice(0, 57)}...(${s.length})` : s;
}

// ---- cases -------------------------------------------------------------------------------

/** Case `index` of `seed` against fixture `f`. */
export function generateCase(
  seed: number,
  index: number,
  f: Fixture,
  networks: Network[],
  opts: GenerateOptions,
): Case {
  const rng = new Rng(seed, index);
  const target = rng.pick(TARGETS);
  const pod = f.pods[target];
  const runtime: Runtime = target === "podman" ? "podman" : rng.pick(["containerd", "podman"]);
  const candidates = target === "podman"
    ? networks.filter((n) => n.source.startsWith("podman/"))
    : networks;
  const net = rng.pick(candidates.length ? candidates : networks);
  const verb = rng.weighted<Verb>([
    [50, "ADD"],
    [18, "DEL"],
    [14, "CHECK"],
    [6, "GC"],
    [6, "STATUS"],
    [6, "VERSION"],
  ]);
  const kind = verb !== "STATUS" && verb !== "VERSION" && rng.chance(0.25) ? "after-add" : "single";
  const secondDel = verb === "DEL" && rng.chance(0.4);
  const caps = pickCapabilities(rng);
  const valid = validAdd(f, pod, net, runtime, caps);
  const d: Draft = {
    rng,
    f,
    pod,
    verb,
    stdin: baseStdin(f, pod, net, verb, caps, secondDel),
    env: baseEnv(f, pod, verb, runtime, secondDel),
    raw: new RawFragments(),
    textEdits: [],
    byteEdits: [],
    notes: secondDel ? ["second DEL (no netns, no prevResult)"] : [],
    mayBlock: false,
  };
  const n = rng.weighted([[25, 0], [35, 1], [20, 2], [12, 3], [8, 6]]);
  for (let i = 0; i < n; i++) {
    const note = rng.weighted(MUTATORS)(d);
    if (note) d.notes.push(note);
  }
  const main = finish(d);
  const inProcessOnly = Object.values(main.env).some((v) => v.includes("\u0000"));
  const viaRng = new Rng(seed ^ 0x5a5a5a5a, index);
  let via: Via = opts.via ??
    (viaRng.chance(opts.processShare)
      ? viaRng.weighted<Via>([[70, "process"], [20, "launcher"], [10, "no-subcommand"]])
      : "in-process");
  if (d.mayBlock && via === "in-process") via = "process";
  if (inProcessOnly) via = "in-process";
  return {
    seed,
    index,
    kind,
    target,
    verb,
    network: net.source,
    runtime,
    main,
    valid,
    via,
    mutations: d.notes,
    mayBlock: d.mayBlock,
    inProcessOnly,
  };
}

/** The target's unmutated ADD in this network (what a runtime would send). */
function validAdd(
  f: Fixture,
  pod: FuzzPod,
  net: Network,
  runtime: Runtime,
  caps: Capabilities,
): Invocation {
  const d: Draft = {
    rng: new Rng(0),
    f,
    pod,
    verb: "ADD",
    stdin: baseStdin(f, pod, net, "ADD", caps, false),
    env: baseEnv(f, pod, "ADD", runtime, false),
    raw: new RawFragments(),
    textEdits: [],
    byteEdits: [],
    notes: [],
    mayBlock: false,
  };
  return finish(d);
}

/** The same call with another verb (the follow-up CHECK and DEL of a successful ADD). */
export function withVerb(inv: Invocation, verb: Verb): Invocation {
  return { env: { ...inv.env, CNI_COMMAND: verb }, stdin: inv.stdin };
}
