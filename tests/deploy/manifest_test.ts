/**
 * deploy/: every Kubernetes object we ship (the plain manifest, the kustomize base and every
 * overlay as kubectl renders them, the talker example) is valid against the Kubernetes API
 * schemas, offline, two ways: kubernetes-models' validators (types, enums, required fields,
 * formats; generated from the Kubernetes OpenAPI spec) and kubernetes-models' TypeScript types
 * under `deno check`, which rejects unknown fields (a `hostPid` typo the API server would only
 * warn about). Then the DaemonSet has what a node agent needs and no more: per-container
 * mounts and securityContexts, no hostPID, Linux amd64/arm64 nodes, metrics on the node's IP.
 * The ConfigMap's config.yaml must load with the real node config loader, the talker must be
 * unprivileged, and the Containerfile builds both arches and verifies every download.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Pod } from "kubernetes-models/v1/Pod";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { parseNodeConfig } from "../../src/config/node.ts";
import { VERSION } from "../../src/version.ts";
import { installed, run } from "../lib/run.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const DEPLOY = `${ROOT}deploy/`;
const KUSTOMIZE = `${DEPLOY}kustomize/`;

type Obj = Record<string, unknown>;
const o = (v: unknown): Obj => v as Obj;
const a = (v: unknown): Obj[] => v as Obj[];

function parseDocs(text: string, what: string): Obj[] {
  const all = parseAllDocuments(text);
  for (const d of all) assert.equal(d.errors.length, 0, `${what}: ${d.errors[0]?.message}`);
  return all.map((d) => d.toJS() as Obj).filter((d) => d !== null);
}

async function docs(file: string): Promise<Obj[]> {
  return parseDocs(await Deno.readTextFile(`${DEPLOY}${file}`), file);
}

/** apiVersion/kind -> the kubernetes-models class and the module its type comes from. */
const MODELS: Record<string, { validate: (o: Obj) => void; module: string; type: string }> = {
  "v1/Namespace": {
    validate: (x) => new Namespace(x as never).validate(),
    module: "kubernetes-models/v1/Namespace",
    type: "INamespace",
  },
  "v1/ServiceAccount": {
    validate: (x) => new ServiceAccount(x as never).validate(),
    module: "kubernetes-models/v1/ServiceAccount",
    type: "IServiceAccount",
  },
  "v1/ConfigMap": {
    validate: (x) => new ConfigMap(x as never).validate(),
    module: "kubernetes-models/v1/ConfigMap",
    type: "IConfigMap",
  },
  "v1/Pod": {
    validate: (x) => new Pod(x as never).validate(),
    module: "kubernetes-models/v1/Pod",
    type: "IPod",
  },
  "apps/v1/DaemonSet": {
    validate: (x) => new DaemonSet(x as never).validate(),
    module: "kubernetes-models/apps/v1/DaemonSet",
    type: "IDaemonSet",
  },
};

function modelOf(obj: Obj, what: string) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const m = MODELS[key];
  assert.ok(m, `${what}: no schema for ${key} (add it to MODELS in tests/deploy/manifest_test.ts)`);
  return m;
}

/** Schema validation of every object: throws with the path of the first problem. */
function validateSchemas(objs: Obj[], what: string): void {
  for (const obj of objs) {
    const name = `${what}: ${obj.kind} ${o(obj.metadata).name}`;
    try {
      modelOf(obj, what).validate(structuredClone(obj));
    } catch (e) {
      assert.fail(`${name} does not match the Kubernetes schema: ${(e as Error).message}`);
    }
  }
}

/**
 * Unknown fields: each object as a literal of its kubernetes-models type, type-checked by
 * `deno check` (excess property checks reach every nested literal). Returns the checker's
 * output, empty when clean.
 */
async function strictCheck(sets: Array<[string, Obj[]]>): Promise<{ ok: boolean; out: string }> {
  const lines: string[] = [];
  const imports = new Map<string, string>();
  sets.forEach(([what, objs], i) => {
    lines.push(`// ${what}`);
    objs.forEach((obj, j) => {
      const m = modelOf(obj, what);
      imports.set(m.type, m.module);
      lines.push(`export const o${i}_${j}: ${m.type} = ${JSON.stringify(obj)};`);
    });
  });
  const head = [...imports].map(([t, mod]) => `import type { ${t} } from "${mod}";`);
  // Inside the checkout, outside deno.json's excludes (an excluded file is not checked), where
  // node_modules resolves kubernetes-models; removed afterwards.
  const file = `${ROOT}tests/deploy/_strict_${crypto.randomUUID().slice(0, 8)}.ts`;
  await Deno.writeTextFile(file, [...head, ...lines].join("\n") + "\n");
  try {
    const out = await run([
      Deno.execPath(),
      "check",
      "--quiet",
      "--config",
      `${ROOT}deno.json`,
      file,
    ], {
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      allowFail: true,
    });
    return { ok: out.code === 0, out: out.stdout + out.stderr };
  } finally {
    await Deno.remove(file);
  }
}

// --- kubectl kustomize (Debian's kubernetes-client; scripts/setup.sh installs it)

async function kubectlMissing(): Promise<string | false> {
  if (await installed("kubectl", ["version", "--client"])) return false;
  const why = "kubectl is not installed (apt-get install kubernetes-client; scripts/setup.sh does)";
  console.log(`ignored: kustomize renders: ${why}`);
  return why;
}
const NO_KUBECTL = await kubectlMissing();

async function kustomize(dir: string): Promise<Obj[]> {
  const out = await run(["kubectl", "kustomize", dir], { allowFail: true });
  assert.equal(out.code, 0, `kubectl kustomize ${dir}: ${out.stderr}`);
  return parseDocs(out.stdout, dir);
}

function overlays(): string[] {
  return [...Deno.readDirSync(`${KUSTOMIZE}overlays`)].filter((e) => e.isDirectory)
    .map((e) => e.name).sort();
}

// --- tests

Deno.test("deploy/tsnproxy.yaml is the kustomize base's manifest (a symlink, one file)", () => {
  assert.ok(Deno.lstatSync(`${DEPLOY}tsnproxy.yaml`).isSymlink);
  assert.equal(
    Deno.realPathSync(`${DEPLOY}tsnproxy.yaml`),
    Deno.realPathSync(`${KUSTOMIZE}base/tsnproxy.yaml`),
  );
  const header = Deno.readTextFileSync(`${DEPLOY}tsnproxy.yaml`).split("\napiVersion:")[0];
  // Every path the comments name exists.
  for (const m of header.matchAll(/\bdeploy\/[\w./-]+[\w/]/g)) {
    assert.ok(
      (() => {
        try {
          Deno.statSync(`${ROOT}${m[0]}`);
          return true;
        } catch {
          return false;
        }
      })(),
      `the header names ${m[0]}, which does not exist`,
    );
  }
});

Deno.test("deploy: the manifest and the talker match the Kubernetes schemas, no unknown fields", async () => {
  const sets: Array<[string, Obj[]]> = [
    ["deploy/tsnproxy.yaml", await docs("tsnproxy.yaml")],
    ["deploy/talker.yaml", await docs("talker.yaml")],
  ];
  for (const [what, objs] of sets) validateSchemas(objs, what);
  const r = await strictCheck(sets);
  assert.ok(r.ok, `unknown or mistyped fields:\n${r.out}`);
});

Deno.test("deploy: the schema checks catch a wrong type, a bad enum and an unknown field", async () => {
  const [, , , ds] = await docs("tsnproxy.yaml");
  const wrongType = structuredClone(ds);
  a(o(o(o(wrongType.spec).template).spec).containers)[0].ports = [{ containerPort: "9489" }];
  assert.throws(() => validateSchemas([wrongType], "mutant"), /containerPort must be integer/);
  const badEnum = structuredClone(ds);
  o(o(o(badEnum.spec).template).spec).dnsPolicy = "Sometimes";
  const typo = structuredClone(ds);
  o(o(o(typo.spec).template).spec).hostPid = true;
  const r = await strictCheck([["mutant enum", [badEnum]], ["mutant typo", [typo]]]);
  assert.equal(r.ok, false);
  assert.match(r.out, /hostPid/);
  assert.match(r.out, /Sometimes/);
});

Deno.test({
  name: "deploy: kubectl renders the base and every overlay offline; each is schema-valid",
  ignore: NO_KUBECTL !== false,
  fn: async () => {
    const plain = await docs("tsnproxy.yaml");
    const sets: Array<[string, Obj[]]> = [["base", await kustomize(`${KUSTOMIZE}base`)]];
    assert.ok(overlays().length > 0);
    for (const name of overlays()) {
      sets.push([`overlays/${name}`, await kustomize(`${KUSTOMIZE}overlays/${name}`)]);
    }
    for (const [what, objs] of sets) {
      validateSchemas(objs, what);
      const kinds = objs.map((d) => d.kind).sort();
      assert.deepEqual(kinds, ["ConfigMap", "DaemonSet", "Namespace", "ServiceAccount"], what);
    }
    // The base renders to the plain manifest's objects.
    const byKind = (objs: Obj[]) => Object.fromEntries(objs.map((x) => [String(x.kind), x]));
    assert.deepEqual(byKind(sets[0][1]), byKind(plain));
    const kind = sets.find(([w]) => w === "overlays/kind")![1];
    const ds = kind.find((x) => x.kind === "DaemonSet")!;
    const pod = o(o(o(ds.spec).template).spec);
    for (const c of [...a(pod.initContainers), ...a(pod.containers)]) {
      assert.equal(c.image, "tsnproxy:dev");
      assert.equal(c.imagePullPolicy, "IfNotPresent", "a kind-loaded, non-latest tag: no pull");
    }
    const r = await strictCheck(sets);
    assert.ok(r.ok, `unknown or mistyped fields:\n${r.out}`);
  },
});

Deno.test("deploy/tsnproxy.yaml: the DaemonSet's shape, mounts and privileges", async () => {
  const all = await docs("tsnproxy.yaml");
  const kinds = all.map((d) => d.kind);
  assert.deepEqual(kinds, ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]);
  assert.ok(!kinds.some((k) => /Role/.test(String(k))), "no RBAC");
  const sa = all[1];
  assert.equal(sa.automountServiceAccountToken, false);

  const cm = all[2];
  const cfg = parseNodeConfig(String(o(cm.data)["config.yaml"]), "configmap config.yaml");
  assert.deepEqual(cfg.tsnInterfaces.map((i) => i.name), ["tsn0"]);
  assert.equal(cfg.cni.confDir, "/host/etc/cni/net.d");
  assert.equal(cfg.cni.binDir, "/host/opt/cni/bin");
  assert.equal(cfg.bpffs, "/sys/fs/bpf/tsnproxy");
  assert.equal(cfg.cni.agentSocket, "/run/tsnproxy/cni.sock");
  assert.equal(cfg.metrics.address, "127.0.0.1:9489");
  assert.equal(cfg.metrics.podLabels, false, "no pod identity in metrics by default");
  assert.doesNotMatch(
    String(o(cm.data)["config.yaml"]),
    /intervalMs|mapEntries/,
    "no keys this release ignores",
  );

  const ds = all[3];
  const pod = o(o(o(ds.spec).template).spec);
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.hostPID, undefined, "no hostPID: pod namespaces are opened by /run/netns path");
  assert.equal(pod.automountServiceAccountToken, false);
  assert.deepEqual(pod.tolerations, [{ operator: "Exists" }]);
  assert.deepEqual(pod.nodeSelector, { "kubernetes.io/os": "linux" });
  const terms = o(o(o(pod.affinity).nodeAffinity).requiredDuringSchedulingIgnoredDuringExecution)
    .nodeSelectorTerms as Obj[];
  assert.deepEqual(terms, [{
    matchExpressions: [{ key: "kubernetes.io/arch", operator: "In", values: ["amd64", "arm64"] }],
  }]);

  const volumes = new Map(a(pod.volumes).map((v) => [v.name as string, v]));
  const hostPath = (name: string) => o(volumes.get(name)?.hostPath).path;
  assert.equal(hostPath("cni-bin"), "/opt/cni/bin");
  assert.equal(hostPath("cni-conf"), "/etc/cni/net.d");
  assert.equal(hostPath("bpffs"), "/sys/fs/bpf");
  assert.equal(hostPath("state"), "/var/lib/tsnproxy");
  assert.equal(hostPath("agent-run"), "/run/tsnproxy");
  // Created by the kubelet as root, mode 0755: a directory plugins trust for the socket.
  assert.equal(o(volumes.get("agent-run")?.hostPath).type, "DirectoryOrCreate");
  assert.equal(hostPath("netns"), "/run/netns");
  assert.equal(volumes.has("cni-results"), false, "libcni's cache only with metrics.podLabels");
  assert.equal(o(o(volumes.get("config")).configMap).name, "tsnproxy-config");

  const [init] = a(pod.initContainers);
  const [agent] = a(pod.containers);
  assert.equal(a(pod.initContainers).length, 1);
  assert.equal(a(pod.containers).length, 1);
  assert.deepEqual((init.command as string[]).slice(0, 2), ["/usr/local/bin/tsnproxy", "install"]);
  assert.deepEqual((agent.command as string[]).slice(0, 2), ["/usr/local/bin/tsnproxy", "agent"]);
  for (const c of [init, agent]) {
    // The release's one version (src/version.ts) names the image both containers run.
    assert.equal(c.image, `ghcr.io/tsnproxy/tsnproxy:${VERSION}`, `${c.name}: image tag`);
    const sc = o(c.securityContext);
    assert.equal(sc.privileged, false, `${c.name}: not privileged`);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(o(sc.seccompProfile).type, "RuntimeDefault");
    const caps = o(sc.capabilities);
    assert.deepEqual(caps.drop, ["ALL"]);
    assert.deepEqual(
      [...(caps.add as string[])].sort(),
      ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"],
    );
    assert.ok(o(o(c.resources).requests).cpu, `${c.name}: resource requests`);
  }
  assert.notEqual(init.securityContext, agent.securityContext, "each its own securityContext");
  // The agent repairs with install's plan: the same capabilities as install (above), and
  // (below) the same writable mounts, the CNI bin dir aside.

  const mounts = (c: Obj) =>
    Object.fromEntries(
      a(c.volumeMounts).map((m) => [
        m.name as string,
        `${m.mountPath}${m.readOnly ? " ro" : ""}${
          m.mountPropagation ? ` ${m.mountPropagation}` : ""
        }`,
      ]),
    );
  // Bidirectional is only allowed for privileged containers; pins live in the host's bpffs.
  assert.deepEqual(mounts(init), {
    config: "/etc/tsnproxy ro",
    "cni-bin": "/host/opt/cni/bin",
    "cni-conf": "/host/etc/cni/net.d",
    bpffs: "/sys/fs/bpf HostToContainer",
    state: "/var/lib/tsnproxy",
    tmp: "/tmp",
  });
  assert.deepEqual(mounts(agent), {
    config: "/etc/tsnproxy ro",
    "cni-bin": "/host/opt/cni/bin ro",
    "cni-conf": "/host/etc/cni/net.d",
    bpffs: "/sys/fs/bpf HostToContainer",
    state: "/var/lib/tsnproxy",
    tmp: "/tmp",
    "agent-run": "/run/tsnproxy",
    // Pod namespaces containerd/CRI-O bind-mount after the agent started.
    netns: "/run/netns ro HostToContainer",
  });

  // Metrics on the node's own IP (not 0.0.0.0), from the downward API.
  const cmd = agent.command as string[];
  assert.equal(cmd[cmd.indexOf("--metrics-address") + 1], "$(NODE_IP):9489");
  const nodeIp = a(agent.env).find((e) => e.name === "NODE_IP");
  assert.deepEqual(o(nodeIp?.valueFrom).fieldRef, { fieldPath: "status.podIP" });
  // Liveness is the process; readiness the node's conditions (src/agent/readiness.ts).
  assert.deepEqual(o(agent.livenessProbe).httpGet, { path: "/livez", port: 9489 });
  assert.deepEqual(o(agent.readinessProbe).httpGet, { path: "/readyz", port: 9489 });
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

Deno.test("deploy/Containerfile: BPF once, both arches cross-compiled, every download verified", async () => {
  const text = await Deno.readTextFile(`${DEPLOY}Containerfile`);
  const from = [...text.matchAll(/^FROM (.+)$/gm)].map((m) => m[1]);
  assert.equal(from.length, 4);
  // Toolchain, BPF objects and deno compile on the build machine; only the runtime per target.
  assert.match(from[0], /^--platform=\$BUILDPLATFORM \$\{DEBIAN\} AS toolchain$/);
  assert.deepEqual(from.slice(1), ["toolchain AS bpf", "bpf AS build", "${DEBIAN}"]);
  assert.equal(text.match(/scripts\/build_bpf\.ts/g)?.length, 1, "BPF objects compiled once");
  // The arches the manifests select, and nothing else.
  const arches = [...text.matchAll(/^\s+(\w+)\) triple=/gm)].map((m) => m[1]);
  assert.deepEqual(arches, ["amd64", "arm64"]);
  assert.match(text, /DENORT_BIN=\/opt\/denort\/denort TSNPROXY_TARGET=\$triple/);
  // npm packages through the lockfiles' integrity hashes, never a copied node_modules.
  assert.doesNotMatch(text, /COPY[^\n]*node_modules/);
  assert.match(text, /npm ci --omit=dev/);
  assert.match(text, /cd tools\/deno && npm ci/);
  // Every download (curl/wget) is checked against a pinned SHA-256 before use.
  const runs = text.split(/\n(?=RUN |FROM |COPY |ARG |ENV |USER |ENTRYPOINT |CMD )/);
  assert.ok(runs.some((r) => /\bcurl -/.test(r)), "the denort download is found");
  for (const r of runs.filter((r) => /\b(curl|wget) -/.test(r))) {
    assert.match(r, /sha256sum -c \/tmp\/pin/, `unverified download:\n${r}`);
    assert.match(r, /deploy\/denort\.sha256|\/tmp\/denort\.sha256/);
  }
  assert.doesNotMatch(text, /\b(deno-x86_64|install\.sh|\| *sh)\b/, "no unpinned installers");
  assert.match(text, /libbpf1 libmnl0/);
  assert.match(text, /RUN \/usr\/local\/bin\/tsnproxy version/);
  // The pin file: comments, or `<sha256>  denort-<triple>.zip`.
  const pins = Deno.readTextFileSync(`${DEPLOY}denort.sha256`).split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"));
  for (const l of pins) {
    assert.match(l, /^[0-9a-f]{64} {2}denort-(x86_64|aarch64)-unknown-linux-gnu\.zip$/);
  }
  if (pins.length < 2) {
    console.log(
      "note: deploy/denort.sha256 pins no denort digests yet: the image build stops at them",
    );
  }
  // Both platforms' deno packages are in the toolchain lockfile (npm ci on either builder).
  const lock = JSON.parse(Deno.readTextFileSync(`${ROOT}tools/deno/package-lock.json`));
  for (const p of ["@deno/linux-x64-glibc", "@deno/linux-arm64-glibc"]) {
    assert.match(String(lock.packages[`node_modules/${p}`]?.integrity), /^sha512-/, p);
  }
});
