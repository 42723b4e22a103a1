/**
 * libc symbols tsnproxy needs. Most kernel calls go through one binding of syscall(2): Deno
 * pays ~0.3 ms to bind each FFI symbol (dlsym plus a JIT-compiled call trampoline), and the CNI
 * plugin, which starts once per pod and verb, would otherwise bind a dozen (open, close,
 * setns, if_nametoindex, clock_gettime and libbpf's thin bpf(2) wrappers) to call each once.
 */
import { KernelError } from "../errors.ts";
import { addressOf, cstr, cString, type LazyLibrary, lazyLibrary } from "./open.ts";
import { Ifreq, Timespec } from "./structs/libc.ts";
import { decode, encode } from "./structs/layout.ts";
import { SYS, SYSCALL_NUMBERS } from "./syscall_numbers.ts";

export const libcSymbols = {
  /** syscall(nr, a, b, c, d): every call sys() below makes; -1 and errno on failure. */
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64"], result: "i64" },
  if_indextoname: { parameters: ["u32", "buffer"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  vsnprintf: { parameters: ["buffer", "usize", "pointer", "pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: LazyLibrary<typeof libcSymbols> | undefined;

/** The libc symbol table, opened on first use. */
export function libc(): Deno.DynamicLibrary<typeof libcSymbols>["symbols"] {
  lib ??= lazyLibrary({
    name: "libc",
    sonames: ["libc.so.6"],
    envVar: "TSNPROXY_LIBC",
    debianPackage: "libc6",
  }, libcSymbols);
  lib.ensure();
  return lib.symbols;
}

export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const IF_NAMESIZE = 16;
const AT_FDCWD = -100;
const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SIOCGIFINDEX = 0x8933;

export { SYS, SYSCALL_NUMBERS };

/** A syscall argument: an integer, or a buffer passed as a pointer to its first byte. */
export type SysArg = number | bigint | Uint8Array<ArrayBuffer> | null;

function word(a: SysArg): bigint {
  return a === null || typeof a === "object" ? addressOf(a) : BigInt(a);
}

/**
 * What the running sys() call's pointers point into (its buffer arguments, and the buffers a
 * struct argument holds addresses of): held here until the call returns, since a buffer
 * passed by address alone is no reference the garbage collector sees.
 */
const inUse: unknown[] = [];

/**
 * syscall(2) with up to four arguments: the result, or -errno on failure (libbpf's
 * convention). `pointees` are buffers a struct argument points into.
 */
export function sys(
  nr: number,
  a: SysArg = 0,
  b: SysArg = 0,
  c: SysArg = 0,
  d: SysArg = 0,
  pointees: readonly unknown[] = [],
): number {
  inUse.push(a, b, c, d, pointees);
  try {
    const r = Number(libc().syscall(BigInt(nr), word(a), word(b), word(c), word(d)));
    return r === -1 ? -errno() : r;
  } finally {
    inUse.length = 0;
  }
}

/** open(2) read-only and close-on-exec: the fd, or -errno. */
export function openReadOnly(path: string): number {
  return sys(SYS.openat, AT_FDCWD, cstr(path), O_RDONLY | O_CLOEXEC, 0);
}

export function closeFd(fd: number): void {
  if (fd >= 0) sys(SYS.close, fd);
}

/** setns(2): 0, or -errno. */
export function setns(fd: number, nstype: number): number {
  return sys(SYS.setns, fd, nstype);
}

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  EOPNOTSUPP: 95,
  E2BIG: 7,
  ENOTSUPP: 524,
} as const;

const CLOCK_MONOTONIC = 1;

/** CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads, to compare with its stamps. */
export function monotonicNs(): bigint {
  const buf = new Uint8Array(Timespec.size);
  const r = sys(SYS.clock_gettime, CLOCK_MONOTONIC, buf);
  if (r < 0) {
    throw new KernelError(
      `clock_gettime(CLOCK_MONOTONIC): ${strerror(-r)}`,
      "a Linux kernel is needed",
      -r,
    );
  }
  const ts = decode(Timespec, buf);
  return ts.tv_sec * 1_000_000_000n + ts.tv_nsec;
}

export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

export function strerror(code: number): string {
  return cString(libc().strerror(Math.abs(code)));
}

/**
 * Interface index in the calling thread's network namespace, 0 when absent: what
 * if_nametoindex(3) does (SIOCGIFINDEX on a socket of that namespace), through sys().
 */
export function ifNameToIndex(name: string): number {
  const ifname = cstr(name);
  if (ifname.length > IF_NAMESIZE) return 0;
  const fd = sys(SYS.socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw new KernelError(`socket(AF_UNIX): ${strerror(-fd)}`, "a Linux kernel is needed", -fd);
  }
  try {
    const req = encode(Ifreq, { ifr_name: ifname });
    if (sys(SYS.ioctl, fd, SIOCGIFINDEX, req) < 0) return 0;
    return new DataView(req.buffer).getInt32(Ifreq.fields.ifr_ifindex[0], true);
  } finally {
    closeFd(fd);
  }
}

export function ifIndexToName(index: number): string | undefined {
  const buf = new Uint8Array(IF_NAMESIZE);
  const p = libc().if_indextoname(index, buf);
  return p === null ? undefined : cString(p);
}
