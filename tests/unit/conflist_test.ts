import assert from "node:assert/strict";
import {
  apply,
  discover,
  inject,
  parseCniDocument,
  parseJsonWithSpans,
  planInstall,
  planUninstall,
  remove,
  toValue,
  type TsnproxyEntry,
  unifiedDiff,
} from "../../src/install/conflist.ts";
import { ConfigError, NotFoundError, TsnproxyError } from "../../src/errors.ts";
import { formatConflistChanges } from "../../src/install/plan.ts";

const FIXTURES = new URL("../fixtures/cni/", import.meta.url).pathname;
const ENTRY: TsnproxyEntry = { type: "tsnproxy", tsnInterface: "tsn0", restoreAt: "tsn-egress" };

/** A temp conf dir holding a copy of a fixture case. */
async function fixtureDir(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `tsnproxy-cni-${name}-` });
  for await (const e of Deno.readDir(`${FIXTURES}${name}`)) {
    await Deno.copyFile(`${FIXTURES}${name}/${e.name}`, `${dir}/${e.name}`);
  }
  return dir;
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(dir)) {
    out[e.name] = await Deno.readTextFile(`${dir}/${e.name}`);
  }
  return out;
}

function chainTypes(path: string, text: string): string[] {
  return parseCniDocument(path, text).plugins.map((p) => p.type);
}

/** Every real-world shape: expected file, chain before, and chain after install. */
const SHAPES: { name: string; file: string; before: string[] }[] = [
  { name: "bridge", file: "10-bridge.conflist", before: ["bridge", "tuning", "portmap"] },
  { name: "flannel", file: "10-flannel.conflist", before: ["flannel", "portmap"] },
  { name: "calico", file: "10-calico.conflist", before: ["calico", "bandwidth", "portmap"] },
  { name: "kindnet", file: "10-kindnet.conflist", before: ["ptp", "portmap"] },
  {
    name: "podman",
    file: "87-podman-bridge.conflist",
    before: ["bridge", "portmap", "firewall", "tuning"],
  },
  { name: "oneline", file: "10-compact.conflist", before: ["bridge", "portmap"] },
  { name: "unknown-fields", file: "10-vendor.conflist", before: ["vendor-cni"] },
];

for (const shape of SHAPES) {
  Deno.test(`conflist ${shape.name}: install appends last, idempotent, uninstall byte-identical`, async () => {
    const dir = await fixtureDir(shape.name);
    const original = await snapshot(dir);
    const path = `${dir}/${shape.file}`;
    const { doc } = await discover(dir);
    assert.equal(doc.path, path);
    assert.deepEqual(doc.plugins.map((p) => p.type), shape.before);

    const plan = await planInstall({ confDir: dir, entry: ENTRY });
    assert.equal(plan.status, "added");
    assert.deepEqual(plan.changes.map((c) => [c.action, c.role]), [["create", "backup"], [
      "update",
      "conflist",
    ]]);
    assert.match(formatConflistChanges(plan), /\+.*"tsnproxy"/);
    await apply(plan);

    const after = await Deno.readTextFile(path);
    assert.deepEqual(chainTypes(path, after), [...shape.before, "tsnproxy"]);
    // Every original member keeps its value (and the file stays valid JSON for JSON.parse).
    const v = JSON.parse(after);
    const o = JSON.parse(original[shape.file]);
    assert.deepEqual(v.plugins.slice(0, -1), o.plugins);
    assert.deepEqual(v.plugins.at(-1), ENTRY);
    assert.deepEqual(Object.keys(v), Object.keys(o));

    const again = await planInstall({ confDir: dir, entry: ENTRY });
    assert.equal(again.status, "unchanged");
    assert.deepEqual(again.changes, []);

    const un = await planUninstall({ confDir: dir });
    await apply(un);
    assert.deepEqual(await snapshot(dir), original);
    assert.deepEqual((await planUninstall({ confDir: dir })).changes, []);
  });
}

Deno.test("conflist: inject keeps the file's indentation style", () => {
  const tabs = parseCniDocument(
    "/x/10-kindnet.conflist",
    Deno.readTextFileSync(`${FIXTURES}kindnet/10-kindnet.conflist`),
  );
  const r = inject(tabs, ENTRY);
  assert.match(r.text, /\n\t\{\n\t\t"type": "tsnproxy",\n\t\t"tsnInterface": "tsn0",/);
  const one = parseCniDocument(
    "/x/10-compact.conflist",
    Deno.readTextFileSync(`${FIXTURES}oneline/10-compact.conflist`),
  );
  assert.ok(
    inject(one, ENTRY).text.endsWith(
      `}, {"type":"tsnproxy","tsnInterface":"tsn0","restoreAt":"tsn-egress"}]}`,
    ),
  );
});

Deno.test("conflist: unknown fields, key order and number spelling survive byte-for-byte", () => {
  const text = Deno.readTextFileSync(`${FIXTURES}unknown-fields/10-vendor.conflist`);
  const doc = parseCniDocument("/x/10-vendor.conflist", text);
  const r = inject(doc, ENTRY);
  const lastPlugin = doc.plugins[0].node.end;
  assert.equal(r.text.slice(0, lastPlugin), text.slice(0, lastPlugin));
  assert.equal(r.text.slice(r.text.length - (text.length - lastPlugin)), text.slice(lastPlugin));
  assert.match(r.text, /"10": "ten", "2": "two", "b": 1\.0, "a": 1e3, "big": 12345678901234567890/);
  assert.equal(remove(parseCniDocument(doc.path, r.text)).text, text);
});

Deno.test("conflist: already-injected identical entry is no change; different entry replaced in place", async () => {
  const dir = await fixtureDir("already-injected");
  const path = `${dir}/10-flannel.conflist`;
  const before = await Deno.readTextFile(path);
  const same = await planInstall({
    confDir: dir,
    entry: { type: "tsnproxy", tsnInterface: "tsn0" },
  });
  assert.equal(same.status, "unchanged");
  assert.deepEqual(same.changes, []);
  const diff = await planInstall({
    confDir: dir,
    entry: { type: "tsnproxy", tsnInterface: "eth9" },
  });
  assert.equal(diff.status, "replaced");
  assert.deepEqual(diff.changes.map((c) => c.action), ["update"]); // no backup: we never saw the original
  await apply(diff);
  const after = await Deno.readTextFile(path);
  assert.deepEqual(chainTypes(path, after), ["flannel", "portmap", "tsnproxy"]);
  assert.equal(after, before.replace('"tsnInterface": "tsn0"', '"tsnInterface": "eth9"'));
  // Uninstall without a backup just cuts the entry.
  await apply(await planUninstall({ confDir: dir }));
  assert.equal(
    await Deno.readTextFile(path),
    await Deno.readTextFile(`${FIXTURES}flannel/10-flannel.conflist`),
  );
});

Deno.test("conflist: duplicate tsnproxy entries collapse to one", () => {
  const text = `{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"tsnproxy","a":1},` +
    `{"type":"bridge"},{"type":"tsnproxy","a":1}]}`;
  const r = inject(parseCniDocument("/x/a.conflist", text), { type: "tsnproxy", a: 2 });
  assert.equal(r.status, "replaced");
  assert.deepEqual(JSON.parse(r.text).plugins, [{ type: "tsnproxy", a: 2 }, { type: "bridge" }]);
  assert.ok(r.warnings.some((w) => /duplicate/.test(w)));
  assert.ok(r.warnings.some((w) => /not last/.test(w)));
  const removed = remove(parseCniDocument("/x/a.conflist", text));
  assert.deepEqual(JSON.parse(removed.text).plugins, [{ type: "bridge" }]);
});

Deno.test("conflist: a single-plugin .conf becomes a .conflist and comes back byte-identical", async () => {
  const dir = await fixtureDir("single-conf");
  const original = await snapshot(dir);
  const plan = await planInstall({ confDir: dir, entry: ENTRY });
  assert.equal(plan.target, `${dir}/10-mynet.conf`);
  assert.deepEqual(plan.changes.map((c) => [c.action, c.path.slice(dir.length + 1)]), [
    ["create", "10-mynet.conf.tsnproxy-orig"],
    ["create", "10-mynet.conflist"],
    ["delete", "10-mynet.conf"],
  ]);
  assert.ok(plan.warnings.some((w) => /restart/.test(w)));
  await apply(plan);
  const names = Object.keys(await snapshot(dir)).sort();
  assert.deepEqual(names, ["10-mynet.conf.tsnproxy-orig", "10-mynet.conflist", "99-loopback.conf"]);
  const list = JSON.parse(await Deno.readTextFile(`${dir}/10-mynet.conflist`));
  assert.equal(list.cniVersion, "0.4.0");
  assert.equal(list.name, "mynet");
  assert.deepEqual(list.plugins[0], JSON.parse(original["10-mynet.conf"]));
  assert.deepEqual(list.plugins[1], ENTRY);
  assert.equal((await discover(dir)).doc.path, `${dir}/10-mynet.conflist`);
  assert.equal((await planInstall({ confDir: dir, entry: ENTRY })).changes.length, 0);

  await apply(await planUninstall({ confDir: dir }));
  assert.deepEqual(await snapshot(dir), original);
});

Deno.test("conflist: .json files are single-plugin configs too", async () => {
  const dir = await Deno.makeTempDir();
  const text = '{"cniVersion":"1.0.0","name":"j","type":"bridge"}';
  await Deno.writeTextFile(`${dir}/50-j.json`, text);
  const plan = await planInstall({ confDir: dir, entry: ENTRY });
  await apply(plan);
  assert.deepEqual(Object.keys(await snapshot(dir)).sort(), [
    "50-j.conflist",
    "50-j.json.tsnproxy-orig",
  ]);
  await apply(await planUninstall({ confDir: dir }));
  assert.deepEqual(await snapshot(dir), { "50-j.json": text });
});

Deno.test("conflist: the primary CNI rewrote the file after install: uninstall removes only our entry", async () => {
  const dir = await fixtureDir("flannel");
  const path = `${dir}/10-flannel.conflist`;
  await apply(await planInstall({ confDir: dir, entry: ENTRY }));
  const rewritten = (await Deno.readTextFile(path)).replace(
    '"hairpinMode": true',
    '"hairpinMode": false',
  );
  await Deno.writeTextFile(path, rewritten);
  const un = await planUninstall({ confDir: dir });
  assert.equal(un.status, "removed");
  await apply(un);
  const after = await Deno.readTextFile(path);
  assert.deepEqual(chainTypes(path, after), ["flannel", "portmap"]);
  assert.match(after, /"hairpinMode": false/);
  assert.deepEqual(Object.keys(await snapshot(dir)), ["10-flannel.conflist"]);
});

Deno.test("conflist: the primary CNI dropped our entry: install refreshes the backup and re-adds", async () => {
  const dir = await fixtureDir("flannel");
  const path = `${dir}/10-flannel.conflist`;
  await apply(await planInstall({ confDir: dir, entry: ENTRY }));
  const fresh = (await Deno.readTextFile(`${FIXTURES}flannel/10-flannel.conflist`)).replace(
    "cbr0",
    "cbr1",
  );
  await Deno.writeTextFile(path, fresh);
  const plan = await planInstall({ confDir: dir, entry: ENTRY });
  assert.deepEqual(plan.changes.map((c) => [c.action, c.role]), [["update", "backup"], [
    "update",
    "conflist",
  ]]);
  await apply(plan);
  await apply(await planUninstall({ confDir: dir }));
  assert.deepEqual(await snapshot(dir), { "10-flannel.conflist": fresh });
});

Deno.test("conflist: .conf re-created by the primary CNI after conversion", async () => {
  const dir = await fixtureDir("single-conf");
  const original = await snapshot(dir);
  await apply(await planInstall({ confDir: dir, entry: ENTRY }));
  await Deno.writeTextFile(`${dir}/10-mynet.conf`, original["10-mynet.conf"]);
  // The .conf sorts before our .conflist and wins again: install converges by re-converting.
  const plan = await planInstall({ confDir: dir, entry: ENTRY });
  assert.deepEqual(plan.changes.map((c) => c.action), ["update", "delete"]);
  await apply(plan);
  assert.equal((await planInstall({ confDir: dir, entry: ENTRY })).changes.length, 0);
  await apply(await planUninstall({ confDir: dir }));
  assert.deepEqual(await snapshot(dir), original);
});

Deno.test("conflist: discovery order and --network selection", async () => {
  const dir = await fixtureDir("multi");
  assert.equal((await discover(dir)).doc.path, `${dir}/05-macvlan.conflist`);
  assert.equal((await discover(dir, { network: "cbr0" })).doc.path, `${dir}/20-flannel.conflist`);
  assert.equal((await discover(dir, { network: "lo" })).doc.path, `${dir}/99-loopback.conf`);
  await assert.rejects(discover(dir, { network: "nope" }), (e: unknown) => {
    assert.ok(e instanceof NotFoundError);
    assert.match(e.message, /"nope".*05-macvlan\.conflist \("tsn-macvlan"\)/);
    assert.match(e.hint, /--network/);
    return true;
  });
  const before = await snapshot(dir);
  await apply(await planInstall({ confDir: dir, network: "cbr0", entry: ENTRY }));
  const after = await snapshot(dir);
  assert.equal(after["05-macvlan.conflist"], before["05-macvlan.conflist"]);
  assert.deepEqual(chainTypes("x.conflist", after["20-flannel.conflist"]), [
    "flannel",
    "portmap",
    "tsnproxy",
  ]);
  await apply(await planUninstall({ confDir: dir, network: "cbr0" }));
  assert.deepEqual(await snapshot(dir), before);
});

Deno.test("conflist: two files with the same network name are ambiguous", async () => {
  const dir = await fixtureDir("multi");
  await Deno.copyFile(`${dir}/20-flannel.conflist`, `${dir}/30-flannel-old.conflist`);
  await assert.rejects(discover(dir, { network: "cbr0" }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /20-flannel\.conflist, 30-flannel-old\.conflist/);
    return true;
  });
});

Deno.test("conflist: malformed file is reported with file:line:column and left untouched", async () => {
  const dir = await fixtureDir("malformed");
  const before = await snapshot(dir);
  await assert.rejects(planInstall({ confDir: dir, entry: ENTRY }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(
      e.message,
      /05-broken\.conflist:8:5: invalid JSON: expected a string key, found character "}"/,
    );
    assert.ok(e.hint.length > 0);
    return true;
  });
  assert.deepEqual(await snapshot(dir), before);
  // Selecting the good network by name skips it (reported as skipped).
  const plan = await planInstall({ confDir: dir, network: "cbr0", entry: ENTRY });
  assert.ok(plan.warnings.some((w) => /05-broken/.test(w)));
});

Deno.test("conflist: invalid shapes are rejected with a position", () => {
  const cases: [string, string, RegExp][] = [
    ["a.conflist", `{"name":"n","plugins":[]}`, /a\.conflist:1:23: "plugins" is empty/],
    ["a.conflist", `{"name":"n"}`, /missing "plugins"/],
    ["a.conflist", `{"plugins":[{"type":"x"}]}`, /missing "name"/],
    ["a.conflist", `{"name":"n","plugins":[{"type":1}]}`, /1:32: "type" must be a string/],
    ["a.conf", `{"name":"n","plugins":[{"type":"x"}]}`, /rename it to \.conflist/],
    ["a.conf", `{"name":"n"}`, /missing "type"/],
    ["a.conf", `[1]`, /expected a JSON object/],
    ["a.conf", `\ufeff{}`, /1:1: invalid JSON: byte order mark/],
    ["a.conf", `{"a":01}`, /invalid number/],
    ["a.conf", `{"a":1} x`, /1:9: .*after the JSON value/],
    ["a.conf", `{"a":"x`, /1:6: invalid JSON: unterminated string/],
    ["a.conf", `{"a":"\\q"}`, /invalid escape/],
    ["a.conf", `{"a":1 // c\n}`, /1:8: invalid JSON: expected .*found character "\/"/],
  ];
  for (const [name, text, re] of cases) {
    assert.throws(() => parseCniDocument(`/d/${name}`, text), (e: unknown) => {
      assert.ok(e instanceof TsnproxyError, `${text}`);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("conflist: chaining needs cniVersion >= 0.3.0", async () => {
  const dir = await fixtureDir("old-version");
  await assert.rejects(planInstall({ confDir: dir, entry: ENTRY }), /0\.2\.0.*0\.3\.0/);
});

Deno.test("conflist: empty or missing conf dir", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(discover(dir), NotFoundError);
  await assert.rejects(discover(`${dir}/nope`), NotFoundError);
  await Deno.writeTextFile(`${dir}/10-x.conflist.tsnproxy-orig`, "{}");
  await Deno.writeTextFile(`${dir}/.10-x.conflist.tsnproxy-tmp.1.ab`, "{");
  await assert.rejects(discover(dir), NotFoundError); // our scratch names are never candidates
});

Deno.test("conflist: converting must not let another file overtake the target", async () => {
  const dir = await fixtureDir("single-conf");
  await Deno.writeTextFile(
    `${dir}/10-mynet.confa.conf`,
    '{"cniVersion":"0.4.0","name":"z","type":"x"}',
  );
  await assert.rejects(planInstall({ confDir: dir, entry: ENTRY }), /10-mynet\.confa\.conf/);
});

Deno.test("conflist: a converted name clash with a foreign .conflist is refused", async () => {
  const dir = await fixtureDir("single-conf");
  await Deno.writeTextFile(
    `${dir}/10-mynet.conflist`,
    '{"cniVersion":"0.4.0","name":"other","plugins":[{"type":"x"}]}',
  );
  await assert.rejects(planInstall({ confDir: dir, entry: ENTRY }), /not tsnproxy's/);
});

Deno.test("conflist: apply refuses when a file changed after planning", async () => {
  const dir = await fixtureDir("flannel");
  const plan = await planInstall({ confDir: dir, entry: ENTRY });
  await Deno.writeTextFile(`${dir}/10-flannel.conflist`, "{}");
  await assert.rejects(apply(plan), /changed since the plan/);
});

Deno.test("conflist: in-place apply keeps the inode", async () => {
  const dir = await fixtureDir("calico");
  const path = `${dir}/10-calico.conflist`;
  const ino = (await Deno.stat(path)).ino;
  await apply(await planInstall({ confDir: dir, entry: ENTRY }), { inPlace: true });
  assert.equal((await Deno.stat(path)).ino, ino);
  await apply(await planUninstall({ confDir: dir }), { inPlace: true });
  assert.equal((await Deno.stat(path)).ino, ino);
  assert.equal(
    await Deno.readTextFile(path),
    await Deno.readTextFile(`${FIXTURES}calico/10-calico.conflist`),
  );
});

Deno.test("conflist: entry type is checked", () => {
  const doc = parseCniDocument(
    "/x/a.conflist",
    `{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"b"}]}`,
  );
  assert.throws(() => inject(doc, { type: "tsn" }), ConfigError);
});

Deno.test("json parser: values and spans", () => {
  const text = '{"a": [1, -2.5e3, true, null, "\\u00e9\\n"], "a": {"z": 1, "10": 2}}';
  const n = parseJsonWithSpans(text);
  assert.deepEqual(toValue(n), { a: { z: 1, "10": 2 } }); // last duplicate wins, as in Go
  assert.equal(n.kind, "object");
  if (n.kind === "object") {
    assert.equal(
      text.slice(n.members[0].value.start, n.members[0].value.end),
      '[1, -2.5e3, true, null, "\\u00e9\\n"]',
    );
  }
});

Deno.test("unifiedDiff: hunks with context", () => {
  const a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
  const b = "1\n2\n3\n4\nX\n6\n7\n8\n9\n";
  assert.equal(
    unifiedDiff("f", a, b),
    "--- f\n+++ f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+X\n 6\n 7\n 8\n",
  );
  assert.equal(unifiedDiff("f", "", "a\n"), "--- /dev/null\n+++ f\n@@ -0,0 +1,1 @@\n+a\n");
  assert.equal(unifiedDiff("f", "a\n", "a\n"), "");
});
