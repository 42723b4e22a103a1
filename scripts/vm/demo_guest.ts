/**
 * `deno task demo` inside a test guest, where the kernel has 8021q and the demo's VLAN PCP row
 * runs (this host's kernel has none, so there the row is skipped):
 *
 *   deno task bpf && deno task bundle
 *   deno run -A scripts/vm/run.ts --kernel 6.12 --timeout 900 --quiet -- \
 *     tools/deno/node_modules/deno/deno run -A --no-lock scripts/vm/demo_guest.ts [--json]
 *
 * The guest has no /lib/modules of its own: 8021q, bridge and veth come with its initramfs, the
 * node's NAT (nftables) modules from the checkout's unpacked kernel. Then the demo runs as on
 * the host, with the same arguments. About 4 minutes under software emulation.
 */
import { loadModules } from "../../tests/vm/guest/report.ts";

await loadModules(["8021q", "nf_tables", "nft_chain_nat", "nft_masq", "nft_nat"]);
await import("../demo.ts");
