/**
 * A synchronous rtnetlink socket over libmnl. Every call is a blocking FFI call on the calling
 * thread, so callers can open and use it inside withNetns() (src/util/netns.ts): a netlink
 * socket belongs to the network namespace it was created in, so open it inside the callback.
 *
 * Requests carry increasing sequence numbers; replies with other sequence numbers (late
 * answers to an earlier request) are skipped. NETLINK_EXT_ACK is enabled so a rejected request
 * reports the kernel's own explanation, which ends up in the KernelError message.
 */
import { KernelError, TsnproxyError } from "../errors.ts";
import { Errno, errno, strerror } from "../ffi/libc.ts";
import { libmnl, MNL_SOCKET_AUTOPID } from "../ffi/libmnl.ts";
import {
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_ROUTE,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSGERR_ATTR_MSG,
  NLMSGERR_ATTR_OFFS,
  SOCK_CLOEXEC,
} from "./constants.ts";
import { Attrs, type NlMessage, type NlRequest, splitMessages } from "./message.ts";

/** What the kernel said when it rejected a request. */
export interface NetlinkFailure {
  /** Positive errno. */
  errno: number;
  /** NLMSGERR_ATTR_MSG, when the kernel gave one. */
  extack?: string;
  /** NLMSGERR_ATTR_OFFS: byte offset of the offending attribute in the request. */
  offset?: number;
}

/** How to word a failure of one request. */
export interface RequestContext {
  /** What was attempted, e.g. "replace root qdisc taprio on eth1 (ifindex 4)". */
  what: string;
  /**
   * Optional translation of a failure into a clearer message and hint (e.g. "module sch_taprio
   * is missing"). Return undefined to use the generic wording.
   */
  explain?: (f: NetlinkFailure) => { message: string; hint: string } | undefined;
}

const RECV_SIZE = 65536;

/**
 * The one receive buffer of every socket: #recv fills it and splitMessages copies the messages
 * out before it returns, all synchronously, so no two receives ever share it. A 64 KiB buffer
 * per socket (several per CNI verb) left the agent's malloc heap growing by ~0.1 MiB a verb.
 */
let rxBuffer: { bytes: Uint8Array<ArrayBuffer>; ptr: Deno.PointerObject } | undefined;

function receiveBuffer(): { bytes: Uint8Array<ArrayBuffer>; ptr: Deno.PointerObject } {
  if (rxBuffer) return rxBuffer;
  const bytes = new Uint8Array(new ArrayBuffer(RECV_SIZE));
  const ptr = Deno.UnsafePointer.of(bytes);
  if (ptr === null) throw new TsnproxyError("no receive buffer", "this is a bug in tsnproxy");
  return (rxBuffer = { bytes, ptr });
}
const DUMP_RETRIES = 3;

/** Generic hint by errno, used when the caller has nothing more specific. */
export function genericHint(f: NetlinkFailure): string {
  switch (f.errno) {
    case Errno.EPERM:
    case Errno.EACCES:
      return "tsnproxy needs CAP_NET_ADMIN in the target network namespace: run it as root";
    case Errno.ENODEV:
      return "the interface does not exist (any more) in this network namespace: check its name";
    case Errno.EEXIST:
      return "an object with that handle already exists: use replace, or delete it first";
    case Errno.ENOENT:
      return "the object the request refers to does not exist: check the parent/handle";
    case Errno.EOPNOTSUPP:
      return "this kernel or driver does not support the requested mode: see the kernel's message";
    case Errno.EINVAL:
      return "the kernel rejected a parameter: compare the config with the kernel's message";
    default:
      return "see the kernel's message; `tsnproxy doctor` checks the node's kernel features";
  }
}

/** Formats "what: strerror (errno N): kernel says "..."". */
export function describeFailure(what: string, f: NetlinkFailure): string {
  let msg = `${what}: ${strerror(f.errno)} (errno ${f.errno})`;
  if (f.extack) msg += `: kernel says "${f.extack}"`;
  if (f.offset !== undefined) msg += ` (offending attribute at byte ${f.offset} of the request)`;
  return msg;
}

/** Decodes an NLMSG_ERROR (or NLMSG_DONE with an error) payload. */
export function parseError(m: NlMessage): NetlinkFailure & { code: number } {
  const p = m.payload;
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const code = p.length >= 4 ? dv.getInt32(0, true) : 0;
  const out: NetlinkFailure & { code: number } = { code, errno: -code };
  if (!(m.flags & NLM_F_ACK_TLVS)) return out;
  let tlvStart: number;
  if (m.type === NLMSG_DONE) {
    tlvStart = 4;
  } else if (m.flags & NLM_F_CAPPED || code === 0) {
    tlvStart = 4 + 16;
  } else {
    const origLen = p.length >= 8 ? dv.getUint32(4, true) : 16;
    tlvStart = 4 + ((origLen + 3) & ~3);
  }
  if (tlvStart > p.length) return out;
  const tlvs = new Attrs(p.subarray(tlvStart));
  const text = tlvs.str(NLMSGERR_ATTR_MSG);
  if (text) out.extack = text.trim();
  const offs = tlvs.u32(NLMSGERR_ATTR_OFFS);
  if (offs !== undefined) out.offset = offs;
  return out;
}

export class RtnlSocket implements Disposable {
  #nl: Deno.PointerObject | null;
  #seq: number;
  readonly #portid: number;

  private constructor(nl: Deno.PointerObject) {
    this.#nl = nl;
    this.#portid = libmnl().mnl_socket_get_portid(nl);
    this.#seq = (Date.now() & 0x3fffffff) >>> 0;
  }

  /** Opens and binds a NETLINK_ROUTE socket in the calling thread's network namespace. */
  static open(): RtnlSocket {
    const mnl = libmnl();
    const nl = mnl.mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (nl === null) {
      const e = errno();
      throw new KernelError(
        `cannot open a rtnetlink socket: ${strerror(e)} (errno ${e})`,
        "check that the process may create netlink sockets (seccomp/AppArmor profile)",
        e,
      );
    }
    if (mnl.mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
      const e = errno();
      mnl.mnl_socket_close(nl);
      throw new KernelError(
        `cannot bind the rtnetlink socket: ${strerror(e)} (errno ${e})`,
        "check that the process may create netlink sockets (seccomp/AppArmor profile)",
        e,
      );
    }
    // Both are best effort: without them, errors still carry the errno, just no text.
    const one = new Uint8Array(new Int32Array([1]).buffer);
    mnl.mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, one, 4);
    mnl.mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, one, 4);
    return new RtnlSocket(nl);
  }

  get portid(): number {
    return this.#portid;
  }

  #handle(): Deno.PointerObject {
    if (this.#nl === null) {
      throw new TsnproxyError("rtnetlink socket used after close", "this is a bug in tsnproxy");
    }
    return this.#nl;
  }

  #send(req: NlRequest, ctx: RequestContext): number {
    const seq = this.#seq = (this.#seq + 1) >>> 0;
    req.seq = seq;
    const n = libmnl().mnl_socket_sendto(this.#handle(), req.pointer, BigInt(req.length));
    if (n < 0) {
      const e = errno();
      throw new KernelError(
        `${ctx.what}: sending the netlink request failed: ${strerror(e)} (errno ${e})`,
        genericHint({ errno: e }),
        e,
      );
    }
    return seq;
  }

  #recv(ctx: RequestContext): NlMessage[] {
    for (;;) {
      const rx = receiveBuffer();
      const n = libmnl().mnl_socket_recvfrom(this.#handle(), rx.ptr, BigInt(RECV_SIZE));
      if (n < 0) {
        const e = errno();
        if (e === 4) continue; // EINTR
        throw new KernelError(
          `${ctx.what}: receiving the netlink reply failed: ${strerror(e)} (errno ${e})`,
          genericHint({ errno: e }),
          e,
        );
      }
      return splitMessages(rx.bytes.subarray(0, Number(n)));
    }
  }

  #fail(ctx: RequestContext, f: NetlinkFailure): never {
    const better = ctx.explain?.(f);
    if (better) throw new KernelError(better.message, better.hint, f.errno);
    throw new KernelError(describeFailure(ctx.what, f), genericHint(f), f.errno);
  }

  /**
   * Sends a request with NLM_F_ACK and waits for the kernel's acknowledgement. Returns the
   * messages the kernel sent before the ACK (for a GET without NLM_F_DUMP: the object).
   * Throws KernelError (with the kernel's extack text) when the kernel refuses.
   */
  request(req: NlRequest, ctx: RequestContext): NlMessage[] {
    req.flags = req.flags | NLM_F_REQUEST | NLM_F_ACK;
    const seq = this.#send(req, ctx);
    const replies: NlMessage[] = [];
    for (;;) {
      for (const m of this.#recv(ctx)) {
        if (m.seq !== seq || m.pid !== this.#portid && m.pid !== 0) continue;
        if (m.type === NLMSG_ERROR) {
          const err = parseError(m);
          if (err.code !== 0) this.#fail(ctx, err);
          return replies;
        }
        if (m.type === NLMSG_NOOP) continue;
        replies.push(m);
      }
    }
  }

  /**
   * Sends a dump request (NLM_F_DUMP) and collects every multipart reply until NLMSG_DONE.
   * An interrupted dump (NLM_F_DUMP_INTR: the table changed meanwhile) is restarted.
   */
  dump(req: NlRequest, ctx: RequestContext): NlMessage[] {
    req.flags = req.flags | NLM_F_REQUEST | NLM_F_DUMP;
    for (let attempt = 0;; attempt++) {
      const seq = this.#send(req, ctx);
      const replies: NlMessage[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.#recv(ctx)) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m.type === NLMSG_DONE) {
            const err = parseError(m);
            if (err.code < 0) this.#fail(ctx, err);
            done = true;
            break;
          }
          if (m.type === NLMSG_ERROR) {
            const err = parseError(m);
            if (err.code !== 0) this.#fail(ctx, err);
            continue;
          }
          if (m.type === NLMSG_NOOP) continue;
          replies.push(m);
        }
      }
      if (!interrupted || attempt >= DUMP_RETRIES) return replies;
    }
  }

  close(): void {
    if (this.#nl !== null) {
      libmnl().mnl_socket_close(this.#nl);
      this.#nl = null;
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Runs fn with the given socket, or with a fresh one opened (in the calling thread's current
 * network namespace) and closed around it.
 */
export function withRtnl<T>(sock: RtnlSocket | undefined, fn: (s: RtnlSocket) => T): T {
  if (sock) return fn(sock);
  using s = RtnlSocket.open();
  return fn(s);
}
