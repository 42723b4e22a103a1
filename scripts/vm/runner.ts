/**
 * Runs a command inside a throw-away qemu guest booted from a Debian kernel (see images.ts),
 * under software emulation (TCG: the host's /dev/kvm cannot run stock kernels). The guest's
 * root is the host's /usr and /etc over 9p (read-only), so host binaries (deno, python3, tc,
 * libbpf.so.1, ...) run unchanged; an arm64 guest (qemu-system-aarch64, virt machine) gets an
 * arm64 userland instead (scripts/vm/userland.ts: libc, libbpf1, libmnl0, bash, busybox, the
 * arm64 deno). The checkout is shared read-write at its own path, so a test writes files the
 * host sees. /init prints start/exit markers with a per-run token on the
 * serial console; the exit code comes from the exit marker.
 *
 *   const r = await runVm({ kernel: "6.12", command: ["uname", "-r"] });
 *   r.exitCode  // the command's exit code; 124 on timeout; 125 when no exit marker came
 *   r.output    // what the command printed (stdout and stderr, interleaved)
 */
import { buildCpio, type CpioEntry, gzip } from "./cpio.ts";
import { VmError } from "./errors.ts";
import { ensureImage, type KernelImage, type KernelName, KERNELS, repoRoot } from "./images.ts";
import { GUEST_DENO } from "./userland.ts";

export type { KernelName } from "./images.ts";

/** Exit codes the runner itself produces (the command's own code otherwise). */
export const EXIT_TIMEOUT = 124;
export const EXIT_NO_MARKER = 125;

/** A host directory shared with the guest over 9p. */
export interface VmShare {
  hostPath: string;
  /** Where it appears in the guest (default: the same path). */
  guestPath?: string;
  readonly?: boolean;
}

export interface RunVmOptions {
  kernel: KernelName;
  /** argv to run (looked up in the guest's PATH = the host's /usr). */
  command?: string[];
  /** bash script text, as an alternative to `command`. */
  script?: string;
  /** Guest working directory (default: the checkout root). */
  cwd?: string;
  /** Extra environment; the guest starts from PATH, HOME=/root, TERM=dumb. */
  env?: Record<string, string>;
  /** Whole-run limit, boot included (default 120 s); exceeding it gives exitCode 124. */
  timeoutSec?: number;
  /** Boots retried when the guest dies before the command starts (default 2). */
  retries?: number;
  /** Stream the guest console (kernel messages included) to stderr; default: $TSNPROXY_VM_VERBOSE=1. */
  verbose?: boolean;
  /** Called with each chunk of console output (after "\r" removal). */
  onOutput?: (chunk: string) => void;
  /** More host directories to share; the checkout is always shared read-write. */
  shares?: VmShare[];
  memoryMb?: number;
  cpus?: number;
  /**
   * Emulated NICs to add, by qemu device model (e.g. "e1000e", an 82574L with a PTP hardware
   * clock). Each sits alone on its own qemu hub: no traffic leaves the guest.
   */
  nics?: string[];
}

export interface VmResult {
  exitCode: number;
  /** The command's output (between the start and exit markers). */
  output: string;
  /** The whole serial console of the last attempt. */
  console: string;
  /** Boots made (1 unless a guest died before the command started). */
  attempts: number;
  /** qemu start to the start marker, last attempt. */
  bootMs: number;
  /** Start marker to exit marker (or to the end), last attempt. */
  testMs: number;
  /** Everything, including image checks and retries. */
  totalMs: number;
  kernel: KernelName;
  kver: string;
}

/**
 * The deno the guest runs: the host's (tools/deno, from npm) from the shared checkout, or for
 * an arm64 guest the arm64 deno of its userland.
 */
export function denoPath(kernel?: KernelName): string {
  if (kernel && KERNELS[kernel].arch === "arm64") return GUEST_DENO;
  return `${repoRoot()}/tools/deno/node_modules/deno/deno`;
}

export interface DenoInVmOptions extends Omit<RunVmOptions, "command" | "script"> {
  /** Script to run, relative to the checkout (e.g. "tests/vm/guest/tsn_baseline.ts"). */
  file: string;
  args?: string[];
}

/**
 * Runs a TypeScript file with the host's deno inside the guest: `deno run -A --no-lock`
 * (no lockfile written into the shared checkout), NO_COLOR=1 for parseable output.
 */
export function runDenoInVm(opts: DenoInVmOptions): Promise<VmResult> {
  const { file, args = [], ...rest } = opts;
  return runVm({
    ...rest,
    command: [denoPath(opts.kernel), "run", "-A", "--no-lock", file, ...args],
    env: { NO_COLOR: "1", ...opts.env },
  });
}

/** Single-quotes a word for bash. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

const APPEND = ["quiet", "loglevel=3", "panic=-1", "oops=panic", "rdinit=/init", "mitigations=off"];

/** qemu binary, machine and kernel command line per guest architecture. */
const MACHINE = {
  amd64: {
    qemu: "qemu-system-x86_64",
    args: ["-cpu", "max"],
    append: ["console=ttyS0", "tsc=reliable", "no_timer_check", "i8042.noaux", "i8042.nokbd"]
      .concat(["i8042.nopnp"]),
    pkg: "qemu-system-x86",
  },
  arm64: {
    qemu: "qemu-system-aarch64",
    // Pointer authentication with QEMU's own cheap algorithm: the architected QARMA one costs
    // TCG a lot on every function return of a kernel built with it.
    args: ["-machine", "virt", "-cpu", "max,pauth-impdef=on"],
    append: ["console=ttyAMA0"],
    pkg: "qemu-system-arm",
  },
} as const;

function runScript(opts: RunVmOptions, cwd: string): string {
  const lines = ["# generated by scripts/vm/runner.ts", `cd ${shellQuote(cwd)} || exit 126`];
  lines.push(`export TSNPROXY_VM_KERNEL=${shellQuote(opts.kernel)} DENO_NO_UPDATE_CHECK=1`);
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new VmError(`bad environment variable name ${JSON.stringify(k)}`, "use [A-Za-z0-9_]");
    }
    lines.push(`export ${k}=${shellQuote(v)}`);
  }
  if (opts.command && opts.command.length > 0) {
    lines.push(`exec ${opts.command.map(shellQuote).join(" ")}`);
  } else {
    lines.push(`exec /bin/bash /tsnvm/script.sh`);
  }
  return lines.join("\n") + "\n";
}

interface Attempt {
  console: string;
  exitCode: number | undefined;
  started: boolean;
  timedOut: boolean;
  bootMs: number;
  testMs: number;
}

async function bootOnce(
  image: KernelImage,
  initrd: string,
  shares: { tag: string; hostPath: string; readonly: boolean }[],
  token: string,
  opts: RunVmOptions,
  deadline: number,
): Promise<Attempt> {
  const machine = MACHINE[image.arch];
  const args = [
    "-accel",
    "tcg,thread=single,tb-size=256",
    ...machine.args,
    "-m",
    String(opts.memoryMb ?? 1024),
    "-smp",
    String(opts.cpus ?? 2),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
    "-kernel",
    image.vmlinux ?? image.vmlinuz,
    "-initrd",
    initrd,
    "-append",
    [...machine.append, ...APPEND].join(" "),
  ];
  (opts.nics ?? []).forEach((model, i) => {
    args.push("-netdev", `hubport,id=nic${i},hubid=${i}`, "-device", `${model},netdev=nic${i}`);
  });
  const p9 = "security_model=none,multidevs=remap";
  for (const s of shares) {
    args.push(
      "-virtfs",
      `local,path=${s.hostPath},mount_tag=${s.tag},${p9}${s.readonly ? ",readonly=on" : ""}`,
    );
  }

  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(machine.qemu, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new VmError(`${machine.qemu} is not installed`, `apt-get install ${machine.pkg}`, {
        cause: e,
      });
    }
    throw e;
  }

  const t0 = performance.now();
  let tStart = 0;
  let tEnd = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, Math.max(1, deadline - performance.now()));

  const startMarker = `===TSNVM-START ${token}===`;
  const exitRe = new RegExp(`===TSNVM-EXIT ${token} (\\d+)===`);
  let consoleText = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>, isStderr: boolean) => {
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true }).replaceAll("\r", "");
      consoleText += isStderr ? `[qemu] ${text}` : text;
      if (!tStart && consoleText.includes(startMarker)) tStart = performance.now();
      if (!tEnd && exitRe.test(consoleText)) tEnd = performance.now();
      if (opts.verbose) await Deno.stderr.write(new TextEncoder().encode(text));
      opts.onOutput?.(text);
    }
  };
  await Promise.all([pump(child.stdout, false), pump(child.stderr, true)]);
  await child.status;
  clearTimeout(timer);
  const tDone = performance.now();

  const m = consoleText.match(exitRe);
  return {
    console: consoleText,
    exitCode: m ? Number(m[1]) : undefined,
    started: consoleText.includes(startMarker),
    timedOut,
    bootMs: (tStart || tDone) - t0,
    testMs: tStart ? (tEnd || tDone) - tStart : 0,
  };
}

/** The command's output: between the start marker line and the exit marker. */
function commandOutput(consoleText: string, token: string): string {
  const start = consoleText.indexOf(`===TSNVM-START ${token}===`);
  if (start < 0) return "";
  const body = consoleText.slice(consoleText.indexOf("\n", start) + 1);
  const end = body.search(new RegExp(`\\n?===TSNVM-EXIT ${token} \\d+===`));
  return end < 0 ? body : body.slice(0, end);
}

/** Boots `opts.kernel`, runs the command, powers off; see the module comment. */
export async function runVm(opts: RunVmOptions): Promise<VmResult> {
  const t0 = performance.now();
  if ((!opts.command || opts.command.length === 0) && opts.script === undefined) {
    throw new VmError("runVm needs a command or a script", "pass command: [...] or script: '...'");
  }
  opts = { ...opts, verbose: opts.verbose ?? Deno.env.get("TSNPROXY_VM_VERBOSE") === "1" };
  const image = await ensureImage(opts.kernel);
  const root = repoRoot();
  const cwd = opts.cwd ?? root;
  const token = crypto.randomUUID().replaceAll("-", "").slice(0, 16);

  const shares = [
    { tag: "hostusr", hostPath: image.userland?.usr ?? "/usr", readonly: true, guestPath: "" },
    { tag: "hostetc", hostPath: image.userland?.etc ?? "/etc", readonly: true, guestPath: "" },
    { tag: "checkout", hostPath: root, readonly: false, guestPath: root },
    ...(opts.shares ?? []).map((s, i) => ({
      tag: `share${i}`,
      hostPath: s.hostPath,
      readonly: s.readonly ?? false,
      guestPath: s.guestPath ?? s.hostPath,
    })),
  ];
  const mounts = shares.filter((s) => s.guestPath !== "")
    .map((s) => `${s.tag} ${s.guestPath} ${s.readonly ? "ro" : "rw"}`).join("\n") + "\n";

  const enc = new TextEncoder();
  const entries: CpioEntry[] = [
    { kind: "file", path: "tsnvm/token", data: enc.encode(token + "\n") },
    { kind: "file", path: "tsnvm/mounts", data: enc.encode(mounts) },
    { kind: "file", path: "tsnvm/run.sh", data: enc.encode(runScript(opts, cwd)), mode: 0o755 },
  ];
  if (opts.script !== undefined) {
    entries.push({ kind: "file", path: "tsnvm/script.sh", data: enc.encode(opts.script) });
  }
  // The kernel unpacks concatenated archives into the same rootfs: base image + this run's.
  const runArchive = await gzip(buildCpio(entries));
  const base = await Deno.readFile(image.initramfs);
  const initrd = await Deno.makeTempFile({ prefix: "tsnvm-initrd-" });
  const both = new Uint8Array(base.length + runArchive.length);
  both.set(base);
  both.set(runArchive, base.length);
  await Deno.writeFile(initrd, both);

  const timeoutMs = (opts.timeoutSec ?? 120) * 1000;
  const deadline = performance.now() + timeoutMs;
  const retries = opts.retries ?? 2;
  let attempt: Attempt | undefined;
  let attempts = 0;
  try {
    for (; attempts <= retries;) {
      attempts++;
      attempt = await bootOnce(image, initrd, shares, token, opts, deadline);
      if (attempt.started || attempt.timedOut || attempt.exitCode !== undefined) break;
      const why = attempt.console.split("\n").filter((l) => /Oops|panic|BUG|\[qemu\]/.test(l))
        .slice(0, 3).join(" | ");
      console.error(
        `vm: ${opts.kernel} guest died before the command started (try ${attempts})${
          why ? `: ${why}` : ""
        }`,
      );
    }
  } finally {
    await Deno.remove(initrd).catch(() => {});
  }
  const a = attempt!;
  let exitCode: number;
  if (a.exitCode !== undefined) exitCode = a.exitCode;
  else if (a.timedOut) exitCode = EXIT_TIMEOUT;
  else exitCode = EXIT_NO_MARKER;
  if (a.exitCode === undefined && !opts.verbose) {
    const what = a.timedOut ? `timeout after ${timeoutMs / 1000} s` : "no exit marker";
    const tail = a.console.trimEnd().split("\n").slice(-30).join("\n");
    console.error(`vm: ${opts.kernel}: ${what}; last console lines:\n${tail}`);
  }
  return {
    exitCode,
    output: commandOutput(a.console, token),
    console: a.console,
    attempts,
    bootMs: Math.round(a.bootMs),
    testMs: Math.round(a.testMs),
    totalMs: Math.round(performance.now() - t0),
    kernel: opts.kernel,
    kver: image.kver,
  };
}

/**
 * Lines a guest program prints as `TSNVM-JSON <tag> <json>` (see tests/vm/guest/report.ts),
 * parsed; the last one with `tag` wins. Throws when there is none.
 */
export function guestJson<T>(output: string, tag: string): T {
  const prefix = `TSNVM-JSON ${tag} `;
  const line = output.split("\n").filter((l) => l.startsWith(prefix)).pop();
  if (line === undefined) {
    throw new VmError(`the guest printed no ${tag} result`, "see the guest output above");
  }
  return JSON.parse(line.slice(prefix.length)) as T;
}
