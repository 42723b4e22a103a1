/**
 * Run code inside another network namespace on the calling thread: setns(CLONE_NEWNET) there
 * and back. Deno runs JavaScript and synchronous FFI calls on one thread, so everything `fn`
 * does synchronously (libbpf attach, netlink sockets, if_nametoindex) happens in the target
 * namespace. `fn` must not await: other JavaScript would then run in the wrong namespace.
 *
 * A namespace path comes from the runtime (CNI_NETNS) and is opened without trusting it: a
 * plain open(2) of a FIFO blocks until a writer appears (and with it the agent's whole event
 * loop), and a device node's open can have side effects. The path is first opened with O_PATH
 * (no open of the file itself), must live on nsfs, and only then is it re-opened for real
 * through /proc/self/fd and asked for its namespace type (NS_GET_NSTYPE).
 */
import { KernelError, NotFoundError } from "../errors.ts";
import {
  CLONE_NEWNET,
  closeFd,
  O_CLOEXEC,
  O_RDONLY,
  openReadOnly,
  setns,
  strerror,
  SYS,
  sys,
} from "../ffi/libc.ts";
import { cstr } from "../ffi/open.ts";
import { Statfs } from "../ffi/structs/libc.ts";
import { decode } from "../ffi/structs/layout.ts";

const AT_FDCWD = -100;
const O_PATH = 0o10000000;
const NSFS_MAGIC = 0x6e736673n;
/** ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): the CLONE_NEW* type of a namespace file. */
const NS_GET_NSTYPE = 0xb703;
const NS_TYPES: Record<number, string> = {
  0x00020000: "mount",
  0x02000000: "cgroup",
  0x04000000: "UTS",
  0x08000000: "IPC",
  0x10000000: "user",
  0x20000000: "PID",
  0x00000080: "time",
};

/** Why a path is not a network namespace this process can enter. */
export interface NetnsProblem {
  /** Nothing there this process can see (ENOENT, EACCES, ...): another mount view might. */
  missing: boolean;
  reason: string;
}

function fileKind(path: string): string {
  try {
    const st = Deno.statSync(path);
    if (st.isFifo) return "a FIFO";
    if (st.isSocket) return "a socket";
    if (st.isCharDevice) return "a character device";
    if (st.isBlockDevice) return "a block device";
    if (st.isDirectory) return "a directory";
    return "a regular file";
  } catch {
    return "not a namespace file";
  }
}

/** An fd of the network namespace at `path`, opened without blocking, or why not. */
export function openNetns(path: string): number | NetnsProblem {
  const p = sys(SYS.openat, AT_FDCWD, cstr(path), O_PATH | O_CLOEXEC, 0);
  if (p < 0) return { missing: true, reason: `cannot open ${path}: ${strerror(-p)}` };
  let fd = -1;
  try {
    const st = new Uint8Array(Statfs.size);
    const r = sys(SYS.fstatfs, p, st);
    if (r < 0) return { missing: false, reason: `cannot statfs ${path}: ${strerror(-r)}` };
    if (BigInt.asUintN(32, decode(Statfs, st).f_type) !== NSFS_MAGIC) {
      return { missing: false, reason: `${path} is ${fileKind(path)}, not a network namespace` };
    }
    fd = sys(SYS.openat, AT_FDCWD, cstr(`/proc/self/fd/${p}`), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return { missing: false, reason: `cannot open ${path}: ${strerror(-fd)}` };
    const type = sys(SYS.ioctl, fd, NS_GET_NSTYPE, 0);
    if (type !== CLONE_NEWNET) {
      const what = type < 0 ? `unknown (${strerror(-type)})` : NS_TYPES[type] ?? `0x${type}`;
      closeFd(fd);
      fd = -1;
      return { missing: false, reason: `${path} is a ${what} namespace, not a network namespace` };
    }
    return fd;
  } finally {
    closeFd(p);
  }
}

/** Why `path` is not a network namespace this process can enter (undefined: it is one). */
export function netnsProblem(path: string): NetnsProblem | undefined {
  const r = openNetns(path);
  if (typeof r !== "number") return r;
  closeFd(r);
  return undefined;
}

function openNs(path: string): number {
  const r = openNetns(path);
  if (typeof r !== "number") {
    throw new NotFoundError(
      `cannot open network namespace ${path}: ${r.reason}`,
      "check CNI_NETNS: the runtime must pass the path of the pod's network namespace (e.g. /var/run/netns/cni-...)",
    );
  }
  return r;
}

/** This thread's own namespace: a kernel path, opened as it is. */
function openHome(): number {
  const fd = openReadOnly("/proc/thread-self/ns/net");
  if (fd < 0) {
    throw new KernelError(
      `cannot open /proc/thread-self/ns/net: ${strerror(-fd)}`,
      "tsnproxy needs /proc mounted",
      -fd,
    );
  }
  return fd;
}

function enter(fd: number, what: string): void {
  const r = setns(fd, CLONE_NEWNET);
  if (r < 0) {
    const e = -r;
    throw new KernelError(
      `setns(${what}) failed: ${strerror(e)}`,
      "tsnproxy needs CAP_SYS_ADMIN to enter pod network namespaces: run it as root (as the runtime does)",
      e,
    );
  }
}

/** True when the path is a network namespace we can open (never blocks: see the header). */
export function netnsExists(path: string): boolean {
  return netnsProblem(path) === undefined;
}

export function withNetns<T>(path: string | undefined, fn: () => T): T {
  if (!path) return fn();
  const target = openNs(path);
  let home = -1;
  try {
    home = openHome();
    enter(target, path);
    try {
      const result = fn();
      if (result instanceof Promise) {
        throw new Error("withNetns: fn must be synchronous");
      }
      return result;
    } finally {
      enter(home, "back to the original namespace");
    }
  } finally {
    closeFd(target);
    closeFd(home);
  }
}
