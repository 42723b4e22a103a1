/**
 * A test node's datapath, set up the way `tsnproxy install` does its datapath and restorer
 * steps (the production planDatapath/applyDatapath/attachRestorer, from a node config
 * parsed by the production parser), in the caller's network namespace or a test node's.
 * Shared by the CNI, datapath, doctor and coexistence tests, the demo and the benchmarks.
 */
import { type NodeConfig, parseNodeConfig } from "../../src/config/node.ts";
import { applyDatapath, planDatapath } from "../../src/install/plan.ts";
import { attachRestorer, teardownNode } from "../../src/bpf/node.ts";
import type { TcApi } from "../../src/bpf/attach.ts";
import { withNetns } from "../../src/util/netns.ts";
import { randomId } from "./run.ts";

export interface TestNodeOptions {
  /** Pin root (default: a fresh /sys/fs/bpf/tsnp-test-<random>). */
  bpffs?: string;
  /** The node's network namespace path (default: the caller's). */
  netns?: string;
  /** The TSN interface to attach the restorer to (default: none). */
  tsnInterface?: string;
  api?: TcApi;
  /** More node config YAML (carrier, policy, gc...). */
  config?: string;
}

export interface TestNode {
  bpffs: string;
  netns?: string;
  cfg: NodeConfig;
}

function nodeConfig(bpffs: string, o: TestNodeOptions): NodeConfig {
  const yaml = [
    `bpffs: ${bpffs}`,
    o.tsnInterface ? `tsnInterface: ${o.tsnInterface}` : "",
    o.api ? `attachMode: ${o.api}` : "",
    o.config ?? "",
  ].join("\n");
  return parseNodeConfig(yaml, "test-node.yaml");
}

/** Loads the datapath, writes the node config and attaches the restorer. */
export function setUpNode(o: TestNodeOptions = {}): TestNode {
  const bpffs = o.bpffs ?? `/sys/fs/bpf/tsnp-test-${randomId(8)}`;
  const cfg = nodeConfig(bpffs, o);
  try {
    withNetns(o.netns, () => {
      applyDatapath(planDatapath(cfg, o.tsnInterface ? [o.tsnInterface] : []));
      if (o.tsnInterface) attachRestorer(bpffs, o.tsnInterface, o.api ?? "tcx");
    });
  } catch (e) {
    tearDownNode({ bpffs, netns: o.netns });
    throw e;
  }
  return { bpffs, netns: o.netns, cfg };
}

/**
 * Writes a changed node config (e.g. its policy) into a node set up by setUpNode, as
 * `tsnproxy install` run again does: the programs, the restorer and the pods' entries stay;
 * pods added from now on get the new node policy.
 */
export function reconfigureNode(o: TestNodeOptions & { bpffs: string }): NodeConfig {
  const cfg = nodeConfig(o.bpffs, o);
  withNetns(o.netns, () => {
    applyDatapath(planDatapath(cfg, o.tsnInterface ? [o.tsnInterface] : []));
  });
  return cfg;
}

export function tearDownNode(n: Pick<TestNode, "bpffs" | "netns">): void {
  teardownNode(n.bpffs, n.netns);
}
