/**
 * The node side of the datapath: load and pin the programs, write the config, start the
 * GC, attach the restorer to the TSN interface. Used by `tsnproxy install`, the agent and
 * the tests; everything here is idempotent.
 */
import type { RestoreAt } from "../options.ts";
import { attach, type Attachment, describePin, detach, pinsOf, type TcApi } from "./attach.ts";
import { loadDatapath, type ProgramState, startGc } from "./loader.ts";
import { type DatapathConfig, DatapathMaps } from "./maps.ts";
import { PinLayout } from "./pins.ts";
import { closeFd, objGetRequired } from "./sys.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { withNetns } from "../util/netns.ts";

export interface NodeOptions {
  bpffs: string;
  mapEntries: number;
  tsnInterface?: string;
  restoreAt: RestoreAt;
  api: TcApi;
  config: DatapathConfig;
  /** Network namespace of the node (tests); undefined = the caller's. */
  netns?: string;
}

export interface NodeState {
  programs: ProgramState[];
  restorer?: Attachment & { action: "kept" | "attached" };
}

export function restorerPin(bpffs: string, ifname: string): string {
  return `${new PinLayout(bpffs).nodeDir}/restore_${ifname}`;
}

/** True when a pinned restorer attachment still sits on the interface's current index. */
export function restorerAttached(
  bpffs: string,
  ifname: string,
  netns?: string,
): Attachment | undefined {
  const ifindex = withNetns(netns, () => ifNameToIndex(ifname));
  for (const p of pinsOf(restorerPin(bpffs, ifname))) {
    const a = describePin(p);
    // A tcx link whose interface was deleted reports ifindex 0; a recreated interface gets
    // a new index. Either way the old attachment no longer filters this interface.
    if (ifindex !== 0 && a.ifindex === ifindex) return a;
  }
  return undefined;
}

export function setupNode(opts: NodeOptions): NodeState {
  const programs = loadDatapath({ bpffs: opts.bpffs, mapEntries: opts.mapEntries });
  const maps = DatapathMaps.open(opts.bpffs);
  try {
    maps.writeConfig(opts.config);
  } finally {
    maps.close();
  }
  startGc(opts.bpffs);
  const state: NodeState = { programs };
  if (opts.restoreAt === "tsn-egress" && opts.tsnInterface) {
    state.restorer = attachRestorer(opts.bpffs, opts.tsnInterface, opts.api, opts.netns);
  }
  return state;
}

/** Attaches the restorer to the TSN interface's egress unless it is there already. */
export function attachRestorer(
  bpffs: string,
  ifname: string,
  api: TcApi,
  netns?: string,
): Attachment & { action: "kept" | "attached" } {
  const existing = restorerAttached(bpffs, ifname, netns);
  if (existing) return { ...existing, action: "kept" };
  const pin = restorerPin(bpffs, ifname);
  detach(pin, { netns }); // stale pins of a deleted/recreated interface
  const fd = objGetRequired(new PinLayout(bpffs).prog("restore"));
  try {
    const a = attach({ progFd: fd, ifname, direction: "egress", api, netns, pin, first: true });
    return { ...a, action: "attached" };
  } finally {
    closeFd(fd);
  }
}

/** Detaches every node and pod attachment and removes every pin under the root. */
export function teardownNode(bpffs: string, netns?: string): number {
  const pins = new PinLayout(bpffs);
  let n = 0;
  for (const dir of [pins.nodeDir, pins.podsDir]) {
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(dir)].map((e) => e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    for (const name of names) {
      const base = name.replace(/@clsact-.*$/, "");
      // Node attachments (the TSN NIC, pods' host veths) live in the node's namespace.
      // Pod savers: tcx links detach on unpin; clsact filters are removed in the pod
      // namespace their marker records, while it lives.
      const inNode = dir === pins.nodeDir || base.endsWith("@host");
      n += detach(`${dir}/${base}`, inNode ? { netns } : { recorded: true });
    }
  }
  try {
    Deno.removeSync(pins.root, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return n;
}
