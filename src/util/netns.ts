/**
 * Run code inside another network namespace on the calling thread: setns(CLONE_NEWNET) there
 * and back. Deno runs JavaScript and synchronous FFI calls on one thread, so everything `fn`
 * does synchronously (libbpf attach, netlink sockets, if_nametoindex) happens in the target
 * namespace. `fn` must not await: other JavaScript would then run in the wrong namespace.
 */
import { KernelError, NotFoundError } from "../errors.ts";
import { CLONE_NEWNET, closeFd, openReadOnly, setns, strerror } from "../ffi/libc.ts";

function openNs(path: string): number {
  const fd = openReadOnly(path);
  if (fd < 0) {
    throw new NotFoundError(
      `cannot open network namespace ${path}: ${strerror(-fd)}`,
      "check CNI_NETNS: the runtime must pass the path of the pod's network namespace (e.g. /var/run/netns/cni-...)",
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

/** True when the path exists and is a network namespace we can open. */
export function netnsExists(path: string): boolean {
  const fd = openReadOnly(path);
  if (fd < 0) return false;
  closeFd(fd);
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
    closeFd(target);
    closeFd(home);
  }
}
