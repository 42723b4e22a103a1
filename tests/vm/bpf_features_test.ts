/**
 * BPF features per kernel (tests/vm/guest/bpf_features.ts), as the datapath assumes them:
 * 6.1 has neither tcx nor BPF_SKB_CLOCK_TAI (classic clsact, MONOTONIC delivery time); 6.12
 * has both.
 */
import assert from "node:assert/strict";
import { kernels, runGuest } from "./_vm.ts";

interface Feature {
  works: boolean;
  result: string;
}
interface Features {
  kernel: string;
  tcx: Feature;
  skbSetTstampMono: Feature;
  skbSetTstampTai: Feature;
}

const EXPECTED: Record<string, { tcx: boolean; clockTai: boolean }> = {
  "6.1": { tcx: false, clockTai: false },
  "6.12": { tcx: true, clockTai: true },
};

for (const kernel of kernels()) {
  Deno.test(`vm ${kernel}: tcx and bpf_skb_set_tstamp(BPF_SKB_CLOCK_TAI) as expected`, async () => {
    const { result: r } = await runGuest<Features>(kernel, "bpf_features.ts", "bpf-features");
    console.log(
      `${r.kernel}: tcx ${r.tcx.works ? "yes" : "no"} (${r.tcx.result}); ` +
        `skb_set_tstamp TAI ${
          r.skbSetTstampTai.works ? "yes" : "no"
        } (${r.skbSetTstampTai.result}); ` +
        `MONOTONIC control ${r.skbSetTstampMono.result}`,
    );
    assert.ok(
      r.skbSetTstampMono.works,
      `the probe is broken: MONOTONIC gave ${r.skbSetTstampMono.result}`,
    );
    assert.equal(r.tcx.works, EXPECTED[kernel].tcx, `tcx: ${r.tcx.result}`);
    assert.equal(r.skbSetTstampTai.works, EXPECTED[kernel].clockTai, r.skbSetTstampTai.result);
  });
}
