/**
 * The policy package: one validator for every source, one precedence function in which
 * every layer after the node's can only lower, and the datapath's form.
 */
import assert from "node:assert/strict";
import { CniCode, ConfigError } from "../../src/errors.ts";
import {
  compileRule,
  formatRule,
  parseRemapString,
  parseRulesString,
  validatePolicy,
} from "../../src/policy/validate.ts";
import {
  compileNode,
  describePolicy,
  resolvePolicy,
  samePolicy,
} from "../../src/policy/resolve.ts";
import { layerFromCniArgs, layersFromRuntimeConfig } from "../../src/policy/layers.ts";
import { PRIORITY_MAX } from "../../src/policy/types.ts";
import { decodePod, encodePod } from "../../src/bpf/maps.ts";
import { parseCniArgs } from "../../src/cni/protocol.ts";

const IDENTITY = Array.from({ length: 16 }, (_, i) => i);

Deno.test("policy: the node layer alone compiles to the identity by default", () => {
  const p = compileNode({});
  assert.deepEqual(p, {
    maxPriority: PRIORITY_MAX,
    remap: IDENTITY,
    defaultPriority: 0,
    rules: [],
  });
});

Deno.test("policy: the node may remap freely; its ceiling caps the table", () => {
  const p = compileNode({ maxPriority: 4, remap: { "7": 3, "2": 9 }, defaultPriority: 6 });
  assert.equal(p.remap[7], 3);
  assert.equal(p.remap[2], 4, "remapped to 9, then the ceiling");
  assert.equal(p.remap[5], 4);
  assert.equal(p.remap[1], 1);
  assert.equal(p.defaultPriority, 4, "the default is capped too");
});

Deno.test("policy: a pod's layers only lower (the tries from issue 16)", () => {
  // Under the default node policy, an annotation "1:9" would have raised priority 1 to 9.
  const open = resolvePolicy(compileNode({}), { annotations: { remap: { "1": 9 } } });
  assert.equal(open.policy.remap[1], 1);
  assert.deepEqual(open.refused, ["annotations: remap 1 -> 9 above 1"]);
  // Node cap 3 and node remap 5->1: "1:6,5:5" must neither raise 1 nor undo the remap.
  const node = compileNode({ maxPriority: 3, remap: { "5": 1 } });
  const r = resolvePolicy(node, { annotations: { remap: { "1": 6, "5": 5 } } });
  assert.equal(r.policy.remap[1], 1);
  assert.equal(r.policy.remap[5], 1);
  assert.equal(r.refused.length, 2);
  // The entry's maxPriority cannot replace the node's ceiling with a higher one.
  const e = resolvePolicy(node, { entry: { maxPriority: 7 } });
  assert.equal(e.policy.maxPriority, 3);
  assert.deepEqual(e.refused, ["entry: maxPriority 7 above the ceiling 3"]);
});

Deno.test("policy: lowering works from every layer, highest last", () => {
  const node = compileNode({ maxPriority: 6 });
  const r = resolvePolicy(node, {
    entry: { maxPriority: 5 },
    annotations: { maxPriority: 4, remap: { "3": 1 } },
    runtimeConfig: { remap: { "3": 0 } },
    cniArgs: { maxPriority: 2 },
  });
  assert.equal(r.policy.maxPriority, 2);
  assert.equal(r.policy.remap[3], 0);
  assert.equal(r.policy.remap[5], 2);
  assert.deepEqual(r.from, { maxPriority: "cniArgs", remap: { "3": "runtimeConfig" } });
  assert.deepEqual(r.refused, []);
});

Deno.test("policy: default priority and rules come from the highest layer, capped", () => {
  const node = compileNode({ maxPriority: 5, defaultPriority: 1 });
  const r = resolvePolicy(node, {
    annotations: {
      defaultPriority: 7,
      rules: [{ protocol: "udp", ports: { from: 319, to: 320 }, priority: 6 }],
    },
  });
  assert.equal(r.policy.defaultPriority, 5);
  assert.equal(r.policy.rules[0].priority, 5);
  assert.equal(r.from.defaultPriority, "annotations");
});

Deno.test("policy: the object form is validated with paths in the messages", () => {
  assert.deepEqual(validatePolicy({ maxPriority: 0, remap: { "15": PRIORITY_MAX } }, "p"), {
    maxPriority: 0,
    remap: { "15": PRIORITY_MAX },
  });
  const bad: [unknown, RegExp][] = [
    [{ maxPriority: -1 }, /p\.maxPriority: expected an integer priority/],
    [{ remap: { "16": 1 } }, /p\.remap\.16: remap keys are the priorities "1" to "15"/],
    [{ remap: { "0": 3 } }, /p\.remap\.0: priority 0 .* defaultPriority/],
    [{ remap: { "3": 2 ** 32 } }, /p\.remap\.3: expected an integer priority/],
    [{ colour: 1 }, /unknown key colour/],
    [{ rules: [{ priority: 1, ports: "80-70" }] }, /p\.rules\[0\]\.ports/],
    [{ rules: [{ priority: 1, protocol: "icmp", ports: 80 }] }, /needs protocol tcp, udp/],
    [{ rules: [{ priority: 1, destination: "10.0.0.0/33" }] }, /p\.rules\[0\]\.destination/],
    [{ rules: Array(9).fill({ priority: 1 }) }, /at most 8 rules/],
    ["x", /p: expected an object/],
  ];
  for (const [input, re] of bad) {
    assert.throws(() => validatePolicy(input, "p"), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, CniCode.InvalidNetworkConfig);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("policy: the string forms (annotations, CNI_ARGS)", () => {
  assert.deepEqual(parseRemapString(" 7:3, 6=3 ,", "w", 7), { "7": 3, "6": 3 });
  assert.throws(() => parseRemapString("16:1", "w", 7), /not a remap entry/);
  assert.throws(() => parseRemapString("0:4", "w", 7), /priority 0 .* defaultPriority/);
  const rules = parseRulesString("udp:319-320@224.0.1.129=7, @10.0.0.0/8=2,tcp=3", "w", 7);
  assert.deepEqual(rules.map((r) => formatRule(compileRule(r))), [
    "udp:319-320@224.0.1.129/32=7",
    "@10.0.0.0/8=2",
    "tcp=3",
  ]);
  assert.throws(() => parseRulesString("=3", "w", 7), /is not a rule/);
  // CNI_ARGS pairs allow one "=" (the reference plugins refuse a second): ">" stands in.
  assert.deepEqual(
    parseRulesString("udp:80>6,@10.0.0.0/8 > 2", "w", 7),
    parseRulesString("udp:80=6,@10.0.0.0/8=2", "w", 7),
  );
  assert.throws(() => parseRulesString("udp:99999=3", "w", 7), /ports/);
  const v6 = compileRule(parseRulesString("@fd00:1::/32=4", "w", 7)[0]);
  assert.equal(v6.family, 6);
  assert.equal(v6.prefixLen, 32);
  assert.deepEqual([...v6.addr.subarray(0, 6)], [0xfd, 0, 0, 1, 0, 0]);
  // Host bits beyond the prefix are not part of it.
  assert.deepEqual(
    [...compileRule({ destination: "10.1.2.3/8", priority: 1 }).addr.subarray(0, 4)],
    [
      10,
      0,
      0,
      0,
    ],
  );
});

Deno.test("policy: layers from runtimeConfig and CNI_ARGS, with the source in errors", () => {
  const rc = layersFromRuntimeConfig({
    "io.kubernetes.cri.pod-annotations": {
      "tsnproxy.io/max-priority": "5",
      "tsnproxy.io/default-priority": "2",
      "tsnproxy.io/priority-rules": "udp:5000=3",
      "unrelated": "x",
    },
    tsnproxy: { remap: { "7": 1 } },
  });
  assert.deepEqual(rc.annotations?.maxPriority, 5);
  assert.deepEqual(rc.annotations?.defaultPriority, 2);
  assert.equal(rc.annotations?.rules?.length, 1);
  assert.deepEqual(rc.runtimeConfig, { remap: { "7": 1 } });
  assert.deepEqual(
    layerFromCniArgs(parseCniArgs("K8S_POD_NAME=x;TSNPROXY_MAX_PRIORITY=3;IgnoreUnknown=1")),
    { maxPriority: 3 },
  );
  assert.equal(layerFromCniArgs(parseCniArgs("K8S_POD_NAME=x")), undefined);
  assert.throws(
    () => layerFromCniArgs(parseCniArgs("TSNPROXY_PRIORITY_RULES=nonsense")),
    (e: unknown) =>
      e instanceof ConfigError && e.code === CniCode.InvalidEnvironment &&
      /CNI_ARGS TSNPROXY_PRIORITY_RULES/.test(e.message),
  );
  assert.throws(
    () =>
      layersFromRuntimeConfig({
        "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/priority-remap": "1:x" },
      }),
    /annotation tsnproxy.io\/priority-remap/,
  );
});

Deno.test("policy: the datapath's form round-trips through struct tsnp_pod", () => {
  const r = resolvePolicy(compileNode({ maxPriority: 300, remap: { "3": 300 } }), {
    annotations: {
      defaultPriority: 2,
      rules: parseRulesString("udp:319-320@224.0.1.129=7,@fd00::/8=5", "w", 7),
    },
  });
  const entry = { cookie: 42n, slot: 7, carrier: "stage" as const, reason: 4 };
  const back = decodePod(encodePod(r.policy, entry));
  assert.ok(samePolicy(back.policy, r.policy), JSON.stringify(describePolicy(back.policy)));
  assert.deepEqual({ ...back, policy: undefined }, { ...entry, policy: undefined });
  assert.equal(back.policy.remap[3], 300, "remap targets are u32 (0.1.0 held a u8)");
});
