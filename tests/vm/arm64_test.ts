/**
 * arm64: the datapath's BPF objects (compiled once, architecture-independent bytecode) load,
 * pass the verifier and are pinned on Debian 12's arm64 kernel through Debian's arm64 libbpf
 * and the arm64 deno from npm, in qemu-system-aarch64 under software emulation; the plugin
 * attaches pods there and real packets go through save, admit and restore with either carrier
 * (tests/vm/guest/arm64_datapath.ts). Selected by TSNPROXY_VM_KERNELS when set (e.g.
 * "6.1,6.12,6.1-arm64").
 */
import assert from "node:assert/strict";
import { runGuest, selectedKernels } from "./_vm.ts";
import { installed, run } from "../lib/run.ts";
import { ensureImage } from "../../scripts/vm/images.ts";
import { bpfCflags } from "../../scripts/build_bpf.ts";
import { versionInfo } from "../../src/build_info.ts";

interface Phase {
  /** Counters that moved (tsnp_stats), by name. */
  delta: Record<string, number>;
  /** Packets per prio class on tsn0 ("1:1" band 0 .. "1:3" band 2). */
  classes: Record<string, number>;
}

interface Arm64 {
  arch: string;
  kernel: string;
  deno: string;
  bpfObjects: string;
  programs: string[];
  loaded: string[];
  reloaded: string[];
  nodeCarrier: string[];
  restorer: { api: string; direction: string } | null;
  attachedApi: string;
  carriers: Record<string, string>;
  sent: number;
  tag: Phase;
  lost: Phase;
  stage: Phase;
  unpinned: number;
  pinsLeft: string[];
  timings: Record<string, number>;
  totalMs: number;
}

async function skipReason(): Promise<string | false> {
  if (!selectedKernels().includes("6.1-arm64")) {
    return `TSNPROXY_VM_KERNELS=${Deno.env.get("TSNPROXY_VM_KERNELS")} leaves out 6.1-arm64`;
  }
  if (!(await installed("qemu-system-aarch64"))) {
    return "qemu-system-aarch64 is not installed (apt-get install qemu-system-arm; scripts/setup.sh does)";
  }
  return false;
}
const skip = await skipReason();
if (skip) console.log(`ignored: vm 6.1-arm64: ${skip}`);

Deno.test({
  name: "vm 6.1-arm64: the datapath loads and carries real packets on an arm64 kernel",
  ignore: skip !== false,
  fn: async () => {
    const { result: r } = await runGuest<Arm64>("6.1-arm64", "arm64_datapath.ts", "arm64", {
      timeoutSec: 600,
    });
    console.log(
      `arm64 guest: ${r.kernel}, guest program ${(r.totalMs / 1000).toFixed(1)} s ` +
        `${JSON.stringify(r.timings)}\n  tag ${JSON.stringify(r.tag)}\n  stage ` +
        JSON.stringify(r.stage),
    );
    assert.equal(r.arch, "aarch64");
    assert.match(r.kernel, /^6\.1\.\d+-\d+-arm64$/);
    assert.equal(r.deno, Deno.version.deno);
    assert.equal(r.bpfObjects, versionInfo().bpfObjectsSha256, "the same BPF objects as amd64");
    assert.deepEqual(r.programs.sort(), ["tsnp_admit", "tsnp_restore", "tsnp_save"]);
    assert.deepEqual(r.loaded.sort(), ["admit:pinned", "restore:pinned", "save:pinned"]);
    assert.deepEqual(r.reloaded.sort(), ["admit:kept", "restore:kept", "save:kept"]);
    assert.deepEqual(r.nodeCarrier, ["tag", "stage"]);
    assert.equal(r.attachedApi, "clsact", "6.1 has no tcx");
    assert.deepEqual(r.restorer, { api: "clsact", direction: "egress" });
    // `carrier: table` forced after pod 0's ADD: install moved pod 0 off the tag too.
    assert.deepEqual(r.carriers, { hv0: "stage", hv1: "stage" });

    // The tag: SO_PRIORITY 2 saved in the pod, admitted on hv0, carried in tc_index, put back
    // at tsn0's egress: every packet in band 2, none left at the forwarded priority 0.
    const n = r.sent;
    assert.deepEqual(r.tag.delta, {
      admitted: n,
      admitRequested: n,
      tagged: n,
      restoredTag: n,
    });
    assert.deepEqual(r.tag.classes, { "1:1": 0, "1:2": 0, "1:3": n });
    // The control: the same traffic from a pod tsnproxy never attached to loses its priority.
    assert.deepEqual(r.lost.delta, {});
    assert.deepEqual(r.lost.classes, { "1:1": 0, "1:2": n, "1:3": 0 });

    // The stage: priority 6 and 0x10001 (the latter through the saver's request stage) staged
    // by admit per CPU and read back by the restorer: all in band 0.
    assert.deepEqual(r.stage.delta, {
      admitted: 2 * n,
      admitRequested: 2 * n,
      staged: 2 * n,
      restoredStage: 2 * n,
    });
    assert.deepEqual(r.stage.classes, { "1:1": 2 * n, "1:2": 0, "1:3": 0 });

    assert.ok(r.unpinned > 0);
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
        const r = await run(
          ["clang", ...bpfCflags(inc), "-c", `${root}bpf/${name}`, "-o", `${out}/${obj}`],
          { cwd: root, allowFail: true },
        );
        assert.equal(r.code, 0, r.stderr);
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
