/** libc symbols tsnproxy needs: namespaces, interface names, errno, the monotonic clock. */
import { KernelError } from "../errors.ts";
import { cstr, cString, type LazyLibrary, lazyLibrary } from "./open.ts";

export const libcSymbols = {
  setns: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  if_indextoname: { parameters: ["u32", "buffer"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  vsnprintf: { parameters: ["buffer", "usize", "pointer", "pointer"], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  gettid: { parameters: [], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
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
  const ts = new BigInt64Array(2); // struct timespec: tv_sec, tv_nsec
  if (libc().clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) {
    const e = errno();
    throw new KernelError(
      `clock_gettime(CLOCK_MONOTONIC): ${strerror(e)}`,
      "a Linux libc is needed",
      e,
    );
  }
  return ts[0] * 1_000_000_000n + ts[1];
}

export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

export function strerror(code: number): string {
  return cString(libc().strerror(Math.abs(code)));
}

/** Interface index in the calling thread's network namespace, 0 when absent. */
export function ifNameToIndex(name: string): number {
  return libc().if_nametoindex(cstr(name));
}

export function ifIndexToName(index: number): string | undefined {
  const buf = new Uint8Array(IF_NAMESIZE);
  const p = libc().if_indextoname(index, buf);
  return p === null ? undefined : cString(p);
}
