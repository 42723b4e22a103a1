/** Test helpers for tests/netlink: throwaway network namespaces built with iproute2 (tests only). */

/** Runs a command; throws with its stderr when it fails. Returns stdout. */
export function run(...cmd: string[]): string {
  const out = new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .outputSync();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd.join(" ")} failed (${out.code}): ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout);
}

export function uniqueName(prefix = "tn-nl"): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

export interface TestNetns {
  name: string;
  path: string;
  /** `ip -n <ns> ...` */
  ip(...args: string[]): string;
  /** `tc -n <ns> ...` */
  tc(...args: string[]): string;
}

/** Disables IPv6 on new interfaces of the netns (before any test link exists). */
export function quiet(netns: string): void {
  run(
    "ip",
    "netns",
    "exec",
    netns,
    "bash",
    "-c",
    "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; " +
      "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
  );
}

/** Creates a netns (lo up, IPv6 off), runs fn, always deletes the netns. */
export async function withTestNetns<T>(fn: (ns: TestNetns) => T | Promise<T>): Promise<T> {
  const name = uniqueName();
  run("ip", "netns", "add", name);
  const ns: TestNetns = {
    name,
    path: `/var/run/netns/${name}`,
    ip: (...args) => run("ip", "-n", name, ...args),
    tc: (...args) => run("tc", "-n", name, ...args),
  };
  try {
    ns.ip("link", "set", "lo", "up");
    // No IPv6 autoconf/MLD chatter: packet counters then only see what a test sends.
    quiet(name);
    return await fn(ns);
  } finally {
    run("ip", "netns", "del", name);
  }
}

/** A veth pair a <-> b in ns, both up, numtxqueues/numrxqueues `queues` on both ends. */
export function addVeth(ns: TestNetns, a: string, b: string, queues = 1): void {
  const q = ["numtxqueues", String(queues), "numrxqueues", String(queues)];
  ns.ip("link", "add", a, ...q, "type", "veth", "peer", "name", b, ...q);
  ns.ip("link", "set", a, "up");
  ns.ip("link", "set", b, "up");
}
