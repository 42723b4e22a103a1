import assert from "node:assert/strict";
import {
  EXAMPLE_NODE_CONFIG,
  loadNodeConfig,
  type NodeConfig,
  type NodeConfigOverrides,
  parseNodeConfig,
  requireTsnInterfaces,
} from "../../src/config/node.ts";
import { ConfigError, UsageError } from "../../src/errors.ts";

const DEFAULTS: NodeConfig = {
  restoreAt: "tsn-egress",
  bpffs: "/sys/fs/bpf/tsnproxy",
  attachMode: "auto",
  carrier: "auto",
  gc: { maxAgeMs: 1000, intervalMs: 1000 },
  mapEntries: 16384,
  policy: {},
  cni: { confDir: "/etc/cni/net.d", binDir: "/opt/cni/bin" },
  tsnInterfaces: [],
  metrics: { address: "127.0.0.1:9489", podLabels: false },
};

function fails(text: string, re: RegExp, hint?: RegExp) {
  assert.throws(() => parseNodeConfig(text), (e: unknown) => {
    assert.ok(e instanceof ConfigError, String(e));
    assert.match(e.message, re);
    if (hint) assert.match(e.hint, hint);
    assert.ok(e.hint.length > 0);
    return true;
  });
}

Deno.test("node config: missing file and empty file mean all defaults", async () => {
  const dir = await Deno.makeTempDir();
  assert.deepEqual(await loadNodeConfig(`${dir}/nope.yaml`), DEFAULTS);
  await Deno.writeTextFile(`${dir}/empty.yaml`, "# nothing\n");
  assert.deepEqual(await loadNodeConfig(`${dir}/empty.yaml`), DEFAULTS);
  assert.throws(() => requireTsnInterfaces(DEFAULTS), /no TSN interface/);
});

Deno.test("node config: the embedded example round-trips", () => {
  const cfg = parseNodeConfig(EXAMPLE_NODE_CONFIG);
  const tsn0 = { name: "tsn0", qdisc: { kind: "keep" as const } };
  assert.deepEqual(cfg, { ...DEFAULTS, tsnInterfaces: [tsn0] });
  assert.deepEqual(requireTsnInterfaces(cfg), [tsn0]);
});

Deno.test("node config: docs/config.md shows the embedded example as it is", () => {
  const doc = Deno.readTextFileSync(new URL("../../docs/config.md", import.meta.url));
  const block = doc.split("```yaml\n")[1]?.split("```")[0];
  assert.equal(
    block,
    EXAMPLE_NODE_CONFIG,
    "copy EXAMPLE_NODE_CONFIG into docs/config.md's first block",
  );
});

Deno.test("node config: a full valid config", () => {
  const cfg = parseNodeConfig(`
tsnInterface: enp3s0
restoreAt: host-veth-ingress
bpffs: /sys/fs/bpf/tsn
attachMode: clsact
gc: {maxAgeMs: 50, intervalMs: 10}
mapEntries: 1048576
policy:
  maxPriority: 5
  remap: {"7": 3}
cni:
  confDir: /etc/cni/net.d
  binDir: /opt/cni/bin
  network: cbr0
  inPlace: true
qdisc:
  kind: taprio
  numTc: 2
  map: [0, 1]
  queues: ["1@0", "1@1"]
  entries:
    - {command: S, gateMask: 0x1, intervalNs: 300000}
    - {command: S, gateMask: 0x2, intervalNs: 700000}
  clockid: CLOCK_TAI
metrics:
  address: "[::1]:9000"
`);
  assert.deepEqual(cfg.tsnInterfaces.map((i) => i.name), ["enp3s0"]);
  assert.equal(cfg.restoreAt, "host-veth-ingress");
  assert.deepEqual(cfg.gc, { maxAgeMs: 50, intervalMs: 10 });
  assert.deepEqual(cfg.policy, { maxPriority: 5, remap: { "7": 3 } });
  assert.deepEqual(cfg.cni, {
    confDir: "/etc/cni/net.d",
    binDir: "/opt/cni/bin",
    network: "cbr0",
    inPlace: true,
  });
  assert.equal(cfg.tsnInterfaces[0].qdisc.kind, "taprio");
  assert.equal(cfg.metrics.address, "[::1]:9000");
});

Deno.test("node config: flags override the file", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/c.yaml`, "tsnInterface: eth1\ncni:\n  binDir: /x\n");
  const cfg = await loadNodeConfig(`${dir}/c.yaml`, {
    tsnInterface: "tsn9",
    cniConfDir: "/tmp/net.d",
    network: "n",
    inPlace: false,
    metricsAddress: "127.0.0.1:1",
  });
  assert.deepEqual(cfg.tsnInterfaces, [{ name: "tsn9", qdisc: { kind: "keep" } }]);
  assert.deepEqual(cfg.cni, { confDir: "/tmp/net.d", binDir: "/x", network: "n", inPlace: false });
  assert.equal(cfg.metrics.address, "127.0.0.1:1");
  // A flag value the config refuses is a usage error naming the flag, whatever the file says.
  const bad = { attachMode: "xdp" } as unknown as NodeConfigOverrides;
  assert.throws(() => parseNodeConfig("attachMode: tcx\n", "c.yaml", bad), (e: unknown) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /^option '--attach-mode' argument 'xdp' is invalid: expected one of/);
    return true;
  });
});

Deno.test("node config: value errors carry file:line:col and the YAML path", () => {
  fails(
    "tsnInterface: tsn0\ngc:\n  intervalMs: 5\n  maxAgeMs: -3\n",
    /^config\.yaml:4:13: gc\.maxAgeMs: expected a positive integer$/,
  );
  fails("gc:\n  maxAgeMs: 1.5\n", /^config\.yaml:2:13: gc\.maxAgeMs: expected a positive integer/);
  fails("gc:\n  maxAgeMs: soon\n", /gc\.maxAgeMs: expected a positive integer/);
  fails(
    "mapEntries: 3000\n",
    /^config\.yaml:1:13: mapEntries: expected a power of two between 1024 and 1048576/,
  );
  fails("mapEntries: 2097152\n", /mapEntries: expected a power of two/);
  fails(
    "restoreAt: nic\n",
    /^config\.yaml:1:12: restoreAt: expected one of "tsn-egress", "host-veth-ingress"/,
  );
  fails("attachMode: xdp\n", /attachMode: expected one of "auto", "tcx", "clsact"/);
  fails(
    "bpffs: sys/fs/bpf\n",
    /1:8: bpffs: expected an absolute path under \/sys\/fs\/bpf\/, got "sys\/fs\/bpf"/,
  );
  fails(
    "tsnInterface: a-very-long-interface-name\n",
    /1:15: tsnInterface: expected an interface name/,
  );
  fails("cni:\n  inPlace: yes please\n", /2:12: cni\.inPlace: expected true or false/);
  fails("metrics:\n  address: 9489\n", /2:12: metrics\.address: expected "host:port"/);
  fails("metrics:\n  address: 'x:99999'\n", /metrics\.address/);
  fails(
    "policy:\n  maxPriority: 4294967296\n",
    /^config\.yaml:2:16: policy\.maxPriority: expected an integer priority/,
  );
  fails(
    'policy:\n  remap:\n    "16": 1\n',
    /^config\.yaml:3:5: policy\.remap\.16: remap keys are the priorities/,
  );
  fails(
    "policy:\n  rules:\n    - {protocol: udp, priority: -1}\n",
    /^config\.yaml:3:33: policy\.rules\[0\]\.priority: expected an integer priority/,
  );
  fails("gc: 5\n", /^config\.yaml:1:5: gc: /);
});

Deno.test("node config: qdisc section uses the qdisc schema, with positions", () => {
  fails(
    'qdisc:\n  kind: taprio\n  numTc: 2\n  map: [0, 1]\n  queues: ["1@0", "1@1"]\n  entries:\n    - {gateMask: 0x1, intervalNs: 0}\n',
    /^config\.yaml:7:35: qdisc\.entries\[0\]\.intervalNs: /,
  );
  fails("qdisc:\n  kind: fancy\n", /^config\.yaml:2:9: qdisc\.kind: /);
});

Deno.test("node config: missing required keys point at the parent", () => {
  fails(
    "qdisc:\n  kind: mqprio\n",
    /^config\.yaml:2:3: qdisc\.numTc: required key is missing/,
    /add qdisc\.numTc/,
  );
});

Deno.test("node config: several errors are all reported", () => {
  assert.throws(() => parseNodeConfig("gc:\n  maxAgeMs: 0\nmapEntries: 5\n"), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.deepEqual(e.message.split("\n").map((l) => l.split(": ")[1]), [
      "gc.maxAgeMs",
      "mapEntries",
    ]);
    return true;
  });
});

Deno.test("node config: unknown keys are rejected with the closest valid key", () => {
  fails(
    "tsnIface: tsn0\n",
    /^config\.yaml:1:1: tsnIface: unknown key \(did you mean "tsnInterface"\?\)$/,
    /rename "tsnIface" to "tsnInterface"/,
  );
  fails(
    "gc:\n  maxAgMs: 10\n",
    /^config\.yaml:2:3: gc\.maxAgMs: unknown key \(did you mean "maxAgeMs"\?\)/,
  );
  fails("cni:\n  conf_dir: /x\n", /cni\.conf_dir: unknown key \(did you mean "confDir"\?\)/);
  // The node's policy is checked by the one policy validator (src/policy/validate.ts), which
  // names the valid keys.
  fails(
    "policy:\n  maxpriority: 3\n",
    /2:3: policy: unknown key maxpriority \(valid: maxPriority, remap, defaultPriority, rules\)/,
  );
  fails(
    "zzz: 1\n",
    /^config\.yaml:1:1: zzz: unknown key$/,
    /valid keys here: tsnInterface, tsnInterfaces, restoreAt/,
  );
});

Deno.test("node config: YAML syntax errors and wrong top level", () => {
  fails("gc:\n  maxAgeMs: 1\n   intervalMs: 2\n", /^config\.yaml:\d+:\d+: invalid YAML: /);
  fails("a: 1\na: 2\n", /^config\.yaml:2:1: invalid YAML: .*[Uu]nique/);
  fails("- tsnInterface\n", /^config\.yaml:1:1: expected a mapping/);
  fails("just a string\n", /expected a mapping/);
});

Deno.test("node config: the path of the file names errors", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/config.yaml`, "\n\nmapEntries: 7\n");
  await assert.rejects(loadNodeConfig(`${dir}/config.yaml`), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.ok(e.message.startsWith(`${dir}/config.yaml:3:13: mapEntries: `), e.message);
    return true;
  });
});

Deno.test("node config: several TSN interfaces, each with its qdisc and vlan", () => {
  const cfg = parseNodeConfig(`
tsnInterfaces:
  - name: tsn0
    qdisc:
      kind: mqprio
      numTc: 2
      map: [0, 1]
      queues: ["1@0", "1@1"]
  - name: tsn1.100
    vlan:
      egressQosMap: {"0": 1, 3: 3, "5": 7}
`);
  assert.equal(cfg.tsnInterfaces.length, 2);
  assert.equal(cfg.tsnInterfaces[0].name, "tsn0");
  assert.equal(cfg.tsnInterfaces[0].qdisc.kind, "mqprio");
  assert.deepEqual(cfg.tsnInterfaces[1], {
    name: "tsn1.100",
    qdisc: { kind: "keep" },
    vlan: { egressQosMap: { "0": 1, "3": 3, "5": 7 } },
  });
  assert.deepEqual(requireTsnInterfaces(cfg).map((i) => i.name), ["tsn0", "tsn1.100"]);
  // The single form takes a vlan section too.
  const one = parseNodeConfig('tsnInterface: tsn0.7\nvlan:\n  egressQosMap: {"2": 2}\n');
  assert.deepEqual(one.tsnInterfaces, [
    { name: "tsn0.7", qdisc: { kind: "keep" }, vlan: { egressQosMap: { "2": 2 } } },
  ]);
});

Deno.test("node config: exactly one form of TSN interfaces, each named once", () => {
  fails(
    "tsnInterface: tsn0\ntsnInterfaces:\n  - name: tsn1\n",
    /^config\.yaml:1:15: tsnInterface: the single form \(tsnInterface, which --tsn-interface sets\) and the list \(tsnInterfaces\) are both given: use one/,
  );
  fails(
    "tsnInterfaces:\n  - name: tsn1\nqdisc:\n  kind: none\n",
    /^config\.yaml:4:3: qdisc: with tsnInterfaces, each interface has its own qdisc: move this section into the tsnInterfaces entry it belongs to$/,
  );
  fails(
    'tsnInterfaces:\n  - name: tsn1\nvlan: {egressQosMap: {"1": 1}}\n',
    /^config\.yaml:3:7: vlan: with tsnInterfaces, each interface has its own vlan/,
  );
  fails(
    "tsnInterfaces:\n  - name: tsn1\n  - name: tsn2\n  - name: tsn1\n",
    /^config\.yaml:4:11: tsnInterfaces\[2\]\.name: tsn1 is listed twice \(entries 0 and 2\)/,
  );
  fails(
    "tsnInterfaces: []\n",
    /^config\.yaml:1:16: tsnInterfaces: expected a list of TSN interfaces.*the list is empty/,
  );
  fails(
    "tsnInterfaces: tsn0\n",
    /^config\.yaml:1:16: tsnInterfaces: expected a list of TSN interfaces, e\.g\./,
  );
  fails(
    "tsnInterfaces:\n  - {name: tsn1, qdisk: {kind: keep}}\n",
    /^config\.yaml:2:18: tsnInterfaces\[0\]\.qdisk: unknown key \(did you mean "qdisc"\?\)$/,
  );
  fails(
    "tsnInterfaces:\n  - {qdisc: {kind: keep}}\n",
    /tsnInterfaces\[0\]\.name: required key is missing/,
  );
  fails(
    "tsnInterfaces:\n  - {name: tsn1, qdisc: {kind: mqprio}}\n",
    /tsnInterfaces\[0\]\.qdisc\.numTc: required key is missing/,
  );
});

Deno.test("node config: --tsn-interface is the single form; with a list in the file it is an error", () => {
  const file = "tsnInterfaces:\n  - name: tsn0\n  - name: tsn1\n";
  assert.throws(
    () => parseNodeConfig(file, "config.yaml", { tsnInterface: "tsn9" }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(
        e.message,
        /^--tsn-interface: tsnInterface: the single form .* with a list, leave the flag out$/,
      );
      return true;
    },
  );
  // Over a single-form file the flag replaces the name and keeps the file's qdisc and vlan.
  const cfg = parseNodeConfig(
    'tsnInterface: tsn0\nqdisc: {kind: none}\nvlan: {egressQosMap: {"3": 3}}\n',
    "config.yaml",
    { tsnInterface: "tsn9" },
  );
  assert.deepEqual(cfg.tsnInterfaces, [
    { name: "tsn9", qdisc: { kind: "none" }, vlan: { egressQosMap: { "3": 3 } } },
  ]);
});

Deno.test("node config: vlan.egressQosMap maps priorities to PCPs 0..7", () => {
  const at = (map: string) => `tsnInterface: tsn0.5\nvlan:\n  egressQosMap: ${map}\n`;
  fails(
    at('{"3": 8}'),
    /^config\.yaml:3:23: vlan\.egressQosMap\.3: expected a PCP: an integer 0\.\.7$/,
  );
  fails(at('{"3": -1}'), /vlan\.egressQosMap\.3: expected a PCP/);
  fails(at('{"3": 1.5}'), /vlan\.egressQosMap\.3: expected a PCP/);
  fails(
    at('{"x": 1}'),
    /^config\.yaml:3:18: vlan\.egressQosMap\.x: egressQosMap keys are priorities: decimal integers 0\.\.4294967295/,
  );
  fails(at('{"4294967296": 1}'), /egressQosMap keys are priorities/);
  fails(at('{"03": 1}'), /egressQosMap keys are priorities/);
  fails(at("{}"), /vlan\.egressQosMap: egressQosMap is empty/);
  fails(at("[3, 3]"), /vlan\.egressQosMap: expected a mapping of priority to PCP/);
  fails(
    'tsnInterface: tsn0.5\nvlan:\n  egressQosMap: {"1": 1}\n  ingressQosMap: {"1": 1}\n',
    /^config\.yaml:4:3: vlan\.ingressQosMap: unknown key/,
  );
  const ok = parseNodeConfig(at('{"0": 0, "4294967295": 7}'));
  assert.deepEqual(ok.tsnInterfaces[0].vlan, { egressQosMap: { "0": 0, "4294967295": 7 } });
});
