/**
 * flock(2) without blocking the event loop: LOCK_EX | LOCK_NB, retried every few milliseconds
 * until a deadline. For the agent, whose one thread also answers its probes, its metrics and
 * other plugins' requests: a lock a plugin process holds (while it runs a verb itself) must
 * stall only the request that needs it, never the whole agent. A plugin process blocks in
 * flock(2) instead: it has nothing else to do.
 */
import { KernelError } from "../errors.ts";
import { Errno, O_CLOEXEC, strerror, SYS, sys } from "../ffi/libc.ts";
import { cstr } from "../ffi/open.ts";

const AT_FDCWD = -100;
const LOCK_EX = 2;
const LOCK_NB = 4;
const RETRY_MS = 3;

/** Opens `path` for a lock (flags beside O_CLOEXEC: e.g. O_RDWR | O_CREAT); fd or -errno. */
export function openForLock(path: string, flags: number, mode = 0o600): number {
  return sys(SYS.openat, AT_FDCWD, cstr(path), flags | O_CLOEXEC, mode);
}

/** Takes the exclusive lock on fd now: true, or false when another holds it. */
export function tryFlock(fd: number, what: string): boolean {
  const r = sys(SYS.flock, fd, LOCK_EX | LOCK_NB);
  if (r === 0) return true;
  if (r === -Errno.EAGAIN) return false; // EWOULDBLOCK
  throw new KernelError(`flock(${what}): ${strerror(-r)}`, "run as root", -r);
}

/**
 * Takes the exclusive lock on fd, retrying until `until` (Date.now() ms) or `signal`: true
 * once held, false when it could not be had in time. `onWait` runs once, when the first try
 * finds the lock taken.
 */
export async function flockWithin(
  fd: number,
  what: string,
  until: number,
  opts: { signal?: AbortSignal; onWait?: () => void } = {},
): Promise<boolean> {
  if (tryFlock(fd, what)) return true;
  opts.onWait?.();
  for (;;) {
    if (opts.signal?.aborted || Date.now() >= until) return false;
    await new Promise((res) => setTimeout(res, RETRY_MS));
    if (tryFlock(fd, what)) return true;
  }
}

/**
 * flockWithin for a synchronous caller (install's datapath step, which the agent's repair runs
 * too): the thread sleeps a few milliseconds between tries, so a plugin's short hold costs it
 * that much, and a lock held past `until` is an answer, not a hang.
 */
export function flockWithinSync(fd: number, what: string, until: number): boolean {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    if (tryFlock(fd, what)) return true;
    if (Date.now() >= until) return false;
    Atomics.wait(nap, 0, 0, RETRY_MS);
  }
}
