/**
 * A trivial BPF object for tests, compiled with clang at test time: tc classifiers returning
 * TC_ACT_UNSPEC (section classifier) and TC_ACT_OK (classifier_ok), and an XDP_PASS program.
 */
import { run } from "../lib/run.ts";

const SOURCE = `
__attribute__((section("classifier"), used)) int tn_cls(void *ctx) { return -1; }
__attribute__((section("classifier_ok"), used)) int tn_cls_ok(void *ctx) { return 0; }
__attribute__((section("xdp"), used)) int tn_xdp(void *ctx) { return 2; }
char _license[] __attribute__((section("license"), used)) = "GPL";
`;

export async function compileTestBpf(): Promise<{ object: string; cleanup(): void }> {
  const dir = Deno.makeTempDirSync({ prefix: "tn-nl-bpf-" });
  Deno.writeTextFileSync(`${dir}/prog.c`, SOURCE);
  await run(["clang", "-O2", "-target", "bpf", "-c", `${dir}/prog.c`, "-o", `${dir}/prog.o`]);
  return { object: `${dir}/prog.o`, cleanup: () => Deno.removeSync(dir, { recursive: true }) };
}
