/**
 * libbpf symbol table: the object loader, tc attachment, links, probes and test runs. The
 * plain bpf(2) commands (pins, map elements, info, ids) go through libc's syscall binding
 * (src/bpf/sys.ts). Debian 12 ships libbpf 1.1.2, which predates tcx: tcx attachments go
 * through bpf_link_create with the raw BPF_TCX_* attach types (src/bpf/attach.ts).
 */
import { type LazyLibrary, lazyLibrary } from "./open.ts";

export const libbpfSymbols = {
  libbpf_major_version: { parameters: [], result: "u32" },
  libbpf_minor_version: { parameters: [], result: "u32" },
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
  libbpf_probe_bpf_helper: { parameters: ["u32", "u32", "pointer"], result: "i32" },
  libbpf_probe_bpf_prog_type: { parameters: ["u32", "pointer"], result: "i32" },

  bpf_object__open_mem: { parameters: ["buffer", "usize", "buffer"], result: "pointer" },
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  bpf_object__find_program_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_program__fd: { parameters: ["pointer"], result: "i32" },
  bpf_program__pin: { parameters: ["pointer", "buffer"], result: "i32" },
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__set_pin_path: { parameters: ["pointer", "buffer"], result: "i32" },
  bpf_map__set_initial_value: { parameters: ["pointer", "buffer", "usize"], result: "i32" },

  bpf_tc_hook_create: { parameters: ["buffer"], result: "i32" },
  bpf_tc_hook_destroy: { parameters: ["buffer"], result: "i32" },
  bpf_tc_attach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_detach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_query: { parameters: ["buffer", "buffer"], result: "i32" },

  bpf_link_create: { parameters: ["i32", "i32", "u32", "buffer"], result: "i32" },
  bpf_link_detach: { parameters: ["i32"], result: "i32" },
  bpf_prog_query_opts: { parameters: ["i32", "u32", "buffer"], result: "i32" },
  bpf_prog_test_run_opts: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type Libbpf = Deno.DynamicLibrary<typeof libbpfSymbols>["symbols"];
let lib: LazyLibrary<typeof libbpfSymbols> | undefined;

export function libbpf(): Libbpf {
  lib ??= lazyLibrary({
    name: "libbpf",
    sonames: ["libbpf.so.1"],
    envVar: "TSNPROXY_LIBBPF",
    debianPackage: "libbpf1",
  }, libbpfSymbols);
  lib.ensure();
  return lib.symbols;
}
