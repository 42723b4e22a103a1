/**
 * tests/lib/pcp_capture.py run around a send: what a TSN bridge's ingress port would see of the
 * 802.1Q tags of the frames arriving on an interface. Shared by the demo and the VLAN guest test.
 */
import { spawn } from "./run.ts";

const CAPTURE = new URL("./pcp_capture.py", import.meta.url).pathname;

/** What pcp_capture.py counted: UDP port -> PCP -> frames; frames without a tag; VLAN ids. */
export interface PcpCounts {
  ports: Record<string, Record<string, number>>;
  untagged: Record<string, number>;
  vids: number[];
  /** It saw the frame to its stop port (not its timeout). */
  stopped: boolean;
}

/**
 * Starts the capture on `ifname` in namespace `netns` (undefined: this one), runs `send` once
 * it is ready, and returns its counts. `send` ends with a frame to port 9999, the capture's
 * stop port.
 */
export async function capturePcp(
  netns: string | undefined,
  ifname: string,
  send: () => Promise<void>,
): Promise<PcpCounts> {
  await using cap = spawn(["python3", CAPTURE, "--ifname", ifname, "--stop-port", "9999"], {
    netns,
  });
  await cap.ready(/^ready$/m);
  await send();
  const out = await cap.wait();
  if (out.code !== 0) throw new Error(`pcp_capture.py exited ${out.code}: ${out.stderr}`);
  return JSON.parse(out.stdout.slice(out.stdout.indexOf("ready\n") + 6)) as PcpCounts;
}
