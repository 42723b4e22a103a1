/** What `tsnproxy version` reports, and what doctor compares with the installed binary. */
import { OBJECTS_SHA256 } from "./bpf/objects.ts";
import { VERSION } from "./version.ts";

export interface VersionInfo {
  version: string;
  /** SHA-256 of the embedded BPF objects: identifies the datapath build. */
  bpfObjectsSha256: string;
  deno: string;
  /** True in the `deno compile`d binary, false under `deno run`. */
  compiled: boolean;
}

export function versionInfo(): VersionInfo {
  return {
    version: VERSION,
    bpfObjectsSha256: OBJECTS_SHA256,
    deno: Deno.version.deno,
    compiled: isCompiled(),
  };
}

/** deno compile runs the embedded graph from a virtual file system rooted in a temp dir. */
export function isCompiled(): boolean {
  return !/\bdeno$/.test(Deno.execPath()) || import.meta.url.includes("/deno-compile-");
}
