/**
 * The syscall layer the plugin's per-pod path runs on (src/ffi/libc.ts sys(), src/bpf/sys.ts
 * bpf()): results and errno come back from the real kernel, and the sysfs parsing that
 * replaced libbpf_num_possible_cpus().
 */
import assert from "node:assert/strict";
import { countCpuList, possibleCpus } from "../../src/bpf/maps.ts";
import { mapLookup, objGet } from "../../src/bpf/sys.ts";
import { KernelError } from "../../src/errors.ts";
import { closeFd, Errno, ifNameToIndex, monotonicNs, openReadOnly } from "../../src/ffi/libc.ts";

Deno.test("the possible-CPU count reads the kernel's cpu list format", () => {
  assert.equal(countCpuList("0\n"), 1);
  assert.equal(countCpuList("0-3\n"), 4);
  assert.equal(countCpuList("0,2-5,7"), 6);
  assert.throws(() => countCpuList("zero"), /cannot parse the possible CPUs: "zero"/);
  // This machine's own list, as libbpf would count it.
  assert.ok(possibleCpus() >= navigator.hardwareConcurrency);
});

Deno.test("ifNameToIndex answers as if_nametoindex(3) does", () => {
  assert.equal(ifNameToIndex("lo"), 1);
  assert.equal(ifNameToIndex("tsnp-absent0"), 0);
  assert.equal(ifNameToIndex("a-name-longer-than-ifnamsiz"), 0);
});

Deno.test("monotonicNs follows CLOCK_MONOTONIC", () => {
  const a = monotonicNs();
  const b = monotonicNs();
  assert.ok(a > 0n && b >= a);
  // /proc/uptime counts from the same boot (CLOCK_BOOTTIME: equal but for suspend).
  const uptimeNs = BigInt(
    Math.round(Number(Deno.readTextFileSync("/proc/uptime").split(" ")[0]) * 1e9),
  );
  assert.ok(uptimeNs >= a - 1_000_000_000n, `uptime ${uptimeNs} < monotonic ${a}`);
});

Deno.test("sys() returns fds and -errno from the kernel", () => {
  const fd = openReadOnly("/proc/self/ns/net");
  assert.ok(fd >= 0);
  closeFd(fd);
  assert.equal(openReadOnly("/proc/self/ns/tsnp-absent"), -Errno.ENOENT);
});

Deno.test("bpf() reports the kernel's errno: a missing pin, a file that is no BPF object, a bad fd", () => {
  assert.equal(objGet("/sys/fs/bpf/tsnp-no-such-pin"), undefined);
  assert.throws(
    () => objGet("/proc/self/status"),
    (e) => e instanceof KernelError && /cannot open pinned BPF object/.test(e.message),
  );
  assert.equal(mapLookup(-1, new Uint8Array(4), new Uint8Array(4)), -Errno.EBADF);
});
