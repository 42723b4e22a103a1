/**
 * Two pods sending datagrams the stage's fingerprint cannot tell apart, with different
 * priorities and launch times, each keep their own (tests/vm/guest/identical.ts). In the
 * Debian 6.1 guest, whose kernel gives an unconnected socket's DF datagrams the IP id 0 and
 * has no typed TAI stamps (the host's 6.18 does neither, which is why only a guest shows it).
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Identical {
  kernel: string;
  results: Record<string, unknown>;
  failures: string[];
}

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: byte-identical datagrams from two pods keep their own metadata`, async () => {
    const { result: r } = await runGuest<Identical>(kernel, "identical.ts", "identical", {
      timeoutSec: 480,
    });
    for (const [k, v] of Object.entries(r.results)) console.log(`${k}: ${JSON.stringify(v)}`);
    assert.equal(Object.keys(r.results).length, 4, "both carriers, both CPU layouts ran");
    assert.deepEqual(r.failures, [], `${kernel}:\n  ${r.failures.join("\n  ")}`);
  });
}
