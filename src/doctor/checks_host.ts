/** doctor checks about the host: kernel features, the C libraries, the node config file. */
import { hasTcx } from "../bpf/features.ts";
import { fsTypeOf } from "../bpf/pins.ts";
import { loadNodeConfig } from "../config/node.ts";
import { asTsnproxyError } from "../errors.ts";
import { libbpf } from "../ffi/libbpf.ts";
import { libc } from "../ffi/libc.ts";
import { libmnl } from "../ffi/libmnl.ts";
import { cString, openLibrary } from "../ffi/open.ts";
import type { DoctorContext } from "./context.ts";
import { atLeast, kernelConfig, libraryFile, readSysctl, versionFromFileName } from "./probe.ts";
import { exists } from "../util/fs.ts";

export async function kernelChecks(ctx: DoctorContext): Promise<void> {
  const k = ctx.kernel;
  const kcfg = await kernelConfig();

  ctx.run({ id: "kernel.version", title: "Kernel version" }, (check) => {
    const data = { release: k.release, major: k.major, minor: k.minor };
    if (!atLeast(k, 5, 19)) {
      check.fail({
        found: `${k.release}: tsnproxy needs 5.19 or later (bpf_skb_set_tstamp with delivery ` +
          "time types, which carry launch times across the pod's veth; " +
          "bpf_map_lookup_percpu_elem, with which the restorer finds a held packet's entry)",
        fix: "boot a 5.19+ kernel (Debian 12's 6.1 works; 6.6+ adds tcx, 6.11+ TAI stamps)",
        data,
      });
      return;
    }
    const notes = [
      atLeast(k, 6, 6) ? "tcx" : "no tcx (before 6.6: classic clsact)",
      atLeast(k, 6, 11) ? "TAI delivery stamps" : "no TAI delivery stamps (before 6.11)",
    ];
    check.pass({ found: `${k.release}: ${notes.join(", ")}`, data });
  });

  ctx.run({ id: "kernel.btf", title: "Kernel BTF" }, (check) => {
    if (exists("/sys/kernel/btf/vmlinux")) {
      check.pass({ found: "/sys/kernel/btf/vmlinux is present" });
      return;
    }
    check.warn({
      found: "/sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF): " +
        "tsnproxy's programs carry their own BTF and use no CO-RE relocations, so they may " +
        "still load, but such kernels are untested and tools like bpftool cannot inspect them",
      fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every Debian 12 kernel is)",
    });
  });

  ctx.run({ id: "kernel.bpffs", title: "bpf filesystem at the pin root" }, (check) => {
    const fstype = fsTypeOf(ctx.bpffs);
    const data = { pinRoot: ctx.bpffs, fstype: fstype ?? null };
    if (fstype === "bpf") {
      check.pass({ found: `${ctx.bpffs} is on a bpf filesystem`, data });
      return;
    }
    const mountPoint = ctx.bpffs.startsWith("/sys/fs/bpf/") || ctx.bpffs === "/sys/fs/bpf"
      ? "/sys/fs/bpf"
      : ctx.bpffs;
    check.fail({
      found: `${ctx.bpffs} is on ${fstype ?? "no mounted filesystem"}, not bpf: pins cannot be ` +
        "created or found there (in a container: the host's /sys/fs/bpf is not mounted in)",
      fix: `mount -t bpf bpf ${mountPoint}   (systemd mounts /sys/fs/bpf at boot; a DaemonSet ` +
        "needs a hostPath volume for /sys/fs/bpf with mountPropagation: Bidirectional)",
      data,
    });
  });

  ctx.run({ id: "kernel.tc_api", title: "tc attach API (tcx or clsact)" }, (check) => {
    const tcx = ctx.inNode(() => hasTcx());
    const mode = ctx.config.attachMode;
    const data = { tcx, attachMode: mode };
    if (mode === "tcx" && !tcx) {
      check.fail({
        found: `attachMode is tcx but this kernel (${ctx.kernel.release}) has no tcx (6.6+)`,
        fix:
          `set attachMode: auto (or clsact) in ${ctx.opts.config}, then run \`tsnproxy install\``,
        data,
      });
      return;
    }
    if (tcx) {
      check.pass({
        found: `tcx available (attachMode ${mode}${
          mode === "auto" ? ": tcx" : ""
        }); tcx programs run before clsact filters`,
        data,
      });
      return;
    }
    const ingress = kcfg?.get("CONFIG_NET_SCH_INGRESS");
    const clsBpf = kcfg?.get("CONFIG_NET_CLS_BPF");
    if (ingress === "n" || clsBpf === "n") {
      check.fail({
        found: `no tcx (before 6.6) and no clsact/cls_bpf (CONFIG_NET_SCH_INGRESS=${ingress}, ` +
          `CONFIG_NET_CLS_BPF=${clsBpf}): the programs cannot be attached`,
        fix: "boot a kernel with CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF (y or m), or 6.6+",
        data,
      });
      return;
    }
    check.pass({
      found: `no tcx (kernel before 6.6): classic clsact + cls_bpf direct-action is used`,
      data,
    });
  });

  ctx.run(
    { id: "kernel.tstamp_tai", title: "TAI launch-time stamps (BPF_SKB_CLOCK_TAI)" },
    (check) => {
      if (atLeast(ctx.kernel, 6, 11)) {
        check.pass({
          found: "kernel 6.11+: SO_TXTIME launch times are restored with their CLOCK_TAI type",
        });
        return;
      }
      check.info({
        found: `kernel ${ctx.kernel.release} predates BPF_SKB_CLOCK_TAI (6.11): a launch time ` +
          "is restored as a clock-less stamp, exactly as the app's own SO_TXTIME packet " +
          "carries it on this kernel. etf (and taprio txtime-assist) in CLOCK_TAI mode still " +
          "honour it, because they compare the value against their configured clock; a qdisc " +
          "that reads stamps as CLOCK_MONOTONIC (fq) would misread it",
        fix: "nothing to do for etf/taprio; to keep stamps typed end to end, use a 6.11+ kernel",
      });
    },
  );

  ctx.run(
    { id: "kernel.unprivileged_bpf", title: "unprivileged BPF (informational)" },
    (check) => {
      const v = readSysctl("kernel.unprivileged_bpf_disabled");
      const meaning: Record<string, string> = {
        "0": "allowed; any user may load socket-filter programs",
        "1": "disabled until reboot",
        "2": "disabled; an admin may re-enable it",
      };
      check.info({
        found: `kernel.unprivileged_bpf_disabled=${v ?? "?"} (${
          meaning[v ?? ""] ?? "unknown"
        }); tsnproxy runs as root and is not affected`,
        data: { value: v ?? null },
      });
    },
  );
}

export function libraryChecks(ctx: DoctorContext): void {
  ctx.run({ id: "libraries.libbpf", title: "libbpf" }, (check) => {
    try {
      const l = libbpf();
      const v = `${l.libbpf_major_version()}.${l.libbpf_minor_version()}`;
      const file = libraryFile("libbpf.so.1", "TSNPROXY_LIBBPF");
      const data = { version: v, file };
      if (l.libbpf_major_version() < 1) {
        check.fail({
          found: `libbpf ${v} (${file}): tsnproxy needs 1.0+ (-errno return convention)`,
          fix: "apt-get install libbpf1 (or set TSNPROXY_LIBBPF to a libbpf.so.1)",
          data,
        });
        return;
      }
      check.pass({ found: `libbpf ${v} (${file})`, data });
    } catch (e) {
      const err = asTsnproxyError(e);
      check.fail({ found: err.message, fix: err.hint });
    }
  });

  ctx.run({ id: "libraries.libmnl", title: "libmnl" }, (check) => {
    try {
      libmnl();
      const file = libraryFile("libmnl.so.0", "TSNPROXY_LIBMNL");
      const v = versionFromFileName(file) ?? "unknown";
      check.pass({ found: `libmnl ${v} (${file})`, data: { version: v, file } });
    } catch (e) {
      const err = asTsnproxyError(e);
      check.fail({ found: err.message, fix: err.hint });
    }
  });

  ctx.run({ id: "libraries.libc", title: "libc" }, (check) => {
    try {
      libc();
      const file = libraryFile("libc.so.6", "TSNPROXY_LIBC");
      let v = "unknown";
      try {
        const g = openLibrary({
          name: "libc",
          sonames: ["libc.so.6"],
          envVar: "TSNPROXY_LIBC",
          debianPackage: "libc6",
        }, { gnu_get_libc_version: { parameters: [], result: "pointer" } } as const);
        v = `glibc ${cString(g.symbols.gnu_get_libc_version())}`;
        g.close();
      } catch {
        v = versionFromFileName(file) ?? "unknown (not glibc)";
      }
      check.pass({ found: `${v} (${file})`, data: { version: v, file } });
    } catch (e) {
      const err = asTsnproxyError(e);
      check.fail({ found: err.message, fix: err.hint });
    }
  });
}

export async function configChecks(ctx: DoctorContext): Promise<void> {
  const path = ctx.opts.config;
  await ctx.runAsync({ id: "config.file", title: "Node config" }, async (check) => {
    const present = exists(path);
    try {
      ctx.config = await loadNodeConfig(path, ctx.overrides());
      ctx.configText = present ? await Deno.readTextFile(path) : "";
    } catch (e) {
      const err = asTsnproxyError(e);
      ctx.configError = err;
      check.fail({
        found: `${err.message} (the other checks use the defaults and flags)`,
        fix: err.hint,
      });
      return;
    }
    check.pass({
      found: present
        ? `${path} is valid`
        : `${path} does not exist: built-in defaults and flags apply`,
      data: { path, present },
    });
  });
}
