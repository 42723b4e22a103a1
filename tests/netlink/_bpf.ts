/** A trivial BPF object for tests (tc classifier + XDP), compiled with clang at test time. */
import { run } from "./_netns.ts";

const SOURCE = `
__attribute__((section("classifier"), used)) int tn_cls(void *ctx) { return -1; }
__attribute__((section("xdp"), used)) int tn_xdp(void *ctx) { return 2; }
char _license[] __attribute__((section("license"), used)) = "GPL";
`;

export function compileTestBpf(): { object: string; cleanup(): void } {
  const dir = Deno.makeTempDirSync({ prefix: "tn-nl-bpf-" });
  Deno.writeTextFileSync(`${dir}/prog.c`, SOURCE);
  run("clang", "-O2", "-target", "bpf", "-c", `${dir}/prog.c`, "-o", `${dir}/prog.o`);
  return { object: `${dir}/prog.o`, cleanup: () => Deno.removeSync(dir, { recursive: true }) };
}
