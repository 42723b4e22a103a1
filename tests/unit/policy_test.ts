import assert from "node:assert/strict";
import {
  applyPolicy,
  compilePolicy,
  isIdentityPolicy,
  parsePodPolicy,
  policyFromCniArgs,
  policyFromRuntimeConfig,
  resolvePolicy,
  U32_MAX,
} from "../../src/config/policy.ts";
import { CniCode, ConfigError } from "../../src/errors.ts";

const IDENTITY = Array.from({ length: 16 }, (_, i) => i);

Deno.test("policy: defaults compile to the identity", () => {
  const dp = compilePolicy({});
  assert.deepEqual(dp, { maxPriority: U32_MAX, remap: IDENTITY });
  assert.ok(isIdentityPolicy(dp));
  assert.equal(applyPolicy(dp, 7), 7);
  assert.equal(applyPolicy(dp, 4000000000), 4000000000);
});

Deno.test("policy: remap applies before the clamp; >15 is only clamped", () => {
  const dp = compilePolicy({ maxPriority: 4, remap: { "7": 3, "2": 9 } });
  assert.equal(applyPolicy(dp, 7), 3); // remapped, under the clamp
  assert.equal(applyPolicy(dp, 2), 4); // remapped to 9, then clamped
  assert.equal(applyPolicy(dp, 5), 4);
  assert.equal(applyPolicy(dp, 1), 1);
  assert.equal(applyPolicy(dp, 100), 4);
  assert.ok(!isIdentityPolicy(dp));
});

Deno.test("policy: schema validation", () => {
  assert.deepEqual(parsePodPolicy({ maxPriority: 0, remap: { "15": U32_MAX } }, "p"), {
    maxPriority: 0,
    remap: { "15": U32_MAX },
  });
  const bad: [unknown, RegExp][] = [
    [{ maxPriority: -1 }, /p\.maxPriority: expected an integer priority/],
    [{ maxPriority: 2 ** 32 }, /maxPriority/],
    [{ maxPriority: 1.5 }, /maxPriority/],
    [{ remap: { "16": 1 } }, /p\.remap\.16: remap keys are the priorities "0" to "15"/],
    [{ remap: { "x": 1 } }, /remap keys/],
    [{ remap: { "3": -2 } }, /p\.remap\.3/],
    [{ maxPrio: 3 }, /unknown key maxPrio/],
    ["5", /p:/],
  ];
  for (const [input, re] of bad) {
    assert.throws(() => parsePodPolicy(input, "p"), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, re);
      assert.ok(e.hint);
      return true;
    });
  }
});

Deno.test("policy: precedence node < entry < annotations < runtimeConfig < CNI_ARGS", () => {
  const r = resolvePolicy({
    node: { maxPriority: 3, remap: { "1": 0, "2": 0 } },
    entry: { maxPriority: 6, remap: { "2": 1 } },
    annotations: { remap: { "3": 1 } },
    runtimeConfig: { maxPriority: 5 },
    cniArgs: { remap: { "1": 7 } },
  });
  assert.deepEqual(r.policy, { maxPriority: 5, remap: { "1": 7, "2": 1, "3": 1 } });
  assert.deepEqual(r.from, {
    maxPriority: "runtimeConfig",
    remap: { "1": "cniArgs", "2": "entry", "3": "annotations" },
  });
  // Per-pod layers can lower the operator's ceiling, never raise it.
  const raised = resolvePolicy({
    entry: { maxPriority: 4 },
    annotations: { maxPriority: 7 },
    cniArgs: { maxPriority: 6 },
  });
  assert.equal(raised.policy.maxPriority, 4);
  assert.equal(raised.from.maxPriority, "entry");
  // The entry (operator) may raise or lower the node default.
  assert.equal(
    resolvePolicy({ node: { maxPriority: 2 }, entry: { maxPriority: 5 } }).policy.maxPriority,
    5,
  );
  // Layer order is fixed regardless of object key order.
  const r2 = resolvePolicy({ cniArgs: { maxPriority: 1 }, node: { maxPriority: 9 } });
  assert.equal(r2.policy.maxPriority, 1);
  assert.deepEqual(resolvePolicy({}).policy, {});
});

Deno.test("policy: CNI_ARGS layer", () => {
  const args =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;TSNPROXY_MAX_PRIORITY=5;TSNPROXY_PRIORITY_REMAP=5:3, 7:3";
  assert.deepEqual(policyFromCniArgs(args), { maxPriority: 5, remap: { "5": 3, "7": 3 } });
  assert.equal(policyFromCniArgs("K8S_POD_NAME=p"), undefined);
  assert.equal(policyFromCniArgs(undefined), undefined);
  for (
    const bad of [
      "TSNPROXY_MAX_PRIORITY=x",
      "TSNPROXY_PRIORITY_REMAP=16:1",
      "TSNPROXY_PRIORITY_REMAP=3",
    ]
  ) {
    assert.throws(() => policyFromCniArgs(bad), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, CniCode.InvalidEnvironment);
      assert.match(e.message, /CNI_ARGS TSNPROXY_/);
      return true;
    });
  }
});

Deno.test("policy: runtimeConfig layers (pod annotations capability and tsnproxy capability)", () => {
  const rc = {
    portMappings: [],
    "io.kubernetes.cri.pod-annotations": {
      "kubernetes.io/egress-bandwidth": "1M",
      "tsnproxy.io/max-priority": "6",
      "tsnproxy.io/priority-remap": "7:6",
    },
    tsnproxy: { maxPriority: 2 },
  };
  assert.deepEqual(policyFromRuntimeConfig(rc), {
    annotations: { maxPriority: 6, remap: { "7": 6 } },
    runtimeConfig: { maxPriority: 2 },
  });
  assert.deepEqual(policyFromRuntimeConfig(undefined), {});
  assert.deepEqual(policyFromRuntimeConfig({ "io.kubernetes.cri.pod-annotations": {} }), {});
  assert.throws(
    () => policyFromRuntimeConfig({ tsnproxy: { maxPriority: "x" } }),
    /runtimeConfig\.tsnproxy\.maxPriority/,
  );
  assert.throws(
    () =>
      policyFromRuntimeConfig({
        "io.kubernetes.cri.pod-annotations": { "tsnproxy.io/max-priority": "-1" },
      }),
    /annotation tsnproxy\.io\/max-priority/,
  );
});

Deno.test("policy: modules stay light (rules without zod; schema with zod/mini only)", async () => {
  const importsOf = async (file: string) => {
    const src = await Deno.readTextFile(new URL(`../../src/config/${file}`, import.meta.url));
    // Runtime imports only: `import type` is erased and loads nothing.
    return [...src.matchAll(/^import (?!type ).*? from "([^"]+)";$/gms)].map((m) => m[1]).sort();
  };
  assert.deepEqual(await importsOf("policy_layers.ts"), ["../errors.ts"]);
  assert.deepEqual(await importsOf("policy.ts"), [
    "../errors.ts",
    "./policy_layers.ts",
    "zod/mini",
  ]);
});
