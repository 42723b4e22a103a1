/**
 * Throwaway network namespaces, veth pairs and bridges for the tests, the benchmarks and the
 * demo: random names by default (parallel runs never collide), deleted by whoever made them.
 * The fixtures above it (topology.ts, the CNI, doctor, install, fuzz and e2e fixtures) add
 * their own addresses, routes and programs.
 */
import {
  type Child,
  netnsPath,
  randomId,
  run,
  type RunOptions,
  type RunResult,
  spawn,
  type SpawnOptions,
} from "./run.ts";

/** A network namespace under /run/netns, made by `ip netns add`. */
export class Netns {
  private constructor(readonly name: string) {}

  /** /run/netns/<name> */
  get path(): string {
    return netnsPath(this.name);
  }

  /**
   * A new namespace named `name`, or `<prefix>-<random>` (default prefix "tsnp-test"); lo
   * up unless `lo: false`; `ipv6: false` turns IPv6 off for every interface it will have (no
   * autoconf or MLD chatter in packet counters).
   */
  static async create(
    opts: { name?: string; prefix?: string; lo?: boolean; ipv6?: boolean } = {},
  ): Promise<Netns> {
    const ns = new Netns(opts.name ?? `${opts.prefix ?? "tsnp-test"}-${randomId()}`);
    await run(["ip", "netns", "add", ns.name]);
    try {
      if (opts.lo !== false) await ns.ip("link", "set", "lo", "up");
      if (opts.ipv6 === false) {
        await ns.run([
          ...["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
          "net.ipv6.conf.all.disable_ipv6=1",
        ]);
      }
    } catch (e) {
      await ns.delete();
      throw e;
    }
    return ns;
  }

  /** `ip -n <name> ...`: its stdout; throws when it fails. */
  async ip(...args: string[]): Promise<string> {
    return (await run(["ip", "-n", this.name, ...args])).stdout;
  }

  /** `tc -n <name> ...`: its stdout; throws when it fails. */
  async tc(...args: string[]): Promise<string> {
    return (await run(["tc", "-n", this.name, ...args])).stdout;
  }

  /** Runs argv inside the namespace (see run()). */
  run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(argv, { ...opts, netns: this.name });
  }

  /** Starts a long-running child inside the namespace (see spawn()). */
  spawn(argv: string[], opts: SpawnOptions = {}): Child {
    return spawn(argv, { ...opts, netns: this.name });
  }

  /** A veth pair a <-> b inside it, `queues` tx and rx queues on both ends (see addVeth). */
  addVeth(a: string, b: string, opts: { queues?: number; up?: boolean } = {}): Promise<void> {
    const q = opts.queues === undefined ? {} : { txQueues: opts.queues, rxQueues: opts.queues };
    return addVeth({ name: a, netns: this, ...q }, { name: b, netns: this, ...q }, opts);
  }

  /** Deletes it (and so the interfaces in it); one already gone is fine. */
  delete(): Promise<void> {
    return deleteNetns(this.name);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.delete();
  }
}

/** `ip netns del <name>`; a namespace already gone is fine. */
export async function deleteNetns(name: string): Promise<void> {
  await run(["ip", "netns", "del", name], { allowFail: true });
}

/** The names of the namespaces under /run/netns (`ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const out = (await run(["ip", "netns", "list"], { allowFail: true })).stdout;
  return out.split("\n").map((l) => l.split(" ")[0]).filter(Boolean);
}

/** Runs fn with a new namespace (see Netns.create); always deletes it. */
export async function withTestNetns<T>(
  fn: (ns: Netns) => T | Promise<T>,
  opts: Parameters<typeof Netns.create>[0] = {},
): Promise<T> {
  await using ns = await Netns.create(opts);
  return await fn(ns);
}

/** One end of a veth pair: its name, namespace (none: the caller's) and creation options. */
export interface VethEnd {
  name: string;
  netns?: Netns | string;
  txQueues?: number;
  rxQueues?: number;
  /** A fixed ifindex. */
  index?: number;
  /** A fixed MAC address. */
  address?: string;
}

const nsName = (ns: Netns | string | undefined) => typeof ns === "string" ? ns : ns?.name;

function endArgs(e: VethEnd): string[] {
  const ns = nsName(e.netns);
  return [
    e.name,
    ...(e.index !== undefined ? ["index", String(e.index)] : []),
    ...(e.address !== undefined ? ["address", e.address] : []),
    ...(e.txQueues !== undefined ? ["numtxqueues", String(e.txQueues)] : []),
    ...(e.rxQueues !== undefined ? ["numrxqueues", String(e.rxQueues)] : []),
    ...(ns !== undefined ? ["netns", ns] : []),
  ];
}

const end = (e: VethEnd | string): VethEnd => typeof e === "string" ? { name: e } : e;

/** `ip [-n <ns>] link set <name> up`. */
export async function linkUp(name: string, netns?: Netns | string): Promise<void> {
  const ns = nsName(netns);
  await run(["ip", ...(ns ? ["-n", ns] : []), "link", "set", name, "up"]);
}

/**
 * A veth pair a <-> b, each end created in its own namespace (a plain name: the caller's);
 * both up unless `up: false`.
 */
export async function addVeth(
  a: VethEnd | string,
  b: VethEnd | string,
  opts: { up?: boolean } = {},
): Promise<void> {
  const [ea, eb] = [end(a), end(b)];
  await run(["ip", "link", "add", ...endArgs(ea), "type", "veth", "peer", "name", ...endArgs(eb)]);
  if (opts.up === false) return;
  await linkUp(ea.name, ea.netns);
  await linkUp(eb.name, eb.netns);
}

/** A bridge in `netns` (none: the caller's), up unless `up: false`. */
export async function addBridge(
  name: string,
  opts: { netns?: Netns | string; up?: boolean } = {},
): Promise<void> {
  const ns = nsName(opts.netns);
  await run(["ip", ...(ns ? ["-n", ns] : []), "link", "add", name, "type", "bridge"]);
  if (opts.up !== false) await linkUp(name, opts.netns);
}

/** Whether a network device `name` exists in `netns` (none: the caller's). */
export async function linkExists(name: string, netns?: Netns | string): Promise<boolean> {
  const ns = nsName(netns);
  const show = ["ip", ...(ns ? ["-n", ns] : []), "link", "show", "dev", name];
  return (await run(show, { allowFail: true })).code === 0;
}

/** `ip [-n <ns>] link del <name>`; one already gone is fine. */
export async function deleteLink(name: string, netns?: Netns | string): Promise<void> {
  const ns = nsName(netns);
  await run(["ip", ...(ns ? ["-n", ns] : []), "link", "del", name], { allowFail: true });
}
