/**
 * Helpers for the install/uninstall/agent tests: a throwaway "node" (temp CNI conf/bin dirs,
 * state dir, private pin root under /sys/fs/bpf, a TSN veth in the host namespace with a
 * unique name) and a snapshot of everything install may touch, to prove uninstall leaves the
 * machine exactly as before.
 */
import assert from "node:assert/strict";
import { queryTcx } from "../../src/bpf/attach.ts";
import { type Child, randomId, run, spawn } from "../lib/run.ts";
import { addVeth, deleteLink } from "../lib/netns.ts";

export const MAIN = new URL("../../main.ts", import.meta.url).pathname;
export const DENO = Deno.execPath();
export const FIXTURES = new URL("../fixtures/cni/", import.meta.url).pathname;

export interface TestNode {
  dir: string;
  confDir: string;
  binDir: string;
  stateDir: string;
  bpffs: string;
  tsn: string;
  peer: string;
  configPath: string;
  /** Flags every command gets. */
  flags: string[];
}

export async function createNode(opts: { fixture?: string; config?: string } = {}): Promise<
  TestNode
> {
  const id = randomId(6);
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-install-" });
  const node: TestNode = {
    dir,
    confDir: `${dir}/net.d`,
    binDir: `${dir}/bin`,
    stateDir: `${dir}/state`,
    bpffs: `/sys/fs/bpf/tsnp-test-${id}`,
    tsn: `tsnt${id}`,
    peer: `tsnp${id}`,
    configPath: `${dir}/config.yaml`,
    flags: [],
  };
  node.flags = [
    "--config",
    node.configPath,
    "--tsn-interface",
    node.tsn,
    "--cni-conf-dir",
    node.confDir,
    "--cni-bin-dir",
    node.binDir,
    "--bpffs",
    node.bpffs,
    "--state-dir",
    node.stateDir,
  ];
  await Deno.mkdir(node.confDir);
  await Deno.mkdir(node.binDir);
  const fixture = opts.fixture ?? "bridge";
  for await (const e of Deno.readDir(`${FIXTURES}${fixture}`)) {
    await Deno.copyFile(`${FIXTURES}${fixture}/${e.name}`, `${node.confDir}/${e.name}`);
  }
  await Deno.writeTextFile(node.configPath, opts.config ?? "qdisc:\n  kind: keep\n");
  await addTsn(node);
  return node;
}

/** The node's TSN veth (tsn <-> peer, both up) in the caller's namespace; `txQueues` on tsn. */
export async function addTsn(node: TestNode, txQueues?: number): Promise<void> {
  await addVeth({ name: node.tsn, txQueues }, node.peer);
}

export async function destroyNode(node: TestNode): Promise<void> {
  await deleteLink(node.tsn);
  await run([DENO, "run", "-A", "--quiet", MAIN, "uninstall", ...node.flags], { allowFail: true });
  try {
    await Deno.remove(node.bpffs, { recursive: true });
  } catch { /* gone */ }
  await Deno.remove(node.dir, { recursive: true });
}

export async function tsnproxy(
  node: TestNode,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  return await run([DENO, "run", "-A", "--quiet", MAIN, ...args, ...node.flags], {
    allowFail: true,
  });
}

/** `tsnproxy` against the node, which must succeed; its stdout. */
export async function ok(node: TestNode, ...args: string[]): Promise<string> {
  const r = await tsnproxy(node, ...args);
  assert.equal(r.code, 0, `tsnproxy ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * `tsnproxy agent` against the node as a long-running child (the caller stops it), metrics on
 * 127.0.0.1:port; `extra` flags go after the node's own.
 */
export function spawnAgent(
  node: TestNode,
  o: { port: number; reconcileSeconds: number; extra?: string[]; stdout?: "piped" | "null" },
): Child {
  return spawn(
    [
      DENO,
      "run",
      "-A",
      "--quiet",
      MAIN,
      "agent",
      ...node.flags,
      ...(o.extra ?? []),
      "--metrics-address",
      `127.0.0.1:${o.port}`,
      "--reconcile-seconds",
      String(o.reconcileSeconds),
    ],
    { stdout: o.stdout ?? "piped" },
  );
}

async function files(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  try {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      const st = await Deno.lstat(p);
      out[e.name] = st.isFile
        ? `${(st.mode ?? 0) & 0o7777}:${await Deno.readTextFile(p)}`
        : st.isDirectory
        ? "dir"
        : "other";
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

function pins(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    try {
      for (const e of Deno.readDirSync(d)) {
        out.push(`${d}/${e.name}`);
        if (e.isDirectory) walk(`${d}/${e.name}`);
      }
    } catch { /* absent */ }
  };
  walk(root);
  return out.sort();
}

/** Everything install may change, as comparable text. */
export async function snapshot(node: TestNode): Promise<Record<string, unknown>> {
  const tc = async (...a: string[]) =>
    (await run(["tc", ...a], { allowFail: true })).stdout
      .replace(/ id \d+/g, "").replace(/:\[\d+\]/g, "").replace(/direct_packets_stat \d+/g, "")
      .trim();
  return {
    conf: await files(node.confDir),
    bin: await files(node.binDir),
    state: await files(node.stateDir),
    pins: pins(node.bpffs),
    qdiscs: await tc("qdisc", "show", "dev", node.tsn),
    egress: await tc("filter", "show", "dev", node.tsn, "egress"),
    ingress: await tc("filter", "show", "dev", node.tsn, "ingress"),
    tcx: ["ingress", "egress"].map((d) =>
      queryTcx(node.tsn, d as "ingress" | "egress").map((p) => p.name).join(",")
    ),
  };
}
