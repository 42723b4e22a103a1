/**
 * `tsnproxy agent`: the DaemonSet's long-running process, after `tsnproxy install` ran in the
 * init container. It keeps the node the way install left it and reports on it:
 *
 * - re-injects the conflist entry when the primary CNI rewrites its config (Deno.watchFs on
 *   the conf dir, debounced, plus a periodic reconcile every --reconcile-seconds);
 * - re-attaches the restorer when a TSN interface disappears and comes back (their ifindexes
 *   are polled every second; the qdisc config, the 6.1 clsact-first rule and the VLAN
 *   egress-qos-map are applied to the new interface first, exactly as install does:
 *   ./tsn_interfaces.ts);
 * - serves Prometheus metrics on --metrics-address (/metrics, /healthz);
 * - with cni.agentSocket set, runs the CNI verbs plugin processes hand over
 *   (src/agent/cni_server.ts), in this warm process;
 * - logs JSON lines on stderr.
 *
 * SIGTERM/SIGINT end it with exit 0 WITHOUT detaching anything: the datapath is pinned, so pods
 * keep their metadata through an agent restart or upgrade. Only `tsnproxy uninstall` detaches.
 */
import { PinLayout } from "../bpf/pins.ts";
import { captureLibbpfLog, drainLibbpfLog } from "../bpf/libbpf_log.ts";
import { asTsnproxyError } from "../errors.ts";
import { configureLog, log } from "../log.ts";
import type { AgentOptions } from "../options.ts";
import { apply as applyConflist, planInstall as planConflistInstall } from "../install/conflist.ts";
import { pluginEntry } from "../install/plan.ts";
import { loadConfig, targetFrom } from "../install/target.ts";
import { type AgentStats, CONTENT_TYPE, MetricsEndpoint } from "./metrics.ts";
import { DEFAULT_CNI_RESULTS_DIR } from "./pods.ts";
import { type CniServer, serveCni } from "./cni_server.ts";
import { reconcileInterfaces, restorersAttachedNow, watchInterfaces } from "./tsn_interfaces.ts";
import { exists } from "../util/fs.ts";

export function parseListenAddress(a: string): { hostname: string; port: number } {
  const m = /^(\[([0-9a-fA-F:.]+)\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(a);
  if (!m) throw new Error(`bad listen address ${a}`);
  return { hostname: m[2] ?? (m[1] || "0.0.0.0"), port: Number(m[3]) };
}

export async function runAgent(opts: AgentOptions): Promise<number> {
  configureLog({ stderr: true });
  // libbpf prints to stderr by default ("Exclusivity flag on" for an existing clsact): keep
  // stderr JSON-only by routing it through the log.
  captureLibbpfLog();
  const cfg = await loadConfig(opts);
  const target = targetFrom(cfg, opts);
  const pins = new PinLayout(cfg.bpffs);
  const resultsDir = opts.cniResultsDir ?? DEFAULT_CNI_RESULTS_DIR;
  const interval = opts.reconcileSeconds * 1000; // the CLI takes 1..86400
  const stats: AgentStats = {
    reconciles: { ok: 0, error: 0 },
    conflistReinjected: 0,
    restorerReattached: 0,
    restorerAttached: false,
    restorers: {},
    installed: exists(pins.root),
    startedAt: Date.now(),
  };
  const stop = new AbortController();

  // One reconcile at a time; a request during a pass schedules exactly one more.
  let running: Promise<void> | undefined;
  let again = false;
  const reconcile = (why: string): Promise<void> => {
    if (stop.signal.aborted) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await reconcileOnce(why);
        } while (again && !stop.signal.aborted);
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  async function reconcileOnce(why: string): Promise<void> {
    let ok = true;
    stats.installed = exists(pins.root);
    // 1. the conflist entry
    try {
      const plan = await planConflistInstall({
        confDir: cfg.cni.confDir,
        network: cfg.cni.network,
        entry: pluginEntry(target),
      });
      if (plan.changes.length > 0) {
        await applyConflist(plan, { inPlace: target.inPlace });
        stats.conflistReinjected++;
        log("info", "conflist entry re-injected", {
          why,
          file: plan.target,
          status: plan.status,
          changes: plan.changes.map((c) => `${c.action} ${c.path}`),
        });
      }
    } catch (e) {
      ok = false;
      log("warn", "conflist reconcile failed", { why, error: asTsnproxyError(e).oneLine() });
    }
    // 2. qdisc ordering/config, egress-qos-map and the restorer on each TSN interface
    if (!stats.installed) {
      log("error", "the datapath is not pinned: run `tsnproxy install` (the init container)", {
        bpffs: cfg.bpffs,
      });
      stats.reconciles.error++;
      return;
    }
    if (!await reconcileInterfaces(target, stats, why)) ok = false;
    for (const l of drainLibbpfLog()) log("debug", l, { why });
    if (ok) stats.reconciles.ok++;
    else stats.reconciles.error++;
  }

  // Signals: stop serving and watching; leave every attachment in place.
  const onSignal = (sig: string) => () => {
    if (stop.signal.aborted) return;
    log("info", "stopping; the datapath stays attached", { signal: sig });
    stop.abort();
  };
  const sigterm = onSignal("SIGTERM");
  const sigint = onSignal("SIGINT");
  Deno.addSignalListener("SIGTERM", sigterm);
  Deno.addSignalListener("SIGINT", sigint);

  // --metrics-address is an override: it is in cfg when given.
  const { hostname, port } = parseListenAddress(cfg.metrics.address);
  const metrics = new MetricsEndpoint({
    bpffs: cfg.bpffs,
    stats,
    podLabels: cfg.metrics.podLabels,
    resultsDir,
    agentSocket: cfg.cni.agentSocket !== undefined,
  });
  let listening: () => void = () => {};
  const listened = new Promise<void>((r) => (listening = r));
  const server = Deno.serve({
    hostname,
    port,
    signal: stop.signal,
    onListen: (addr) => {
      log("info", "metrics listening", { address: `${addr.hostname}:${addr.port}` });
      listening();
    },
    onError: (e) => {
      log("error", "metrics handler failed", { error: asTsnproxyError(e).oneLine() });
      return new Response("internal error\n", { status: 500 });
    },
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/metrics") {
      return new Response(metrics.scrape(), { headers: { "content-type": CONTENT_TYPE } });
    }
    if (path === "/healthz") {
      const ok = exists(pins.root);
      return new Response(ok ? "ok\n" : "datapath not installed\n", { status: ok ? 200 : 503 });
    }
    return new Response("not found\n", { status: 404 });
  });
  await listened;

  // Plugin processes hand their verbs over here when the entry names the socket.
  let cniServer: CniServer | undefined;
  if (cfg.cni.agentSocket) {
    try {
      cniServer = serveCni(cfg.cni.agentSocket, captureLibbpfLog);
      stats.cni = cniServer.stats;
    } catch (e) {
      // The plugin does the work itself then: slower pod start-up, nothing lost.
      log("error", "cannot serve CNI requests; plugins run their verbs themselves", {
        socket: cfg.cni.agentSocket,
        error: asTsnproxyError(e).oneLine(),
      });
    }
  }

  log("info", "agent started", {
    tsnInterfaces: target.tsnInterfaces.map((i) => i.name),
    bpffs: cfg.bpffs,
    confDir: cfg.cni.confDir,
    api: target.api,
    reconcileSeconds: interval / 1000,
  });
  await reconcile("start");

  // The conf dir: the primary CNI rewriting its conflist (rename or in place) triggers one
  // debounced reconcile.
  let watcher: Deno.FsWatcher | undefined;
  let debounce: ReturnType<typeof setTimeout> | undefined;
  const watchLoop = (async () => {
    try {
      watcher = Deno.watchFs(cfg.cni.confDir, { recursive: false });
      for await (const ev of watcher) {
        if (stop.signal.aborted) break;
        // Reads (ours included) show up as "access": only changes matter.
        if (ev.kind === "access" || ev.kind === "other") continue;
        if (ev.paths.every((p) => /\.tsnproxy-(tmp|journal)/.test(p))) continue;
        clearTimeout(debounce);
        debounce = setTimeout(() => reconcile(`conf dir ${ev.kind}`), 200);
      }
    } catch (e) {
      if (!stop.signal.aborted) {
        log("warn", "cannot watch the CNI conf dir; periodic reconcile only", {
          dir: cfg.cni.confDir,
          error: asTsnproxyError(e).oneLine(),
        });
      }
    }
  })();

  // The TSN interfaces: a new ifindex (deleted and re-created, or appeared) means re-attach.
  const stopWatching = watchInterfaces(target, stats, reconcile);
  const periodic = setInterval(() => reconcile("periodic"), interval);

  await new Promise<void>((resolve) => {
    if (stop.signal.aborted) resolve();
    stop.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  stopWatching();
  clearInterval(periodic);
  clearTimeout(debounce);
  try {
    watcher?.close();
  } catch { /* already closed */ }
  await watchLoop;
  await running;
  await cniServer?.close();
  await server.finished;
  Deno.removeSignalListener("SIGTERM", sigterm);
  Deno.removeSignalListener("SIGINT", sigint);
  log("info", "agent stopped", { restorerAttached: restorersAttachedNow(target) });
  return 0;
}
