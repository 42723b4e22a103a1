/**
 * The test-only observer (tests/bpf/observer.c) as a classic cls_bpf filter on the TSN
 * interface's egress, after the restorer (tcx programs run before clsact filters, and its
 * priority 50 runs after tsnproxy's filter at priority 1). It counts what really leaves.
 */
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { check, mapLookup, mapUpdate } from "../../src/bpf/sys.ts";
import { Errno, ifNameToIndex } from "../../src/ffi/libc.ts";
import { libbpf } from "../../src/ffi/libbpf.ts";
import {
  BPF_TC_EGRESS,
  BPF_TC_F_REPLACE,
  BpfTcHook,
  BpfTcOpts,
} from "../../src/ffi/structs/bpf.ts";
import { encode } from "../../src/ffi/structs/layout.ts";
import { withNetns } from "../../src/util/netns.ts";
import { TEST_BPF_OBJECTS } from "./test_objects.gen.ts";
import { ATTACH, BPF_F_BEFORE, BPF_F_ID, linkCreate } from "./standin_link.ts";
import { closeFd } from "../../src/bpf/sys.ts";

export interface ObserverCounts {
  fwdTotal: number;
  fwdPrio: number[];
  localTotal: number;
  localPrio: number[];
  tsOk: number;
  tsBad: number;
  tsNone: number;
  tstampType: number[];
  gso: number;
}

const HANDLE = 0xb5;
const PRIORITY = 50;

export class Observer {
  #obj: BpfObject;
  #ifindex: number;
  /** tcx mode: the (unpinned) link; closing it detaches. */
  #link = -1;

  private constructor(
    obj: BpfObject,
    ifindex: number,
    readonly ifname: string,
    readonly netns: string | undefined,
  ) {
    this.#obj = obj;
    this.#ifindex = ifindex;
  }

  /** Attaches to `ifname` egress in `netns` (undefined: the caller's namespace). */
  static attach(netns: string | undefined, ifname: string): Observer {
    const obj = BpfObject.open("tsnp_observer", objectBytes("observer", TEST_BPF_OBJECTS));
    obj.load();
    try {
      const ifindex = withNetns(netns, () => {
        const idx = ifNameToIndex(ifname);
        const hook = encode(BpfTcHook, {
          sz: BigInt(BpfTcHook.size),
          ifindex: idx,
          attach_point: BPF_TC_EGRESS,
        });
        const r = libbpf().bpf_tc_hook_create(hook);
        if (r < 0 && r !== -Errno.EEXIST) check(r, "observer clsact", "root");
        const opts = encode(BpfTcOpts, {
          sz: BigInt(BpfTcOpts.size),
          prog_fd: obj.programFd("tsnp_observer"),
          flags: BPF_TC_F_REPLACE,
          handle: HANDLE,
          priority: PRIORITY,
        });
        check(libbpf().bpf_tc_attach(hook, opts), "observer attach", "root");
        return idx;
      });
      return new Observer(obj, ifindex, ifname, netns);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /**
   * Attaches to `ifname`'s tcx egress right before the program with id `beforeProgId`: for a
   * NIC where another datapath's tcx program ends the chain with TC_ACT_OK (Cilium's
   * cil_to_netdev), which skips every clsact filter and so the classic observer.
   */
  static attachTcxBefore(netns: string | undefined, ifname: string, beforeProgId: number) {
    const obj = BpfObject.open("tsnp_observer", objectBytes("observer", TEST_BPF_OBJECTS));
    obj.load();
    try {
      const [ifindex, link] = withNetns(netns, () => {
        const idx = ifNameToIndex(ifname);
        const flags = BPF_F_BEFORE | BPF_F_ID;
        return [
          idx,
          linkCreate(obj.programFd("tsnp_observer"), idx, ATTACH.tcxEgress, flags, beforeProgId),
        ];
      });
      const o = new Observer(obj, ifindex, ifname, netns);
      o.#link = link;
      return o;
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** Counts only packets of this L4 protocol (0 = any) and destination port (0 = any). */
  /** Counts only this protocol and port; `tsOffset`: where senders put the launch time. */
  filter(l4proto: number, dport = 0, tsOffset = 0): void {
    const v = new Uint8Array(4);
    const dv = new DataView(v.buffer);
    dv.setUint8(0, l4proto);
    dv.setUint8(1, tsOffset);
    dv.setUint16(2, dport, false); // network order
    check(
      mapUpdate(this.#obj.mapFd("obs_filter"), new Uint8Array(4), v, 0n),
      "filter",
      "",
    );
    this.reset();
  }

  reset(): void {
    check(
      mapUpdate(
        this.#obj.mapFd("obs_counts"),
        new Uint8Array(4),
        new Uint8Array(COUNTS_SIZE),
        0n,
      ),
      "reset",
      "",
    );
  }

  counts(): ObserverCounts {
    const v = new Uint8Array(COUNTS_SIZE);
    check(
      mapLookup(this.#obj.mapFd("obs_counts"), new Uint8Array(4), v),
      "counts",
      "",
    );
    return decodeCounts(v);
  }

  detach(): void {
    if (this.#link >= 0) {
      closeFd(this.#link);
      this.#link = -1;
      this.#obj.close();
      return;
    }
    try {
      withNetns(this.netns, () => {
        const hook = encode(BpfTcHook, {
          sz: BigInt(BpfTcHook.size),
          ifindex: this.#ifindex,
          attach_point: BPF_TC_EGRESS,
        });
        const opts = encode(BpfTcOpts, {
          sz: BigInt(BpfTcOpts.size),
          handle: HANDLE,
          priority: PRIORITY,
        });
        libbpf().bpf_tc_detach(hook, opts);
      });
    } catch {
      // the namespace may be gone already
    }
    this.#obj.close();
  }
}

/** sizeof(struct obs_counts): 1 + 17 + 1 + 17 + 3 + 4 + 1 u64s. */
export const COUNTS_SIZE = 8 * (1 + 17 + 1 + 17 + 3 + 4 + 1);

/** Decodes struct obs_counts (tests/bpf/observer.c; the research benchmark shares its layout). */
export function decodeCounts(v: Uint8Array<ArrayBuffer>): ObserverCounts {
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let off = 0;
  const next = () => {
    const x = Number(dv.getBigUint64(off, true));
    off += 8;
    return x;
  };
  const arr = (n: number) => Array.from({ length: n }, next);
  return {
    fwdTotal: next(),
    fwdPrio: arr(17),
    localTotal: next(),
    localPrio: arr(17),
    tsOk: next(),
    tsBad: next(),
    tsNone: next(),
    tstampType: arr(4),
    gso: next(),
  };
}
