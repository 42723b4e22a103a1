/**
 * bpf(2) as tsnproxy issues it: the object, map and info commands straight through libc's
 * syscall binding (src/ffi/libc.ts: one FFI symbol instead of one per libbpf wrapper, which the
 * CNI plugin would bind on every ADD and DEL), and checked wrappers that turn every failure
 * into a KernelError naming the operation, the errno and a fix. libbpf keeps what it is for:
 * the object loader, tc attachment, links and probes.
 */
import { KernelError, NotInstalledError } from "../errors.ts";
import { closeFd, Errno, strerror, SYS, sys } from "../ffi/libc.ts";
import { addressOf, cstr } from "../ffi/open.ts";
import {
  BPF_F_REPLACE,
  BpfAttrBatch,
  BpfAttrEnableStats,
  BpfAttrGetFdById,
  BpfAttrInfo,
  BpfAttrLinkDetach,
  BpfAttrLinkUpdate,
  BpfAttrMapElem,
  BpfAttrObj,
  BpfCmd,
  BpfLinkInfo,
  BpfMapInfo,
  BpfProgInfo,
} from "../ffi/structs/bpf.ts";
import {
  decode,
  encode,
  type FieldSpec,
  type StructLayout,
  type Values,
} from "../ffi/structs/layout.ts";

export { closeFd };

/** bpf(2): the result (an fd, or 0), or -errno. `pointees`: the buffers attr points into. */
export function bpf(
  cmd: number,
  attr: Uint8Array<ArrayBuffer>,
  ...pointees: Array<Uint8Array | null>
): number {
  return sys(SYS.bpf, cmd, attr, attr.length, 0, pointees);
}

/** Throws a KernelError for a negative result (-errno); returns a non-negative one. */
export function check(ret: number, what: string, hint: string): number {
  if (ret >= 0) return ret;
  const e = -ret;
  throw new KernelError(`${what}: ${strerror(e)}`, hint, e);
}

// ---- maps: each returns 0 or -errno, like libbpf's wrappers ---------------------------------

function mapElem(
  cmd: number,
  fd: number,
  key: Uint8Array<ArrayBuffer> | null,
  value: Uint8Array<ArrayBuffer> | null,
  flags = 0n,
): number {
  const attr = encode(BpfAttrMapElem, {
    map_fd: fd,
    key: addressOf(key),
    value: addressOf(value),
    flags,
  });
  return bpf(cmd, attr, key, value);
}

export function mapLookup(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  value: Uint8Array<ArrayBuffer>,
): number {
  return mapElem(BpfCmd.BPF_MAP_LOOKUP_ELEM, fd, key, value);
}

export function mapUpdate(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  value: Uint8Array<ArrayBuffer>,
  flags: bigint,
): number {
  return mapElem(BpfCmd.BPF_MAP_UPDATE_ELEM, fd, key, value, flags);
}

export function mapDelete(fd: number, key: Uint8Array<ArrayBuffer>): number {
  return mapElem(BpfCmd.BPF_MAP_DELETE_ELEM, fd, key, null);
}

/** The key after prev (null: the first) into next; -ENOENT after the last. */
export function mapNextKey(
  fd: number,
  prev: Uint8Array<ArrayBuffer> | null,
  next: Uint8Array<ArrayBuffer>,
): number {
  return mapElem(BpfCmd.BPF_MAP_GET_NEXT_KEY, fd, prev, next);
}

export interface BatchRequest {
  /** The token from the previous call's outBatch (null: start at the beginning). */
  inBatch: Uint8Array<ArrayBuffer> | null;
  outBatch: Uint8Array<ArrayBuffer>;
  keys: Uint8Array<ArrayBuffer>;
  values: Uint8Array<ArrayBuffer>;
  /** Room for this many entries in keys and values. */
  count: number;
}

/**
 * BPF_MAP_LOOKUP_BATCH: ret is 0, or -errno (-ENOENT: the walk is complete, count entries
 * still valid); count is how many entries the kernel wrote.
 */
export function mapLookupBatch(fd: number, req: BatchRequest): { ret: number; count: number } {
  const attr = encode(BpfAttrBatch, {
    "batch.in_batch": addressOf(req.inBatch),
    "batch.out_batch": addressOf(req.outBatch),
    "batch.keys": addressOf(req.keys),
    "batch.values": addressOf(req.values),
    "batch.count": req.count,
    "batch.map_fd": fd,
  });
  const ret = bpf(
    BpfCmd.BPF_MAP_LOOKUP_BATCH,
    attr,
    req.inBatch,
    req.outBatch,
    req.keys,
    req.values,
  );
  return { ret, count: decode(BpfAttrBatch, attr)["batch.count"] };
}

// ---- pinned objects -------------------------------------------------------------------------

/** Opens a pinned object; undefined when the pin does not exist. */
export function objGet(path: string): number | undefined {
  const name = cstr(path);
  const fd = bpf(BpfCmd.BPF_OBJ_GET, encode(BpfAttrObj, { pathname: addressOf(name) }), name);
  if (fd >= 0) return fd;
  const e = -fd;
  if (e === Errno.ENOENT) return undefined;
  throw new KernelError(
    `cannot open pinned BPF object ${path}: ${strerror(e)}`,
    "run as root with a bpf filesystem mounted at /sys/fs/bpf",
    e,
  );
}

/** Opens the object pinned at path for read(fd) and closes it; undefined without the pin. */
export function readPinned<T>(path: string, read: (fd: number) => T): T | undefined {
  const fd = objGet(path);
  if (fd === undefined) return undefined;
  try {
    return read(fd);
  } finally {
    closeFd(fd);
  }
}

/** The id of the program pinned at path; undefined without the pin. */
export function progIdAt(path: string): number | undefined {
  return readPinned(path, (fd) => progInfo(fd).id);
}

/**
 * Detaches the link pinned at path now (BPF_LINK_DETACH), before its pin goes: a link whose
 * last reference is dropped is released only after an RCU grace period, and an attach on the
 * same hook in between would find it still there. 0, or -errno (e.g. no such pin).
 */
export function linkDetachAt(path: string): number {
  return readPinned(
    path,
    (fd) => bpf(BpfCmd.BPF_LINK_DETACH, encode(BpfAttrLinkDetach, { "link_detach.link_fd": fd })),
  ) ?? -Errno.ENOENT;
}

/**
 * Makes the link pinned at `path` run `progFd` instead of its program (BPF_LINK_UPDATE): one
 * atomic swap, the link keeps its place on the hook. With `oldProgFd` (BPF_F_REPLACE) only if
 * the link still runs that program. 0, or -errno.
 */
export function linkUpdateAt(path: string, progFd: number, oldProgFd?: number): number {
  return readPinned(path, (fd) =>
    bpf(
      BpfCmd.BPF_LINK_UPDATE,
      encode(BpfAttrLinkUpdate, {
        "link_update.link_fd": fd,
        "link_update.new_prog_fd": progFd,
        "link_update.flags": oldProgFd === undefined ? 0 : BPF_F_REPLACE,
        "link_update.old_prog_fd": oldProgFd ?? 0,
      }),
    )) ?? -Errno.ENOENT;
}

/** Removes the pin at path when a BPF object is pinned there (1), else nothing (0). */
export function unpinIfPresent(path: string): number {
  if (!readPinned(path, () => true)) return 0;
  Deno.removeSync(path);
  return 1;
}

/** Opens a pinned object that must exist (the node was installed). */
export function objGetRequired(path: string): number {
  const fd = objGet(path);
  if (fd === undefined) {
    throw new NotInstalledError(`tsnproxy is not installed on this node: ${path} is missing`);
  }
  return fd;
}

export function objPin(fd: number, path: string): void {
  const name = cstr(path);
  check(
    bpf(BpfCmd.BPF_OBJ_PIN, encode(BpfAttrObj, { pathname: addressOf(name), bpf_fd: fd }), name),
    `cannot pin ${path}`,
    "the pin root must be on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf) and not already used",
  );
}

function infoByFd<F extends Record<string, FieldSpec>>(
  fd: number,
  layout: StructLayout<F>,
  what: string,
): Values<F> {
  // Room for the whole kernel struct: the kernel fills what it knows, we decode our prefix.
  const buf = new Uint8Array(256);
  const attr = encode(BpfAttrInfo, {
    "info.bpf_fd": fd,
    "info.info_len": buf.length,
    "info.info": addressOf(buf),
  });
  check(bpf(BpfCmd.BPF_OBJ_GET_INFO_BY_FD, attr, buf), `cannot read ${what} info`, "run as root");
  return decode(layout, buf);
}

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
  tag: string;
  /** Time spent in the program and runs, counted while run-time stats are enabled. */
  runTimeNs: bigint;
  runCount: bigint;
}

export function progInfo(fd: number): ProgInfo {
  const v = infoByFd(fd, BpfProgInfo, "program");
  return {
    id: v.id,
    type: v.type,
    name: nulTerminated(v.name),
    tag: hex(v.tag),
    runTimeNs: v.run_time_ns,
    runCount: v.run_cnt,
  };
}

/** The ids of the maps a program uses (up to 64). */
export function progMapIds(fd: number): number[] {
  const ids = new Uint32Array(64);
  const buf = new Uint8Array(256);
  const dv = new DataView(buf.buffer);
  dv.setUint32(BpfProgInfo.fields.nr_map_ids[0], ids.length, true);
  dv.setBigUint64(BpfProgInfo.fields.map_ids[0], addressOf(ids), true);
  const attr = encode(BpfAttrInfo, {
    "info.bpf_fd": fd,
    "info.info_len": buf.length,
    "info.info": addressOf(buf),
  });
  const idBytes = new Uint8Array(ids.buffer);
  check(
    bpf(BpfCmd.BPF_OBJ_GET_INFO_BY_FD, attr, buf, idBytes),
    "cannot read program info",
    "run as root",
  );
  const n = Math.min(dv.getUint32(BpfProgInfo.fields.nr_map_ids[0], true), ids.length);
  return [...ids.subarray(0, n)];
}

export interface MapInfo {
  id: number;
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export function mapInfo(fd: number): MapInfo {
  const v = infoByFd(fd, BpfMapInfo, "map");
  return {
    id: v.id,
    type: v.type,
    name: nulTerminated(v.name),
    keySize: v.key_size,
    valueSize: v.value_size,
    maxEntries: v.max_entries,
  };
}

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** tcx links: the interface index. */
  ifindex: number;
  attachType: number;
}

export function linkInfo(fd: number): LinkInfo {
  const v = infoByFd(fd, BpfLinkInfo, "link");
  return {
    id: v.id,
    type: v.type,
    progId: v.prog_id,
    ifindex: v["netns.netns_ino"],
    attachType: v["netns.attach_type"],
  };
}

function nulTerminated(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

export type ObjectKind = "prog" | "map" | "link";
const GET_FD_BY_ID = {
  prog: BpfCmd.BPF_PROG_GET_FD_BY_ID,
  map: BpfCmd.BPF_MAP_GET_FD_BY_ID,
  link: BpfCmd.BPF_LINK_GET_FD_BY_ID,
} as const;

/** An fd for the kernel object with this id: the fd, or -errno (-ENOENT: gone). */
export function fdById(kind: ObjectKind, id: number): number {
  return bpf(GET_FD_BY_ID[kind], encode(BpfAttrGetFdById, { prog_id: id }));
}

/** A loaded program's name by its id; undefined when it is gone. */
export function progNameById(id: number): string | undefined {
  const fd = fdById("prog", id);
  if (fd < 0) return undefined;
  try {
    return progInfo(fd).name;
  } finally {
    closeFd(fd);
  }
}

/**
 * Turns on the kernel's per-program run-time accounting (BPF_ENABLE_STATS) for as long as
 * the returned fd is open. It costs two clock reads per program run, so it is for
 * measurements, never left on.
 */
export function enableRunTimeStats(): number {
  const BPF_STATS_RUN_TIME = 0;
  return check(
    bpf(
      BpfCmd.BPF_ENABLE_STATS,
      encode(BpfAttrEnableStats, { "enable_stats.type": BPF_STATS_RUN_TIME }),
    ),
    "cannot enable BPF run-time stats",
    "run as root (CAP_SYS_ADMIN)",
  );
}
