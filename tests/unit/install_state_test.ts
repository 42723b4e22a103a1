/**
 * The install state file (src/install/state.ts): one record per TSN interface, a file of the
 * release before the list read as its one record, and the first record kept as "qdisc" so
 * that release's uninstall (a downgrade) still finds what install created.
 */
import assert from "node:assert/strict";
import {
  emptyState,
  type InstallState,
  interfaceState,
  readState,
  sameState,
  stateIsEmpty,
  statePath,
  withInterface,
  writeState,
} from "../../src/install/state.ts";
import { ConfigError } from "../../src/errors.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-state-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("state: a file of the release before the list reads as its one record", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      statePath(dir),
      JSON.stringify({
        v: 1,
        version: "0.1.0",
        qdisc: {
          ifname: "tsn0",
          clsactCreated: true,
          rootCreated: { kind: "taprio", handle: 256 },
          replacedRoot: "htb 1:",
        },
      }),
    );
    const s = await readState(dir);
    assert.deepEqual(s.interfaces, [{
      ifname: "tsn0",
      clsactCreated: true,
      rootCreated: { kind: "taprio", handle: 256 },
      replacedRoot: "htb 1:",
    }]);
    assert.equal(s.version, "0.1.0");
  });
});

Deno.test("state: per interface records round-trip; the first one stays readable as qdisc", async () => {
  await withDir(async (dir) => {
    let s: InstallState = emptyState();
    s = withInterface(s, { ifname: "tsn0", clsactCreated: true });
    s = withInterface(s, {
      ifname: "tsn1.100",
      clsactCreated: false,
      vlan: { previous: { "3": 0, "5": 2 }, set: { "3": 3, "5": 5 } },
    });
    s = withInterface(s, { ifname: "tsn2", clsactCreated: false }); // nothing to record
    await writeState(dir, s);
    const raw = JSON.parse(await Deno.readTextFile(statePath(dir)));
    assert.deepEqual(raw.qdisc, { ifname: "tsn0", clsactCreated: true });
    assert.deepEqual(raw.interfaces.map((i: { ifname: string }) => i.ifname), ["tsn0", "tsn1.100"]);
    const back = await readState(dir);
    assert.ok(sameState(back, s));
    assert.deepEqual(interfaceState(back, "tsn1.100")?.vlan, {
      previous: { "3": 0, "5": 2 },
      set: { "3": 3, "5": 5 },
    });
    assert.equal(interfaceState(back, "tsn2"), undefined);
    // A record replaced in place keeps the order.
    const moved = withInterface(back, { ifname: "tsn0", clsactCreated: false });
    assert.deepEqual(moved.interfaces.map((i) => i.ifname), ["tsn0", "tsn1.100"]);
    assert.ok(!sameState(moved, back));
  });
});

Deno.test("state: nothing recorded removes the file; a VLAN record alone keeps it", async () => {
  await withDir(async (dir) => {
    const vlanOnly = withInterface(emptyState(), {
      ifname: "tsn0.7",
      clsactCreated: false,
      vlan: { previous: { "1": 0 }, set: { "1": 4 } },
    });
    assert.ok(!stateIsEmpty(vlanOnly));
    await writeState(dir, vlanOnly);
    const raw = JSON.parse(await Deno.readTextFile(statePath(dir)));
    assert.equal(raw.qdisc, undefined, "no qdisc record to show older releases");
    await writeState(dir, withInterface(vlanOnly, { ifname: "tsn0.7", clsactCreated: false }));
    await assert.rejects(Deno.stat(statePath(dir)), Deno.errors.NotFound);
  });
});

Deno.test("state: malformed VLAN records are dropped, a foreign file is refused", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      statePath(dir),
      JSON.stringify({
        v: 1,
        interfaces: [
          { ifname: "a", clsactCreated: true, vlan: { previous: { "1": 9 }, set: { "1": 1 } } },
          { ifname: "b", clsactCreated: true, vlan: { previous: {}, set: { x: 1 } } },
          { nope: true },
        ],
      }),
    );
    const s = await readState(dir);
    assert.deepEqual(s.interfaces, [
      { ifname: "a", clsactCreated: true },
      { ifname: "b", clsactCreated: true },
    ]);
    await Deno.writeTextFile(statePath(dir), '{"v": 2}');
    await assert.rejects(readState(dir), ConfigError);
  });
});
