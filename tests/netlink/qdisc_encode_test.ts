/**
 * Encoded taprio/mqprio/etf requests against byte layouts derived by hand from
 * include/uapi/linux/pkt_sched.h (these kinds are not built into the host kernel;
 * qdisc_apply_test.ts applies them for real in the Debian guests). Also: the parsed config round-trips through the read-back parser.
 */
import assert from "node:assert/strict";
import { type MqprioConfig, parseQdiscConfig, type TaprioConfig } from "../../src/config/qdisc.ts";
import {
  Attrs,
  buildQdiscRequest,
  parseQdiscOptions,
  type QdiscInfo,
  TC_H_ROOT,
  TCA_KIND,
  TCA_OPTIONS,
  tcHandle,
} from "../../src/netlink/mod.ts";
import { configFromKernel } from "../../src/install/qdisc_inspect.ts";

const le16 = (v: number) => [v & 0xff, v >>> 8];
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const le64 = (v: bigint) =>
  Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));

/** Returns [nlmsghdr+tcmsg bytes, the TCA_KIND attribute, the TCA_OPTIONS attribute] of a request. */
function split(msg: Uint8Array) {
  const attrs = msg.subarray(16 + 20);
  const a = new Attrs(attrs);
  const kindLen = attrs[0] | (attrs[1] << 8);
  const optsAt = (kindLen + 3) & ~3;
  return {
    head: msg.subarray(0, 36),
    attrs: a,
    kind: attrs.subarray(0, optsAt),
    options: attrs.subarray(optsAt),
  };
}

function taprio(input: unknown): TaprioConfig {
  const c = parseQdiscConfig(input);
  assert.ok(c.kind === "taprio");
  return c;
}

function mqprio(input: unknown): MqprioConfig {
  const c = parseQdiscConfig(input);
  assert.ok(c.kind === "mqprio");
  return c;
}

const taprioInput = {
  kind: "taprio",
  numTc: 2,
  map: [0, 1],
  queues: ["1@0", { count: 1, offset: 1 }],
  baseTime: "1000",
  entries: [
    { command: "S", gateMask: "0x1", intervalNs: 300000 },
    { command: "S", gateMask: 2, intervalNs: 700000 },
  ],
  clockid: "CLOCK_TAI",
};

Deno.test("taprio request bytes follow pkt_sched.h", () => {
  const cfg = taprio(taprioInput);
  const msg = buildQdiscRequest("replace", { ifindex: 7 }, cfg).message();
  const { head, kind, options } = split(msg);

  // nlmsghdr: len, RTM_NEWQDISC (36), NLM_F_CREATE|NLM_F_REPLACE (0x500); seq/pid 0 until sent
  assert.deepEqual([...head.subarray(0, 8)], [...le32(msg.length), ...le16(36), ...le16(0x500)]);
  // tcmsg: family 0, pads, ifindex 7, handle 100:0, parent root (ffffffff), info 0
  assert.deepEqual([...head.subarray(16)], [
    0,
    0,
    0,
    0,
    ...le32(7),
    ...le32(0x01000000),
    ...le32(0xffffffff),
    ...le32(0),
  ]);
  // TCA_KIND "taprio\0": len 4+7 = 11, padded to 12
  assert.deepEqual([...kind], [
    11,
    0,
    1,
    0,
    ..."taprio".split("").map((c) => c.charCodeAt(0)),
    0,
    0,
  ]);

  // struct tc_mqprio_qopt (82 bytes): num_tc, prio_tc_map[16], hw, count[16] u16, offset[16] u16
  const qopt = [
    2,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    ...le16(1),
    ...le16(1),
    ...Array(28).fill(0),
    ...le16(0),
    ...le16(1),
    ...Array(28).fill(0),
  ];
  assert.equal(qopt.length, 82);
  const entry = (gate: number, interval: number) => [
    ...le16(28),
    ...le16(0x8001), // TCA_TAPRIO_SCHED_ENTRY, nested
    ...le16(5),
    ...le16(2),
    0,
    0,
    0,
    0, // CMD u8 = S (0), padded
    ...le16(8),
    ...le16(3),
    ...le32(gate), // GATE_MASK u32
    ...le16(8),
    ...le16(4),
    ...le32(interval), // INTERVAL u32
  ];
  const expected = [
    ...le16(172),
    ...le16(0x8002), // TCA_OPTIONS, nested (libmnl sets NLA_F_NESTED)
    ...le16(86),
    ...le16(1),
    ...qopt,
    0,
    0, // PRIOMAP, 86 -> padded to 88
    ...le16(8),
    ...le16(5),
    ...le32(11), // SCHED_CLOCKID s32 = CLOCK_TAI (11)
    ...le16(12),
    ...le16(3),
    ...le64(1000n), // SCHED_BASE_TIME s64
    ...le16(60),
    ...le16(0x8002), // SCHED_ENTRY_LIST, nested
    ...entry(0x1, 300000),
    ...entry(0x2, 700000),
  ];
  assert.deepEqual([...options], expected);
  assert.equal(msg.length, 16 + 20 + 12 + 172);
});

Deno.test("taprio flags, txtime delay, full offload without clockid, cycle time", () => {
  const assist = taprio({
    ...taprioInput,
    txtimeAssist: true,
    txtimeDelayNs: 500000,
    cycleTimeNs: 1000000,
  });
  const a = new Attrs(split(buildQdiscRequest("replace", { ifindex: 1 }, assist).message()).options)
    .nested(TCA_OPTIONS);
  assert.ok(a);
  assert.equal(a.u32(10), 0x1, "TCA_TAPRIO_ATTR_FLAGS = TXTIME_ASSIST");
  assert.equal(a.u32(11), 500000, "TCA_TAPRIO_ATTR_TXTIME_DELAY");
  assert.equal(a.s64(8), 1000000n, "TCA_TAPRIO_ATTR_SCHED_CYCLE_TIME");
  assert.equal(a.s32(5), 11);

  const { clockid: _, ...noClock } = taprioInput;
  const offload = taprio({ ...noClock, fullOffload: true });
  const o = new Attrs(
    split(buildQdiscRequest("replace", { ifindex: 1 }, offload).message()).options,
  )
    .nested(TCA_OPTIONS);
  assert.ok(o);
  assert.equal(o.u32(10), 0x2, "FULL_OFFLOAD");
  assert.equal(o.has(5), false, "no clockid with full offload (the kernel refuses one)");
  assert.equal(o.has(11), false);
});

Deno.test("mqprio options are the bare struct tc_mqprio_qopt, not a nest", () => {
  const cfg = mqprio({
    kind: "mqprio",
    numTc: 3,
    map: [0, 1, 2, 2],
    queues: ["1@0", "1@1", "2@2"],
    hw: 1,
  });
  const { head, kind, options } = split(buildQdiscRequest("add", { ifindex: 3 }, cfg).message());
  assert.deepEqual([...head.subarray(6, 8)], le16(0x600), "NLM_F_CREATE|NLM_F_EXCL");
  assert.deepEqual([...kind.subarray(0, 4)], [11, 0, 1, 0]);
  assert.deepEqual([...options], [
    ...le16(86),
    ...le16(2), // TCA_OPTIONS without NLA_F_NESTED, 82-byte payload
    3,
    0,
    1,
    2,
    2,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // num_tc, map padded to 16
    1, // hw
    ...le16(1),
    ...le16(1),
    ...le16(2),
    ...Array(26).fill(0), // count[16]
    ...le16(0),
    ...le16(1),
    ...le16(2),
    ...Array(26).fill(0), // offset[16]
    0,
    0, // attribute padding
  ]);
});

Deno.test("etf under a taprio class: nest with struct tc_etf_qopt", () => {
  const cfg = taprio({ ...taprioInput, etf: [{ queue: 1, deltaNs: 200000 }] });
  const { queue, ...etf } = cfg.etf![0];
  assert.equal(queue, 1);
  const msg = buildQdiscRequest(
    "replace",
    { ifindex: 4, parent: tcHandle(0x100, queue + 1) },
    { kind: "etf", ...etf },
  ).message();
  const { head, options } = split(msg);
  assert.deepEqual(
    [...head.subarray(24, 32)],
    [...le32(0), ...le32(0x01000002)],
    "handle 0, parent 100:2",
  );
  assert.deepEqual([...options], [
    ...le16(20),
    ...le16(0x8002), // TCA_OPTIONS, nested
    ...le16(16),
    ...le16(1), // TCA_ETF_PARMS
    ...le32(200000), // delta
    ...le32(11), // clockid CLOCK_TAI
    ...le32(0x4), // flags: SKIP_SOCK_CHECK (default on), no deadline mode, no offload
  ]);

  const all = {
    kind: "etf" as const,
    ...etf,
    deadlineMode: true,
    offload: true,
    skipSockCheck: false,
  };
  const flags = new Attrs(
    split(buildQdiscRequest("replace", { ifindex: 4 }, all).message()).options,
  )
    .nested(TCA_OPTIONS)!.raw(1)!;
  assert.deepEqual([...flags.subarray(8)], le32(0x3));
});

Deno.test("delete requests carry only tcmsg (and kind for clsact)", () => {
  const msg = buildQdiscRequest("delete", {
    ifindex: 9,
    parent: TC_H_ROOT,
    handle: tcHandle(0x100, 0),
  })
    .message();
  assert.equal(msg.length, 36);
  assert.deepEqual([...msg.subarray(4, 6)], le16(37), "RTM_DELQDISC");
  const c = buildQdiscRequest("delete", { ifindex: 9 }, { kind: "clsact" }).message();
  const { head, attrs } = split(c);
  assert.deepEqual([...head.subarray(24, 32)], [...le32(0xffff0000), ...le32(0xfffffff1)]);
  assert.equal(attrs.str(TCA_KIND), "clsact");
  assert.equal(attrs.has(TCA_OPTIONS), false);
});

Deno.test("taprio options parse back into the same config", () => {
  const cfg = taprio({ ...taprioInput, etf: [{ queue: 0, deltaNs: 150000 }] });
  const opts = split(buildQdiscRequest("replace", { ifindex: 2 }, cfg).message()).options;
  const parsed = parseQdiscOptions("taprio", opts.subarray(4));
  assert.ok(parsed?.kind === "taprio");
  assert.equal(parsed.clockid, 11);
  assert.equal(parsed.oper?.baseTime, 1000n);
  const etfBytes = split(
    buildQdiscRequest("replace", { ifindex: 2 }, { kind: "etf", ...cfg.etf![0] }).message(),
  ).options.subarray(4);
  const root: QdiscInfo = {
    ifindex: 2,
    handle: tcHandle(0x100, 0),
    parent: TC_H_ROOT,
    kind: "taprio",
    options: parsed,
    stats: { bytes: 0n, packets: 0, drops: 0, overlimits: 0, requeues: 0, qlen: 0, backlog: 0 },
  };
  const etf: QdiscInfo = {
    ...root,
    handle: tcHandle(0x8001, 0),
    parent: tcHandle(0x100, 1),
    kind: "etf",
    options: parseQdiscOptions("etf", etfBytes),
  };
  assert.deepEqual(configFromKernel(root, [root, etf]), cfg);
});
