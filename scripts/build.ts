/**
 * `deno task build`: the single static executable dist/tsnproxy.
 *
 * `deno compile` appends the module graph (BPF objects included, via src/bpf/objects.gen.ts)
 * to a `denort` base binary, which deno normally downloads. Air-gapped build farms mirror it:
 * set DENORT_BIN to that file. Without it we fail up front instead of hanging on a download.
 *
 * Cross builds (deploy/Containerfile builds amd64 and arm64 on one machine): TSNPROXY_TARGET
 * names the target (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu) and DENORT_BIN must
 * be denort for THAT target. The module graph, the BPF objects included, is the same for both.
 * A foreign binary cannot be run here: its ELF header is checked instead, and the image runs
 * `tsnproxy version` on its own architecture.
 */
const root = new URL("..", import.meta.url).pathname;
const denortBin = Deno.env.get("DENORT_BIN");
const version = Deno.version.deno;
const host = `${Deno.build.arch}-unknown-linux-gnu`;
/** ELF e_machine of each target. */
const TARGETS: Record<string, number> = {
  "x86_64-unknown-linux-gnu": 0x3e,
  "aarch64-unknown-linux-gnu": 0xb7,
};
const target = Deno.env.get("TSNPROXY_TARGET") || host;

function fail(msg: string): never {
  console.error(`build: ${msg}`);
  Deno.exit(1);
}

if (!(target in TARGETS)) {
  fail(`TSNPROXY_TARGET=${target} is not one of ${Object.keys(TARGETS).join(", ")}`);
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
    "--target",
    target,
    "--output",
    out,
    `${root}main.ts`,
  ],
  env: { DENORT_BIN: denortBin },
  stdout: "inherit",
  stderr: "inherit",
}).output();
if (!compile.success) fail("deno compile failed (see above)");

// The denort must be the target's: a wrong one gives a binary for another machine.
const head = new Uint8Array(20);
const f = await Deno.open(out);
await f.read(head);
f.close();
const machine = new DataView(head.buffer).getUint16(18, true);
if (head[0] !== 0x7f || machine !== TARGETS[target]) {
  fail(`${out} is not a ${target} executable (ELF machine 0x${machine.toString(16)}): DENORT_BIN?`);
}
if (target !== host) {
  console.error(`build: ${out} for ${target} (cross build: run \`tsnproxy version\` there)`);
  Deno.exit(0);
}

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
