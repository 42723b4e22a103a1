/**
 * Runs inside the arm64 test VM (tests/vm/arm64_test.ts) with the arm64 deno: the product's
 * install (the same plan/apply as `tsnproxy install`) loads, verifies and pins the embedded BPF
 * objects on an arm64 kernel through the arm64 libbpf, attaches the restorer (to lo: the guest
 * has no TSN NIC, and busybox cannot make a veth), the GC timer program runs (JIT-compiled for
 * arm64), and UDP traffic over lo passes the restorer (the node's own packets: left alone,
 * uncounted); uninstall removes every pin.
 * Prints a TSNVM-JSON "arm64" result.
 */
import dgram from "node:dgram";
import { installWithConfig } from "../../../src/install/command.ts";
import { runUninstall } from "../../../src/install/uninstall.ts";
import { restorerAttached } from "../../../src/bpf/node.ts";
import { DatapathMaps } from "../../../src/bpf/maps.ts";
import { PinLayout, PROGRAMS } from "../../../src/bpf/pins.ts";
import { versionInfo } from "../../../src/build_info.ts";
import { report } from "./report.ts";

const CHECKOUT = new URL("../../..", import.meta.url).pathname.replace(/\/$/, "");
const DIR = "/tmp/tsnp";
const LOC = {
  tsnInterface: "lo",
  cniConfDir: `${DIR}/net.d`,
  cniBinDir: `${DIR}/bin`,
  bpffs: "/sys/fs/bpf/tsnproxy",
  stateDir: `${DIR}/state`,
};
const t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);

for (const d of [LOC.cniConfDir, LOC.cniBinDir, LOC.stateDir]) {
  Deno.mkdirSync(d, { recursive: true });
}
Deno.copyFileSync(
  `${CHECKOUT}/tests/fixtures/cni/bridge/10-bridge.conflist`,
  `${LOC.cniConfDir}/10-bridge.conflist`,
);
const yaml = "tsnInterface: lo\nqdisc:\n  kind: keep\ngc:\n  intervalMs: 50\n";
const installed = await installWithConfig(yaml, LOC);
const installMs = ms();
const pins = new PinLayout(LOC.bpffs);
const programs = Object.values(PROGRAMS).filter((p) => {
  try {
    return Deno.statSync(`${pins.progsDir}/${p}`).isFile;
  } catch {
    return false;
  }
});
const attachment = restorerAttached(LOC.bpffs, "lo");

const before = DatapathMaps.open(LOC.bpffs);
const c0 = before.counters();
before.close();
// Traffic over lo: every packet passes the restorer at lo's egress.
const sock = dgram.createSocket("udp4");
await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
const port = (sock.address() as { port: number }).port;
const SENT = 50;
for (let i = 0; i < SENT; i++) {
  await new Promise<void>((r, j) =>
    sock.send(`tsn ${i}`, port, "127.0.0.1", (e) => e ? j(e) : r())
  );
}
sock.close();
await new Promise((r) => setTimeout(r, 500)); // GC ticks every 50 ms
const after = DatapathMaps.open(LOC.bpffs);
const c1 = after.counters();
after.close();

Deno.writeTextFileSync(`${DIR}/config.yaml`, yaml);
const uninstallCode = await runUninstall({
  config: `${DIR}/config.yaml`,
  ...LOC,
  dryRun: false,
  removeQdisc: false,
});
let pinsLeft: string[] = [];
try {
  pinsLeft = [...Deno.readDirSync(LOC.bpffs)].map((e) => e.name);
} catch { /* removed */ }

report("arm64", {
  arch: Deno.build.arch,
  kernel: Deno.osRelease(),
  deno: Deno.version.deno,
  bpfObjects: versionInfo().bpfObjectsSha256,
  api: installed.ran.target.api,
  programs,
  restorer: attachment ? { api: attachment.api, direction: attachment.direction } : null,
  sent: SENT,
  delta: Object.fromEntries(
    Object.entries(c1).map(([k, v]) => [k, Number(v - c0[k as keyof typeof c0])]),
  ),
  uninstallCode,
  pinsLeft,
  installMs,
  totalMs: ms(),
});
