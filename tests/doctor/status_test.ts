/**
 * `tsnproxy status` on a real node: counters move when a pod sends, per pod and node-wide, with
 * each pod's carrier, reason, policy and the releases of its saver and admit.
 */
import assert from "node:assert/strict";
import { collectStatus, renderStatus, runStatus } from "../../src/doctor/status.ts";
import { type StatusReport, statusReportSchema } from "../../src/doctor/schema.ts";
import { formatRelease } from "../../src/bpf/release.ts";
import { OBJECTS_SHA256 } from "../../src/bpf/objects.ts";
import { VERSION } from "../../src/version.ts";
import { withNetns } from "../../src/util/netns.ts";
import { randomId, run, runSync } from "../lib/run.ts";
import { DoctorEnv, ROOT } from "./_env.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

const SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, int(sys.argv[2]))
for i in range(int(sys.argv[1])):
    s.sendto(b"tsnproxy-status-%d" % i, ("10.250.0.1", 9))
`;

const THIS_BUILD = formatRelease({ version: VERSION, objects: OBJECTS_SHA256.slice(0, 12) });

Deno.test("status: node and per-pod counters, --json schema, --watch rates", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const pod = await env.attachPod("hv2", {
      // The pod's own layer lowers the node's (no ceiling) to 7.
      entry: { policy: { maxPriority: 7 } },
    });
    await env.ip("addr", "add", "10.250.0.1/24", "dev", "hv2");
    // Only what the test sends: static neighbours both ways (no ARP, the node's ICMP replies
    // included), no IPv6 chatter from the pod.
    const macOf = async (ns: string, dev: string) =>
      JSON.parse((await run(["ip", "-n", ns, "-j", "link", "show", dev])).stdout)[0].address;
    const neigh = (ns: string, ip: string, mac: string, dev: string) =>
      run(["ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac, "dev", dev]);
    await neigh(pod.netns, "10.250.0.1", await macOf(env.node, "hv2"), "eth0");
    await neigh(env.node, pod.ip, await macOf(pod.netns, "eth0"), "hv2");
    await run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], { netns: pod.netns });
    const send = (n: number, prio: number) =>
      run(["python3", "-c", SEND, String(n), String(prio)], { netns: pod.netns });
    // status runs on the node, whose interface names are the node namespace's.
    const status = () => withNetns(env.nodePath, () => collectStatus(env.bpffs));
    const before = status();
    assert.equal(before.installed, true);
    // 15 at priority 3 take the tag; 5 at a class-id priority ("1:3") are clamped to 7.
    await send(15, 3);
    await send(5, 0x10003);
    const after = status();
    statusReportSchema.parse(after);
    const node = (r: StatusReport, k: string) => BigInt(r.node?.counters[k] ?? "0");
    assert.equal(node(after, "admitted") - node(before, "admitted"), 20n, JSON.stringify(after));
    assert.equal(node(after, "admitRequested") - node(before, "admitRequested"), 20n);
    assert.equal(node(after, "tagged") - node(before, "tagged"), 20n);
    assert.equal(node(after, "admitClamped") - node(before, "admitClamped"), 5n);
    assert.equal(after.node?.carrier, "tag");
    assert.match(after.node?.carrierReason ?? "", /nothing else on the pod's way/);
    assert.equal(after.node?.stageMaxAgeMs, 1000);
    assert.deepEqual(Object.keys(after.node?.programs ?? {}).sort(), [
      "tsnp_admit",
      "tsnp_restore",
      "tsnp_save",
    ]);
    for (const r of Object.values(after.node?.programs ?? {})) assert.equal(r, THIS_BUILD);
    assert.equal(after.node?.legacyPods, 0);

    const mine = after.pods?.find((p) => p.containerId === pod.containerId);
    assert.ok(mine, JSON.stringify(after.pods));
    assert.equal(mine.ifname, "eth0");
    assert.equal(mine.host, "hv2");
    assert.equal(mine.carrier, "tag");
    assert.match(mine.carrierReason, /nothing else on the pod's way/);
    assert.deepEqual(mine.policy, { maxPriority: 7 });
    // Deltas, as for the node's counters: a packet the pod sent while its interface came up
    // (before IPv6 was off) counts too.
    const mineBefore = before.pods?.find((p) => p.containerId === pod.containerId);
    assert.ok(mineBefore);
    assert.equal(BigInt(mine.admitted) - BigInt(mineBefore.admitted), 20n);
    assert.equal(BigInt(mine.clamped) - BigInt(mineBefore.clamped), 5n);
    assert.equal(mine.restored, "0", "to 10.250.0.1: delivered to the node, never on tsn0");
    assert.equal(mine.saver, THIS_BUILD);
    assert.equal(mine.admit, THIS_BUILD);

    const text = renderStatus(after, { color: false, width: 100 });
    assert.match(text, /admitted\s+\d+/);
    assert.match(text, /carrier: tag \(/);
    assert.match(
      text,
      new RegExp(
        `${
          pod.containerId.slice(0, 16)
        }\\s+eth0\\s+hv2\\s+tag\\s+${mine.admitted}\\s+${mine.clamped}\\s+0`,
      ),
    );

    // --watch: two samples, the second with per-second rates; JSON lines. The pod sends 10
    // more while the first sample is written, before the interval starts.
    const lines: string[] = [];
    const code = await runStatus(
      { ...env.opts(), json: true, watch: 0.3 },
      {
        samples: 2,
        write: (t) => {
          lines.push(t);
          if (lines.length === 1) {
            // write() is synchronous: the 10 are sent before the interval starts.
            runSync(["python3", "-c", SEND, "10", "1"], { netns: pod.netns });
          }
        },
      },
    );
    assert.equal(code, 0);
    assert.equal(lines.length, 2);
    const first = statusReportSchema.parse(JSON.parse(lines[0]));
    const second = statusReportSchema.parse(JSON.parse(lines[1]));
    assert.equal(first.rates, undefined);
    assert.ok(second.rates && second.rates.admitted > 0, JSON.stringify(second.rates));
    assert.equal(node(second, "admitted") - node(first, "admitted"), 10n);

    // The CLI, as an operator runs it.
    const out = await run([`${ROOT}/scripts/tsnproxy`, "status", "--json", ...env.cliArgs()]);
    const cli = statusReportSchema.parse(JSON.parse(out.stdout));
    assert.equal(cli.installed, true);
    assert.equal(cli.bpffs, env.bpffs);
    assert.equal(cli.pods?.find((p) => p.containerId === pod.containerId)?.admitted, "30");

    // The DEL takes the pod out of status.
    assert.equal((await env.cni("DEL", pod)).code, 0);
    assert.equal(status().pods?.length, 0);
  } finally {
    await env.destroy();
  }
});

Deno.test("status: not installed -> exit 1 with the reason", opts, async () => {
  const lines: string[] = [];
  const bpffs = `/sys/fs/bpf/tsnp-test-${randomId()}`;
  const code = await runStatus(
    {
      config: "/nonexistent/config.yaml",
      cniConfDir: "/nonexistent",
      cniBinDir: "/nonexistent",
      bpffs,
      json: false,
    },
    { write: (t) => lines.push(t) },
  );
  assert.equal(code, 1);
  assert.match(lines.join("\n"), /not installed: .*tsnproxy install/);
});
