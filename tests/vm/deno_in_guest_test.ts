/**
 * The host's deno runs inside both test kernels from the 9p-shared checkout and dlopens the
 * host's libbpf.so.1 and libmnl.so.0 (tests/vm/guest/deno_libs.ts).
 */
import assert from "node:assert/strict";
import { repoRoot } from "../../scripts/vm/images.ts";
import { kernels, runGuest } from "./_vm.ts";

interface DenoLibs {
  kernel: string;
  deno: string;
  execPath: string;
  execInCheckout: boolean;
  realBinary: string;
  sameInode: boolean;
  checkoutMount?: string;
  libbpf: string;
  libmnlBind: number;
  libmnlPortid: number;
  usrMount?: string;
  libbpfFile: string;
  libmnlFile: string;
}

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: host deno runs in the guest and dlopens libbpf.so.1 and libmnl.so.0`, async () => {
    const { result: r } = await runGuest<DenoLibs>(kernel, "deno_libs.ts", "deno-libs");
    assert.ok(r.kernel.startsWith(kernel + "."), `guest kernel ${r.kernel}`);
    assert.equal(r.deno, Deno.version.deno, "the guest runs the host's deno");
    assert.ok(r.execInCheckout, `deno binary ${r.execPath} is outside the shared checkout`);
    assert.match(r.realBinary, /\/node_modules\/@deno\/linux-x64-glibc\/deno$/);
    assert.ok(r.sameInode, `${r.execPath} is not the same file as ${r.realBinary}`);
    assert.match(r.checkoutMount ?? "", new RegExp(`^checkout ${repoRoot()} 9p rw`));
    assert.match(r.usrMount ?? "", /^hostusr \/usr 9p ro/);
    assert.match(r.libbpf, /^1\.\d+$/);
    assert.match(r.libbpfFile, /^\/usr\/lib\/x86_64-linux-gnu\/libbpf\.so\.1/);
    assert.match(r.libmnlFile, /^\/usr\/lib\/x86_64-linux-gnu\/libmnl\.so\.0/);
    assert.equal(r.libmnlBind, 0, "mnl_socket_bind");
    assert.ok(r.libmnlPortid > 0, "the kernel assigned a netlink port id");
  });
}
