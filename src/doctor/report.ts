/**
 * Runs every doctor check in dependency order and assembles the report. Slow checks (the
 * installed plugin's `version --json`, the qdisc stall's second look) start early and are
 * awaited at the end.
 */
import { versionInfo } from "../build_info.ts";
import { PLUGIN_TYPE } from "../install/conflist.ts";
import {
  agentSocketCheck,
  binaryCheck,
  conflistChecks,
  queryInstalledVersion,
} from "./checks_cni.ts";
import { configChecks, kernelChecks, libraryChecks } from "./checks_host.ts";
import {
  carrierChecks,
  interfaceChecks,
  type NetState,
  qdiscChecks,
  qdiscStart,
  sysctlChecks,
  xdpChecks,
} from "./checks_net.ts";
import { pinChecks } from "./checks_pins.ts";
import { podChecks } from "./checks_pods.ts";
import { taiOffsetCheck, timeChecks } from "./checks_time.ts";
import { DoctorContext, type DoctorRunOptions } from "./context.ts";
import { ExitCode } from "../exit_codes.ts";
import {
  type Check,
  CHECK_GROUPS,
  DOCTOR_SCHEMA_VERSION,
  type DoctorReport,
  doctorReportSchema,
} from "./schema.ts";

/** doctor's exit code: failures 1, warnings only 3, else 0 (src/exit_codes.ts). */
export function exitCodeOf(checks: readonly Check[]): DoctorReport["exitCode"] {
  if (checks.some((c) => c.status === "fail")) return ExitCode.Failure;
  if (checks.some((c) => c.status === "warn")) return ExitCode.Warnings;
  return ExitCode.Ok;
}

export async function collectReport(opts: DoctorRunOptions): Promise<DoctorReport> {
  const ctx = new DoctorContext(opts);
  await configChecks(ctx);
  libraryChecks(ctx);
  const libsOk = ctx.has("libraries.libbpf", "pass");

  // Slow things first, awaited at the end.
  const binPath = `${ctx.cniBinDir}/${PLUGIN_TYPE}`;
  let pendingVersion: ReturnType<typeof queryInstalledVersion> | undefined;
  try {
    const st = Deno.statSync(binPath);
    if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) {
      pendingVersion = queryInstalledVersion(binPath);
    }
  } catch {
    // binaryCheck reports it
  }

  if (libsOk) await kernelChecks(ctx);
  const installed = libsOk && pinChecks(ctx);
  await conflistChecks(ctx);
  let nets: NetState[] = [];
  if (ctx.has("libraries.libmnl", "pass")) {
    nets = interfaceChecks(ctx);
    qdiscStart(ctx, nets);
    sysctlChecks(ctx);
    xdpChecks(ctx);
    carrierChecks(ctx);
    timeChecks(
      ctx,
      nets.map((n) => ({ ifname: n.iface.name, qdisc: n.iface.qdisc, link: n.link })),
    );
  } else {
    taiOffsetCheck(ctx, []);
  }
  if (libsOk) podChecks(ctx, installed);
  await binaryCheck(ctx, pendingVersion);
  await agentSocketCheck(ctx);
  if (ctx.has("libraries.libmnl", "pass")) await qdiscChecks(ctx, nets);

  const order = (c: Check) => CHECK_GROUPS.indexOf(c.group);
  const checks = ctx.checks.map((c, i) => ({ c, i }))
    .sort((a, b) => order(a.c) - order(b.c) || a.i - b.i)
    .map(({ c }) => c);
  const summary = { pass: 0, info: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  const report: DoctorReport = {
    version: DOCTOR_SCHEMA_VERSION,
    generatedAt: new Date().toISOString(),
    tool: versionInfo(),
    host: { hostname: Deno.hostname(), kernel: ctx.kernel.release },
    location: {
      config: opts.config,
      tsnInterface: ctx.tsnInterface ?? null,
      tsnInterfaces: ctx.tsnInterfaces,
      cniConfDir: ctx.cniConfDir,
      cniBinDir: ctx.cniBinDir,
      bpffs: ctx.bpffs,
    },
    summary,
    exitCode: exitCodeOf(checks),
    checks,
  };
  // The schema is the contract: never print something that breaks it.
  return doctorReportSchema.parse(report);
}
