import assert from "node:assert/strict";
import {
  EXAMPLE_NODE_CONFIG,
  loadNodeConfig,
  type NodeConfig,
  type NodeConfigOverrides,
  parseNodeConfig,
  requireTsnInterface,
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
  qdisc: { kind: "keep" },
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
  assert.throws(() => requireTsnInterface(DEFAULTS), /no TSN interface/);
});

Deno.test("node config: the embedded example round-trips", () => {
  const cfg = parseNodeConfig(EXAMPLE_NODE_CONFIG);
  assert.deepEqual(cfg, { ...DEFAULTS, tsnInterface: "tsn0" });
  assert.equal(requireTsnInterface(cfg), "tsn0");
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
  assert.equal(cfg.tsnInterface, "enp3s0");
  assert.equal(cfg.restoreAt, "host-veth-ingress");
  assert.deepEqual(cfg.gc, { maxAgeMs: 50, intervalMs: 10 });
  assert.deepEqual(cfg.policy, { maxPriority: 5, remap: { "7": 3 } });
  assert.deepEqual(cfg.cni, {
    confDir: "/etc/cni/net.d",
    binDir: "/opt/cni/bin",
    network: "cbr0",
    inPlace: true,
  });
  assert.equal(cfg.qdisc.kind, "taprio");
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
  assert.equal(cfg.tsnInterface, "tsn9");
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
    /valid keys here: tsnInterface, restoreAt/,
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
