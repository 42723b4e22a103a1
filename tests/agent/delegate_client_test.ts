/**
 * The plugin's side of delegation (src/cni/delegate.ts) against peers that misbehave on a real
 * unix socket: each must become "run it in-process" with the right cause, never a throw and
 * never a hang past the timeout. The well-behaved peer, the agent itself, is exercised in
 * cni_delegate_test.ts and the containerd e2e.
 */
import assert from "node:assert/strict";
import { delegate, type Delegation, readLine, writeLine } from "../../src/cni/delegate.ts";
import { staleSocket } from "../lib/wait.ts";

/** A peer on a fresh socket that answers each connection with `answer`. */
async function withPeer(
  answer: (conn: Deno.UnixConn) => Promise<void>,
  fn: (socket: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tsnp-delegate-" });
  const socket = `${dir}/cni.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  const open = new Set<Deno.UnixConn>();
  const serving = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      answer(conn).catch(() => undefined);
    }
  })();
  try {
    await fn(socket);
  } finally {
    listener.close();
    await serving.catch(() => undefined);
    for (const c of open) {
      try {
        c.close();
      } catch {
        // closed by the answer
      }
    }
    await Deno.remove(dir, { recursive: true });
  }
}

const ENV = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1" };
const STDIN = '{"cniVersion":"1.1.0","type":"tsnproxy"}';

function notServed(d: Delegation): Extract<Delegation, { served: false }> {
  assert.equal(d.served, false, JSON.stringify(d));
  return d as Extract<Delegation, { served: false }>;
}

Deno.test("delegate: a peer that never answers costs the timeout, then in-process", async () => {
  await withPeer(async (conn) => {
    await readLine(conn); // reads the request, then says nothing
    await new Promise(() => {});
  }, async (socket) => {
    // The reason names the deadline only when the deadline fired (no wall-clock assertion).
    const d = notServed(await delegate(socket, ENV, STDIN, 300));
    assert.equal(d.cause, "broken");
    assert.match(d.reason, /no answer within 300 ms/);
  });
});

Deno.test("delegate: each malformed reply is a cause, not a throw", async () => {
  const cases: Array<{ name: string; reply: string | undefined; cause: string; reason: RegExp }> = [
    { name: "closed at once", reply: undefined, cause: "broken", reason: /closed without/ },
    { name: "not JSON", reply: "{nope\n", cause: "broken", reason: /JSON/ },
    { name: "cut off", reply: '{"v":1,"code":0', cause: "broken", reason: /closed without/ },
    { name: "no code", reply: '{"v":1}\n', cause: "broken", reason: /no exit code/ },
    {
      name: "code not an integer",
      reply: '{"v":1,"code":0.5}\n',
      cause: "broken",
      reason: /no exit code/,
    },
    {
      name: "other protocol",
      reply: '{"v":2,"code":0}\n',
      cause: "protocol",
      reason: /protocol 2, not 1/,
    },
    {
      name: "declined",
      reply: '{"v":1,"declined":"cannot open /run/netns/x"}\n',
      cause: "declined",
      reason: /declined: cannot open/,
    },
  ];
  for (const c of cases) {
    await withPeer(async (conn) => {
      await readLine(conn);
      if (c.reply !== undefined) await conn.write(new TextEncoder().encode(c.reply));
      conn.close();
    }, async (socket) => {
      const d = notServed(await delegate(socket, ENV, STDIN, 5_000));
      assert.equal(d.cause, c.cause, c.name);
      assert.match(d.reason, c.reason, c.name);
    });
  }
});

Deno.test("delegate: the request carries the env and stdin as given; the reply comes back", async () => {
  let seen: unknown;
  await withPeer(async (conn) => {
    seen = JSON.parse((await readLine(conn))!);
    await writeLine(conn, {
      v: 1,
      code: 1,
      stdout: { code: 7, msg: "bad" },
      agent: { version: "1.2.3", bpfObjectsSha256: "ab" },
    });
    conn.close();
  }, async (socket) => {
    const d = await delegate(socket, ENV, STDIN, 5_000);
    assert.deepEqual(d, {
      served: true,
      code: 1,
      stdout: { code: 7, msg: "bad" },
      agent: { version: "1.2.3", bpfObjectsSha256: "ab" },
    });
  });
  assert.deepEqual(seen, { v: 1, env: ENV, stdin: STDIN });
});

Deno.test("delegate: no socket is 'absent', a socket nobody accepts on is 'unreachable'", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tsnp-delegate-" });
  try {
    const absent = notServed(await delegate(`${dir}/none.sock`, ENV, STDIN, 1_000));
    assert.equal(absent.cause, "absent");
    assert.match(absent.reason, /no socket$/);
    // A process bound the socket and died: the file stays, nobody listens.
    const stale = `${dir}/stale.sock`;
    await staleSocket(stale);
    const refused = notServed(await delegate(stale, ENV, STDIN, 1_000));
    assert.equal(refused.cause, "unreachable");
    assert.match(refused.reason, /nobody listens/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
