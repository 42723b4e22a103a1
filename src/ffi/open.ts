/**
 * dlopen with a clear failure: which library, which file names were tried, how to install it
 * and which environment variable points tsnproxy at a copy elsewhere.
 */
import { LibraryError } from "../errors.ts";

export interface LibrarySpec {
  /** Human name, e.g. "libbpf". */
  name: string;
  /** sonames tried in order when the env override is not set. */
  sonames: readonly string[];
  /** Environment variable holding an explicit path (e.g. TSNPROXY_LIBBPF). */
  envVar: string;
  /** Debian package that ships it, for the hint. */
  debianPackage: string;
}

export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
): Deno.DynamicLibrary<S> {
  const override = Deno.env.get(spec.envVar);
  const candidates = override ? [override] : spec.sonames;
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      return Deno.dlopen(path, symbols);
    } catch (e) {
      failures.push(`${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  throw new LibraryError(
    `cannot load ${spec.name} (${failures.join("; ")})`,
    override
      ? `${spec.envVar}=${override} does not name a loadable ${spec.name}; point it at the library or unset it`
      : `install ${spec.debianPackage} (apt-get install ${spec.debianPackage}) or set ${spec.envVar} to the library's path`,
  );
}

/** Reads a NUL-terminated C string at ptr (null -> ""). */
export function cString(ptr: Deno.PointerValue): string {
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}

const encoder = new TextEncoder();
/** A NUL-terminated copy of s for "buffer" parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(s.length * 3 + 1);
  const { written } = encoder.encodeInto(s, b);
  return b.subarray(0, written + 1);
}
