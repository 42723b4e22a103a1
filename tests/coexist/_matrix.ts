/**
 * What the coexistence tests send from a pod and how they report it: every priority the
 * node policy allows (0-15 by default), one run each, counted by the observer on tsn0; and
 * SO_TXTIME launch times. Failures come back as lines with numbers, collected so one run
 * reports everything that went wrong.
 */
import type { CoexistNode, CoexistPod } from "../lib/standins.ts";
import type { ObserverCounts } from "../lib/observer.ts";

export const UDP = 17;
export const TCP = 6;
export const PRIORITIES = Array.from({ length: 16 }, (_, i) => i);

export interface PrioRow {
  prio: number;
  sent: number;
  /** Left tsn0 (forwarded packets the observer matched). */
  left: number;
  /** Left tsn0 at the pod's priority. */
  right: number;
  /** Wrong priority -> packets. */
  wrong: Record<number, number>;
}

/** Polls the observer until `n` matching packets were counted (or 2 s pass). */
export async function settled(node: CoexistNode, n: number): Promise<ObserverCounts> {
  const end = Date.now() + 2000;
  let c = node.observer!.counts();
  while (c.fwdTotal + c.localTotal < n && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    c = node.observer!.counts();
  }
  return c;
}

export interface Target {
  dst: string;
  port: number;
  /** The port the observer matches (after DNAT), default 8080. */
  observePort?: number;
}

/** Sends `count` UDP datagrams at each priority; one row per priority. */
export async function priorityMatrix(
  node: CoexistNode,
  pod: CoexistPod,
  t: Target,
  count = 100,
  prios = PRIORITIES,
): Promise<PrioRow[]> {
  const obs = node.observer!;
  obs.filter(UDP, t.observePort ?? 8080);
  const rows: PrioRow[] = [];
  for (const prio of prios) {
    obs.reset();
    await node.send(pod, [
      ...["--dst", t.dst, "--port", String(t.port), "--count", String(count)],
      ...["--prio", String(prio)],
    ]);
    const c = await settled(node, count);
    const wrong: Record<number, number> = {};
    c.fwdPrio.forEach((n, p) => {
      if (p !== prio && n) wrong[p] = n;
    });
    rows.push({ prio, sent: count, left: c.fwdTotal, right: c.fwdPrio[prio], wrong });
  }
  return rows;
}

/** "priority 4: 0 of 100 at 4 (100 at 0)" for each row that is not all right. */
export function wrongRows(rows: PrioRow[], label: string): string[] {
  return rows.filter((r) => r.right !== r.sent || r.left !== r.sent).map((r) => {
    const wrong = Object.entries(r.wrong).map(([p, n]) => `${n} at ${p === "16" ? ">15" : p}`);
    const lost = r.sent - r.left;
    return `${label}: priority ${r.prio}: ${r.right} of ${r.sent} left tsn0 at ${r.prio}` +
      (wrong.length ? ` (${wrong.join(", ")})` : "") + (lost ? `, ${lost} never left tsn0` : "");
  });
}

export interface TxtimeRow {
  clock: "tai" | "realtime";
  prio: number;
  sent: number;
  left: number;
  rightPrio: number;
  ok: number;
  bad: number;
  none: number;
}

/** SO_TXTIME launch times (and a priority) from the pod: did each leave with its own? */
export async function launchTimes(
  node: CoexistNode,
  pod: CoexistPod,
  t: Target,
  count = 100,
): Promise<TxtimeRow[]> {
  const obs = node.observer!;
  obs.filter(UDP, t.observePort ?? 8080);
  const rows: TxtimeRow[] = [];
  for (const [clock, prio] of [["tai", 3], ["realtime", 5]] as const) {
    obs.reset();
    await node.send(pod, [
      ...["--dst", t.dst, "--port", String(t.port), "--count", String(count)],
      ...["--prio", String(prio), "--txtime", clock],
    ]);
    const c = await settled(node, count);
    rows.push({
      clock,
      prio,
      sent: count,
      left: c.fwdTotal,
      rightPrio: c.fwdPrio[prio],
      ok: c.tsOk,
      bad: c.tsBad,
      none: c.tsNone,
    });
  }
  return rows;
}

export function wrongTxtime(rows: TxtimeRow[], label: string): string[] {
  return rows.filter((r) => r.ok !== r.sent || r.rightPrio !== r.sent).map((r) =>
    `${label}: SO_TXTIME ${r.clock} at priority ${r.prio}: ${r.ok} of ${r.sent} left tsn0 ` +
    `with their launch time (${r.bad} wrong, ${r.none} none), ${r.rightPrio} at priority ` +
    `${r.prio}, ${r.left} left tsn0`
  );
}

/** Prints the per-priority table (shown with the test's output, failing or not). */
export function printMatrix(title: string, rows: PrioRow[]): void {
  console.log(`${title}: priority -> left tsn0 at it / sent (wrong)`);
  console.log(
    rows.map((r) =>
      `  ${String(r.prio).padStart(2)}: ${r.right}/${r.sent}` +
      (Object.keys(r.wrong).length ? ` ${JSON.stringify(r.wrong)}` : "")
    ).join("\n"),
  );
}
