/**
 * What every doctor check needs: the combined locations (flags beat the node config), the
 * parsed node config (or why it did not parse), the kernel version, and a place to collect
 * results. Checks are plain functions `(ctx) => void` that call ctx.pass/warn/fail.
 */
import { flagOverrides, type NodeConfig, parseNodeConfig } from "../config/node.ts";
import { asTsnproxyError, type TsnproxyError } from "../errors.ts";
import type { DoctorOptions } from "../options.ts";
import { withNetns } from "../util/netns.ts";
import { type KernelVersion, kernelVersion } from "./probe.ts";
import type { Check, CheckGroup, CheckStatus } from "./schema.ts";

type Json = NonNullable<Check["data"]>[string];

export interface DoctorRunOptions extends DoctorOptions {
  /**
   * Network namespace (path) holding the node's interfaces. Undefined: this process's. Tests
   * point it at a throwaway "node" namespace; the pin root and files are the same either way.
   */
  netns?: string;
  /** Upper bound for waiting on the GC timer to tick (default 5000 ms). */
  gcWaitCapMs?: number;
}

export class DoctorContext {
  readonly checks: Check[] = [];
  readonly kernel: KernelVersion = kernelVersion();
  config: NodeConfig;
  configError?: TsnproxyError;
  /** The YAML as written (for facts the schema's defaults hide, e.g. the map's length). */
  configText = "";

  constructor(readonly opts: DoctorRunOptions) {
    // Until loadConfig() runs (or when the file is broken): the defaults plus the flags.
    this.config = parseNodeConfig("", "flags", this.overrides());
  }

  /** The flags the user gave, which beat the node config (one rule for every command). */
  overrides() {
    return flagOverrides(this.opts);
  }

  get bpffs(): string {
    return this.config.bpffs;
  }
  get cniConfDir(): string {
    return this.config.cni.confDir;
  }
  get cniBinDir(): string {
    return this.config.cni.binDir;
  }
  get tsnInterface(): string | undefined {
    return this.config.tsnInterface;
  }

  /** Runs fn in the node's network namespace. fn must be synchronous. */
  inNode<T>(fn: () => T): T {
    return withNetns(this.opts.netns, fn);
  }

  add(
    status: CheckStatus,
    group: CheckGroup,
    name: string,
    title: string,
    found: string,
    fix?: string,
    data?: Record<string, Json>,
  ): void {
    const c: Check = { id: `${group}.${name}`, group, title, status, found };
    if (fix !== undefined) c.fix = fix;
    if (data !== undefined) c.data = data;
    this.checks.push(c);
  }

  /** Runs one check; an unexpected exception becomes a failed check (never a crash). */
  run(group: CheckGroup, name: string, title: string, fn: () => void): void {
    const before = this.checks.length;
    try {
      fn();
    } catch (e) {
      this.checks.splice(before);
      const err = asTsnproxyError(e);
      this.add("fail", group, name, title, `check failed: ${err.message}`, err.hint);
    }
  }

  async runAsync(
    group: CheckGroup,
    name: string,
    title: string,
    fn: () => Promise<void>,
  ): Promise<void> {
    const before = this.checks.length;
    try {
      await fn();
    } catch (e) {
      this.checks.splice(before);
      const err = asTsnproxyError(e);
      this.add("fail", group, name, title, `check failed: ${err.message}`, err.hint);
    }
  }

  has(id: string, status: CheckStatus): boolean {
    return this.checks.some((c) => c.id === id && c.status === status);
  }
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
