/**
 * The fuzzer's seed inputs, all real: the conflists under tests/fixtures/cni/ with the entry
 * `tsnproxy install` writes injected by the installer's own code (src/install/plan.ts
 * pluginEntry, src/install/conflist.ts inject), the Results the reference plugins returned for
 * the fixture's pods (tests/fuzz/fixture.ts), and CNI_* environments as containerd 1.6's CRI
 * plugin and podman 4.3 set them (/work/shared/notes/runtimes.md, tests/e2e). Plus the tables
 * of odd values the mutators draw from.
 */
import { inject, parseCniDocument } from "../../src/install/conflist.ts";
import { pluginEntry } from "../../src/install/plan.ts";
import { parseNodeConfig } from "../../src/config/node.ts";
import type { JsonObject } from "./fixture.ts";

const FIXTURES = new URL("../fixtures/cni/", import.meta.url);

/** A network as the runtime loads it: the list's name and version and our entry in it. */
export interface Network {
  source: string;
  name: string;
  cniVersion: string;
  /** The tsnproxy entry of the list, as install wrote it. */
  entry: JsonObject;
}

/** Node configs install may have run with (their pluginEntry differs). */
const NODE_CONFIGS = [
  "",
  "attachMode: clsact",
  "attachMode: tcx\nrestoreAt: host-veth-ingress",
  'policy:\n  maxPriority: 6\n  remap:\n    "7": 5',
  "cni:\n  agentSocket: /run/tsnproxy/fuzz-absent/cni.sock",
  "policy:\n  maxPriority: 3",
];

/** Placeholder pin root in the corpus; the generator writes the fixture's in its place. */
export const BPFFS_PLACEHOLDER = "/sys/fs/bpf/tsnp-fuzz-placeholder";

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Every fixture conflist the installer accepts, with each node config's entry injected; files
 * it refuses (broken JSON, a 0.2.0 network) are skipped: no runtime would call us through them.
 */
export function loadNetworks(): Network[] {
  const out: Network[] = [];
  for (const dir of [...Deno.readDirSync(FIXTURES)].map((d) => d.name).sort()) {
    const files = [...Deno.readDirSync(new URL(`${dir}/`, FIXTURES))].map((e) => e.name).sort();
    for (const file of files) {
      if (!/\.(conf|conflist|json)$/.test(file)) continue;
      const path = new URL(`${dir}/${file}`, FIXTURES).pathname;
      const text = Deno.readTextFileSync(path);
      for (const [i, yaml] of NODE_CONFIGS.entries()) {
        const cfg = parseNodeConfig(
          `bpffs: ${BPFFS_PLACEHOLDER}\ntsnInterface: tsn0\n${yaml}`,
          "fuzz-node.yaml",
        );
        const entry = pluginEntry({
          cfg,
          tsnInterfaces: cfg.tsnInterfaces,
          api: "tcx",
          stateDir: "/var/lib/tsnproxy",
          inPlace: true,
        });
        let injected: string;
        try {
          injected = inject(parseCniDocument(path, text), entry).text;
        } catch {
          continue;
        }
        const list = JSON.parse(injected) as JsonObject;
        const plugins = Array.isArray(list.plugins) ? list.plugins : [];
        const ours = plugins.find((p) => isObject(p) && p.type === "tsnproxy");
        if (!isObject(ours) || typeof list.cniVersion !== "string") continue;
        out.push({
          source: `${dir}/${file}#${i}`,
          name: String(list.name),
          cniVersion: list.cniVersion,
          entry: ours,
        });
      }
    }
  }
  if (out.length === 0) throw new Error(`no usable conflist under ${FIXTURES.pathname}`);
  return out;
}

// ---- environments ----------------------------------------------------------------------

export type Runtime = "containerd" | "podman";

/** CNI_ARGS and CNI_PATH as each runtime sets them. */
export function runtimeEnv(
  runtime: Runtime,
  containerId: string,
  podName: string,
): { CNI_ARGS: string; CNI_PATH: string } {
  if (runtime === "containerd") {
    return {
      CNI_ARGS: `K8S_POD_NAMESPACE=default;K8S_POD_NAME=${podName};` +
        `K8S_POD_INFRA_CONTAINER_ID=${containerId};` +
        `K8S_POD_UID=3f1b8c2e-4a5d-4e6f-9a0b-1c2d3e4f5a6b;IgnoreUnknown=1`,
      CNI_PATH: "/opt/cni/bin",
    };
  }
  return {
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${podName};K8S_POD_NAME=${podName};` +
      `K8S_POD_INFRA_CONTAINER_ID=${containerId}`,
    CNI_PATH: "/usr/local/libexec/cni:/usr/libexec/cni:/usr/local/lib/cni:/usr/lib/cni:" +
      "/opt/cni/bin",
  };
}

/** Pod annotations containerd passes under runtimeConfig when the entry declares them. */
export const ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations";

export const GOOD_ANNOTATIONS: JsonObject[] = [
  {},
  { "tsnproxy.io/max-priority": "3" },
  { "tsnproxy.io/priority-remap": "7:3,6:2" },
  { "tsnproxy.io/default-priority": "1", "tsnproxy.io/max-priority": "5" },
  { "tsnproxy.io/priority-rules": "udp:319-320@224.0.1.129=5,@10.0.0.0/8=2" },
  {
    "kubernetes.io/egress-bandwidth": "10M",
    "io.kubernetes.cri.container-type": "sandbox",
    "tsnproxy.io/priority-rules": "tcp:443=2",
  },
];

export const ANNOTATION_KEYS = [
  "tsnproxy.io/max-priority",
  "tsnproxy.io/priority-remap",
  "tsnproxy.io/default-priority",
  "tsnproxy.io/priority-rules",
];

/** Values for annotations and TSNPROXY_* CNI_ARGS: good, raising, malformed. */
export const POLICY_STRINGS = [
  "0",
  "5",
  "7",
  "15",
  "4294967295",
  "4294967296",
  "99999999999",
  "-1",
  "1.5",
  "0x7",
  " 3 ",
  "",
  "abc",
  "7:3,6:3",
  "7:9",
  "16:1",
  "7:",
  ":3",
  ",,,",
  "7=3",
  "1:1,1:2",
  "udp:319-320@224.0.1.129=7,@10.0.0.0/8=2",
  "udp:0=1",
  "udp:65536=1",
  "udp:5-3=1",
  "tcp:443@10.0.0.0/33=1",
  "@::/0=2",
  "@fd00::/129=2",
  "icmp:80=1",
  "=5",
  "udp=",
  "udp:1-2-3=1",
  "@300.1.1.1=2",
  "sctp:1-65535@0.0.0.0/0=4294967295",
  Array.from({ length: 9 }, (_, i) => `udp:${i + 1}=1`).join(","),
  "udp:319=7".repeat(50),
  "\u0000",
  "７",
  "udp:３１９=1",
];

/** Policy objects (entry policy, runtimeConfig.tsnproxy): good, raising, malformed. */
export const POLICY_OBJECTS: unknown[] = [
  {},
  { maxPriority: 5 },
  { maxPriority: 7 },
  { maxPriority: 4294967295 },
  { maxPriority: 4294967296 },
  { maxPriority: -1 },
  { maxPriority: 1.5 },
  { maxPriority: "5" },
  { maxPriority: null },
  { remap: { "7": 3 } },
  { remap: { "7": 9 } },
  { remap: { "16": 1 } },
  { remap: { "07": 1, "7": 2 } },
  { remap: { "-1": 1 } },
  { remap: [] },
  { defaultPriority: 2 },
  { defaultPriority: 99 },
  { rules: [{ protocol: "udp", ports: "319-320", destination: "224.0.1.129", priority: 5 }] },
  { rules: [{ protocol: "udp", ports: { from: 5, to: 3 }, priority: 1 }] },
  { rules: [{ protocol: 256, priority: 1 }] },
  { rules: [{ protocol: "icmp", ports: 80, priority: 1 }] },
  { rules: [{ destination: "fd00::/8", priority: 2 }, { destination: "::/129", priority: 1 }] },
  { rules: Array.from({ length: 9 }, (_, i) => ({ ports: i + 1, priority: 1 })) },
  { rules: [{ priority: 1, extra: true }] },
  { rules: "udp:1=1" },
  { maxPriority: 5, bogus: 1 },
  [],
  "maxPriority=5",
  null,
];

// ---- odd values ------------------------------------------------------------------------

export const ODD_STRINGS = [
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\ufeff",
  "é",
  "\u202e",
  "\ud800",
  "🦕🦕🦕",
  "ｅｔｈ０",
  "e\u0301th0",
  "../../../etc/passwd",
  "/",
  "//",
  "%00",
  "%2e%2e",
  "\\",
  "\n",
  "\t",
  "x".repeat(256),
  "x".repeat(4097),
  "__proto__",
  "constructor",
  "toString",
  "null",
  "true",
  "1.1.0",
  "{}",
];

export const ODD_NUMBERS = [
  0,
  -0,
  -1,
  1,
  7,
  15,
  16,
  255,
  256,
  65535,
  65536,
  2147483647,
  2147483648,
  4294967295,
  4294967296,
  9007199254740991,
  9007199254740993,
  1e308,
  -1e308,
  5e-324,
  0.5,
  1.5,
];

export const VERSIONS = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
  "1.2.0",
  "2.0.0",
  "1.0",
  "v1.0.0",
  "1.0.0-rc1",
  "01.0.0",
  " 1.0.0",
  "1.0.0\n",
  "１.0.0",
  "99999999999999999999.0.0",
  "",
];

export const IFNAMES = [
  "",
  "eth1",
  "lo",
  "eth0 ",
  " eth0",
  "eth0/",
  "eth0:1",
  ".",
  "..",
  "e.th0",
  "eth_0",
  "eth%0",
  "x".repeat(15),
  "x".repeat(16),
  "ééééééé",
  "éééééééé",
  "🦕🦕🦕🦕",
  "ETH0",
  "peer0",
  "fzbr0",
  "cni-podman9",
  "eth0\u0000",
  "-",
  "@host",
  "eth0@host",
  "eth0_x",
];

export const CONTAINER_IDS = [
  "",
  "-abc",
  "_abc",
  ".abc",
  "a/b",
  "../../x",
  "a b",
  "a;b",
  "a\nb",
  "a_b",
  "a.b",
  "a%2fb",
  "a@host",
  "a@clsact-egress-1",
  "é",
  "x".repeat(200),
  "x".repeat(300),
  "0".repeat(64),
  "A",
  "a-b_c.d",
];

export const CNI_ARGS_JUNK = [
  "",
  ";",
  ";;;",
  "=",
  "==",
  "K8S_POD_NAME",
  "IgnoreUnknown=1",
  "IgnoreUnknown=true;K8S_POD_NAMESPACE=default",
  "TSNPROXY_MAX_PRIORITY=",
  "TSNPROXY_MAX_PRIORITY=3",
  "TSNPROXY_MAX_PRIORITY=abc",
  "TSNPROXY_MAX_PRIORITY=3;TSNPROXY_MAX_PRIORITY=9",
  " TSNPROXY_MAX_PRIORITY =3",
  "tsnproxy_max_priority=3",
  "TSNPROXY_PRIORITY_REMAP=7:3,,",
  "TSNPROXY_PRIORITY_REMAP=7:3;6:3",
  "TSNPROXY_PRIORITY_RULES=udp:99999=1",
  "TSNPROXY_PRIORITY_RULES=udp:319=7",
  "TSNPROXY_DEFAULT_PRIORITY=4294967296",
  "TSNPROXY_DEFAULT_PRIORITY=1;IgnoreUnknown=1",
  "K8S_POD_NAME=" + "x".repeat(20000),
  "K8S_POD_NAME=é;TSNPROXY_MAX_PRIORITY=２",
  "=TSNPROXY_MAX_PRIORITY",
  "TSNPROXY_MAX_PRIORITY=3=4",
];

export const COMMANDS = [
  "add",
  "ADD ",
  " ADD",
  "DELETE",
  "",
  "VERSION\n",
  "CHECK;ADD",
  "A\u0000DD",
  "ＡＤＤ",
];
