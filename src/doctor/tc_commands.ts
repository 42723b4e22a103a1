/**
 * tc(8) command lines that re-create a qdisc the kernel reports, with changes: the exact fix
 * doctor prints for an operator's own taprio/etf (taprio cannot change its clock or flags while
 * it runs, and etf has no change operation: both are deleted and added again).
 */
import {
  clockNameOf,
  formatHandle,
  type QdiscInfo,
  type QdiscOptions,
  TC_H_ROOT,
  TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD,
  TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST,
} from "../netlink/mod.ts";

type EtfOptions = Extract<QdiscOptions, { kind: "etf" }>;
type TaprioOptions = Extract<QdiscOptions, { kind: "taprio" }>;

export function clockLabel(id: number | undefined): string {
  if (id === undefined) return "none";
  return clockNameOf(id) ?? `clock ${id}`;
}

/**
 * Puts an etf as the kernel reports it (with skip_sock_check and CLOCK_TAI) under its parent:
 * `replace`, with no handle, grafts it over whatever default child the class has (taprio's
 * classes hold pfifo children with handles of their own on some kernels, where `add` fails).
 */
export function etfAddCommand(dev: string, q: QdiscInfo, o: EtfOptions): string {
  const at = q.parent === TC_H_ROOT ? "root" : `parent ${formatHandle(q.parent)}`;
  return [
    `tc qdisc replace dev ${dev} ${at} etf clockid CLOCK_TAI delta ${o.deltaNs}`,
    o.offload ? " offload" : "",
    o.deadlineMode ? " deadline_mode" : "",
    " skip_sock_check",
  ].join("");
}

/** Deletes an etf and adds it back with skip_sock_check. */
export function etfFixCommand(dev: string, q: QdiscInfo, o: EtfOptions): string {
  const at = q.parent === TC_H_ROOT ? "root" : `parent ${formatHandle(q.parent)}`;
  return `tc qdisc del dev ${dev} ${at} && ${etfAddCommand(dev, q, o)}`;
}

export interface TaprioChange {
  clockid?: "CLOCK_TAI";
  /** Drop the txtime-assist flag (software mode). */
  noTxtimeAssist?: boolean;
}

/**
 * Re-creates a taprio root (and its etf children, with skip_sock_check) from what the kernel
 * reports, with `change` applied. undefined when the kernel reported no schedule.
 */
export function taprioFixCommand(
  dev: string,
  root: QdiscInfo,
  o: TaprioOptions,
  qdiscs: readonly QdiscInfo[],
  change: TaprioChange,
): string | undefined {
  const sched = o.admin ?? o.oper;
  if (!sched) return undefined;
  let flags = o.flags;
  if (change.noTxtimeAssist) flags &= ~TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST;
  const fullOffload = (flags & TCA_TAPRIO_ATTR_FLAG_FULL_OFFLOAD) !== 0;
  const clock = change.clockid ?? clockLabel(o.clockid);
  const sum = sched.entries.reduce((a, e) => a + BigInt(e.intervalNs), 0n);
  const parts = [
    `tc qdisc add dev ${dev} root handle ${formatHandle(root.handle)} taprio`,
    `num_tc ${o.numTc}`,
    `map ${o.map.join(" ")}`,
    `queues ${o.queues.map((q) => `${q.count}@${q.offset}`).join(" ")}`,
    `base-time ${sched.baseTime}`,
    ...sched.entries.map((e) =>
      `sched-entry ${e.command} ${e.gateMask.toString(16).padStart(2, "0")} ${e.intervalNs}`
    ),
  ];
  if (sched.cycleTime !== undefined && sched.cycleTime !== sum) {
    parts.push(`cycle-time ${sched.cycleTime}`);
  }
  if (flags !== 0) parts.push(`flags 0x${flags.toString(16)}`);
  if ((flags & TCA_TAPRIO_ATTR_FLAG_TXTIME_ASSIST) !== 0 && o.txtimeDelayNs !== undefined) {
    parts.push(`txtime-delay ${o.txtimeDelayNs}`);
  }
  if (!fullOffload && clock !== "none") parts.push(`clockid ${clock}`);
  const major = root.handle >>> 16;
  const children = qdiscs.filter((q) =>
    q.options?.kind === "etf" && q.parent >>> 16 === major && q.parent !== TC_H_ROOT
  ).map((q) => etfAddCommand(dev, q, q.options as EtfOptions));
  return [`tc qdisc del dev ${dev} root`, parts.join(" "), ...children].join(" && ");
}
