/**
 * Every failure tsnproxy reports is a TsnproxyError: a message naming the problem, a hint
 * naming the fix, and the CNI error code the spec wants when the failure surfaces through
 * `tsnproxy cni` (see https://www.cni.dev/docs/spec/#error).
 */

/**
 * CNI spec error codes (1-99 are reserved by the spec; 100+ are ours). The spec's table:
 * 4 is "invalid necessary environment variables", 7 "invalid network config".
 */
export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  PluginLimited: 51,
  /** tsnproxy: the node has not been set up by `tsnproxy install`. */
  NotInstalled: 100,
  /** tsnproxy: a kernel, BPF or netlink operation failed. */
  KernelFailure: 101,
  /** tsnproxy: a required C library could not be opened. */
  LibraryMissing: 102,
  /** tsnproxy: an interface or network namespace is not where the caller said. */
  NotFound: 103,
  /** tsnproxy: CHECK found the attachment missing or different from the config. */
  CheckFailed: 104,
} as const;
export type CniCodeValue = typeof CniCode[keyof typeof CniCode];

export class TsnproxyError extends Error {
  override name = "TsnproxyError";
  constructor(
    message: string,
    readonly hint: string,
    readonly code: CniCodeValue = CniCode.KernelFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  /** One line for humans: problem, then the fix. */
  oneLine(): string {
    return this.hint ? `${this.message} (fix: ${this.hint})` : this.message;
  }
}

/** A C library could not be opened (dlopen failed). */
export class LibraryError extends TsnproxyError {
  override name = "LibraryError";
  constructor(message: string, hint: string, options?: ErrorOptions) {
    super(message, hint, CniCode.LibraryMissing, options);
  }
}

/** A syscall, libbpf or libmnl call failed; carries the errno. */
export class KernelError extends TsnproxyError {
  override name = "KernelError";
  constructor(
    message: string,
    hint: string,
    readonly errno: number,
    options?: ErrorOptions,
  ) {
    super(message, hint, CniCode.KernelFailure, options);
  }
}

/** Configuration (CNI stdin, conflist, node YAML, flags) is invalid. */
export class ConfigError extends TsnproxyError {
  override name = "ConfigError";
  constructor(message: string, hint: string, code: CniCodeValue = CniCode.InvalidNetworkConfig) {
    super(message, hint, code);
  }
}

/**
 * The command line is wrong: a flag's value (or an environment variable tsnproxy reads) that
 * names nothing valid. The CLI exits 2 for it (src/exit_codes.ts), before changing anything.
 */
export class UsageError extends ConfigError {
  override name = "UsageError";
}

/** An interface, netns or pin that must exist does not. */
export class NotFoundError extends TsnproxyError {
  override name = "NotFoundError";
  constructor(message: string, hint: string, code: CniCodeValue = CniCode.NotFound) {
    super(message, hint, code);
  }
}

/** The node is not installed (pins missing). */
export class NotInstalledError extends TsnproxyError {
  override name = "NotInstalledError";
  constructor(
    message: string,
    hint = "run `tsnproxy install` on this node (or apply deploy/tsnproxy.yaml)",
  ) {
    super(message, hint, CniCode.NotInstalled);
  }
}

/** Wraps anything thrown into a TsnproxyError so callers print one shape. */
export function asTsnproxyError(e: unknown): TsnproxyError {
  if (e instanceof TsnproxyError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new TsnproxyError(
    msg,
    "this is a bug in tsnproxy: please report it with the log",
    CniCode.KernelFailure,
    {
      cause: e,
    },
  );
}
