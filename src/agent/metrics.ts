/**
 * Prometheus text exposition (format 0.0.4) of the datapath counters, per pod counters,
 * fingerprint table occupancy, agent health and build info.
 */
import { versionInfo } from "../build_info.ts";
import { DatapathMaps } from "../bpf/maps.ts";
import type { CounterName } from "../ffi/structs/datapath.ts";
import type { PodIdentity } from "./pods.ts";
import type { CniServerStats } from "./cni_server.ts";

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const COUNTER_HELP: Record<CounterName, string> = {
  admitted: "Pod packets admit handled on the pods' host interfaces",
  admitRequested: "Admitted packets that carried a request from the pod's saver",
  admitClamped: "Admitted packets whose priority the pod's policy changed",
  admitClassified: "Admitted packets whose priority came from the pod's default or rules",
  admitNoPod: "Packets admit saw on an interface without a pod entry",
  tagged: "Admitted packets handed to the tag carrier",
  staged: "Admitted packets handed to the stage carrier",
  stageUnread: "Staged entries overwritten before any restorer read them",
  stampMoved: "Launch times without a clock type carried across the crossing",
  reqStageMiss: "Requests whose wide part admit did not find",
  restoredTag: "Packets the restorer restored from the tag",
  restoredStage: "Packets the restorer restored from the stage",
  restoredTstamp: "Restored packets that got their launch time back",
  restoredFrag: "Later fragments restored from their first fragment",
  tagClamped: "Tags above the node's ceiling (not written by our admit)",
  stageMiss: "Forwarded packets the restorer parsed while entries were staged, no match",
  stageExpired: "Staged entries found older than the age limit",
  tstampFailed: "Launch times the kernel refused to set",
};

export function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Record<string, string | undefined>): string {
  const parts = Object.entries(l).filter(([, v]) => v !== undefined).map(([k, v]) =>
    `${k}="${escapeLabel(v ?? "")}"`
  );
  return parts.length ? `{${parts.join(",")}}` : "";
}

export interface AgentStats {
  reconciles: { ok: number; error: number };
  conflistReinjected: number;
  restorerReattached: number;
  restorerAttached: boolean;
  installed: boolean;
  startedAt: number;
  /** CNI verbs run for plugin processes (src/agent/cni_server.ts); absent without a socket. */
  cni?: CniServerStats;
}

export interface MetricsInput {
  bpffs: string;
  mapEntries: number;
  stats: AgentStats;
  pods: Map<bigint, PodIdentity>;
}

/** The exposition text; datapath metrics are left out (with tsnproxy_up 0) when not installed. */
export function renderMetrics(inp: MetricsInput): string {
  const out: string[] = [];
  const metric = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: Array<[Record<string, string | undefined>, number | bigint]>,
  ) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) out.push(`${name}${labels(l)} ${v}`);
  };
  const info = versionInfo();
  metric("tsnproxy_build_info", "gauge", "tsnproxy build", [[{
    version: info.version,
    bpf_objects: info.bpfObjectsSha256.slice(0, 12),
    deno: info.deno,
    compiled: String(info.compiled),
  }, 1]]);
  let maps: DatapathMaps | undefined;
  try {
    maps = inp.stats.installed ? DatapathMaps.open(inp.bpffs) : undefined;
    if (maps) {
      const c = maps.counters();
      for (const [name, help] of Object.entries(COUNTER_HELP) as [CounterName, string][]) {
        metric(`tsnproxy_${snake(name)}_total`, "counter", help, [[{}, c[name]]]);
      }
      const pods = maps.podCounters();
      const podLabels = (cookie: bigint) => {
        const p = inp.pods.get(cookie);
        return {
          pod_cookie: `0x${cookie.toString(16).padStart(16, "0")}`,
          container_id: p?.containerId,
          namespace: p?.namespace,
          pod: p?.name,
        };
      };
      for (const field of ["admitted", "clamped", "restored"] as const) {
        metric(
          `tsnproxy_pod_${field}_total`,
          "counter",
          `Per pod: packets ${field}`,
          pods.map((p) => [podLabels(p.podCookie), p[field]]),
        );
      }
    }
  } catch {
    inp.stats.installed = false;
  } finally {
    maps?.close();
  }
  metric("tsnproxy_up", "gauge", "1 when the datapath is installed (pins present)", [[
    {},
    inp.stats.installed ? 1 : 0,
  ]]);
  metric("tsnproxy_restorer_attached", "gauge", "1 when the restorer is on the TSN interface", [[
    {},
    inp.stats.restorerAttached ? 1 : 0,
  ]]);
  metric("tsnproxy_pod_attachments", "gauge", "Pods with a saver attached", [[
    {},
    inp.pods.size,
  ]]);
  metric("tsnproxy_agent_reconciles_total", "counter", "Agent reconcile passes", [
    [{ result: "ok" }, inp.stats.reconciles.ok],
    [{ result: "error" }, inp.stats.reconciles.error],
  ]);
  metric(
    "tsnproxy_agent_conflist_reinjections_total",
    "counter",
    "Times the agent put the CNI entry back",
    [[{}, inp.stats.conflistReinjected]],
  );
  metric(
    "tsnproxy_agent_restorer_reattachments_total",
    "counter",
    "Times the agent re-attached the restorer",
    [[{}, inp.stats.restorerReattached]],
  );
  const cni = inp.stats.cni;
  if (cni) {
    metric(
      "tsnproxy_agent_cni_requests_total",
      "counter",
      "CNI verbs the agent ran for plugin processes, by verb and result; declined ones ran in the plugin",
      [
        ...Object.entries(cni.served).flatMap(([command, n]) => [
          [{ command, result: "ok" }, n.ok] as [Record<string, string>, number],
          [{ command, result: "error" }, n.error] as [Record<string, string>, number],
        ]),
        [{ command: "", result: "declined" }, cni.declined],
        [{ command: "", result: "bad_request" }, cni.bad],
      ],
    );
  }
  metric("tsnproxy_agent_start_time_seconds", "gauge", "Agent start (unix time)", [[
    {},
    Math.floor(inp.stats.startedAt / 1000),
  ]]);
  return out.join("\n") + "\n";
}
