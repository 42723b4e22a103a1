/**
 * Two TSN interfaces, set up by the real `tsnproxy install` (the CLI, in a test node's
 * namespace) from a node config listing both, a pod attached by the installed plugin as a
 * runtime execs it, and routing splitting the pod's destinations between the two NICs:
 *
 *   pod --veth--> node (br0, forwarding, MASQUERADE) --> tsn0 --veth--> far   (198.18.0.0/24)
 *                                                   \--> tsn1 --veth--> far2  (198.19.0.0/24,
 *                                                        203.0.113.2 routed via 198.19.0.2)
 *
 * The restorer runs on both; the pod's packets leave each NIC with their own priority and
 * launch time, also when the pod sends to both at once (the tag and the stage travel with
 * each packet, not with a NIC), in both attach modes and with both carriers. Then doctor
 * and status report each interface, the agent's metrics have one restorer series per
 * interface and it re-attaches the restorer on a re-created tsn1 alone, and uninstall
 * removes everything on both.
 */
import assert from "node:assert/strict";
import { queryTcx } from "../../src/bpf/attach.ts";
import { detachRestorer, restorerAttached, restorerInterfaces } from "../../src/bpf/node.ts";
import type { DoctorReport, StatusReport } from "../../src/doctor/schema.ts";
import { installPlanSchema } from "../../src/install/plan_schema.ts";
import { withNetns } from "../../src/util/netns.ts";
import { Observer } from "../lib/observer.ts";
import { randomId, run, spawn } from "../lib/run.ts";
import { addVeth } from "../lib/netns.ts";
import {
  createTopology,
  FAR2_ROUTED_V4,
  FAR2_V4,
  FAR2_V6,
  FAR_V4,
  type Pod,
  type Topology,
} from "../lib/topology.ts";
import { freePort, until } from "../lib/wait.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const SENDER = new URL("../lib/sender.py", import.meta.url).pathname;
const FIXTURE = new URL("../fixtures/cni/bridge/10-bridge.conflist", import.meta.url).pathname;
const UDP = 17;
const opts = { sanitizeOps: false, sanitizeResources: false };

interface Installed {
  topo: Topology;
  dir: string;
  bpffs: string;
  flags: string[];
}

/** `tsnproxy <args>` in the node's namespace, as the DaemonSet's containers run it. */
async function tsnproxy(n: Installed, ...args: string[]) {
  return await run([Deno.execPath(), "run", "-A", "--quiet", MAIN, ...args, ...n.flags], {
    netns: n.topo.nodePath,
    allowFail: true,
  });
}

async function ok(n: Installed, ...args: string[]): Promise<string> {
  const r = await tsnproxy(n, ...args);
  assert.equal(r.code, 0, `tsnproxy ${args.join(" ")}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

async function makeNode(config: string): Promise<Installed> {
  const topo = await createTopology({ pods: 1, secondTsn: true });
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-multinic-" });
  const bpffs = `/sys/fs/bpf/tsnp-test-${randomId(8)}`;
  await Deno.mkdir(`${dir}/net.d`);
  await Deno.mkdir(`${dir}/bin`);
  await Deno.copyFile(FIXTURE, `${dir}/net.d/10-bridge.conflist`);
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    [`bpffs: ${bpffs}`, "cni:", `  confDir: ${dir}/net.d`, `  binDir: ${dir}/bin`, config].join(
      "\n",
    ) + "\n",
  );
  return {
    topo,
    dir,
    bpffs,
    flags: ["--config", `${dir}/config.yaml`],
  };
}

async function destroy(n: Installed): Promise<void> {
  await tsnproxy(n, "uninstall", "--state-dir", `${n.dir}/state`);
  await n.topo.destroy();
  await Deno.remove(n.dir, { recursive: true }).catch(() => {});
  await Deno.remove(n.bpffs, { recursive: true }).catch(() => {});
}

/** CNI ADD through the installed plugin with the installed entry, as a runtime execs it. */
async function addPod(n: Installed, pod: Pod): Promise<void> {
  const v = JSON.parse(await Deno.readTextFile(`${n.dir}/net.d/10-bridge.conflist`));
  const entry = v.plugins.at(-1);
  assert.equal(entry.type, "tsnproxy", "install put the entry last");
  const stdin = {
    cniVersion: v.cniVersion,
    name: v.name,
    ...entry,
    prevResult: {
      cniVersion: v.cniVersion,
      interfaces: [{ name: "br0" }, { name: pod.hostVeth }, {
        name: pod.ifname,
        sandbox: pod.netnsPath,
      }],
      ips: [
        { address: `${pod.ipv4}/24`, gateway: "10.244.0.1", interface: 2 },
        { address: `${pod.ipv6}/64`, gateway: "fd00:244::1", interface: 2 },
      ],
    },
  };
  const r = await run([`${n.dir}/bin/tsnproxy`], {
    netns: n.topo.nodePath,
    env: {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: `ctr-${pod.name}`,
      CNI_NETNS: pod.netnsPath,
      CNI_IFNAME: pod.ifname,
      CNI_PATH: `${n.dir}/bin`,
    },
    clearEnv: true,
    cwd: "/",
    stdin: JSON.stringify(stdin),
    allowFail: true,
  });
  assert.equal(r.code, 0, `ADD: ${r.stdout} ${r.stderr}`);
}

async function send(
  pod: Pod,
  dst: string,
  prio: number,
  count: number,
  extra: string[] = [],
): Promise<void> {
  await run([
    ...["python3", SENDER, "--dst", dst, "--port", "8080"],
    ...["--count", String(count), "--prio", String(prio), ...extra],
  ], { netns: pod.netns });
}

/** A second veth tsn1 <-> far1 into far2, as createTopology makes it (after a delete). */
async function recreateTsn1(topo: Topology): Promise<void> {
  const inNode = (...a: string[]) => run(["ip", "-n", topo.node, ...a]);
  await addVeth({ name: "tsn1", netns: topo.node }, { name: "far1", netns: topo.far2! }, {
    up: false,
  });
  await inNode("addr", "add", "198.19.0.1/24", "dev", "tsn1");
  await inNode("link", "set", "tsn1", "up");
  await run(["ip", "-n", topo.far2!, "addr", "add", `${FAR2_V4}/24`, "dev", "far1"]);
  await run(["ip", "-n", topo.far2!, "link", "set", "far1", "up"]);
}

for (const api of ["tcx", "clsact"] as const) {
  for (const carrier of ["tag", "table"] as const) {
    Deno.test({
      name: `two TSN interfaces [${api}, ${carrier}]: install, per-packet restore on the NIC ` +
        "routing picks, doctor, status, uninstall",
      ...opts,
    }, async (t) => {
      const n = await makeNode(
        [
          `attachMode: ${api}`,
          `carrier: ${carrier}`,
          "tsnInterfaces:",
          "  - name: tsn0",
          "  - name: tsn1",
          "    qdisc: {kind: keep}",
        ].join("\n"),
      );
      const state = ["--state-dir", `${n.dir}/state`];
      const [pod] = n.topo.pods;
      const obs: Observer[] = [];
      try {
        await t.step("install: one qdisc and one restorer step per interface", async () => {
          const plan = installPlanSchema.parse(
            JSON.parse(await ok(n, "install", "--dry-run", "--json", ...state)),
          );
          assert.deepEqual(plan.target.tsnInterfaces, ["tsn0", "tsn1"]);
          assert.deepEqual(
            plan.interfaces.map((i) => [i.ifname, i.qdisc.ifname, i.restorer.action, i.vlan]),
            [["tsn0", "tsn0", "attach", null], ["tsn1", "tsn1", "attach", null]],
          );
          const text = await ok(n, "install", ...state);
          assert.match(text, /TSN interfaces tsn0, tsn1/);
          assert.match(text, /qdisc \(tsn0\):[\s\S]*qdisc \(tsn1\):/);
          assert.match(text, new RegExp(`attach tsnp_restore to tsn0 egress with ${api}`));
          assert.match(text, new RegExp(`attach tsnp_restore to tsn1 egress with ${api}`));
          withNetns(n.topo.nodePath, () => {
            assert.ok(restorerAttached(n.bpffs, "tsn0"), "restorer on tsn0");
            assert.ok(restorerAttached(n.bpffs, "tsn1"), "restorer on tsn1");
          });
          assert.deepEqual(restorerInterfaces(n.bpffs).sort(), ["tsn0", "tsn1"]);
          assert.match(await ok(n, "install", ...state), /nothing to change/);
        });

        // Observers after the restorers (tcx runs before clsact; on clsact they sit behind
        // the restorer's priority 1).
        obs.push(
          Observer.attach(n.topo.nodePath, "tsn0"),
          Observer.attach(n.topo.nodePath, "tsn1"),
        );
        // Resolve neighbours first, so no case loses its first packets to ARP/ND.
        for (const dst of [FAR_V4, FAR2_V4, FAR2_ROUTED_V4]) {
          await run(["python3", SENDER, "--dst", dst], { netns: n.topo.node });
        }
        await addPod(n, pod);

        await t.step("each destination's NIC restores the pod's priority", async () => {
          const cases = [
            { dst: FAR_V4, prio: 3, nic: 0 },
            { dst: FAR2_V4, prio: 5, nic: 1 },
            { dst: FAR2_ROUTED_V4, prio: 6, nic: 1 },
            { dst: FAR2_V6, prio: 2, nic: 1 },
          ];
          for (const c of cases) {
            for (const o of obs) o.filter(UDP, 8080);
            await send(pod, c.dst, c.prio, 200);
            const here = obs[c.nic].counts();
            const there = obs[1 - c.nic].counts();
            assert.equal(here.fwdTotal, 200, `${c.dst}: every packet leaves tsn${c.nic}`);
            assert.equal(here.fwdPrio[c.prio], 200, `${c.dst}: priorities ${here.fwdPrio}`);
            assert.equal(there.fwdTotal, 0, `${c.dst}: nothing leaves tsn${1 - c.nic}`);
          }
        });

        await t.step(
          "both NICs at once: the metadata travels with each packet, not with a NIC",
          async () => {
            for (const o of obs) o.filter(UDP, 8080);
            await Promise.all([
              send(pod, FAR_V4, 3, 2000, ["--txtime", "realtime"]),
              send(pod, FAR2_ROUTED_V4, 6, 2000, ["--txtime", "realtime"]),
            ]);
            const [a, b] = obs.map((o) => o.counts());
            assert.equal(a.fwdTotal, 2000);
            assert.equal(a.fwdPrio[3], 2000, `tsn0 priorities ${a.fwdPrio}`);
            assert.equal(a.tsOk, 2000, "tsn0: every launch time restored");
            assert.equal(b.fwdTotal, 2000);
            assert.equal(b.fwdPrio[6], 2000, `tsn1 priorities ${b.fwdPrio}`);
            assert.equal(b.tsOk, 2000, "tsn1: every launch time restored");
          },
        );

        await t.step(
          "tsn1's own restorer does it: without it tsn1's packets lose their priority, a " +
            "re-install attaches it there alone",
          async () => {
            withNetns(n.topo.nodePath, () => detachRestorer(n.bpffs, "tsn1", n.topo.nodePath));
            for (const o of obs) o.filter(UDP, 8080);
            await send(pod, FAR2_V4, 5, 200);
            await send(pod, FAR_V4, 3, 200);
            const [a, b] = obs.map((o) => o.counts());
            assert.equal(b.fwdTotal, 200);
            assert.equal(b.fwdPrio[5], 0, `tsn1 without its restorer: ${b.fwdPrio}`);
            assert.equal(a.fwdPrio[3], 200, "tsn0 still restores");
            const plan = installPlanSchema.parse(
              JSON.parse(await ok(n, "install", "--json", ...state)),
            );
            assert.deepEqual(plan.interfaces.map((i) => i.restorer.action), ["kept", "attach"]);
            for (const o of obs) o.filter(UDP, 8080);
            await send(pod, FAR2_V4, 5, 200);
            assert.equal(obs[1].counts().fwdPrio[5], 200, "tsn1 restores again");
          },
        );

        await t.step("doctor and status: every interface", async () => {
          const r = await tsnproxy(n, "doctor", "--json");
          const doc = JSON.parse(r.stdout) as DoctorReport;
          assert.deepEqual(doc.location.tsnInterfaces, ["tsn0", "tsn1"]);
          for (const id of ["config.tsn_interface", "interface.up", "interface.restorer"]) {
            const per = doc.checks.filter((c) => c.id === id);
            assert.deepEqual(
              per.map((c) => [c.data?.interface, c.title.endsWith(`(${c.data?.interface})`)]),
              [["tsn0", true], ["tsn1", true]],
              `${id}: one check per interface`,
            );
            assert.ok(per.every((c) => c.status === "pass"), JSON.stringify(per, null, 1));
          }
          const tai = doc.checks.filter((c) => c.id === "time.tai_offset");
          assert.equal(tai.length, 1, "the TAI offset is the node's: one check");
          assert.equal(doc.checks.filter((c) => c.id === "time.phc").length, 2);
          assert.equal(doc.checks.filter((c) => c.id === "interface.vlan_pcp").length, 2);
          const human = (await tsnproxy(n, "doctor")).stdout;
          assert.match(human, /TSN interfaces tsn0, tsn1/);
          assert.match(human, /interface\.restorer tsn1 /);

          const st = JSON.parse(await ok(n, "status", "--json")) as StatusReport;
          assert.deepEqual(
            st.interfaces?.map((i) => [i.name, i.configured, i.restorer?.api]),
            [["tsn0", true, api], ["tsn1", true, api]],
          );
          assert.match(await ok(n, "status"), /tsn1: ifindex \d+, restorer attached/);
        });

        await t.step("agent: a restorer series per interface; tsn1 re-created alone", async () => {
          const port = freePort();
          const agent = spawn([
            ...[Deno.execPath(), "run", "-A", "--quiet", MAIN, "agent", ...n.flags, ...state],
            ...["--metrics-address", `127.0.0.1:${port}`, "--reconcile-seconds", "60"],
          ], { netns: n.topo.nodePath, stdout: "null" });
          // The metrics listen in the node's namespace: scrape from there.
          const scrape = async () =>
            (await run([
              "python3",
              "-c",
              `import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:${port}/metrics").read().decode())`,
            ], { netns: n.topo.node, allowFail: true })).stdout;
          const series = (text: string, ifname: string) =>
            new RegExp(`^tsnproxy_restorer_attached\\{interface="${ifname}"\\} (\\d)$`, "m")
              .exec(text)?.[1];
          try {
            await until("both restorer series at 1", async () => {
              const m = await scrape();
              return series(m, "tsn0") === "1" && series(m, "tsn1") === "1";
            }, 30000);
            await run(["ip", "-n", n.topo.node, "link", "del", "tsn1"]);
            await until("tsn1's series at 0, tsn0's still 1", async () => {
              const m = await scrape();
              return series(m, "tsn1") === "0" && series(m, "tsn0") === "1";
            });
            await recreateTsn1(n.topo);
            await until("tsn1's restorer back", async () => {
              const m = await scrape();
              return series(m, "tsn1") === "1";
            });
            withNetns(n.topo.nodePath, () => {
              assert.ok(restorerAttached(n.bpffs, "tsn1"), "re-attached on the new tsn1");
            });
          } finally {
            const err = (await agent.stop("SIGTERM")).stderr;
            assert.match(err, /"msg":"restorer re-attached".*"ifname":"tsn1"/);
            assert.doesNotMatch(err, /"msg":"restorer re-attached".*"ifname":"tsn0"/);
          }
        });

        await t.step("tsn1 left out of the config: install detaches its restorer", async () => {
          const cfg = `${n.dir}/config.yaml`;
          const text = await Deno.readTextFile(cfg);
          await Deno.writeTextFile(
            cfg,
            text.replace("  - name: tsn1\n    qdisc: {kind: keep}\n", ""),
          );
          const plan = installPlanSchema.parse(
            JSON.parse(await ok(n, "install", "--json", ...state)),
          );
          assert.deepEqual(plan.target.tsnInterfaces, ["tsn0"]);
          assert.deepEqual(plan.staleRestorers, ["tsn1"]);
          withNetns(n.topo.nodePath, () => {
            assert.equal(restorerAttached(n.bpffs, "tsn1"), undefined, "tsn1's restorer gone");
            assert.ok(restorerAttached(n.bpffs, "tsn0"), "tsn0's stays");
          });
          assert.match(await ok(n, "install", ...state), /nothing to change/);
        });

        await t.step("uninstall removes the restorer from both", async () => {
          for (const o of obs.splice(0)) o.detach();
          await ok(n, "uninstall", ...state);
          withNetns(n.topo.nodePath, () => {
            for (const nic of ["tsn0", "tsn1"]) {
              assert.deepEqual(queryTcx(nic, "egress"), [], `${nic}: no tcx program`);
            }
          });
          for (const nic of ["tsn0", "tsn1"]) {
            const f = await run(["tc", "filter", "show", "dev", nic, "egress"], {
              netns: n.topo.node,
            });
            assert.equal(f.stdout, "", `${nic}: no clsact filter`);
            const q = await run(["tc", "qdisc", "show", "dev", nic], { netns: n.topo.node });
            // tcx: the observers made clsact, install did not, so it stays.
            if (api === "clsact") {
              assert.doesNotMatch(q.stdout, /clsact/, `${nic}: the clsact install added is gone`);
            }
          }
          assert.deepEqual(restorerInterfaces(n.bpffs), []);
          await assert.rejects(Deno.stat(`${n.dir}/state/install.json`), Deno.errors.NotFound);
        });
      } finally {
        for (const o of obs) o.detach();
        await destroy(n);
      }
    });
  }
}

Deno.test({
  name: "vlan on an interface that is no VLAN device: install refuses before any change, " +
    "doctor names it",
  ...opts,
}, async () => {
  const n = await makeNode(
    [
      "tsnInterfaces:",
      "  - name: tsn0",
      "    vlan:",
      '      egressQosMap: {"3": 3}',
      "  - name: tsn1",
    ].join("\n"),
  );
  try {
    const r = await tsnproxy(n, "install", "--state-dir", `${n.dir}/state`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /tsn0 is not a VLAN device \(kind veth\)/);
    assert.match(r.stderr, /name the VLAN device that carries the pods' traffic/);
    await assert.rejects(Deno.stat(n.bpffs), Deno.errors.NotFound, "nothing pinned");
    assert.equal(
      (await run(["tc", "qdisc", "show", "dev", "tsn0"], { netns: n.topo.node }))
        .stdout.includes("clsact"),
      false,
    );
    const doc = JSON.parse((await tsnproxy(n, "doctor", "--json")).stdout) as DoctorReport;
    const v = doc.checks.filter((c) => c.id === "interface.vlan_pcp");
    assert.deepEqual(v.map((c) => [c.data?.interface, c.status]), [
      ["tsn0", "fail"],
      ["tsn1", "pass"],
    ]);
    assert.match(v[0].found, /tsn0 is not a VLAN device \(kind veth\)/);
  } finally {
    await destroy(n);
  }
});
