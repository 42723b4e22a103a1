/**
 * A minimal writer for the "newc" cpio format the Linux kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Deterministic: inode numbers
 * are assigned in order, mtimes are 0, so the same inputs give the same bytes.
 */

export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "char"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const encoder = new TextEncoder();

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Archive paths are relative ("bin/busybox"); a leading "/" or "./" is dropped. */
function normalize(path: string): string {
  return path.replace(/^\.?\/+/, "").replace(/\/+$/, "");
}

/**
 * Builds a newc archive. Parent directories missing from `entries` are added first (the
 * kernel creates files with open(O_CREAT), which needs the parent to exist).
 */
export function buildCpio(entries: readonly CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  const seen = new Set<string>();
  let ino = 1;

  const push = (
    name: string,
    mode: number,
    data: Uint8Array,
    nlink: number,
    rdev: [number, number] = [0, 0],
  ) => {
    const nameBytes = encoder.encode(name + "\0");
    const header = "070701" +
      [
        ino++,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.length,
        0, // devmajor
        0, // devminor
        rdev[0],
        rdev[1],
        nameBytes.length,
        0, // check
      ].map(hex8).join("");
    chunks.push(encoder.encode(header), nameBytes, new Uint8Array(pad4(110 + nameBytes.length)));
    if (data.length > 0) chunks.push(data, new Uint8Array(pad4(data.length)));
  };

  const ensureParents = (path: string) => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!seen.has(dir)) {
        seen.add(dir);
        push(dir, S_IFDIR | 0o755, new Uint8Array(0), 2);
      }
    }
  };

  for (const e of entries) {
    const path = normalize(e.path);
    if (path === "" || seen.has(path)) continue;
    ensureParents(path);
    seen.add(path);
    switch (e.kind) {
      case "dir":
        push(path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0), 2);
        break;
      case "file":
        push(path, S_IFREG | (e.mode ?? 0o644), e.data, 1);
        break;
      case "symlink":
        push(path, S_IFLNK | 0o777, encoder.encode(e.target), 1);
        break;
      case "char":
        push(path, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(0), 1, [e.major, e.minor]);
        break;
    }
  }
  push("TRAILER!!!", 0, new Uint8Array(0), 1);

  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** gzip, which every Debian kernel can unpack an initramfs from. */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
