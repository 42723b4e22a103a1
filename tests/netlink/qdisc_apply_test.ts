/**
 * Qdiscs applied for real in a throwaway netns and read back with RTM_GETQDISC /
 * RTM_GETTCLASS, compared with what was requested. htb, tbf, clsact and mq are built into the
 * host kernel. taprio/mqprio/etf go through the installer's qdisc plan (planQdisc /
 * applyQdiscPlan, what `tsnproxy install` and the agent run): where the kernel lacks them
 * (this host) the error must name the missing module and the plan must undo its clsact; where
 * it has them (the Debian 6.1 and 6.12 guests: tests/vm/qdisc_test.ts runs this file there)
 * the read-back must match the config, a second plan must be empty and the Debian 6.1 repair
 * must re-create the root after clsact. Each test that needs a kind the kernel lacks is
 * ignored, with the reason printed.
 */
import assert from "node:assert/strict";
import { parseQdiscConfig, type QdiscConfig, type TaprioConfig } from "../../src/config/qdisc.ts";
import { ConfigError, KernelError } from "../../src/errors.ts";
import { Errno } from "../../src/ffi/libc.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { tc_htb_glob } from "../../src/ffi/structs/netlink.ts";
import { configFromKernel, inspectQdiscOrder } from "../../src/install/qdisc_inspect.ts";
import { applyQdiscPlan, planQdisc, type QdiscPlan } from "../../src/install/qdisc_plan.ts";
import {
  emptyState,
  type InstallState,
  type InterfaceState,
  interfaceState,
} from "../../src/install/state.ts";
import {
  addQdisc,
  Attrs,
  buildQdiscRequest,
  deleteQdisc,
  encodeTbfQopt,
  getLink,
  listClasses,
  listQdiscs,
  replaceQdisc,
  rootQdisc,
  RtnlSocket,
  TC_H_CLSACT,
  TC_H_ROOT,
  TC_HTB_PROTOVER,
  TCA_OPTIONS,
  tcHandle,
} from "../../src/netlink/mod.ts";
import { withNetns } from "../../src/util/netns.ts";
import { ignoredBecause, qdiscKinds } from "../lib/qdisc_kinds.ts";
import { addVeth, Netns, withTestNetns } from "../lib/netns.ts";

/** The Debian guest kernels carry no sch_htb/sch_tbf module; this host has no TSN qdiscs. */
const shaping = await qdiscKinds("htb", "tbf");
const tsn = await qdiscKinds("taprio", "mqprio", "etf");
const hasShaping = shaping.htb && shaping.tbf;
const hasTsn = tsn.taprio && tsn.mqprio && tsn.etf;
if (!hasShaping) console.log(`htb/tbf tests ignored: ${ignoredBecause(shaping)}`);
if (!hasTsn) {
  console.log(
    `taprio/mqprio/etf tests ignored: ${ignoredBecause(tsn)}; tests/vm/qdisc_test.ts runs ` +
      "them in the Debian 6.1 and 6.12 guests",
  );
} else console.log(`kernel ${Deno.osRelease()} has taprio, mqprio and etf: testing them`);

/** The TCA_OPTIONS payload a request carries (what the kernel should echo back). */
function requestedOptions(msg: Uint8Array): Uint8Array {
  const opts = new Attrs(msg.subarray(36)).raw(TCA_OPTIONS);
  assert.ok(opts);
  return opts;
}

Deno.test(
  { name: "htb: requested global options read back field for field", ignore: !hasShaping },
  async () => {
    await withTestNetns(async (ns) => {
      await ns.addVeth("va", "vb");
      withNetns(ns.path, () => {
        using s = RtnlSocket.open();
        const ifindex = getLink("va", s).index;
        const spec = { kind: "htb" as const, defaultClass: 0x10, rate2quantum: 7, directQlen: 321 };
        replaceQdisc({ ifindex, handle: tcHandle(1, 0) }, spec, s);
        const root = rootQdisc(listQdiscs(ifindex, s));
        assert.ok(root?.options?.kind === "htb");
        assert.equal(root.handle, tcHandle(1, 0));
        assert.equal(root.parent, TC_H_ROOT);
        // The kernel accepts version 3 and reports its full HTB_VER (3 << 16 | minor 17).
        assert.equal(root.options.version >>> 16, TC_HTB_PROTOVER);
        assert.equal(root.options.rate2quantum, 7);
        assert.equal(root.options.defaultClass, 0x10);
        assert.equal(root.options.debug, 0);
        assert.equal(root.options.directPackets, 0);
        assert.equal(root.options.directQlen, 321);
        assert.equal(root.options.offload, false);
        // Byte comparison of TCA_HTB_INIT with the version word swapped for the kernel's.
        const sent = new Attrs(requestedOptions(
          buildQdiscRequest("replace", { ifindex, handle: tcHandle(1, 0) }, spec).message(),
        ));
        const echoed = new Attrs(root.rawOptions!);
        assert.deepEqual(
          echoed.raw(2)!.subarray(4),
          sent.raw(2)!.subarray(4),
          "TCA_HTB_INIT after the version word",
        );
        assert.deepEqual(echoed.raw(5), sent.raw(5), "TCA_HTB_DIRECT_QLEN");

        // htb cannot change its global options in place: replace on the same handle is refused.
        assert.throws(
          () => replaceQdisc({ ifindex, handle: tcHandle(1, 0) }, { kind: "htb" }, s),
          /kernel says "Change operation not supported by specified qdisc"/,
        );
        deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: tcHandle(1, 0) }, s);
        // Without directQlen the kernel reports the device's txqueuelen (1000 for veth).
        replaceQdisc({ ifindex, handle: tcHandle(1, 0) }, { kind: "htb" }, s);
        const again = rootQdisc(listQdiscs(ifindex, s));
        assert.ok(again?.options?.kind === "htb");
        assert.equal(again.options.directQlen, 1000);
        assert.equal(again.options.rate2quantum, 10);
        assert.deepEqual(
          new Attrs(again.rawOptions!).raw(2)!.subarray(4),
          encode(tc_htb_glob, { rate2quantum: 10 }).subarray(4),
        );
      });
    }, { ipv6: false });
  },
);

Deno.test({
  name: "tbf: TCA_TBF_PARMS echoed byte for byte, 64-bit rates through TCA_TBF_RATE64",
  ignore: !hasShaping,
}, async () => {
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb");
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const ifindex = getLink("va", s).index;
      for (
        const spec of [
          { kind: "tbf" as const, rateBytesPerSec: 125000, burstBytes: 10000, limitBytes: 30000 },
          {
            kind: "tbf" as const,
            rateBytesPerSec: 5_000_000_000n,
            burstBytes: 1_000_000,
            limitBytes: 2_000_000,
          },
        ]
      ) {
        replaceQdisc({ ifindex, handle: tcHandle(2, 0) }, spec, s);
        const root = rootQdisc(listQdiscs(ifindex, s));
        assert.ok(root?.options?.kind === "tbf");
        assert.deepEqual(root.options.parms, encodeTbfQopt(spec), "TCA_TBF_PARMS");
        assert.equal(root.options.rateBytesPerSec, BigInt(spec.rateBytesPerSec));
        assert.equal(root.options.limitBytes, spec.limitBytes);
        // buffer = burst at rate, in 64 ns ticks
        const ticks = BigInt(spec.burstBytes) * 1_000_000_000n / BigInt(spec.rateBytesPerSec) / 64n;
        assert.equal(root.options.bufferTicks, Number(ticks));
        const echoed = new Attrs(root.rawOptions!);
        const sent = new Attrs(requestedOptions(
          buildQdiscRequest("replace", { ifindex, handle: tcHandle(2, 0) }, spec).message(),
        ));
        assert.deepEqual(echoed.raw(4), sent.raw(4), "TCA_TBF_RATE64 (absent below 2^32)");
      }
      // Replace swapped the options in place: still one root with handle 2:
      assert.equal(listQdiscs(ifindex, s).filter((q) => q.parent === TC_H_ROOT).length, 1);
      deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: tcHandle(2, 0) }, s);
      assert.equal(rootQdisc(listQdiscs(ifindex, s))?.kind, "noqueue");
    });
  }, { ipv6: false });
});

/** The plan for the interface `va` of the calling thread's netns, and its step names. */
function plan(cfg: QdiscConfig, clsactNeeded: boolean, state: InstallState = emptyState()) {
  const p = planQdisc("va", cfg, clsactNeeded, state);
  return { plan: p, ops: p.steps.map((st) => st.op) };
}

/** Runs a plan; the install state it leaves (as install records it). */
function applyPlan(p: QdiscPlan, prev?: InterfaceState): InstallState {
  return { ...emptyState(), interfaces: [applyQdiscPlan(p, prev)] };
}

Deno.test("clsact: the plan adds it once, read back, a second add refused, ordering facts", async () => {
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb");
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const ifindex = getLink("va", s).index;
      assert.equal(inspectQdiscOrder(ifindex, s).clsact, false);
      const first = plan({ kind: "keep" }, true);
      assert.deepEqual(first.ops, ["add-clsact"]);
      const state = applyPlan(first.plan);
      assert.equal(interfaceState(state, "va")?.clsactCreated, true);
      const clsact = listQdiscs(ifindex, s).find((q) => q.kind === "clsact");
      assert.ok(clsact);
      assert.equal(clsact.handle, tcHandle(0xffff, 0));
      assert.equal(clsact.parent, TC_H_CLSACT);
      assert.equal(clsact.rawOptions?.length ?? 0, 0, "clsact has no options");
      const again = plan({ kind: "keep" }, true, state);
      assert.deepEqual(again.ops, []);
      assert.ok(again.plan.notes.includes("clsact present"), again.plan.notes.join("; "));
      assert.throws(() => addQdisc({ ifindex }, { kind: "clsact" }, s), (e: unknown) => {
        assert.ok(e instanceof KernelError);
        assert.equal(e.errno, Errno.EEXIST);
        return true;
      });
      const order = inspectQdiscOrder(ifindex, s);
      assert.equal(order.clsact, true);
      assert.equal(order.root?.kind, "noqueue");
      assert.equal(order.tsnRoot, undefined);
      assert.equal(order.stallRisk, false);
      deleteQdisc({ ifindex, kind: "clsact" }, s);
      assert.equal(listQdiscs(ifindex, s).some((q) => q.kind === "clsact"), false);
    });
  }, { ipv6: false });
});

/** va (4 queues, 192.0.2.1/24) in `ns`, its peer vb (192.0.2.2/24) in a new far namespace. */
async function farPeer(ns: Netns): Promise<Netns> {
  const far = await Netns.create({ lo: false, ipv6: false });
  const q4 = { txQueues: 4, rxQueues: 4 };
  await addVeth({ name: "va", netns: ns, ...q4 }, { name: "vb", netns: far, ...q4 });
  await ns.ip("addr", "add", "192.0.2.1/24", "dev", "va");
  await far.ip("addr", "add", "192.0.2.2/24", "dev", "vb");
  return far;
}

Deno.test("mq on a 4-queue veth: one class per tx queue with per-class packet counts", async () => {
  await withTestNetns(async (ns) => {
    await using _far = await farPeer(ns);
    const ifindex = withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const link = getLink("va", s);
      assert.equal(link.numTxQueues, 4);
      replaceQdisc({ ifindex: link.index, handle: tcHandle(3, 0) }, { kind: "mq" }, s);
      return link.index;
    });
    // 5 UDP datagrams (bash's /dev/udp; no ping binary needed) plus ARP
    await ns.run(["bash", "-c", "for i in 1 2 3 4 5; do echo x > /dev/udp/192.0.2.2/9; done"]);
    const classes = withNetns(ns.path, () => listClasses(ifindex));
    assert.deepEqual(classes.map((c) => c.handle), [1, 2, 3, 4].map((m) => tcHandle(3, m)));
    assert.ok(classes.every((c) => c.kind === "mq" && c.parent === TC_H_ROOT));
    const packets = classes.reduce((n, c) => n + c.stats.packets, 0);
    const bytes = classes.reduce((n, c) => n + c.stats.bytes, 0n);
    // compare with the root's own counters (mq sums its children)
    assert.ok(packets >= 6, `mq classes counted ${packets} packets`);
    const root = withNetns(ns.path, () => rootQdisc(listQdiscs(ifindex)));
    assert.equal(root?.stats.packets, packets);
    assert.equal(root?.stats.bytes, bytes);
  }, { ipv6: false });
});

const taprioYamlLike = {
  kind: "taprio",
  numTc: 4,
  map: [0, 1, 2, 3],
  queues: ["1@0", "1@1", "1@2", "1@3"],
  baseTime: "0",
  entries: [
    { command: "S", gateMask: "0xf", intervalNs: 1000000 },
  ],
  etf: [{ queue: 0, deltaNs: 300000 }],
};

function tsnConfigs() {
  const taprio = parseQdiscConfig(taprioYamlLike) as TaprioConfig;
  const { baseTime: _b, entries: _e, ...layout } = taprioYamlLike;
  const mqprio = parseQdiscConfig({ ...layout, kind: "mqprio" });
  if (mqprio.kind !== "mqprio") throw new Error("unreachable");
  return { taprio, mqprio };
}

Deno.test({
  name: "taprio/mqprio/etf on a kernel without them: the plan fails naming the module, " +
    "undoes its clsact",
  ignore: hasTsn,
}, async () => {
  const { taprio, mqprio } = tsnConfigs();
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb", { queues: 4 });
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const ifindex = getLink("va", s).index;
      const before = listQdiscs(ifindex, s).map((q) => q.kind);
      for (const cfg of [taprio, mqprio]) {
        const p = plan(cfg, true);
        assert.deepEqual(p.ops, ["add-clsact", "apply-root"]);
        assert.throws(() => applyQdiscPlan(p.plan, undefined), (e: unknown) => {
          assert.ok(e instanceof KernelError, String(e));
          assert.equal(e.errno, Errno.ENOENT);
          assert.match(e.message, new RegExp(`module sch_${cfg.kind} is missing`));
          assert.match(e.message, /Specified qdisc kind is unknown/);
          assert.match(e.hint, new RegExp(`modprobe sch_${cfg.kind}`));
          return true;
        });
        assert.deepEqual(
          listQdiscs(ifindex, s).map((q) => q.kind),
          before,
          "the clsact the plan added is removed again",
        );
        // The plain replace says the same.
        assert.throws(
          () => replaceQdisc({ ifindex }, cfg, s),
          (e2: unknown) =>
            e2 instanceof KernelError &&
            e2.message.includes(`replace qdisc ${cfg.kind} handle 100: parent root on va`) &&
            e2.message.includes(`this kernel has no "${cfg.kind}" qdisc: module sch_${cfg.kind}`),
        );
      }
      assert.throws(
        () =>
          replaceQdisc(
            { ifindex, handle: tcHandle(0x200, 0) },
            { kind: "etf", ...taprio.etf![0] },
            s,
          ),
        (e: unknown) => e instanceof KernelError && /module sch_etf is missing/.test(e.message),
      );
    });
  }, { ipv6: false });
});

Deno.test({
  name: "taprio/mqprio/etf through the qdisc plan: read back as configured, second plan " +
    "empty, none removes, the Debian 6.1 repair re-creates taprio after clsact",
  ignore: !hasTsn,
}, async () => {
  const { taprio, mqprio } = tsnConfigs();
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb", { queues: 4 });
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const ifindex = getLink("va", s).index;
      const readBack = () => {
        const qdiscs = listQdiscs(ifindex, s);
        return configFromKernel(rootQdisc(qdiscs)!, qdiscs);
      };
      for (const cfg of [taprio, mqprio]) {
        const expected = { ...cfg, ...(cfg.kind === "taprio" ? { clockid: "CLOCK_TAI" } : {}) };
        // The clsact path: clsact first, then the root (and its etf child).
        const first = plan(cfg, true);
        assert.deepEqual(first.ops, ["add-clsact", "apply-root"]);
        const state = applyPlan(first.plan);
        assert.deepEqual(interfaceState(state, "va"), {
          ifname: "va",
          clsactCreated: true,
          rootCreated: { kind: cfg.kind, handle: 0x100 },
        });
        assert.deepEqual(readBack(), expected);
        const etf = listQdiscs(ifindex, s).find((q) => q.kind === "etf");
        assert.equal(etf?.parent, tcHandle(0x100, 1), "etf under class 100:1 (queue 0)");
        assert.equal(inspectQdiscOrder(ifindex, s).tsnRoot, cfg.kind);
        const again = plan(cfg, true, state);
        assert.deepEqual(again.ops, [], "a second plan is empty");
        assert.ok(again.plan.notes.some((n) => /already matches the config/.test(n)));
        // kind none deletes the root; the kernel default comes back.
        const none = plan({ kind: "none" }, true, state);
        assert.deepEqual(none.ops, ["delete-root"]);
        const gone = applyPlan(none.plan, interfaceState(state, "va"));
        assert.equal(interfaceState(gone, "va")?.rootCreated, undefined);
        assert.equal(rootQdisc(listQdiscs(ifindex, s))?.handle, 0);
        deleteQdisc({ ifindex, kind: "clsact" }, s);
      }
      // The repair (Debian 6.1): an operator's taprio runs without clsact; the clsact path
      // adds clsact and re-creates the root from what the kernel reports.
      assert.deepEqual(plan(taprio, false).ops, ["apply-root"]);
      applyPlan(plan(taprio, false).plan);
      let order = inspectQdiscOrder(ifindex, s);
      assert.equal(order.softwareTaprio, true);
      assert.equal(order.clsact, false);
      const repair = plan({ kind: "keep" }, true);
      assert.deepEqual(repair.ops, ["add-clsact", "recreate-root"]);
      const before = rootQdisc(listQdiscs(ifindex, s));
      applyPlan(repair.plan);
      order = inspectQdiscOrder(ifindex, s);
      assert.equal(order.stallRisk, true, "clsact and a software taprio");
      assert.deepEqual(readBack(), { ...taprio, clockid: "CLOCK_TAI" });
      const after = rootQdisc(listQdiscs(ifindex, s));
      assert.equal(after?.handle, before?.handle);
      assert.deepEqual(plan({ kind: "keep" }, true).ops, [], "repaired: nothing left to do");
      applyPlan(plan({ kind: "none" }, false).plan);
      // etf alone (root of the veth).
      const etf = { kind: "etf" as const, ...taprio.etf![0] };
      replaceQdisc({ ifindex, handle: tcHandle(0x200, 0) }, etf, s);
      const root = rootQdisc(listQdiscs(ifindex, s));
      assert.ok(root?.options?.kind === "etf");
      assert.equal(root.options.deltaNs, etf.deltaNs);
      assert.equal(root.options.clockid, 11);
      assert.equal(root.options.skipSockCheck, true);
      deleteQdisc({ ifindex, parent: TC_H_ROOT, handle: tcHandle(0x200, 0) }, s);
    });
  }, { ipv6: false });
});

Deno.test("a TSN root whose queues do not fit the interface is refused by the plan", async () => {
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb", { queues: 4 });
    withNetns(ns.path, () => {
      assert.throws(
        () =>
          plan(parseQdiscConfig({ ...taprioYamlLike, queues: ["1@0", "1@1", "1@2", "2@3"] }), true),
        (e: unknown) => e instanceof ConfigError && /va has 4 tx queues/.test(e.message),
      );
    });
  }, { ipv6: false });
});

Deno.test("extack: the kernel's own message and the errno string reach the KernelError", async () => {
  await withTestNetns(async (ns) => {
    await ns.addVeth("va", "vb");
    withNetns(ns.path, () => {
      using s = RtnlSocket.open();
      const ifindex = getLink("va", s).index;
      // A parent class that does not exist.
      assert.throws(
        () => addQdisc({ ifindex, parent: tcHandle(0x77, 1) }, { kind: "htb" }, s),
        (e: unknown) => {
          assert.ok(e instanceof KernelError);
          assert.equal(e.errno, Errno.ENOENT);
          assert.match(e.message, /add qdisc htb parent 77:1 on va \(ifindex \d+\)/);
          assert.match(e.message, /No such file or directory \(errno 2\)/);
          assert.match(e.message, /kernel says "Failed to find specified qdisc"/);
          assert.ok(e.hint.length > 0);
          return true;
        },
      );
      // Deleting the default root qdisc.
      assert.throws(
        () => deleteQdisc({ ifindex, parent: TC_H_ROOT }, s),
        /kernel says "Cannot delete qdisc with handle of zero"/,
      );
    });
  }, { ipv6: false });
});

Deno.test({ name: "taprio classes count packets per priority", ignore: !hasTsn }, async () => {
  // No etf here: etf drops packets without a txtime, ARP included.
  const { etf: _etf, ...noEtf } = taprioYamlLike;
  const cfg = parseQdiscConfig(noEtf) as TaprioConfig;
  await withTestNetns(async (ns) => {
    await using _far = await farPeer(ns);
    const ifindex = withNetns(ns.path, () => {
      applyQdiscPlan(plan(cfg, true).plan, undefined);
      return getLink("va").index;
    });
    const send = (prio: number, n: number) =>
      ns.run([
        ...["bash", "-c"],
        `for i in $(seq ${n}); do echo x | socat -u - UDP:192.0.2.2:9,so-priority=${prio}; done`,
      ]);
    await send(1, 3);
    await send(2, 2);
    const classes = withNetns(ns.path, () => listClasses(ifindex));
    console.log(
      "taprio classes:",
      classes.map((c) =>
        `${c.handle.toString(16)} leaf ${c.leaf.toString(16)} ` +
        `class ${c.stats.packets} child ${c.leafStats?.packets}`
      ).join("; "),
    );
    if (classes.every((c) => c.leaf === tcHandle(0x100, 0) && !c.leafStats)) {
      // Debian 6.1 software taprio (measured): every tx queue's qdisc is the taprio root
      // itself, so each class reports the root's totals and no per-queue child is dumped.
      console.log(
        `kernel ${Deno.osRelease()} reports the root's totals for every taprio class: ` +
          "per-priority counts are not checkable here, only that the packets went through taprio",
      );
      assert.ok(classes.every((c) => c.stats.packets === classes[0].stats.packets));
      assert.ok(classes[0].stats.packets >= 5);
      return;
    }
    const count = (minor: number) => {
      const c = classes.find((c) => c.handle === tcHandle(0x100, minor));
      return c?.leafStats?.packets ?? c?.stats.packets ?? -1;
    };
    assert.deepEqual(classes.map((c) => c.kind), ["taprio", "taprio", "taprio", "taprio"]);
    assert.equal(count(2), 3, "priority 1 -> tc 1 -> queue 1 -> class 100:2");
    assert.equal(count(3), 2, "priority 2 -> class 100:3");
    assert.equal(count(4), 0);
    assert.ok(count(1) >= 1, "ARP at priority 0 -> class 100:1");
  }, { ipv6: false });
});
