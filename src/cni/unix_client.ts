/**
 * The plugin's connection to the agent's socket, on raw system calls through libc's
 * syscall(3). Deno's own unix sockets do not expose the file descriptor, and the plugin must
 * ask the kernel who listens on the other end (SO_PEERCRED) before it trusts an answer
 * (src/cni/delegate.ts). The socket is non-blocking; waits are ppoll(2) up to an absolute
 * deadline, either on the JavaScript thread ("block": the plugin process, which has nothing
 * else to do, sleeps in the kernel and wakes on the agent's bytes) or on a worker thread
 * ("yield": a caller with other work on its event loop, such as `tsnproxy doctor`, or a test
 * whose fake agent runs in the same process).
 *
 * The plugin runs this before loading its own code (src/cni/handoff.ts), so it is kept
 * small: it imports only the syscall table, writes its four small structs by hand (their C
 * layouts are checked against the headers through src/ffi/structs/libc.ts by
 * tests/agent/unix_client_test.ts), and binds libc's syscall() once; errno(3) and the worker
 * thread's binding only when needed. What it costs the plugin: see delegate.ts's header.
 */
import { SYS } from "../ffi/syscall_numbers.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const MSG_NOSIGNAL = 0x4000;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const EINTR = 4;
const EAGAIN = 11;

/** The hand-written layouts (LP64): struct sockaddr_un, ucred, pollfd, timespec. */
export const LAYOUTS = {
  sockaddrUn: { size: 110, sun_family: 0, sun_path: 2, pathMax: 108 },
  ucred: { size: 12, pid: 0, uid: 4, gid: 8 },
  pollfd: { size: 8, fd: 0, events: 4, revents: 6 },
  timespec: { size: 16, tv_sec: 0, tv_nsec: 8 },
  statx: { size: 256, stx_uid: 20, stx_mode: 28 },
} as const;

/** Messages for the errors a connection meets, without binding strerror(3). */
const ERRNO_TEXT: Record<number, string> = {
  2: "no such file or directory",
  13: "permission denied",
  11: "resource temporarily unavailable",
  32: "broken pipe",
  36: "file name too long",
  104: "connection reset by peer",
  111: "connection refused",
};

const ARGS = ["i64", "i64", "i64", "i64", "i64", "i64", "i64"] as const;
const symbols = {
  syscall: { parameters: ARGS, result: "i64" },
  /** The same function run on a worker thread (waits in "yield" mode). */
  syscallOffThread: { name: "syscall", parameters: ARGS, result: "i64", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
const bound: Partial<Symbols> = {};
// Bound functions live as long as their library handle: keep the handles.
const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

/** The unread last argument of every blocking call (see symbol()). */
const UNREAD = new Uint8Array(1);

/**
 * One libc symbol, bound on first use. As src/ffi/open.ts bindSymbol (not imported: this
 * module loads before the plugin's own code): a blocking symbol is declared with one more
 * parameter, a 1-byte struct its C function never reads, so that Deno compiles no fast-call
 * trampoline for it (~0.6 ms for a process's first, measured), which a plugin process never
 * runs anyway.
 */
function symbol<K extends keyof Symbols>(name: K): Symbols[K] {
  const have = bound[name];
  if (have) return have;
  const def: Deno.ForeignFunction = symbols[name];
  const lean = def.nonblocking ? def : { ...def, parameters: [...def.parameters, UNREAD_TYPE] };
  const lib = Deno.dlopen(Deno.env.get("TSNPROXY_LIBC") ?? "libc.so.6", { [name]: lean });
  handles.push(lib);
  const raw = lib.symbols[name] as (...args: unknown[]) => unknown;
  const fn = def.nonblocking ? raw : (...args: unknown[]) => raw(...args, UNREAD);
  return (bound[name] = fn as Symbols[K]);
}

const UNREAD_TYPE = { struct: ["u8"] } as const;

type Arg = number | bigint | Uint8Array<ArrayBuffer>;

/**
 * Buffers a call reads or writes through an address: kept reachable for the garbage collector
 * until the call returns (a worker thread's call returns later than it starts).
 */
const inUse = new Set<Uint8Array>();

function word(a: Arg): bigint {
  return typeof a === "object"
    ? BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a)))
    : BigInt(a);
}

function words(args: Arg[]): bigint[] {
  return [0, 1, 2, 3, 4, 5].map((i) => (i < args.length ? word(args[i]) : 0n));
}

function errno(): number {
  const p = symbol("__errno_location")();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** syscall(nr, ...args) on this thread: the result, or -errno. */
function call(nr: number, ...args: Arg[]): number {
  const buffers = args.filter((a): a is Uint8Array<ArrayBuffer> => typeof a === "object");
  for (const b of buffers) inUse.add(b);
  try {
    const w = words(args);
    const r = Number(symbol("syscall")(BigInt(nr), w[0], w[1], w[2], w[3], w[4], w[5]));
    return r === -1 ? -errno() : r;
  } finally {
    for (const b of buffers) inUse.delete(b);
  }
}

/** syscall(nr, ...args) on a worker thread: the result, -1 on any failure (errno is the
 * worker's, not readable here). */
async function callOffThread(nr: number, ...args: Arg[]): Promise<number> {
  const buffers = args.filter((a): a is Uint8Array<ArrayBuffer> => typeof a === "object");
  for (const b of buffers) inUse.add(b);
  try {
    const w = words(args);
    return Number(
      await symbol("syscallOffThread")(BigInt(nr), w[0], w[1], w[2], w[3], w[4], w[5]),
    );
  } finally {
    for (const b of buffers) inUse.delete(b);
  }
}

export function errnoText(e: number): string {
  return ERRNO_TEXT[e] ?? `errno ${e}`;
}

/** A system call failed: `errno` says which way. */
export class SocketError extends Error {
  constructor(what: string, readonly errno: number) {
    super(`${what}: ${errnoText(errno)}`);
  }
}

/** A wait reached its deadline. */
export class DeadlineError extends Error {}

/** Who holds the other end of a unix socket, as the kernel recorded it at connect/listen. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** What the trust checks need of a file: its type and permission bits and its owner. */
export interface FileOwner {
  /** st_mode: S_IFMT type bits and permissions. */
  mode: number;
  uid: number;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFSOCK = 0o140000;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const STATX_TYPE_MODE_UID = 0x1 | 0x2 | 0x8;

/**
 * statx(2) of `path` without following a final symlink: its mode and owner, or the errno.
 * Through the one syscall binding: a Deno.lstatSync's first call costs ~0.3 ms here.
 */
export function statNoFollow(path: string): FileOwner | number {
  const L = LAYOUTS.statx;
  const buf = new Uint8Array(L.size);
  const name = new TextEncoder().encode(path + "\0");
  const r = call(SYS.statx, AT_FDCWD, name, AT_SYMLINK_NOFOLLOW, STATX_TYPE_MODE_UID, buf);
  if (r < 0) return -r;
  const v = new DataView(buf.buffer);
  return { mode: v.getUint16(L.stx_mode, true), uid: v.getUint32(L.stx_uid, true) };
}

/** How waits wait: see the header. */
export type WaitMode = "block" | "yield";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const L = LAYOUTS.sockaddrUn;
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= L.pathMax) throw new SocketError(`socket path ${path}`, 36);
  const buf = new Uint8Array(L.size);
  new DataView(buf.buffer).setUint16(L.sun_family, AF_UNIX, true);
  buf.set(bytes, L.sun_path);
  return buf;
}

export class UnixClient {
  #fd: number;

  private constructor(fd: number, readonly mode: WaitMode) {
    this.#fd = fd;
  }

  /**
   * Connects to the socket at `path`. A listener whose backlog is full makes connect fail with
   * EAGAIN: retried every 5 ms until `deadline` (ms since the epoch, as Date.now()).
   */
  static async connect(path: string, deadline: number, mode: WaitMode): Promise<UnixClient> {
    const addr = sockaddrUn(path);
    const fd = call(SYS.socket, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SocketError("socket(AF_UNIX)", -fd);
    const c = new UnixClient(fd, mode);
    try {
      for (;;) {
        const r = call(SYS.connect, fd, addr, addr.length);
        if (r === 0) return c;
        if (r !== -EAGAIN && r !== -EINTR) throw new SocketError(`connect(${path})`, -r);
        if (Date.now() >= deadline) throw new DeadlineError(`connect(${path}): backlog full`);
        await sleep(5);
      }
    } catch (e) {
      c.close();
      throw e;
    }
  }

  /** The peer's credentials (SO_PEERCRED). */
  peerCred(): PeerCred {
    const L = LAYOUTS.ucred;
    const buf = new Uint8Array(L.size);
    const len = new Uint8Array(4);
    const lv = new DataView(len.buffer);
    lv.setUint32(0, L.size, true);
    const r = call(SYS.getsockopt, this.#fd, SOL_SOCKET, SO_PEERCRED, buf, len);
    if (r < 0) throw new SocketError("getsockopt(SO_PEERCRED)", -r);
    const v = new DataView(buf.buffer);
    return {
      pid: v.getInt32(L.pid, true),
      uid: v.getUint32(L.uid, true),
      gid: v.getUint32(L.gid, true),
    };
  }

  /**
   * Waits until the socket is readable (or writable), or `deadline` passes (undefined: no
   * deadline). Throws DeadlineError.
   */
  async #wait(events: number, deadline: number | undefined): Promise<void> {
    const P = LAYOUTS.pollfd;
    const T = LAYOUTS.timespec;
    const pfd = new Uint8Array(P.size);
    const pv = new DataView(pfd.buffer);
    pv.setInt32(P.fd, this.#fd, true);
    pv.setUint16(P.events, events, true);
    const ts = new Uint8Array(T.size);
    // Ready already? (a zero timeout: no worker thread for bytes that are there)
    if (call(SYS.ppoll, pfd, 1, ts, 0, 8) > 0) return;
    for (let spins = 0; spins < 1000; spins++) {
      let tmo: Uint8Array<ArrayBuffer> | 0 = 0;
      if (deadline !== undefined) {
        const left = Math.max(0, deadline - Date.now());
        const tv = new DataView(ts.buffer);
        tv.setBigInt64(T.tv_sec, BigInt(Math.floor(left / 1000)), true);
        tv.setBigInt64(T.tv_nsec, BigInt((left % 1000) * 1_000_000), true);
        tmo = ts;
      }
      // Any failure is EINTR in practice (a signal): wait again.
      const r = this.mode === "block"
        ? call(SYS.ppoll, pfd, 1, tmo, 0, 8)
        : await callOffThread(SYS.ppoll, pfd, 1, tmo, 0, 8);
      if (r > 0) return;
      if (r === 0 || (deadline !== undefined && Date.now() >= deadline)) {
        throw new DeadlineError("deadline passed");
      }
    }
    throw new SocketError("ppoll keeps failing", EINTR);
  }

  /** Writes all of `bytes` by `deadline`. */
  async write(bytes: Uint8Array<ArrayBuffer>, deadline: number | undefined): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const part = bytes.subarray(off);
      const n = call(SYS.sendto, this.#fd, part, part.length, MSG_NOSIGNAL, 0, 0);
      if (n >= 0) {
        off += n;
        continue;
      }
      if (n === -EINTR) continue;
      if (n !== -EAGAIN) throw new SocketError("send", -n);
      await this.#wait(POLLOUT, deadline);
    }
  }

  /**
   * Reads up to `buf.length` bytes, waiting for them until `deadline`: the count, or null at
   * end of stream.
   */
  async read(buf: Uint8Array<ArrayBuffer>, deadline: number | undefined): Promise<number | null> {
    for (;;) {
      await this.#wait(POLLIN, deadline);
      const n = call(SYS.read, this.#fd, buf, buf.length);
      if (n > 0) return n;
      if (n === 0) return null;
      if (n !== -EINTR && n !== -EAGAIN) throw new SocketError("read", -n);
    }
  }

  close(): void {
    if (this.#fd >= 0) call(SYS.close, this.#fd);
    this.#fd = -1;
  }
}
