/** Guest architectures of the VM harness, and apt names for them. */

/** Debian architectures the guests run: amd64 shares the host's /usr, arm64 has its own. */
export type GuestArch = "amd64" | "arm64";

/** The host's Debian architecture (the one apt resolves unqualified names for). */
export const HOST_ARCH: GuestArch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";

/** `pkg` or `pkg:arch` for another architecture than the host's. */
export function aptName(pkg: string, arch: GuestArch): string {
  return arch === HOST_ARCH ? pkg : `${pkg}:${arch}`;
}
