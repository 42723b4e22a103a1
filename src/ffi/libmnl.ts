/**
 * libmnl symbols tsnproxy uses for rtnetlink: the socket calls, and the message builders that
 * write headers and attributes into a buffer we own (a pointer into a JS ArrayBuffer). Replies
 * are parsed in TypeScript (src/netlink/message.ts), which is simpler than mnl_cb_run callbacks
 * through FFI and avoids an FFI call per attribute.
 */
import { type LazyLibrary, lazyLibrary } from "./open.ts";

export const libmnlSymbols = {
  mnl_socket_open2: { parameters: ["i32", "i32"], result: "pointer" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
  mnl_socket_get_fd: { parameters: ["pointer"], result: "i32" },
  mnl_socket_get_portid: { parameters: ["pointer"], result: "u32" },
  mnl_socket_sendto: { parameters: ["pointer", "pointer", "usize"], result: "isize" },
  mnl_socket_recvfrom: { parameters: ["pointer", "pointer", "usize"], result: "isize" },
  mnl_socket_setsockopt: { parameters: ["pointer", "i32", "buffer", "u32"], result: "i32" },
  mnl_nlmsg_put_header: { parameters: ["pointer"], result: "pointer" },
  mnl_nlmsg_put_extra_header: { parameters: ["pointer", "usize"], result: "pointer" },
  mnl_attr_put_check: {
    parameters: ["pointer", "usize", "u16", "usize", "buffer"],
    result: "bool",
  },
  mnl_attr_put_u8_check: { parameters: ["pointer", "usize", "u16", "u8"], result: "bool" },
  mnl_attr_put_u16_check: { parameters: ["pointer", "usize", "u16", "u16"], result: "bool" },
  mnl_attr_put_u32_check: { parameters: ["pointer", "usize", "u16", "u32"], result: "bool" },
  mnl_attr_put_u64_check: { parameters: ["pointer", "usize", "u16", "u64"], result: "bool" },
  mnl_attr_put_strz_check: {
    parameters: ["pointer", "usize", "u16", "buffer"],
    result: "bool",
  },
  mnl_attr_nest_start_check: { parameters: ["pointer", "usize", "u16"], result: "pointer" },
  mnl_attr_nest_end: { parameters: ["pointer", "pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

let lib: LazyLibrary<typeof libmnlSymbols> | undefined;

/** The libmnl symbol table, opened on first use (TSNPROXY_LIBMNL overrides the soname). */
export function libmnl(): Deno.DynamicLibrary<typeof libmnlSymbols>["symbols"] {
  lib ??= lazyLibrary({
    name: "libmnl",
    sonames: ["libmnl.so.0"],
    envVar: "TSNPROXY_LIBMNL",
    debianPackage: "libmnl0",
  }, libmnlSymbols);
  lib.ensure();
  return lib.symbols;
}

/** MNL_SOCKET_AUTOPID: let the kernel pick the port id at bind time. */
export const MNL_SOCKET_AUTOPID = 0;
