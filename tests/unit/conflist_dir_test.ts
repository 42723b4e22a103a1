/**
 * What a real node's CNI config directory can hold besides plain regular files, and what
 * install / uninstall do with it (src/install/conflist/discover.ts and plan.ts):
 * symlinked configs (the target is edited, the link kept; a symlinked `.conf` is not
 * converted), FIFOs and other special files (never opened, skipped with a note), mode and
 * owner of converted, backed-up and rewritten files, bytes that are not UTF-8, CRLF files,
 * libcni 1.3's plugin directories. Uninstall must restore byte for byte, metadata included.
 */
import assert from "node:assert/strict";
import {
  apply,
  discover,
  planInstall,
  planUninstall,
  type TsnproxyEntry,
} from "../../src/install/conflist.ts";
import { ConfigError, NotFoundError } from "../../src/errors.ts";
import { run } from "../lib/run.ts";

const FIXTURES = new URL("../fixtures/cni/", import.meta.url).pathname;
const ENTRY: TsnproxyEntry = { type: "tsnproxy", tsnInterface: "tsn0" };
const FLANNEL = Deno.readTextFileSync(`${FIXTURES}flannel/10-flannel.conflist`);
const MYNET = Deno.readTextFileSync(`${FIXTURES}single-conf/10-mynet.conf`);

/** A node-like layout: <root>/net.d (the conf dir) and <root>/shared (outside it). */
async function layout(): Promise<{ root: string; confDir: string; shared: string }> {
  const root = await Deno.makeTempDir({ prefix: "tsnproxy-confdir-" });
  await Deno.mkdir(`${root}/net.d`);
  await Deno.mkdir(`${root}/shared`);
  return { root, confDir: `${root}/net.d`, shared: `${root}/shared` };
}

/**
 * Every entry under `dir` (recursively) with its kind, mode, owner, link target and content
 * (regular files only: nothing else is opened, a FIFO would block).
 */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, prefix: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      const st = await Deno.lstat(p);
      const meta = `${((st.mode ?? 0) & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      const key = `${prefix}${e.name}`;
      if (st.isSymlink) out[key] = `link -> ${await Deno.readLink(p)}`;
      else if (st.isDirectory) {
        out[key] = `dir ${meta}`;
        await walk(p, `${key}/`);
      } else if (st.isFile) out[key] = `file ${meta} ${await Deno.readTextFile(p)}`;
      else out[key] = `special ${meta}`;
    }
  };
  await walk(dir, "");
  return out;
}

async function install(confDir: string, o: { inPlace?: boolean; network?: string } = {}) {
  const plan = await planInstall({ confDir, network: o.network, entry: ENTRY });
  await apply(plan, { inPlace: o.inPlace });
  return plan;
}

async function uninstall(confDir: string, o: { inPlace?: boolean; network?: string } = {}) {
  const plan = await planUninstall({ confDir, network: o.network });
  await apply(plan, { inPlace: o.inPlace });
  return plan;
}

for (const inPlace of [false, true]) {
  Deno.test(`symlinked conflist (${inPlace ? "in place" : "rename"}): the target is edited, the link kept; uninstall restores the target`, async () => {
    const { root, confDir, shared } = await layout();
    await Deno.writeTextFile(`${shared}/flannel.conflist`, FLANNEL);
    await Deno.chmod(`${shared}/flannel.conflist`, 0o640);
    await Deno.symlink("../shared/flannel.conflist", `${confDir}/10-flannel.conflist`);
    const before = await tree(root);

    const plan = await install(confDir, { inPlace });
    const edit = plan.changes.find((c) => c.role === "conflist");
    assert.equal(edit?.linkTarget, `${shared}/flannel.conflist`);
    assert.match(edit?.why ?? "", /through the symlink: .*shared\/flannel\.conflist is edited/);
    const after = await tree(root);
    assert.equal(after["net.d/10-flannel.conflist"], "link -> ../shared/flannel.conflist");
    assert.match(after["shared/flannel.conflist"], /^file 640 0:0 [^]*"type": "tsnproxy"/);
    assert.equal(
      after["net.d/10-flannel.conflist.tsnproxy-orig"],
      `file 640 0:0 ${FLANNEL}`,
      "the backup sits in the conf dir under the link's name",
    );
    assert.deepEqual(
      Object.keys(after).sort(),
      [...Object.keys(before), "net.d/10-flannel.conflist.tsnproxy-orig"].sort(),
      "no scratch file left next to the target",
    );
    assert.deepEqual((await planInstall({ confDir, entry: ENTRY })).changes, []);

    await uninstall(confDir, { inPlace });
    assert.deepEqual(await tree(root), before);
  });
}

Deno.test("symlinked single-plugin .conf: conversion is refused, nothing changes", async () => {
  const { root, confDir, shared } = await layout();
  await Deno.writeTextFile(`${shared}/mynet.conf`, MYNET);
  await Deno.symlink(`${shared}/mynet.conf`, `${confDir}/10-mynet.conf`);
  const before = await tree(root);
  await assert.rejects(planInstall({ confDir, entry: ENTRY }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /10-mynet\.conf is a symlink to .*shared\/mynet\.conf/);
    assert.match(e.message, /would replace the link with a regular file/);
    assert.match(e.hint, /convert .*mynet\.conf into a \.conflist and link that/);
    return true;
  });
  assert.deepEqual(await tree(root), before);
});

Deno.test("a .conf whose .conflist name is taken by a symlink (even a dangling one) is not converted", async () => {
  const { root, confDir } = await layout();
  await Deno.writeTextFile(`${confDir}/10-mynet.conf`, MYNET);
  await Deno.symlink("../shared/nothing", `${confDir}/10-mynet.conflist`);
  const before = await tree(root);
  await assert.rejects(
    planInstall({ confDir, entry: ENTRY }),
    /must become .*10-mynet\.conflist, but that file already exists and is not tsnproxy's/,
  );
  assert.deepEqual(await tree(root), before);
});

Deno.test("apply refuses when a planned symlink was replaced (or a file became a symlink)", async () => {
  const { confDir, shared } = await layout();
  await Deno.writeTextFile(`${shared}/flannel.conflist`, FLANNEL);
  await Deno.symlink(`${shared}/flannel.conflist`, `${confDir}/10-flannel.conflist`);
  const viaLink = await planInstall({ confDir, entry: ENTRY });
  await Deno.remove(`${confDir}/10-flannel.conflist`);
  await Deno.writeTextFile(`${confDir}/10-flannel.conflist`, FLANNEL); // same bytes, no link
  await assert.rejects(apply(viaLink), /10-flannel\.conflist changed since the plan/);
  const onFile = await planInstall({ confDir, entry: ENTRY });
  await Deno.remove(`${confDir}/10-flannel.conflist`);
  await Deno.symlink(`${shared}/flannel.conflist`, `${confDir}/10-flannel.conflist`);
  await assert.rejects(apply(onFile), /changed since the plan/);
  assert.equal(await Deno.readTextFile(`${shared}/flannel.conflist`), FLANNEL);
});

Deno.test("two symlinks to one file are one network, not an ambiguity", async () => {
  const { confDir, shared } = await layout();
  await Deno.writeTextFile(`${shared}/flannel.conflist`, FLANNEL);
  await Deno.symlink(`${shared}/flannel.conflist`, `${confDir}/10-flannel.conflist`);
  await Deno.symlink(`${shared}/flannel.conflist`, `${confDir}/20-flannel.conflist`);
  const d = await discover(confDir, { network: "cbr0" });
  assert.equal(d.doc.path, `${confDir}/10-flannel.conflist`);
  assert.equal(d.linkTarget, `${shared}/flannel.conflist`);
});

Deno.test("FIFO, socket-like and directory entries are never opened: skipped with a note", async () => {
  const { root, confDir, shared } = await layout();
  // Sorts first: libcni would try to read it (and block); tsnproxy must not.
  await run(["mkfifo", `${confDir}/05-pipe.conflist`]);
  // A symlink to a FIFO outside, a symlink to a directory, and a real directory.
  await run(["mkfifo", `${shared}/pipe`]);
  await Deno.symlink(`${shared}/pipe`, `${confDir}/06-to-pipe.conf`);
  await Deno.symlink(shared, `${confDir}/07-to-dir.conflist`);
  await Deno.mkdir(`${confDir}/08-dir.conflist`);
  await Deno.writeTextFile(`${confDir}/10-flannel.conflist`, FLANNEL);
  const before = await tree(root);
  // A regression that opens a FIFO blocks forever: open the write end to release the reader.
  let hung = false;
  const watchdog = setTimeout(() => {
    hung = true;
    for (const p of [`${confDir}/05-pipe.conflist`, `${shared}/pipe`]) {
      Deno.open(p, { write: true }).then((f) => f.close(), () => {});
    }
  }, 20_000);
  try {
    const d = await discover(confDir);
    assert.equal(d.doc.path, `${confDir}/10-flannel.conflist`);
    const reasons = Object.fromEntries(
      d.skipped.map((s) => [s.path.slice(confDir.length + 1), s.reason]),
    );
    assert.deepEqual(Object.keys(reasons), [
      "05-pipe.conflist",
      "06-to-pipe.conf",
      "07-to-dir.conflist",
    ]);
    assert.match(
      reasons["05-pipe.conflist"],
      /^a FIFO, not a regular file \(not opened\); it sorts before 10-flannel\.conflist/,
    );
    assert.match(reasons["06-to-pipe.conf"], /^a symlink to a FIFO \(.*shared\/pipe\)/);
    assert.match(reasons["07-to-dir.conflist"], /^a symlink to a directory/);

    const plan = await install(confDir);
    assert.ok(
      plan.warnings.some((w) => /skipped .*05-pipe\.conflist: a FIFO/.test(w)),
      plan.warnings.join("\n"),
    );
    const un = await planUninstall({ confDir, network: "cbr0" });
    await apply(un);
    assert.deepEqual(await tree(root), before);
    // Only special files: "no config", naming them.
    await Deno.remove(`${confDir}/10-flannel.conflist`);
    await assert.rejects(discover(confDir), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.match(e.message, /skipped 05-pipe\.conflist: a FIFO/);
      return true;
    });
  } finally {
    clearTimeout(watchdog);
  }
  assert.equal(hung, false, "a FIFO was opened");
});

Deno.test("dangling symlink first: the runtime cannot load it either, an error names it", async () => {
  const { confDir } = await layout();
  await Deno.symlink("../shared/gone.conflist", `${confDir}/05-gone.conflist`);
  await Deno.writeTextFile(`${confDir}/10-flannel.conflist`, FLANNEL);
  await assert.rejects(
    discover(confDir),
    /05-gone\.conflist is a dangling symlink \(to \.\.\/shared\/gone\.conflist\)/,
  );
  // Selecting the network by name skips it.
  assert.equal(
    (await discover(confDir, { network: "cbr0" })).doc.path,
    `${confDir}/10-flannel.conflist`,
  );
});

Deno.test(".conf converted to .conflist keeps the original's mode and owner; uninstall restores them", async () => {
  const { root, confDir } = await layout();
  const conf = `${confDir}/10-mynet.conf`;
  await Deno.writeTextFile(conf, MYNET);
  await Deno.chown(conf, 1234, 5678);
  await Deno.chmod(conf, 0o640);
  const before = await tree(root);
  await install(confDir);
  const after = await tree(root);
  assert.match(after["net.d/10-mynet.conflist"], /^file 640 1234:5678 /);
  assert.equal(after["net.d/10-mynet.conf.tsnproxy-orig"], `file 640 1234:5678 ${MYNET}`);
  assert.equal(after["net.d/10-mynet.conf"], undefined);
  await uninstall(confDir);
  assert.deepEqual(await tree(root), before);
});

Deno.test("a conflist rewritten by rename keeps its mode and owner", async () => {
  const { root, confDir } = await layout();
  const path = `${confDir}/10-flannel.conflist`;
  await Deno.writeTextFile(path, FLANNEL);
  await Deno.chown(path, 1234, 5678);
  await Deno.chmod(path, 0o600);
  const before = await tree(root);
  await install(confDir);
  assert.match((await tree(root))["net.d/10-flannel.conflist"], /^file 600 1234:5678 .*/);
  await uninstall(confDir);
  assert.deepEqual(await tree(root), before);
});

Deno.test("a config that is not UTF-8 is refused before anything is written", async () => {
  const { root, confDir } = await layout();
  const bytes = new TextEncoder().encode(FLANNEL.replace("cbr0", "cbr0-\u00e9"));
  const at = bytes.indexOf(0xc3);
  bytes[at] = 0xe9; // Latin-1 é: valid for Go (read as U+FFFD), not UTF-8
  bytes[at + 1] = 0x20;
  await Deno.writeFile(`${confDir}/10-flannel.conflist`, bytes);
  const before = await tree(root);
  await assert.rejects(planInstall({ confDir, entry: ENTRY }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(
      e.message,
      new RegExp(`10-flannel\\.conflist: not valid UTF-8 \\(byte offset ${at}\\)`),
    );
    assert.match(e.hint, /UTF-8/);
    return true;
  });
  assert.deepEqual(await tree(root), before);
});

Deno.test("CRLF files get CRLF lines and come back byte for byte", async () => {
  const { root, confDir } = await layout();
  for (const [name, text] of [["10-flannel.conflist", FLANNEL], ["20-mynet.conf", MYNET]]) {
    const dir = `${confDir}/${name.slice(0, 2)}`;
    await Deno.mkdir(dir);
    await Deno.writeTextFile(`${dir}/${name}`, text.replaceAll("\n", "\r\n"));
  }
  const before = await tree(root);
  for (const sub of ["10", "20"]) {
    const dir = `${confDir}/${sub}`;
    await install(dir);
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".conflist")) continue;
      const text = await Deno.readTextFile(`${dir}/${e.name}`);
      assert.match(text, /"type": "tsnproxy"/);
      assert.doesNotMatch(text, /[^\r]\n/, `${e.name} has a bare LF:\n${JSON.stringify(text)}`);
    }
    await uninstall(dir);
  }
  assert.deepEqual(await tree(root), before);
});

Deno.test("libcni 1.3 plugin directory <conf dir>/<network>/: warned that tsnproxy is not last", async () => {
  const { confDir } = await layout();
  await Deno.writeTextFile(`${confDir}/10-flannel.conflist`, FLANNEL);
  await Deno.mkdir(`${confDir}/cbr0`);
  await Deno.writeTextFile(`${confDir}/cbr0/50-extra.conf`, '{"type":"bandwidth"}');
  const plan = await planInstall({ confDir, entry: ENTRY });
  assert.ok(
    plan.warnings.some((w) =>
      /cbr0\/ holds plugin files \(50-extra\.conf\): libcni 1\.3 .*loadOnlyInlinedPlugins/.test(w)
    ),
    plan.warnings.join("\n"),
  );
  // Opted out: no warning.
  await Deno.writeTextFile(
    `${confDir}/10-flannel.conflist`,
    FLANNEL.replace('"name": "cbr0",', '"name": "cbr0",\n  "loadOnlyInlinedPlugins": true,'),
  );
  const quiet = await planInstall({ confDir, entry: ENTRY });
  assert.ok(!quiet.warnings.some((w) => /holds plugin files/.test(w)), quiet.warnings.join("\n"));
  // A chain kept only in plugin files cannot be extended inline.
  await Deno.writeTextFile(
    `${confDir}/10-flannel.conflist`,
    '{"cniVersion":"1.0.0","name":"cbr0"}',
  );
  await assert.rejects(
    planInstall({ confDir, entry: ENTRY }),
    /missing "plugins" \(tsnproxy chains itself into the inline list/,
  );
});
