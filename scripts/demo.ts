/**
 * `deno task demo`: a one-minute tour on a throwaway node built in network namespaces.
 * An unmodified talker in a "pod" sends UDP with SO_PRIORITY and SO_TXTIME through the
 * bridge, forwarding, MASQUERADE and a DNAT'd Service to the node's TSN interface; the
 * table shows what leaves tsn0 without and then with tsnproxy. `--json` for scripts.
 */
import { DatapathEnv } from "../tests/lib/datapath_env.ts";
import { FAR_V4, FAR_V6, SERVICE_V4 } from "../tests/lib/topology.ts";
import { resolveTcApi } from "../src/bpf/features.ts";

const json = Deno.args.includes("--json");
const say = (s: string) => json || console.error(s);

interface Case {
  label: string;
  dst: string;
  port: number;
  prio: number;
  txtime?: "tai" | "realtime";
  count: number;
}
const cases: Case[] = [
  { label: "UDP IPv4, SO_PRIORITY 3", dst: FAR_V4, port: 8080, prio: 3, count: 500 },
  { label: "UDP via Service DNAT, SO_PRIORITY 2", dst: SERVICE_V4, port: 80, prio: 2, count: 500 },
  { label: "UDP IPv6, SO_PRIORITY 1", dst: FAR_V6, port: 8080, prio: 1, count: 500 },
  {
    label: "UDP SO_TXTIME CLOCK_TAI, SO_PRIORITY 3",
    dst: FAR_V4,
    port: 8080,
    prio: 3,
    txtime: "tai",
    count: 200,
  },
  {
    label: "UDP SO_TXTIME CLOCK_REALTIME",
    dst: FAR_V4,
    port: 8080,
    prio: 0,
    txtime: "realtime",
    count: 200,
  },
];

interface Row {
  case: string;
  sent: number;
  mode: "without" | "with";
  leftTsn0: number;
  rightPriority: number;
  rightLaunchTime: number | null;
}

const api = resolveTcApi("auto");
say(`tsnproxy demo: building a node (pod -> bridge -> NAT -> tsn0 -> far end), tc API ${api}...`);
const env = await DatapathEnv.create(api, { pods: 1 });
const [pod] = env.topo.pods;
const rows: Row[] = [];
try {
  for (const mode of ["without", "with"] as const) {
    if (mode === "with") {
      say("attaching tsnproxy to the pod (what `tsnproxy cni` ADD does)...");
      env.attachPod(pod);
    }
    for (const c of cases) {
      env.observer.filter(17, 8080);
      await env.send(pod.netns, {
        dst: c.dst,
        port: c.port,
        count: c.count,
        prio: c.prio,
        txtime: c.txtime,
      });
      const o = env.observer.counts();
      rows.push({
        case: c.label,
        sent: c.count,
        mode,
        leftTsn0: o.fwdTotal,
        rightPriority: o.fwdPrio[c.prio],
        rightLaunchTime: c.txtime ? o.tsOk : null,
      });
    }
  }
  const m = env.maps();
  const counters = m.counters();
  m.close();
  if (json) {
    console.log(
      JSON.stringify(
        {
          api,
          kernel: Deno.osRelease(),
          rows,
          counters: Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, Number(v)])),
        },
        null,
        2,
      ),
    );
  } else {
    const pad = (s: string | number, n: number) => String(s).padEnd(n);
    console.log(
      `\n${pad("case", 40)} ${pad("tsnproxy", 9)} ${pad("sent", 5)} ${pad("left tsn0", 10)} ${
        pad("right prio", 11)
      } right launch time`,
    );
    for (const r of rows) {
      const pct = (n: number) => `${n} (${Math.round((100 * n) / r.sent)}%)`;
      console.log(
        `${pad(r.case, 40)} ${pad(r.mode, 9)} ${pad(r.sent, 5)} ${pad(r.leftTsn0, 10)} ${
          pad(pct(r.rightPriority), 11)
        } ${r.rightLaunchTime === null ? "-" : pct(r.rightLaunchTime)}`,
      );
    }
    console.log(
      `\ndatapath counters: saved ${counters.saved}, restored ${counters.restored} (launch times ${counters.restoredTstamp}), refused ${counters.mismatch}, not found ${counters.notFound}`,
    );
    console.log(
      `kernel ${Deno.osRelease()}: CLOCK_TAI launch times survive veth on 6.11+ kernels; REALTIME ones (and TAI on older kernels) need tsnproxy.`,
    );
  }
} finally {
  await env.destroy();
}
