/**
 * A registry-free container image for the e2e tests: an OCI layout holding one layer with the
 * host's static busybox and its applet links, built with umoci and tagged twice:
 *   - `pause`: entrypoint `/bin/sleep 2147483647`, used as the CRI sandbox (pause) image;
 *   - `latest`: `/bin/sh`, the workload image.
 * Workloads get python3/socat by bind-mounting the host's /usr read-only (see containerd.ts).
 * The tarball is cached between runs, keyed on the busybox and umoci binaries.
 */
import { cacheDir, exists, fileStamp } from "./proc.ts";
import { run } from "../../lib/run.ts";

export const BUSYBOX = "/bin/busybox";
/** Repository the OCI tags are imported under (`ctr images import --base-name`). */
export const IMAGE_REPO = "docker.io/library/tsnproxy-e2e-busybox";
export const PAUSE_IMAGE = `${IMAGE_REPO}:pause`;
export const WORKLOAD_IMAGE = `${IMAGE_REPO}:latest`;

/** Build (or reuse) the OCI archive; returns the path of the tarball. */
export async function busyboxImageTarball(): Promise<string> {
  const umoci = "/usr/bin/umoci";
  const key = `${await fileStamp(BUSYBOX)}-${await fileStamp(umoci)}`;
  const dir = await cacheDir();
  const tarball = `${dir}/busybox-oci-${key}.tar`;
  if (await exists(tarball)) return tarball;

  const work = await Deno.makeTempDir({ prefix: "tsnproxy-e2e-img-" });
  try {
    const layout = `${work}/oci`;
    const bundle = `${work}/bundle`;
    await run([umoci, "init", "--layout", layout]);
    await run([umoci, "new", "--image", `${layout}:base`]);
    await run([umoci, "unpack", "--image", `${layout}:base`, bundle]);
    const rootfs = `${bundle}/rootfs`;
    for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "usr", "lib", "lib64"]) {
      await Deno.mkdir(`${rootfs}/${d}`, { recursive: true });
    }
    await Deno.chmod(`${rootfs}/tmp`, 0o1777);
    await Deno.copyFile(BUSYBOX, `${rootfs}/bin/busybox`);
    await Deno.chmod(`${rootfs}/bin/busybox`, 0o755);
    const applets = (await run([BUSYBOX, "--list"])).stdout.split("\n").filter((a) =>
      /^[\w.[\]-]+$/.test(a) && a !== "busybox"
    );
    for (const a of applets) await Deno.symlink("busybox", `${rootfs}/bin/${a}`);
    await Deno.writeTextFile(`${rootfs}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
    await Deno.writeTextFile(`${rootfs}/etc/group`, "root:x:0:\n");
    await run([umoci, "repack", "--image", `${layout}:base`, bundle]);
    const env = "--config.env=PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    await run([
      umoci,
      "config",
      "--image",
      `${layout}:base`,
      "--tag",
      "pause",
      env,
      "--config.entrypoint=/bin/sleep",
      "--config.cmd=2147483647",
    ]);
    await run([
      umoci,
      "config",
      "--image",
      `${layout}:base`,
      "--tag",
      "latest",
      env,
      "--config.cmd=/bin/sh",
    ]);
    await run([umoci, "rm", "--image", `${layout}:base`]);
    await run([umoci, "gc", "--layout", layout]);
    const tmp = `${tarball}.tmp-${Deno.pid}`;
    await run(["tar", "-C", layout, "-cf", tmp, "."]);
    await Deno.rename(tmp, tarball);
    return tarball;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/**
 * Import the image into a containerd (CRI's `k8s.io` namespace) through its socket, as both
 * the pause image and the workload image.
 */
export async function importIntoContainerd(socket: string): Promise<void> {
  const tarball = await busyboxImageTarball();
  await run([
    "ctr",
    "-n",
    "k8s.io",
    "-a",
    socket,
    "images",
    "import",
    "--base-name",
    IMAGE_REPO,
    tarball,
  ]);
}
