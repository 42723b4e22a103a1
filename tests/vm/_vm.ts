/**
 * Host-side helpers for the VM tests: each test boots a Debian kernel under qemu (see
 * scripts/vm/runner.ts) and runs a program from tests/vm/guest/ inside it with the host's deno
 * (the arm64 guest: its own arm64 deno). TSNPROXY_VM_VERBOSE=1 streams the guest console;
 * TSNPROXY_VM_KERNELS=6.12 limits the kernels (a value naming no known kernel is an error,
 * never an empty suite).
 */
import { KERNEL_NAMES, KERNELS } from "../../scripts/vm/images.ts";
import { VmError } from "../../scripts/vm/errors.ts";
import { guestJson, type KernelName, runDenoInVm, type VmResult } from "../../scripts/vm/runner.ts";

/** Every kernel the harness knows: the values TSNPROXY_VM_KERNELS may name. */
export const ALL_KERNELS: KernelName[] = [...KERNEL_NAMES];

/**
 * The kernels TSNPROXY_VM_KERNELS selects (comma or space separated), all when unset. Throws
 * VmError, naming the valid values, on a name it does not know or a value that lists none, so
 * a typo fails the run instead of registering zero tests.
 */
export function selectedKernels(only = Deno.env.get("TSNPROXY_VM_KERNELS")): KernelName[] {
  if (only === undefined || only.trim() === "") return ALL_KERNELS;
  const wanted = only.split(/[ ,]+/).filter(Boolean);
  const unknown = wanted.filter((k) => !(ALL_KERNELS as string[]).includes(k));
  if (unknown.length > 0 || wanted.length === 0) {
    throw new VmError(
      `TSNPROXY_VM_KERNELS=${JSON.stringify(only)} names ` +
        (unknown.length > 0 ? `unknown kernels: ${unknown.join(", ")}` : "no kernel") +
        `; valid values: ${ALL_KERNELS.join(", ")}`,
      `set it to any of ${ALL_KERNELS.join(", ")} (comma or space separated), or unset it for all`,
    );
  }
  return ALL_KERNELS.filter((k) => wanted.includes(k));
}

/**
 * The amd64 kernels to register the x86 VM tests for: their guests run the host's own /usr
 * (iproute2, tc, python3), which an arm64 guest cannot (tests/vm/arm64_test.ts covers that one).
 * Of the kernels selectedKernels() returns, so a selection of only 6.1-arm64 registers none here.
 */
export function kernels(only = Deno.env.get("TSNPROXY_VM_KERNELS")): KernelName[] {
  return selectedKernels(only).filter((k) => KERNELS[k].arch === "amd64");
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
