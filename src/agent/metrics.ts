/**
 * Prometheus text exposition (format 0.0.4) of the datapath counters, per pod counters, the
 * pods' carriers, the agent's readiness per condition, its CNI socket and build info.
 *
 * FAMILIES is the one list of what the agent can expose: name, type, help and label names.
 * The exposition is written from it (a sample whose labels differ from its family's throws, so
 * every family has one label set), and docs/metrics.md is checked against it by
 * tests/agent/metrics_test.ts.
 *
 * Cost on the agent's thread (the one that also serves the CNI socket): a scrape reads the
 * datapath maps and, only with `metrics.podLabels`, the pod names, which PodIdentities keeps
 * cached (libcni's result files are read once each, not per scrape).
 */
import { versionInfo } from "../build_info.ts";
import { DatapathMaps } from "../bpf/maps.ts";
import type { CounterName } from "../ffi/structs/datapath.ts";
import { listPodAttachments, type PodAttachmentRecord } from "../bpf/pod.ts";
import { isLegacyPod } from "../bpf/legacy.ts";
import { PodIdentities } from "./pods.ts";
import type { CniServerStats } from "./cni_server.ts";

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type MetricType = "counter" | "gauge";

export interface Family {
  name: string;
  type: MetricType;
  help: string;
  /** Every sample of the family carries exactly these labels, in this order. */
  labels: readonly string[];
  /** When the family is present (docs/metrics.md says the same). */
  when: "always" | "installed" | "podLabels" | "agentSocket";
}

const DATAPATH_COUNTERS: Record<CounterName, string> = {
  admitted: "Pod packets admit handled on the pods' host interfaces",
  admitRequested: "Admitted packets carrying a request from the pod's saver",
  admitClamped: "Admitted packets whose priority the pod's policy changed",
  admitClassified: "Admitted packets whose priority came from the pod's default or rules",
  admitNoPod: "Packets admit saw on an interface without a pod entry",
  tagged: "Admitted packets handed to the tag carrier",
  staged: "Admitted packets handed to the stage carrier",
  stageUnread: "Staged entries overwritten before any restorer read them",
  stampMoved: "Launch times without a clock type carried across the crossing",
  reqStageMiss: "Requests whose wide part admit did not find (priority above 1023 lost)",
  restoredTag: "Packets the restorer restored from the tag",
  restoredStage: "Packets the restorer restored from the stage",
  restoredTstamp: "Restored packets that got their launch time back",
  restoredFrag: "Later IPv4 fragments restored from their first fragment",
  tagClamped: "Tags above the node's ceiling, which our admit never writes",
  stageMiss: "Forwarded packets parsed while entries were staged that matched none",
  stageExpired: "Staged entries found older than gc.maxAgeMs",
  tstampFailed: "Launch times the kernel refused to set",
  restoredElsewhere: "Of the stage's restores, packets found in another CPU's stage (held on " +
    "the way, e.g. for their next hop's ARP/ND)",
};

export function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function counterFamilyName(c: CounterName): string {
  return `tsnproxy_${snake(c)}_total`;
}

const POD_LABELS = ["namespace", "pod", "container_id"] as const;
const POD_FIELDS = { admitted: "admitted", clamped: "clamped", restored: "restored" } as const;
const CARRIERS = ["tag", "stage", "none"] as const;

export const FAMILIES: readonly Family[] = [
  {
    name: "tsnproxy_build_info",
    type: "gauge",
    help:
      "tsnproxy build: version, SHA-256 prefix of the BPF objects, Deno, compiled binary or not",
    labels: ["version", "bpf_objects", "deno", "compiled"],
    when: "always",
  },
  ...(Object.entries(DATAPATH_COUNTERS) as [CounterName, string][]).map(([c, help]): Family => ({
    name: counterFamilyName(c),
    type: "counter",
    help,
    labels: [],
    when: "installed",
  })),
  ...Object.keys(POD_FIELDS).map((f): Family => ({
    name: `tsnproxy_pod_${f}_total`,
    type: "counter",
    help: `Per pod: packets ${f} (only with metrics.podLabels)`,
    labels: POD_LABELS,
    when: "podLabels",
  })),
  {
    name: "tsnproxy_pods",
    type: "gauge",
    help: "Pod interfaces by the carrier that takes their packets to the TSN NIC",
    labels: ["carrier"],
    when: "installed",
  },
  {
    name: "tsnproxy_pod_carrier",
    type: "gauge",
    help: "Per pod interface: 1, with its carrier (only with metrics.podLabels)",
    labels: [...POD_LABELS, "carrier"],
    when: "podLabels",
  },
  {
    name: "tsnproxy_legacy_pods",
    type: "gauge",
    help: "Pods still running release 0.1.0's saver (retired at their DEL)",
    labels: [],
    when: "installed",
  },
  {
    name: "tsnproxy_up",
    type: "gauge",
    help: "1 when the datapath is installed (pins present)",
    labels: [],
    when: "always",
  },
  {
    name: "tsnproxy_restorer_attached",
    type: "gauge",
    help: "Per TSN interface: 1 when the restorer is on it",
    labels: ["interface"],
    when: "always",
  },
  {
    name: "tsnproxy_pod_attachments",
    type: "gauge",
    help: "Pods with a saver attached",
    labels: [],
    when: "always",
  },
  {
    name: "tsnproxy_agent_reconciles_total",
    type: "counter",
    help: "Agent reconcile passes, by result",
    labels: ["result"],
    when: "always",
  },
  {
    name: "tsnproxy_agent_conflist_reinjections_total",
    type: "counter",
    help: "Times the agent put the CNI entry back",
    labels: [],
    when: "always",
  },
  {
    name: "tsnproxy_agent_restorer_reattachments_total",
    type: "counter",
    help: "Times the agent re-attached the restorer",
    labels: [],
    when: "always",
  },
  {
    name: "tsnproxy_agent_ready",
    type: "gauge",
    help: "Per readiness condition of the agent (its /readyz): 1 when it holds, 0 when not",
    labels: ["condition"],
    when: "always",
  },
  {
    name: "tsnproxy_agent_cni_socket_up",
    type: "gauge",
    help:
      "1 when the agent serves cni.agentSocket, 0 when it could not (plugins then run verbs themselves)",
    labels: [],
    when: "agentSocket",
  },
  {
    name: "tsnproxy_agent_cni_requests_total",
    type: "counter",
    help:
      "CNI verbs the agent ran for plugin processes, by verb and result; requests it did not run (declined, bad, expired, busy, abandoned) have an empty command",
    labels: ["command", "result"],
    when: "agentSocket",
  },
  {
    name: "tsnproxy_agent_cni_connections",
    type: "gauge",
    help: "Connections open on the agent's CNI socket",
    labels: [],
    when: "agentSocket",
  },
  {
    name: "tsnproxy_agent_start_time_seconds",
    type: "gauge",
    help: "Agent start (unix time)",
    labels: [],
    when: "always",
  },
];

const BY_NAME = new Map(FAMILIES.map((f) => [f.name, f]));

/** HELP text: backslash and newline escaped (exposition format 0.0.4). */
export function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Label values: backslash, double quote and newline escaped. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

type Sample = [labels: Record<string, string>, value: number | bigint];

/** Writes families from FAMILIES; throws on an unknown family or a label set that differs. */
export class Exposition {
  #lines: string[] = [];
  #written = new Set<string>();

  add(name: string, samples: Sample[]): this {
    const f = BY_NAME.get(name);
    if (!f) throw new Error(`metrics: ${name} is not in FAMILIES (src/agent/metrics.ts)`);
    if (this.#written.has(name)) throw new Error(`metrics: ${name} written twice`);
    this.#written.add(name);
    this.#lines.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} ${f.type}`);
    for (const [labels, value] of samples) {
      const keys = Object.keys(labels);
      if (keys.length !== f.labels.length || keys.some((k, i) => k !== f.labels[i])) {
        throw new Error(
          `metrics: ${name} takes labels {${f.labels.join(",")}}, got {${keys.join(",")}}`,
        );
      }
      const l = keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(",");
      this.#lines.push(`${name}${l ? `{${l}}` : ""} ${value}`);
    }
    return this;
  }

  /** Names of the families written so far. */
  families(): string[] {
    return [...this.#written];
  }

  text(): string {
    return this.#lines.join("\n") + "\n";
  }
}

export interface AgentStats {
  reconciles: { ok: number; error: number };
  conflistReinjected: number;
  restorerReattached: number;
  /** Per TSN interface: the restorer is on it (restoreAt tsn-egress; empty otherwise). */
  restorers: Record<string, boolean>;
  installed: boolean;
  startedAt: number;
  /** The last readiness reading, per condition (src/agent/readiness.ts). */
  readiness: Array<{ name: string; ok: boolean }>;
  /** CNI verbs run for plugin processes (src/agent/cni_server.ts); absent without a socket. */
  cni?: CniServerStats;
}

export interface MetricsInput {
  bpffs: string;
  stats: AgentStats;
  /** cookie -> pod; undefined: per-pod families are left out (metrics.podLabels false). */
  pods?: Map<bigint, { containerId: string; namespace?: string; name?: string }>;
  /** cni.agentSocket is configured: the socket families are written. */
  agentSocket?: boolean;
  /** The pod pins, when the caller listed them already (else listed here, once). */
  attachments?: PodAttachmentRecord[];
}

function podLabelsOf(pods: MetricsInput["pods"], cookie: bigint) {
  const p = pods?.get(cookie);
  return {
    namespace: p?.namespace ?? "",
    pod: p?.name ?? "",
    container_id: p?.containerId ?? `cookie:0x${cookie.toString(16).padStart(16, "0")}`,
  };
}

/** The exposition text; datapath families are left out (with tsnproxy_up 0) when not installed. */
export function renderMetrics(inp: MetricsInput): string {
  const out = new Exposition();
  const info = versionInfo();
  out.add("tsnproxy_build_info", [[{
    version: info.version,
    bpf_objects: info.bpfObjectsSha256.slice(0, 12),
    deno: info.deno,
    compiled: String(info.compiled),
  }, 1]]);
  let maps: DatapathMaps | undefined;
  let attached = 0;
  try {
    maps = inp.stats.installed ? DatapathMaps.open(inp.bpffs) : undefined;
    if (maps) {
      const attachments = inp.attachments ?? listPodAttachments(inp.bpffs);
      attached = attachments.length;
      const c = maps.counters();
      for (const name of Object.keys(DATAPATH_COUNTERS) as CounterName[]) {
        out.add(counterFamilyName(name), [[{}, c[name]]]);
      }
      if (inp.pods) {
        const pods = maps.podCounters();
        for (const field of Object.values(POD_FIELDS)) {
          out.add(
            `tsnproxy_pod_${field}_total`,
            pods.map((p): Sample => [podLabelsOf(inp.pods, p.podCookie), p[field]]),
          );
        }
      }
      const entries = maps.pods();
      out.add(
        "tsnproxy_pods",
        CARRIERS.map((carrier): Sample => [
          { carrier },
          entries.filter((e) => e.entry.carrier === carrier).length,
        ]),
      );
      if (inp.pods) {
        out.add(
          "tsnproxy_pod_carrier",
          entries.map((e): Sample => [
            { ...podLabelsOf(inp.pods, e.entry.cookie), carrier: e.entry.carrier },
            1,
          ]),
        );
      }
      out.add("tsnproxy_legacy_pods", [[{}, attachments.filter(isLegacyPod).length]]);
    }
  } catch {
    inp.stats.installed = false;
  } finally {
    maps?.close();
  }
  out.add("tsnproxy_up", [[{}, inp.stats.installed ? 1 : 0]]);
  out.add(
    "tsnproxy_restorer_attached",
    Object.entries(inp.stats.restorers).map(([iface, on]): Sample => [
      { interface: iface },
      on ? 1 : 0,
    ]),
  );
  out.add("tsnproxy_pod_attachments", [[{}, inp.stats.installed ? attached : 0]]);
  out.add("tsnproxy_agent_reconciles_total", [
    [{ result: "ok" }, inp.stats.reconciles.ok],
    [{ result: "error" }, inp.stats.reconciles.error],
  ]);
  out.add("tsnproxy_agent_conflist_reinjections_total", [[{}, inp.stats.conflistReinjected]]);
  out.add("tsnproxy_agent_restorer_reattachments_total", [[{}, inp.stats.restorerReattached]]);
  out.add(
    "tsnproxy_agent_ready",
    inp.stats.readiness.map((c): Sample => [{ condition: c.name }, c.ok ? 1 : 0]),
  );
  if (inp.agentSocket) {
    const cni = inp.stats.cni;
    out.add("tsnproxy_agent_cni_socket_up", [[{}, cni ? 1 : 0]]);
    out.add("tsnproxy_agent_cni_requests_total", [
      ...Object.entries(cni?.served ?? {}).flatMap(([command, n]): Sample[] => [
        [{ command, result: "ok" }, n.ok],
        [{ command, result: "error" }, n.error],
      ]),
      [{ command: "", result: "declined" }, cni?.declined ?? 0],
      [{ command: "", result: "bad_request" }, cni?.bad ?? 0],
      [{ command: "", result: "expired" }, cni?.expired ?? 0],
      [{ command: "", result: "busy" }, cni?.busy ?? 0],
      [{ command: "", result: "abandoned" }, cni?.abandoned ?? 0],
    ]);
    out.add("tsnproxy_agent_cni_connections", [[{}, cni?.open ?? 0]]);
  }
  out.add("tsnproxy_agent_start_time_seconds", [[{}, Math.floor(inp.stats.startedAt / 1000)]]);
  return out.text();
}

export interface MetricsEndpointOptions {
  bpffs: string;
  stats: AgentStats;
  /** metrics.podLabels: per-pod families with namespace, pod and container id. */
  podLabels: boolean;
  /** libcni's result cache (pod names); read only with podLabels. */
  resultsDir: string;
  agentSocket: boolean;
}

/** What /metrics serves: the agent creates one and calls scrape() per request. */
export class MetricsEndpoint {
  /** Pod names, cached across scrapes; undefined without podLabels. */
  readonly pods: PodIdentities | undefined;

  constructor(readonly opts: MetricsEndpointOptions) {
    this.pods = opts.podLabels ? new PodIdentities(opts.bpffs, opts.resultsDir) : undefined;
  }

  scrape(): string {
    // One listing of the pod pins a scrape, for the pods' names and the families.
    const attachments = this.pods && this.opts.stats.installed
      ? listPodAttachments(this.opts.bpffs)
      : undefined;
    return renderMetrics({
      bpffs: this.opts.bpffs,
      stats: this.opts.stats,
      pods: attachments && this.pods?.current(attachments),
      agentSocket: this.opts.agentSocket,
      attachments,
    });
  }
}
