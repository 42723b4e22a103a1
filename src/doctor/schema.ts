/**
 * The machine-readable shapes of `tsnproxy doctor --json` and `tsnproxy status --json`.
 * They are a contract with monitoring and CI: add fields, never rename or remove them without
 * bumping the `version` field (DOCTOR_SCHEMA_VERSION / STATUS_SCHEMA_VERSION).
 */
import { z } from "zod";

/** 2: exitCode is 3 for warnings and 1 for failures (was 1 and 2). */
export const DOCTOR_SCHEMA_VERSION = 2;
export const STATUS_SCHEMA_VERSION = 2;

/**
 * pass: fine. info: nothing to fix, but worth knowing (e.g. unprivileged BPF state).
 * warn: works, with a caveat or a risk. fail: tsnproxy does not (fully) work on this node.
 * skip: could not be checked because something it depends on failed (named in `found`).
 */
export const CHECK_STATUSES = ["pass", "info", "warn", "fail", "skip"] as const;
export type CheckStatus = typeof CHECK_STATUSES[number];

export const CHECK_GROUPS = [
  "kernel",
  "libraries",
  "config",
  "cni",
  "pins",
  "interface",
  "qdisc",
  "time",
  "sysctl",
  "xdp",
  "pods",
] as const;
export type CheckGroup = typeof CHECK_GROUPS[number];

const versionInfoSchema = z.object({
  version: z.string(),
  bpfObjectsSha256: z.string(),
  deno: z.string(),
  compiled: z.boolean(),
});

export const checkSchema = z.object({
  /** Stable identifier, e.g. "kernel.bpffs" (group.name); tests and alerts key on it. */
  id: z.string().regex(/^[a-z]+\.[a-z0-9_]+$/),
  group: z.enum(CHECK_GROUPS),
  title: z.string(),
  status: z.enum(CHECK_STATUSES),
  /** What was found, one or more sentences. */
  found: z.string(),
  /** The exact fix (a command or a config change); present for warn and fail. */
  fix: z.string().optional(),
  /** Structured facts behind `found` (ids, versions, counts), check-specific. */
  data: z.record(z.string(), z.json()).optional(),
});
export type Check = z.infer<typeof checkSchema>;

export const doctorReportSchema = z.object({
  version: z.literal(DOCTOR_SCHEMA_VERSION),
  generatedAt: z.iso.datetime(),
  tool: versionInfoSchema,
  host: z.object({ hostname: z.string(), kernel: z.string() }),
  /** The locations checked, after flags and the node config were combined. */
  location: z.object({
    config: z.string(),
    /** The first TSN interface (null: none configured). */
    tsnInterface: z.string().nullable(),
    /**
     * Every TSN interface. Checks about one of them (interface.*, qdisc.*, time.* but
     * time.tai_offset) are recorded once per interface, under the same id, with
     * `data.interface` naming it (and, with several interfaces, the name in the title).
     */
    tsnInterfaces: z.array(z.string()),
    cniConfDir: z.string(),
    cniBinDir: z.string(),
    bpffs: z.string(),
  }),
  summary: z.object({
    pass: z.int().nonnegative(),
    info: z.int().nonnegative(),
    warn: z.int().nonnegative(),
    fail: z.int().nonnegative(),
    skip: z.int().nonnegative(),
  }),
  /** The process exit code: 0 all passed, 3 warnings only, 1 failures (src/exit_codes.ts). */
  exitCode: z.union([z.literal(0), z.literal(3), z.literal(1)]),
  checks: z.array(checkSchema),
});
export type DoctorReport = z.infer<typeof doctorReportSchema>;

const counter = z.string().regex(/^\d+$/); // u64 as a decimal string (JSON numbers lose bits)

export const statusReportSchema = z.object({
  version: z.literal(STATUS_SCHEMA_VERSION),
  generatedAt: z.iso.datetime(),
  bpffs: z.string(),
  /** false when the pin root holds no datapath (not installed): everything else is absent. */
  installed: z.boolean(),
  error: z.string().optional(),
  node: z.object({
    /** Every datapath counter (src/ffi/structs/datapath.ts COUNTERS), summed over CPUs. */
    counters: z.record(z.string(), counter),
    /** Whether pods may take the tag, and why (src/bpf/carrier.ts). */
    carrier: z.enum(["tag", "stage", "none"]),
    carrierReason: z.string(),
    /** The node's policy layer as the datapath holds it. */
    policy: z.record(z.string(), z.unknown()),
    stageMaxAgeMs: z.number().nonnegative(),
    /** Which release loaded each pinned program ("0.2.0 (objects 1a2b...)"). */
    programs: z.record(z.string(), z.string()),
    /** Pods still running release 0.1.0's saver (their DEL retires it). */
    legacyPods: z.int().nonnegative(),
  }).optional(),
  /**
   * The TSN interfaces: the configured ones, then any other holding a restorer pin under the
   * root. restorer null: not attached to the interface's current ifindex.
   */
  interfaces: z.array(z.object({
    name: z.string(),
    configured: z.boolean(),
    /** null: no such interface in this network namespace. */
    ifindex: z.int().positive().nullable(),
    restorer: z.object({
      api: z.enum(["tcx", "clsact", "netkit"]),
      pin: z.string(),
      /** Which release's restorer runs there (null: unreadable). */
      release: z.string().nullable(),
    }).nullable(),
  })).optional(),
  pods: z.array(z.object({
    /** The pod's cookie as 16 hex digits (its entry and counter slot record it). */
    cookie: z.string().regex(/^[0-9a-f]{16}$/),
    /** Its container id and interface, from its attachment pins (null: no pin names it). */
    containerId: z.string().nullable(),
    ifname: z.string().nullable(),
    /** Its host-side interface (null: gone). */
    host: z.string().nullable(),
    carrier: z.enum(["tag", "stage", "none"]),
    carrierReason: z.string(),
    /** Which release's saver and admit run for it. */
    saver: z.string().nullable(),
    admit: z.string().nullable(),
    policy: z.record(z.string(), z.unknown()),
    admitted: counter,
    clamped: counter,
    restored: counter,
  })).optional(),
  /** Per-second rates over the last --watch interval (absent on the first sample). */
  rates: z.record(z.string(), z.number()).optional(),
});
export type StatusReport = z.infer<typeof statusReportSchema>;
