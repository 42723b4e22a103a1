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

/** The libraries located so far, open for as long as the process runs. */
const located: Deno.DynamicLibrary<Record<string, never>>[] = [];

/** The file name that dlopen accepts for the library (env override first). */
export function locateLibrary(spec: LibrarySpec): string {
  const override = Deno.env.get(spec.envVar);
  const candidates = override ? [override] : spec.sonames;
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      // Kept open: closing it unmapped the library (and libbpf's libelf and libz) only for
      // the first symbol bound from it to map them all again.
      located.push(Deno.dlopen(path, {}));
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

/**
 * The one byte passed by value as every bound function's last argument, which no C function
 * reads (see bindSymbol).
 */
const UNREAD = new Uint8Array(1);

/**
 * Binds one symbol of the library at `path`, without the fast-call trampoline Deno would
 * compile for it (Cranelift: ~0.15 ms a symbol, ~0.7 ms for a process's first, measured). V8
 * calls through that trampoline only from optimized code, which a plugin process living
 * ~20 ms never runs: it called every function through the slow path anyway (~0.4 us a call,
 * which is also what an optimized caller in the agent costs now, against ~0.25 us). Deno
 * compiles no trampoline for a function with a struct parameter, so the binding declares one
 * more parameter, a 1-byte struct, and every call passes UNREAD there: on x86-64 (System V)
 * and aarch64 (AAPCS64), the ABIs tsnproxy runs on, the caller owns the argument registers
 * and the stack it pushes, so a trailing argument the callee does not declare is never read.
 * Non-blocking symbols (run on a worker thread) get no trampoline either and are bound as
 * declared. The handle is kept in `handles`: a bound function lives as long as its handle.
 */
export function bindSymbol<F extends Deno.ForeignFunction>(
  path: string,
  name: string,
  def: F,
  handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[],
): Deno.StaticForeignSymbol<F> {
  if (def.nonblocking) {
    const lib = Deno.dlopen(path, { [name]: def } as Record<string, F>);
    handles.push(lib);
    return lib.symbols[name] as Deno.StaticForeignSymbol<F>;
  }
  const lean: Deno.ForeignFunction = {
    ...def,
    name: def.name ?? name,
    parameters: [...def.parameters, { struct: ["u8"] }],
  };
  const lib = Deno.dlopen(path, { [name]: lean });
  handles.push(lib);
  const raw = lib.symbols[name] as (...args: unknown[]) => unknown;
  return ((...args: unknown[]) => raw(...args, UNREAD)) as Deno.StaticForeignSymbol<F>;
}

export interface LazyLibrary<S extends Deno.ForeignLibraryInterface> {
  symbols: Deno.DynamicLibrary<S>["symbols"];
  /** Locates the library now (throws LibraryError when it is missing). */
  ensure(): void;
}

/**
 * The library's symbols, each bound on first use (bindSymbol). Bound eagerly with their fast-call
 * trampolines, libbpf's whole table took ~25 ms here, too much for the CNI plugin, which runs
 * once per pod and calls a handful of them.
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
        // never closed: bound functions live as long as the process
        const fn = bindSymbol(path!, name, symbols[name] as Deno.ForeignFunction, handles);
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
