/**
 * Which release loaded a live program. Every object carries a 64-byte global,
 * `tsnp_release` in its own section (.rodata.release), which the loader fills with this
 * build's version and objects hash before loading; any release can then read it back from
 * a program's maps, whoever loaded the program. Programs loaded by release 0.1.0, which had
 * no stamp, read as undefined.
 */
import { TSNP_RELEASE_LEN } from "../ffi/structs/datapath.ts";
import { closeFd, fdById, mapInfo, mapLookup, progMapIds } from "./sys.ts";

const PREFIX = "tsnproxy ";
const BPF_MAP_TYPE_ARRAY = 2;

/** The stamp for a version and objects hash: "tsnproxy 0.2.0 1a2b3c4d5e6f". */
export function releaseStamp(version: string, objectsSha256: string): string {
  return `${PREFIX}${version} ${objectsSha256.slice(0, 12)}`;
}

/** The stamp as the section's bytes (NUL padded). */
export function releaseBytes(stamp: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(TSNP_RELEASE_LEN);
  out.set(new TextEncoder().encode(stamp).subarray(0, TSNP_RELEASE_LEN - 1));
  return out;
}

export interface Release {
  version: string;
  /** The first 12 hex digits of the SHA-256 of the build's BPF objects. */
  objects: string;
}

/** Parses a stamp; undefined for anything else. */
export function parseRelease(text: string): Release | undefined {
  const m = /^tsnproxy (\S+) ([0-9a-f]{12})$/.exec(text);
  return m ? { version: m[1], objects: m[2] } : undefined;
}

/** The release that loaded the program behind fd, or undefined (0.1.0, or not ours). */
export function releaseOfProgram(progFd: number): Release | undefined {
  for (const id of progMapIds(progFd)) {
    const fd = fdById("map", id);
    if (fd < 0) continue;
    try {
      const info = mapInfo(fd);
      if (
        info.type !== BPF_MAP_TYPE_ARRAY || info.valueSize !== TSNP_RELEASE_LEN ||
        info.maxEntries !== 1 || info.keySize !== 4
      ) continue;
      const v = new Uint8Array(TSNP_RELEASE_LEN);
      if (mapLookup(fd, new Uint8Array(4), v) < 0) continue;
      const end = v.indexOf(0);
      const r = parseRelease(new TextDecoder().decode(v.subarray(0, end < 0 ? v.length : end)));
      if (r) return r;
    } finally {
      closeFd(fd);
    }
  }
  return undefined;
}

export function formatRelease(r: Release | undefined): string {
  return r ? `${r.version} (objects ${r.objects})` : "0.1.0 or earlier (no release stamp)";
}
