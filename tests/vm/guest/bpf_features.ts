/**
 * Runs inside a test VM (tests/vm/bpf_features_test.ts): which BPF features this kernel has,
 * probed through the host's libbpf.so.1 (1.1, which predates tcx: raw attach type numbers).
 *   tcx:       bpf_link_create(prog, lo, BPF_TCX_EGRESS = 47) with a SCHED_CLS program
 *   clockTai:  bpf_skb_set_tstamp(skb, t, BPF_SKB_CLOCK_TAI = 2) run by BPF_PROG_TEST_RUN on
 *              an IPv4 frame; BPF_SKB_CLOCK_MONOTONIC = 1 is the control that must work
 *              everywhere (else the probe itself is broken).
 */
import { report } from "./report.ts";

const bpf = Deno.dlopen("libbpf.so.1", {
  bpf_prog_load: {
    parameters: ["i32", "buffer", "buffer", "buffer", "usize", "pointer"],
    result: "i32",
  },
  bpf_link_create: { parameters: ["i32", "i32", "i32", "pointer"], result: "i32" },
  bpf_prog_test_run_opts: { parameters: ["i32", "buffer"], result: "i32" },
});
const libc = Deno.dlopen("libc.so.6", {
  close: { parameters: ["i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
});
const strerror = (e: number) => {
  const p = libc.symbols.strerror(Math.abs(e));
  return p === null ? String(e) : Deno.UnsafePointerView.getCString(p);
};

const BPF_PROG_TYPE_SCHED_CLS = 3;
const BPF_TCX_EGRESS = 47;
const BPF_FUNC_skb_set_tstamp = 192;
const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");

/** struct bpf_insn: u8 code, u8 dst:4|src:4, s16 off, s32 imm. */
function insns(list: [code: number, dst: number, src: number, off: number, imm: number][]) {
  const buf = new Uint8Array(list.length * 8);
  const v = new DataView(buf.buffer);
  list.forEach(([code, dst, src, off, imm], i) => {
    v.setUint8(i * 8, code);
    v.setUint8(i * 8 + 1, (src << 4) | dst);
    v.setInt16(i * 8 + 2, off, true);
    v.setInt32(i * 8 + 4, imm, true);
  });
  return buf;
}
const MOV64_IMM = 0xb7, CALL = 0x85, EXIT = 0x95;

function load(name: string, prog: Uint8Array): number {
  return bpf.symbols.bpf_prog_load(
    BPF_PROG_TYPE_SCHED_CLS,
    cstr(name),
    cstr("GPL"),
    prog,
    BigInt(prog.length / 8),
    null,
  );
}

// --- tcx
const ok = load("tsnvm_ok", insns([[MOV64_IMM, 0, 0, 0, 0], [EXIT, 0, 0, 0, 0]]));
if (ok < 0) throw new Error(`bpf_prog_load: ${strerror(ok)}`);
const link = bpf.symbols.bpf_link_create(ok, 1, /* lo */ BPF_TCX_EGRESS, null);
const tcx = link >= 0 ? { works: true, result: "link fd" } : {
  works: false,
  result: `${-link} ${strerror(link)}`,
};
if (link >= 0) libc.symbols.close(link);
libc.symbols.close(ok);

// --- bpf_skb_set_tstamp(skb, 1000000, type): returns the helper's result as the retval
function setTstamp(type: number): { retval: number; errno?: string } {
  const fd = load(
    "tsnvm_tstamp",
    insns([
      [MOV64_IMM, 2, 0, 0, 1_000_000], // r2 = tstamp (r1 = skb already)
      [MOV64_IMM, 3, 0, 0, type], // r3 = tstamp_type
      [CALL, 0, 0, 0, BPF_FUNC_skb_set_tstamp],
      [EXIT, 0, 0, 0, 0],
    ]),
  );
  if (fd < 0) return { retval: NaN, errno: `load: ${strerror(fd)}` };
  // Ethernet (IPv4) + IPv4 header (UDP) + UDP header + payload
  const pkt = new Uint8Array(64);
  pkt.set([0x08, 0x00], 12);
  pkt.set([0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  pkt.set([0x23, 0x28, 0x23, 0x28, 0, 30, 0, 0], 34);
  // struct bpf_test_run_opts (libbpf 1.1): sz, data_in, data_out, data_size_in, ...; 80 bytes
  const opts = new Uint8Array(80);
  const v = new DataView(opts.buffer);
  v.setBigUint64(0, 80n, true);
  v.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(pkt))), true);
  v.setUint32(24, pkt.length, true);
  v.setInt32(60, 1, true); // repeat
  const rc = bpf.symbols.bpf_prog_test_run_opts(fd, opts);
  libc.symbols.close(fd);
  if (rc < 0) return { retval: NaN, errno: `test_run: ${strerror(rc)}` };
  return { retval: v.getInt32(56, true) };
}
const mono = setTstamp(1);
const tai = setTstamp(2);
const describe = (r: { retval: number; errno?: string }) =>
  r.errno ?? (r.retval === 0 ? "0" : `${r.retval} (${strerror(r.retval)})`);

const result = {
  kernel: Deno.osRelease(),
  tcx,
  skbSetTstampMono: { works: mono.retval === 0, result: describe(mono) },
  skbSetTstampTai: { works: tai.retval === 0, result: describe(tai) },
};
console.log(`BPF features on ${result.kernel}:`);
console.log(
  `  tcx attach (BPF_TCX_EGRESS=47)              ${tcx.works ? "yes" : "no"} (${tcx.result})`,
);
console.log(
  `  bpf_skb_set_tstamp CLOCK_MONOTONIC (control) ${
    result.skbSetTstampMono.works ? "yes" : "no"
  } (${result.skbSetTstampMono.result})`,
);
console.log(
  `  bpf_skb_set_tstamp BPF_SKB_CLOCK_TAI=2       ${
    result.skbSetTstampTai.works ? "yes" : "no"
  } (${result.skbSetTstampTai.result})`,
);
report("bpf-features", result);
