/**
 * arm64: the datapath's BPF objects (compiled once, architecture-independent bytecode) load,
 * pass the verifier, are pinned and attached (the restorer, clsact) on Debian 12's arm64 kernel,
 * and the GC timer program runs there, through Debian's arm64 libbpf
 * and the arm64 deno from npm (tests/vm/guest/arm64_datapath.ts), in qemu-system-aarch64 under
 * software emulation. Selected by TSNPROXY_VM_KERNELS when set (e.g. "6.1,6.12,6.1-arm64").
 */
import assert from "node:assert/strict";
import { runGuest } from "./_vm.ts";
import { ensureImage } from "../../scripts/vm/images.ts";
import { versionInfo } from "../../src/build_info.ts";

interface Arm64 {
  arch: string;
  kernel: string;
  deno: string;
  bpfObjects: string;
  api: string;
  programs: string[];
  restorer: { api: string; direction: string } | null;
  sent: number;
  delta: Record<string, number>;
  uninstallCode: number;
  pinsLeft: string[];
  installMs: number;
  totalMs: number;
}

function skipReason(): string | false {
  const only = Deno.env.get("TSNPROXY_VM_KERNELS");
  if (only && !only.split(/[ ,]+/).includes("6.1-arm64")) {
    return `TSNPROXY_VM_KERNELS=${only} leaves out 6.1-arm64`;
  }
  try {
    new Deno.Command("qemu-system-aarch64", { args: ["--version"], stdout: "null" }).outputSync();
  } catch {
    return "qemu-system-aarch64 is not installed (apt-get install qemu-system-arm; scripts/setup.sh does)";
  }
  return false;
}
const skip = skipReason();
if (skip) console.log(`ignored: vm 6.1-arm64: ${skip}`);

Deno.test({
  name: "vm 6.1-arm64: the BPF objects load, attach and run on an arm64 kernel with the arm64 deno",
  ignore: skip !== false,
  fn: async () => {
    const { result: r } = await runGuest<Arm64>("6.1-arm64", "arm64_datapath.ts", "arm64", {
      timeoutSec: 600,
    });
    console.log(
      `arm64 guest: ${r.kernel}, install ${(r.installMs / 1000).toFixed(1)} s, ` +
        `guest program ${(r.totalMs / 1000).toFixed(1)} s, counters ${JSON.stringify(r.delta)}`,
    );
    assert.equal(r.arch, "aarch64");
    assert.match(r.kernel, /^6\.1\.\d+-\d+-arm64$/);
    assert.equal(r.deno, Deno.version.deno);
    assert.equal(r.bpfObjects, versionInfo().bpfObjectsSha256, "the same BPF objects as amd64");
    assert.equal(r.api, "clsact", "6.1 has no tcx");
    assert.deepEqual(r.programs.sort(), ["tsnp_gc_start", "tsnp_restore", "tsnp_save"]);
    assert.deepEqual(r.restorer, { api: "clsact", direction: "egress" });
    // The GC timer program ran (BPF code executing on arm64); the restorer on lo sees only
    // the node's own packets, which it leaves alone without counting (no saver, no pod here).
    assert.ok(r.delta.gcRuns > 0, "the GC timer ran");
    assert.equal(r.delta.restored + r.delta.notFound + r.delta.expired, 0);
    assert.equal(r.uninstallCode, 0);
    assert.deepEqual(r.pinsLeft, []);
  },
});

Deno.test({
  name: "bpf objects: compiled against arm64's kernel headers they are the same bytes",
  ignore: skip !== false,
  fn: async () => {
    // The only headers from an architecture's include dir are asm/*.h (types, bitsperlong):
    // the same for every 64-bit little-endian arch. Proven on the bytes: clang with the
    // arm64 userland's headers (Debian's linux-libc-dev:arm64) against build/bpf/*.o.
    const img = await ensureImage("6.1-arm64");
    const inc = `${img.userland!.usr}/include/aarch64-linux-gnu`;
    const root = new URL("../../", import.meta.url).pathname;
    const out = await Deno.makeTempDir({ prefix: "tsnp-bpf-arm64-" });
    try {
      const sources = [...Deno.readDirSync(`${root}bpf`)].filter((e) => e.name.endsWith(".c"));
      assert.ok(sources.length >= 3);
      for (const { name } of sources) {
        const obj = name.replace(/\.c$/, ".o");
        // scripts/build_bpf.ts's flags, the arm64 include dir instead of the host's.
        const r = await new Deno.Command("clang", {
          args: [
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-Wall",
            "-Werror",
            `-I${inc}`,
            `-I${root}bpf`,
            "-c",
            `${root}bpf/${name}`,
            "-o",
            `${out}/${obj}`,
          ],
          cwd: root,
          stderr: "piped",
        }).output();
        assert.ok(r.success, new TextDecoder().decode(r.stderr));
        assert.deepEqual(
          Deno.readFileSync(`${out}/${obj}`),
          Deno.readFileSync(`${root}build/bpf/${obj}`),
          `${obj}: arm64 headers changed the object`,
        );
      }
    } finally {
      Deno.removeSync(out, { recursive: true });
    }
  },
});
