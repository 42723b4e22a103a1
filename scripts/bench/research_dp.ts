/**
 * BENCHMARK ONLY: loads bench/bpf/research.c, the research proof of concept's datapath
 * rebuilt for comparison (pointer key, save every packet, 2048-entry hash, no overwrite,
 * 1 s TAI GC, restorer returning TC_ACT_OK). Its pins live under a private root and go
 * away with close(). Never part of the product.
 */
import { attach, detach, pinsOf } from "../../src/bpf/attach.ts";
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { testRun } from "../../src/bpf/loader.ts";
import { check, mapLookup, mapNextKey, mapUpdate } from "../../src/bpf/sys.ts";
import { possibleCpus } from "../../src/bpf/maps.ts";
import { Errno } from "../../src/ffi/libc.ts";
import { BENCH_BPF_OBJECTS } from "./objects.gen.ts";
import { COUNTS_SIZE, decodeCounts, type ObserverCounts } from "../../tests/lib/observer.ts";

export const RESEARCH_STATS = [
  "saved",
  "saveFull",
  "saveExists",
  "restored",
  "miss",
  "gcDeleted",
  "gcRuns",
] as const;
export type ResearchStats = Record<typeof RESEARCH_STATS[number], number>;

export class ResearchDatapath {
  readonly obj: BpfObject;
  readonly #pins: string[] = [];
  readonly #ncpus = possibleCpus();

  private constructor(obj: BpfObject, readonly pinDir: string) {
    this.obj = obj;
  }

  /** Loads (verifies) the programs; pinDir is where attachments get pinned. */
  static load(pinDir: string): ResearchDatapath {
    const obj = BpfObject.open("research", objectBytes("research", BENCH_BPF_OBJECTS));
    try {
      obj.load();
    } catch (e) {
      obj.close();
      throw e;
    }
    Deno.mkdirSync(pinDir, { recursive: true });
    return new ResearchDatapath(obj, pinDir);
  }

  prog(name: "save" | "restore" | "obs_restore" | "gc_start"): number {
    return this.obj.programFd(`rsch_${name}`);
  }

  startGc(): void {
    const { retval } = testRun(this.prog("gc_start"));
    if (retval !== 0) throw new Error(`research GC did not start (step ${retval})`);
  }

  /** The restorer (with the in-program observer) on the TSN interface's egress, tcx. */
  attachRestorer(netns: string, ifname: string, withObserver = true): void {
    const pin = `${this.pinDir}/restore_${ifname}`;
    attach({
      progFd: this.prog(withObserver ? "obs_restore" : "restore"),
      ifname,
      direction: "egress",
      api: "tcx",
      netns,
      pin,
      first: true,
    });
    this.#pins.push(pin);
  }

  attachSaver(netns: string, ifname: string, name: string): void {
    const pin = `${this.pinDir}/save_${name}`;
    attach({
      progFd: this.prog("save"),
      ifname,
      direction: "egress",
      api: "tcx",
      netns,
      pin,
      first: true,
    });
    this.#pins.push(pin);
  }

  /** Entries in the 2048-entry table. */
  occupancy(): number {
    const fd = this.obj.mapFd("research_meta");
    let n = 0;
    let prev: Uint8Array<ArrayBuffer> | null = null;
    for (;;) {
      const next = new Uint8Array(8);
      const r = mapNextKey(fd, prev, next);
      if (r === -Errno.ENOENT) return n;
      check(r, "research_meta iteration", "root");
      n++;
      prev = next;
    }
  }

  stats(): ResearchStats {
    const fd = this.obj.mapFd("research_stats");
    const out = Object.fromEntries(RESEARCH_STATS.map((k) => [k, 0])) as ResearchStats;
    RESEARCH_STATS.forEach((name, i) => {
      const v = new Uint8Array(8 * this.#ncpus);
      check(
        mapLookup(fd, new Uint8Array(new Uint32Array([i]).buffer), v),
        "research_stats",
        "root",
      );
      const dv = new DataView(v.buffer);
      for (let c = 0; c < this.#ncpus; c++) out[name] += Number(dv.getBigUint64(c * 8, true));
    });
    return out;
  }

  /** What its restorer let leave (same layout as tests/bpf/observer.c; UDP only). */
  counts(): ObserverCounts {
    const v = new Uint8Array(COUNTS_SIZE);
    check(
      mapLookup(this.obj.mapFd("research_obs"), new Uint8Array(4), v),
      "research_obs",
      "root",
    );
    return decodeCounts(v);
  }

  resetCounts(): void {
    check(
      mapUpdate(
        this.obj.mapFd("research_obs"),
        new Uint8Array(4),
        new Uint8Array(8 * 44),
        0n,
      ),
      "research_obs reset",
      "root",
    );
  }

  /** Detaches everything and frees the programs and maps (the GC timer dies with them). */
  close(): void {
    for (const pin of this.#pins) {
      for (const p of pinsOf(pin)) {
        try {
          detach(p.replace(/@clsact-.*$/, ""));
        } catch {
          // namespace gone already
        }
      }
    }
    this.#pins.length = 0;
    this.obj.close();
    try {
      Deno.removeSync(this.pinDir, { recursive: true });
    } catch {
      // never created or removed already
    }
  }
}
