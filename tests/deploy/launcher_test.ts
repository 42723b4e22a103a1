/**
 * scripts/tsnproxy run as root refuses a checkout whose code is not root's (whoever owns it
 * could change what root runs), with a clear message, and a CNI error JSON when a runtime
 * calls it; it runs a root-owned checkout, and any checkout for a non-root user. A throw-away
 * checkout: the real launcher, a main.ts that echoes, and the real deno binary.
 */
import assert from "node:assert/strict";
import { run } from "../lib/run.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const NOBODY = 65534;

const notRoot = Deno.uid() !== 0 ? "needs root (chown and a root launcher)" : false;
if (notRoot) console.log(`ignored: launcher ownership: ${notRoot}`);

async function fakeCheckout(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tsnp-launcher-" });
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/scripts`);
  await Deno.copyFile(`${ROOT}scripts/tsnproxy`, `${dir}/scripts/tsnproxy`);
  await Deno.chmod(`${dir}/scripts/tsnproxy`, 0o755);
  await Deno.writeTextFile(`${dir}/main.ts`, 'console.log("ran " + Deno.args.join(" "));\n');
  await Deno.writeTextFile(`${dir}/deno.json`, "{}\n");
  await Deno.mkdir(`${dir}/src`);
  await Deno.mkdir(`${dir}/tools/deno/node_modules/deno`, { recursive: true });
  await Deno.symlink(
    Deno.realPathSync(`${ROOT}tools/deno/node_modules/deno/deno`),
    `${dir}/tools/deno/node_modules/deno/deno`,
  );
  return dir;
}

async function launch(
  dir: string,
  opts: { env?: Record<string, string>; asNobody?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [`${dir}/scripts/tsnproxy`, "version"];
  const cmd = opts.asNobody
    ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", ...argv]
    : argv;
  return await run(cmd, {
    env: { PATH: "/usr/bin:/bin", ...opts.env },
    clearEnv: true,
    allowFail: true,
  });
}

Deno.test({
  name: "launcher: as root it refuses code not owned by root, and runs root-owned code",
  ignore: notRoot !== false,
  fn: async () => {
    const dir = await fakeCheckout();
    try {
      const ok = await launch(dir);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), "ran version");

      for (const target of ["main.ts", "src", ".", "tools/deno/node_modules"]) {
        const path = `${dir}/${target}`.replace(/\/\.$/, "");
        Deno.chownSync(path, NOBODY, NOBODY);
        const r = await launch(dir);
        assert.equal(r.code, 1, `${target} owned by nobody: ${r.stdout}`);
        assert.equal(r.stdout, "", "nothing of the checkout ran");
        assert.match(
          r.stderr,
          new RegExp(`refusing to run ${path} as root: it is not owned by root`),
        );
        // As a CNI plugin: the runtime gets an error JSON on stdout.
        const cni = await launch(dir, { env: { CNI_COMMAND: "ADD" } });
        assert.equal(cni.code, 1);
        const json = JSON.parse(cni.stdout);
        assert.equal(json.code, 102);
        assert.match(json.msg, /not owned by root/);
        // Not root: the owner runs its own checkout.
        if (target === "main.ts") {
          Deno.chownSync(dir, NOBODY, NOBODY);
          const mine = await launch(dir, { asNobody: true, env: { HOME: dir } });
          assert.equal(mine.stdout.trim(), "ran version", mine.stderr);
          Deno.chownSync(dir, 0, 0);
        }
        Deno.chownSync(path, 0, 0);
        assert.equal((await launch(dir)).code, 0);
      }

      // A built binary is checked the same way before it is exec'd.
      await Deno.mkdir(`${dir}/dist`);
      await Deno.writeTextFile(`${dir}/dist/tsnproxy`, '#!/bin/sh\necho binary "$@"\n');
      await Deno.chmod(`${dir}/dist/tsnproxy`, 0o755);
      assert.equal((await launch(dir)).stdout.trim(), "binary version");
      Deno.chownSync(`${dir}/dist/tsnproxy`, NOBODY, NOBODY);
      const r = await launch(dir);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /refusing to run .*\/dist\/tsnproxy as root/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
