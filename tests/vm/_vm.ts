/**
 * Host-side helpers for the VM tests: each test boots a Debian kernel under qemu (see
 * scripts/vm/runner.ts) and runs a program from tests/vm/guest/ inside it with the host's deno.
 * TSNPROXY_VM_VERBOSE=1 streams the guest console; TSNPROXY_VM_KERNELS=6.12 limits the kernels.
 */
import { guestJson, type KernelName, runDenoInVm, type VmResult } from "../../scripts/vm/runner.ts";

export const ALL_KERNELS: KernelName[] = ["6.1", "6.12"];

export function kernels(): KernelName[] {
  const only = Deno.env.get("TSNPROXY_VM_KERNELS");
  if (!only) return ALL_KERNELS;
  return ALL_KERNELS.filter((k) => only.split(/[ ,]+/).includes(k));
}

/**
 * Runs tests/vm/guest/<file> in `kernel`; fails the test (with the guest output) unless it exits 0.
 * timeoutSec: the whole run, boot included (default 150). nics: emulated NICs (qemu models).
 */
export async function runGuest<T>(
  kernel: KernelName,
  file: string,
  tag: string,
  opts: { timeoutSec?: number; nics?: string[] } = {},
): Promise<{
  result: T;
  vm: VmResult;
}> {
  const vm = await runDenoInVm({
    kernel,
    file: `tests/vm/guest/${file}`,
    timeoutSec: opts.timeoutSec ?? 150,
    nics: opts.nics,
  });
  const timing =
    `boot ${(vm.bootMs / 1000).toFixed(1)} s, test ${(vm.testMs / 1000).toFixed(1)} s, ` +
    `total ${(vm.totalMs / 1000).toFixed(1)} s${vm.attempts > 1 ? `, ${vm.attempts} boots` : ""}`;
  if (vm.exitCode !== 0) {
    throw new Error(
      `${file} in ${kernel} (${vm.kver}) exited ${vm.exitCode} (${timing}); guest output:\n` +
        (vm.output || vm.console.split("\n").slice(-40).join("\n")),
    );
  }
  console.log(`${kernel} (${vm.kver}): ${timing}`);
  return { result: guestJson<T>(vm.output, tag), vm };
}
