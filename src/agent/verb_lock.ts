/**
 * The agent's side of the per-container verb locks (src/cni/delegate.ts verbLockPath): flock(2)
 * on a file in <socket dir>/locks/, taken without blocking (src/util/flock.ts), so a plugin
 * that holds one while it runs a verb itself never stalls the agent's event loop, only the
 * request for that container, until that request's deadline.
 */
import { closeFd } from "../ffi/libc.ts";
import { KernelError } from "../errors.ts";
import { strerror } from "../ffi/libc.ts";
import { verbLockPath } from "../cni/delegate.ts";
import { flockWithin, openForLock } from "../util/flock.ts";

const O_RDWR = 2;
const O_CREAT = 0o100;
const O_NOFOLLOW = 0o400000;

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
  const fd = openForLock(path, O_RDWR | O_CREAT | O_NOFOLLOW);
  if (fd < 0) {
    throw new KernelError(
      `cannot open the verb lock ${path}: ${strerror(-fd)}`,
      "check the agent socket's directory",
      -fd,
    );
  }
  try {
    if (await flockWithin(fd, path, until, { signal })) return () => closeFd(fd);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  closeFd(fd);
  return undefined;
}
