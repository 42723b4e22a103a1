/**
 * Netlink message building (through libmnl, into a buffer we own) and parsing (TypeScript
 * DataView over received bytes). Everything is little endian: tsnproxy runs on x86_64 and
 * aarch64 nodes.
 */
import { TsnproxyError } from "../errors.ts";
import { libmnl } from "../ffi/libmnl.ts";
import { cstr } from "../ffi/open.ts";
import { NLA_F_NESTED, NLA_TYPE_MASK } from "./constants.ts";

const align4 = (n: number) => (n + 3) & ~3;

function overflow(what: string): TsnproxyError {
  return new TsnproxyError(
    `netlink request does not fit its buffer while adding ${what}`,
    "this is a bug in tsnproxy (request buffer too small): please report it",
  );
}

/**
 * One netlink request: nlmsghdr, a fixed family header, attributes. The buffer is an
 * ArrayBuffer allocated here (off the V8 heap, so its address does not move) and libmnl writes
 * into it through a raw pointer.
 */
export class NlRequest {
  readonly buf: Uint8Array<ArrayBuffer>;
  readonly #base: Deno.PointerObject;
  readonly #view: DataView;

  constructor(type: number, flags: number, capacity = 4096) {
    this.buf = new Uint8Array(new ArrayBuffer(capacity));
    const base = Deno.UnsafePointer.of(this.buf);
    if (base === null) throw overflow("the header");
    this.#base = base;
    this.#view = new DataView(this.buf.buffer);
    libmnl().mnl_nlmsg_put_header(base);
    this.#view.setUint16(4, type, true);
    this.#view.setUint16(6, flags, true);
  }

  get length(): number {
    return this.#view.getUint32(0, true);
  }
  get type(): number {
    return this.#view.getUint16(4, true);
  }
  get flags(): number {
    return this.#view.getUint16(6, true);
  }
  set flags(f: number) {
    this.#view.setUint16(6, f, true);
  }
  get seq(): number {
    return this.#view.getUint32(8, true);
  }
  set seq(s: number) {
    this.#view.setUint32(8, s >>> 0, true);
  }
  /** Raw pointer to the message, for mnl_socket_sendto. */
  get pointer(): Deno.PointerObject {
    return this.#base;
  }

  /** Appends the family header (tcmsg, ifinfomsg...) right after nlmsghdr. */
  extraHeader(bytes: Uint8Array): this {
    const at = this.length;
    if (at + align4(bytes.length) > this.buf.length) throw overflow("the family header");
    libmnl().mnl_nlmsg_put_extra_header(this.#base, BigInt(bytes.length));
    this.buf.set(bytes, at);
    return this;
  }

  #cap(): bigint {
    return BigInt(this.buf.length);
  }

  u8(type: number, v: number): this {
    if (!libmnl().mnl_attr_put_u8_check(this.#base, this.#cap(), type, v)) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  u16(type: number, v: number): this {
    if (!libmnl().mnl_attr_put_u16_check(this.#base, this.#cap(), type, v)) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  u32(type: number, v: number): this {
    if (!libmnl().mnl_attr_put_u32_check(this.#base, this.#cap(), type, v >>> 0)) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  s32(type: number, v: number): this {
    return this.u32(type, v | 0);
  }
  u64(type: number, v: bigint): this {
    if (!libmnl().mnl_attr_put_u64_check(this.#base, this.#cap(), type, BigInt.asUintN(64, v))) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  s64(type: number, v: bigint): this {
    return this.u64(type, v);
  }
  /** NUL-terminated string attribute (what the kernel's NLA_STRING/NLA_NUL_STRING want). */
  strz(type: number, s: string): this {
    if (!libmnl().mnl_attr_put_strz_check(this.#base, this.#cap(), type, cstr(s))) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  bytes(type: number, data: Uint8Array<ArrayBuffer>): this {
    if (!libmnl().mnl_attr_put_check(this.#base, this.#cap(), type, BigInt(data.length), data)) {
      throw overflow(`attribute ${type}`);
    }
    return this;
  }
  /** A nested attribute (NLA_F_NESTED set by libmnl) holding whatever `fill` adds. */
  nest(type: number, fill: (msg: this) => void): this {
    const start = libmnl().mnl_attr_nest_start_check(this.#base, this.#cap(), type);
    if (start === null) throw overflow(`nest ${type}`);
    fill(this);
    libmnl().mnl_attr_nest_end(this.#base, start);
    return this;
  }

  /** The message bytes as they will be sent (a view, not a copy). */
  message(): Uint8Array<ArrayBuffer> {
    return this.buf.subarray(0, this.length);
  }
}

/** One received netlink message; payload is everything after nlmsghdr (a copy). */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** Splits a datagram into messages (copies each payload out of the receive buffer). */
export function splitMessages(data: Uint8Array): NlMessage[] {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: NlMessage[] = [];
  let off = 0;
  while (off + 16 <= data.length) {
    const len = dv.getUint32(off, true);
    if (len < 16 || off + len > data.length) break;
    out.push({
      type: dv.getUint16(off + 4, true),
      flags: dv.getUint16(off + 6, true),
      seq: dv.getUint32(off + 8, true),
      pid: dv.getUint32(off + 12, true),
      payload: data.slice(off + 16, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** One attribute: its type (flags masked off), whether NLA_F_NESTED was set, its payload. */
export interface Attr {
  type: number;
  nested: boolean;
  data: Uint8Array;
}

/** Parses a run of attributes (nlattr/rtattr headers, 4-byte aligned). */
export function parseAttrList(data: Uint8Array): Attr[] {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: Attr[] = [];
  let off = 0;
  while (off + 4 <= data.length) {
    const len = dv.getUint16(off, true);
    const rawType = dv.getUint16(off + 2, true);
    if (len < 4 || off + len > data.length) break;
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      data: data.subarray(off + 4, off + len),
    });
    off += align4(len);
  }
  return out;
}

const decoder = new TextDecoder();

/** Attributes by type (the last one wins) with typed getters. */
export class Attrs {
  readonly list: Attr[];
  readonly #byType = new Map<number, Uint8Array>();

  constructor(data: Uint8Array) {
    this.list = parseAttrList(data);
    for (const a of this.list) this.#byType.set(a.type, a.data);
  }

  has(type: number): boolean {
    return this.#byType.has(type);
  }
  raw(type: number): Uint8Array | undefined {
    return this.#byType.get(type);
  }
  #dv(type: number, size: number): DataView | undefined {
    const d = this.#byType.get(type);
    if (!d || d.length < size) return undefined;
    return new DataView(d.buffer, d.byteOffset, d.byteLength);
  }
  u8(type: number): number | undefined {
    return this.#dv(type, 1)?.getUint8(0);
  }
  u16(type: number): number | undefined {
    return this.#dv(type, 2)?.getUint16(0, true);
  }
  u32(type: number): number | undefined {
    return this.#dv(type, 4)?.getUint32(0, true);
  }
  s32(type: number): number | undefined {
    return this.#dv(type, 4)?.getInt32(0, true);
  }
  u64(type: number): bigint | undefined {
    return this.#dv(type, 8)?.getBigUint64(0, true);
  }
  s64(type: number): bigint | undefined {
    return this.#dv(type, 8)?.getBigInt64(0, true);
  }
  /** String attribute without its trailing NUL. */
  str(type: number): string | undefined {
    const d = this.#byType.get(type);
    if (!d) return undefined;
    const end = d.indexOf(0);
    return decoder.decode(end >= 0 ? d.subarray(0, end) : d);
  }
  nested(type: number): Attrs | undefined {
    const d = this.#byType.get(type);
    return d ? new Attrs(d) : undefined;
  }
  /** Every attribute of a type, in order (for lists such as taprio schedule entries). */
  all(type: number): Uint8Array[] {
    return this.list.filter((a) => a.type === type).map((a) => a.data);
  }
}
