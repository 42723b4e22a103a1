/** Polling, a free TCP port and a stale unix socket, for tests that drive long-running processes. */
import assert from "node:assert/strict";
import { run } from "./run.ts";

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

/**
 * Leaves a unix socket file at `path` that nobody listens on, as an agent killed with SIGKILL
 * does (Deno removes a socket it closes itself, so a process binds it and dies instead).
 */
export async function staleSocket(path: string): Promise<void> {
  const py = `import os, socket; socket.socket(socket.AF_UNIX).bind(${
    JSON.stringify(path)
  }); os.kill(os.getpid(), 9)`;
  await run(["python3", "-c", py], { allowFail: true }); // it kills itself
  assert.ok(Deno.lstatSync(path).isSocket, `no stale socket at ${path}`);
}
