/** doctor checks of the CNI setup: the plugin binary and the entry in the active conflist. */
import { versionInfo } from "../build_info.ts";
import { PLUGIN_DEFAULTS } from "../cni/config.ts";
import { delegate, type NotServedCause, PROTOCOL_VERSION } from "../cni/delegate.ts";
import { LATEST_VERSION } from "../cni/protocol.ts";
import { asTsnproxyError } from "../errors.ts";
import {
  type CniDocument,
  discover,
  listCandidates,
  parseCniDocument,
  PLUGIN_TYPE,
  toValue,
} from "../install/conflist.ts";
import { type CheckRef, type DoctorContext, plural } from "./context.ts";

/** What the installed plugin says about itself; undefined fields when it could not say. */
interface InstalledVersion {
  version?: string;
  bpfObjectsSha256?: string;
  compiled?: boolean;
  error?: string;
}

/**
 * Runs `<bin dir>/tsnproxy version --json` the way a runtime runs plugins: almost empty
 * environment, working directory /. Started early (a `deno run` launcher takes a moment) and
 * awaited by binaryCheck.
 */
export function queryInstalledVersion(path: string): Promise<InstalledVersion> {
  const run = async (): Promise<InstalledVersion> => {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(path, {
        args: ["version", "--json"],
        clearEnv: true,
        env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
        cwd: "/",
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
    } catch (e) {
      return { error: e instanceof Error ? e.message : String(e) };
    }
    const stdout = new TextDecoder().decode(out.stdout).trim();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    if (!out.success) {
      return { error: `exit ${out.code}: ${(stderr || stdout).split("\n")[0].slice(0, 300)}` };
    }
    try {
      const v: unknown = JSON.parse(stdout.split("\n").pop() ?? "");
      if (typeof v !== "object" || v === null) throw new Error("not an object");
      const o = v as Record<string, unknown>;
      return {
        version: typeof o.version === "string" ? o.version : undefined,
        bpfObjectsSha256: typeof o.bpfObjectsSha256 === "string" ? o.bpfObjectsSha256 : undefined,
        compiled: typeof o.compiled === "boolean" ? o.compiled : undefined,
      };
    } catch {
      return { error: `\`version --json\` printed no JSON: ${stdout.slice(0, 200)}` };
    }
  };
  return run();
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}

export async function binaryCheck(
  ctx: DoctorContext,
  pending: Promise<InstalledVersion> | undefined,
): Promise<void> {
  const path = `${ctx.cniBinDir}/${PLUGIN_TYPE}`;
  const installFix = `tsnproxy install --cni-bin-dir ${ctx.cniBinDir}   (puts the plugin there)`;
  await ctx.runAsync({ id: "cni.binary", title: "CNI plugin binary" }, async (check) => {
    const st = statOrUndefined(path);
    if (!st) {
      check.fail({
        found: `${path} does not exist: the runtime fails every pod ADD of a network whose ` +
          "chain names tsnproxy",
        fix: installFix,
        data: { path },
      });
      return;
    }
    if (!st.isFile || ((st.mode ?? 0) & 0o111) === 0) {
      check.fail({
        found: `${path} is not an executable file`,
        fix: `chmod 0755 ${path}   (or re-run \`${installFix}\`)`,
        data: { path },
      });
      return;
    }
    const got = await (pending ?? queryInstalledVersion(path));
    const me = versionInfo();
    if (got.error !== undefined) {
      check.fail({
        found: `${path} does not run with a runtime's empty environment: ${got.error}`,
        fix: installFix,
        data: { path },
      });
      return;
    }
    const data = {
      path,
      installedVersion: got.version ?? null,
      installedBpfSha256: got.bpfObjectsSha256 ?? null,
      thisVersion: me.version,
      thisBpfSha256: me.bpfObjectsSha256,
    };
    const same = got.version === me.version && got.bpfObjectsSha256 === me.bpfObjectsSha256;
    const describe = (v: string | undefined, sha: string | undefined) =>
      `${v ?? "?"} (bpf ${sha?.slice(0, 12) ?? "?"})`;
    if (same) {
      check.pass({
        found: `${path} is this build: tsnproxy ${describe(got.version, got.bpfObjectsSha256)}${
          got.compiled === false ? ", a `deno run` launcher" : ""
        }`,
        data,
      });
      return;
    }
    check.warn({
      found: `${path} is tsnproxy ${describe(got.version, got.bpfObjectsSha256)}, this doctor ` +
        `is ${describe(me.version, me.bpfObjectsSha256)}: pods are attached by a different ` +
        "build than the one checking (and maybe than the one that pinned the datapath)",
      fix: `run \`tsnproxy install\` with the build you mean to run (it replaces ${path} and ` +
        "re-pins changed programs)",
      data,
    });
  });
}

function entryFields(doc: CniDocument, index: number): Record<string, unknown> {
  const v = toValue(doc.plugins[index].node);
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v : {};
}

const ENTRY: CheckRef = { id: "cni.entry", title: "tsnproxy entry in the active CNI config" };
const ORDER: CheckRef = { id: "cni.order", title: "tsnproxy is last in the chain" };
const CONFLICTS: CheckRef = { id: "cni.conflicts", title: "No conflicting entries" };
const ENTRY_SETTINGS: CheckRef = {
  id: "cni.entry_settings",
  title: "Entry matches the node config",
};

export async function conflistChecks(ctx: DoctorContext): Promise<void> {
  const dir = ctx.cniConfDir;
  const network = ctx.config.cni.network;
  let doc: CniDocument | undefined;
  await ctx.runAsync(ENTRY, async (check) => {
    try {
      doc = (await discover(dir, { network })).doc;
    } catch (e) {
      const err = asTsnproxyError(e);
      check.fail({
        found: `cannot tell which CNI config the runtime loads: ${err.message}`,
        fix: err.hint,
      });
      return;
    }
    const d = doc;
    const which = `${d.path} (network ${JSON.stringify(d.name)}, the file libcni loads${
      network ? ` for cni.network ${JSON.stringify(network)}` : ": first in lexical order"
    })`;
    const idx = d.plugins.map((p, i) => (p.type === PLUGIN_TYPE ? i : -1)).filter((i) => i >= 0);
    // Entries in other files: libcni never runs them (stale installs, or the wrong file).
    const elsewhere: string[] = [];
    for (const name of await listCandidates(dir)) {
      const p = `${dir}/${name}`;
      if (p === d.path) continue;
      try {
        const other = parseCniDocument(p, await Deno.readTextFile(p));
        if (other.plugins.some((x) => x.type === PLUGIN_TYPE)) elsewhere.push(p);
      } catch {
        // a broken inactive file is the runtime's business, not ours
      }
    }
    const data = {
      activeConfig: d.path,
      network: d.name,
      chain: d.plugins.map((p) => p.type),
      inactiveWithEntry: elsewhere,
    };
    const stale = elsewhere.length
      ? `; ${elsewhere.join(", ")} also ${
        elsewhere.length === 1 ? "has" : "have"
      } a tsnproxy entry that libcni never runs`
      : "";
    if (idx.length === 0) {
      check.fail({
        found: `no tsnproxy entry in ${which}: pods get no saver, their metadata is lost${stale}`,
        fix: `tsnproxy install --cni-conf-dir ${dir}${network ? ` --network ${network}` : ""}`,
        data,
      });
      return;
    }
    const found = `present in ${which}, chain: ${
      d.plugins.map((p) => p.type).join(" -> ")
    }${stale}`;
    if (elsewhere.length) {
      check.warn({
        found,
        fix: `remove the tsnproxy object from ${elsewhere.join(", ")} (\`tsnproxy uninstall\` ` +
          "there, or edit by hand)",
        data,
      });
    } else {
      check.pass({ found, data });
    }
  });
  const d = doc;
  if (!d || !d.plugins.some((p) => p.type === PLUGIN_TYPE)) {
    ctx.skip({ ...ORDER, found: "no tsnproxy entry in the active config (cni.entry)" });
    ctx.skip({ ...CONFLICTS, found: "no active tsnproxy entry" });
    ctx.skip({ ...ENTRY_SETTINGS, found: "no entry" });
    return;
  }
  const idx = d.plugins.map((p, i) => (p.type === PLUGIN_TYPE ? i : -1)).filter((i) => i >= 0);
  const lastOurs = idx[idx.length - 1];

  ctx.run(ORDER, (check) => {
    const after = d.plugins.slice(idx[0] + 1).filter((p) => p.type !== PLUGIN_TYPE);
    if (after.length === 0) {
      check.pass({ found: `tsnproxy is plugin ${lastOurs + 1} of ${d.plugins.length} (last)` });
      return;
    }
    check.warn({
      found: `${plural(after.length, "plugin")} after tsnproxy in ${d.path}: ${
        after.map((p) => p.type).join(", ")
      }; they run on a prevResult tsnproxy has not seen and may add interfaces or tc ` +
        "programs it does not know about (install leaves a misplaced entry where it is)",
      fix: `move the {"type": "tsnproxy", ...} object to the end of "plugins" in ${d.path}`,
      data: {
        after: after.map((p) =>
          p.type
        ),
      },
    });
  });

  ctx.run(CONFLICTS, (check) => {
    const problems: string[] = [];
    if (idx.length > 1) {
      problems.push(
        `${idx.length} tsnproxy entries (plugins ${
          idx.map((i) => i + 1).join(", ")
        }): each ADD attaches the saver twice and DEL undoes both`,
      );
    }
    // The research design's plugin: a second saver keyed differently, fighting over tc hooks.
    const foreign = d.plugins.filter((p) => p.type === "tsn");
    if (foreign.length) {
      problems.push(
        `a "tsn" plugin (the research proof of concept) is also chained: its restorer returns ` +
          "TC_ACT_OK and ends the tc chain",
      );
    }
    if (problems.length === 0) {
      check.pass({ found: "one tsnproxy entry" });
      return;
    }
    check.fail({
      found: problems.join("; "),
      fix: `keep exactly one {"type": "tsnproxy"} object (the last) in ${d.path} and remove ` +
        `any "tsn" plugin (re-running \`tsnproxy install\` drops duplicate tsnproxy entries)`,
      data: { entries: idx.length },
    });
  });

  ctx.run(ENTRY_SETTINGS, (check) => {
    const e = entryFields(d, lastOurs);
    const want = {
      bpffs: ctx.bpffs,
      restoreAt: ctx.config.restoreAt,
      tsnInterface: ctx.tsnInterface,
      agentSocket: ctx.config.cni.agentSocket,
    };
    const have = {
      bpffs: typeof e.bpffs === "string" ? e.bpffs : PLUGIN_DEFAULTS.bpffs,
      restoreAt: typeof e.restoreAt === "string" ? e.restoreAt : PLUGIN_DEFAULTS.restoreAt,
      tsnInterface: typeof e.tsnInterface === "string" ? e.tsnInterface : want.tsnInterface,
      agentSocket: typeof e.agentSocket === "string" ? e.agentSocket : undefined,
    };
    // An absent agentSocket is a setting too: the entry must follow the node config both ways.
    const diffs = (Object.keys(want) as (keyof typeof want)[])
      .filter((k) => (want[k] !== undefined || k === "agentSocket") && have[k] !== want[k])
      .map((k) => `${k}: entry ${JSON.stringify(have[k])}, node ${JSON.stringify(want[k])}`);
    if (diffs.length === 0) {
      check.pass({ found: `bpffs ${have.bpffs}, restoreAt ${have.restoreAt}` });
      return;
    }
    check.warn({
      found: `the entry and the node config disagree (${diffs.join("; ")}): the plugin uses ` +
        "the entry's values, so pods attach to a different datapath than the one checked here",
      fix: `tsnproxy install --config ${ctx.opts.config}   (rewrites the entry from the node ` +
        "config)",
      data: { diffs },
    });
  });
}

const AGENT_FIX: Record<NotServedCause, string> = {
  absent: "start the node agent with this config (`tsnproxy agent`; the DaemonSet in deploy/ " +
    "runs it): until then plugins run every verb themselves",
  unreachable: "restart the node agent (a killed agent leaves its socket behind; a new one " +
    "replaces it)",
  untrusted: "the socket, its directories and the agent must be root's and not writable by " +
    "group or others: remove what else listens there and restart the node agent",
  declined: "give the agent's container the host's pin root and namespaces as " +
    "deploy/tsnproxy.yaml does (/sys/fs/bpf, /run/netns, hostPID)",
  protocol: "run the same tsnproxy build as plugin and agent: `tsnproxy install`, then restart " +
    "the agent",
  broken: "read the agent's log (`kubectl -n kube-system logs ds/tsnproxy`, or its stderr)",
};

/**
 * With cni.agentSocket set: the agent answers a VERSION request on it, as a plugin would ask,
 * and is the build this doctor is. Without an answer nothing is lost (every plugin runs its
 * verbs itself) but each ADD and DEL pays the plugin's full start-up: a warning, not a failure.
 */
export async function agentSocketCheck(ctx: DoctorContext): Promise<void> {
  const ref: CheckRef = { id: "cni.agent_socket", title: "Node agent answers on the CNI socket" };
  const socket = ctx.config.cni.agentSocket;
  if (!socket) {
    ctx.skip({ ...ref, found: "cni.agentSocket is not set: plugins run every verb in-process" });
    return;
  }
  await ctx.runAsync(ref, async (check) => {
    const t0 = performance.now();
    const stdin = JSON.stringify({ cniVersion: LATEST_VERSION, bpffs: ctx.bpffs });
    const d = await delegate(socket, { CNI_COMMAND: "VERSION" }, stdin, 5_000);
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    const data = {
      socket,
      protocol: PROTOCOL_VERSION,
      agentVersion: d.agent?.version ?? null,
      agentBpfSha256: d.agent?.bpfObjectsSha256 ?? null,
      ms,
    };
    if (!d.served) {
      check.warn({
        found: `${d.reason}: plugins run every verb themselves (correct, but each ADD and DEL ` +
          "pays the plugin's full start-up)",
        fix: AGENT_FIX[d.cause],
        data: { ...data, cause: d.cause },
      });
      return;
    }
    const me = versionInfo();
    const same = d.agent?.version === me.version &&
      d.agent?.bpfObjectsSha256 === me.bpfObjectsSha256;
    const build = d.agent
      ? `${d.agent.version} (bpf ${d.agent.bpfObjectsSha256.slice(0, 12)})`
      : "an unnamed build";
    if (d.code !== 0 || !same) {
      check.warn({
        found: d.code !== 0
          ? `the agent at ${socket} answered VERSION with exit code ${d.code}: ${
            JSON.stringify(d.stdout)
          }`
          : `the agent at ${socket} is tsnproxy ${build}, this doctor is ${me.version} (bpf ` +
            `${me.bpfObjectsSha256.slice(0, 12)}): pods are attached by the agent's build`,
        fix: AGENT_FIX.protocol,
        data,
      });
      return;
    }
    check.pass({
      found: `the agent at ${socket} answered in ${ms} ms (protocol ${PROTOCOL_VERSION}, this ` +
        "build): it runs the plugins' verbs",
      data,
    });
  });
}
