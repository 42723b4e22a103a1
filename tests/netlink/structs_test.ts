/**
 * Compiles a C probe against the system's uapi headers (linux-libc-dev) and checks every
 * struct layout in src/ffi/structs/netlink.ts (offset, size of each field, sizeof) and every
 * constant in src/netlink/constants.ts.
 */
import assert from "node:assert/strict";
import { netlinkLayouts } from "../../src/ffi/structs/netlink.ts";
import { fieldSize } from "../../src/ffi/structs/layout.ts";
import { CLOCK_IDS, constantHeaders, probedConstants } from "../../src/netlink/constants.ts";
import * as constants from "../../src/netlink/constants.ts";
import { run } from "../lib/run.ts";

function probeSource(): string {
  const headers = new Set<string>(["stdio.h", "stddef.h", "time.h", ...constantHeaders]);
  for (const l of netlinkLayouts) for (const h of l.headers) headers.add(h);
  const lines: string[] = [];
  for (const h of headers) lines.push(`#include <${h}>`);
  lines.push("int main(void) {");
  for (const l of netlinkLayouts) {
    lines.push(`  printf("S %s %zu\\n", "${l.cName}", sizeof(${l.cName}));`);
    for (const name of Object.keys(l.fields)) {
      lines.push(
        `  printf("F %s %s %zu %zu\\n", "${l.cName}", "${name}", ` +
          `offsetof(${l.cName}, ${name}), sizeof(((${l.cName} *)0)->${name}));`,
      );
    }
  }
  for (const [name, expr] of Object.entries(probedConstants)) {
    lines.push(`  printf("C %s %lld\\n", "${name}", (long long)(${expr}));`);
  }
  for (const name of Object.keys(CLOCK_IDS)) {
    lines.push(`  printf("K %s %lld\\n", "${name}", (long long)(${name}));`);
  }
  lines.push("  return 0;", "}");
  return lines.join("\n") + "\n";
}

Deno.test("netlink struct layouts and constants match the uapi headers", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "tn-nl-probe-" });
  try {
    Deno.writeTextFileSync(`${dir}/probe.c`, probeSource());
    await run(["clang", "-Wall", "-Werror", "-o", `${dir}/probe`, `${dir}/probe.c`]);
    const out = (await run([`${dir}/probe`])).stdout.trim().split("\n");
    const byName = new Map(netlinkLayouts.map((l) => [l.cName, l]));
    let checked = 0;
    for (const line of out) {
      const [tag, ...rest] = line.split(" ");
      if (tag === "S") {
        const size = Number(rest.at(-1));
        const cName = rest.slice(0, -1).join(" ");
        assert.equal(byName.get(cName)?.size, size, `sizeof(${cName})`);
      } else if (tag === "F") {
        const [s1, s2, field, off, size] = rest;
        const layout = byName.get(`${s1} ${s2}`);
        assert.ok(layout, `${s1} ${s2}`);
        const spec = layout.fields[field as keyof typeof layout.fields];
        assert.equal(spec[0], Number(off), `offsetof(${s1} ${s2}, ${field})`);
        assert.equal(fieldSize(spec), Number(size), `sizeof(${s1} ${s2}.${field})`);
      } else if (tag === "C") {
        const [name, value] = rest;
        const ours = (constants as unknown as Record<string, number>)[name];
        assert.equal(ours, Number(value), `constant ${name}`);
      } else if (tag === "K") {
        const [name, value] = rest;
        assert.equal(CLOCK_IDS[name as keyof typeof CLOCK_IDS], Number(value), name);
      }
      checked++;
    }
    const fields = netlinkLayouts.reduce((n, l) => n + Object.keys(l.fields).length, 0);
    assert.equal(
      checked,
      netlinkLayouts.length + fields + Object.keys(probedConstants).length +
        Object.keys(CLOCK_IDS).length,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
