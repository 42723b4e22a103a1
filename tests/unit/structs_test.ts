/**
 * Every libbpf, bpf(2) and datapath struct layout in src/ffi/structs/ is checked against
 * the C headers by the compiler itself: the test generates _Static_assert()s for each
 * field's offset and size and each struct's size, and compiles them with clang. A wrong
 * offset fails the build with the assertion's message.
 */
import assert from "node:assert/strict";
import { run } from "../lib/run.ts";
import * as bpf from "../../src/ffi/structs/bpf.ts";
import * as datapath from "../../src/ffi/structs/datapath.ts";
import * as libcStructs from "../../src/ffi/structs/libc.ts";
import * as ethtool from "../../src/ffi/structs/ethtool.ts";
import * as time from "../../src/ffi/structs/time.ts";
import { SYSCALL_NUMBERS } from "../../src/ffi/libc.ts";
import { snake } from "../../src/agent/metrics.ts";
import { fieldSize, type FieldSpec, type StructLayout } from "../../src/ffi/structs/layout.ts";

type AnyLayout = StructLayout<Record<string, FieldSpec>>;

function layoutsOf(mod: Record<string, unknown>): AnyLayout[] {
  return Object.values(mod).filter((v): v is AnyLayout =>
    typeof v === "object" && v !== null && "cName" in v && "fields" in v
  );
}

function asserts(layouts: AnyLayout[]): string[] {
  const out: string[] = [];
  for (const l of layouts) {
    let end = 0;
    for (const [name, spec] of Object.entries(l.fields)) {
      const size = fieldSize(spec);
      end = Math.max(end, spec[0] + size);
      out.push(
        `_Static_assert(offsetof(${l.cName}, ${name}) == ${
          spec[0]
        }, "offsetof(${l.cName}, ${name})");`,
        `_Static_assert(sizeof(((${l.cName} *)0)->${name}) == ${size}, "sizeof ${l.cName}.${name}");`,
      );
    }
    out.push(
      l.prefix
        ? `_Static_assert(sizeof(${l.cName}) >= ${l.size} && ${end} <= ${l.size}, "prefix of ${l.cName}");`
        : `_Static_assert(sizeof(${l.cName}) == ${l.size}, "sizeof(${l.cName})");`,
    );
  }
  return out;
}

async function compile(source: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tsnp-structs-" });
  try {
    await Deno.writeTextFile(`${dir}/probe.c`, source);
    const out = await run(
      ["clang", ...args, "-fsyntax-only", "-Wall", "-Werror", `${dir}/probe.c`],
      {
        allowFail: true,
      },
    );
    return { ok: out.code === 0, stderr: out.stderr };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const root = new URL("../../", import.meta.url).pathname;

Deno.test("libbpf and bpf(2) struct layouts match the installed headers", async () => {
  const layouts = layoutsOf(bpf);
  assert.ok(layouts.length >= 8);
  const headers = new Set(layouts.flatMap((l) => l.headers));
  const src = [
    "#include <stddef.h>",
    ...[...headers].map((h) => `#include <${h}>`),
    ...asserts(layouts),
  ];
  const r = await compile(src.join("\n") + "\n", []);
  assert.ok(r.ok, r.stderr);
});

Deno.test("libc struct layouts match the installed headers", async () => {
  const layouts = layoutsOf(libcStructs);
  assert.equal(layouts.length, 7);
  const headers = new Set(layouts.flatMap((l) => l.headers));
  // struct ucred and struct statx are GNU extensions of sys/socket.h and sys/stat.h.
  const src = [
    "#define _GNU_SOURCE",
    "#include <stddef.h>",
    ...[...headers].map((h) => `#include <${h}>`),
  ];
  const r = await compile([...src, ...asserts(layouts)].join("\n") + "\n", []);
  assert.ok(r.ok, r.stderr);
});

Deno.test("bpf(2) command numbers match linux/bpf.h", async () => {
  const src = [
    "#include <linux/bpf.h>",
    ...Object.entries(bpf.BpfCmd).map(([name, n]) => `_Static_assert(${name} == ${n}, "${name}");`),
  ];
  const r = await compile(src.join("\n") + "\n", []);
  assert.ok(r.ok, r.stderr);
});

Deno.test("syscall numbers match the kernel headers of both architectures", async () => {
  // x86_64 has its own table; aarch64 uses the generic one, which any architecture's
  // headers carry as asm-generic/unistd.h.
  const tables = [
    { header: "asm/unistd_64.h", numbers: SYSCALL_NUMBERS.x86_64 },
    { header: "asm-generic/unistd.h", numbers: SYSCALL_NUMBERS.aarch64 },
  ];
  for (const { header, numbers } of tables) {
    const src = [
      `#include <${header}>`,
      ...Object.entries(numbers).map(([name, n]) =>
        `_Static_assert(__NR_${name} == ${n}, "${header}: ${name}");`
      ),
    ];
    const r = await compile(src.join("\n") + "\n", []);
    assert.ok(r.ok, r.stderr);
  }
});

Deno.test("datapath struct layouts match bpf/tsnproxy.h", async () => {
  const layouts = layoutsOf(datapath);
  assert.ok(layouts.length >= 4);
  const src = ["#include <stddef.h>", '#include "tsnproxy.h"', ...asserts(layouts)];
  const r = await compile(src.join("\n") + "\n", [
    "-target",
    "bpf",
    "-I/usr/include/x86_64-linux-gnu",
    `-I${root}bpf`,
  ]);
  assert.ok(r.ok, r.stderr);
});

Deno.test("the struct probe catches a wrong offset", async () => {
  // Guards the test itself: a layout with a deliberately wrong offset must not compile.
  const wrong = {
    ...bpf.BpfTcOpts,
    fields: { ...bpf.BpfTcOpts.fields, handle: [24, "u32"] as const },
  };
  const r = await compile(
    ["#include <stddef.h>", "#include <bpf/libbpf.h>", ...asserts([wrong])].join("\n"),
    [],
  );
  assert.equal(r.ok, false);
  assert.match(r.stderr, /offsetof\(struct bpf_tc_opts, handle\)/);
});

Deno.test("the datapath counters and constants match bpf/tsnproxy.h", async () => {
  const src = [
    '#include "tsnproxy.h"',
    `_Static_assert(TSNP_ABI == ${datapath.TSNP_ABI}, "TSNP_ABI");`,
    `_Static_assert(TSNP_SLOTS == ${datapath.TSNP_SLOTS}, "TSNP_SLOTS");`,
    `_Static_assert(TSNP_RULES == ${datapath.TSNP_RULES}, "TSNP_RULES");`,
    `_Static_assert(TSNP_POD_CARRY_TAG == ${datapath.TSNP_POD_CARRY_TAG}, "CARRY_TAG");`,
    `_Static_assert(TSNP_POD_CARRY_STAGE == ${datapath.TSNP_POD_CARRY_STAGE}, "CARRY_STAGE");`,
    `_Static_assert(TSNP_POD_REMAP == ${datapath.TSNP_POD_REMAP}, "POD_REMAP");`,
    `_Static_assert(TSNP_POD_CLASSIFY == ${datapath.TSNP_POD_CLASSIFY}, "POD_CLASSIFY");`,
    `_Static_assert(TSNP_POD_NETKIT == ${datapath.TSNP_POD_NETKIT}, "POD_NETKIT");`,
    `_Static_assert(TSNP_CONFIG_TAGS == ${datapath.TSNP_CONFIG_TAGS}, "CONFIG_TAGS");`,
    `_Static_assert(TSNP_TAG == ${datapath.TSNP_TAG}, "TSNP_TAG");`,
    `_Static_assert(TSNP_TAG_MASK == ${datapath.TSNP_TAG_MASK}, "TSNP_TAG_MASK");`,
    `_Static_assert(TSNP_REQ == ${datapath.TSNP_REQ}, "TSNP_REQ");`,
    `_Static_assert(TSNP_REQ_PRIO_MASK == ${datapath.TSNP_REQ_PRIO_MASK}, "REQ_PRIO_MASK");`,
    `_Static_assert(sizeof(tsnp_release) == ${datapath.TSNP_RELEASE_LEN}, "RELEASE_LEN");`,
    ...datapath.COUNTERS.map((name, i) =>
      `_Static_assert(TSNP_${snake(name).toUpperCase()} == ${i}, "counter ${i}");`
    ),
    `_Static_assert(TSNP_COUNTER_MAX == ${datapath.COUNTERS.length}, "counter count");`,
  ];
  const r = await compile(src.join("\n") + "\n", [
    "-target",
    "bpf",
    "-I/usr/include/x86_64-linux-gnu",
    `-I${root}bpf`,
  ]);
  assert.ok(r.ok, r.stderr);
});

Deno.test("timex and ethtool time-stamping layouts and constants match the headers", async () => {
  const layouts = [...layoutsOf(time), ...layoutsOf(ethtool)];
  assert.equal(layouts.length, 3);
  const headers = new Set(layouts.flatMap((l) => l.headers));
  const constants = {
    ADJ_STATUS: time.ADJ_STATUS,
    ADJ_TAI: time.ADJ_TAI,
    STA_UNSYNC: time.STA_UNSYNC,
    TIME_ERROR: time.TIME_ERROR,
    SIOCETHTOOL: ethtool.SIOCETHTOOL,
    ETHTOOL_GET_TS_INFO: ethtool.ETHTOOL_GET_TS_INFO,
    HWTSTAMP_TX_ON: ethtool.HWTSTAMP_TX_ON,
    HWTSTAMP_FILTER_ALL: ethtool.HWTSTAMP_FILTER_ALL,
    HWTSTAMP_FILTER_PTP_V2_EVENT: ethtool.HWTSTAMP_FILTER_PTP_V2_EVENT,
    ...Object.fromEntries(
      Object.entries(ethtool.SOF_TIMESTAMPING).map(([k, v]) => [`SOF_TIMESTAMPING_${k}`, v]),
    ),
  };
  const src = [
    "#include <stddef.h>",
    ...[...headers].map((h) => `#include <${h}>`),
    "#include <linux/sockios.h>",
    "#include <linux/net_tstamp.h>",
    ...asserts(layouts),
    ...Object.entries(constants).map(([n, v]) => `_Static_assert(${n} == ${v}, "${n}");`),
  ];
  const r = await compile(src.join("\n") + "\n", []);
  assert.ok(r.ok, r.stderr);
});
