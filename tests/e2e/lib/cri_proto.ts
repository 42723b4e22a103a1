/**
 * The CRI runtime.v1 protobuf descriptors, taken from the containerd binary under test.
 *
 * Go protobuf registers every compiled .proto as a gzipped FileDescriptorProto inside the
 * binary. containerd 1.6 embeds k8s.io/cri-api's runtime.v1 `api.proto` together with its
 * dependencies `gogo.proto` and `descriptor.proto`, so the exact API the daemon serves can be
 * recovered without crictl or a copy of the .proto files: scan for gzip member headers,
 * inflate each one, and keep the three files we need. The result is cached, keyed on the
 * binary's size/mtime/inode, because scanning 48 MB costs about half a second.
 */
import { constants as zc, gunzipSync } from "node:zlib";
import { Buffer } from "node:buffer";
import { cacheDir, exists, fileStamp, writeFileAtomic } from "./proc.ts";

/** (file name, proto package) of the descriptors we need, in dependency order. */
const WANTED: ReadonlyArray<readonly [string, string]> = [
  ["descriptor.proto", "google.protobuf"],
  ["gogo.proto", "gogoproto"],
  ["api.proto", "runtime.v1"],
];

/** Go's compress/gzip header as the protobuf registry writes it: no mtime, no flags. */
const GZIP_HEADER = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00];

/** Read a protobuf varint at `pos`; returns [value, next position]. */
function varint(buf: Uint8Array, pos: number): [number, number] {
  let v = 0;
  let shift = 0;
  for (;;) {
    const b = buf[pos++];
    v += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [v, pos];
    shift += 7;
  }
}

function encodeVarint(n: number): number[] {
  const out: number[] = [];
  while (n > 127) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/**
 * Name (field 1) and package (field 2) of a serialized FileDescriptorProto, or undefined if the
 * bytes do not start that way.
 */
function nameAndPackage(raw: Uint8Array): [string, string] | undefined {
  const dec = new TextDecoder();
  if (raw[0] !== 0x0a) return undefined;
  const [nlen, p1] = varint(raw, 1);
  const name = dec.decode(raw.subarray(p1, p1 + nlen));
  let pkg = "";
  if (raw[p1 + nlen] === 0x12) {
    const [plen, p2] = varint(raw, p1 + nlen + 1);
    pkg = dec.decode(raw.subarray(p2, p2 + plen));
  }
  return [name, pkg];
}

/** Scan a Go binary for the wanted gzipped FileDescriptorProtos. */
export function extractDescriptors(binary: Uint8Array): Map<string, Uint8Array> {
  const found = new Map<string, Uint8Array>();
  const want = new Set(WANTED.map(([n, p]) => `${n}|${p}`));
  const buf = Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength);
  let i = 0;
  const first = Buffer.from(GZIP_HEADER);
  while (found.size < want.size) {
    i = buf.indexOf(first, i);
    if (i < 0) break;
    try {
      // Members are followed by other data: SYNC_FLUSH tolerates a slice that ends mid-stream
      // and trailing bytes after the member are ignored.
      const raw = gunzipSync(buf.subarray(i, i + 1_000_000), { finishFlush: zc.Z_SYNC_FLUSH });
      const np = nameAndPackage(raw);
      if (np && want.has(`${np[0]}|${np[1]}`)) found.set(`${np[0]}|${np[1]}`, new Uint8Array(raw));
    } catch {
      // Not a gzip member after all.
    }
    i += 1;
  }
  return found;
}

/**
 * A serialized FileDescriptorSet { repeated FileDescriptorProto file = 1 } holding runtime.v1
 * api.proto and its dependencies, from `containerdPath` (cached).
 */
export async function criDescriptorSet(containerdPath = "/usr/bin/containerd"): Promise<Buffer> {
  const stamp = await fileStamp(containerdPath);
  const cached = `${await cacheDir()}/cri-runtime-v1-${stamp}.desc`;
  if (await exists(cached)) return Buffer.from(await Deno.readFile(cached));
  const found = extractDescriptors(await Deno.readFile(containerdPath));
  const parts: Uint8Array[] = [];
  for (const [name, pkg] of WANTED) {
    const fd = found.get(`${name}|${pkg}`);
    if (!fd) {
      throw new Error(
        `${containerdPath} has no embedded ${name} (package ${pkg}): not a containerd with the ` +
          "CRI runtime.v1 API (containerd >= 1.6 needed)",
      );
    }
    parts.push(new Uint8Array([0x0a, ...encodeVarint(fd.length)]), fd);
  }
  const set = Buffer.concat(parts);
  await writeFileAtomic(cached, set);
  return set;
}
