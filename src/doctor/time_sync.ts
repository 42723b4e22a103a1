/**
 * Which time daemons run on the node and which clocks they steer, read from /proc/<pid>/cmdline
 * and the config files those command lines name (read through /proc/<pid>/root, so a daemon in
 * a container is read in its own file system): ptp4l (linuxptp) disciplines a NIC's PTP
 * hardware clock, phc2sys copies it to CLOCK_REALTIME, chronyd can do that with a PHC refclock.
 *
 * What is matched (linuxptp 3.x/4.x, chrony 4.x):
 * - ptp4l: `-i IFACE` (repeatable), interface sections (`[eth0]`) of `-f FILE`, time stamping
 *   from `-H`/`-S`/`-L`, `--time_stamping X` or the file's `time_stamping`, `-p /dev/ptpN`.
 * - phc2sys: `-s SRC`/`-i SRC`, `-c DST` (default CLOCK_REALTIME), `-a` with `-r`, `-w`, `-O`.
 * - chronyd: `refclock PHC /dev/ptpN` lines of `-f FILE` (default /etc/chrony/chrony.conf or
 *   /etc/chrony.conf), following `include` and `confdir`/`sourcedir` one level; `-x` (does not
 *   steer the clock); `leapsectz`.
 * Interface names resolve to PHCs in the daemon's own network namespace (the caller does that).
 */
import { readOr } from "./probe.ts";

/** A running process of interest. */
export interface DaemonProcess {
  pid: number;
  argv: string[];
}

/** The processes whose program (argv[0]'s base name or comm) is one of `names`. */
export function findProcesses(names: readonly string[], proc = "/proc"): DaemonProcess[] {
  const out: DaemonProcess[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(proc)];
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e.name)) continue;
    let raw: string;
    try {
      raw = Deno.readTextFileSync(`${proc}/${e.name}/cmdline`);
    } catch {
      continue; // exited meanwhile
    }
    const argv = raw.split("\0");
    if (argv.at(-1) === "") argv.pop();
    if (argv.length === 0) continue; // kernel thread
    const base = argv[0].slice(argv[0].lastIndexOf("/") + 1);
    if (names.includes(base)) out.push({ pid: Number(e.name), argv });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** A path as the process sees it (its root and working directory), from outside. */
export function procPath(pid: number, path: string, proc = "/proc"): string {
  return path.startsWith("/") ? `${proc}/${pid}/root${path}` : `${proc}/${pid}/cwd/${path}`;
}

/**
 * getopt(3)-style parse: short options (clustered, value attached or next), and `--name value`
 * / `--name=value` long options (linuxptp's long options all take a value).
 */
export function parseArgs(
  argv: readonly string[],
  withValue: string,
): { short: [string, string | true][]; long: Map<string, string> } {
  const short: [string, string | true][] = [];
  const long = new Map<string, string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--") && a.length > 2) {
      const eq = a.indexOf("=");
      if (eq > 0) long.set(a.slice(2, eq), a.slice(eq + 1));
      else long.set(a.slice(2), argv[++i] ?? "");
      continue;
    }
    if (!a.startsWith("-") || a === "-") continue;
    for (let j = 1; j < a.length; j++) {
      const c = a[j];
      if (withValue.includes(c)) {
        const v = j + 1 < a.length ? a.slice(j + 1) : argv[++i] ?? "";
        short.push([c, v]);
        break;
      }
      short.push([c, true]);
    }
  }
  return { short, long };
}

/** linuxptp's config file: `[section]` headers and `key value` lines; # starts a comment. */
export function parseLinuxptpConfig(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let section = "global";
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (!line) continue;
    const head = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (head) {
      section = head[1];
      if (!out.has(section)) out.set(section, new Map());
      continue;
    }
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    if (!out.has(section)) out.set(section, new Map());
    out.get(section)!.set(m[1], m[2].trim());
  }
  return out;
}

/** Config sections that are not network interfaces. */
const NOT_INTERFACES = new Set(["global", "unicast_master_table", "nmea"]);

export type StampMode = "hardware" | "software" | "legacy" | "onestep" | "p2p1step";

export interface Ptp4lView {
  pid: number;
  /** Interfaces and where each came from ("-i" or "<config file> [section]"). */
  interfaces: { name: string; from: string }[];
  timeStamping: StampMode | string;
  /** `-p /dev/ptpN` / --phc_index: the clock it was told to use instead of the ports'. */
  clockDevice?: string;
  configFile?: string;
  /** The config file named by -f could not be read (its interfaces are unknown). */
  configUnreadable?: boolean;
  /** --free_running 1 / free_running 1: it never adjusts its clock. */
  freeRunning: boolean;
  cmdline: string;
}

/** What a ptp4l command line (and its config file, read by `read`) says it runs on. */
export function ptp4lView(
  p: DaemonProcess,
  read: (path: string) => string | undefined = (path) => readOr(procPath(p.pid, path)),
): Ptp4lView {
  const { short, long } = parseArgs(p.argv, "fipl");
  const view: Ptp4lView = {
    pid: p.pid,
    interfaces: [],
    timeStamping: "hardware",
    freeRunning: false,
    cmdline: p.argv.join(" "),
  };
  const configFile = short.filter(([o]) => o === "f").map(([, v]) => String(v)).pop();
  let global = new Map<string, string>();
  if (configFile !== undefined) {
    view.configFile = configFile;
    const text = read(configFile);
    if (text === undefined) view.configUnreadable = true;
    else {
      const cfg = parseLinuxptpConfig(text);
      global = cfg.get("global") ?? global;
      for (const s of cfg.keys()) {
        if (!NOT_INTERFACES.has(s)) {
          view.interfaces.push({ name: s, from: `${configFile} [${s}]` });
        }
      }
    }
  }
  if (global.has("time_stamping")) view.timeStamping = global.get("time_stamping")!;
  if (global.get("free_running") === "1") view.freeRunning = true;
  for (const [o, v] of short) {
    if (o === "i" && typeof v === "string" && !view.interfaces.some((x) => x.name === v)) {
      view.interfaces.push({ name: v, from: "-i" });
    }
    if (o === "H") view.timeStamping = "hardware";
    if (o === "S") view.timeStamping = "software";
    if (o === "L") view.timeStamping = "legacy";
    if (o === "p" && typeof v === "string") view.clockDevice = v;
  }
  if (long.has("time_stamping")) view.timeStamping = long.get("time_stamping")!;
  if (long.has("free_running")) view.freeRunning = long.get("free_running") === "1";
  const phcIndex = long.get("phc_index") ?? global.get("phc_index");
  if (phcIndex !== undefined && /^\d+$/.test(phcIndex)) view.clockDevice = `/dev/ptp${phcIndex}`;
  return view;
}

/** A clock as phc2sys names it: the system clock, a PHC device, or an interface's PHC. */
export type ClockName =
  | { kind: "realtime" }
  | { kind: "device"; path: string }
  | { kind: "interface"; name: string };

export function clockName(s: string): ClockName {
  if (s === "CLOCK_REALTIME") return { kind: "realtime" };
  if (s.startsWith("/")) return { kind: "device", path: s };
  return { kind: "interface", name: s };
}

export interface Phc2sysView {
  pid: number;
  /** -a: the clocks come from ptp4l's ports (over its management socket). */
  automatic: boolean;
  /** -r with -a: CLOCK_REALTIME is a sink too. */
  realtime: boolean;
  source?: ClockName;
  sink: ClockName;
  /** -w: waits for ptp4l and takes the TAI-UTC offset from it (and sets the kernel's). */
  wait: boolean;
  /** -O: a fixed offset in seconds between the clocks. */
  offset?: number;
  cmdline: string;
}

export function phc2sysView(p: DaemonProcess): Phc2sysView {
  const { short } = parseArgs(p.argv, "cdfsEPISFRNOLMiunzlt");
  const view: Phc2sysView = {
    pid: p.pid,
    automatic: false,
    realtime: false,
    sink: { kind: "realtime" },
    wait: false,
    cmdline: p.argv.join(" "),
  };
  for (const [o, v] of short) {
    if (o === "a") view.automatic = true;
    if (o === "r") view.realtime = true;
    if (o === "w") view.wait = true;
    if ((o === "s" || o === "i") && typeof v === "string") view.source = clockName(v);
    if (o === "c" && typeof v === "string") view.sink = clockName(v);
    if (o === "O" && typeof v === "string" && /^-?\d+$/.test(v)) view.offset = Number(v);
  }
  return view;
}

export interface ChronyRefclock {
  device: string;
  /** The `tai` option: chrony converts the PHC's TAI time to UTC. */
  tai: boolean;
  /** The file and line it came from. */
  from: string;
  line: string;
}

export interface ChronydView {
  pid: number;
  configFile: string;
  configUnreadable?: boolean;
  refclocks: ChronyRefclock[];
  /** -x: chronyd does not steer the system clock. */
  noClockControl: boolean;
  /** `leapsectz`: chronyd sets the kernel's TAI offset from the tz database. */
  leapsectz: boolean;
  cmdline: string;
}

const CHRONY_DEFAULT_CONFIGS = ["/etc/chrony/chrony.conf", "/etc/chrony.conf"];

/** Glob with `*` and `?` in the last path component (what chrony's include/confdir need). */
function listMatching(
  pattern: string,
  list: (dir: string) => string[] | undefined,
): string[] {
  const slash = pattern.lastIndexOf("/");
  const dir = pattern.slice(0, slash) || "/";
  const base = pattern.slice(slash + 1);
  if (!/[*?]/.test(base)) return [pattern];
  const re = new RegExp(
    "^" + base.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll("?", ".") +
      "$",
  );
  return (list(dir) ?? []).filter((n) => re.test(n)).sort().map((n) => `${dir}/${n}`);
}

export function chronydView(
  p: DaemonProcess,
  read: (path: string) => string | undefined = (path) => readOr(procPath(p.pid, path)),
  list: (dir: string) => string[] | undefined = (dir) => {
    try {
      return [...Deno.readDirSync(procPath(p.pid, dir))].map((e) => e.name);
    } catch {
      return undefined;
    }
  },
): ChronydView {
  const { short } = parseArgs(p.argv, "fLlPtum");
  const named = short.filter(([o]) => o === "f").map(([, v]) => String(v)).pop();
  const view: ChronydView = {
    pid: p.pid,
    configFile: named ?? CHRONY_DEFAULT_CONFIGS[0],
    refclocks: [],
    noClockControl: short.some(([o]) => o === "x"),
    leapsectz: false,
    cmdline: p.argv.join(" "),
  };
  let text: string | undefined;
  for (const f of named ? [named] : CHRONY_DEFAULT_CONFIGS) {
    text = read(f);
    if (text !== undefined) {
      view.configFile = f;
      break;
    }
  }
  if (text === undefined) {
    view.configUnreadable = true;
    return view;
  }
  const scan = (file: string, body: string, depth: number) => {
    for (const raw of body.split("\n")) {
      if (/^\s*[#;!%]/.test(raw)) continue; // chrony's comment lines
      const line = raw.trim();
      const words = line.split(/\s+/);
      const directive = words[0]?.toLowerCase();
      if (directive === "refclock" && words[1]?.toUpperCase() === "PHC" && words[2]) {
        const options = words.slice(3);
        view.refclocks.push({
          device: words[2].split(":")[0],
          tai: options.includes("tai"),
          from: file,
          line,
        });
      } else if (directive === "leapsectz") {
        view.leapsectz = true;
      } else if (depth === 0 && directive === "include" && words[1]) {
        for (const f of listMatching(words[1], list)) {
          const t = read(f);
          if (t !== undefined) scan(f, t, depth + 1);
        }
      } else if (depth === 0 && (directive === "confdir" || directive === "sourcedir")) {
        const suffix = directive === "confdir" ? ".conf" : ".sources";
        for (const dir of words.slice(1)) {
          for (const name of (list(dir) ?? []).filter((n) => n.endsWith(suffix)).sort()) {
            const t = read(`${dir}/${name}`);
            if (t !== undefined) scan(`${dir}/${name}`, t, depth + 1);
          }
        }
      }
    }
  };
  scan(view.configFile, text, 0);
  return view;
}
