/**
 * The plugin's connection to the agent's socket, on raw system calls through libc's
 * syscall(3). Deno's own unix sockets do not expose the file descriptor, and the plugin must
 * ask the kernel who listens on the other end (SO_PEERCRED) before it trusts an answer
 * (src/cni/delegate.ts). The socket is non-blocking: every call returns at once, and the one
 * that waits, ppoll(2), runs off the JavaScript thread (a nonblocking FFI symbol), so a peer in
 * the same process (the tests) keeps running, and every wait ends at an absolute deadline.
 *
 * The plugin runs this before loading its own code (src/cni/handoff.ts): it imports only the
 * syscall table and the struct layouts, binds libc's syscall() twice (the plain one and the
 * waiting one; errno only when a call failed) and nothing else.
 */
import { SYS } from "../ffi/syscall_numbers.ts";
import { Pollfd, SockaddrUn, Timespec, Ucred } from "../ffi/structs/libc.ts";
import { decode, encode } from "../ffi/structs/layout.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const MSG_NOSIGNAL = 0x4000;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const SENDTO = Deno.build.arch === "x86_64" ? 44 : 206;
const EINTR = 4;
const EAGAIN = 11;

/** Messages for the errors a connection meets, without binding strerror(3). */
const ERRNO_TEXT: Record<number, string> = {
  2: "no such file or directory",
  13: "permission denied",
  11: "resource temporarily unavailable",
  32: "broken pipe",
  104: "connection reset by peer",
  111: "connection refused",
};

const SIX = ["i64", "i64", "i64", "i64", "i64", "i64", "i64"] as const;
const symbols = {
  syscall: { parameters: SIX, result: "i64" },
  /** The same function for calls that wait: it runs on a worker thread. */
  syscallWaiting: { name: "syscall", parameters: SIX, result: "i64", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
const bound: Partial<Symbols> = {};
// Bound functions live as long as their library handle: keep the handles.
const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

/** One libc symbol, bound on first use (each binding costs ~0.3 ms at start-up). */
function symbol<K extends keyof Symbols>(name: K): Symbols[K] {
  const have = bound[name];
  if (have) return have;
  const lib = Deno.dlopen(Deno.env.get("TSNPROXY_LIBC") ?? "libc.so.6", { [name]: symbols[name] });
  handles.push(lib);
  return (bound[name] = lib.symbols[name] as Symbols[K]);
}

type Arg = number | bigint | Uint8Array<ArrayBuffer>;

/**
 * Buffers a waiting call reads on its worker thread: passed by address only, they must stay
 * reachable for the garbage collector until the call returns.
 */
const waiting = new Set<Uint8Array>();

function word(a: Arg): bigint {
  return typeof a === "object"
    ? BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a)))
    : BigInt(a);
}

function errno(): number {
  const p = symbol("__errno_location")();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** syscall(nr, ...args) on this thread: the result, or -errno. `args` stay referenced here. */
function call(nr: number, ...args: Arg[]): number {
  const w = [0, 1, 2, 3, 4, 5].map((i) => (i < args.length ? word(args[i]) : 0n));
  const r = Number(symbol("syscall")(BigInt(nr), w[0], w[1], w[2], w[3], w[4], w[5]));
  return r === -1 ? -errno() : r;
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class UnixClient {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Connects to the socket at `path`. A listener whose backlog is full makes connect fail with
   * EAGAIN: retried every 5 ms until `deadline` (ms since the epoch, as Date.now()).
   */
  static async connect(path: string, deadline: number): Promise<UnixClient> {
    const bytes = new TextEncoder().encode(path);
    if (bytes.length >= SockaddrUn.fields.sun_path[2]) {
      throw new SocketError(`socket path ${path} is too long`, 36);
    }
    const addr = encode(SockaddrUn, { sun_family: AF_UNIX, sun_path: bytes });
    const fd = call(SYS.socket, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SocketError("socket(AF_UNIX)", -fd);
    const c = new UnixClient(fd);
    try {
      for (;;) {
        const r = call(SYS.connect, fd, addr, SockaddrUn.size);
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
    const buf = new Uint8Array(Ucred.size);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, Ucred.size, true);
    const r = call(SYS.getsockopt, this.#fd, SOL_SOCKET, SO_PEERCRED, buf, len);
    if (r < 0) throw new SocketError("getsockopt(SO_PEERCRED)", -r);
    const u = decode(Ucred, buf);
    return { pid: u.pid, uid: u.uid, gid: u.gid };
  }

  /**
   * Waits until the socket is readable (or writable), or `deadline` passes (undefined: no
   * deadline). Throws DeadlineError.
   */
  async #wait(events: number, deadline: number | undefined): Promise<void> {
    const pfd = encode(Pollfd, { fd: this.#fd, events });
    waiting.add(pfd);
    try {
      await this.#poll(pfd, deadline);
    } finally {
      waiting.delete(pfd);
    }
  }

  async #poll(pfd: Uint8Array<ArrayBuffer>, deadline: number | undefined): Promise<void> {
    for (let spins = 0; spins < 1000; spins++) {
      let ts: Uint8Array<ArrayBuffer> | undefined;
      if (deadline !== undefined) {
        const left = Math.max(0, deadline - Date.now());
        ts = encode(Timespec, {
          tv_sec: BigInt(Math.floor(left / 1000)),
          tv_nsec: BigInt((left % 1000) * 1_000_000),
        });
      }
      if (ts) waiting.add(ts);
      let r: number;
      try {
        r = Number(
          await symbol("syscallWaiting")(
            BigInt(SYS.ppoll),
            word(pfd),
            1n,
            ts ? word(ts) : 0n,
            0n,
            8n,
            0n,
          ),
        );
      } finally {
        if (ts) waiting.delete(ts);
      }
      if (r > 0) return;
      // r < 0: EINTR (errno is the worker thread's, not readable here): wait again.
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
      const n = call(SENDTO, this.#fd, part, part.length, MSG_NOSIGNAL, 0, 0);
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
      const n = call(SYS.read, this.#fd, buf, buf.length);
      if (n > 0) return n;
      if (n === 0) return null;
      if (n === -EINTR) continue;
      if (n !== -EAGAIN) throw new SocketError("read", -n);
      await this.#wait(POLLIN, deadline);
    }
  }

  close(): void {
    if (this.#fd >= 0) call(SYS.close, this.#fd);
    this.#fd = -1;
  }
}
