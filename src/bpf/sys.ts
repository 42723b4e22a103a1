/**
 * Thin, checked wrappers over libbpf's syscall helpers: every failure becomes a KernelError
 * naming the operation, the errno and a fix.
 */
import { KernelError, NotInstalledError } from "../errors.ts";
import { Errno, errno, libc, strerror } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { cstr, cString } from "../ffi/open.ts";
import { BpfLinkInfo, BpfMapInfo, BpfProgInfo } from "../ffi/structs/bpf.ts";
import { decode, type FieldSpec, type StructLayout, type Values } from "../ffi/structs/layout.ts";

/** libbpf 1.x returns -errno from int functions; pointer functions set errno. */
export function check(ret: number, what: string, hint: string): number {
  if (ret >= 0) return ret;
  const e = -ret;
  throw new KernelError(`${what}: ${strerror(e)}`, hint, e);
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/** Opens a pinned object; undefined when the pin does not exist. */
export function objGet(path: string): number | undefined {
  const fd = libbpf().bpf_obj_get(cstr(path));
  if (fd >= 0) return fd;
  const e = -fd;
  if (e === Errno.ENOENT) return undefined;
  throw new KernelError(
    `cannot open pinned BPF object ${path}: ${strerror(e)}`,
    "run as root with a bpf filesystem mounted at /sys/fs/bpf",
    e,
  );
}

/** Opens the object pinned at path for read(fd) and closes it; undefined without the pin. */
export function readPinned<T>(path: string, read: (fd: number) => T): T | undefined {
  const fd = objGet(path);
  if (fd === undefined) return undefined;
  try {
    return read(fd);
  } finally {
    closeFd(fd);
  }
}

/** The id of the program pinned at path; undefined without the pin. */
export function progIdAt(path: string): number | undefined {
  return readPinned(path, (fd) => progInfo(fd).id);
}

/** Opens a pinned object that must exist (the node was installed). */
export function objGetRequired(path: string): number {
  const fd = objGet(path);
  if (fd === undefined) {
    throw new NotInstalledError(`tsnproxy is not installed on this node: ${path} is missing`);
  }
  return fd;
}

export function objPin(fd: number, path: string): void {
  check(
    libbpf().bpf_obj_pin(fd, cstr(path)),
    `cannot pin ${path}`,
    "the pin root must be on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf) and not already used",
  );
}

function infoByFd<F extends Record<string, FieldSpec>>(
  fd: number,
  layout: StructLayout<F>,
  what: string,
): Values<F> {
  // Room for the whole kernel struct: the kernel fills what it knows, we decode our prefix.
  const buf = new Uint8Array(256);
  const len = new Uint32Array([buf.length]);
  check(
    libbpf().bpf_obj_get_info_by_fd(fd, buf, new Uint8Array(len.buffer)),
    `cannot read ${what} info`,
    "run as root",
  );
  return decode(layout, buf);
}

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
  tag: string;
  /** Time spent in the program and runs, counted while run-time stats are enabled. */
  runTimeNs: bigint;
  runCount: bigint;
}

export function progInfo(fd: number): ProgInfo {
  const v = infoByFd(fd, BpfProgInfo, "program");
  return {
    id: v.id,
    type: v.type,
    name: nulTerminated(v.name),
    tag: hex(v.tag),
    runTimeNs: v.run_time_ns,
    runCount: v.run_cnt,
  };
}

export interface MapInfo {
  id: number;
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export function mapInfo(fd: number): MapInfo {
  const v = infoByFd(fd, BpfMapInfo, "map");
  return {
    id: v.id,
    type: v.type,
    name: nulTerminated(v.name),
    keySize: v.key_size,
    valueSize: v.value_size,
    maxEntries: v.max_entries,
  };
}

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** tcx links: the interface index. */
  ifindex: number;
  attachType: number;
}

export function linkInfo(fd: number): LinkInfo {
  const v = infoByFd(fd, BpfLinkInfo, "link");
  return {
    id: v.id,
    type: v.type,
    progId: v.prog_id,
    ifindex: v["netns.netns_ino"],
    attachType: v["netns.attach_type"],
  };
}

function nulTerminated(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

export function lastErrno(): number {
  return errno();
}

export { cString };

/**
 * Turns on the kernel's per-program run-time accounting (BPF_ENABLE_STATS) for as long as
 * the returned fd is open. It costs two clock reads per program run, so it is for
 * measurements, never left on.
 */
export function enableRunTimeStats(): number {
  const BPF_STATS_RUN_TIME = 0;
  return check(
    libbpf().bpf_enable_stats(BPF_STATS_RUN_TIME),
    "cannot enable BPF run-time stats",
    "run as root (CAP_SYS_ADMIN)",
  );
}
