/**
 * Runs inside a test VM (tests/vm/deno_in_guest_test.ts): proves the host's deno runs from
 * the 9p-shared checkout and dlopens libbpf.so.1 and libmnl.so.0 from the host's /usr.
 */
import { report } from "./report.ts";

const root = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");
// tools/deno/node_modules/deno/deno (npm's "deno" package) is a hard link of
// @deno/linux-x64-glibc/deno, the platform package's binary.
const exec = Deno.execPath();
const real = `${exec.replace(/\/deno\/deno$/, "")}/@deno/linux-x64-glibc/deno`;
const execStat = Deno.statSync(exec);
const realStat = Deno.statSync(real);

const bpf = Deno.dlopen("libbpf.so.1", {
  libbpf_major_version: { parameters: [], result: "u32" },
  libbpf_minor_version: { parameters: [], result: "u32" },
});
const libbpf = `${bpf.symbols.libbpf_major_version()}.${bpf.symbols.libbpf_minor_version()}`;

// A real netlink round trip through libmnl: open, bind (the kernel assigns a port id), close.
const mnl = Deno.dlopen("libmnl.so.0", {
  mnl_socket_open: { parameters: ["i32"], result: "pointer" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_get_portid: { parameters: ["pointer"], result: "u32" },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
});
const NETLINK_ROUTE = 0;
const nl = mnl.symbols.mnl_socket_open(NETLINK_ROUTE);
if (nl === null) throw new Error("mnl_socket_open(NETLINK_ROUTE) failed");
const bound = mnl.symbols.mnl_socket_bind(nl, 0, 0);
const portid = mnl.symbols.mnl_socket_get_portid(nl);
mnl.symbols.mnl_socket_close(nl);

const maps = Deno.readTextFileSync("/proc/self/maps");
const mapped = (name: string) =>
  maps.split("\n").find((l) => l.includes(name))?.split(/\s+/).pop() ?? "";
const libbpfFile = mapped("libbpf.so");
const libmnlFile = mapped("libmnl.so");
bpf.close();
mnl.close();

const result = {
  kernel: Deno.osRelease(),
  deno: Deno.version.deno,
  execPath: exec,
  execInCheckout: exec.startsWith(root + "/"),
  realBinary: real,
  sameInode: execStat.ino === realStat.ino && execStat.dev === realStat.dev,
  checkoutMount: Deno.readTextFileSync("/proc/mounts").split("\n").find((l) =>
    l.split(" ")[1] === root
  ),
  realBinarySize: realStat.size,
  libbpf,
  libmnlBind: bound,
  libmnlPortid: portid,
  usrMount: Deno.readTextFileSync("/proc/mounts").split("\n").find((l) => / \/usr 9p /.test(l)),
  libbpfFile,
  libmnlFile,
};
console.log(result);
report("deno-libs", result);
