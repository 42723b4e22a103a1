/**
 * `deno task bundle`: bundles the CNI path (src/cni/main.ts and everything it can import) into
 * build/cni.js, and writes build/cni.json, the stamp src/cni/entry.ts checks before it lets the
 * plugin run the bundle. Skipped when the stamp still matches the sources.
 *
 * The sources are what `deno info` lists for src/cni/main.ts (dynamic and type-only imports
 * included: listing too much only makes the bundle go stale sooner), plus deno.json and this
 * script. The bundle is written under a temporary name and renamed, then the stamp: a
 * half-written bundle is never stamped.
 *
 * What main.ts loads before the bundle (the hand-off, src/cni/handoff.ts, and the modules it
 * imports, and src/cni/entry.ts) stays out of it: the bundle imports those modules by their
 * paths relative to build/, which the plugin process has loaded already, so they are neither
 * loaded nor run twice (their code cost the bundle's import ~0.25 ms, measured) and the
 * hand-off and the verbs share one instance of each (the socket client's libc binding).
 */
import { type BundleStamp, cniEntry, STAMP_PATH } from "../src/cni/entry.ts";

const rootUrl = new URL("..", import.meta.url);
const root = rootUrl.pathname;
const ENTRY = "src/cni/main.ts";
const HANDOFF = "src/cni/handoff.ts";
const ENTRY_CHOICE = "src/cni/entry.ts";
const BUNDLE = "build/cni.js";

function fail(msg: string): never {
  console.error(`bundle_cni: ${msg}`);
  Deno.exit(1);
}

async function deno(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  if (!out.success) fail(`deno ${args[0]} failed:\n${text.decode(out.stderr)}`);
  return text.decode(out.stdout);
}

/** Checkout-relative paths of the local modules `entry` reaches. */
async function modulesOf(entry: string): Promise<string[]> {
  const info = JSON.parse(await deno(["info", "--json", "--config", "deno.json", entry])) as {
    modules: Array<{ specifier: string }>;
  };
  const local = info.modules
    .map((m) => m.specifier)
    .filter((s) => s.startsWith(rootUrl.href) && !s.includes("/node_modules/"))
    .map((s) => decodeURIComponent(s.slice(rootUrl.href.length)));
  if (!local.includes(entry)) fail(`deno info did not list ${entry}`);
  return local;
}

/** Checkout-relative paths of the local modules the CNI entry reaches. */
async function sources(): Promise<string[]> {
  return [...await modulesOf(ENTRY), "deno.json", "scripts/bundle_cni.ts"].sort();
}

/** What main.ts loads before the bundle: left out of it (see the header). */
async function loadedBefore(): Promise<string[]> {
  return [...new Set([...await modulesOf(HANDOFF), ...await modulesOf(ENTRY_CHOICE)])].sort();
}

function fileEntry(path: string): [string, number, number] {
  const st = Deno.statSync(root + path);
  return [path, st.mtime?.getTime() ?? 0, st.size];
}

const current = cniEntry(rootUrl);
if (current.kind === "bundle" && !Deno.args.includes("--force")) Deno.exit(0);

const inputs = await sources();
const external = await loadedBefore();
await Deno.mkdir(root + "build", { recursive: true });
const tmp = `${root}${BUNDLE}.tmp`;
await deno([
  "bundle",
  "--quiet",
  "--platform",
  "deno",
  "--config",
  "deno.json",
  ...external.flatMap((m) => ["--external", root + m]),
  "--output",
  tmp,
  ENTRY,
]);
// The bundler names external modules by absolute path: relative to build/ instead, so that a
// moved checkout's bundle imports its own modules.
let text = await Deno.readTextFile(tmp);
text = text.replaceAll(`from "${root}`, 'from "../');
if (/\bimport\s*\(/.test(text)) {
  // Every dynamic import must have been inlined: the bundle is used as a single file.
  fail(`${tmp} still imports modules dynamically`);
}
for (const m of text.matchAll(/^import\b.*\bfrom "([^"]+)";$/gm)) {
  if (!m[1].startsWith("../") || !external.includes(m[1].slice(3))) {
    fail(`${tmp} imports ${m[1]}, which main.ts does not load before it`);
  }
}
await Deno.writeTextFile(tmp, text);
await Deno.rename(tmp, root + BUNDLE);
const stamp: BundleStamp = {
  bundle: BUNDLE,
  files: [...inputs.map(fileEntry), fileEntry(BUNDLE)],
};
const json = `{"bundle": ${JSON.stringify(stamp.bundle)}, "files": [\n` +
  stamp.files.map((f) => `  ${JSON.stringify(f)}`).join(",\n") + "\n]}\n";
await Deno.writeTextFile(`${root}${STAMP_PATH}.tmp`, json);
await Deno.rename(`${root}${STAMP_PATH}.tmp`, root + STAMP_PATH);
console.error(
  `bundle_cni: ${ENTRY} and ${inputs.length - 3} more modules -> ${BUNDLE} ` +
    `(${Math.round(text.length / 1024)} KiB; ${current.reason})`,
);
