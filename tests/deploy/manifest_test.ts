/**
 * deploy/: the manifests parse, and the DaemonSet has what a node agent needs and no more:
 * hostPath mounts, hostNetwork, capabilities instead of privileged, tolerations for every
 * node, an init container running `install`, probes on the metrics port, no API access. The
 * ConfigMap's config.yaml must load with the real node config loader, and the talker must be
 * unprivileged. kubectl (if installed) renders the kustomize overlay offline.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { parseNodeConfig } from "../../src/config/node.ts";

const DEPLOY = new URL("../../deploy/", import.meta.url).pathname;

type Obj = Record<string, unknown>;
const o = (v: unknown): Obj => v as Obj;
const a = (v: unknown): Obj[] => v as Obj[];

async function docs(file: string): Promise<Obj[]> {
  const text = await Deno.readTextFile(`${DEPLOY}${file}`);
  const all = parseAllDocuments(text);
  for (const d of all) assert.equal(d.errors.length, 0, `${file}: ${d.errors[0]?.message}`);
  return all.map((d) => d.toJS() as Obj).filter((d) => d !== null);
}

Deno.test("deploy/tsnproxy.yaml: DaemonSet shape", async () => {
  const all = await docs("tsnproxy.yaml");
  const kinds = all.map((d) => d.kind);
  assert.deepEqual(kinds, ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]);
  assert.ok(!kinds.some((k) => /Role/.test(String(k))), "no RBAC");
  const sa = all[1];
  assert.equal(sa.automountServiceAccountToken, false);

  const cm = all[2];
  const cfg = parseNodeConfig(String(o(cm.data)["config.yaml"]), "configmap config.yaml");
  assert.equal(cfg.tsnInterface, "tsn0");
  assert.equal(cfg.cni.confDir, "/host/etc/cni/net.d");
  assert.equal(cfg.cni.binDir, "/host/opt/cni/bin");
  assert.equal(cfg.bpffs, "/sys/fs/bpf/tsnproxy");
  assert.equal(cfg.cni.agentSocket, "/run/tsnproxy/cni.sock");

  const ds = all[3];
  const pod = o(o(o(ds.spec).template).spec);
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.hostPID, true, "the agent opens /proc/<pid>/ns/net namespaces");
  assert.equal(pod.automountServiceAccountToken, false);
  assert.deepEqual(pod.tolerations, [{ operator: "Exists" }]);

  const volumes = new Map(a(pod.volumes).map((v) => [v.name as string, v]));
  const hostPath = (name: string) => o(volumes.get(name)?.hostPath).path;
  assert.equal(hostPath("cni-bin"), "/opt/cni/bin");
  assert.equal(hostPath("cni-conf"), "/etc/cni/net.d");
  assert.equal(hostPath("bpffs"), "/sys/fs/bpf");
  assert.equal(hostPath("state"), "/var/lib/tsnproxy");
  assert.equal(hostPath("agent-run"), "/run/tsnproxy");
  assert.equal(hostPath("netns"), "/run/netns");
  assert.equal(o(o(volumes.get("config")).configMap).name, "tsnproxy-config");

  const init = a(pod.initContainers);
  const containers = a(pod.containers);
  assert.equal(init.length, 1);
  assert.equal(containers.length, 1);
  assert.deepEqual((init[0].command as string[]).slice(0, 2), [
    "/usr/local/bin/tsnproxy",
    "install",
  ]);
  assert.deepEqual((containers[0].command as string[]).slice(0, 2), [
    "/usr/local/bin/tsnproxy",
    "agent",
  ]);
  for (const c of [...init, ...containers]) {
    const sc = o(c.securityContext);
    assert.equal(sc.privileged, false, `${c.name}: not privileged`);
    assert.equal(sc.allowPrivilegeEscalation, false);
    const caps = o(sc.capabilities);
    assert.deepEqual(caps.drop, ["ALL"]);
    assert.deepEqual(
      [...(caps.add as string[])].sort(),
      ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"],
    );
    const mounts = new Map(a(c.volumeMounts).map((m) => [m.name as string, m]));
    assert.equal(mounts.get("bpffs")?.mountPath, "/sys/fs/bpf");
    // Bidirectional is only allowed for privileged containers; pins live in the host's bpffs.
    assert.equal(mounts.get("bpffs")?.mountPropagation, "HostToContainer");
    assert.equal(mounts.get("cni-bin")?.mountPath, "/host/opt/cni/bin");
    assert.equal(mounts.get("cni-conf")?.mountPath, "/host/etc/cni/net.d");
    assert.equal(mounts.get("config")?.readOnly, true);
    // The agent's socket directory, and pod namespaces bind-mounted after the agent started.
    assert.equal(mounts.get("agent-run")?.mountPath, "/run/tsnproxy");
    assert.equal(mounts.get("netns")?.mountPath, "/run/netns");
    assert.equal(mounts.get("netns")?.mountPropagation, "HostToContainer");
    assert.ok(o(o(c.resources).requests).cpu, `${c.name}: resource requests`);
  }
  const agent = containers[0];
  assert.equal(o(o(agent.livenessProbe).httpGet).port, 9489);
  assert.equal(o(o(agent.livenessProbe).httpGet).path, "/healthz");
  assert.deepEqual(a(agent.ports)[0].containerPort, 9489);
});

Deno.test("deploy/talker.yaml: unprivileged, SO_PRIORITY, no bpffs", async () => {
  const [pod] = await docs("talker.yaml");
  assert.equal(pod.kind, "Pod");
  const spec = o(pod.spec);
  assert.equal(spec.hostNetwork, undefined);
  assert.equal(spec.volumes, undefined, "no bpffs (or any) volume");
  const c = a(spec.containers)[0];
  const sc = o(c.securityContext);
  assert.notEqual(sc.privileged, true);
  assert.deepEqual(o(sc.capabilities).drop, ["ALL"]);
  assert.equal(o(sc.capabilities).add, undefined);
  assert.match(String((c.args as string[])[0]), /SO_PRIORITY/);
});

Deno.test("deploy/kind-cluster.yaml mounts bpffs into every node", async () => {
  const [cluster] = await docs("kind-cluster.yaml");
  const nodes = a(cluster.nodes);
  assert.ok(nodes.length >= 1);
  for (const n of nodes) {
    assert.ok(a(n.extraMounts).some((m) => m.containerPath === "/sys/fs/bpf"));
  }
});

Deno.test("deploy/Containerfile: multi-stage, clang, DENORT_BIN, minimal runtime", async () => {
  const text = await Deno.readTextFile(`${DEPLOY}Containerfile`);
  assert.equal(text.match(/^FROM /gm)?.length, 3);
  assert.match(text, /clang/);
  assert.match(text, /DENORT_BIN=/);
  assert.match(text, /libbpf1 libmnl0/);
  assert.match(text, /scripts\/build_bpf\.ts/);
});

Deno.test("deploy: kubectl renders the kustomize overlay offline", async () => {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("kubectl", {
      args: ["kustomize", `${DEPLOY}kustomize/overlays/kind`],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    return; // kubectl not installed: the yaml checks above still ran
  }
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const text = new TextDecoder().decode(out.stdout);
  const kinds = parseAllDocuments(text).map((d) => (d.toJS() as Obj).kind);
  assert.deepEqual(kinds.sort(), ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"]);
  assert.match(text, /image: tsnproxy:dev/);
});
