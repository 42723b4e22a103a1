/**
 * libbpf and bpf(2) struct layouts (x86_64 and other LP64 targets). Checked against the
 * system headers by tests/unit/structs_test.ts.
 */
import { struct } from "./layout.ts";

const LIBBPF = ["bpf/libbpf.h"];
const BPF = ["bpf/bpf.h"];
const UAPI = ["linux/bpf.h"];

/** Prefix up to pin_root_path: maps declared with LIBBPF_PIN_BY_NAME are pinned there. */
export const BpfObjectOpenOpts = struct("struct bpf_object_open_opts", LIBBPF, 32, {
  sz: [0, "u64"],
  object_name: [8, "ptr"],
  relaxed_maps: [16, "u8"],
  pin_root_path: [24, "ptr"],
}, { prefix: true });

export const BpfTcHook = struct("struct bpf_tc_hook", LIBBPF, 24, {
  sz: [0, "u64"],
  ifindex: [8, "i32"],
  attach_point: [12, "u32"],
  parent: [16, "u32"],
});

export const BpfTcOpts = struct("struct bpf_tc_opts", LIBBPF, 32, {
  sz: [0, "u64"],
  prog_fd: [8, "i32"],
  flags: [12, "u32"],
  prog_id: [16, "u32"],
  handle: [20, "u32"],
  priority: [24, "u32"],
});

/** Prefix up to flags: libbpf 1.1 passes unknown attach types (tcx) through with flags only. */
export const BpfLinkCreateOpts = struct("struct bpf_link_create_opts", BPF, 16, {
  sz: [0, "u64"],
  flags: [8, "u32"],
}, { prefix: true });

export const BpfProgQueryOpts = struct("struct bpf_prog_query_opts", BPF, 40, {
  sz: [0, "u64"],
  query_flags: [8, "u32"],
  attach_flags: [12, "u32"],
  prog_ids: [16, "ptr"],
  prog_cnt: [24, "u32"],
  prog_attach_flags: [32, "ptr"],
}, { prefix: true });

export const BpfMapBatchOpts = struct("struct bpf_map_batch_opts", BPF, 24, {
  sz: [0, "u64"],
  elem_flags: [8, "u64"],
  flags: [16, "u64"],
});

export const BpfTestRunOpts = struct("struct bpf_test_run_opts", BPF, 80, {
  sz: [0, "u64"],
  data_in: [8, "ptr"],
  data_out: [16, "ptr"],
  data_size_in: [24, "u32"],
  data_size_out: [28, "u32"],
  ctx_in: [32, "ptr"],
  ctx_out: [40, "ptr"],
  ctx_size_in: [48, "u32"],
  ctx_size_out: [52, "u32"],
  retval: [56, "u32"],
  repeat: [60, "i32"],
  duration: [64, "u32"],
  flags: [68, "u32"],
  cpu: [72, "u32"],
  batch_size: [76, "u32"],
}, { prefix: true });

/** The fields we read of bpf_prog_info; the kernel fills as much as we give it room for. */
export const BpfProgInfo = struct("struct bpf_prog_info", UAPI, 208, {
  type: [0, "u32"],
  id: [4, "u32"],
  tag: [8, "bytes", 8],
  load_time: [40, "u64"],
  nr_map_ids: [52, "u32"],
  map_ids: [56, "u64"],
  name: [64, "bytes", 16],
  /** Filled while BPF_ENABLE_STATS (or the kernel.bpf_stats_enabled sysctl) is on. */
  run_time_ns: [192, "u64"],
  run_cnt: [200, "u64"],
}, { prefix: true });

export const BpfMapInfo = struct("struct bpf_map_info", UAPI, 40, {
  type: [0, "u32"],
  id: [4, "u32"],
  key_size: [8, "u32"],
  value_size: [12, "u32"],
  max_entries: [16, "u32"],
  map_flags: [20, "u32"],
  name: [24, "bytes", 16],
}, { prefix: true });

/** bpf_link_info prefix: type, id, prog_id, then the first words of the per-type union
 * (tcx: ifindex, attach_type; the same offsets as netns's netns_ino, attach_type). */
export const BpfLinkInfo = struct("struct bpf_link_info", UAPI, 24, {
  type: [0, "u32"],
  id: [4, "u32"],
  prog_id: [8, "u32"],
  "netns.netns_ino": [16, "u32"],
  "netns.attach_type": [20, "u32"],
}, { prefix: true });

/**
 * union bpf_attr as the bpf(2) commands tsnproxy issues itself read it (src/bpf/sys.ts). Each
 * is the prefix that command uses: the kernel zero-fills the rest of the union.
 */
export const BpfAttrObj = struct("union bpf_attr", UAPI, 16, {
  pathname: [0, "ptr"],
  bpf_fd: [8, "u32"],
  file_flags: [12, "u32"],
}, { prefix: true });

/** BPF_MAP_{LOOKUP,UPDATE,DELETE}_ELEM and BPF_MAP_GET_NEXT_KEY (next_key shares value's place). */
export const BpfAttrMapElem = struct("union bpf_attr", UAPI, 32, {
  map_fd: [0, "u32"],
  key: [8, "ptr"],
  value: [16, "ptr"],
  next_key: [16, "ptr"],
  flags: [24, "u64"],
}, { prefix: true });

export const BpfAttrBatch = struct("union bpf_attr", UAPI, 56, {
  "batch.in_batch": [0, "ptr"],
  "batch.out_batch": [8, "ptr"],
  "batch.keys": [16, "ptr"],
  "batch.values": [24, "ptr"],
  "batch.count": [32, "u32"],
  "batch.map_fd": [36, "u32"],
  "batch.elem_flags": [40, "u64"],
  "batch.flags": [48, "u64"],
}, { prefix: true });

export const BpfAttrInfo = struct("union bpf_attr", UAPI, 16, {
  "info.bpf_fd": [0, "u32"],
  "info.info_len": [4, "u32"],
  "info.info": [8, "ptr"],
}, { prefix: true });

/** BPF_{PROG,MAP,LINK}_GET_FD_BY_ID: the id's field is the same word for all three. */
export const BpfAttrGetFdById = struct("union bpf_attr", UAPI, 12, {
  prog_id: [0, "u32"],
  open_flags: [8, "u32"],
}, { prefix: true });

export const BpfAttrEnableStats = struct("union bpf_attr", UAPI, 4, {
  "enable_stats.type": [0, "u32"],
}, { prefix: true });

export const BpfAttrLinkDetach = struct("union bpf_attr", UAPI, 4, {
  "link_detach.link_fd": [0, "u32"],
}, { prefix: true });

/** BPF_LINK_UPDATE: swaps the program a link runs, in place. */
export const BpfAttrLinkUpdate = struct("union bpf_attr", UAPI, 16, {
  "link_update.link_fd": [0, "u32"],
  "link_update.new_prog_fd": [4, "u32"],
  "link_update.flags": [8, "u32"],
  "link_update.old_prog_fd": [12, "u32"],
}, { prefix: true });

/** enum bpf_cmd values of the commands above (checked against linux/bpf.h). */
export const BpfCmd = {
  BPF_MAP_LOOKUP_ELEM: 1,
  BPF_MAP_UPDATE_ELEM: 2,
  BPF_MAP_DELETE_ELEM: 3,
  BPF_MAP_GET_NEXT_KEY: 4,
  BPF_OBJ_PIN: 6,
  BPF_OBJ_GET: 7,
  BPF_PROG_GET_FD_BY_ID: 13,
  BPF_MAP_GET_FD_BY_ID: 14,
  BPF_OBJ_GET_INFO_BY_FD: 15,
  BPF_MAP_LOOKUP_BATCH: 24,
  BPF_LINK_UPDATE: 29,
  BPF_LINK_GET_FD_BY_ID: 30,
  BPF_ENABLE_STATS: 32,
  BPF_LINK_DETACH: 34,
} as const;

export const BPF_TC_INGRESS = 1;
export const BPF_TC_EGRESS = 2;
export const BPF_TC_F_REPLACE = 1;
/** enum bpf_attach_type values libbpf 1.1 has no names for. */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
export const BPF_NETKIT_PRIMARY = 54;
export const BPF_NETKIT_PEER = 55;
export const BPF_F_REPLACE = 1 << 2;
export const BPF_F_BEFORE = 1 << 3;
export const BPF_F_AFTER = 1 << 4;
export const BPF_ANY = 0n;
export const BPF_NOEXIST = 1n;
export const BPF_EXIST = 2n;
export const BPF_PROG_TYPE_SCHED_CLS = 3;
export const BPF_LINK_TYPE_TCX = 11;

/** struct __sk_buff: BPF_PROG_TEST_RUN's ctx_in/ctx_out for tc programs (the fields the
 * kernel lets a test set: mark, priority, ingress_ifindex, ifindex, cb, tstamp, ...). */
export const SkBuff = struct("struct __sk_buff", UAPI, 192, {
  len: [0, "u32"],
  mark: [8, "u32"],
  protocol: [16, "u32"],
  priority: [32, "u32"],
  ingress_ifindex: [36, "u32"],
  ifindex: [40, "u32"],
  tstamp: [152, "u64"],
  wire_len: [160, "u32"],
  gso_segs: [164, "u32"],
  gso_size: [176, "u32"],
  tstamp_type: [180, "u8"],
});
