/**
 * Helper for crash_test.ts: rewrites the CNI config in `dir` forever (install, install with a
 * different entry, uninstall, ...) until it is SIGKILLed. Also rewrites `50-raw.conflist`
 * directly with writeFileAtomic, toggling a tsnproxy entry in and out.
 *
 *   deno run -A tests/install/crash_writer.ts <dir> rename|inplace
 */
import {
  apply,
  inject,
  parseCniDocument,
  planInstall,
  planUninstall,
  remove,
} from "../../src/install/conflist.ts";
import { writeFileAtomic } from "../../src/install/atomic.ts";

const [dir, mode] = Deno.args;
const inPlace = mode === "inplace";
const raw = `${dir}/50-raw.conflist`;
const hasRaw = await Deno.stat(raw).then(() => true, () => false);

function entry() {
  // Varying sizes make the file grow and shrink (the in-place padding path).
  return {
    type: "tsnproxy",
    tsnInterface: "tsn0",
    pad: "x".repeat(Math.floor(Math.random() * 400)),
  };
}

console.log("ready");
for (let i = 0;; i++) {
  const plan = i % 3 === 2
    ? await planUninstall({ confDir: dir })
    : await planInstall({ confDir: dir, entry: entry() });
  await apply(plan, { inPlace });
  if (hasRaw) {
    const doc = parseCniDocument(raw, await Deno.readTextFile(raw));
    const next = doc.plugins.some((p) => p.type === "tsnproxy")
      ? remove(doc).text
      : inject(doc, entry()).text;
    await writeFileAtomic(raw, next, { inPlace });
  }
}
