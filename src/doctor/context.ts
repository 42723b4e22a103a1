/**
 * What every doctor check needs: the combined locations (flags beat the node config), the
 * parsed node config (or why it did not parse), the kernel version, and a place to collect
 * results.
 *
 * A check is named once by a CheckRef (`{id: "kernel.btf", title: "Kernel BTF"}`) and says
 * its verdict by intent with named fields:
 *
 *     ctx.run(BTF, (check) => {
 *       if (ok) return check.pass({ found: "..." });
 *       check.warn({ found: "...", fix: "..." });
 *     });
 *     ctx.skip({ ...GC, found: "not installed (pins.*)" });   // outside a run
 *
 * warn and fail must carry a fix (the exact command or config change). Inside `run` the
 * scope records one verdict; an exception becomes a failed check, never a crash.
 */
import { flagOverrides, type NodeConfig, parseNodeConfig } from "../config/node.ts";
import { asTsnproxyError, type TsnproxyError } from "../errors.ts";
import type { DoctorOptions } from "../options.ts";
import { withNetns } from "../util/netns.ts";
import { type KernelVersion, kernelVersion } from "./probe.ts";
import type { Check, CheckGroup, CheckStatus } from "./schema.ts";

/** Structured facts behind a check's `found` (ids, versions, counts). */
export type CheckData = NonNullable<Check["data"]>;

/** A stable check id: "<group>.<name>" (tests and alerts key on it; never rename one). */
export type CheckId = `${CheckGroup}.${string}`;

/** Names a check: its id and the one-line title the report shows. */
export interface CheckRef {
  id: CheckId;
  title: string;
}

/** What a check found, in one or more sentences, and the facts behind it. */
export interface Finding {
  found: string;
  /** The exact fix (a command or a config change). info may carry one; pass/skip need none. */
  fix?: string;
  data?: CheckData;
}

/** A warning or failure always says how to fix it. */
export interface Problem extends Finding {
  fix: string;
}

/** The verdicts of one check (the scope `ctx.run` hands to its function). */
export interface CheckScope {
  readonly ref: CheckRef;
  pass(f: Finding): void;
  /** Nothing to fix, but worth knowing. */
  info(f: Finding): void;
  warn(f: Problem): void;
  fail(f: Problem): void;
  /** Could not be checked; `found` names what it depends on. */
  skip(f: Finding): void;
}

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
  /** The configured TSN interfaces' names (empty: none configured). */
  get tsnInterfaces(): string[] {
    return this.config.tsnInterfaces.map((i) => i.name);
  }
  /** The first TSN interface (the only one in the single form). */
  get tsnInterface(): string | undefined {
    return this.config.tsnInterfaces[0]?.name;
  }

  /** The TSN interface the checks recorded now are about (see forInterface). */
  #iface: string | undefined;

  /**
   * Runs checks about one TSN interface: each is recorded once per interface under its own
   * id, with `data.interface` naming it and, with several interfaces, the name in the title.
   */
  forInterface<T>(ifname: string, fn: () => T): T {
    const outer = this.#iface;
    this.#iface = ifname;
    try {
      return fn();
    } finally {
      this.#iface = outer;
    }
  }

  async forInterfaceAsync<T>(ifname: string, fn: () => Promise<T>): Promise<T> {
    const outer = this.#iface;
    this.#iface = ifname;
    try {
      return await fn();
    } finally {
      this.#iface = outer;
    }
  }

  /** Runs fn in the node's network namespace. fn must be synchronous. */
  inNode<T>(fn: () => T): T {
    return withNetns(this.opts.netns, fn);
  }

  pass(c: CheckRef & Finding): void {
    this.record("pass", c);
  }
  info(c: CheckRef & Finding): void {
    this.record("info", c);
  }
  warn(c: CheckRef & Problem): void {
    this.record("warn", c);
  }
  fail(c: CheckRef & Problem): void {
    this.record("fail", c);
  }
  skip(c: CheckRef & Finding): void {
    this.record("skip", c);
  }

  private record(status: CheckStatus, c: CheckRef & Finding): void {
    const group = c.id.slice(0, c.id.indexOf(".")) as CheckGroup;
    const iface = this.#iface;
    const title = iface && this.tsnInterfaces.length > 1 ? `${c.title} (${iface})` : c.title;
    const out: Check = { id: c.id, group, title, status, found: c.found };
    if (c.fix !== undefined) out.fix = c.fix;
    const data = iface ? { interface: iface, ...c.data } : c.data;
    if (data !== undefined) out.data = data;
    this.checks.push(out);
  }

  /** The verdicts of one check, each recorded under ref. */
  scope(ref: CheckRef): CheckScope {
    return {
      ref,
      pass: (f) => this.pass({ ...ref, ...f }),
      info: (f) => this.info({ ...ref, ...f }),
      warn: (f) => this.warn({ ...ref, ...f }),
      fail: (f) => this.fail({ ...ref, ...f }),
      skip: (f) => this.skip({ ...ref, ...f }),
    };
  }

  /** Runs one check; an unexpected exception becomes a failed check (never a crash). */
  run(ref: CheckRef, fn: (check: CheckScope) => void): void {
    const before = this.checks.length;
    try {
      fn(this.scope(ref));
    } catch (e) {
      this.failed(ref, before, e);
    }
  }

  async runAsync(ref: CheckRef, fn: (check: CheckScope) => Promise<void>): Promise<void> {
    const before = this.checks.length;
    try {
      await fn(this.scope(ref));
    } catch (e) {
      this.failed(ref, before, e);
    }
  }

  private failed(ref: CheckRef, before: number, e: unknown): void {
    this.checks.splice(before);
    const err = asTsnproxyError(e);
    this.fail({ ...ref, found: `check failed: ${err.message}`, fix: err.hint });
  }

  has(id: string, status: CheckStatus): boolean {
    return this.checks.some((c) => c.id === id && c.status === status);
  }
}

export function plural(n: number, word: string): string {
  if (n === 1) return `1 ${word}`;
  // "entry" -> "entries", "priority" -> "priorities"; "key", "day" keep their y.
  const many = /[^aeiou]y$/.test(word) ? `${word.slice(0, -1)}ies` : `${word}s`;
  return `${n} ${many}`;
}
