/**
 * The hot path's hand-written entry validator must behave exactly like the zod reference
 * schema: same accept/reject decision, same values (paths confined to the node's directories
 * included). The policy has one validator (src/policy/validate.ts), which every place a layer
 * is written goes through: the node config, the entry, runtimeConfig, annotations and
 * CNI_ARGS must accept the same policies and mean the same by them, and the plugin's own
 * precedence (src/cni/verbs.ts resolvePodPolicy) only lowers the node's. Also the protocol
 * helpers.
 */
import assert from "node:assert/strict";
import { parsePluginEntry, PLUGIN_DEFAULTS } from "../../src/cni/config.ts";
import { parsePluginEntryZod } from "../../src/cni/schema.ts";
import { type Invocation, resolvePodPolicy } from "../../src/cni/verbs.ts";
import { layerFromCniArgs, layersFromRuntimeConfig } from "../../src/policy/layers.ts";
import { validatePolicy } from "../../src/policy/validate.ts";
import { compileNode } from "../../src/policy/resolve.ts";
import type { PodPolicy } from "../../src/policy/types.ts";
import { parseNodeConfig } from "../../src/config/node.ts";
import { type CniEnv, convertResult, parseCniArgs, selectVersion } from "../../src/cni/protocol.ts";
import { CniCode, TsnproxyError } from "../../src/errors.ts";

const base = { cniVersion: "1.1.0", name: "net", type: "tsnproxy" };

const VALID: unknown[] = [
  base,
  { type: "tsnproxy" },
  { ...base, tsnInterface: "tsn0", restoreAt: "tsn-egress" },
  { ...base, restoreAt: "host-veth-ingress", attachMode: "clsact" },
  {
    ...base,
    attachMode: "tcx",
    bpffs: "/sys/fs/bpf/x",
    logLevel: "debug",
    logFile: "/var/log/tsnproxy/x.log",
  },
  { ...base, policy: {} },
  { ...base, policy: { maxPriority: 0 } },
  { ...base, policy: { maxPriority: 4294967295, remap: { "1": 1, "15": 7 } } },
  { ...base, policy: { remap: {} } },
  { ...base, policy: { remap: { "7": 4294967295 }, defaultPriority: 3 } },
  {
    ...base,
    policy: {
      rules: [
        { protocol: "udp", ports: "319-320", destination: "224.0.1.129", priority: 7 },
        { protocol: 132, ports: { from: 1, to: 2 }, priority: 1 },
        { destination: "fd00::/8", priority: 2 },
      ],
    },
  },
  { ...base, bpffs: "/sys/fs/bpf/tsnproxy/deeper/root" },
  { ...base, cniVersions: ["1.0.0", "1.1.0"] },
  { ...base, prevResult: { cniVersion: "1.1.0" }, runtimeConfig: {}, args: { cni: {} } },
  { ...base, capabilities: { "io.kubernetes.cri.pod-annotations": true, tsnproxy: false } },
  { ...base, "cni.dev/valid-attachments": [], "cni.dev/anything": 1 },
  { ...base, tsnInterface: "a".repeat(15) },
  { ...base, agentSocket: "/run/tsnproxy/cni.sock" },
];

const INVALID: unknown[] = [
  null,
  [],
  "tsnproxy",
  {},
  { ...base, type: "" },
  { ...base, type: 3 },
  { ...base, cniVersion: 1 },
  { ...base, cniVersions: "1.1.0" },
  { ...base, cniVersions: [1] },
  { ...base, name: 5 },
  { ...base, tsnIfname: "tsn0" },
  { ...base, ipam: { type: "host-local" } },
  { ...base, tsnInterface: "" },
  { ...base, tsnInterface: "a".repeat(16) },
  { ...base, tsnInterface: "a/b" },
  { ...base, tsnInterface: "." },
  { ...base, tsnInterface: 7 },
  { ...base, restoreAt: "ingress" },
  { ...base, restoreAt: null },
  { ...base, bpffs: "relative/path" },
  { ...base, bpffs: "" },
  // Paths are confined to the node's own directories (src/config/paths.ts).
  { ...base, bpffs: "/tmp/pins" },
  { ...base, bpffs: "/sys/fs/bpf/" },
  { ...base, bpffs: "/sys/fs/bpf/../../etc" },
  { ...base, bpffs: "/sys/fs/bpfx" },
  { ...base, logFile: "/tmp/x" },
  { ...base, logFile: "/etc/cron.d/x" },
  { ...base, logFile: "/var/log/tsnproxy/../auth.log" },
  { ...base, logFile: "/var/log/tsnproxy/" },
  { ...base, agentSocket: "/tmp/cni.sock" },
  { ...base, agentSocket: "/run/containerd/containerd.sock" },
  { ...base, agentSocket: "/run/tsnproxy/./cni.sock" },
  { ...base, attachMode: "xdp" },
  { ...base, logLevel: "trace" },
  { ...base, logFile: "log.txt" },
  { ...base, agentSocket: "cni.sock" },
  { ...base, agentSocket: 1 },
  { ...base, prevResult: [] },
  { ...base, prevResult: "x" },
  { ...base, runtimeConfig: null },
  { ...base, args: [] },
  { ...base, capabilities: { x: "yes" } },
  { ...base, policy: null },
  { ...base, policy: [] },
  { ...base, policy: { maxPriority: -1 } },
  { ...base, policy: { maxPriority: 1.5 } },
  { ...base, policy: { maxPriority: 4294967296 } },
  { ...base, policy: { maxPriority: "5" } },
  { ...base, policy: { priority: 5 } },
  { ...base, policy: { remap: { "16": 1 } } },
  { ...base, policy: { remap: { "07": 1 } } },
  { ...base, policy: { remap: { "7": -1 } } },
  { ...base, policy: { remap: { "7": "3" } } },
  { ...base, policy: { remap: [1, 2] } },
  { ...base, policy: { remap: { "7": 4294967296 } } },
  { ...base, policy: { defaultPriority: -1 } },
  { ...base, policy: { rules: {} } },
  { ...base, policy: { rules: [{ priority: 1, ports: "80-70" }] } },
  { ...base, policy: { rules: [{ priority: 1, protocol: "icmp", ports: 80 }] } },
  { ...base, policy: { rules: [{ priority: 1, destination: "10.0.0.0/33" }] } },
  { ...base, policy: { rules: [{ priority: 1, colour: "red" }] } },
  { ...base, policy: { rules: Array(9).fill({ priority: 1 }) } },
];

Deno.test("hand-written entry validator accepts exactly what the zod schema accepts", () => {
  for (const input of [...VALID, ...INVALID]) {
    const z = parsePluginEntryZod(input);
    let fast: unknown;
    let fastErr: unknown;
    try {
      fast = parsePluginEntry(structuredClone(input));
    } catch (e) {
      fastErr = e;
    }
    const label = JSON.stringify(input);
    assert.equal(fastErr === undefined, z.success, `disagreement on ${label}: ${fastErr}`);
    assert.equal(z.success, VALID.includes(input), `table says otherwise for ${label}`);
    if (z.success) {
      // Same values: the fast path applies defaults on top of what zod returns.
      assert.deepEqual(fast, { ...PLUGIN_DEFAULTS, ...z.data }, label);
    } else {
      assert.ok(fastErr instanceof TsnproxyError);
      const want = Array.isArray(input) || input === null || typeof input !== "object"
        ? CniCode.DecodeFailure
        : CniCode.InvalidNetworkConfig;
      assert.equal(fastErr.code, want, label);
    }
  }
});

Deno.test("unknown fields are named in the error, with the valid ones", () => {
  assert.throws(
    () => parsePluginEntry({ ...base, tsnIfname: "tsn0" }),
    (e: TsnproxyError) =>
      /unknown field "tsnIfname"/.test(e.message) &&
      /valid: tsnInterface, restoreAt/.test(e.message),
  );
  assert.throws(
    () => parsePluginEntry({ ...base, policy: { priority: 5 } }),
    /policy: unknown key priority \(valid: maxPriority, remap, defaultPriority, rules\)/,
  );
});

function outcome(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (e) {
    return { err: (e as TsnproxyError).message, code: (e as TsnproxyError).code };
  }
}

/** One policy layer in its three spellings: object, annotations, CNI_ARGS. */
interface Spelled {
  object: Record<string, unknown>;
  annotations: Record<string, string>;
  args: string;
}

const SPELLED: Spelled[] = [
  {
    object: { maxPriority: 5 },
    annotations: { "tsnproxy.io/max-priority": "5" },
    args: "TSNPROXY_MAX_PRIORITY=5",
  },
  {
    object: { maxPriority: 4294967295 },
    annotations: { "tsnproxy.io/max-priority": " 4294967295 " },
    args: "TSNPROXY_MAX_PRIORITY= 4294967295 ",
  },
  {
    object: { remap: { "7": 3, "6": 2 } },
    annotations: { "tsnproxy.io/priority-remap": "7=3, 6 : 2," },
    args: "IgnoreUnknown=1;K8S_POD_NAME=x;TSNPROXY_PRIORITY_REMAP=7:3,6:2",
  },
  {
    object: { defaultPriority: 2, maxPriority: 6 },
    annotations: { "tsnproxy.io/default-priority": "2", "tsnproxy.io/max-priority": "6" },
    args: "TSNPROXY_DEFAULT_PRIORITY=2;TSNPROXY_MAX_PRIORITY=6",
  },
  {
    object: {
      rules: [
        { protocol: "udp", ports: "319-320", destination: "224.0.1.129", priority: 7 },
        { destination: "10.0.0.0/8", priority: 2 },
        { protocol: "tcp", priority: 3 },
      ],
    },
    annotations: { "tsnproxy.io/priority-rules": "udp:319-320@224.0.1.129=7,@10.0.0.0/8=2,tcp=3" },
    args: "TSNPROXY_PRIORITY_RULES=udp:319-320@224.0.1.129=7,@10.0.0.0/8=2,tcp=3",
  },
];

Deno.test("a pod layer means the same as object, annotation and CNI_ARGS", () => {
  for (const s of SPELLED) {
    const want = validatePolicy(s.object, "policy");
    const rc = layersFromRuntimeConfig({
      tsnproxy: s.object,
      "io.kubernetes.cri.pod-annotations": { ...s.annotations, unrelated: "x" },
    });
    assert.deepEqual(rc.runtimeConfig, want, JSON.stringify(s.object));
    assert.deepEqual(rc.annotations, want, JSON.stringify(s.annotations));
    assert.deepEqual(layerFromCniArgs(parseCniArgs(s.args)), want, s.args);
    // The entry's own policy goes through the same validator.
    assert.deepEqual(parsePluginEntry({ ...base, policy: s.object }).policy, want);
  }
  // Nothing of ours set: no layer.
  assert.equal(layerFromCniArgs(parseCniArgs("IgnoreUnknown=1;K8S_POD_NAME=x")), undefined);
  assert.deepEqual(layersFromRuntimeConfig({ portMappings: [] }), {});
  assert.deepEqual(layersFromRuntimeConfig(undefined), {});
});

const BAD_ARGS = [
  "TSNPROXY_MAX_PRIORITY=-1",
  "TSNPROXY_MAX_PRIORITY=4294967296",
  "TSNPROXY_MAX_PRIORITY=abc",
  "TSNPROXY_PRIORITY_REMAP=16:1",
  "TSNPROXY_PRIORITY_REMAP=7",
  "TSNPROXY_DEFAULT_PRIORITY=x",
  "TSNPROXY_PRIORITY_RULES=nonsense",
];

const BAD_RUNTIME_CONFIGS: unknown[] = [
  { tsnproxy: { bogus: 1 } },
  { tsnproxy: { maxPriority: -2 } },
  { tsnproxy: "5" },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/max-priority": "x" } },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "1:x" } },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-rules": "udp:0=1" } },
];

Deno.test("a bad pod layer is refused with its source and the CNI code of where it came from", () => {
  for (const a of BAD_ARGS) {
    const r = outcome(() => layerFromCniArgs(parseCniArgs(a))) as { err?: string; code?: number };
    assert.equal(r.code, CniCode.InvalidEnvironment, a); // CNI_ARGS is the environment
    assert.match(r.err ?? "", new RegExp(`CNI_ARGS ${a.split("=")[0]}`), a);
  }
  for (const rc of BAD_RUNTIME_CONFIGS) {
    const r = outcome(() => layersFromRuntimeConfig(rc)) as { err?: string; code?: number };
    assert.equal(r.code, CniCode.InvalidNetworkConfig, JSON.stringify(rc));
    assert.match(r.err ?? "", /runtimeConfig\.tsnproxy|annotation tsnproxy\.io\//);
  }
});

const NODE_POLICIES: unknown[] = [
  {},
  { maxPriority: 3 },
  { maxPriority: 0, remap: { "1": 1, "15": 7 } },
  { remap: { "7": 4294967295 }, defaultPriority: 2 },
  { rules: [{ protocol: "udp", ports: 319, destination: "224.0.1.129/32", priority: 7 }] },
  { rules: [{ protocol: "icmpv6", destination: "fd00::1", priority: 1 }] },
  { maxPriority: -1 },
  { remap: { "0": 1 } },
  { maxPriority: 4294967296 },
  { remap: { "16": 1 } },
  { remap: { "7": "3" } },
  { priority: 5 },
  { rules: [{ priority: 1, ports: "80-70" }] },
  { rules: Array(9).fill({ priority: 1 }) },
  [],
];

Deno.test("the node config's policy and an entry's policy accept the same and mean the same", () => {
  for (const [i, p] of NODE_POLICIES.entries()) {
    const node = outcome(() => parseNodeConfig(`policy: ${JSON.stringify(p)}\n`, "n.yaml").policy);
    const ent = outcome(() => parsePluginEntry({ ...base, policy: p }).policy);
    const label = JSON.stringify(p);
    assert.equal("ok" in (node as object), "ok" in (ent as object), `disagreement on ${label}`);
    assert.equal("ok" in (node as object), i < 6, `the table says otherwise for ${label}`);
    if ("ok" in (node as object)) {
      assert.deepEqual((node as { ok: PodPolicy }).ok, (ent as { ok: PodPolicy }).ok, label);
    }
  }
});

function invocation(entry: Record<string, unknown>, args = ""): Invocation {
  const env: CniEnv = {
    command: "ADD",
    containerId: "c1",
    netns: "/run/netns/x",
    ifname: "eth0",
    args,
    path: "/opt/cni/bin",
  };
  return { env, config: parsePluginEntry(entry) };
}

Deno.test("precedence (the plugin's own): node < entry < annotations < runtimeConfig < CNI_ARGS, lowering only", () => {
  const node = {
    stageMaxAgeNs: 1_000_000_000n,
    tags: true,
    carrierReason: 1,
    node: compileNode({ maxPriority: 7, remap: { "1": 0 } }),
  };
  const entry = {
    ...base,
    policy: { maxPriority: 5, remap: { "7": 3 } },
    runtimeConfig: {
      "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "6:2" },
      tsnproxy: { maxPriority: 4 },
    },
  };
  const r = resolvePodPolicy(invocation(entry, "TSNPROXY_PRIORITY_REMAP=7:1"), node);
  assert.equal(r.policy.maxPriority, 4);
  assert.deepEqual(r.policy.remap, [0, 0, 2, 3, 4, 4, 2, 1, 4, 4, 4, 4, 4, 4, 4, 4]);
  assert.deepEqual(r.from, {
    maxPriority: "runtimeConfig",
    remap: { "6": "annotations", "7": "cniArgs" },
  });
  assert.deepEqual(r.refused, []);
  // Without the higher layers the entry lowers the node's.
  const e = resolvePodPolicy(invocation({ ...base, policy: { maxPriority: 6 } }), node);
  assert.equal(e.policy.maxPriority, 6);
  assert.equal(e.policy.remap[1], 0, "the node's remap stays");
  // Every layer that asks for more than the layers before it allow is refused, not applied.
  const raise = resolvePodPolicy(
    invocation(
      {
        ...base,
        policy: { maxPriority: 9 },
        runtimeConfig: {
          "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "1:6" },
          tsnproxy: { remap: { "5": 7 } },
        },
      },
      "TSNPROXY_MAX_PRIORITY=8",
    ),
    node,
  );
  assert.equal(raise.policy.maxPriority, 7);
  assert.equal(raise.policy.remap[1], 0);
  assert.equal(raise.policy.remap[5], 5);
  assert.deepEqual(
    raise.refused,
    [
      "entry: maxPriority 9 above the ceiling 7",
      "annotations: remap 1 -> 6 above 0",
      "cniArgs: maxPriority 8 above the ceiling 7",
      "runtimeConfig: remap 5 -> 7 above 5",
    ].sort((a, b) => order(a) - order(b)),
  );
  // A bad layer fails the ADD before anything is attached, with its code.
  assert.throws(
    () => resolvePodPolicy(invocation(base, "TSNPROXY_MAX_PRIORITY=x"), node),
    (err: TsnproxyError) => err.code === CniCode.InvalidEnvironment,
  );
});

/** Layer order of a refusal message (the order resolvePolicy applies the layers in). */
function order(msg: string): number {
  return ["entry", "annotations", "runtimeConfig", "cniArgs"].indexOf(msg.split(":")[0]);
}

Deno.test("version selection and result conversion", () => {
  assert.equal(selectVersion("0.4.0", undefined), "0.4.0");
  assert.equal(selectVersion(undefined, ["0.4.0", "1.1.0", "2.0.0"]), "1.1.0");
  assert.throws(() => selectVersion("0.2.0", undefined), (e: TsnproxyError) => e.code === 1);
  assert.throws(() => selectVersion(undefined, undefined), (e: TsnproxyError) => e.code === 1);
  assert.throws(() => selectVersion(undefined, ["9.9.9"]), (e: TsnproxyError) => e.code === 1);
  const r100 = {
    cniVersion: "1.0.0",
    interfaces: [{ name: "eth0", sandbox: "/x", mtu: 1500 }],
    ips: [{ address: "10.0.0.2/24", interface: 0 }, { address: "fd00::2/64", interface: 0 }],
    custom: { kept: true },
  };
  assert.equal(convertResult(r100, "1.0.0"), r100); // same version: the very object
  assert.deepEqual(convertResult(r100, "1.1.0"), { ...r100, cniVersion: "1.1.0" });
  const r040 = convertResult(r100, "0.4.0");
  assert.deepEqual(r040.ips, [
    { version: "4", address: "10.0.0.2/24", interface: 0 },
    { version: "6", address: "fd00::2/64", interface: 0 },
  ]);
  assert.deepEqual(r040.custom, { kept: true });
  assert.deepEqual(convertResult(r040, "1.0.0"), r100);
  assert.throws(() => convertResult({ cniVersion: "0.2.0" }, "1.0.0"), /not supported/);
});

Deno.test("error codes follow the spec's table (4 environment, 7 network config)", () => {
  assert.equal(CniCode.IncompatibleVersion, 1);
  assert.equal(CniCode.InvalidEnvironment, 4);
  assert.equal(CniCode.DecodeFailure, 6);
  assert.equal(CniCode.InvalidNetworkConfig, 7);
  assert.equal(CniCode.TryAgainLater, 11);
  assert.equal(CniCode.PluginNotAvailable, 50);
});
