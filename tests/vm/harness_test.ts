/**
 * The VM harness itself, without booting a guest: the kernel pins are well formed, a .deb that
 * differs from its pin is refused with a message naming package, expected and got checksums and
 * the bump command, and TSNPROXY_VM_KERNELS naming no known kernel fails the run instead of
 * registering zero VM tests.
 */
import assert from "node:assert/strict";
import {
  aptPin,
  fileSha256,
  KERNEL_NAMES,
  type KernelPin,
  kernelPin,
  KERNELS,
  verifyDeb,
} from "../../scripts/vm/images.ts";
import { VmError } from "../../scripts/vm/errors.ts";
import { thrown } from "../lib/thrown.ts";
import { run } from "../lib/run.ts";
import { ALL_KERNELS, kernels, selectedKernels } from "./_vm.ts";

Deno.test("vm harness: every kernel has a pin with an exact version and a SHA-256", () => {
  assert.deepEqual(ALL_KERNELS, ["6.1", "6.12", "6.1-arm64"]);
  for (const k of KERNEL_NAMES) {
    const pin = kernelPin(k);
    const { arch } = KERNELS[k];
    // The pin names the package without apt's ":arm64" (the architecture comes from KERNELS).
    assert.match(pin.package, new RegExp(`^linux-image-\\d+\\.\\d+\\.\\d+.*-${arch}$`), k);
    const series = k.replace(/-arm64$/, "");
    assert.ok(pin.package.startsWith(`linux-image-${series}.`), `${k} pins ${pin.package}`);
    assert.match(pin.version, /^\d/);
    assert.match(pin.sha256, /^[0-9a-f]{64}$/);
  }
});

Deno.test("vm harness: a .deb that is not the pinned one is refused, naming the fix", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-vm-pin-" });
  try {
    const deb = `${dir}/fake.deb`;
    await Deno.writeTextFile(deb, "not a kernel\n");
    const got = await fileSha256(deb);
    // sha256("not a kernel\n"), computed independently of fileSha256:
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode("not a kernel\n"),
    );
    assert.equal(
      got,
      Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join(""),
    );

    const pin: KernelPin = { ...kernelPin("6.1"), size: 13 };
    await assert.rejects(verifyDeb("6.1", pin, deb), (e: unknown) => {
      assert.ok(e instanceof VmError, String(e));
      const line = e.oneLine();
      assert.ok(line.includes(`${pin.package}=${pin.version}`), line);
      assert.ok(line.includes(`expected ${pin.sha256}`), line);
      assert.ok(line.includes(`got ${got}`), line);
      assert.ok(line.includes("scripts/vm/images.ts --bump 6.1"), line);
      assert.ok(line.includes("docs/kernels.md"), line);
      return true;
    });
    await verifyDeb("6.1", { ...pin, sha256: got }, deb); // the right bytes pass
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vm harness: the arm64 kernel's pin is checked and named with apt's arm64 spelling", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tsnproxy-vm-pin-" });
  try {
    const deb = `${dir}/fake.deb`;
    await Deno.writeTextFile(deb, "not a kernel\n");
    const pin = kernelPin("6.1-arm64");
    await assert.rejects(verifyDeb("6.1-arm64", pin, deb), (e: unknown) => {
      assert.ok(e instanceof VmError, String(e));
      const line = e.oneLine();
      assert.ok(line.includes(`expected ${pin.sha256}`), line);
      assert.ok(line.includes(`apt-cache show ${pin.package}:arm64=${pin.version}`), line);
      assert.ok(line.includes("scripts/vm/images.ts --bump 6.1-arm64"), line);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vm harness: --bump reads the arm64 kernel from apt's arm64 index", async () => {
  // What bumpPins writes, without writing it: the arm64 meta package resolves to an arm64
  // kernel package whose checksum is the arm64 index's, not the amd64 one of the same version.
  const [arm, amd] = [await aptPin("6.1-arm64"), await aptPin("6.1")];
  assert.match(arm.package, /^linux-image-6\.1\.\d+-\d+-arm64$/);
  assert.match(amd.package, /^linux-image-6\.1\.\d+-\d+-amd64$/);
  assert.notEqual(arm.sha256, amd.sha256);
  const show = await run(["apt-cache", "show", `${arm.package}:arm64=${arm.version}`], {
    allowFail: true,
  });
  const stanza = show.stdout;
  assert.match(stanza, /^Architecture: arm64$/m);
  assert.match(stanza, new RegExp(`^SHA256: ${arm.sha256}$`, "m"));
});

Deno.test("vm harness: TSNPROXY_VM_KERNELS selects kernels and rejects unknown names", () => {
  // kernels(): the amd64 guests the x86 tests register for; selectedKernels(): all selected.
  assert.deepEqual(kernels(undefined), ["6.1", "6.12"]);
  assert.deepEqual(kernels(""), ["6.1", "6.12"]);
  assert.deepEqual(kernels("6.12"), ["6.12"]);
  assert.deepEqual(kernels("6.12, 6.1"), ["6.1", "6.12"]);
  assert.deepEqual(selectedKernels(undefined), ["6.1", "6.12", "6.1-arm64"]);
  assert.deepEqual(selectedKernels("6.1-arm64"), ["6.1-arm64"]);
  assert.deepEqual(kernels("6.1-arm64"), [], "the arm64 guest runs only tests/vm/arm64_test.ts");
  assert.deepEqual(kernels("6.1-arm64,6.12"), ["6.12"]);
  for (const bad of ["6.13", "6.1,612", "all", ",", "6,1", "arm64"]) {
    for (const select of [kernels, selectedKernels]) {
      const e = thrown(() => select(bad));
      assert.ok(e instanceof VmError, bad);
      assert.match(e.message, /valid values: 6\.1, 6\.12, 6\.1-arm64$/, bad);
    }
  }
  assert.match(thrown(() => kernels("6.1 6.13")).message, /unknown kernels: 6\.13/);
});

Deno.test("vm harness: a VM test file fails to load, registering nothing, for an unknown kernel", async () => {
  const out = await run(
    [Deno.execPath(), "test", "--allow-all", "--no-check", "tests/vm/deno_in_guest_test.ts"],
    {
      cwd: new URL("../..", import.meta.url).pathname,
      env: { TSNPROXY_VM_KERNELS: "6.13", NO_COLOR: "1" },
      allowFail: true,
    },
  );
  const text = out.stdout + out.stderr;
  assert.notEqual(out.code, 0, text);
  assert.match(text, /TSNPROXY_VM_KERNELS="6\.13" names unknown kernels: 6\.13/);
  assert.match(text, /valid values: 6\.1, 6\.12, 6\.1-arm64/);
  assert.doesNotMatch(text, /vm 6\.1/, "a guest test ran");
});
