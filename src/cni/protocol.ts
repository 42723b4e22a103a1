/**
 * The CNI wire protocol (spec 1.1.0), independent of what tsnproxy does: the verbs and
 * their required environment, version negotiation, the error result, result conversion
 * between spec versions and CNI_ARGS. Hot path: imports nothing heavy.
 */
import { CniCode, ConfigError, type TsnproxyError } from "../errors.ts";

export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
export type CniVersion = typeof SUPPORTED_VERSIONS[number];
export const LATEST_VERSION: CniVersion = "1.1.0";

export const VERBS = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"] as const;
export type Verb = typeof VERBS[number];

export interface CniErrorResult {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function errorResult(e: TsnproxyError, cniVersion: string): CniErrorResult {
  const out: CniErrorResult = { cniVersion, code: e.code, msg: e.message };
  if (e.hint) out.details = e.hint;
  return out;
}

/** Semantic version triple; undefined when not MAJOR.MINOR.PATCH. */
export function parseSemver(v: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function compareVersions(a: string, b: string): number {
  const x = parseSemver(a) ?? [0, 0, 0];
  const y = parseSemver(b) ?? [0, 0, 0];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

export function isSupported(v: unknown): v is CniVersion {
  return typeof v === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

function incompatible(what: string): ConfigError {
  return new ConfigError(
    what,
    `tsnproxy supports CNI versions ${SUPPORTED_VERSIONS.join(", ")}: set the conflist's ` +
      `"cniVersion" (or list one of them in "cniVersions")`,
    CniCode.IncompatibleVersion,
  );
}

/**
 * The protocol version of this invocation. The runtime writes the version it chose into
 * the plugin config's `cniVersion` (from the list's `cniVersion`, or the highest entry of
 * `cniVersions` it supports); that value is authoritative. A config that carries only
 * `cniVersions` (a plugin config used directly) gets the highest version both sides support.
 * An absent version means 0.1.0, as libcni reads it, which tsnproxy does not support.
 */
export function selectVersion(cniVersion: unknown, cniVersions: unknown): CniVersion {
  if (cniVersion !== undefined) {
    if (typeof cniVersion !== "string") {
      throw new ConfigError(
        `"cniVersion" must be a string, got ${JSON.stringify(cniVersion)}`,
        'write it as "1.1.0"',
        CniCode.DecodeFailure,
      );
    }
    if (!isSupported(cniVersion)) {
      throw incompatible(`CNI version ${JSON.stringify(cniVersion)} is not supported`);
    }
    return cniVersion;
  }
  if (cniVersions !== undefined) {
    if (!Array.isArray(cniVersions) || cniVersions.some((v) => typeof v !== "string")) {
      throw new ConfigError(
        `"cniVersions" must be a list of version strings`,
        'write it as ["1.0.0", "1.1.0"]',
        CniCode.DecodeFailure,
      );
    }
    const ok = (cniVersions as string[]).filter(isSupported).sort(compareVersions);
    if (ok.length === 0) {
      throw incompatible(`none of the CNI versions ${JSON.stringify(cniVersions)} is supported`);
    }
    return ok[ok.length - 1];
  }
  throw incompatible('the network configuration has no "cniVersion" (which means 0.1.0)');
}

/** Required/optional environment per verb (spec section 2). */
export interface CniEnv {
  command: Verb;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.\-]*$/;

function envError(msg: string, hint: string): ConfigError {
  return new ConfigError(msg, hint, CniCode.InvalidEnvironment);
}

const utf8 = new TextEncoder();

/** Linux interface names: 1-15 bytes, no '/', ':', whitespace or NUL, not "." or "..". */
export function validIfname(name: string): boolean {
  return name.length > 0 && name.length < 16 && utf8.encode(name).length < 16 &&
    !/[/:\s\0]/.test(name) && name !== "." && name !== "..";
}

export function readEnv(get: (k: string) => string | undefined): CniEnv {
  const command = get("CNI_COMMAND") ?? "";
  if (!(VERBS as readonly string[]).includes(command)) {
    throw envError(
      command
        ? `CNI_COMMAND=${JSON.stringify(command)} is not a CNI verb`
        : "CNI_COMMAND is not set",
      `set CNI_COMMAND to one of ${VERBS.join(", ")} (the container runtime does this)`,
    );
  }
  const env: CniEnv = {
    command: command as Verb,
    containerId: get("CNI_CONTAINERID") ?? "",
    netns: get("CNI_NETNS") ?? "",
    ifname: get("CNI_IFNAME") ?? "",
    args: get("CNI_ARGS") ?? "",
    path: get("CNI_PATH") ?? "",
  };
  const attachment = env.command === "ADD" || env.command === "DEL" || env.command === "CHECK";
  if (!attachment) return env;
  const missing: string[] = [];
  if (!env.containerId) missing.push("CNI_CONTAINERID");
  // DEL may come without a namespace (containerd's RemovePodSandbox, after StopPodSandbox).
  if (!env.netns && env.command !== "DEL") missing.push("CNI_NETNS");
  if (!env.ifname) missing.push("CNI_IFNAME");
  if (missing.length) {
    throw envError(
      `${env.command} needs ${missing.join(", ")}`,
      "the container runtime must set CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
    );
  }
  if (!CONTAINER_ID.test(env.containerId)) {
    throw envError(
      `CNI_CONTAINERID=${JSON.stringify(env.containerId)} is not a valid container id`,
      "a container id starts with a letter or digit followed by letters, digits, _, . or -",
    );
  }
  if (!validIfname(env.ifname)) {
    throw envError(
      `CNI_IFNAME=${JSON.stringify(env.ifname)} is not a valid interface name`,
      "interface names are 1-15 bytes without '/', ':', whitespace or NUL",
    );
  }
  return env;
}

/** CNI_ARGS "K=V;K=V" as pairs (entries without '=' are ignored, as libcni does). */
export function parseCniArgs(args: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const kv of args.split(";")) {
    const eq = kv.indexOf("=");
    if (eq > 0) out.set(kv.slice(0, eq).trim(), kv.slice(eq + 1));
  }
  return out;
}

// ---- Results ----------------------------------------------------------------------------

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** 0.3.0-0.4.0 share one result shape ("040"), 1.0.0-1.1.0 another ("100"). */
function family(v: CniVersion): "040" | "100" {
  return v.startsWith("0.") ? "040" : "100";
}

function decodeError(msg: string): ConfigError {
  return new ConfigError(
    msg,
    "prevResult must be the Result of the previous plugin in the chain (the runtime fills it in)",
    CniCode.DecodeFailure,
  );
}

/** Checks the parts of a Result tsnproxy reads; everything else passes through untouched. */
export function validateResult(r: unknown): JsonObject {
  if (!isObject(r)) throw decodeError("prevResult is not a JSON object");
  const interfaces = r.interfaces;
  if (interfaces !== undefined) {
    if (!Array.isArray(interfaces)) throw decodeError("prevResult.interfaces is not a list");
    interfaces.forEach((it, i) => {
      if (!isObject(it) || typeof it.name !== "string") {
        throw decodeError(`prevResult.interfaces[${i}] has no string "name"`);
      }
      if (it.sandbox !== undefined && typeof it.sandbox !== "string") {
        throw decodeError(`prevResult.interfaces[${i}].sandbox is not a string`);
      }
    });
  }
  const ips = r.ips;
  if (ips !== undefined) {
    if (!Array.isArray(ips)) throw decodeError("prevResult.ips is not a list");
    ips.forEach((ip, i) => {
      if (!isObject(ip) || typeof ip.address !== "string" || !ip.address.includes("/")) {
        throw decodeError(`prevResult.ips[${i}] has no CIDR "address"`);
      }
      if (
        ip.interface !== undefined &&
        (typeof ip.interface !== "number" || !Number.isInteger(ip.interface) ||
          ip.interface < 0 || ip.interface >= (Array.isArray(interfaces) ? interfaces.length : 0))
      ) {
        throw decodeError(`prevResult.ips[${i}].interface is not an index into interfaces`);
      }
    });
  }
  return r;
}

/**
 * The Result in the requested version. Same version: the object itself, untouched. Same
 * shape family: only cniVersion changes. 0.x <-> 1.x: ips[].version is dropped (1.0.0
 * removed it) or derived from the address family. Fields a version does not know are kept.
 */
export function convertResult(r: JsonObject, to: CniVersion): JsonObject {
  // Absent means the config's version; anything else (null included) must be one we speak.
  const fromRaw = r.cniVersion === undefined ? to : r.cniVersion;
  if (!isSupported(fromRaw)) {
    throw incompatible(`prevResult has CNI version ${JSON.stringify(fromRaw)}, not supported`);
  }
  const from = fromRaw;
  if (r.cniVersion === to) return r;
  const out: JsonObject = { ...r, cniVersion: to };
  if (family(from) !== family(to) && Array.isArray(r.ips)) {
    out.ips = r.ips.map((ip) => {
      if (!isObject(ip)) return ip;
      if (family(to) === "100") {
        const { version: _drop, ...rest } = ip;
        return rest;
      }
      const addr = typeof ip.address === "string" ? ip.address : "";
      return { version: addr.includes(":") ? "6" : "4", ...ip };
    });
  }
  return out;
}

/**
 * Addresses (without prefix length) that belong to interface `ifname` in a sandbox. IPs
 * without an interface index belong to the pod too (IPAM-style results).
 */
export function podAddresses(r: JsonObject, ifname: string): string[] {
  const interfaces = Array.isArray(r.interfaces) ? r.interfaces : [];
  const ips = Array.isArray(r.ips) ? r.ips : [];
  const out: string[] = [];
  for (const ip of ips) {
    if (!isObject(ip) || typeof ip.address !== "string") continue;
    if (typeof ip.interface === "number") {
      const it = interfaces[ip.interface];
      if (!isObject(it) || it.name !== ifname || !it.sandbox) continue;
    }
    const addr = ip.address.slice(0, ip.address.indexOf("/"));
    if (!out.includes(addr)) out.push(addr);
  }
  return out;
}

/**
 * Host-side interfaces of the Result (no sandbox): candidates for the pod's host veth. A name
 * no interface can have is no candidate (and must not reach a netlink request).
 */
export function hostInterfaces(r: JsonObject): string[] {
  const interfaces = Array.isArray(r.interfaces) ? r.interfaces : [];
  return interfaces.filter((it): it is JsonObject => isObject(it) && !it.sandbox)
    .map((it) => String(it.name)).filter(validIfname);
}
