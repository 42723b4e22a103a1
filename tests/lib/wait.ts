/** Polling and a free TCP port, for tests that drive long-running processes (the agent). */
import assert from "node:assert/strict";

/** Polls fn every 100 ms until it holds; fails the test after ms. */
export async function until(
  what: string,
  fn: () => boolean | Promise<boolean>,
  ms = 8000,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** A loopback port nobody listens on right now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
