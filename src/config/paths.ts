/**
 * The node's own directories, and the rule that confines every path a conflist entry or the
 * node config names to them. Whoever can write a plugin entry (a NetworkAttachmentDefinition,
 * a chained conflist) is an input: an entry's logFile would otherwise give it root appends
 * to any file, its bpffs any pinned object, its agentSocket any peer.
 */

export const NODE_DIRS = {
  /** Pin roots: inside the bpf filesystem. */
  bpffs: "/sys/fs/bpf/",
  /** The plugin's JSON-lines log. */
  logFile: "/var/log/tsnproxy/",
  /** The agent's CNI socket. */
  agentSocket: "/run/tsnproxy/",
} as const;
export type ConfinedPath = keyof typeof NODE_DIRS;

/** The directories tsnproxy makes inside a pin root (src/bpf/pins.ts). */
const PIN_DIRS = new Set(["maps", "progs", "node", "pods"]);

/** Why `path` is not acceptable for `kind`, or undefined when it is. */
export function pathProblem(kind: ConfinedPath, path: unknown): string | undefined {
  const dir = NODE_DIRS[kind];
  if (typeof path !== "string" || !path.startsWith("/") || path.includes("\0")) {
    return `expected an absolute path under ${dir}, got ${JSON.stringify(path)}`;
  }
  const parts = path.split("/");
  if (parts.some((p) => p === ".." || p === ".")) {
    return `${JSON.stringify(path)} has "." or ".." components (write it without them)`;
  }
  if (!path.startsWith(dir) || path.length === dir.length) {
    return `${JSON.stringify(path)} is outside ${dir} (tsnproxy keeps its ${kind} there)`;
  }
  if (kind === "bpffs" && parts.some((p) => /^v\d+$/.test(p) || PIN_DIRS.has(p))) {
    return `${JSON.stringify(path)} names a directory inside a pin root (an ABI's v<N>, ` +
      "maps, progs, node or pods): give the root itself, e.g. /sys/fs/bpf/tsnproxy";
  }
  return undefined;
}
