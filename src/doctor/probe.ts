/**
 * Read-only facts about the running kernel and process that doctor reasons about: the
 * kernel release, its build config (/proc/config.gz or /boot/config-*), whether a module
 * is built in / loaded / loadable, sysctls and which C library files are mapped.
 */
import { exists } from "../util/fs.ts";

export interface KernelVersion {
  release: string;
  major: number;
  minor: number;
  patch: number;
}

export function parseKernelRelease(release: string): KernelVersion {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  return {
    release,
    major: m ? Number(m[1]) : 0,
    minor: m ? Number(m[2]) : 0,
    patch: m?.[3] ? Number(m[3]) : 0,
  };
}

export function kernelVersion(): KernelVersion {
  return parseKernelRelease(Deno.osRelease());
}

/** True when the kernel is at least major.minor. */
export function atLeast(k: KernelVersion, major: number, minor: number): boolean {
  return k.major > major || (k.major === major && k.minor >= minor);
}

let configCache: Promise<Map<string, string> | undefined> | undefined;

async function readKernelConfigText(): Promise<string | undefined> {
  try {
    const f = await Deno.open("/proc/config.gz");
    const text = await new Response(f.readable.pipeThrough(new DecompressionStream("gzip")))
      .text();
    return text;
  } catch {
    // fall through to /boot
  }
  try {
    return await Deno.readTextFile(`/boot/config-${Deno.osRelease()}`);
  } catch {
    return undefined;
  }
}

/** CONFIG_* -> "y" | "m" | "n" for the running kernel; undefined when no config is readable. */
export function kernelConfig(): Promise<Map<string, string> | undefined> {
  configCache ??= readKernelConfigText().then((text) => {
    if (text === undefined) return undefined;
    const out = new Map<string, string>();
    for (const line of text.split("\n")) {
      const set = /^(CONFIG_\w+)=(.*)$/.exec(line);
      if (set) out.set(set[1], set[2]);
      const unset = /^# (CONFIG_\w+) is not set$/.exec(line);
      if (unset) out.set(unset[1], "n");
    }
    return out;
  });
  return configCache;
}

export type ModuleState = "loaded" | "builtin" | "loadable" | "missing" | "unknown";

/** A text file's contents; undefined when it cannot be read. */
export function readOr(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Whether a kernel module (e.g. "sch_taprio", config symbol CONFIG_NET_SCH_TAPRIO) can be
 * used: loaded now, built in, loadable with modprobe, or definitely missing.
 */
export async function moduleState(module: string, configSymbol: string): Promise<ModuleState> {
  if (exists(`/sys/module/${module}`)) return "loaded";
  const dir = `/lib/modules/${Deno.osRelease()}`;
  const builtin = readOr(`${dir}/modules.builtin`);
  if (builtin?.split("\n").some((l) => l.endsWith(`/${module}.ko`))) return "builtin";
  const dep = readOr(`${dir}/modules.dep`);
  if (dep?.split("\n").some((l) => new RegExp(`/${module}\\.ko(\\.[gx]z|\\.zst)?:`).test(l))) {
    return "loadable";
  }
  const cfg = await kernelConfig();
  const v = cfg?.get(configSymbol);
  if (v === "y") return "builtin";
  if (v === "m") return dep === undefined ? "unknown" : "missing";
  if (v === "n") return "missing";
  return "unknown";
}

/** A sysctl as text (trimmed), in the calling thread's namespaces; undefined when absent. */
export function readSysctl(name: string): string | undefined {
  return readOr(`/proc/sys/${name.replaceAll(".", "/")}`)?.trim();
}

/** Reads a procfs file to its end (a single read of /proc/self/maps stops at a page or so). */
export function readProcFile(path: string): string | undefined {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path);
  } catch {
    return undefined;
  }
  try {
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = f.readSync(buf);
      if (n === null || n === 0) break;
      chunks.push(buf.slice(0, n));
    }
    const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.length;
    }
    return new TextDecoder().decode(out);
  } finally {
    f.close();
  }
}

/** The file a shared library was mapped from in this process (/proc/self/maps). */
export function mappedLibrary(pattern: RegExp): string | undefined {
  const maps = readProcFile("/proc/self/maps") ?? "";
  for (const line of maps.split("\n")) {
    const path = line.slice(line.indexOf("/"));
    if (line.includes("/") && pattern.test(path.slice(path.lastIndexOf("/") + 1))) return path;
  }
  return undefined;
}

const LIB_DIRS = [
  "/usr/lib/x86_64-linux-gnu",
  "/lib/x86_64-linux-gnu",
  "/usr/lib/aarch64-linux-gnu",
  "/lib/aarch64-linux-gnu",
  "/usr/lib64",
  "/lib64",
  "/usr/local/lib",
  "/usr/lib",
  "/lib",
];

/**
 * The file a library was (or would be) loaded from: the mapping in this process when
 * /proc/self/maps shows it, else the env override, else the soname in the usual library
 * directories (what the dynamic loader searches on Debian).
 */
export function libraryFile(soname: string, envVar: string): string {
  const escaped = soname.replace(/[.]/g, "\\.");
  const mapped = mappedLibrary(new RegExp(`^${escaped}`));
  if (mapped) return mapped;
  const override = Deno.env.get(envVar);
  if (override) return override;
  for (const d of LIB_DIRS) {
    if (exists(`${d}/${soname}`)) return `${d}/${soname}`;
  }
  return soname;
}

/** "libmnl.so.0.2.0" -> "0.2.0" (the version a soname symlink resolves to). */
export function versionFromFileName(path: string): string | undefined {
  let real = path;
  try {
    real = Deno.realPathSync(path);
  } catch {
    // keep the name
  }
  const m = /\.so\.([\d.]+)$/.exec(real) ?? /-([\d.]+)\.so$/.exec(real);
  return m?.[1];
}
