/**
 * Kernel images for tsnproxy's VM tests: Debian's generic amd64 kernels (they have taprio,
 * mqprio, etf as modules and 9p to share host directories) and Debian's arm64 kernel (booted
 * in qemu-system-aarch64 with an arm64 userland, scripts/vm/userland.ts), each pinned by exact
 * package version and SHA-256 in scripts/vm/kernels.json, fetched with
 * `apt-get download pkg[:arch]=version`, checked against the pin and unpacked with
 * `dpkg-deb -x` (never installed), plus a small initramfs: busybox-static, the modules the
 * tests need (dependencies resolved from modules.dep, .ko.xz decompressed on the host) and
 * scripts/vm/init.sh as /init. docs/kernels.md says why these kernels and how to bump a pin.
 *
 * Cache location: $TSNPROXY_VM_CACHE if set, else <checkout>/.cache/vm/ (gitignored):
 *   kernels/<package>_<version>/   the unpacked kernel package (boot/vmlinuz-*, lib/modules/*);
 *                                  .complete names the verified SHA-256 of its .deb
 *   images/<name>/                 initramfs.cpio.gz + stamp.json (input hash, kernel version)
 *   userland/<arch>/<id>/          a foreign architecture's /usr and /etc (userland.ts)
 * The .deb (~70 MB for 6.1, ~107 MB for 6.12) is downloaded once, verified and deleted after
 * unpacking. An initramfs is rebuilt only when its inputs change: the pin, the resolved module
 * list, init.sh, the busybox binary and FORMAT below.
 *
 * Force a rebuild of the initramfs:   TSNPROXY_VM_REBUILD=1 (any run), or
 *   deno run -A scripts/vm/images.ts --rebuild [6.1 6.12 6.1-arm64]
 * Force a fresh download as well:     rm -rf .cache/vm   (or the TSNPROXY_VM_CACHE directory)
 * Prefetch (e.g. in CI before tests): deno run -A scripts/vm/images.ts 6.1 6.12 6.1-arm64
 * Move the pins to what apt offers:   deno run -A scripts/vm/images.ts --bump [6.1 ...]
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { buildCpio, type CpioEntry, gzip } from "./cpio.ts";
import { VmError } from "./errors.ts";
import pinsJson from "./kernels.json" with { type: "json" };
import { aptName, type GuestArch, HOST_ARCH } from "./arch.ts";
import { ensureUserland, type Userland } from "./userland.ts";

export type { GuestArch } from "./arch.ts";

export const KERNELS = {
  /** Debian 12's default kernel: the classic clsact path, no tcx. */
  "6.1": { metaPackage: "linux-image-amd64", arch: "amd64" },
  /** Debian 12's backported 6.12: tcx, BPF_SKB_CLOCK_TAI. */
  "6.12": { metaPackage: "linux-image-6.12-amd64", arch: "amd64" },
  /**
   * Debian 12's default arm64 kernel, booted in qemu-system-aarch64 (virt machine, TCG): the
   * datapath's BPF objects loaded and run by an arm64 kernel and an arm64 deno. The guest's
   * /usr is an arm64 userland unpacked from Debian's packages (scripts/vm/userland.ts).
   */
  "6.1-arm64": { metaPackage: "linux-image-arm64", arch: "arm64" },
} as const satisfies Record<string, { metaPackage: string; arch: GuestArch }>;
export type KernelName = keyof typeof KERNELS;

/** Every kernel the harness knows, in KERNELS order. */
export const KERNEL_NAMES = Object.keys(KERNELS) as KernelName[];

export function isKernelName(s: string): s is KernelName {
  return Object.hasOwn(KERNELS, s);
}

const PINS_URL = new URL("./kernels.json", import.meta.url);
/** The pins file, as messages name it. */
export const PINS_FILE = "scripts/vm/kernels.json";

/** One pinned kernel package: exactly this .deb, or the VM tests refuse to run. */
export const KernelPinSchema = z.object({
  /** The concrete Debian package, e.g. linux-image-6.1.0-57-amd64. */
  package: z.string().regex(/^linux-image-[a-z0-9.+~-]+$/),
  /** Its exact Debian version, as `apt-get download package=version` takes it. */
  version: z.string().regex(/^[0-9][A-Za-z0-9.+~:-]*$/),
  /** SHA-256 of the .deb, as Debian's package index lists it. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Size of the .deb in bytes (progress and messages only). */
  size: z.number().int().positive(),
}).strict();
export type KernelPin = z.infer<typeof KernelPinSchema>;

/** The pins in force: scripts/vm/kernels.json, or what --bump just wrote there. */
const pins: Record<string, unknown> = { ...pinsJson };

/** The pin of `kernel` from scripts/vm/kernels.json; a malformed or missing one throws. */
export function kernelPin(kernel: KernelName): KernelPin {
  const r = KernelPinSchema.safeParse(pins[kernel]);
  if (!r.success) {
    throw new VmError(
      `${PINS_FILE} has no valid pin for ${kernel}: ` +
        r.error.issues.map((i) => `${i.path.join(".") || "(entry)"}: ${i.message}`).join("; "),
      `restore it from git, or \`deno run -A scripts/vm/images.ts --bump ${kernel}\``,
    );
  }
  return r.data;
}

/** Modules the tests rely on: the build fails when one is neither a module nor built in. */
export const REQUIRED_MODULES = [
  "sch_taprio",
  "sch_mqprio",
  "sch_etf",
  "sch_prio",
  "sch_cbs",
  "sch_ingress",
  "cls_bpf",
  "act_bpf",
  "veth",
  "bridge",
  "virtio_pci",
  "9p",
  "9pnet_virtio",
] as const;
/** Useful extras, skipped quietly when a kernel lacks them. */
export const OPTIONAL_MODULES = [
  "sch_fq",
  "sch_netem",
  "cls_u32",
  "cls_flower",
  "cls_matchall",
  "act_gact",
  "act_skbedit",
  "act_mirred",
  "8021q",
  "dummy",
  "overlay",
  // an emulated NIC with a PTP hardware clock (qemu's e1000e is an 82574L), for doctor's time checks
  "e1000e",
] as const;

/** Bump when the initramfs layout changes in a way the other inputs do not capture. */
const FORMAT = 1;
const BUSYBOX = "/bin/busybox";
const INIT_SH = new URL("./init.sh", import.meta.url);

export interface KernelImage {
  kernel: KernelName;
  arch: GuestArch;
  /** Concrete Debian package, e.g. linux-image-6.1.0-56-amd64. */
  package: string;
  version: string;
  /** uname -r inside the guest. */
  kver: string;
  vmlinuz: string;
  /**
   * The uncompressed ELF kernel, booted through its PVH entry point: skips the in-guest
   * decompression of the bzImage, which costs ~4.5 s under TCG. Undefined when the kernel
   * has no PVH entry (then qemu boots `vmlinuz`).
   */
  vmlinux?: string;
  initramfs: string;
  /** Module files in load order (guest paths). */
  modules: string[];
  /** A foreign architecture's userland (the guest's /usr and /etc); undefined: the host's. */
  userland?: Userland;
}

export interface ImageOptions {
  /** Rebuild the initramfs even when its inputs are unchanged. */
  rebuild?: boolean;
  /** Progress lines (downloads, builds); default: stderr. */
  log?: (line: string) => void;
}

/** The checkout this file lives in. */
export function repoRoot(): string {
  return new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
}

export function cacheDir(): string {
  return Deno.env.get("TSNPROXY_VM_CACHE") || `${repoRoot()}/.cache/vm`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Runs a host tool; throws VmError with its stderr when it fails or is missing. */
async function tool(
  cmd: string,
  args: string[],
  opts: { cwd?: string; hint: string },
): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stdin: "null" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new VmError(`${cmd} is not installed`, opts.hint, { cause: e });
    }
    throw e;
  }
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("; ");
    throw new VmError(`${cmd} ${args.join(" ")} failed (exit ${out.code}): ${err}`, opts.hint);
  }
  return new TextDecoder().decode(out.stdout);
}

async function sha256(parts: (string | Uint8Array)[]): Promise<string> {
  const enc = new TextEncoder();
  const bufs = parts.map((p) => typeof p === "string" ? enc.encode(p + "\0") : p);
  const all = new Uint8Array(bufs.reduce((n, b) => n + b.length, 0));
  let off = 0;
  for (const b of bufs) {
    all.set(b, off);
    off += b.length;
  }
  const digest = await crypto.subtle.digest("SHA-256", all);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

interface Stamp {
  hash: string;
  package: string;
  version: string;
  kver: string;
  modules: string[];
  builtAt: string;
}

async function readStamp(path: string): Promise<Stamp | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as Stamp;
  } catch {
    return undefined;
  }
}

/** What to do when apt does not know a package of `kernel`'s architecture. */
function aptHint(kernel: KernelName): string {
  const { arch } = KERNELS[kernel];
  return arch === HOST_ARCH
    ? "run `apt-get update` (Debian bookworm sources with bookworm-updates/security)"
    : `run \`dpkg --add-architecture ${arch} && apt-get update\` (scripts/setup.sh does)`;
}

/** `package=version` as apt takes it for `kernel`'s architecture (`pkg:arm64=...` on amd64). */
function aptSpec(kernel: KernelName, pkg: string, version: string): string {
  return `${aptName(pkg, KERNELS[kernel].arch)}=${version}`;
}

/**
 * The concrete kernel package apt offers today behind the meta package (for --bump), for the
 * kernel's architecture (the arm64 one from apt's arm64 index); `pkg` without `:arch`.
 */
async function aptResolve(kernel: KernelName): Promise<{ pkg: string; version: string }> {
  const { arch } = KERNELS[kernel];
  const meta = aptName(KERNELS[kernel].metaPackage, arch);
  const hint = aptHint(kernel);
  const deps = await tool("apt-cache", ["depends", meta], { hint });
  const pkg = deps.match(/Depends:\s+(linux-image-[^\s:]+)/)?.[1];
  if (!pkg) throw new VmError(`apt-cache knows no kernel package behind ${meta}`, hint);
  const policy = await tool("apt-cache", ["policy", aptName(pkg, arch)], { hint });
  const version = policy.match(/Candidate:\s+(\S+)/)?.[1];
  if (!version || version === "(none)") {
    throw new VmError(`${pkg} has no installable candidate in the apt lists`, hint);
  }
  return { pkg, version };
}

/** SHA-256 and size of `pkg=version` as apt's (signed) package index lists them. */
async function aptIndexEntry(
  kernel: KernelName,
  pkg: string,
  version: string,
): Promise<{ sha256: string; size: number } | undefined> {
  const out = await new Deno.Command("apt-cache", {
    args: ["show", aptSpec(kernel, pkg, version)],
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  if (!out?.success) return undefined;
  const stanza = new TextDecoder().decode(out.stdout).split("\n\n")[0];
  const sha256 = stanza.match(/^SHA256:\s*([0-9a-f]{64})$/m)?.[1];
  const size = Number(stanza.match(/^Size:\s*(\d+)$/m)?.[1]);
  return sha256 && size > 0 ? { sha256, size } : undefined;
}

/** How to move a pin to what the archive serves today; every pin failure ends with this. */
export function bumpHint(kernel: KernelName): string {
  return `bump the pin: \`deno run -A scripts/vm/images.ts --bump ${kernel}\` rewrites ` +
    `${PINS_FILE} from the apt lists, then run \`deno test -A tests/vm/\` (docs/kernels.md)`;
}

/** SHA-256 of a file, streamed (the .debs are 70-110 MB). */
export async function fileSha256(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

/** Throws VmError unless `deb` is the pinned package, byte for byte. */
export async function verifyDeb(kernel: KernelName, pin: KernelPin, deb: string): Promise<void> {
  const got = await fileSha256(deb);
  if (got === pin.sha256) return;
  const size = (await Deno.stat(deb)).size;
  throw new VmError(
    `${pin.package}=${pin.version} (the ${kernel} kernel pinned in ${PINS_FILE}) does not match ` +
      `its pin: SHA-256 expected ${pin.sha256}, got ${got} (${size} bytes, pinned ${pin.size})`,
    `a mirror or proxy served other bytes: retry, or check \`apt-cache show ` +
      `${aptSpec(kernel, pin.package, pin.version)}\`; if Debian really republished it, ` +
      bumpHint(kernel),
  );
}

/** Why `apt-get download` of a pin failed, in words that say what to do. */
async function downloadFailure(kernel: KernelName, pin: KernelPin, e: unknown): Promise<Error> {
  if (!(e instanceof VmError)) return e instanceof Error ? e : new Error(String(e));
  // Known to apt: network trouble.
  if (await aptIndexEntry(kernel, pin.package, pin.version)) return e;
  const offered = await aptResolve(kernel).then(
    (r) => `apt offers ${r.pkg}=${r.version} today`,
    () => "apt offers no candidate either",
  );
  return new VmError(
    `${pin.package}=${pin.version} (the ${kernel} kernel pinned in ${PINS_FILE}) is not in the ` +
      `apt lists (${offered}). Debian's archive serves one version of each package, and the ` +
      `security suite replaces a kernel within weeks: the pin is stale or the lists are old`,
    `${aptHint(kernel)} and retry; if it is still missing, ${bumpHint(kernel)}`,
    { cause: e },
  );
}

/**
 * Downloads the pinned kernel package, verifies its SHA-256 and unpacks it, unless the cache
 * holds it (its .complete names the same checksum); returns the unpacked directory.
 */
async function fetchKernel(
  kernel: KernelName,
  pin: KernelPin,
  log: (line: string) => void,
): Promise<string> {
  const root = cacheDir();
  const dir = `${root}/kernels/${pin.package}_${pin.version.replaceAll(":", "%3a")}`;
  const complete = `${pin.package} ${pin.version} sha256=${pin.sha256}\n`;
  if (await Deno.readTextFile(`${dir}/.complete`).catch(() => "") === complete) return dir;

  const tmp = `${root}/tmp/${pin.package}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    log(`vm: downloading ${pin.package}=${pin.version} (${(pin.size / 1e6).toFixed(0)} MB)`);
    const t0 = performance.now();
    await tool("apt-get", ["download", "-q", aptSpec(kernel, pin.package, pin.version)], {
      cwd: tmp,
      hint: `check network access to the Debian mirror and ${aptHint(kernel)}`,
    }).catch(async (e) => {
      throw await downloadFailure(kernel, pin, e);
    });
    const debs: string[] = [];
    for await (const e of Deno.readDir(tmp)) if (e.name.endsWith(".deb")) debs.push(e.name);
    if (debs.length !== 1) {
      throw new VmError(`apt-get download left ${debs.length} .deb files in ${tmp}`, "retry");
    }
    await verifyDeb(kernel, pin, `${tmp}/${debs[0]}`);
    log(
      `vm: unpacking ${debs[0]} (${((performance.now() - t0) / 1000).toFixed(1)} s download, ` +
        `SHA-256 verified)`,
    );
    const out = `${tmp}/root`;
    await tool("dpkg-deb", ["-x", `${tmp}/${debs[0]}`, out], { hint: "install dpkg" });
    const kver = await singleKernelVersion(out);
    // Debian's packages ship no modules.dep (postinst runs depmod): make one for this tree.
    if (!await exists(`${out}/lib/modules/${kver}/modules.dep`)) {
      await tool("depmod", ["-b", out, kver], { hint: "install kmod (apt-get install kmod)" });
    }
    await Deno.writeTextFile(`${out}/.complete`, complete);
    await Deno.mkdir(`${root}/kernels`, { recursive: true });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(out, dir);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return dir;
}

/**
 * Unpacks the ELF vmlinux from a bzImage: the setup header gives the offset and length of the
 * compressed payload (Documentation/arch/x86/boot.rst: payload_offset/payload_length, the last
 * 4 bytes being the uncompressed size), which is xz, zstd or gzip on Debian kernels.
 */
async function extractVmlinux(bzImage: Uint8Array): Promise<Uint8Array | undefined> {
  const v = new DataView(bzImage.buffer, bzImage.byteOffset, bzImage.byteLength);
  if (v.getUint32(0x202, true) !== 0x53726448) return undefined; // "HdrS"
  const setupSects = bzImage[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + v.getUint32(0x248, true);
  const payload = bzImage.subarray(start, start + v.getUint32(0x24c, true) - 4);
  const magic = Array.from(payload.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
  const cmd = magic === "fd377a58"
    ? ["xz", "-dc", "--single-stream"]
    : magic === "28b52ffd"
    ? ["zstd", "-dc"]
    : magic.startsWith("1f8b")
    ? ["gzip", "-dc"]
    : undefined;
  if (!cmd) return undefined;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch {
    return undefined; // decompressor missing: boot the bzImage instead
  }
  const writer = child.stdin.getWriter();
  const [out] = await Promise.all([
    child.output(),
    writer.write(payload).then(() => writer.close()),
  ]);
  if (!out.success || out.stdout.length < 4 || out.stdout[0] !== 0x7f) return undefined;
  return out.stdout;
}

async function singleKernelVersion(root: string): Promise<string> {
  const kvers: string[] = [];
  for await (const e of Deno.readDir(`${root}/lib/modules`)) if (e.isDirectory) kvers.push(e.name);
  if (kvers.length !== 1) {
    throw new VmError(`expected one kernel under ${root}/lib/modules, found ${kvers}`, "rm -rf it");
  }
  return kvers[0];
}

/** Module name as the kernel spells it: basename without .ko[.xz|.zst|.gz], "-" -> "_". */
function moduleName(path: string): string {
  return path.split("/").pop()!.replace(/\.ko(\.xz|\.zst|\.gz)?$/, "").replaceAll("-", "_");
}

/**
 * Resolves `wanted` against modules.dep: module paths (relative to lib/modules/<kver>) in load
 * order, dependencies first. Built-in modules need nothing; a missing required one throws.
 */
export function resolveModules(
  modulesDep: string,
  modulesBuiltin: string,
  required: readonly string[],
  optional: readonly string[],
): { paths: string[]; builtin: string[]; missing: string[] } {
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of modulesDep.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const d = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    deps.set(moduleName(path), { path, deps: d });
  }
  const builtinSet = new Set(
    modulesBuiltin.split("\n").filter(Boolean).map((p) => moduleName(p)),
  );
  const paths: string[] = [];
  const done = new Set<string>();
  const builtin: string[] = [];
  const missing: string[] = [];
  const visit = (path: string) => {
    if (done.has(path)) return;
    done.add(path);
    const entry = deps.get(moduleName(path));
    for (const d of entry?.deps ?? []) visit(d);
    paths.push(path);
  };
  for (const [names, isRequired] of [[required, true], [optional, false]] as const) {
    for (const name of names) {
      const n = name.replaceAll("-", "_");
      const entry = deps.get(n);
      if (entry) visit(entry.path);
      else if (builtinSet.has(n)) builtin.push(n);
      else if (isRequired) missing.push(n);
    }
  }
  return { paths, builtin, missing };
}

/** Reads a module file, decompressing .ko.xz / .ko.zst / .ko.gz on the host. */
async function readModule(file: string): Promise<Uint8Array> {
  if (file.endsWith(".ko")) return await Deno.readFile(file);
  const [cmd, pkg] = file.endsWith(".xz")
    ? ["xz", "xz-utils"]
    : file.endsWith(".zst")
    ? ["zstd", "zstd"]
    : ["gzip", "gzip"];
  const out = await new Deno.Command(cmd, { args: ["-dc", file], stderr: "piped" }).output()
    .catch((e) => {
      throw new VmError(`cannot run ${cmd} for ${file}`, `apt-get install ${pkg}`, { cause: e });
    });
  if (!out.success) {
    throw new VmError(
      `${cmd} -dc ${file} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
      "rm -rf the cached kernel directory to unpack it again",
    );
  }
  return out.stdout;
}

/** True for an ELF executable without a PT_INTERP header (usable in an empty initramfs). */
function isStaticElf(bin: Uint8Array): boolean {
  const v = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
  if (bin.length < 64 || v.getUint32(0) !== 0x7f454c46 || bin[4] !== 2) return false;
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    if (v.getUint32(phoff + i * phentsize, true) === 3) return false; // PT_INTERP
  }
  return true;
}

/**
 * Returns the kernel and initramfs for `kernel`, downloading, unpacking and building what is
 * missing or stale. Safe to call from several processes: everything is written under a
 * temporary name and renamed into place.
 */
export async function ensureImage(
  kernel: KernelName,
  opts: ImageOptions = {},
): Promise<KernelImage> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const rebuild = opts.rebuild || Deno.env.get("TSNPROXY_VM_REBUILD") === "1";
  const imageDir = `${cacheDir()}/images/${kernel}`;
  const stampPath = `${imageDir}/stamp.json`;
  const initramfs = `${imageDir}/initramfs.cpio.gz`;

  const pin = kernelPin(kernel);
  const { package: pkg, version } = pin;
  const { arch } = KERNELS[kernel];
  const kdir = await fetchKernel(kernel, pin, log);
  const kver = await singleKernelVersion(kdir);
  const moddir = `${kdir}/lib/modules/${kver}`;
  const vmlinuz = `${kdir}/boot/vmlinuz-${kver}`;
  // arm64: Debian's vmlinuz is the uncompressed Image qemu boots directly.
  let vmlinux: string | undefined = arch === "amd64"
    ? `${kdir}/boot/vmlinux-${kver}.pvh`
    : undefined;
  if (vmlinux && !await exists(vmlinux)) {
    const config = await Deno.readTextFile(`${kdir}/boot/config-${kver}`).catch(() => "");
    const elf = /^CONFIG_PVH=y$/m.test(config)
      ? await extractVmlinux(await Deno.readFile(vmlinuz))
      : undefined;
    if (elf) {
      await Deno.writeFile(`${vmlinux}.tmp`, elf);
      await Deno.rename(`${vmlinux}.tmp`, vmlinux);
    } else {
      log(`vm: ${kver}: no PVH vmlinux, booting the bzImage (slower)`);
      vmlinux = undefined;
    }
  }

  const resolved = resolveModules(
    await Deno.readTextFile(`${moddir}/modules.dep`),
    await Deno.readTextFile(`${moddir}/modules.builtin`).catch(() => ""),
    REQUIRED_MODULES,
    OPTIONAL_MODULES,
  );
  if (resolved.missing.length > 0) {
    throw new VmError(
      `${pkg} lacks modules the VM tests need: ${resolved.missing.join(" ")}`,
      `use a kernel flavour that has them (see KERNELS in scripts/vm/images.ts)`,
    );
  }
  const guestModules = resolved.paths.map((p) =>
    `/lib/modules/${kver}/${p.replace(/\.(xz|zst|gz)$/, "")}`
  );

  const initSh = await Deno.readFile(INIT_SH);
  const userland = arch === HOST_ARCH ? undefined : await ensureUserland(arch, cacheDir(), log);
  const busyboxPath = userland?.busybox ?? BUSYBOX;
  let busybox: Uint8Array;
  try {
    busybox = await Deno.readFile(busyboxPath);
  } catch (e) {
    throw new VmError(`${busyboxPath} is missing`, "apt-get install busybox-static", {
      cause: e,
    });
  }
  if (!isStaticElf(busybox)) {
    throw new VmError(`${busyboxPath} is not statically linked`, "apt-get install busybox-static");
  }
  const hash = await sha256([
    `format ${FORMAT}`,
    ...(arch === "amd64" ? [] : [`arch ${arch}`]),
    pkg,
    version,
    pin.sha256,
    kver,
    ...guestModules,
    initSh,
    busybox,
  ]);

  const stamp = await readStamp(stampPath);
  if (!rebuild && stamp?.hash === hash && await exists(initramfs)) {
    return {
      kernel,
      arch,
      package: pkg,
      version,
      kver,
      vmlinuz,
      vmlinux,
      initramfs,
      modules: guestModules,
      userland,
    };
  }

  const t0 = performance.now();
  const entries: CpioEntry[] = [];
  for (const d of ["bin", "sbin", "proc", "sys", "dev", "run", "tmp", "etc/tsnvm", "newroot"]) {
    entries.push({ kind: "dir", path: d });
  }
  entries.push({ kind: "char", path: "dev/console", major: 5, minor: 1 });
  entries.push({ kind: "file", path: "bin/busybox", data: busybox, mode: 0o755 });
  // The host's busybox lists the applets (the same Debian build as the guest's).
  const applets = (await tool(BUSYBOX, ["--list-full"], { hint: "apt-get install busybox-static" }))
    .split("\n").filter(Boolean);
  for (const a of applets) {
    if (a === "bin/busybox") continue;
    entries.push({ kind: "symlink", path: a, target: "/bin/busybox" });
  }
  entries.push({ kind: "file", path: "init", data: initSh, mode: 0o755 });
  entries.push({
    kind: "file",
    path: "etc/tsnvm/modules",
    data: new TextEncoder().encode(guestModules.join("\n") + "\n"),
  });
  for (let i = 0; i < resolved.paths.length; i++) {
    entries.push({
      kind: "file",
      path: guestModules[i],
      data: await readModule(`${moddir}/${resolved.paths[i]}`),
    });
  }
  const image = await gzip(buildCpio(entries));

  await Deno.mkdir(imageDir, { recursive: true });
  const tmp = `${initramfs}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeFile(tmp, image);
  await Deno.rename(tmp, initramfs);
  const newStamp: Stamp = {
    hash,
    package: pkg,
    version,
    kver,
    modules: guestModules,
    builtAt: new Date().toISOString(),
  };
  await Deno.writeTextFile(`${stampPath}.tmp`, JSON.stringify(newStamp, null, 2) + "\n");
  await Deno.rename(`${stampPath}.tmp`, stampPath);
  log(
    `vm: built ${kernel} initramfs (${kver}, ${guestModules.length} modules, ` +
      `${(image.length / 1e6).toFixed(1)} MB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return {
    kernel,
    arch,
    package: pkg,
    version,
    kver,
    vmlinuz,
    vmlinux,
    initramfs,
    modules: guestModules,
    userland,
  };
}

/**
 * The pin apt's (signed) index offers today for `kernel`, in its architecture's index: the
 * concrete package behind the meta package, its candidate version, SHA-256 and size.
 */
export async function aptPin(kernel: KernelName): Promise<KernelPin> {
  const { pkg, version } = await aptResolve(kernel);
  const entry = await aptIndexEntry(kernel, pkg, version);
  if (!entry) {
    throw new VmError(
      `apt-cache show ${aptSpec(kernel, pkg, version)} lists no SHA256 and Size`,
      `${aptHint(kernel)} and retry`,
    );
  }
  return KernelPinSchema.parse({ package: pkg, version, ...entry });
}

/**
 * Moves the pins of `kernels` to the packages apt offers today (their SHA-256 from apt's
 * signed index), rewrites scripts/vm/kernels.json, and returns old and new pins. The caller
 * then downloads and verifies them (ensureImage) and runs the VM tests.
 */
export async function bumpPins(
  kernels: KernelName[],
): Promise<{ kernel: KernelName; old?: KernelPin; next: KernelPin }[]> {
  const file = JSON.parse(await Deno.readTextFile(PINS_URL)) as Record<string, unknown>;
  const out: { kernel: KernelName; old?: KernelPin; next: KernelPin }[] = [];
  for (const kernel of kernels) {
    const next = await aptPin(kernel);
    const old = KernelPinSchema.safeParse(file[kernel]);
    out.push({ kernel, old: old.success ? old.data : undefined, next });
    file[kernel] = next;
    pins[kernel] = next;
  }
  const ordered = Object.fromEntries(KERNEL_NAMES.map((k) => [k, file[k]]));
  await Deno.writeTextFile(PINS_URL, JSON.stringify(ordered, null, 2) + "\n");
  return out;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const rebuild = args.includes("--rebuild");
  const bump = args.includes("--bump");
  const names = args.filter((a) => !a.startsWith("--"));
  for (const k of names) {
    if (!isKernelName(k)) {
      console.error(`unknown kernel ${k} (known: ${KERNEL_NAMES.join(", ")})`);
      Deno.exit(2);
    }
  }
  const kernels = names.length > 0 ? names as KernelName[] : KERNEL_NAMES;
  try {
    if (bump) {
      for (const { kernel, old, next } of await bumpPins(kernels)) {
        const was = old ? `${old.package}=${old.version}` : "(none)";
        const now = `${next.package}=${next.version}`;
        console.log(`${kernel}: ${was === now ? `unchanged ${now}` : `${was} -> ${now}`}`);
      }
      console.log(`wrote ${PINS_FILE}; downloading and verifying the new pins`);
    }
    for (const k of kernels) {
      const img = await ensureImage(k, { rebuild });
      console.log(`${k}: ${img.package} ${img.version} kver=${img.kver}`);
      console.log(`  vmlinuz   ${img.vmlinuz}\n  initramfs ${img.initramfs}`);
    }
    if (bump) console.log("now run `deno test -A tests/vm/` and commit the pins file");
  } catch (e) {
    if (!(e instanceof VmError)) throw e;
    console.error(`images.ts: ${e.oneLine()}`);
    Deno.exit(1);
  }
}
