/**
 * The one validator of policy layers, for every place one is written: the node config
 * (src/config/node.ts wraps it for zod), the plugin entry (src/cni/config.ts),
 * runtimeConfig.tsnproxy, and the compact string forms of pod annotations and CNI_ARGS. No
 * zod: the CNI path runs it on every ADD.
 *
 * Object form:  {maxPriority: 5, remap: {"7": 3}, defaultPriority: 2,
 *                rules: [{protocol: "udp", ports: "319-320", destination: "224.0.1.129",
 *                         priority: 7}]}
 * String forms: priority "5"; remap "7:3,6:3"; rules "udp:319-320@224.0.1.129=7,@10.0.0.0/8=2"
 *               ([protocol][:port[-port]][@prefix]=priority, comma separated; ">" for "=",
 *               as CNI_ARGS needs: its pairs allow one "=").
 */
import { CniCode, type CniCodeValue, ConfigError } from "../errors.ts";
import { formatIp, parsePrefix } from "../util/ip.ts";
import {
  type CompiledRule,
  MAX_RULES,
  type PodPolicy,
  PRIORITY_MAX,
  type ProtocolName,
  PROTOCOLS,
  REMAP_SLOTS,
  type Rule,
} from "./types.ts";

const REMAP_KEY = /^(?:[1-9]|1[0-5])$/;
/** Priority 0 is what a packet without SO_PRIORITY carries: defaultPriority and rules own it. */
const REMAP_ZERO = "priority 0 is what a packet that set no priority carries, and remap does " +
  "not apply to it: give such packets a class with defaultPriority (or rules) instead";
const POLICY_KEYS = ["maxPriority", "remap", "defaultPriority", "rules"];
const RULE_KEYS = ["protocol", "ports", "destination", "priority"];
export const POLICY_HINT = 'a policy is {maxPriority?, remap?: {"1".."15": priority}, ' +
  "defaultPriority?, rules?: [{protocol?, ports?, destination?, priority}]}, every priority " +
  `0..${PRIORITY_MAX} (see docs/config.md)`;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

export function isPriority(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= PRIORITY_MAX;
}

const PRIORITY_MSG = `expected an integer priority 0..${PRIORITY_MAX}`;

function protocolNumber(p: unknown): number | undefined {
  if (typeof p === "string" && p in PROTOCOLS) return PROTOCOLS[p as ProtocolName];
  if (typeof p === "number" && Number.isInteger(p) && p >= 1 && p <= 255) return p;
  return undefined;
}

function portRange(v: unknown): { from: number; to: number } | undefined {
  const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (typeof v === "number") return ok(v) ? { from: v, to: v } : undefined;
  if (typeof v === "string") {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v.trim());
    if (!m) return undefined;
    const from = Number(m[1]), to = Number(m[2] ?? m[1]);
    return ok(from) && ok(to) && from <= to ? { from, to } : undefined;
  }
  if (isRecord(v) && typeof v.from === "number" && typeof v.to === "number") {
    return ok(v.from) && ok(v.to) && v.from <= v.to ? { from: v.from, to: v.to } : undefined;
  }
  return undefined;
}

/** One problem of a policy: where in the object (keys and list indexes) and what. */
export interface PolicyIssue {
  path: (string | number)[];
  message: string;
  /** The problem is the key at `path` (a remap key), not its value. */
  atKey?: boolean;
}

/** Problems of one rule object at `at`. */
function ruleIssues(r: unknown, at: (string | number)[]): PolicyIssue[] {
  const issue = (message: string, ...sub: string[]) => ({ path: [...at, ...sub], message });
  if (!isRecord(r)) return [issue("expected {protocol?, ports?, destination?, priority}")];
  const out: PolicyIssue[] = [];
  const unknown = Object.keys(r).filter((k) => !RULE_KEYS.includes(k));
  if (unknown.length) out.push(issue(`unknown key ${unknown.join(", ")} (valid: ${RULE_KEYS})`));
  if (!isPriority(r.priority)) out.push(issue(PRIORITY_MSG, "priority"));
  if (r.protocol !== undefined && protocolNumber(r.protocol) === undefined) {
    out.push(issue(
      `${show(r.protocol)} is not one of ${
        Object.keys(PROTOCOLS).join(", ")
      } or a protocol number 1..255`,
      "protocol",
    ));
  }
  if (r.ports !== undefined) {
    if (portRange(r.ports) === undefined) {
      out.push(issue(`expected a port 1..65535 or a range "from-to"`, "ports"));
    } else if (!["tcp", "udp", "sctp", 6, 17, 132, undefined].includes(r.protocol as string)) {
      out.push(issue("a port range needs protocol tcp, udp or sctp (or none)", "ports"));
    }
  }
  if (r.destination !== undefined) {
    if (typeof r.destination !== "string" || !parsePrefix(r.destination)) {
      out.push(issue(`expected an address or prefix such as "10.0.0.0/8"`, "destination"));
    }
  }
  return out;
}

/** Problems of a policy object; empty when valid. */
export function policyIssues(input: unknown): PolicyIssue[] {
  if (!isRecord(input)) return [{ path: [], message: `expected an object, got ${show(input)}` }];
  const out: PolicyIssue[] = [];
  const unknown = Object.keys(input).filter((k) => !POLICY_KEYS.includes(k));
  if (unknown.length) {
    out.push({
      path: [],
      message: `unknown key${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} ` +
        `(valid: ${POLICY_KEYS.join(", ")})`,
    });
  }
  for (const k of ["maxPriority", "defaultPriority"]) {
    if (input[k] !== undefined && !isPriority(input[k])) {
      out.push({ path: [k], message: PRIORITY_MSG });
    }
  }
  if (input.remap !== undefined) {
    if (!isRecord(input.remap)) out.push({ path: ["remap"], message: "expected an object" });
    else {
      for (const [k, v] of Object.entries(input.remap)) {
        if (/^0+$/.test(k)) out.push({ path: ["remap", k], message: REMAP_ZERO, atKey: true });
        else if (!REMAP_KEY.test(k)) {
          out.push({
            path: ["remap", k],
            message: 'remap keys are the priorities "1" to "15"',
            atKey: true,
          });
        }
        if (!isPriority(v)) out.push({ path: ["remap", k], message: PRIORITY_MSG });
      }
    }
  }
  if (input.rules !== undefined) {
    if (!Array.isArray(input.rules)) {
      out.push({ path: ["rules"], message: "expected a list of rules" });
    } else {
      if (input.rules.length > MAX_RULES) {
        out.push({
          path: ["rules"],
          message: `at most ${MAX_RULES} rules (the datapath holds ${MAX_RULES})`,
        });
      }
      input.rules.forEach((r, i) => out.push(...ruleIssues(r, ["rules", i])));
    }
  }
  return out;
}

/** Problems of a policy object, as "path: message" under `where`; empty when valid. */
export function policyProblems(input: unknown, where: string): string[] {
  return policyIssues(input).map((i) =>
    `${where}${
      i.path.map((p) => typeof p === "number" ? `[${p}]` : `.${p}`).join("")
    }: ${i.message}`
  );
}

function normalizeRule(r: Record<string, unknown>): Rule {
  const out: Rule = { priority: r.priority as number };
  if (r.protocol !== undefined) out.protocol = r.protocol as Rule["protocol"];
  if (r.ports !== undefined) out.ports = portRange(r.ports);
  if (r.destination !== undefined) out.destination = r.destination as string;
  return out;
}

/** Validates a policy object from any source; `where` names it in the error. */
export function validatePolicy(
  input: unknown,
  where: string,
  code: CniCodeValue = CniCode.InvalidNetworkConfig,
): PodPolicy {
  const problems = policyProblems(input, where);
  if (problems.length) throw new ConfigError(problems.join("; "), POLICY_HINT, code);
  return normalizePolicy(input);
}

/** A policy object that policyIssues found no problem with, in its normal form. */
export function normalizePolicy(input: unknown): PodPolicy {
  const p = input as Record<string, unknown>;
  const out: PodPolicy = {};
  if (p.maxPriority !== undefined) out.maxPriority = p.maxPriority as number;
  if (p.remap !== undefined) {
    out.remap = Object.fromEntries(
      Object.entries(p.remap as Record<string, number>).map(([k, v]) => [String(Number(k)), v]),
    );
  }
  if (p.defaultPriority !== undefined) out.defaultPriority = p.defaultPriority as number;
  if (p.rules !== undefined) {
    out.rules = (p.rules as Record<string, unknown>[]).map(normalizeRule);
  }
  return out;
}

// ---- string forms (annotations, CNI_ARGS) ---------------------------------------------

export function parsePriority(s: string, where: string, code: CniCodeValue): number {
  const t = s.trim();
  const n = /^\d{1,10}$/.test(t) ? Number(t) : NaN;
  if (!isPriority(n)) {
    throw new ConfigError(
      `${where}: ${show(s)} is not a priority 0..${PRIORITY_MAX}`,
      "use a decimal integer, e.g. 5",
      code,
    );
  }
  return n;
}

/** The compact remap syntax "7:3,6:3" (spaces allowed, empty = no entries). */
export function parseRemapString(
  s: string,
  where: string,
  code: CniCodeValue,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of s.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
    const m = /^(\d{1,2})\s*[:=]\s*(\d+)$/.exec(part);
    if (m && Number(m[1]) === 0) {
      throw new ConfigError(`${where}: ${show(part)}: ${REMAP_ZERO}`, POLICY_HINT, code);
    }
    if (!m || Number(m[1]) >= REMAP_SLOTS) {
      throw new ConfigError(
        `${where}: ${show(part)} is not a remap entry`,
        'write "from:to" pairs separated by commas, from in 1..15, e.g. "7:3,6:3"',
        code,
      );
    }
    out[String(Number(m[1]))] = parsePriority(m[2], where, code);
  }
  return out;
}

const RULE_STRING =
  /^(?<proto>[a-z0-9]+)?(?::(?<ports>\d{1,5}(?:-\d{1,5})?))?(?:@(?<dst>[0-9a-fA-F:.]+(?:\/\d{1,3})?))?\s*[=>]\s*(?<prio>\d+)$/;

/** The compact rules syntax "udp:319-320@224.0.1.129=7,@10.0.0.0/8=2". */
export function parseRulesString(s: string, where: string, code: CniCodeValue): Rule[] {
  const rules: Record<string, unknown>[] = [];
  for (const part of s.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
    const m = RULE_STRING.exec(part);
    if (!m?.groups || (!m.groups.proto && !m.groups.ports && !m.groups.dst)) {
      throw new ConfigError(
        `${where}: ${show(part)} is not a rule`,
        "write [protocol][:port[-port]][@prefix]=priority, comma separated, e.g. " +
          '"udp:319-320=7,@10.0.0.0/8=2" (in CNI_ARGS, whose pairs allow one "=", write ">" ' +
          'for "=": "udp:319-320>7")',
        code,
      );
    }
    const g = m.groups;
    const r: Record<string, unknown> = { priority: Number(g.prio) };
    if (g.proto) r.protocol = /^\d+$/.test(g.proto) ? Number(g.proto) : g.proto;
    if (g.ports) r.ports = g.ports;
    if (g.dst) r.destination = g.dst;
    rules.push(r);
  }
  return validatePolicy({ rules }, where, code).rules ?? [];
}

// ---- the datapath's form of a rule ----------------------------------------------------

export function compileRule(r: Rule): CompiledRule {
  const addr = new Uint8Array(16);
  let family = 0, prefixLen = 0;
  if (r.destination !== undefined) {
    const p = parsePrefix(r.destination);
    if (!p) throw new Error(`not a prefix: ${r.destination}`); // validated before
    family = p.family;
    prefixLen = p.length;
    for (let bit = 0; bit < p.length; bit++) {
      const byte = bit >> 3;
      addr[byte] |= p.bytes[byte] & (0x80 >> (bit & 7));
    }
  }
  return {
    family,
    l4proto: r.protocol === undefined ? 0 : protocolNumber(r.protocol) ?? 0,
    prefixLen,
    addr,
    portLo: r.ports?.from ?? 0,
    portHi: r.ports?.to ?? 0,
    priority: r.priority,
  };
}

/** A compiled rule as text, for logs and status ("udp:319-320@224.0.1.129/32=7"). */
export function formatRule(r: CompiledRule): string {
  const proto = Object.entries(PROTOCOLS).find(([, n]) => n === r.l4proto)?.[0] ??
    (r.l4proto ? String(r.l4proto) : "");
  const ports = r.portLo || r.portHi
    ? `:${r.portLo}${r.portHi !== r.portLo ? `-${r.portHi}` : ""}`
    : "";
  let dst = "";
  if (r.family) {
    const bytes = r.family === 4 ? r.addr.subarray(0, 4) : r.addr;
    dst = `@${formatIp(bytes)}/${r.prefixLen}`;
  }
  return `${proto}${ports}${dst}=${r.priority}`;
}
