/** `tsnproxy status` on a real node: counters move when a pod sends, per pod and node-wide. */
import assert from "node:assert/strict";
import { NO_CLAMP } from "../../src/bpf/maps.ts";
import { attachPod } from "../../src/bpf/pod.ts";
import { podAttachmentName } from "../../src/bpf/pins.ts";
import { collectStatus, renderStatus, runStatus } from "../../src/doctor/status.ts";
import { type StatusReport, statusReportSchema } from "../../src/doctor/schema.ts";
import { randomId, run } from "../lib/run.ts";
import { DoctorEnv, ROOT } from "./_env.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

const SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, int(sys.argv[2]))
for i in range(int(sys.argv[1])):
    s.sendto(b"tsnproxy-status-%d" % i, ("10.250.0.1", 9))
`;

Deno.test("status: node and per-pod counters, --json schema, --watch rates", opts, async () => {
  const env = await DoctorEnv.create();
  try {
    const pod = await env.addPod("hv2");
    await env.ip("addr", "add", "10.250.0.1/24", "dev", "hv2");
    await env.ip("link", "set", "hv2", "up");
    await run(["ip", "-n", pod, "addr", "add", "10.250.0.9/24", "dev", "eth0"]);
    await run(["ip", "-n", pod, "link", "set", "eth0", "up"]);
    const containerId = `ctr${randomId()}`;
    attachPod({
      bpffs: env.bpffs,
      containerId,
      ifname: "eth0",
      netns: `/run/netns/${pod}`,
      api: "tcx",
      ips: ["10.250.0.9"],
      policy: { maxPriority: NO_CLAMP },
    });
    const before = collectStatus(env.bpffs);
    assert.equal(before.installed, true);
    // 15 in the tag, 5 with a class-id priority ("1:3"), which takes the fingerprint table.
    await run(["ip", "netns", "exec", pod, "python3", "-c", SEND, "15", "3"]);
    await run(["ip", "netns", "exec", pod, "python3", "-c", SEND, "5", String(0x10003)]);
    const after = collectStatus(env.bpffs);
    statusReportSchema.parse(after);
    const saved = (r: StatusReport) => BigInt(r.node?.counters.saved ?? "0");
    assert.ok(saved(after) >= saved(before) + 20n, JSON.stringify(after.node));
    const mine = after.pods?.find((p) => p.attachment === podAttachmentName(containerId, "eth0"));
    assert.ok(mine, JSON.stringify(after.pods));
    assert.equal(mine.saved, "20");
    assert.deepEqual(mine.addresses, ["10.250.0.9"]);
    const savedTable = (r: StatusReport) => BigInt(r.node?.counters.savedTable ?? "0");
    assert.equal(savedTable(after), savedTable(before) + 5n, JSON.stringify(after.node));
    // Nothing reaches tsn0, so the fingerprints wait in the table for the GC.
    assert.ok((after.node?.metaEntries ?? 0) >= 1);
    assert.equal(after.node?.metaMaxEntries, 16384);
    assert.equal(after.node?.gcIntervalMs, 200);

    const text = renderStatus(after, { color: false, width: 100 });
    assert.match(text, /saved\s+\d+/);
    assert.match(text, new RegExp(`${podAttachmentName(containerId, "eth0")}.*10\\.250\\.0\\.9`));

    // --watch: two samples, the second with per-second rates; JSON lines.
    const lines: string[] = [];
    const code = await runStatus(
      { ...env.opts(), json: true, watch: 0.3 },
      { samples: 2, write: (t) => lines.push(t) },
    );
    assert.equal(code, 0);
    assert.equal(lines.length, 2);
    const second = statusReportSchema.parse(JSON.parse(lines[1]));
    assert.ok(second.rates && second.rates.gcRuns > 0, JSON.stringify(second.rates));

    // The CLI, as an operator runs it.
    const out = await run([`${ROOT}/scripts/tsnproxy`, "status", "--json", ...env.cliArgs()]);
    const cli = statusReportSchema.parse(JSON.parse(out.stdout));
    assert.equal(cli.installed, true);
    assert.equal(cli.bpffs, env.bpffs);
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
