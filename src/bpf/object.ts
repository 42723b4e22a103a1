/**
 * One BPF ELF object opened from memory with libbpf: set map sizes, load (verify), find
 * programs and maps. Maps declared LIBBPF_PIN_BY_NAME are reused from / pinned to
 * `pinRoot`, which is how the separately compiled programs share their maps.
 */
import { KernelError } from "../errors.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { addressOf, cstr } from "../ffi/open.ts";
import { BpfObjectOpenOpts } from "../ffi/structs/bpf.ts";
import { encode } from "../ffi/structs/layout.ts";
import { errno, strerror } from "../ffi/libc.ts";
import { captureLibbpfLog, drainLibbpfLog, libbpfLogTail } from "./libbpf_log.ts";

export class BpfObject {
  #obj: Deno.PointerObject | null;
  // Keep every buffer libbpf may still point into alive as long as the object.
  readonly #keep: Uint8Array[];

  private constructor(readonly name: string, obj: Deno.PointerObject, keep: Uint8Array[]) {
    this.#obj = obj;
    this.#keep = keep;
  }

  static open(name: string, bytes: Uint8Array<ArrayBuffer>, pinRoot?: string): BpfObject {
    captureLibbpfLog();
    drainLibbpfLog();
    const objName = cstr(name);
    const pin = pinRoot ? cstr(pinRoot) : undefined;
    const opts = encode(BpfObjectOpenOpts, {
      sz: BigInt(BpfObjectOpenOpts.size),
      object_name: addressOf(objName),
      pin_root_path: pin ? addressOf(pin) : 0n,
    });
    const obj = libbpf().bpf_object__open_mem(bytes, BigInt(bytes.length), opts);
    if (obj === null) {
      const e = errno();
      throw new KernelError(
        `cannot open BPF object ${name}: ${strerror(e)}\n${libbpfLogTail()}`,
        "the embedded object is corrupt or this libbpf is too old: rebuild with `deno task build`, use libbpf >= 1.0",
        e,
      );
    }
    return new BpfObject(name, obj, [bytes, objName, ...(pin ? [pin] : [])]);
  }

  #ptr(): Deno.PointerObject {
    if (this.#obj === null) throw new Error(`BPF object ${this.name} is closed`);
    return this.#obj;
  }

  #map(name: string): Deno.PointerObject {
    const m = libbpf().bpf_object__find_map_by_name(this.#ptr(), cstr(name));
    if (m === null) throw new Error(`BPF object ${this.name} has no map ${name}`);
    return m;
  }

  setMaxEntries(map: string, n: number): void {
    const r = libbpf().bpf_map__set_max_entries(this.#map(map), n);
    if (r < 0) {
      throw new KernelError(`cannot size map ${map}: ${strerror(-r)}`, "this is a bug", -r);
    }
  }

  /** Sets a global section's content (e.g. ".rodata.release") before load. */
  setInitialValue(map: string, value: Uint8Array<ArrayBuffer>): void {
    const r = libbpf().bpf_map__set_initial_value(this.#map(map), value, BigInt(value.length));
    if (r < 0) {
      throw new KernelError(
        `cannot set ${map} of ${this.name}: ${strerror(-r)}`,
        "this is a bug",
        -r,
      );
    }
    this.#keep.push(value);
  }

  /** Verifies and loads every program; throws with the verifier's log on failure. */
  load(): void {
    drainLibbpfLog();
    const r = libbpf().bpf_object__load(this.#ptr());
    if (r < 0) {
      const e = -r;
      const log = libbpfLogTail(40);
      const incompatible = /couldn't reuse pinned map|incompatible/i.test(log);
      throw new KernelError(
        `cannot load BPF object ${this.name}: ${strerror(e)}${log ? "\n" + log : ""}`,
        incompatible
          ? "the pinned maps come from an incompatible tsnproxy build or map size: run `tsnproxy uninstall`, then `tsnproxy install`"
          : e === 1 || e === 13
          ? "loading BPF needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BPF enabled; see `tsnproxy doctor`"
          : "the kernel refused the program; `tsnproxy doctor` lists the kernel features tsnproxy needs",
        e,
      );
    }
  }

  programFd(name: string): number {
    const p = libbpf().bpf_object__find_program_by_name(this.#ptr(), cstr(name));
    if (p === null) throw new Error(`BPF object ${this.name} has no program ${name}`);
    return libbpf().bpf_program__fd(p);
  }

  mapFd(name: string): number {
    return libbpf().bpf_map__fd(this.#map(name));
  }

  /** Frees libbpf's state; programs and maps stay alive while pinned or attached. */
  close(): void {
    if (this.#obj !== null) libbpf().bpf_object__close(this.#obj);
    this.#obj = null;
    this.#keep.length = 0;
  }
}
