/**
 * The datapath at saturation: the benchmark's compiled sender (bench/c/blast.c) runs flat out
 * on every CPU over several flows through the bridge and MASQUERADE: with the tag carrier,
 * each datagram with a priority; with the table carrier, also with an untyped launch time
 * (CLOCK_REALTIME, which the kernel clears at the veth and when forwarding). Every packet that
 * leaves tsn0 carries what its socket set: the tag and the per-CPU stage hold under a load
 * that fills the CPUs, not only at the paced rates of datapath_test.ts. No timing is
 * asserted; only what left.
 *
 * The kernel holds a packet between admit and the restorer when the next hop's address is
 * not resolved yet: the packets wait in the neighbour's queue while later ones are admitted,
 * and leave from the ARP reply's softirq, maybe on another CPU. The stage keeps their entries
 * (a new one takes a way already read) and the restorer looks in the other CPUs' stages. A
 * stream (a TSN talker's paced packets) whose next hop answers ARP only 300 ms in keeps
 * every packet's metadata. A flood into an unresolved next hop is the stage's limit: the
 * neighbour queue keeps only its last ~200 packets (the kernel drops the rest), and the
 * entries of the dropped ones crowd the stage, so a few of the kept ones may lose theirs:
 * each such packet is counted (tsnproxy_stage_miss_total), never given a wrong priority.
 */
import assert from "node:assert/strict";
import { DatapathEnv } from "../lib/datapath_env.ts";
import { FAR_V4 } from "../lib/topology.ts";
import { run } from "../lib/run.ts";
import { until } from "../lib/wait.ts";
import { blast, buildBlast } from "../../scripts/bench/blast.ts";
import { runCleanups } from "../../scripts/bench/common.ts";

const UDP = 17;
const PRIO = 5;
const PORT = 9000;
const opts = { sanitizeOps: false, sanitizeResources: false };

interface Case {
  carrier: "tag" | "table";
  txtime: boolean;
  /**
   * Resolve the far end's address on tsn0 before sending; else the far end answers ARP only
   * from 300 ms into the run, so the first packets wait in the neighbour's queue.
   */
  resolved: boolean;
  name: string;
}

const CASES: Case[] = [
  {
    carrier: "tag",
    txtime: false,
    resolved: false,
    name: "every packet keeps its priority (the tag), the first ones queued for ARP too",
  },
  {
    carrier: "table",
    txtime: true,
    resolved: true,
    name: "every packet keeps its priority and launch time (the stage)",
  },
  {
    carrier: "table",
    txtime: true,
    resolved: false,
    name: "a flood into an unresolved next hop: what the stage loses, it counts",
  },
];

/** Sends one datagram from the node to the far end and waits for its address to resolve. */
async function resolveFarEnd(env: DatapathEnv): Promise<void> {
  await run([
    "python3",
    "-c",
    `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("${FAR_V4}", ${PORT}))`,
  ], { netns: env.topo.node });
  await until(`${FAR_V4} resolved on tsn0`, async () => {
    const out = await run(["ip", "-n", env.topo.node, "neigh", "show", FAR_V4, "dev", "tsn0"]);
    return /REACHABLE/.test(out.stdout);
  });
}

for (const c of CASES) {
  Deno.test(
    { name: `datapath at saturation [${c.carrier}]: ${c.name}`, ...opts },
    async () => {
      await buildBlast();
      const env = await DatapathEnv.create("tcx", { pods: 1, config: `carrier: ${c.carrier}` });
      const [pod] = env.topo.pods;
      try {
        await env.attachPod(pod);
        const cpus = Array.from({ length: navigator.hardwareConcurrency }, (_, i) => i);
        const flows = 4 * cpus.length;
        await run(["nft", "-f", "-"], {
          netns: env.topo.far,
          stdin: "table ip sat {\n chain pre {\n type filter hook prerouting priority -300;\n" +
            ` udp dport ${PORT}-${PORT + flows - 1} drop\n }\n}\n`,
        });
        const far0 = (arp: "on" | "off") =>
          run(["ip", "-n", env.topo.far, "link", "set", "far0", "arp", arp]);
        if (c.resolved) await resolveFarEnd(env);
        else await far0("off");
        env.observer.filter(UDP, 0);
        const sending = blast(pod.netns, {
          dst: FAR_V4,
          port: PORT,
          flows,
          cpus,
          prio: PRIO,
          seconds: c.resolved ? 1 : 2.5,
          ...(c.txtime ? { txtime: "realtime" as const } : {}),
        });
        if (!c.resolved) {
          await new Promise((ok) => setTimeout(ok, 300));
          await far0("on");
        }
        const r = await sending;
        const seen = env.observer.counts();
        const k0 = (() => {
          const m = env.maps();
          try {
            return m.counters();
          } finally {
            m.close();
          }
        })();
        console.log(
          `  ${seen.fwdTotal} packets left; from another CPU's stage: ${k0.restoredElsewhere}, ` +
            `unread entries overwritten: ${k0.stageUnread}, misses: ${k0.stageMiss}, ` +
            `expired: ${k0.stageExpired}`,
        );
        assert.ok(seen.fwdTotal > 0, "packets left tsn0");
        assert.ok(seen.fwdTotal <= r.sent, "no more than the sender sent");
        if (c.carrier === "table" && !c.resolved) {
          const lost = seen.fwdTotal - seen.fwdPrio[PRIO];
          assert.equal(seen.fwdPrio[0], lost, "a packet that lost its priority left at 0");
          assert.ok(lost <= Number(k0.stageMiss), `${lost} lost, ${k0.stageMiss} counted`);
          return;
        }
        assert.equal(seen.fwdPrio[PRIO], seen.fwdTotal, `every packet left at priority ${PRIO}`);
        if (c.txtime) {
          assert.equal(seen.tsOk, seen.fwdTotal, "every packet left with its launch time");
          assert.equal(Number(k0.restoredStage), seen.fwdTotal, "each restored from the stage");
        } else {
          assert.equal(Number(k0.restoredTag), seen.fwdTotal, "each restored from the tag");
        }
      } finally {
        await runCleanups(); // the sender, if an assertion came first
        await env.destroy();
      }
    },
  );
}

Deno.test(
  {
    name:
      "datapath [table]: a stream whose next hop answers ARP 300 ms late keeps every packet's " +
      "priority and launch time",
    ...opts,
  },
  async () => {
    const env = await DatapathEnv.create("tcx", { pods: 1, config: "carrier: table" });
    const [pod] = env.topo.pods;
    try {
      await env.attachPod(pod);
      const far0 = (arp: "on" | "off") =>
        run(["ip", "-n", env.topo.far, "link", "set", "far0", "arp", arp]);
      await far0("off");
      env.observer.filter(UDP, 8080);
      // 1 kpps for 2 s. ARP's second probe, 1 s in, is the first one answered: until then
      // the neighbour queue holds the newest of the waiting packets (it drops the oldest).
      const sending = env.send(pod.netns, {
        dst: FAR_V4,
        count: 2000,
        prio: PRIO,
        pps: 1000,
        txtime: "realtime",
      });
      await new Promise((ok) => setTimeout(ok, 300));
      await far0("on");
      await sending;
      const seen = env.observer.counts();
      const m = env.maps();
      const k = (() => {
        try {
          return m.counters();
        } finally {
          m.close();
        }
      })();
      console.log(
        `  ${seen.fwdTotal} left; ${k.restoredElsewhere} from another CPU's stage, ` +
          `${k.stageMiss} misses`,
      );
      assert.ok(seen.fwdTotal >= 1000, `the stream after the reply left (${seen.fwdTotal})`);
      assert.equal(seen.fwdPrio[PRIO], seen.fwdTotal, `every packet left at priority ${PRIO}`);
      assert.equal(seen.tsOk, seen.fwdTotal, "every packet left with its launch time");
    } finally {
      await env.destroy();
    }
  },
);
