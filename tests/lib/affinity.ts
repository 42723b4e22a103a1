/**
 * CPU affinity of the calling thread (sched_setaffinity(2) through the production sys()
 * binding), for tests that need consecutive BPF_PROG_TEST_RUN calls on one CPU: the
 * datapath's stage is a per-CPU map, and BPF_PROG_TEST_RUN runs the program on the CPU the
 * calling thread is on. Deno's synchronous FFI calls run on the JavaScript thread, so pinning
 * that thread pins every test run the test makes.
 */
import { sys } from "../../src/ffi/libc.ts";

/** sched_setaffinity / sched_getaffinity by architecture (pid 0: the calling thread). */
const NR = {
  x86_64: { set: 203, get: 204 },
  aarch64: { set: 122, get: 123 },
}[Deno.build.arch as "x86_64" | "aarch64"];

const MASK_BYTES = 128; // cpu_set_t: 1024 CPUs

/** The CPUs the calling thread may run on. */
export function allowedCpus(): number[] {
  const mask = new Uint8Array(MASK_BYTES);
  const r = sys(NR.get, 0, MASK_BYTES, mask);
  if (r < 0) throw new Error(`sched_getaffinity failed: errno ${-r}`);
  const out: number[] = [];
  for (let cpu = 0; cpu < MASK_BYTES * 8; cpu++) {
    if (mask[cpu >> 3] & (1 << (cpu & 7))) out.push(cpu);
  }
  return out;
}

/** Restricts the calling thread to `cpus`. */
export function setAffinity(cpus: readonly number[]): void {
  const mask = new Uint8Array(MASK_BYTES);
  for (const cpu of cpus) mask[cpu >> 3] |= 1 << (cpu & 7);
  const r = sys(NR.set, 0, MASK_BYTES, mask);
  if (r < 0) throw new Error(`sched_setaffinity(${cpus}) failed: errno ${-r}`);
}

/** Runs fn with the calling thread pinned to `cpu`; the earlier affinity is restored after. */
export async function onCpu<T>(cpu: number, fn: () => T | Promise<T>): Promise<T> {
  const before = allowedCpus();
  setAffinity([cpu]);
  try {
    return await fn();
  } finally {
    setAffinity(before);
  }
}

/** Which CPU the calling thread runs on now (getcpu(2) through /proc: field 39 of stat). */
export function currentCpu(): number {
  const tid = sys(Deno.build.arch === "x86_64" ? 186 : 178); // gettid
  const stat = Deno.readTextFileSync(`/proc/self/task/${tid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[36]); // field 39 ("processor"), counting from field 3
}
