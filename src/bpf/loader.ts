/**
 * Loads and verifies the datapath once per node and pins it (see pins.ts for the layout).
 * Idempotent: a program already pinned by this build (same tag and release stamp) is kept, so
 * re-running install changes nothing; a different build of the same ABI replaces the pinned
 * program and keeps the maps (their state, the pods' entries, survives an upgrade). Pods
 * attached earlier keep running the program they were attached with until their DEL.
 */
import { libbpf } from "../ffi/libbpf.ts";
import { BpfTestRunOpts, SkBuff } from "../ffi/structs/bpf.ts";
import { decode, encode, type Values } from "../ffi/structs/layout.ts";
import { BpfObject } from "./object.ts";
import { objectBytes, OBJECTS_SHA256 } from "./objects.ts";
import { assertBpffs, PinLayout, PROGRAM_OBJECT, type ProgramRole, PROGRAMS } from "./pins.ts";
import { check, objPin, progInfo, readPinned } from "./sys.ts";
import { exists } from "../util/fs.ts";
import { addressOf } from "../ffi/open.ts";
import { type Release, releaseBytes, releaseOfProgram, releaseStamp } from "./release.ts";
import { VERSION } from "../version.ts";

export interface LoadOptions {
  bpffs: string;
  /** Report what would change without loading anything. */
  dryRun?: boolean;
}

export interface ProgramState {
  role: ProgramRole;
  id: number;
  tag: string;
  /** "kept" (already pinned, same tag), "pinned" (new) or "replaced" (different build). */
  action: "kept" | "pinned" | "replaced";
}

/** This build's release stamp, as every program it loads carries it. */
export const RELEASE_STAMP = releaseStamp(VERSION, OBJECTS_SHA256);

function mkdirs(pins: PinLayout): void {
  for (const d of [pins.root, pins.abiDir, pins.mapsDir, pins.progsDir, pins.nodeDir]) {
    Deno.mkdirSync(d, { recursive: true });
  }
  Deno.mkdirSync(pins.podsDir, { recursive: true });
}

export function loadDatapath(opts: LoadOptions): ProgramState[] {
  const pins = new PinLayout(opts.bpffs);
  assertBpffs(pins.root);
  libbpf(); // fail on a missing library before anything is created
  const fresh = !exists(pins.abiDir);
  if (!opts.dryRun) mkdirs(pins);
  try {
    return (Object.keys(PROGRAMS) as ProgramRole[]).map((role) => loadProgram(pins, role, opts));
  } catch (e) {
    // A first install that fails leaves no half-made pin tree of this ABI behind.
    if (fresh && !opts.dryRun) Deno.removeSync(pins.abiDir, { recursive: true });
    throw e;
  }
}

/** What is pinned for a role: its program's id, name, tag and release. */
export interface PinnedProgram {
  id: number;
  name: string;
  tag: string;
  release: Release | undefined;
}

/** The program pinned for `role`; undefined without a pin. */
export function pinnedProgram(bpffs: string, role: ProgramRole): PinnedProgram | undefined {
  return readPinned(new PinLayout(bpffs).prog(role), (fd) => {
    const i = progInfo(fd);
    return { id: i.id, name: i.name, tag: i.tag, release: releaseOfProgram(fd) };
  });
}

/** Whether a pinned program is the one this build loads for `role`: this build's stamp on
 * the role's own program means these very objects. */
export function isThisBuild(role: ProgramRole, p: PinnedProgram): boolean {
  return p.name === PROGRAMS[role] && p.release !== undefined &&
    releaseStamp(p.release.version, p.release.objects) === RELEASE_STAMP;
}

function loadProgram(pins: PinLayout, role: ProgramRole, opts: LoadOptions): ProgramState {
  const existing = pinnedProgram(opts.bpffs, role);
  if (opts.dryRun) {
    return {
      role,
      id: existing?.id ?? 0,
      tag: existing?.tag ?? "",
      // Another stamp, or another program under the pin, means a replacement.
      action: !existing ? "pinned" : isThisBuild(role, existing) ? "kept" : "replaced",
    };
  }
  const objName = PROGRAM_OBJECT[role];
  const obj = BpfObject.open(`tsnp_${objName}`, objectBytes(objName), pins.mapsDir);
  try {
    obj.setInitialValue(".rodata.release", releaseBytes(RELEASE_STAMP));
    obj.load();
    const fd = obj.programFd(PROGRAMS[role]);
    const info = progInfo(fd);
    // The same instructions of another build (its stamp differs) are replaced too, so every
    // pinned program says which release loaded it.
    if (existing?.tag === info.tag && isThisBuild(role, existing)) {
      return { role, id: existing.id, tag: info.tag, action: "kept" };
    }
    if (existing) Deno.removeSync(pins.prog(role));
    objPin(fd, pins.prog(role));
    return { role, id: info.id, tag: info.tag, action: existing ? "replaced" : "pinned" };
  } finally {
    obj.close();
  }
}

/** Runs a program once over a dummy packet (BPF_PROG_TEST_RUN); returns its return value. */
export function testRun(
  progFd: number,
  packet = new Uint8Array(64),
  repeat = 1,
): { retval: number; durationNs: number } {
  const opts = encode(BpfTestRunOpts, {
    sz: BigInt(BpfTestRunOpts.size),
    data_in: addressOf(packet),
    data_size_in: packet.length,
    repeat,
  });
  check(libbpf().bpf_prog_test_run_opts(progFd, opts), "BPF_PROG_TEST_RUN failed", "run as root");
  const dv = new DataView(opts.buffer);
  return {
    retval: dv.getUint32(BpfTestRunOpts.fields.retval[0], true),
    durationNs: dv.getUint32(BpfTestRunOpts.fields.duration[0], true),
  };
}

export type SkbFields = Values<typeof SkBuff.fields>;

/**
 * Runs a tc program once over `packet` with the given __sk_buff fields (priority,
 * ifindex, tc_index, tstamp...) and returns its verdict and the __sk_buff it left behind.
 */
export function testRunSkb(
  progFd: number,
  packet: Uint8Array<ArrayBuffer>,
  skb: Partial<SkbFields> = {},
): { retval: number; skb: SkbFields } {
  const ctxIn = encode(SkBuff, { wire_len: packet.length, ...skb });
  const ctxOut = new Uint8Array(SkBuff.size);
  const dataOut = new Uint8Array(packet.length + 256);
  const opts = encode(BpfTestRunOpts, {
    sz: BigInt(BpfTestRunOpts.size),
    data_in: addressOf(packet),
    data_size_in: packet.length,
    data_out: addressOf(dataOut),
    data_size_out: dataOut.length,
    ctx_in: addressOf(ctxIn),
    ctx_size_in: ctxIn.length,
    ctx_out: addressOf(ctxOut),
    ctx_size_out: ctxOut.length,
    repeat: 1,
  });
  check(libbpf().bpf_prog_test_run_opts(progFd, opts), "BPF_PROG_TEST_RUN failed", "run as root");
  const retval = new DataView(opts.buffer).getInt32(BpfTestRunOpts.fields.retval[0], true);
  return { retval, skb: decode(SkBuff, ctxOut) };
}
