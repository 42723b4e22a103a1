/**
 * A guest userland for a foreign architecture (arm64): amd64 guests share the host's /usr, an
 * arm64 guest cannot run those binaries. This unpacks Debian's arm64 packages (apt-get download
 * + dpkg-deb -x, never installed; apt verifies each .deb against the signed archive's SHA-256)
 * into <cache>/userland/<arch>/<hash>/{usr,etc}: libc, libbpf1, libmnl0 and libelf1 for the
 * datapath, bash for /init's run script, busybox-static (also the initramfs's /bin/busybox and
 * the small tools tests use), iproute2 (ip, tc) for test topologies, and the Deno runtime for
 * that architecture from the npm registry (@deno/linux-<arch>-glibc at tools/deno/package.json's
 * version; `npm pack` checks the registry's integrity hash). The guest mounts usr/ and etc/
 * over 9p where an amd64 guest mounts the host's.
 */
import { VmError } from "./errors.ts";
import { aptName, type GuestArch } from "./arch.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Debian packages of the userland, by name (the candidate version apt knows). */
export const USERLAND_PACKAGES = [
  "libc6",
  "libgcc-s1",
  "libbpf1",
  "libelf1",
  "zlib1g",
  "libmnl0",
  "bash",
  "libtinfo6",
  "busybox-static",
  // iproute2 (ip, tc) and the libraries they link beyond the ones above: the arm64 guest builds
  // a pod -> node -> TSN NIC topology (netns, veth pairs, a prio qdisc) to run real packets
  // through save, admit and restore (busybox's ip cannot make a veth or a netns).
  "iproute2",
  "libbsd0",
  "libmd0",
  "libcap2",
  "libxtables12",
  // The arm64 kernel headers: tests compile the BPF objects against them to show they are the
  // same bytes as the amd64 build (no architecture-specific header changes them).
  "linux-libc-dev",
] as const;

const NPM_DENO: Record<GuestArch, string> = {
  amd64: "@deno/linux-x64-glibc",
  arm64: "@deno/linux-arm64-glibc",
};
/** Where the guest finds deno (inside the shared usr/). */
export const GUEST_DENO = "/usr/local/bin/deno";
/** Bump when the layout changes in a way the inputs do not capture. */
const FORMAT = 1;

export interface Userland {
  arch: GuestArch;
  /** Host directories shared as the guest's /usr and /etc. */
  usr: string;
  etc: string;
  /** The static busybox for this architecture (the initramfs's /bin/busybox). */
  busybox: string;
  /** Deno version in usr/local/bin/deno. */
  deno: string;
}

async function tool(cmd: string, args: string[], cwd: string, hint: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, cwd, stdin: "null" }).output();
  } catch (e) {
    throw new VmError(`${cmd} is not installed`, hint, { cause: e });
  }
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("; ");
    throw new VmError(`${cmd} ${args.join(" ")} failed (exit ${out.code}): ${err}`, hint);
  }
  return new TextDecoder().decode(out.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function denoVersion(): string {
  const pkg = JSON.parse(Deno.readTextFileSync(`${REPO}/tools/deno/package.json`));
  const v = pkg.dependencies?.deno;
  if (typeof v !== "string" || !/^\d+\.\d+\.\d+$/.test(v)) {
    throw new VmError(`tools/deno/package.json pins no exact deno version (${v})`, "pin it");
  }
  return v;
}

/** Candidate versions of the packages, resolved by apt-cache (the inputs' identity). */
async function resolve(arch: GuestArch, hint: string): Promise<string[]> {
  const names = USERLAND_PACKAGES.map((p) => aptName(p, arch));
  const policy = await tool("apt-cache", ["policy", ...names], "/", hint);
  const out: string[] = [];
  for (const name of names) {
    const at = policy.indexOf(`${name}:`);
    const v = at < 0 ? undefined : /Candidate:\s+(\S+)/.exec(policy.slice(at))?.[1];
    if (!v || v === "(none)") throw new VmError(`apt knows no ${name}`, hint);
    out.push(`${name}=${v}`);
  }
  return out;
}

/**
 * Moves a package tree's /bin, /sbin, /lib into usr/ (Debian 12's merged /usr; the packages
 * still ship some files at the top level).
 */
async function mergeUsr(root: string): Promise<void> {
  for (const d of ["bin", "sbin", "lib"]) {
    const top = `${root}/${d}`;
    if (!await exists(top)) continue;
    await tool("cp", ["-a", "--", `${top}/.`, `${root}/usr/${d}/`], "/", "install coreutils");
    await Deno.remove(top, { recursive: true });
  }
}

/** Returns the userland for `arch`, building it once per set of inputs. */
export async function ensureUserland(
  arch: GuestArch,
  cache: string,
  log: (line: string) => void,
): Promise<Userland> {
  const hint =
    `run \`dpkg --add-architecture ${arch} && apt-get update\` (scripts/setup.sh does) and check access to the npm registry`;
  const deno = denoVersion();
  const pkgs = await resolve(arch, hint);
  const idBytes = new TextEncoder().encode([`format ${FORMAT}`, arch, deno, ...pkgs].join("\n"));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", idBytes));
  const id = Array.from(digest.subarray(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  const dir = `${cache}/userland/${arch}/${id}`;
  const result: Userland = {
    arch,
    usr: `${dir}/usr`,
    etc: `${dir}/etc`,
    busybox: `${dir}/usr/bin/busybox`,
    deno,
  };
  if (await exists(`${dir}/.complete`)) return result;

  const tmp = `${cache}/tmp/userland-${arch}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(`${tmp}/debs`, { recursive: true });
  try {
    const t0 = performance.now();
    log(`vm: downloading the ${arch} userland (${pkgs.length} packages, deno ${deno})`);
    await tool("apt-get", ["download", "-q", ...pkgs], `${tmp}/debs`, hint);
    const root = `${tmp}/root`;
    for await (const e of Deno.readDir(`${tmp}/debs`)) {
      if (e.name.endsWith(".deb")) {
        await tool("dpkg-deb", ["-x", `${tmp}/debs/${e.name}`, root], "/", "install dpkg");
      }
    }
    await mergeUsr(root);
    // busybox's applets for what bash scripts and /init use beyond bash itself.
    for (const a of ["env", "sh", "cat", "ls", "mkdir", "rm", "sleep", "uname", "mount", "ip"]) {
      const link = `${root}/usr/bin/${a}`;
      if (!await exists(link)) await Deno.symlink("busybox", link);
    }
    await Deno.mkdir(`${root}/etc`, { recursive: true });
    await Deno.writeTextFile(`${root}/etc/passwd`, "root:x:0:0:root:/root:/bin/bash\n");
    await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\n");
    // The Deno runtime for the guest's architecture, from the npm registry.
    await Deno.mkdir(`${tmp}/npm`);
    const tgz = (await tool(
      "npm",
      ["pack", "--silent", `${NPM_DENO[arch]}@${deno}`],
      `${tmp}/npm`,
      hint,
    )).trim().split("\n").pop()!;
    await tool("tar", ["-xzf", tgz], `${tmp}/npm`, "install tar");
    await Deno.mkdir(`${root}/usr/local/bin`, { recursive: true });
    await Deno.rename(`${tmp}/npm/package/deno`, `${root}/usr/local/bin/deno`);
    await Deno.chmod(`${root}/usr/local/bin/deno`, 0o755);
    await Deno.writeTextFile(`${root}/.complete`, pkgs.join("\n") + `\ndeno ${deno}\n`);
    await Deno.mkdir(`${cache}/userland/${arch}`, { recursive: true });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(root, dir);
    log(`vm: ${arch} userland ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return result;
}
