/**
 * `deno task build`: the single static executable dist/tsnproxy.
 *
 * `deno compile` appends the module graph (BPF objects included, via src/bpf/objects.gen.ts)
 * to a `denort` base binary, which deno normally downloads. Air-gapped build farms mirror it:
 * set DENORT_BIN to that file. Without it we fail up front instead of hanging on a download.
 */
const root = new URL("..", import.meta.url).pathname;
const denortBin = Deno.env.get("DENORT_BIN");
const version = Deno.version.deno;
const target = `${Deno.build.arch}-unknown-linux-gnu`;

function fail(msg: string): never {
  console.error(`build: ${msg}`);
  Deno.exit(1);
}

if (!denortBin) {
  fail(
    `deno compile needs the denort ${version} base binary for ${target}, and this machine cannot ` +
      `download it. Set DENORT_BIN to a mirrored copy (denort-${target}.zip from the Deno ${version} ` +
      `release, unzipped), e.g. DENORT_BIN=/srv/mirror/denort-${version} deno task build`,
  );
}
try {
  const st = Deno.statSync(denortBin);
  if (!st.isFile || ((st.mode ?? 0) & 0o111) === 0) {
    fail(`DENORT_BIN=${denortBin} is not an executable file`);
  }
} catch (e) {
  if (e instanceof Deno.errors.NotFound) fail(`DENORT_BIN=${denortBin} does not exist`);
  throw e;
}

await Deno.mkdir(`${root}dist`, { recursive: true });
const out = `${root}dist/tsnproxy`;
const compile = await new Deno.Command(Deno.execPath(), {
  args: [
    "compile",
    "--no-check", // `deno task check` type-checks; compile only packages
    "--allow-all", // the same permissions scripts/tsnproxy grants under `deno run`
    "--config",
    `${root}deno.json`,
    // main.ts imports the CLI and the CNI code through non-literal specifiers (keeping each
    // out of the other's module graph), which compile cannot discover on its own. The binary
    // runs the CNI modules themselves: build/cni.js is for `deno run` (src/cni/entry.ts).
    "--include",
    `${root}src/cli.ts`,
    "--include",
    `${root}src/cni/main.ts`,
    "--output",
    out,
    `${root}main.ts`,
  ],
  env: { DENORT_BIN: denortBin },
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (!compile.success) fail("deno compile failed (see above)");

// The binary must run on its own: same version and datapath build as this checkout.
const probe = await new Deno.Command(out, {
  args: ["version", "--json"],
  stdout: "piped",
  stderr: "inherit",
}).output();
if (!probe.success) {
  fail(`${out} does not run: is DENORT_BIN really denort ${version} (not the deno CLI)?`);
}
const info = JSON.parse(new TextDecoder().decode(probe.stdout));
console.error(`build: ${out} ${info.version} (bpf ${String(info.bpfObjectsSha256).slice(0, 12)})`);
