/**
 * What the stand-in datapaths (tests/bpf/standins/*.c) and their CNI plugin
 * (tests/lib/standin_cni.ts) share: the pin layout under a test pin root, the raw
 * BPF_LINK_CREATE they attach with (tcx and netkit, with the ordering flags the real
 * datapaths use), the per-pod endpoint entries and the counters' layout. Small on purpose:
 * the CNI plugin imports it on every ADD.
 */
import {
  bpf,
  check,
  closeFd,
  linkUpdateAt,
  mapDelete,
  mapUpdate,
  objGet,
  objPin,
} from "../../src/bpf/sys.ts";
import { BPF_ANY } from "../../src/ffi/structs/bpf.ts";

export const BPF_LINK_CREATE = 28;
/** enum bpf_attach_type (include/uapi/linux/bpf.h): tcx 46/47; netkit 54/55 (6.7+). */
export const ATTACH = {
  tcxIngress: 46,
  tcxEgress: 47,
  netkitPrimary: 54,
  netkitPeer: 55,
} as const;
export const BPF_F_BEFORE = 1 << 3;
export const BPF_F_AFTER = 1 << 4;
export const BPF_F_ID = 1 << 5;

/**
 * bpf(BPF_LINK_CREATE) for a tcx or netkit hook: the link fd. `flags` 0 appends at the tail,
 * as Cilium (link.Tail()) and Calico (default options) attach theirs.
 */
export function linkCreate(
  progFd: number,
  ifindex: number,
  attachType: number,
  flags = 0,
  relativeId = 0,
): number {
  const attr = new Uint8Array(64);
  const v = new DataView(attr.buffer);
  v.setUint32(0, progFd, true);
  v.setUint32(4, ifindex, true);
  v.setUint32(8, attachType, true);
  v.setUint32(12, flags, true);
  v.setUint32(16, relativeId, true); // tcx/netkit: relative_fd or relative_id
  return check(
    bpf(BPF_LINK_CREATE, attr),
    `stand-in: bpf_link_create(ifindex ${ifindex}, attach type ${attachType})`,
    "run as root on a kernel with tcx (6.6+) or netkit (6.7+)",
  );
}

/**
 * bpf(BPF_LINK_UPDATE): swaps the program of a link in place, as Cilium's and Calico's agents
 * do when they regenerate an endpoint; the link keeps its position on the hook.
 */
export function updatePinnedLink(linkPin: string, progPin: string): void {
  const prog = objGet(progPin);
  if (prog === undefined) throw new Error(`stand-in: no program at ${progPin}`);
  try {
    check(linkUpdateAt(linkPin, prog), `stand-in: update link ${linkPin}`, "run as root");
  } finally {
    closeFd(prog);
  }
}

/** Attaches the program pinned at progPin and pins the link at linkPin (it outlives us). */
export function attachPinned(
  progPin: string,
  ifindex: number,
  attachType: number,
  linkPin: string,
  flags = 0,
): void {
  const prog = objGet(progPin);
  if (prog === undefined) throw new Error(`stand-in program ${progPin} is not loaded`);
  try {
    const link = linkCreate(prog, ifindex, attachType, flags);
    try {
      objPin(link, linkPin);
    } finally {
      closeFd(link);
    }
  } finally {
    closeFd(prog);
  }
}

/** Where a stand-in datapath keeps its programs, maps and links under its pin root. */
export const pins = {
  prog: (root: string, name: string) => `${root}/prog_${name}`,
  map: (root: string, name: string) => `${root}/map_${name}`,
  link: (root: string, owner: string) => `${root}/link_${owner}`,
};

/** The kinds of stand-in, and the program each attaches to a pod's host-side interface. */
export const STANDINS = {
  /** Cilium, legacy host routing: cil_from_container on the host veth's tcx ingress. */
  "cilium-legacy": { object: "cilium", podProgram: "sti_cil_lxc" },
  /** Cilium, BPF host routing: the same, forwarding with bpf_redirect_neigh. */
  "cilium-hostrouting": { object: "cilium", podProgram: "sti_cil_lxc_fib" },
  /** Cilium with netkit pods: cil_from_container on the netkit peer hook. */
  "cilium-netkit": { object: "cilium", podProgram: "sti_cil_lxc" },
  /** Calico eBPF: calico_from_workload_ep on the cali* interface's tcx ingress. */
  "calico": { object: "calico", podProgram: "sti_cali_wep" },
} as const;
export type StandinKind = keyof typeof STANDINS;

/** struct sti_ep (tests/bpf/standins/cilium.c): a local pod for the datapath's lookups. */
export function endpointValue(ifindex: number, podMac: string, hostMac: string) {
  const v = new Uint8Array(16);
  new DataView(v.buffer).setUint32(0, ifindex, true);
  v.set(macBytes(podMac), 4);
  v.set(macBytes(hostMac), 10);
  return v;
}

export function macBytes(mac: string): Uint8Array {
  const b = mac.split(":").map((x) => parseInt(x, 16));
  if (b.length !== 6 || b.some((x) => !(x >= 0 && x <= 255))) throw new Error(`bad MAC ${mac}`);
  return new Uint8Array(b);
}

/** An address as the map key bytes: 4 for IPv4, 16 for IPv6. */
export function addrBytes(ip: string): Uint8Array<ArrayBuffer> {
  if (!ip.includes(":")) return new Uint8Array(ip.split(".").map(Number));
  const [h, t = ""] = ip.split("::");
  const hs = h ? h.split(":") : [];
  const ts = ip.includes("::") && t ? t.split(":") : [];
  const groups = [...hs, ...Array(8 - hs.length - ts.length).fill("0"), ...ts];
  return new Uint8Array(groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  }));
}

/** Registers (value) or removes (undefined) a pod address in the datapath's endpoint maps. */
export function setEndpoint(root: string, ip: string, value?: Uint8Array): void {
  const map = pins.map(root, ip.includes(":") ? "sti_eps6" : "sti_eps4");
  const fd = objGet(map);
  if (fd === undefined) return; // this stand-in has no endpoint map
  try {
    const key = addrBytes(ip);
    if (value) {
      check(mapUpdate(fd, key, new Uint8Array(value), BPF_ANY), `endpoint ${ip}`, "run as root");
    } else {
      mapDelete(fd, key);
    }
  } finally {
    closeFd(fd);
  }
}
