/**
 * Layer-2 TSN streams: where the TSN NIC is a port of the pods' bridge, IEEE 1722 (AVTP)
 * frames a pod sends through AF_PACKET with SO_PRIORITY and SO_TXTIME leave it with their
 * priority and launch time. Not IP: the kernel types no launch time of theirs for the
 * crossing, so an untyped one (CLOCK_REALTIME, or CLOCK_TAI before 6.11) travels in the
 * saver's request stage; bridging keeps the priority admit writes.
 */
import assert from "node:assert/strict";
import { DatapathEnv } from "../lib/datapath_env.ts";
import { run } from "../lib/run.ts";

const AVTP = 0xff; // the observer's filter for AVTP frames
const SENDER = new URL("../lib/avtp_sender.py", import.meta.url).pathname;
const opts = { sanitizeOps: false, sanitizeResources: false };

for (const carrier of ["tag", "table"] as const) {
  Deno.test(
    { name: `l2 [${carrier}]: AVTP frames keep priority and launch time`, ...opts },
    async () => {
      const env = await DatapathEnv.create("tcx", { pods: 1, config: `carrier: ${carrier}\n` });
      const [pod] = env.topo.pods;
      try {
        // tsn0 becomes a port of the pods' bridge: the node switches the stream at layer 2.
        await run(["ip", "-n", env.topo.node, "link", "set", "tsn0", "master", "br0"]);
        const send = async (argv: string[]) => {
          const r = await run(["python3", SENDER, ...argv], { netns: pod.netns, allowFail: true });
          if (r.code !== 0) throw new Error(r.stderr);
        };
        await env.observer.filter(AVTP, 0, 16);
        await send(["--count", "100", "--prio", "3"]);
        let c = env.observer.counts();
        assert.equal(c.fwdPrio[0], 100, `without tsnproxy the crossing zeroes it: ${c.fwdPrio}`);

        await env.attachPod(pod);
        env.observer.filter(AVTP, 0, 16);
        await send(["--count", "100", "--prio", "3"]);
        await send(["--count", "100", "--prio", "5", "--txtime", "realtime"]);
        await send(["--count", "100", "--prio", "6", "--txtime", "tai"]);
        c = env.observer.counts();
        assert.equal(c.fwdTotal, 300);
        assert.deepEqual(
          [c.fwdPrio[3], c.fwdPrio[5], c.fwdPrio[6]],
          [100, 100, 100],
          `${c.fwdPrio}`,
        );
        assert.equal(c.tsOk, 200, `launch times: ok ${c.tsOk} bad ${c.tsBad} none ${c.tsNone}`);
      } finally {
        await env.destroy();
      }
    },
  );
}
