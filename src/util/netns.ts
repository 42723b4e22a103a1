/**
 * Run code inside another network namespace on the calling thread: setns(CLONE_NEWNET) there
 * and back. Deno runs JavaScript and synchronous FFI calls on one thread, so everything `fn`
 * does synchronously (libbpf attach, netlink sockets, if_nametoindex) happens in the target
 * namespace. `fn` must not await: other JavaScript would then run in the wrong namespace.
 */
import { KernelError, NotFoundError } from "../errors.ts";
import { CLONE_NEWNET, errno, libc, O_CLOEXEC, O_RDONLY, strerror } from "../ffi/libc.ts";
import { cstr } from "../ffi/open.ts";

function openNs(path: string): number {
  const fd = libc().open(cstr(path), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    const e = errno();
    throw new NotFoundError(
      `cannot open network namespace ${path}: ${strerror(e)}`,
      "check CNI_NETNS: the runtime must pass the path of the pod's network namespace (e.g. /var/run/netns/cni-...)",
    );
  }
  return fd;
}

function enter(fd: number, what: string): void {
  if (libc().setns(fd, CLONE_NEWNET) !== 0) {
    const e = errno();
    throw new KernelError(
      `setns(${what}) failed: ${strerror(e)}`,
      "tsnproxy needs CAP_SYS_ADMIN to enter pod network namespaces: run it as root (as the runtime does)",
      e,
    );
  }
}

/** True when the path exists and is a network namespace we can open. */
export function netnsExists(path: string): boolean {
  const fd = libc().open(cstr(path), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  libc().close(fd);
  return true;
}

export function withNetns<T>(path: string | undefined, fn: () => T): T {
  if (!path) return fn();
  const target = openNs(path);
  let home = -1;
  try {
    home = openNs("/proc/thread-self/ns/net");
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
    libc().close(target);
    if (home >= 0) libc().close(home);
  }
}
