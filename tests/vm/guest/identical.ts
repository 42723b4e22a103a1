/**
 * Runs inside a test VM (tests/vm/identical_test.ts): two pods send datagrams identical in
 * every byte the stage's fingerprint reads (length, IP id, which Debian 6.1 sets to 0 for an
 * unconnected socket's DF datagrams, UDP length, the first payload bytes), at the same time,
 * with different priorities and CLOCK_TAI launch times (untyped before 6.11, so the stage
 * carries them). Each pod must keep its own: per CPU, and with both pods on one CPU.
 * Prints a TSNVM-JSON "identical" result (the host side asserts).
 */
import { DatapathEnv } from "../../lib/datapath_env.ts";
import { FAR_V4 } from "../../lib/topology.ts";
import { loadModules, report } from "./report.ts";

const UDP = 17;
const OFF = 16; // the launch time after the first 16 payload bytes, all zero
const N = 400;
const results: Record<string, unknown> = {};
const failures: string[] = [];

// The test node's NAT and Service rules (tests/lib/topology.ts) are nftables.
await loadModules(["nf_tables", "nft_chain_nat", "nft_masq", "nft_nat", "veth", "bridge"]);

for (const carrier of ["tag", "table"] as const) {
  const env = await DatapathEnv.create("clsact", { pods: 2, config: `carrier: ${carrier}\n` });
  try {
    const [a, b] = env.topo.pods;
    await env.attachPod(a);
    await env.attachPod(b);
    for (const cpus of [[0, 1], [0, 0]]) {
      env.observer.filter(UDP, 8080, OFF);
      const common = { dst: FAR_V4, count: N, constant: true, pps: 2000, txtime: "tai" as const };
      await Promise.all([
        env.send(a.netns, {
          ...common,
          prio: 2,
          cpu: cpus[0],
          extra: ["--launch-offset", String(OFF), "--txtime-offset-ms", "5"],
        }),
        env.send(b.netns, {
          ...common,
          prio: 5,
          cpu: cpus[1],
          extra: ["--launch-offset", String(OFF), "--txtime-offset-ms", "50"],
        }),
      ]);
      const c = env.observer.counts();
      const key = `${carrier}, cpus ${cpus.join("+")}`;
      results[key] = { fwdPrio: c.fwdPrio, tsOk: c.tsOk, tsBad: c.tsBad, tsNone: c.tsNone };
      if (c.fwdPrio[2] !== N || c.fwdPrio[5] !== N || c.tsOk !== 2 * N) {
        failures.push(
          `${key}: priority 2 ${c.fwdPrio[2]}/${N}, 5 ${c.fwdPrio[5]}/${N}, launch times ok ` +
            `${c.tsOk} bad ${c.tsBad} none ${c.tsNone} of ${2 * N}`,
        );
      }
    }
  } catch (e) {
    failures.push(`${carrier}: ${e instanceof Error ? e.stack : e}`);
  } finally {
    await env.destroy();
  }
}
report("identical", { kernel: Deno.osRelease(), results, failures });
