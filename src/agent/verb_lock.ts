/**
 * The agent's side of the per-container verb locks (src/cni/delegate.ts verbLockPath): flock(2)
 * on a file in <socket dir>/locks/, taken without blocking (LOCK_NB) and retried every few
 * milliseconds, so a plugin that holds one while it runs a verb itself never stalls the
 * agent's event loop, only the request for that container, until that request's deadline.
 */
import { closeFd, O_CLOEXEC, strerror, SYS, sys } from "../ffi/libc.ts";
import { cstr } from "../ffi/open.ts";
import { KernelError } from "../errors.ts";
import { verbLockPath } from "../cni/delegate.ts";

const AT_FDCWD = -100;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_NOFOLLOW = 0o400000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
const RETRY_MS = 3;

/** Creates the lock directory next to the socket (mode 0700, like the socket's). */
export function prepareVerbLocks(socket: string): void {
  const dir = verbLockPath(socket, "").replace(/\/[^/]*$/, "");
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Takes the lock for `containerId`, retrying until `until` (Date.now() ms) or `signal`:
 * a release function, or undefined when it could not be had in time.
 */
export async function takeVerbLock(
  socket: string,
  containerId: string,
  until: number,
  signal: AbortSignal,
): Promise<(() => void) | undefined> {
  const path = verbLockPath(socket, containerId);
  const fd = sys(
    SYS.openat,
    AT_FDCWD,
    cstr(path),
    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
    0o600,
  );
  if (fd < 0) {
    throw new KernelError(
      `cannot open the verb lock ${path}: ${strerror(-fd)}`,
      "check the agent socket's directory",
      -fd,
    );
  }
  for (;;) {
    const r = sys(SYS.flock, fd, LOCK_EX | LOCK_NB);
    if (r === 0) return () => closeFd(fd);
    if (r !== -EWOULDBLOCK) {
      closeFd(fd);
      throw new KernelError(
        `flock(${path}): ${strerror(-r)}`,
        "check the agent socket's directory",
        -r,
      );
    }
    if (signal.aborted || Date.now() >= until) {
      closeFd(fd);
      return undefined;
    }
    await new Promise((res) => setTimeout(res, RETRY_MS));
  }
}
