/**
 * The node config (/etc/tsnproxy/config.yaml): read by install, uninstall, agent, doctor and
 * status. A missing file means all defaults. Every problem is reported as
 * `config.yaml:7:12: gc.maxAgeMs: expected a positive integer` with a hint; unknown keys are
 * rejected with the closest valid key suggested.
 */
import { LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { ConfigError, UsageError } from "../errors.ts";
import { ATTACH_MODES, DEFAULTS, type NodeConfigOverrides, RESTORE_AT } from "../options.ts";
import type { PodPolicy } from "../policy/types.ts";
import { normalizePolicy, policyIssues } from "../policy/validate.ts";
import { type ConfinedPath, pathProblem } from "./paths.ts";
import { qdiscSchema } from "./qdisc.ts";
import { vlanSchema } from "./vlan.ts";
import { closestKey, formatPath, issueMessage, keysAt, locate } from "./yaml_errors.ts";

export const DEFAULT_NODE_CONFIG_PATH: string = DEFAULTS.config;
export { ATTACH_MODES, type NodeConfigOverrides, RESTORE_AT };

const POS_INT = "expected a positive integer";
const posInt = () => z.int({ error: POS_INT }).positive({ error: POS_INT });
const absPath = (what: string) =>
  z.string({ error: `expected ${what} as an absolute path` }).regex(/^\/\S*$/, {
    error: `expected ${what} as an absolute path`,
  });

/** A path confined to the node's own directories (src/config/paths.ts). */
const confined = (kind: ConfinedPath) =>
  z.string({ error: `expected ${kind} as an absolute path` }).superRefine((s, ctx) => {
    const p = pathProblem(kind, s);
    if (p) ctx.addIssue({ code: "custom", message: p });
  });

/**
 * The node's policy layer, checked by the one policy validator (src/policy/validate.ts). Its
 * problems ("policy.remap.16: ...") become issues at their path, so the error names the line
 * and column of the offending value (or key, for a bad remap key).
 */
const nodePolicy = z.unknown().superRefine((v, ctx) => {
  for (const i of policyIssues(v)) {
    ctx.addIssue({
      code: "custom",
      message: i.message,
      path: i.path,
      params: i.atKey ? { at: "key" } : {},
    });
  }
}).transform((v): PodPolicy => normalizePolicy(v));

const mapEntries = z.int({ error: "expected an integer" }).refine(
  (n) => n >= 1024 && n <= 1 << 20 && (n & (n - 1)) === 0,
  { error: "expected a power of two between 1024 and 1048576" },
);

const hostPort = z.string({ error: 'expected "host:port"' }).refine((s) => {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(s);
  return m !== null && Number(m[2]) <= 65535;
}, { error: 'expected "host:port" (e.g. "0.0.0.0:9489", "[::1]:9489")' });

/** Linux IFNAMSIZ is 16 including the NUL. */
const ifname = z.string({ error: "expected an interface name" }).regex(/^[^\s/:]{1,15}$/, {
  error: "expected an interface name (1-15 characters, no spaces, '/' or ':')",
});

export const CARRIERS = ["auto", "tag", "table"] as const;
const oneOf = <T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `expected one of ${values.map((v) => `"${v}"`).join(", ")}` });

/**
 * One TSN interface: the restorer runs on its egress, install sets up its root qdisc and,
 * on a VLAN device, its egress-qos-map (priority -> PCP).
 */
export const tsnInterfaceSchema = z.strictObject({
  name: ifname,
  qdisc: qdiscSchema.default({ kind: "keep" }),
  vlan: vlanSchema.optional(),
});
export type TsnInterfaceConfig = z.infer<typeof tsnInterfaceSchema>;

const LIST_ERROR = "expected a list of TSN interfaces, e.g. [{name: tsn0}, {name: tsn1}]";

/**
 * The settings as written. The TSN interfaces come in one of two forms: the single form
 * (`tsnInterface` with the top-level `qdisc` and `vlan`, also what `--tsn-interface` sets)
 * or the list (`tsnInterfaces`, each entry with its own qdisc and vlan). nodeConfigSchema
 * turns either into the list.
 */
const nodeConfigFields = z.strictObject({
  /** The single form: the TSN NIC the restorer runs on (or --tsn-interface). */
  tsnInterface: ifname.optional(),
  /** The list form: several TSN NICs, each with its own qdisc and vlan. */
  tsnInterfaces: z.array(tsnInterfaceSchema, { error: LIST_ERROR })
    .min(1, { error: `${LIST_ERROR} (the list is empty)` }).optional(),
  restoreAt: oneOf(RESTORE_AT).default(DEFAULTS.restoreAt),
  bpffs: confined("bpffs").default(DEFAULTS.bpffs),
  attachMode: oneOf(ATTACH_MODES).default(DEFAULTS.attachMode),
  /** How admitted metadata travels to the restorer (src/bpf/carrier.ts). */
  carrier: oneOf(CARRIERS).default("auto"),
  gc: z.strictObject({
    /** A staged entry older than this never restores (the stage's age limit). */
    maxAgeMs: posInt().default(1000),
    /** Release 0.1.0's GC timer period; ABI 2 has no GC. Accepted, ignored. */
    intervalMs: posInt().default(1000),
  }).prefault({}),
  /** Release 0.1.0's fingerprint table size; ABI 2 has none to size. Accepted, ignored. */
  mapEntries: mapEntries.default(16384),
  policy: z.optional(nodePolicy).transform((p) => p ?? {}),
  cni: z.strictObject({
    confDir: absPath("cni.confDir").default(DEFAULTS.cniConfDir),
    binDir: absPath("cni.binDir").default(DEFAULTS.cniBinDir),
    /** Chain into the network with this name instead of the first config file. */
    network: z.string().min(1, { error: "expected a network name" }).optional(),
    /** Rewrite the conflist in place (runtimes that ignore renames); unset = installer decides. */
    inPlace: z.boolean({ error: "expected true or false" }).optional(),
    /**
     * The agent serves CNI verbs on this unix socket and the entry tells the plugin to hand
     * them over (src/cni/delegate.ts); unset = the plugin does all the work itself.
     */
    agentSocket: confined("agentSocket").optional(),
  }).prefault({}),
  /** The single form's root qdisc (with tsnInterfaces: each entry's own). */
  qdisc: qdiscSchema.optional(),
  /** The single form's VLAN egress-qos-map (with tsnInterfaces: each entry's own). */
  vlan: vlanSchema.optional(),
  metrics: z.strictObject({
    /**
     * Where /metrics and the probes (/readyz, /livez) listen. The node's loopback by default:
     * the agent runs in the host's network namespace, where 0.0.0.0 would be reachable from
     * every network the node is on, the TSN network included (docs/metrics.md).
     */
    address: hostPort.default(DEFAULTS.metricsAddress),
    /** Per-pod series labelled with namespace, pod and container id (off: node totals only). */
    podLabels: z.boolean({ error: "expected true or false" }).default(false),
  }).prefault({}),
});

const BOTH_FORMS = "the single form (tsnInterface, which --tsn-interface sets) and the list " +
  "(tsnInterfaces) are both given: use one. --tsn-interface names one interface and cannot " +
  "say which entry of the list it means: with a list, leave the flag out";
const SINGLE_ONLY = (key: string) =>
  `with tsnInterfaces, each interface has its own ${key}: move this section into the ` +
  "tsnInterfaces entry it belongs to";

export const nodeConfigSchema = nodeConfigFields.superRefine((c, ctx) => {
  if (!c.tsnInterfaces) return;
  if (c.tsnInterface !== undefined) {
    ctx.addIssue({ code: "custom", path: ["tsnInterface"], message: BOTH_FORMS });
  }
  for (const key of ["qdisc", "vlan"] as const) {
    if (c[key] !== undefined) {
      ctx.addIssue({ code: "custom", path: [key], message: SINGLE_ONLY(key) });
    }
  }
  const seen = new Map<string, number>();
  c.tsnInterfaces.forEach((t, i) => {
    const first = seen.get(t.name);
    if (first !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["tsnInterfaces", i, "name"],
        message: `${t.name} is listed twice (entries ${first} and ${i}): give each interface ` +
          "one entry",
      });
    } else seen.set(t.name, i);
  });
}).transform(({ tsnInterface, tsnInterfaces, qdisc, vlan, ...rest }) => ({
  ...rest,
  /**
   * The TSN interfaces, whichever form the config used (empty: none configured; install
   * then needs --tsn-interface). The first is the one single-interface outputs name.
   */
  tsnInterfaces: tsnInterfaces ??
    (tsnInterface === undefined ? [] : [{
      name: tsnInterface,
      qdisc: qdisc ?? { kind: "keep" as const },
      ...(vlan ? { vlan } : {}),
    }]) as TsnInterfaceConfig[],
}));

export type NodeConfig = z.infer<typeof nodeConfigSchema>;
export type NodeConfigInput = z.input<typeof nodeConfigSchema>;

/** Each override: where it goes in the config, and the flag that sets it. */
export const OVERRIDE_PATHS: Record<keyof NodeConfigOverrides, [string[], string]> = {
  tsnInterface: [["tsnInterface"], "--tsn-interface"],
  restoreAt: [["restoreAt"], "--restore-at"],
  bpffs: [["bpffs"], "--bpffs"],
  attachMode: [["attachMode"], "--attach-mode"],
  cniConfDir: [["cni", "confDir"], "--cni-conf-dir"],
  cniBinDir: [["cni", "binDir"], "--cni-bin-dir"],
  network: [["cni", "network"], "--network"],
  inPlace: [["cni", "inPlace"], "--in-place"],
  metricsAddress: [["metrics", "address"], "--metrics-address"],
};

const HINT_DOC = "see the example config (`EXAMPLE_NODE_CONFIG`, docs/config.md)";

/**
 * The node config overrides among a command's options: every override flag the user gave.
 * This is the one home of "flags beat the config file". The CLI gives these flags no
 * default (src/options.ts), so a defined value is one typed on the command line, whether or
 * not it equals the default, and it beats the file; an undefined one leaves the file's
 * setting (or the built-in default). Every command reads its config through here
 * (loadNodeConfigFor; doctor's context too).
 */
export function flagOverrides(o: NodeConfigOverrides): NodeConfigOverrides {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(OVERRIDE_PATHS) as (keyof NodeConfigOverrides)[]) {
    if (o[k] !== undefined) out[k] = o[k];
  }
  return out as NodeConfigOverrides;
}

/** Writes the overrides into the raw config; returns the paths they set -> the flag. */
function applyOverrides(raw: Record<string, unknown>, overrides: NodeConfigOverrides) {
  const flagged = new Map<string, string>();
  for (const [k, [path, flag]] of Object.entries(OVERRIDE_PATHS)) {
    const v = overrides[k as keyof NodeConfigOverrides];
    if (v === undefined) continue;
    let o = raw;
    for (const seg of path.slice(0, -1)) {
      if (!isPlainObject(o[seg])) o[seg] = {};
      o = o[seg] as Record<string, unknown>;
    }
    o[path[path.length - 1]] = v;
    flagged.set(path.join("."), flag);
  }
  return flagged;
}

/**
 * A flag value the config would refuse is a usage error (exit 2) naming the flag, whatever
 * the file says: checked against the built-in defaults, before the file's content.
 */
function checkOverrides(overrides: NodeConfigOverrides): void {
  const raw: Record<string, unknown> = {};
  const flagged = applyOverrides(raw, overrides);
  if (flagged.size === 0) return;
  const r = nodeConfigSchema.safeParse(raw);
  if (r.success) return;
  const bad = r.error.issues.map((issue) => {
    const key = issue.path.map(String).join(".");
    const flag = flagged.get(key) ?? formatPath(issue.path);
    let value: unknown = raw;
    for (const seg of issue.path) value = isPlainObject(value) ? value[String(seg)] : undefined;
    return `option '${flag}' argument '${String(value)}' is invalid: ${issueMessage(issue, false)}`;
  });
  throw new UsageError(
    bad.join("\n"),
    "pass a value the node config accepts (docs/config.md), or leave the flag out",
  );
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses and validates node config text. `file` names it in messages (a basename reads
 * best: `config.yaml:7:12: ...`).
 */
export function parseNodeConfig(
  text: string,
  file = "config.yaml",
  overrides: NodeConfigOverrides = {},
): NodeConfig {
  checkOverrides(overrides);
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const { line, col } = lc.linePos(e.pos[0]);
    const msg = e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(
      `${file}:${line}:${col}: invalid YAML: ${msg}`,
      "fix the YAML syntax (indent with spaces, one key per line, quote values with ':' or '#')",
    );
  }
  let raw: unknown = doc.toJS({ maxAliasCount: 100 });
  if (raw === null || raw === undefined) raw = {};
  if (!isPlainObject(raw)) {
    const { line, col } = locate(doc.contents, lc, []);
    throw new ConfigError(
      `${file}:${line}:${col}: expected a mapping of settings at the top level`,
      HINT_DOC,
    );
  }
  // Flags beat the file; remember which paths they set so errors name the flag.
  const flagged = applyOverrides(raw, overrides);
  const r = nodeConfigSchema.safeParse(raw);
  if (r.success) return r.data;

  let hint = HINT_DOC;
  const lines = r.error.issues.map((issue, n) => {
    const path = issue.path;
    const flag = flagged.get(path.map(String).join("."));
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => {
        const { line, col } = locate(doc.contents, lc, path, key);
        const full = formatPath([...path, key]);
        const guess = closestKey(key, keysAt(nodeConfigSchema, path));
        if (n === 0) {
          hint = guess
            ? `rename "${key}" to "${guess}"`
            : `valid keys here: ${keysAt(nodeConfigSchema, path).join(", ")}`;
        }
        return `${file}:${line}:${col}: ${full}: unknown key` +
          (guess ? ` (did you mean "${guess}"?)` : "");
      }).join("\n");
    }
    // A bad record key is reported at the key, anything else at its value.
    const atKey = issue.code === "invalid_key" ||
      (issue.code === "custom" && issue.params?.at === "key");
    const loc = atKey
      ? locate(doc.contents, lc, path.slice(0, -1), String(path[path.length - 1]))
      : locate(doc.contents, lc, path);
    const where = flag ?? `${file}:${loc.line}:${loc.col}`;
    const missing = !flag && !atKey && loc.depth < path.length;
    if (n === 0 && missing) hint = `add ${formatPath(path)} to ${file}`;
    return `${where}: ${formatPath(path) || "(top level)"}: ${issueMessage(issue, missing)}`;
  });
  throw new ConfigError(lines.join("\n"), hint);
}

/**
 * Reads the node config at `path` (absent = all defaults), applies the flag overrides and
 * validates. Errors carry file:line:col and the YAML path.
 */
export async function loadNodeConfig(
  path: string = DEFAULT_NODE_CONFIG_PATH,
  overrides: NodeConfigOverrides = {},
): Promise<NodeConfig> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new ConfigError(
        `cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`,
        "check the file's permissions, or pass --config with another path",
      );
    }
  }
  return parseNodeConfig(text, path, overrides);
}

/**
 * The node config a command acts on: the file `o.config` names (absent = the built-in
 * defaults) with the override flags the user gave over it (flagOverrides).
 */
export async function loadNodeConfigFor(
  o: NodeConfigOverrides & { config?: string },
): Promise<NodeConfig> {
  return await loadNodeConfig(o.config ?? DEFAULT_NODE_CONFIG_PATH, flagOverrides(o));
}

/** The TSN interfaces for install; ConfigError if neither the file nor a flag gave one. */
export function requireTsnInterfaces(
  cfg: NodeConfig,
  file = DEFAULT_NODE_CONFIG_PATH,
): TsnInterfaceConfig[] {
  if (cfg.tsnInterfaces.length > 0) return cfg.tsnInterfaces;
  throw new ConfigError(
    "no TSN interface configured",
    `pass --tsn-interface <ifname>, or set tsnInterface (or a tsnInterfaces list) in ${file}`,
  );
}

/** A commented example that loads to the defaults plus `tsnInterface: tsn0`. */
export const EXAMPLE_NODE_CONFIG =
  `# tsnproxy node config (/etc/tsnproxy/config.yaml). Every key is optional; the values
# below are the defaults, except tsnInterface, which install needs (here or --tsn-interface).

# The TSN NIC: where the restorer puts the pods' SO_PRIORITY/SO_TXTIME back on the packets.
tsnInterface: tsn0
# Several TSN NICs: a list instead (then no tsnInterface, qdisc or vlan at the top level),
# each entry with its own qdisc and vlan. A pod's packets are restored on whichever of them
# routing sends them to.
# tsnInterfaces:
#   - name: tsn0
#     qdisc: {kind: keep}
#   - name: tsn1.100 # a VLAN device over tsn1
#     vlan: {egressQosMap: {"0": 0, "3": 3, "5": 5}}

# Where the restorer runs: "tsn-egress" (the TSN NIC's egress) or "host-veth-ingress"
# (the pod's host-side veth, for setups where traffic leaves through something else).
restoreAt: tsn-egress

# Pin directory for tsnproxy's maps and programs (on a bpffs mount).
bpffs: /sys/fs/bpf/tsnproxy

# tc attachment: "auto" (node devices: tcx on kernel 6.6+, else clsact; pod savers: clsact,
# which attaches without a full RCU grace period on every pod ADD), "tcx" or "clsact".
attachMode: auto

# How a pod's priority travels from its host-side interface to the TSN NIC: "auto" (the tag
# in skb->tc_index where nothing else on the pod's way reads or writes it, the per-CPU stage
# where another datapath does, e.g. Cilium; decided at install and at each pod ADD), "tag"
# or "table" (every pod on the stage). "tsnproxy status" shows each pod's carrier and why.
carrier: auto

# A staged packet not restored within maxAgeMs never restores (intervalMs: unused since 0.2).
gc:
  maxAgeMs: 1000

# The node's policy: pods' own layers (the entry, annotations, CNI_ARGS) can only lower it.
#   maxPriority      the ceiling          remap            {"7": 3}: priority 7 becomes 3
#   defaultPriority  for packets whose socket set none
#   rules            by destination, for those too: [{protocol: udp, ports: "319-320",
#                    destination: "224.0.1.129", priority: 7}]
policy: {}
#  maxPriority: 5

cni:
  confDir: /etc/cni/net.d
  binDir: /opt/cni/bin
  # network: cbr0       # chain into this network instead of the first config file
  # inPlace: true       # rewrite the conflist in place (containerd 1.6 ignores renames)
  # agentSocket: /run/tsnproxy/cni.sock  # the agent runs the plugin's verbs (faster ADD/DEL)

# Root qdisc on the TSN NIC: keep (leave as is), none, taprio or mqprio.
qdisc:
  kind: keep

# When the TSN NIC is a VLAN device: its egress-qos-map, priority -> 802.1Q PCP. Install sets
# these entries (the others stay as they are); uninstall puts back what they were.
# vlan:
#   egressQosMap: {"0": 0, "3": 3, "5": 5}

metrics:
  address: 127.0.0.1:9489 # the node's loopback; see docs/metrics.md before widening it
  podLabels: false # true: per-pod series named by namespace, pod, container id
`;
