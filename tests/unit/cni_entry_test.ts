/** src/cni/entry.ts: the bundle runs only while its stamp matches every file it lists. */
import assert from "node:assert/strict";
import { type BundleStamp, cniEntry, STAMP_PATH } from "../../src/cni/entry.ts";

/** A throwaway checkout root with two sources, a bundle and a matching stamp. */
function fixture(): { root: URL; dir: string; stamp: BundleStamp } {
  const dir = Deno.makeTempDirSync({ prefix: "tsnp-entry-" });
  Deno.mkdirSync(`${dir}/src/cni`, { recursive: true });
  Deno.mkdirSync(`${dir}/build`);
  Deno.writeTextFileSync(`${dir}/src/cni/main.ts`, "export const a = 1;\n");
  Deno.writeTextFileSync(`${dir}/src/log.ts`, "export const b = 2;\n");
  Deno.writeTextFileSync(`${dir}/build/cni.js`, "export function runCni() { return 0; }\n");
  const files = ["src/cni/main.ts", "src/log.ts", "build/cni.js"].map((p) => {
    const st = Deno.statSync(`${dir}/${p}`);
    return [p, st.mtime!.getTime(), st.size] as [string, number, number];
  });
  const stamp = { bundle: "build/cni.js", files };
  Deno.writeTextFileSync(`${dir}/${STAMP_PATH}`, JSON.stringify(stamp));
  return { root: new URL(`file://${dir}/`), dir, stamp };
}

function withFixture(fn: (f: ReturnType<typeof fixture>) => void): void {
  const f = fixture();
  try {
    fn(f);
  } finally {
    Deno.removeSync(f.dir, { recursive: true });
  }
}

Deno.test("cni entry: a matching stamp selects the bundle", () => {
  withFixture(({ root, dir }) => {
    const e = cniEntry(root);
    assert.equal(e.kind, "bundle");
    assert.equal(e.specifier, `file://${dir}/build/cni.js`);
    assert.equal(e.reason, undefined);
  });
});

Deno.test("cni entry: an edited source, a rewritten bundle or a missing file selects the modules", () => {
  withFixture(({ root, dir }) => {
    // Same size, newer mtime: an edit that keeps the length still counts.
    const later = new Date(Date.now() + 5000);
    Deno.utimeSync(`${dir}/src/log.ts`, later, later);
    const e = cniEntry(root);
    assert.equal(e.kind, "modules");
    assert.match(e.specifier, /\/src\/cni\/main\.ts$/);
    assert.equal(e.reason, "src/log.ts changed");
  });
  withFixture(({ root, dir }) => {
    const st = Deno.statSync(`${dir}/build/cni.js`);
    Deno.writeTextFileSync(`${dir}/build/cni.js`, "export function runCni() { return 1; }\n// x\n");
    Deno.utimeSync(`${dir}/build/cni.js`, st.atime!, st.mtime!); // same mtime, other size
    assert.deepEqual(
      { kind: cniEntry(root).kind, reason: cniEntry(root).reason },
      { kind: "modules", reason: "build/cni.js changed" },
    );
  });
  withFixture(({ root, dir }) => {
    Deno.removeSync(`${dir}/src/cni/main.ts`);
    assert.equal(cniEntry(root).reason, "src/cni/main.ts is missing");
  });
});

Deno.test("cni entry: no stamp, a malformed one, or one that does not cover its bundle", () => {
  withFixture(({ root, dir, stamp }) => {
    Deno.removeSync(`${dir}/${STAMP_PATH}`);
    assert.deepEqual(cniEntry(root).reason, `no ${STAMP_PATH}`);
    Deno.writeTextFileSync(`${dir}/${STAMP_PATH}`, "{not json");
    assert.equal(cniEntry(root).reason, `${STAMP_PATH} is malformed`);
    const uncovered = { ...stamp, files: stamp.files.filter(([p]) => p !== stamp.bundle) };
    Deno.writeTextFileSync(`${dir}/${STAMP_PATH}`, JSON.stringify(uncovered));
    assert.equal(cniEntry(root).reason, `${STAMP_PATH} is malformed`);
    assert.equal(cniEntry(root).kind, "modules");
  });
});

Deno.test("cni entry: TSNPROXY_CNI_BUNDLE=0 runs the modules even with a fresh bundle", () => {
  withFixture(({ root }) => {
    Deno.env.set("TSNPROXY_CNI_BUNDLE", "0");
    try {
      assert.deepEqual(
        { kind: cniEntry(root).kind, reason: cniEntry(root).reason },
        { kind: "modules", reason: "TSNPROXY_CNI_BUNDLE=0" },
      );
    } finally {
      Deno.env.delete("TSNPROXY_CNI_BUNDLE");
    }
    assert.equal(cniEntry(root).kind, "bundle");
  });
});
