/**
 * Declarative C struct layouts for FFI. Each struct lists its fields with byte offsets and
 * types, and its total `size` as the C compiler computes it; tests/unit/structs_test.ts
 * compiles a C probe against the system headers and checks every offset and size here.
 */
export type FieldType = "u8" | "u16" | "u32" | "i32" | "u64" | "i64" | "ptr";
export type FieldSpec =
  | readonly [offset: number, type: FieldType]
  | readonly [
    offset: number,
    type: "bytes",
    length: number,
  ];

export interface StructLayout<F extends Record<string, FieldSpec>> {
  /** C struct name, for the probe (e.g. "struct bpf_tc_hook"). */
  readonly cName: string;
  /** Header(s) that declare it. */
  readonly headers: readonly string[];
  readonly size: number;
  readonly fields: F;
  /**
   * True when `size` is a prefix of the C struct: libbpf's versioned `*_opts` structs
   * carry their own size in `sz`, so we send only the fields this libbpf version knows
   * (1.1 on Debian 12) and newer ones still accept it. The probe then checks
   * offsetofend(last field) <= size instead of sizeof == size.
   */
  readonly prefix: boolean;
}

export function struct<F extends Record<string, FieldSpec>>(
  cName: string,
  headers: readonly string[],
  size: number,
  fields: F,
  opts: { prefix?: boolean } = {},
): StructLayout<F> {
  return { cName, headers, size, fields, prefix: opts.prefix ?? false };
}

type Value<S extends FieldSpec> = S[1] extends "u64" | "i64" | "ptr" ? bigint
  : S[1] extends "bytes" ? Uint8Array
  : number;
export type Values<F extends Record<string, FieldSpec>> = { [K in keyof F]: Value<F[K]> };

export function fieldSize(spec: FieldSpec): number {
  switch (spec[1]) {
    case "u8":
      return 1;
    case "u16":
      return 2;
    case "u32":
    case "i32":
      return 4;
    case "bytes":
      return spec[2];
    default:
      return 8;
  }
}

/** A zeroed buffer for the struct with the given fields written (little endian). */
export function encode<F extends Record<string, FieldSpec>>(
  layout: StructLayout<F>,
  values: Partial<Values<F>>,
  buf: Uint8Array<ArrayBuffer> = new Uint8Array(layout.size),
): Uint8Array<ArrayBuffer> {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const [name, v] of Object.entries(values)) {
    if (v === undefined) continue;
    const spec = layout.fields[name];
    writeField(dv, spec, v as number | bigint | Uint8Array, buf);
  }
  return buf;
}

function writeField(
  dv: DataView,
  spec: FieldSpec,
  v: number | bigint | Uint8Array,
  buf: Uint8Array,
) {
  const off = spec[0];
  switch (spec[1]) {
    case "u8":
      dv.setUint8(off, Number(v));
      break;
    case "u16":
      dv.setUint16(off, Number(v), true);
      break;
    case "u32":
      dv.setUint32(off, Number(v), true);
      break;
    case "i32":
      dv.setInt32(off, Number(v), true);
      break;
    case "u64":
    case "ptr":
      dv.setBigUint64(off, BigInt(v as number | bigint), true);
      break;
    case "i64":
      dv.setBigInt64(off, BigInt(v as number | bigint), true);
      break;
    case "bytes":
      buf.set((v as Uint8Array).subarray(0, spec[2]), off);
      break;
  }
}

export function decode<F extends Record<string, FieldSpec>>(
  layout: StructLayout<F>,
  buf: Uint8Array,
): Values<F> {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Record<string, number | bigint | Uint8Array> = {};
  for (const [name, spec] of Object.entries(layout.fields)) {
    const off = spec[0];
    switch (spec[1]) {
      case "u8":
        out[name] = dv.getUint8(off);
        break;
      case "u16":
        out[name] = dv.getUint16(off, true);
        break;
      case "u32":
        out[name] = dv.getUint32(off, true);
        break;
      case "i32":
        out[name] = dv.getInt32(off, true);
        break;
      case "u64":
      case "ptr":
        out[name] = dv.getBigUint64(off, true);
        break;
      case "i64":
        out[name] = dv.getBigInt64(off, true);
        break;
      case "bytes":
        out[name] = buf.slice(off, off + spec[2]);
        break;
    }
  }
  return out as Values<F>;
}
