/**
 * The hot path's hand-written validators must behave exactly like the zod reference
 * schemas: same accept/reject decision, same values. Also the policy precedence mirror
 * against src/config/policy.ts, and the protocol helpers.
 */
import assert from "node:assert/strict";
import { parsePluginEntry, PLUGIN_DEFAULTS } from "../../src/cni/config.ts";
import { parsePluginEntryZod } from "../../src/cni/schema.ts";
import {
  mergePolicy,
  policyFromCniArgs,
  policyFromRuntimeConfig,
  toSaver,
} from "../../src/cni/pod_policy.ts";
import {
  policyFromCniArgs as refCniArgs,
  policyFromRuntimeConfig as refRuntimeConfig,
  resolvePolicy,
} from "../../src/config/policy.ts";
import { convertResult, parseCniArgs, selectVersion } from "../../src/cni/protocol.ts";
import { CniCode, TsnproxyError } from "../../src/errors.ts";

const base = { cniVersion: "1.1.0", name: "net", type: "tsnproxy" };

const VALID: unknown[] = [
  base,
  { type: "tsnproxy" },
  { ...base, tsnInterface: "tsn0", restoreAt: "tsn-egress" },
  { ...base, restoreAt: "host-veth-ingress", attachMode: "clsact" },
  { ...base, attachMode: "tcx", bpffs: "/sys/fs/bpf/x", logLevel: "debug", logFile: "/tmp/x" },
  { ...base, policy: {} },
  { ...base, policy: { maxPriority: 0 } },
  { ...base, policy: { maxPriority: 4294967295, remap: { "0": 1, "15": 7 } } },
  { ...base, policy: { remap: {} } },
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
    /policy: unknown key priority \(valid: maxPriority, remap\)/,
  );
});

const ARGS = [
  "",
  "IgnoreUnknown=1;K8S_POD_NAME=x",
  "TSNPROXY_MAX_PRIORITY=5",
  "TSNPROXY_MAX_PRIORITY= 5 ",
  "TSNPROXY_PRIORITY_REMAP=7:3,6:3",
  "TSNPROXY_PRIORITY_REMAP=7=3, 6 : 2,",
  "TSNPROXY_PRIORITY_REMAP=",
  "TSNPROXY_MAX_PRIORITY=4;TSNPROXY_MAX_PRIORITY=6",
  "TSNPROXY_MAX_PRIORITY=-1",
  "TSNPROXY_MAX_PRIORITY=4294967296",
  "TSNPROXY_MAX_PRIORITY=abc",
  "TSNPROXY_PRIORITY_REMAP=16:1",
  "TSNPROXY_PRIORITY_REMAP=7",
];

function outcome(f: () => unknown): unknown {
  try {
    return { ok: f() };
  } catch (e) {
    return { err: (e as TsnproxyError).message, code: (e as TsnproxyError).code };
  }
}

Deno.test("CNI_ARGS policy layer matches src/config/policy.ts", () => {
  for (const a of ARGS) {
    assert.deepEqual(
      outcome(() => policyFromCniArgs(parseCniArgs(a))),
      outcome(() => refCniArgs(a)),
      a,
    );
  }
});

const RUNTIME_CONFIGS: unknown[] = [
  undefined,
  {},
  { portMappings: [] },
  { tsnproxy: { maxPriority: 3 } },
  { tsnproxy: { remap: { "7": 1 } } },
  { tsnproxy: { bogus: 1 } },
  { tsnproxy: { maxPriority: -2 } },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/max-priority": "4" } },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "7:1,5:0" } },
  { "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/max-priority": "x" } },
  { "io.kubernetes.cri.pod-annotations": { "other": "1" } },
];

Deno.test("runtimeConfig and annotation layers match src/config/policy.ts", () => {
  for (const rc of RUNTIME_CONFIGS) {
    assert.deepEqual(
      outcome(() => policyFromRuntimeConfig(rc)),
      outcome(() => refRuntimeConfig(rc)),
      JSON.stringify(rc),
    );
  }
});

Deno.test("precedence: node < entry < annotations < runtimeConfig < CNI_ARGS", () => {
  const layers = {
    node: { maxPriority: 7, remap: { "1": 0 } },
    entry: { maxPriority: 5, remap: { "7": 3 } },
    annotations: { remap: { "6": 2 } },
    runtimeConfig: { maxPriority: 4 },
    cniArgs: { remap: { "7": 1 } },
  };
  const merged = mergePolicy(layers);
  assert.deepEqual(merged, resolvePolicy(layers).policy);
  assert.deepEqual(merged, { maxPriority: 4, remap: { "1": 0, "7": 1, "6": 2 } });
  // Without higher layers the entry wins over the node default.
  assert.deepEqual(mergePolicy({ node: layers.node, entry: { maxPriority: 6 } }).maxPriority, 6);
  const saver = toSaver(merged);
  assert.equal(saver.maxPriority, 4);
  assert.deepEqual(saver.remap, [0, 0, 2, 3, 4, 5, 2, 1, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(toSaver({}), { maxPriority: 0xffffffff });
  assert.throws(() => toSaver({ remap: { "7": 300 } }), /0\.\.255/);
});

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
