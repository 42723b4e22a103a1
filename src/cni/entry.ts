/**
 * Which code `tsnproxy cni` runs under `deno run`: the CNI path's modules (src/cni/main.ts and
 * what it imports, ~25 files), or build/cni.js, the same modules bundled into one file by
 * scripts/bundle_cni.ts. Under `deno run` every module costs ~0.3 ms of loading (resolution,
 * the transpile and code caches, a read) before any of it runs, and the plugin starts once
 * per pod and verb: the bundle takes ~8 ms off every ADD and DEL (`deno task bench`).
 *
 * The bundle is used only while it is what the sources would give now: its stamp
 * (build/cni.json) records the size and modification time of every source it was made from,
 * and of the bundle itself. An edited, checked-out or missing file sends the plugin back to
 * the modules, so a stale bundle can never run. The compiled binary has no build/ directory
 * next to it and always runs the modules it embeds.
 *
 * Kept free of imports: it runs before anything else on the CNI path.
 */

/** build/cni.json, written by scripts/bundle_cni.ts. */
export interface BundleStamp {
  /** The bundle's path relative to the checkout root. */
  bundle: string;
  /** [path relative to the checkout root, mtime in ms, size in bytes], bundle included. */
  files: Array<[string, number, number]>;
}

export type EntryKind = "bundle" | "modules";

export interface CniEntry {
  kind: EntryKind;
  /** What to import(): it exports runCni (src/cni/main.ts). */
  specifier: string;
  /** Why the modules run instead of the bundle (absent for the bundle). */
  reason?: string;
}

export const STAMP_PATH = "build/cni.json";
const CHECKOUT_ROOT = new URL("../../", import.meta.url);
const MODULES = new URL("./main.ts", import.meta.url).href;

/** The reason the stamp does not match the files (undefined: it matches). */
export function staleness(root: URL, stamp: BundleStamp): string | undefined {
  // Plain paths: parsing a URL per file doubled the cost of this loop (measured: 36 files).
  const dir = decodeURIComponent(root.pathname);
  for (const [path, mtime, size] of stamp.files) {
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(dir + path);
    } catch {
      return `${path} is missing`;
    }
    if (st.size !== size || st.mtime?.getTime() !== mtime) return `${path} changed`;
  }
  return undefined;
}

function readStamp(root: URL): BundleStamp | string {
  let text: string;
  try {
    text = Deno.readTextFileSync(new URL(STAMP_PATH, root));
  } catch {
    return `no ${STAMP_PATH}`;
  }
  try {
    const s = JSON.parse(text) as Partial<BundleStamp>;
    if (
      typeof s.bundle === "string" && Array.isArray(s.files) &&
      s.files.some((f) => Array.isArray(f) && f[0] === s.bundle)
    ) {
      return s as BundleStamp;
    }
  } catch {
    // reported below
  }
  return `${STAMP_PATH} is malformed`;
}

/**
 * The bundle when its stamp matches the files under root, else the modules.
 * TSNPROXY_CNI_BUNDLE=0 runs the modules regardless (stack traces then name the sources).
 */
export function cniEntry(root: URL = CHECKOUT_ROOT): CniEntry {
  if (Deno.env.get("TSNPROXY_CNI_BUNDLE") === "0") {
    return { kind: "modules", specifier: MODULES, reason: "TSNPROXY_CNI_BUNDLE=0" };
  }
  const stamp = readStamp(root);
  if (typeof stamp === "string") return { kind: "modules", specifier: MODULES, reason: stamp };
  const stale = staleness(root, stamp);
  if (stale) return { kind: "modules", specifier: MODULES, reason: stale };
  return { kind: "bundle", specifier: new URL(stamp.bundle, root).href };
}
