/**
 * `tsnproxy agent`: the DaemonSet's long-running process, after `tsnproxy install` ran in the
 * init container. It keeps the node the way install makes it and says whether it is:
 *
 * - readiness (./readiness.ts): named conditions on the node (the datapath pinned and this
 *   build's, the restorer on every TSN interface, the plugin binary, the entry in the active
 *   conflist), served on /readyz (200 or 503, one line per condition);
 * - repair (./repair.ts): install's own plan and apply with the node config it was given, on
 *   every pass: at start-up, every --reconcile-seconds, when the primary CNI rewrites its
 *   conf dir (Deno.watchFs, debounced), when a TSN interface's ifindex changes (polled every
 *   second, ./tsn_interfaces.ts), and when a readiness probe sees a failure. The datapath is
 *   re-planned (its programs loaded and compared) only when a datapath condition fails; a
 *   pinned program of another build is replaced then, and said so. A repair that fails is
 *   retried, never fatal: the agent does not exit on anything it can repair;
 * - liveness: /livez answers 200 while this process serves (503 only when its CNI socket
 *   stopped accepting); /healthz is the same, for manifests that still probe it;
 * - Prometheus metrics on /metrics (--metrics-address), readiness per condition included;
 * - with cni.agentSocket set, runs the CNI verbs plugin processes hand over
 *   (./cni_server.ts), in this warm process;
 * - logs JSON lines on stderr.
 *
 * SIGTERM/SIGINT end it with exit 0 WITHOUT detaching anything: the datapath is pinned, so pods
 * keep their metadata through an agent restart or upgrade. Only `tsnproxy uninstall` detaches.
 * Stopping is bounded: requests on the CNI socket not yet running are dropped (their plugins
 * run them), running ones get SHUTDOWN_MS at most.
 */
import { PinLayout } from "../bpf/pins.ts";
import { captureLibbpfLog, drainLibbpfLog } from "../bpf/libbpf_log.ts";
import { asTsnproxyError } from "../errors.ts";
import { configureLog, log } from "../log.ts";
import type { AgentOptions } from "../options.ts";
import { loadConfig, targetFrom } from "../install/target.ts";
import { versionInfo } from "../build_info.ts";
import { type AgentStats, CONTENT_TYPE, MetricsEndpoint } from "./metrics.ts";
import { DEFAULT_CNI_RESULTS_DIR } from "./pods.ts";
import { type CniServer, serveCni } from "./cni_server.ts";
import { datapathConditions, evaluate, formatReadiness, type Readiness } from "./readiness.ts";
import { converge } from "./repair.ts";
import { noteRestorers, restorersAttachedNow, watchInterfaces } from "./tsn_interfaces.ts";
import { exists } from "../util/fs.ts";

/** How long SIGTERM may take before the agent exits regardless. */
export const SHUTDOWN_MS = 20_000;

/** The conditions whose failure needs the datapath step of the repair. */
const DATAPATH_CONDITIONS = ["datapath.pinned", "datapath.build"];

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
    restorers: {},
    installed: exists(pins.root),
    startedAt: Date.now(),
    readiness: [],
  };
  const stop = new AbortController();
  const me = versionInfo();

  // The restorer condition's reading is also the per-interface metric's: read once.
  const conditions = datapathConditions(target, (s) => noteRestorers(stats, s));
  let readiness: Readiness | undefined;

  /** Records a readiness reading: metrics, and a log line when it changes. */
  const note = (r: Readiness) => {
    stats.installed = r.conditions.find((c) => c.name === "datapath.pinned")?.ok ?? false;
    stats.readiness = r.conditions.map((c) => ({ name: c.name, ok: c.ok }));
    const failing = r.conditions.filter((c) => !c.ok);
    const key = (x: Readiness | undefined) =>
      x?.conditions.filter((c) => !c.ok).map((c) => c.name).join(",");
    if (readiness === undefined || key(readiness) !== key(r)) {
      if (r.ready) log("info", "ready", { conditions: r.conditions.map((c) => c.name) });
      else {
        log("warn", "not ready", {
          failing: Object.fromEntries(failing.map((c) => [c.name, c.detail])),
        });
      }
    }
    readiness = r;
  };
  const readNow = async () => {
    const r = await evaluate(conditions);
    note(r);
    return r;
  };

  // One reconcile at a time; a request during a pass schedules exactly one more.
  let running: Promise<void> | undefined;
  let again: string | undefined;
  const reconcile = (why: string): Promise<void> => {
    if (stop.signal.aborted) return Promise.resolve();
    if (running) {
      again ??= why;
      return running;
    }
    running = (async () => {
      try {
        let next: string | undefined = why;
        while (next !== undefined && !stop.signal.aborted) {
          again = undefined;
          await reconcileOnce(next);
          next = again;
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  let lastRepairError: string | undefined;
  async function reconcileOnce(why: string): Promise<void> {
    const before = await readNow();
    const failing = before.conditions.filter((c) => !c.ok);
    let changed = false;
    try {
      const out = await converge(target, {
        datapath: failing.some((c) => DATAPATH_CONDITIONS.includes(c.name)),
      });
      lastRepairError = undefined;
      changed = out.changes.length > 0;
      if (out.replaced.length > 0) {
        log("warn", "the pinned datapath was another build's: replaced by this build's", {
          pinnedBuild: {
            installedBy: out.installedBy ?? null,
            programs: Object.fromEntries(out.replaced.map((r) => [r.program, r.from])),
            releases: Object.fromEntries(out.replaced.map((r) => [r.program, r.fromRelease])),
          },
          thisBuild: {
            version: me.version,
            bpfObjectsSha256: me.bpfObjectsSha256,
            programs: Object.fromEntries(out.replaced.map((r) => [r.program, r.to])),
          },
        });
      }
      // Counted from what the repair did, not from the reading before it: the conf dir may
      // have changed in between.
      if (out.conflistWritten) {
        stats.conflistReinjected++;
        log("info", "conflist entry re-injected", { why });
      }
      for (const r of out.restorers) {
        stats.restorerReattached++;
        log("info", "restorer re-attached", { why, ifname: r.ifname, action: r.action });
      }
      if (changed) {
        log("info", "node repaired", {
          why,
          failing: Object.fromEntries(failing.map((c) => [c.name, c.detail])),
          changes: out.changes,
          ...(out.missing.length ? { waitingFor: out.missing } : {}),
        });
      }
    } catch (e) {
      const err = asTsnproxyError(e).oneLine();
      // Retried on every pass; logged at error level when it changes.
      log(err === lastRepairError ? "debug" : "error", "repair failed; retrying", {
        why,
        failing: failing.map((c) => c.name),
        error: err,
      });
      lastRepairError = err;
      changed = true; // the attempt may have changed something: read again
    }
    for (const l of drainLibbpfLog()) log("debug", l, { why });
    const after = changed ? await readNow() : before;
    if (after.ready) stats.reconciles.ok++;
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

  let cniServer: CniServer | undefined;
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
  const text = (body: string, status = 200) =>
    new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
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
  }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/metrics") {
      // Readiness is read at scrape time, like the datapath counters.
      await readNow();
      return new Response(metrics.scrape(), { headers: { "content-type": CONTENT_TYPE } });
    }
    if (path === "/readyz") {
      const r = await readNow();
      if (!r.ready) reconcile("readiness probe");
      return text(formatReadiness(r), r.ready ? 200 : 503);
    }
    if (path === "/livez" || path === "/healthz") {
      // The process answers: alive. Its CNI socket failing is the one thing a restart fixes.
      if (cniServer && !cniServer.accepting()) {
        return text("the CNI socket stopped accepting\n", 503);
      }
      return text("ok\n");
    }
    return text("not found\n", 404);
  });
  await listened;

  // Plugin processes hand their verbs over here when the entry names the socket.
  if (cfg.cni.agentSocket) {
    try {
      cniServer = serveCni(cfg.cni.agentSocket, { afterRequest: captureLibbpfLog });
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
    version: me.version,
    bpfObjectsSha256: me.bpfObjectsSha256,
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
  let bound: ReturnType<typeof setTimeout> | undefined;
  const stopped = await Promise.race([
    (async () => {
      await watchLoop;
      await running;
      await cniServer?.close();
      await server.finished;
      return true;
    })(),
    new Promise<false>((r) => (bound = setTimeout(() => r(false), SHUTDOWN_MS))),
  ]);
  clearTimeout(bound);
  Deno.removeSignalListener("SIGTERM", sigterm);
  Deno.removeSignalListener("SIGINT", sigint);
  if (!stopped) log("warn", "stopping took too long; exiting anyway", { ms: SHUTDOWN_MS });
  log("info", "agent stopped", { restorerAttached: restorersAttachedNow(target) });
  return 0;
}
