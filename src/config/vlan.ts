/**
 * The `vlan` section of a TSN interface in the node config: the VLAN device's egress-qos-map,
 * which turns a packet's skb->priority into the 802.1Q PCP of the frame it leaves in (what
 * TSN bridges classify by).
 *
 *   tsnInterfaces:
 *     - name: tsn0.100              # a VLAN device (ip link add link tsn0 name tsn0.100 type vlan id 100)
 *       vlan:
 *         egressQosMap: {"0": 0, "3": 3, "5": 5}   # priority -> PCP
 *
 * Install sets exactly the priorities named here (others keep what the device has) and
 * records what they were, so uninstall puts them back. A priority the map does not name
 * leaves with PCP 0.
 */
import { z } from "zod";
import { VLAN_PCP_MAX as PCP_MAX } from "../netlink/constants.ts";
const U32_MAX = 0xffffffff;

const PRIO_KEY = "egressQosMap keys are priorities: decimal integers 0..4294967295 (quote them: " +
  '"3")';
const PCP = `expected a PCP: an integer 0..${PCP_MAX}`;

export const vlanSchema = z.strictObject({
  /** skb->priority -> PCP. */
  egressQosMap: z.record(
    z.string().regex(/^(0|[1-9]\d{0,9})$/, { error: PRIO_KEY })
      .refine((k) => Number(k) <= U32_MAX, { error: PRIO_KEY }),
    z.int({ error: PCP }).min(0, { error: PCP }).max(PCP_MAX, { error: PCP }),
    { error: 'expected a mapping of priority to PCP, e.g. {"3": 3, "5": 5}' },
  ).refine((m) => Object.keys(m).length > 0, {
    error: "egressQosMap is empty: name at least one priority (or leave vlan out)",
  }),
});

export type VlanConfig = z.infer<typeof vlanSchema>;

/** The map as sorted [priority, pcp] pairs. */
export function qosPairs(map: Record<string, number>): [number, number][] {
  return Object.entries(map).map(([k, v]): [number, number] => [Number(k), v])
    .sort((a, b) => a[0] - b[0]);
}
