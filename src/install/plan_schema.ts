/**
 * What `tsnproxy install --json` and `tsnproxy uninstall --json` print (with or without
 * --dry-run): one JSON document, the plan and its outcome. The commands parse their output
 * with these schemas before printing it: they are the contract (docs/cli.md).
 */
import { z } from "zod";

export const PLAN_SCHEMA_VERSION = 1;

const conflistPlanSchema = z.object({
  confDir: z.string(),
  /** The conflist discovery chose; null when there is none (uninstall: nothing to remove). */
  target: z.string().nullable(),
  status: z.enum(["added", "replaced", "unchanged", "removed", "restored", "absent"]),
  changes: z.array(z.object({
    action: z.enum(["create", "update", "delete"]),
    path: z.string(),
    /** "conflist": a file the runtime loads; "backup": tsnproxy's copy of the original. */
    role: z.enum(["conflist", "backup"]),
    why: z.string(),
    /** Unified diff of the file ("" for backups). */
    diff: z.string(),
  })),
  warnings: z.array(z.string()),
  /** Why nothing is planned here, when it is not a plain "entry present/absent". */
  note: z.string().optional(),
});

const qdiscPlanSchema = z.object({
  ifname: z.string(),
  steps: z.array(z.object({
    op: z.enum(["add-clsact", "recreate-root", "delete-root", "apply-root", "delete-clsact"]),
    /** The step as the text plan shows it. */
    text: z.string(),
  })),
  notes: z.array(z.string()),
  warnings: z.array(z.string()),
});

const restorerPlanSchema = z.object({
  ifname: z.string(),
  api: z.enum(["tcx", "clsact"]),
  pin: z.string(),
  /**
   * null: restoreAt host-veth-ingress (the plugin attaches per pod). "replace": attached to
   * another program than the pinned (or newly pinned) tsnp_restore: moved onto it in place.
   */
  action: z.enum(["attach", "kept", "replace"]).nullable(),
});

const vlanPlanSchema = z.object({
  ifname: z.string(),
  /** null: the device is gone or no longer a VLAN device (uninstall). */
  vlanId: z.int().nonnegative().nullable(),
  /** egress-qos-map entries to set: priority -> pcp, and the PCP it has now. */
  changes: z.array(z.object({
    priority: z.int().nonnegative(),
    pcp: z.int().min(0).max(7),
    before: z.int().min(0).max(7),
  })),
  notes: z.array(z.string()),
});

const common = {
  version: z.literal(PLAN_SCHEMA_VERSION),
  dryRun: z.boolean(),
  /** Whether running the plan changes anything (false: the node is as it should be). */
  changes: z.boolean(),
  /**
   * planned: --dry-run; unchanged: nothing to do; applied: the plan ran; failed: it did not
   * complete (error says why; the exit code is 1).
   */
  outcome: z.enum(["planned", "unchanged", "applied", "failed"]),
  error: z.object({ message: z.string(), hint: z.string() }).optional(),
};

export const installPlanSchema = z.strictObject({
  ...common,
  command: z.literal("install"),
  target: z.object({
    /** The first TSN interface (the only one in the single form). */
    tsnInterface: z.string(),
    /** Every TSN interface, in config order. */
    tsnInterfaces: z.array(z.string()).min(1),
    api: z.enum(["tcx", "clsact"]),
    restoreAt: z.enum(["tsn-egress", "host-veth-ingress"]),
    bpffs: z.string(),
    stateDir: z.string(),
    inPlace: z.boolean(),
  }),
  /** The first TSN interface's qdisc steps (interfaces[0].qdisc). */
  qdisc: qdiscPlanSchema,
  /** Per TSN interface: its qdisc, restorer and vlan steps. */
  interfaces: z.array(z.object({
    ifname: z.string(),
    qdisc: qdiscPlanSchema,
    restorer: restorerPlanSchema,
    /** null: no vlan section for this interface. */
    vlan: vlanPlanSchema.nullable(),
  })).min(1),
  /** null: not part of this plan. */
  binary: z.object({
    path: z.string(),
    action: z.enum(["create", "update", "none"]),
    why: z.string(),
    source: z.object({
      kind: z.enum(["compiled", "launcher"]),
      from: z.string(),
      bytes: z.int().nonnegative(),
    }),
  }).nullable(),
  datapath: z.object({
    root: z.string(),
    createRoot: z.boolean(),
    programs: z.array(z.object({
      role: z.enum(["save", "admit", "restore"]),
      name: z.string(),
      action: z.enum(["kept", "pinned", "replaced"]),
      id: z.int().nonnegative(),
      tag: z.string(),
    })),
    writeConfig: z.boolean(),
    config: z.object({
      stageMaxAgeMs: z.number().nonnegative(),
      /** Whether pods may use the tag (per pod, the plugin may still choose the stage). */
      carrier: z.enum(["tag", "stage", "none"]),
      carrierReason: z.string(),
      /** Other datapaths' programs on the node's devices, behind a stage choice. */
      foreignPrograms: z.array(z.string()).optional(),
      /** The node's policy layer (src/policy/resolve.ts describePolicy). */
      policy: z.record(z.string(), z.unknown()),
    }),
    /** Release 0.1.0's datapath, kept while pods it attached live. */
    legacy: z.object({ present: z.boolean(), pods: z.int().nonnegative() }),
    /** Pods moved to the carrier the programs now on their way allow. */
    podCarriers: z.array(z.object({
      ifindex: z.int().positive(),
      ifname: z.string(),
      from: z.enum(["tag", "stage", "none"]),
      to: z.enum(["tag", "stage", "none"]),
      reason: z.string(),
      programs: z.array(z.string()).optional(),
    })),
  }).nullable(),
  /** The first TSN interface's restorer step (interfaces[0].restorer). */
  restorer: restorerPlanSchema,
  /** Interfaces whose restorer install detaches: the config no longer lists them. */
  staleRestorers: z.array(z.string()),
  conflist: conflistPlanSchema,
  state: z.object({ path: z.string(), change: z.boolean() }),
});
export type InstallPlanJson = z.infer<typeof installPlanSchema>;

export const uninstallPlanSchema = z.strictObject({
  ...common,
  command: z.literal("uninstall"),
  bpffs: z.string(),
  conflist: conflistPlanSchema,
  datapath: z.object({
    root: z.string(),
    exists: z.boolean(),
    nodeAttachments: z.array(z.string()),
    podAttachments: z.int().nonnegative(),
  }),
  /** null: install recorded no qdisc it created. The first recorded interface's. */
  qdisc: qdiscPlanSchema.nullable(),
  /** Per interface install recorded something about: its qdisc and vlan steps. */
  interfaces: z.array(z.object({
    ifname: z.string(),
    /** null: the interface is gone (nothing to remove). */
    qdisc: qdiscPlanSchema.nullable(),
    /** null: install changed no egress-qos-map entry there. */
    vlan: vlanPlanSchema.nullable(),
  })),
  binary: z.object({ path: z.string(), exists: z.boolean() }),
  state: z.object({
    path: z.string(),
    action: z.enum(["remove", "update", "keep", "absent"]),
  }),
});
export type UninstallPlanJson = z.infer<typeof uninstallPlanSchema>;

export const planOutputSchema = z.discriminatedUnion("command", [
  installPlanSchema,
  uninstallPlanSchema,
]);
export type PlanOutput = z.infer<typeof planOutputSchema>;
