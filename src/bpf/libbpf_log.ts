/**
 * Captures libbpf's log (including the verifier log on a failed load) instead of letting
 * it reach stderr, so errors can quote it and the CNI plugin's stderr stays clean.
 */
import { libc } from "../ffi/libc.ts";
import { libbpf } from "../ffi/libbpf.ts";

const LEVELS = ["warn", "info", "debug"] as const;
const lines: string[] = [];
/** libbpf prints a failed load's verifier log in one message: room for all of it (its tail
 * says why), allocated on the first message, not by every process that imports this. */
const BUF_SIZE = 1 << 20;
let buf: Uint8Array<ArrayBuffer> | undefined;
const decoder = new TextDecoder();
let callback:
  | Deno.UnsafeCallback<{ parameters: ["i32", "pointer", "pointer"]; result: "i32" }>
  | undefined;

/** Routes libbpf's printing into an in-memory buffer (debug messages dropped); idempotent. */
export function captureLibbpfLog(): void {
  callback ??= new Deno.UnsafeCallback(
    { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const,
    (level, fmt, args) => {
      if (level > 1 && !Deno.env.get("TSNPROXY_LIBBPF_DEBUG")) return 0;
      // va_list is a pointer on x86_64/aarch64: vsnprintf formats it for us.
      buf ??= new Uint8Array(BUF_SIZE);
      const n = libc().vsnprintf(buf, BigInt(buf.length), fmt, args);
      const text = decoder.decode(buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))));
      lines.push(`libbpf ${LEVELS[level] ?? level}: ${text.trimEnd()}`);
      if (lines.length > 400) lines.splice(0, lines.length - 400);
      return 0;
    },
  );
  // Again on every call: the CNI verbs turn the printer off (the agent runs them too).
  libbpf().libbpf_set_print(callback.pointer);
}

/** Takes the captured lines (and clears them). */
export function drainLibbpfLog(): string[] {
  return lines.splice(0, lines.length);
}

/** The last lines of the log, for an error message. */
export function libbpfLogTail(n = 25): string {
  const all = drainLibbpfLog();
  return all.slice(-n).join("\n");
}
