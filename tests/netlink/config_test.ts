/** The node config's qdisc section: defaults, normalisation and the semantic checks. */
import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { checkQueuesFit, parseQdiscConfig } from "../../src/config/qdisc.ts";
import { ConfigError } from "../../src/errors.ts";

const yamlTaprio = `
kind: taprio
numTc: 4
map: [0, 1, 2, 3]
queues: ["1@0", "1@1", "1@2", {count: 1, offset: 3}]
baseTime: "1700000000000000001"
entries:
  - {command: S, gateMask: 0x1, intervalNs: 300000}
  - {command: H, gateMask: "0xe", intervalNs: 700000}
etf:
  - {queue: 0, deltaNs: 200000}
`;

function problems(input: unknown): string {
  try {
    parseQdiscConfig(input);
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.ok(e.hint.length > 0);
    return e.message;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("taprio from YAML: padding, queue forms, 64-bit base time, etf defaults", () => {
  const c = parseQdiscConfig(parseYaml(yamlTaprio));
  assert.ok(c.kind === "taprio");
  assert.equal(c.handle, 0x100);
  assert.deepEqual(c.map, [0, 1, 2, 3, ...Array(12).fill(0)]);
  assert.deepEqual(c.queues, [0, 1, 2, 3].map((offset) => ({ count: 1, offset })));
  assert.equal(c.baseTime, 1700000000000000001n);
  assert.deepEqual(c.entries, [
    { command: "S", gateMask: 1, intervalNs: 300000 },
    { command: "H", gateMask: 14, intervalNs: 700000 },
  ]);
  assert.equal(c.clockid, undefined, "builder defaults to CLOCK_TAI");
  assert.deepEqual(c.etf, [{
    queue: 0,
    deltaNs: 200000,
    clockid: "CLOCK_TAI",
    skipSockCheck: true,
    deadlineMode: false,
    offload: false,
  }]);
  assert.equal(c.txtimeAssist, false);
  assert.equal(c.fullOffload, false);
});

Deno.test("keep, none and mqprio defaults", () => {
  assert.deepEqual(parseQdiscConfig({ kind: "keep" }), { kind: "keep" });
  assert.deepEqual(parseQdiscConfig({ kind: "none" }), { kind: "none" });
  const m = parseQdiscConfig({ kind: "mqprio", numTc: 2, map: [0, 1], queues: ["2@0", "2@2"] });
  assert.ok(m.kind === "mqprio");
  assert.equal(m.hw, 0);
});

Deno.test("semantic errors name the field and the problem", () => {
  const base = { kind: "taprio", numTc: 2, map: [0, 1], queues: ["1@0", "1@1"] };
  const entries = [{ gateMask: 3, intervalNs: 1000 }];
  assert.match(
    problems({ ...base, map: [0, 2], entries }),
    /qdisc\.map\.1: map\[1\] = 2 but numTc is 2/,
  );
  assert.match(problems({ ...base, queues: ["2@0", "1@1"], entries }), /queues\.1: .*overlaps/);
  assert.match(
    problems({ ...base, queues: ["1@0"], entries }),
    /queues has 1 ranges but numTc is 2/,
  );
  assert.match(problems({ ...base, entries: [] }), /at least one schedule entry/);
  assert.match(
    problems({ ...base, entries: [{ gateMask: 1, intervalNs: 0 }] }),
    /intervalNs must be > 0/,
  );
  assert.match(
    problems({ ...base, entries: [{ gateMask: 4, intervalNs: 10 }] }),
    /opens gates above numTc 2/,
  );
  assert.match(
    problems({ ...base, entries, txtimeAssist: true }),
    /txtimeAssist needs txtimeDelayNs/,
  );
  assert.match(
    problems({ ...base, entries, fullOffload: true, clockid: "CLOCK_TAI" }),
    /clockid cannot be set with fullOffload/,
  );
  assert.match(problems({ ...base, entries, baseTime: 2 ** 60 }), /quoted string/);
  assert.match(problems({ ...base, entries, clockid: "CLOCK_FOO" }), /clockid must be one of/);
  assert.match(problems({ ...base, entries, etf: [{ queue: 5, deltaNs: 1 }] }), /etf queue 5/);
  assert.match(problems({ ...base, map: Array(17).fill(0), entries }), /qdisc\.map/);
  assert.match(problems({ kind: "prio" }), /qdisc\.kind/);
});

Deno.test("checkQueuesFit compares against the interface's tx queues", () => {
  const c = parseQdiscConfig(parseYaml(yamlTaprio));
  assert.ok(c.kind === "taprio");
  checkQueuesFit(c, 4, "tsn0");
  assert.throws(() => checkQueuesFit(c, 2, "tsn0"), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /tx queues up to 3 but tsn0 has 2 tx queues/);
    return true;
  });
});
