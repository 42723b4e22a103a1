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

/** The file name that dlopen accepts for the library (env override first). */
export function locateLibrary(spec: LibrarySpec): string {
  const override = Deno.env.get(spec.envVar);
  const candidates = override ? [override] : spec.sonames;
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      Deno.dlopen(path, {}).close();
      return path;
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

/** Opens the library with its whole symbol table bound now. */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
): Deno.DynamicLibrary<S> {
  return Deno.dlopen(locateLibrary(spec), symbols);
}

export interface LazyLibrary<S extends Deno.ForeignLibraryInterface> {
  symbols: Deno.DynamicLibrary<S>["symbols"];
  /** Locates the library now (throws LibraryError when it is missing). */
  ensure(): void;
}

/**
 * The library's symbols, each bound on first use. Binding a symbol costs Deno a dlsym plus
 * a call trampoline: opening libbpf's whole table took ~25 ms here, too much for the CNI
 * plugin, which runs once per pod and calls a handful of them.
 */
export function lazyLibrary<S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
): LazyLibrary<S> {
  let path: string | undefined;
  const ensure = () => {
    path ??= locateLibrary(spec);
  };
  // The handles must stay reachable: a collected DynamicLibrary frees its bindings, and a
  // call through a function bound from it then crashes the process.
  const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(symbols)) {
    Object.defineProperty(out, name, {
      configurable: true,
      enumerable: true,
      get() {
        ensure();
        const lib = Deno.dlopen(path!, { [name]: symbols[name] });
        handles.push(lib); // never closed: bound functions live as long as the process
        const fn = lib.symbols[name];
        Object.defineProperty(out, name, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return { symbols: out as Deno.DynamicLibrary<S>["symbols"], ensure };
}

/**
 * The address of a buffer, for a pointer field of a struct passed to C (0 for NULL). The
 * struct holds no reference: the caller keeps buf reachable until the call returns.
 */
export function addressOf(buf: BufferSource | null): bigint {
  return buf === null ? 0n : BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
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
